/**
 * The float64 reference of the vision attention module of ToST
 * (`AttentionTSSA`, `tssa_attention.ts`): `qkv` projection → non-causal TSSA
 * (`ops/tssa_reference.ts`) → `to_out` projection, forward (with what the
 * backward reads) and backward, in plain TypeScript with no GPU code.
 * Parameters carry the names and layouts of the GPU module's.
 *
 * @module
 */

import { tssaBackwardReference, tssaReference } from "../ops/tssa_reference.ts";
import type { TssaReferenceOutput } from "../ops/tssa_reference.ts";
import { projectedBackwardReference, projectedReference } from "./_projected_reference.ts";
import type {
  ProjectedSavesReference,
  ProjectionGradsReference,
  ProjectionsReference,
} from "./_projected_reference.ts";

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
 * `tssaAttention` (`tssa_attention.ts`), with what the backward reads.
 *
 * @example
 * ```ts
 * import { tssaAttentionReference } from "./tssa_attention_reference.ts";
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
