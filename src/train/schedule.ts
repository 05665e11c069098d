/**
 * The learning-rate schedule nanoGPT trains with: linear warmup, then cosine
 * decay to a minimum, then the minimum.
 *
 * @module
 */

/** A warmup-then-cosine schedule. */
export interface LrSchedule {
  /** Peak learning rate, reached at the end of warmup. */
  lr: number;
  /** Floor of the decay. */
  minLr: number;
  /** Steps of linear warmup. */
  warmupIters: number;
  /** Step at which the cosine reaches `minLr` (constant afterwards). */
  decayIters: number;
}

/**
 * The learning rate at step `it` (0-based), as nanoGPT's `get_lr`:
 * `lr·(it+1)/(warmup+1)` during warmup, then
 * `minLr + ½(1 + cos(π·r))·(lr − minLr)` with
 * `r = (it − warmup)/(decay − warmup)`, and `minLr` after `decayIters`.
 *
 * @example
 * ```ts
 * import { learningRate } from "./schedule.ts";
 * const s = { lr: 1, minLr: 0.1, warmupIters: 10, decayIters: 110 };
 * if (learningRate(9, s) !== 10 / 11) throw new Error("warmup");
 * if (Math.abs(learningRate(60, s) - 0.55) > 1e-12) throw new Error("cosine midpoint");
 * if (learningRate(500, s) !== 0.1) throw new Error("floor");
 * ```
 */
export function learningRate(it: number, s: LrSchedule): number {
  if (it < s.warmupIters) return (s.lr * (it + 1)) / (s.warmupIters + 1);
  if (it > s.decayIters || s.decayIters === s.warmupIters) return s.minLr;
  const ratio = (it - s.warmupIters) / (s.decayIters - s.warmupIters);
  const coeff = 0.5 * (1 + Math.cos(Math.PI * ratio));
  return s.minLr + coeff * (s.lr - s.minLr);
}
