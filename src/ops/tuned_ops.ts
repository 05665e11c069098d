/**
 * Every tuned op other than the GEMM, with the models' shapes `tost tune`
 * measures it at (the GEMM's are the linear layers of `src/bench/linear.ts`).
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { retune, type Tunable, type TuneChoice } from "../gpu/tune.ts";
import type { ElementShape, RowShape } from "./_tuned.ts";
import { COLUMN_SUMS } from "./column_sums.ts";
import { LAYER_NORM } from "./layer_norm.ts";
import { LAYER_NORM_BACKWARD } from "./layer_norm_backward.ts";

/**
 * `[rows, C]` of the models' activations, the MLP's hidden width is 4·C:
 * the `small` preset (8 × 64 tokens, 64 wide), nanoGPT's CPU configuration
 * (12 × 64, 128), the vision fixture evaluated in batches of 128 (17 tokens,
 * 64), 6 layers × 384 at 4 × 256 tokens, ToST-S over 4096 tokens.
 */
export const MODEL_ROWS: readonly RowShape[] = [
  { rows: 512, cols: 64 },
  { rows: 768, cols: 128 },
  { rows: 2176, cols: 64 },
  { rows: 1024, cols: 384 },
  { rows: 4096, cols: 384 },
];

/** One op and shape `tost tune` measures. */
export interface TuneTarget {
  /** The op's name (as in the cache and `tost info`). */
  op: string;
  /** The shape, for people ("512×64", "n=131072"). */
  label: string;
  /** The shape's numbers (and the GEMM's pass and kind), for JSON. */
  shape: Record<string, number | string>;
  /** The shape class the choice is filed under (null: not tuned, the fallback serves it). */
  shapeClass(gpu: Gpu): string | null;
  /** Measure now and save the choice. */
  retune(gpu: Gpu): Promise<{ shapeClass: string | null; choice: TuneChoice }>;
}

function rowTargets(t: Tunable<RowShape>, shapes: readonly RowShape[]): TuneTarget[] {
  return shapes.map((s) => ({
    op: t.op,
    label: `${s.rows}×${s.cols}`,
    shape: { rows: s.rows, cols: s.cols },
    shapeClass: (gpu) => t.shapeClass(gpu, s),
    retune: (gpu) => retune(gpu, t, s),
  }));
}

// deno-lint-ignore no-unused-vars
function elementTargets(t: Tunable<ElementShape>, sizes: readonly number[]): TuneTarget[] {
  return sizes.map((n) => ({
    op: t.op,
    label: `${n} values`,
    shape: { n },
    shapeClass: (gpu) => t.shapeClass(gpu, { n, vec4: n % 4 === 0 }),
    retune: (gpu) => retune(gpu, t, { n, vec4: n % 4 === 0 }),
  }));
}

/** `[rows, C]` and `[rows, 4·C]` of every model shape. */
function withHidden(shapes: readonly RowShape[], factors: readonly number[]): RowShape[] {
  return shapes.flatMap((s) => factors.map((f) => ({ rows: s.rows, cols: s.cols * f })));
}

/** Every tuned op but the GEMM, at the models' shapes, in the order `tost tune` runs them. */
export function tuneTargets(): TuneTarget[] {
  return [
    ...rowTargets(LAYER_NORM, MODEL_ROWS),
    ...rowTargets(LAYER_NORM_BACKWARD, MODEL_ROWS),
    ...rowTargets(COLUMN_SUMS, withHidden(MODEL_ROWS, [1, 3, 4])),
  ];
}

/** The names of the tuned ops (the GEMM's is "gemm"). */
export function tunedOpNames(): string[] {
  return ["gemm", ...new Set(tuneTargets().map((t) => t.op))];
}
