/**
 * Test helper: the variants of a tuned op that can run a call, so a test
 * checks every design against the reference, not only the default.
 *
 * @module
 */

import type { Gpu } from "../../src/gpu/runtime.ts";
import type { Tunable } from "../../src/gpu/tune.ts";

/** Every variant of `t` that can run `shape` on `gpu` (at least one, or the test is wrong). */
export function runnableVariants<S>(gpu: Gpu, t: Tunable<S>, shape: S): string[] {
  const out = t.variants.filter((v) => t.unsupported(gpu, v, shape) === null);
  if (out.length === 0) throw new Error(`no ${t.op} variant can run ${JSON.stringify(shape)}`);
  return out;
}
