/**
 * The float64 reference of the language attention module of ToST
 * (`CausalSelfAttention_TSSA`, `causal_tssa_attention.ts`): `c_attn`
 * projection → causal TSSA (`ops/causal_tssa_reference.ts`) → `c_proj`
 * projection, forward (with what the backward reads) and backward, in plain
 * TypeScript with no GPU code. Parameters carry the names and layouts of the
 * GPU module's; `block_size` is `denomBias.length / heads`.
 *
 * @module
 */

import { causalTssaBackwardReference, causalTssaReference } from "../ops/causal_tssa_reference.ts";
import type { CausalTssaReferenceOutput } from "../ops/causal_tssa_reference.ts";
import { projectedBackwardReference, projectedReference } from "./_projected_reference.ts";
import type {
  ProjectedSavesReference,
  ProjectionGradsReference,
  ProjectionsReference,
} from "./_projected_reference.ts";
import type { AttentionDims } from "./tssa_attention_reference.ts";

/** Host parameters of the references, same names and layouts. */
export interface CausalTssaAttentionParamsReference extends ProjectionsReference {
  temp: ArrayLike<number>;
  denomBias: ArrayLike<number>;
}

/** Gradients of {@linkcode CausalTssaAttentionParamsReference}, accumulated into. */
export interface CausalTssaAttentionGradsReference extends ProjectionGradsReference {
  temp: Float64Array;
  denomBias: Float64Array;
}

function sizes(dims: AttentionDims) {
  return { rows: dims.batches * dims.tokens, dim: dims.heads * dims.headDim };
}

function causalDims(p: CausalTssaAttentionParamsReference, dims: AttentionDims) {
  return { ...dims, blockSize: p.denomBias.length / dims.heads };
}

/**
 * `CausalSelfAttention_TSSA` forward in float64: the reference of
 * `causalTssaAttention` (`causal_tssa_attention.ts`), with what the backward reads.
 * `block_size` is `denomBias.length / heads`.
 *
 * @example
 * ```ts
 * import { causalTssaAttentionReference } from "./causal_tssa_attention_reference.ts";
 * // One token, one feature: w = 2, causal TSSA gives −2/(1 + 4/(1 + 1e-8)) ≈ −0.4.
 * const { out } = causalTssaAttentionReference([2], {
 *   inWeight: [1], inBias: null, temp: [1], denomBias: [0.5, 0],
 *   outWeight: [1], outBias: [1],
 * }, { batches: 1, tokens: 1, heads: 1, headDim: 1 });
 * if (Math.abs(out[0] - 0.6) > 1e-8) throw new Error("causalTssaAttentionReference");
 * ```
 */
export function causalTssaAttentionReference(
  x: ArrayLike<number>,
  p: CausalTssaAttentionParamsReference,
  dims: AttentionDims,
): { out: Float64Array; saves: ProjectedSavesReference<CausalTssaReferenceOutput> } {
  return projectedReference(x, p, sizes(dims), (w) => {
    const saves = causalTssaReference(w, p, causalDims(p, dims));
    return { y: saves.y, saves };
  });
}

/**
 * `CausalSelfAttention_TSSA` backward in float64: ∂x (assigned); every
 * parameter gradient is added to `grads`.
 */
export function causalTssaAttentionBackwardReference(
  args: {
    dy: ArrayLike<number>;
    x: ArrayLike<number>;
    params: CausalTssaAttentionParamsReference;
    saves: ProjectedSavesReference<CausalTssaReferenceOutput>;
    grads: CausalTssaAttentionGradsReference;
  },
  dims: AttentionDims,
): Float64Array {
  const { params, saves, grads } = args;
  return projectedBackwardReference({
    ...args,
    opBackward: (dY) =>
      causalTssaBackwardReference({
        dy: dY,
        w: saves.w,
        temp: params.temp,
        denomBias: params.denomBias,
        pi: saves.op.pi,
        dtemp: grads.temp,
        dDenomBias: grads.denomBias,
      }, causalDims(params, dims)),
  }, sizes(dims));
}
