/**
 * Float64 references of the cross-entropy ops (`cross_entropy.ts`,
 * `cross_entropy_backward.ts`), as PyTorch's `F.cross_entropy(…,
 * ignore_index=-1)`: per row `logsumexp(z_r) − z_r[t_r]`, rows whose target
 * is −1 ignored. Plain TypeScript with no GPU import: the model tests and
 * the reference models use it too.
 *
 * @module
 */

/** The row targets as numbers, checked to lie in `[0, V)` or be −1. */
function checkedTargets(
  op: string,
  logits: ArrayLike<number>,
  targets: ArrayLike<number | bigint>,
  V: number,
): number[] {
  if (logits.length !== targets.length * V) {
    throw new TypeError(`${op}: ${logits.length} logits for ${targets.length} rows of ${V}`);
  }
  return Array.from(targets, (raw, r) => {
    const t = Number(raw);
    if (t !== -1 && !(Number.isInteger(t) && t >= 0 && t < V)) {
      throw new RangeError(`${op}: target ${t} of row ${r} is outside [0, ${V}) and not -1`);
    }
    return t;
  });
}

/** log Σ_v exp(z[o + v]), shifted by the row maximum. */
function logSumExp(z: ArrayLike<number>, o: number, V: number): number {
  let m = -Infinity;
  for (let v = 0; v < V; v++) m = Math.max(m, z[o + v]);
  let s = 0;
  for (let v = 0; v < V; v++) s += Math.exp(z[o + v] - m);
  return m + Math.log(s);
}

/**
 * The loss of every row (0 where the target is −1), in float64.
 *
 * @param logits `R × V`, row-major
 * @param targets R targets in `[0, V)` or −1
 * @throws {TypeError} when the lengths disagree; {@linkcode RangeError} for a bad target
 * @example
 * ```ts
 * import { crossEntropyRowsReference } from "./cross_entropy_reference.ts";
 * const [l, ignored] = crossEntropyRowsReference([0, 0, 5, 1], [1, -1], 2);
 * if (Math.abs(l - Math.LN2) > 1e-15 || ignored !== 0) throw new Error("ce");
 * ```
 */
export function crossEntropyRowsReference(
  logits: ArrayLike<number>,
  targets: ArrayLike<number | bigint>,
  V: number,
): Float64Array {
  const t = checkedTargets("crossEntropyRowsReference", logits, targets, V);
  const out = new Float64Array(t.length);
  for (let r = 0; r < t.length; r++) {
    if (t[r] !== -1) out[r] = logSumExp(logits, r * V, V) - logits[r * V + t[r]];
  }
  return out;
}

/**
 * The mean loss over the `rows` rows whose target is not −1 (NaN when every
 * row is ignored), in float64.
 *
 * @param logits `rows × classes`
 * @throws {TypeError} when the lengths disagree; {@linkcode RangeError} for a bad target
 * @example
 * ```ts
 * import { crossEntropyReference } from "./cross_entropy_reference.ts";
 * if (Math.abs(crossEntropyReference([0, 0], [1], 1, 2) - Math.LN2) > 1e-15) throw new Error();
 * ```
 */
export function crossEntropyReference(
  logits: ArrayLike<number>,
  targets: ArrayLike<number | bigint>,
  rows: number,
  classes: number,
): number {
  if (targets.length !== rows) {
    throw new TypeError(`crossEntropyReference: ${targets.length} targets, expected ${rows}`);
  }
  const losses = crossEntropyRowsReference(logits, targets, classes);
  let total = 0;
  let counted = 0;
  for (let r = 0; r < rows; r++) {
    if (Number(targets[r]) === -1) continue;
    total += losses[r];
    counted++;
  }
  return total / counted;
}

/**
 * The fused cross-entropy forward and backward in float64: the mean loss (0
 * when every row is ignored, as the GPU op gives) and
 * `∂(scale·loss)/∂logits = scale·(softmax(z_r) − onehot(t_r))/n` (0 on
 * ignored rows), n the number of counted rows.
 *
 * @param logits `R·V` values, row-major
 * @param targets R targets in `[0, V)` or −1
 * @throws {TypeError} when the lengths disagree; {@linkcode RangeError} for a bad target
 * @example
 * ```ts
 * import { crossEntropyBackwardReference } from "./cross_entropy_reference.ts";
 * const { loss, dlogits } = crossEntropyBackwardReference([0, 0], [1], 2);
 * if (Math.abs(loss - Math.LN2) > 1e-15 || dlogits.join() !== "0.5,-0.5") throw new Error();
 * ```
 */
export function crossEntropyBackwardReference(
  logits: ArrayLike<number>,
  targets: ArrayLike<number | bigint>,
  V: number,
  scale = 1,
): { loss: number; dlogits: Float64Array } {
  const t = checkedTargets("crossEntropyBackwardReference", logits, targets, V);
  const n = t.filter((v) => v !== -1).length;
  const dlogits = new Float64Array(t.length * V);
  let sum = 0;
  for (let r = 0; r < t.length; r++) {
    if (t[r] === -1) continue;
    const o = r * V;
    const lse = logSumExp(logits, o, V);
    sum += lse - logits[o + t[r]];
    for (let v = 0; v < V; v++) {
      const p = Math.exp(logits[o + v] - lse);
      dlogits[o + v] = (scale * (p - (v === t[r] ? 1 : 0))) / n;
    }
  }
  return { loss: n > 0 ? sum / n : 0, dlogits };
}
