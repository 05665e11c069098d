/**
 * The vision attention module of ToST (`AttentionTSSA`): `qkv` projection →
 * non-causal TSSA (`ops/tssa.ts`) → `to_out` projection (dropout is the
 * identity): the forward (with its saves on request), the backward, and
 * their float64 references. Parameters are named after the reference
 * `state_dict`:
 *
 * | field       | state_dict        | shape     |
 * | ----------- | ----------------- | --------- |
 * | `inWeight`  | `qkv.weight`      | `[D, D]`  |
 * | `inBias`    | `qkv.bias`        | `[D]` or absent (`qkv_bias=False`) |
 * | `temp`      | `temp`            | `[H, 1]`  |
 * | `outWeight` | `to_out.0.weight` | `[D, D]`  |
 * | `outBias`   | `to_out.0.bias`   | `[D]`     |
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { tssa, tssaReference } from "../ops/tssa.ts";
import type { TssaReferenceOutput, TssaSaves } from "../ops/tssa.ts";
import { tssaBackward, tssaBackwardReference } from "../ops/tssa_backward.ts";
import {
  projectedBackward,
  projectedBackwardReference,
  projectedForward,
  projectedReference,
} from "./_projected.ts";
import type {
  ProjectedSaves,
  ProjectedSavesReference,
  ProjectionGradsReference,
  Projections,
  ProjectionsReference,
} from "./_projected.ts";

/** GPU parameters of {@linkcode tssaAttention} (and, shaped alike, its gradients). */
export interface TssaAttentionParams extends Projections {
  /** `temp`, `H` values (`[H, 1]`). */
  temp: Tensor;
}

/** What {@linkcode tssaAttention} keeps for {@linkcode tssaAttentionBackward}. */
export type TssaAttentionSaves = ProjectedSaves<TssaSaves>;

/**
 * `AttentionTSSA` forward on the GPU: `x` `[B, N, D]` → `[B, N, D]`. Records
 * dispatches only. With `{ saves: true }` returns `{ out, saves }` for
 * {@linkcode tssaAttentionBackward}; otherwise the intermediates are freed.
 *
 * @param heads number of heads; `D` must be a multiple of it
 * @example
 * ```ts ignore
 * const out = await tssaAttention(gpu, x, { inWeight, inBias: null, temp, outWeight, outBias }, 4);
 * ```
 */
export async function tssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: TssaAttentionParams,
  heads: number,
  options: { saves: true },
): Promise<{ out: Tensor; saves: TssaAttentionSaves }>;
export async function tssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: TssaAttentionParams,
  heads: number,
  options?: { saves?: boolean },
): Promise<Tensor>;
export async function tssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: TssaAttentionParams,
  heads: number,
  options: { saves?: boolean } = {},
): Promise<Tensor | { out: Tensor; saves: TssaAttentionSaves }> {
  const r = await projectedForward<TssaSaves>(gpu, x, p, async (w, keep) => {
    if (!keep) return { y: await tssa(gpu, w, p.temp, heads), saves: null };
    return await tssa(gpu, w, p.temp, heads, { saves: true });
  }, options.saves ?? false);
  return r.saves ? { out: r.out, saves: r.saves } : r.out;
}

/**
 * `AttentionTSSA` backward on the GPU: adds every parameter's gradient into
 * `grads` and returns ∂x `[B, N, D]` (new). Records dispatches only.
 */
export async function tssaAttentionBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    saves: TssaAttentionSaves;
    params: TssaAttentionParams;
    grads: TssaAttentionParams;
    heads: number;
  },
): Promise<Tensor> {
  const { saves, params, grads, heads } = args;
  return await projectedBackward(gpu, {
    ...args,
    opBackward: (dY) =>
      tssaBackward(gpu, {
        dy: dY,
        w: saves.w,
        temp: params.temp,
        saves: saves.op,
        dtemp: grads.temp,
        heads,
      }),
  });
}

// ------------------------------------------------------------- reference

/** Host parameters of the references, same names and layouts. */
export interface TssaAttentionParamsReference extends ProjectionsReference {
  temp: ArrayLike<number>;
}

/** Gradients of {@linkcode TssaAttentionParamsReference}, accumulated into. */
export interface TssaAttentionGradsReference extends ProjectionGradsReference {
  temp: Float64Array;
}

/** Sizes of a module call: `x` is `[batches, tokens, heads·headDim]`. */
export interface AttentionDims {
  batches: number;
  tokens: number;
  heads: number;
  headDim: number;
}

function sizes(dims: AttentionDims) {
  return { rows: dims.batches * dims.tokens, dim: dims.heads * dims.headDim };
}

/**
 * `AttentionTSSA` forward in float64: the reference of
 * {@linkcode tssaAttention}, with what the backward reads.
 *
 * @example
 * ```ts
 * import { tssaAttentionReference } from "./tssa_attention.ts";
 * // One token, one feature: w = 2, TSSA gives −2/(1 + 4/(1 + 1e-8)) ≈ −0.4, then + 1.
 * const { out } = tssaAttentionReference([2], {
 *   inWeight: [1], inBias: null, temp: [1], outWeight: [1], outBias: [1],
 * }, { batches: 1, tokens: 1, heads: 1, headDim: 1 });
 * if (Math.abs(out[0] - 0.6) > 1e-8) throw new Error("tssaAttentionReference");
 * ```
 */
export function tssaAttentionReference(
  x: ArrayLike<number>,
  p: TssaAttentionParamsReference,
  dims: AttentionDims,
): { out: Float64Array; saves: ProjectedSavesReference<TssaReferenceOutput> } {
  return projectedReference(x, p, sizes(dims), (w) => {
    const saves = tssaReference(w, p.temp, dims);
    return { y: saves.y, saves };
  });
}

/**
 * `AttentionTSSA` backward in float64: ∂x (assigned); every parameter
 * gradient is added to `grads`.
 */
export function tssaAttentionBackwardReference(
  args: {
    dy: ArrayLike<number>;
    x: ArrayLike<number>;
    params: TssaAttentionParamsReference;
    saves: ProjectedSavesReference<TssaReferenceOutput>;
    grads: TssaAttentionGradsReference;
  },
  dims: AttentionDims,
): Float64Array {
  const { params, saves, grads } = args;
  return projectedBackwardReference({
    ...args,
    opBackward: (dY) =>
      tssaBackwardReference({
        dy: dY,
        w: saves.w,
        temp: params.temp,
        saved: saves.op,
        dtemp: grads.temp,
      }, dims),
  }, sizes(dims));
}
