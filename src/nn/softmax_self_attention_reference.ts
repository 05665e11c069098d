/**
 * The float64 reference of the softmax self-attention module of the
 * baselines (`softmax_self_attention.ts`): `qkv`/`c_attn` projection →
 * multi-head softmax attention (`ops/attention_reference.ts`) →
 * `proj`/`c_proj` projection, forward and backward, in plain TypeScript with
 * no GPU code.
 *
 * @module
 */

import {
  attentionReference,
  softmaxAttentionBackwardReference,
} from "../ops/attention_reference.ts";
import { projectedBackwardReference, projectedReference } from "./_projected_reference.ts";
import type {
  ProjectedSavesReference,
  ProjectionGradsReference,
  ProjectionsReference,
} from "./_projected_reference.ts";
import type { AttentionDims } from "./tssa_attention_reference.ts";

function shape(dims: AttentionDims) {
  const { batches: B, tokens: N, heads: H, headDim: d } = dims;
  return { B, N, H, d, sizes: { rows: B * N, dim: H * d } };
}

/**
 * Softmax self-attention forward in float64: the reference of
 * `softmaxSelfAttention` (`softmax_self_attention.ts`).
 *
 * @example
 * ```ts
 * import { softmaxSelfAttentionReference } from "./softmax_self_attention_reference.ts";
 * // One token attends to itself: the output projects its value (the third input row).
 * const { out } = softmaxSelfAttentionReference([2], {
 *   inWeight: [1, 1, 3], inBias: null, outWeight: [1], outBias: [0],
 * }, { batches: 1, tokens: 1, heads: 1, headDim: 1 }, { causal: true });
 * if (out[0] !== 6) throw new Error("softmaxSelfAttentionReference");
 * ```
 */
export function softmaxSelfAttentionReference(
  x: ArrayLike<number>,
  p: ProjectionsReference,
  dims: AttentionDims,
  options: { causal: boolean },
): { out: Float64Array; saves: ProjectedSavesReference<null> } {
  const { B, N, H, d, sizes } = shape(dims);
  return projectedReference(x, p, sizes, (qkv) => ({
    y: attentionReference(qkv, B, N, H, d, options),
    saves: null,
  }));
}

/**
 * Softmax self-attention backward in float64: ∂x (assigned); the
 * projections' gradients are added to `grads`.
 */
export function softmaxSelfAttentionBackwardReference(
  args: {
    dy: ArrayLike<number>;
    x: ArrayLike<number>;
    params: ProjectionsReference;
    saves: ProjectedSavesReference<null>;
    grads: ProjectionGradsReference;
  },
  dims: AttentionDims,
  options: { causal: boolean },
): Float64Array {
  const { B, N, H, d, sizes } = shape(dims);
  return projectedBackwardReference({
    ...args,
    opBackward: (dY) => softmaxAttentionBackwardReference(args.saves.w, dY, B, N, H, d, options),
  }, sizes);
}
