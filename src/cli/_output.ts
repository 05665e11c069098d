/**
 * Output helpers that honour terminals: colour only on a TTY without
 * `NO_COLOR`, progress bars only on a TTY.
 *
 * @module
 */

/** Whether stderr is an interactive terminal (progress bars go there). */
export function stderrIsTerminal(): boolean {
  return Deno.stderr.isTerminal();
}

/** Whether colour may be used on stdout. */
export function useColor(): boolean {
  return Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
}

/** Print a JSON value on stdout, pretty and newline-terminated. */
export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

/** Print `warning: …` on stderr. */
export function warn(message: string): void {
  console.error(`warning: ${message}`);
}

/** How many values are NaN or ±Infinity. */
export function countNonFinite(values: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) n++;
  return n;
}

/**
 * Warn about float32 tensors of a model that hold NaN or infinity (a
 * diverged or corrupt checkpoint): its outputs would be NaN.
 */
export function warnNonFiniteWeights(
  path: string,
  tensors: ReadonlyMap<string, { dtype: string; data: Uint8Array }>,
): void {
  const bad: string[] = [];
  for (const [name, t] of tensors) {
    if (t.dtype !== "F32") continue;
    const copy = t.data.byteOffset % 4 === 0 ? t.data : t.data.slice();
    const values = new Float32Array(copy.buffer, copy.byteOffset, copy.byteLength / 4);
    const n = countNonFinite(values);
    if (n > 0) bad.push(`${name} (${n})`);
  }
  if (bad.length) {
    warn(
      `"${path}" holds NaN or infinite weights in ${bad.slice(0, 3).join(", ")}${
        bad.length > 3 ? `, … (${bad.length} tensors)` : ""
      }: its outputs will not be finite`,
    );
  }
}
