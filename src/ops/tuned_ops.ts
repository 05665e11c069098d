/**
 * Every tuned op other than the GEMM, with the models' shapes `tost tune`
 * measures it at (the GEMM's are the linear layers of `src/bench/linear.ts`).
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { retune, type Tunable, type TuneChoice } from "../gpu/tune.ts";
import type { ElementShape, RowShape } from "./_tuned.ts";
import { CLASS_ATTENTION, type ClassAttentionShape } from "./class_attention.ts";
import { COLUMN_SUMS } from "./column_sums.ts";
import { CAUSAL_TSSA } from "./causal_tssa.ts";
import { CAUSAL_TSSA_BACKWARD } from "./causal_tssa_backward.ts";
import { CONV2D, type ConvShape } from "./conv2d.ts";
import { CONV2D_BACKWARD } from "./conv2d_backward.ts";
import { COPY_ROWS } from "./copy_rows.ts";
import { CROSS_ENTROPY } from "./cross_entropy.ts";
import { CROSS_ENTROPY_FORWARD_BACKWARD } from "./cross_entropy_backward.ts";
import { ELEMENTWISE } from "./elementwise.ts";
import { EMBEDDING } from "./embedding.ts";
import { EMBEDDING_BACKWARD } from "./embedding_backward.ts";
import { GELU } from "./gelu.ts";
import { GELU_BACKWARD } from "./gelu_backward.ts";
import { LAYER_NORM } from "./layer_norm.ts";
import { LAYER_NORM_BACKWARD } from "./layer_norm_backward.ts";
import { SOFTMAX } from "./softmax.ts";
import { TSSA, type TssaShape } from "./tssa.ts";

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

/**
 * `[rows, classes]` of the losses: character-level language models (97
 * characters) over the `small` preset's and nanoGPT's batches, and a
 * vision batch of 128 images over 10 classes.
 */
export const LOSS_ROWS: readonly RowShape[] = [
  { rows: 512, cols: 97 },
  { rows: 768, cols: 97 },
  { rows: 128, cols: 10 },
];

/** Values of every model shape (`[rows, C]`) times `factor`. */
function sizes(factor: number): number[] {
  return MODEL_ROWS.map((s) => s.rows * s.cols * factor);
}

/**
 * `[B, N, heads·d]` of the non-causal attention: the vision fixture in
 * batches of 128 (16 tokens and the class token, 64 wide, 4 heads) and
 * ToST-S (196 tokens, 384 wide, 6 heads) in batches of 8.
 */
export const TSSA_SHAPES: readonly TssaShape[] = [
  { batches: 128, tokens: 17, dim: 64, heads: 4, headDim: 16 },
  { batches: 8, tokens: 197, dim: 384, heads: 6, headDim: 64 },
];

function tssaTargets(t: Tunable<TssaShape>, shapes: readonly TssaShape[]): TuneTarget[] {
  return shapes.map((s) => ({
    op: t.op,
    label: `${s.batches}×${s.tokens}×${s.dim}, ${s.heads} heads`,
    shape: { batches: s.batches, tokens: s.tokens, dim: s.dim, heads: s.heads },
    shapeClass: (gpu) => t.shapeClass(gpu, s),
    retune: (gpu) => retune(gpu, t, s),
  }));
}

/**
 * `[B, T, heads·d]` of the causal attention: the `small` preset (8 × 64
 * tokens, 64 wide, 4 heads), nanoGPT's CPU configuration (12 × 64, 128, 4
 * heads) and 6 layers × 384 at 4 × 256 tokens (6 heads).
 */
export const CAUSAL_TSSA_SHAPES: readonly TssaShape[] = [
  { batches: 8, tokens: 64, dim: 64, heads: 4, headDim: 16 },
  { batches: 12, tokens: 64, dim: 128, heads: 4, headDim: 32 },
  { batches: 4, tokens: 256, dim: 384, heads: 6, headDim: 64 },
];

/** `[B, N, H, d]` of the vision models' class attention (the same models as {@linkcode TSSA_SHAPES}). */
export const CLASS_ATTENTION_SHAPES: readonly ClassAttentionShape[] = [
  { B: 128, N: 17, H: 4, d: 16 },
  { B: 8, N: 197, H: 6, d: 64 },
];

function classAttentionTargets(shapes: readonly ClassAttentionShape[]): TuneTarget[] {
  const t = CLASS_ATTENTION;
  return shapes.map((s) => ({
    op: t.op,
    label: `${s.B}×${s.N} tokens, ${s.H} heads of ${s.d}`,
    shape: { B: s.B, N: s.N, H: s.H, d: s.d },
    shapeClass: (gpu) => t.shapeClass(gpu, s),
    retune: (gpu) => retune(gpu, t, s),
  }));
}

/**
 * The vision stem's convolutions (patch 8, 64 wide: Cin → 16 → 32 → 64
 * channels on 28-pixel images, 14, 7 and 4 pixels a side after each) for the
 * vision fixture's evaluation batch of 128 (3 input channels) and the
 * `mnist` preset's training batch of 64 (1 input channel).
 */
export const STEM_CONVS: readonly ConvShape[] = [[128, 3], [64, 1]].flatMap(([B, cin]) => [
  { m: B * 14 * 14, cin, cout: 16 },
  { m: B * 7 * 7, cin: 16, cout: 32 },
  { m: B * 4 * 4, cin: 32, cout: 64 },
]);

function convTargets(t: Tunable<ConvShape>, shapes: readonly ConvShape[]): TuneTarget[] {
  return shapes.map((s) => ({
    op: t.op,
    label: `${s.m} pixels ${s.cin}→${s.cout}`,
    shape: { m: s.m, cin: s.cin, cout: s.cout },
    shapeClass: (gpu) => t.shapeClass(gpu, s),
    retune: (gpu) => retune(gpu, t, s),
  }));
}

/** Every tuned op but the GEMM, at the models' shapes, in the order `tost tune` runs them. */
export function tuneTargets(): TuneTarget[] {
  return [
    ...rowTargets(LAYER_NORM, MODEL_ROWS),
    ...rowTargets(LAYER_NORM_BACKWARD, MODEL_ROWS),
    ...rowTargets(COLUMN_SUMS, withHidden(MODEL_ROWS, [1, 3, 4])),
    ...elementTargets(ELEMENTWISE, sizes(1)),
    ...elementTargets(GELU, sizes(4)),
    ...elementTargets(GELU_BACKWARD, sizes(4)),
    ...elementTargets(COPY_ROWS, sizes(1)),
    ...elementTargets(EMBEDDING, sizes(1)),
    ...elementTargets(EMBEDDING_BACKWARD, sizes(1)),
    ...rowTargets(CROSS_ENTROPY, LOSS_ROWS),
    ...rowTargets(CROSS_ENTROPY_FORWARD_BACKWARD, LOSS_ROWS),
    ...rowTargets(SOFTMAX, MODEL_ROWS.slice(0, 2)),
    ...tssaTargets(TSSA, TSSA_SHAPES),
    ...tssaTargets(CAUSAL_TSSA, CAUSAL_TSSA_SHAPES),
    ...tssaTargets(CAUSAL_TSSA_BACKWARD, CAUSAL_TSSA_SHAPES),
    ...classAttentionTargets(CLASS_ATTENTION_SHAPES),
    ...convTargets(CONV2D, STEM_CONVS),
    ...convTargets(CONV2D_BACKWARD, STEM_CONVS.slice(3)),
  ];
}

/** The names of the tuned ops (the GEMM's is "gemm"). */
export function tunedOpNames(): string[] {
  return ["gemm", ...new Set(tuneTargets().map((t) => t.op))];
}
