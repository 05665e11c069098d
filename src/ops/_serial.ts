/**
 * What the serial designs of the attention operators share (`tssa.ts`,
 * `causal_tssa.ts`, `class_attention.ts`): one invocation walks a whole
 * batch element (or column, or head) in a loop, with no workgroup memory
 * and no barriers, the fast design on software adapters such as lavapipe.
 *
 * @module
 */

/**
 * Loop iterations one invocation may run. Lavapipe (llvmpipe's shader
 * compiler) stops an invocation's loops silently after 65535 iterations in
 * all (measured here: a serial TSSA kernel over 700 tokens × 64 features
 * left its last columns unwritten, deterministically), so serial designs
 * take only calls whose loops, counted at every level, stay below this.
 */
export const SERIAL_LOOP_BUDGET = 60_000;

/**
 * Why a serial design cannot take a call of `iterations` loop iterations
 * per invocation, or null.
 *
 * @example
 * ```ts
 * import { serialBudgetExceeded } from "./_serial.ts";
 * if (serialBudgetExceeded(1000, "1 token") !== null) throw new Error();
 * ```
 */
export function serialBudgetExceeded(iterations: number, what: string): string | null {
  return iterations > SERIAL_LOOP_BUDGET
    ? `takes at most ${SERIAL_LOOP_BUDGET} loop iterations per invocation ` +
      `(lavapipe's limit), got ${iterations} for ${what}`
    : null;
}
