/**
 * The language attention module of ToST (`CausalSelfAttention_TSSA`):
 * `c_attn` projection → causal TSSA → `c_proj` projection (dropout is the
 * identity in eval). Parameters are named after the reference `state_dict`:
 *
 * | field         | state_dict      | shape                 |
 * | ------------- | --------------- | --------------------- |
 * | `cAttnWeight` | `c_attn.weight` | `[D, D]`              |
 * | `cAttnBias`   | `c_attn.bias`   | `[D]` or absent (`bias=False`) |
 * | `temp`        | `temp`          | `[H, 1]`              |
 * | `denomBias`   | `denom_bias`    | `[H, block_size, 1]`  |
 * | `cProjWeight` | `c_proj.weight` | `[D, D]`              |
 * | `cProjBias`   | `c_proj.bias`   | `[D]` or absent       |
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { linear } from "../ops/linear.ts";
import { linearForwardReference } from "../ops/linear_backward.ts";
import { causalTssa, causalTssaReference } from "../ops/causal_tssa.ts";
import type { TssaOptions } from "../ops/_tssa_blocks.ts";
import type { AttentionDims } from "./tssa_attention.ts";

/** GPU parameters of {@linkcode causalTssaAttention}. */
export interface CausalTssaAttentionParams {
  /** `c_attn.weight`, `[D, D]`. */
  cAttnWeight: Tensor;
  /** `c_attn.bias`, `[D]`, or null. */
  cAttnBias: Tensor | null;
  /** `temp`, `H` values (`[H, 1]`). */
  temp: Tensor;
  /** `denom_bias`, `[H, block_size, 1]`. */
  denomBias: Tensor;
  /** `c_proj.weight`, `[D, D]`. */
  cProjWeight: Tensor;
  /** `c_proj.bias`, `[D]`, or null. */
  cProjBias: Tensor | null;
}

/** Host parameters of {@linkcode causalTssaAttentionReference}, same names and layouts. */
export interface CausalTssaAttentionParamsHost {
  cAttnWeight: ArrayLike<number>;
  cAttnBias: ArrayLike<number> | null;
  temp: ArrayLike<number>;
  denomBias: ArrayLike<number>;
  cProjWeight: ArrayLike<number>;
  cProjBias: ArrayLike<number> | null;
}

/**
 * `CausalSelfAttention_TSSA` forward on the GPU: `x` `[B, N, D]` →
 * `[B, N, D]`, for `N ≤ block_size`. Records dispatches only; the
 * intermediate tensors are freed.
 *
 * @param heads number of heads; `D` must be a multiple of it
 * @param options test-only options of the operator
 * @throws {RangeError} when `N` exceeds `block_size`
 * @example
 * ```ts ignore
 * const out = await causalTssaAttention(gpu, x, {
 *   cAttnWeight, cAttnBias, temp, denomBias, cProjWeight, cProjBias,
 * }, 4);
 * ```
 */
export async function causalTssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: CausalTssaAttentionParams,
  heads: number,
  options: TssaOptions = {},
): Promise<Tensor> {
  const w = await linear(gpu, x, p.cAttnWeight, p.cAttnBias, undefined, options);
  try {
    const y = await causalTssa(gpu, w, p.temp, p.denomBias, heads, options);
    try {
      return await linear(gpu, y, p.cProjWeight, p.cProjBias, undefined, options);
    } finally {
      y.destroy();
    }
  } finally {
    w.destroy();
  }
}

/**
 * `CausalSelfAttention_TSSA` forward on the CPU in float64: the reference
 * of {@linkcode causalTssaAttention}. `block_size` is taken from
 * `denomBias.length / heads`.
 *
 * @example
 * ```ts
 * import { causalTssaAttentionReference } from "./causal_tssa_attention.ts";
 * // One token, one feature: w = 2, causal TSSA gives −2/(1 + 4/(1 + 1e-8)) ≈ −0.4.
 * const y = causalTssaAttentionReference([2], {
 *   cAttnWeight: [1], cAttnBias: null, temp: [1], denomBias: [0.5, 0],
 *   cProjWeight: [1], cProjBias: [1],
 * }, { batches: 1, tokens: 1, dim: 1, heads: 1 });
 * if (Math.abs(y[0] - 0.6) > 1e-8) throw new Error("causalTssaAttentionReference");
 * ```
 */
export function causalTssaAttentionReference(
  x: ArrayLike<number>,
  p: CausalTssaAttentionParamsHost,
  dims: AttentionDims,
): Float64Array {
  const { batches: B, tokens: N, dim: D, heads } = dims;
  const lin = { rows: B * N, inFeatures: D, outFeatures: D };
  const w = linearForwardReference(x, p.cAttnWeight, p.cAttnBias, lin);
  const blockSize = p.denomBias.length / heads;
  const y = causalTssaReference(w, p.temp, p.denomBias, B, N, heads, D / heads, blockSize);
  return linearForwardReference(y, p.cProjWeight, p.cProjBias, lin);
}
