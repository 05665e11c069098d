/**
 * The vision attention module of ToST (`AttentionTSSA`): `qkv` projection →
 * non-causal TSSA → `to_out` projection (dropout is the identity in eval).
 * Parameters are named after the reference `state_dict`:
 *
 * | field       | state_dict        | shape     |
 * | ----------- | ----------------- | --------- |
 * | `qkvWeight` | `qkv.weight`      | `[D, D]`  |
 * | `qkvBias`   | `qkv.bias`        | `[D]` or absent (`qkv_bias=False`) |
 * | `temp`      | `temp`            | `[H, 1]`  |
 * | `outWeight` | `to_out.0.weight` | `[D, D]`  |
 * | `outBias`   | `to_out.0.bias`   | `[D]`     |
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { linear } from "../ops/linear.ts";
import { linearForwardReference } from "../ops/linear_backward.ts";
import { tssa, tssaReference } from "../ops/tssa.ts";
import type { TssaOptions } from "../ops/_tssa_blocks.ts";

/** GPU parameters of {@linkcode tssaAttention}. */
export interface TssaAttentionParams {
  /** `qkv.weight`, `[D, D]`. */
  qkvWeight: Tensor;
  /** `qkv.bias`, `[D]`, or null. */
  qkvBias: Tensor | null;
  /** `temp`, `H` values (`[H, 1]`). */
  temp: Tensor;
  /** `to_out.0.weight`, `[D, D]`. */
  outWeight: Tensor;
  /** `to_out.0.bias`, `[D]`, or null. */
  outBias: Tensor | null;
}

/** Host parameters of {@linkcode tssaAttentionReference}, same names and layouts. */
export interface TssaAttentionParamsHost {
  qkvWeight: ArrayLike<number>;
  qkvBias: ArrayLike<number> | null;
  temp: ArrayLike<number>;
  outWeight: ArrayLike<number>;
  outBias: ArrayLike<number> | null;
}

/** Sizes of a reference module call: `x` is `[batches, tokens, dim]`. */
export interface AttentionDims {
  batches: number;
  tokens: number;
  dim: number;
  heads: number;
}

/**
 * `AttentionTSSA` forward on the GPU: `x` `[B, N, D]` → `[B, N, D]`.
 * Records dispatches only; the intermediate tensors are freed.
 *
 * @param heads number of heads; `D` must be a multiple of it
 * @param options test-only options of the operator
 * @example
 * ```ts ignore
 * const out = await tssaAttention(gpu, x, {
 *   qkvWeight: gpu.upload(file.f32("qkv.weight"), [64, 64]),
 *   qkvBias: null,
 *   temp: gpu.upload(file.f32("temp"), [4, 1]),
 *   outWeight: gpu.upload(file.f32("to_out.0.weight"), [64, 64]),
 *   outBias: gpu.upload(file.f32("to_out.0.bias"), [64]),
 * }, 4);
 * ```
 */
export async function tssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: TssaAttentionParams,
  heads: number,
  options: TssaOptions = {},
): Promise<Tensor> {
  const w = await linear(gpu, x, p.qkvWeight, p.qkvBias, undefined, options);
  try {
    const y = await tssa(gpu, w, p.temp, heads, options);
    try {
      return await linear(gpu, y, p.outWeight, p.outBias, undefined, options);
    } finally {
      y.destroy();
    }
  } finally {
    w.destroy();
  }
}

/**
 * `AttentionTSSA` forward on the CPU in float64: the reference of
 * {@linkcode tssaAttention}.
 *
 * @example
 * ```ts
 * import { tssaAttentionReference } from "./tssa_attention.ts";
 * // One token, one feature: w = 2, TSSA gives −2/(1 + 4/(1 + 1e-8)) ≈ −0.4, then + 1.
 * const y = tssaAttentionReference([2], {
 *   qkvWeight: [1], qkvBias: null, temp: [1], outWeight: [1], outBias: [1],
 * }, { batches: 1, tokens: 1, dim: 1, heads: 1 });
 * if (Math.abs(y[0] - 0.6) > 1e-8) throw new Error("tssaAttentionReference");
 * ```
 */
export function tssaAttentionReference(
  x: ArrayLike<number>,
  p: TssaAttentionParamsHost,
  dims: AttentionDims,
): Float64Array {
  const { batches: B, tokens: N, dim: D, heads } = dims;
  const lin = { rows: B * N, inFeatures: D, outFeatures: D };
  const w = linearForwardReference(x, p.qkvWeight, p.qkvBias, lin);
  const y = tssaReference(w, p.temp, B, N, heads, D / heads);
  return linearForwardReference(y, p.outWeight, p.outBias, lin);
}
