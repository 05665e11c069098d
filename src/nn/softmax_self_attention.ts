/**
 * The softmax self-attention module of the baselines — timm's `Attention`
 * (ViT) and nanoGPT's `CausalSelfAttention` (GPT): `qkv`/`c_attn` projection
 * to packed `[B, N, 3·C]` → multi-head softmax attention → `proj`/`c_proj`
 * (dropout is the identity). The forward (with its saves on request), the
 * backward, and their float64 references.
 *
 * The operator in the middle is chosen once, here, for every caller:
 * standard attention (`ops/attention.ts`, scores materialised, kept for the
 * backward) while the `[B, H, N, N]` scores take at most
 * {@linkcode MAX_SCORE_BYTES}, flash attention (`ops/flash_attention.ts`,
 * whose backward recomputes the probabilities) beyond, and the KV-cache
 * step (`ops/kv_cache_attention.ts`) when decoding.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { softmaxAttention } from "../ops/attention.ts";
import type { SoftmaxAttentionSaves } from "../ops/attention.ts";
import { softmaxAttentionBackward } from "../ops/attention_backward.ts";
import {
  attentionReference,
  softmaxAttentionBackwardReference,
} from "../ops/attention_reference.ts";
import { flashAttention } from "../ops/flash_attention.ts";
import { flashAttentionBackward } from "../ops/flash_attention_backward.ts";
import { kvCacheAttention } from "../ops/kv_cache_attention.ts";
import type { KvCache } from "../ops/kv_cache_attention.ts";
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
import type { AttentionDims } from "./tssa_attention.ts";

/** Standard attention materialises `[B, H, N, N]` scores up to this size, flash attention beyond. */
export const MAX_SCORE_BYTES = 64 * 1024 * 1024;

/** What {@linkcode softmaxSelfAttention} keeps: the probabilities, or none (flash). */
export type SoftmaxSelfAttentionSaves = ProjectedSaves<SoftmaxAttentionSaves | null>;

/** Options of {@linkcode softmaxSelfAttention}. */
export interface SoftmaxSelfAttentionOptions {
  /** Mask future keys (GPT). */
  causal?: boolean;
  /** Keep what the backward needs and return it. */
  saves?: boolean;
  /** Decode (causal only): append `x`'s tokens to this cache and attend over it. */
  cache?: KvCache;
}

/**
 * Softmax self-attention forward on the GPU: `x` `[B, N, C]` → `[B, N, C]`.
 * Records dispatches only. With `{ saves: true }` returns `{ out, saves }`
 * for {@linkcode softmaxSelfAttentionBackward}.
 *
 * @param p `inWeight` `[3C, C]` (packed q, k, v, heads side by side), `inBias`, `outWeight`, `outBias`
 * @throws {TypeError} when asked for saves while decoding, or decoding non-causally
 * @example
 * ```ts ignore
 * const out = await softmaxSelfAttention(gpu, x, params, 6, { causal: true });
 * ```
 */
export async function softmaxSelfAttention(
  gpu: Gpu,
  x: Tensor,
  p: Projections,
  heads: number,
  options: SoftmaxSelfAttentionOptions & { saves: true },
): Promise<{ out: Tensor; saves: SoftmaxSelfAttentionSaves }>;
export async function softmaxSelfAttention(
  gpu: Gpu,
  x: Tensor,
  p: Projections,
  heads: number,
  options?: SoftmaxSelfAttentionOptions,
): Promise<Tensor>;
export async function softmaxSelfAttention(
  gpu: Gpu,
  x: Tensor,
  p: Projections,
  heads: number,
  options: SoftmaxSelfAttentionOptions = {},
): Promise<Tensor | { out: Tensor; saves: SoftmaxSelfAttentionSaves }> {
  const { cache } = options;
  const causal = options.causal ?? false;
  if (cache && (options.saves || !causal)) {
    throw new TypeError("softmaxSelfAttention: decoding is causal and keeps no saves");
  }
  const r = await projectedForward<SoftmaxAttentionSaves | null>(gpu, x, p, async (w, keep) => {
    if (cache) return { y: await kvCacheAttention(gpu, w, cache), saves: null };
    const [B, N] = w.shape;
    if (B * heads * N * N * 4 > MAX_SCORE_BYTES) {
      return { y: await flashAttention(gpu, w, heads, { causal }), saves: null };
    }
    if (!keep) return { y: await softmaxAttention(gpu, w, heads, { causal }), saves: null };
    const { out, saves } = await softmaxAttention(gpu, w, heads, { causal, saves: true });
    return { y: out, saves };
  }, options.saves ?? false);
  return r.saves ? { out: r.out, saves: r.saves } : r.out;
}

/**
 * Softmax self-attention backward on the GPU: adds the projections'
 * gradients into `grads`, returns ∂x `[B, N, C]` (new). From the saved
 * probabilities, or recomputing them (flash) when none were kept.
 */
export async function softmaxSelfAttentionBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    saves: SoftmaxSelfAttentionSaves;
    params: Projections;
    grads: Projections;
    heads: number;
    causal: boolean;
  },
): Promise<Tensor> {
  const { saves, heads, causal } = args;
  return await projectedBackward(gpu, {
    ...args,
    opBackward: (dY) => {
      const common = { dout: dY, qkv: saves.w, out: saves.y, heads, causal };
      return saves.op
        ? softmaxAttentionBackward(gpu, { ...common, saves: saves.op })
        : flashAttentionBackward(gpu, common);
    },
  });
}

// ------------------------------------------------------------- reference

function shape(dims: AttentionDims) {
  const { batches: B, tokens: N, heads: H, headDim: d } = dims;
  return { B, N, H, d, sizes: { rows: B * N, dim: H * d } };
}

/**
 * Softmax self-attention forward in float64: the reference of
 * {@linkcode softmaxSelfAttention}.
 *
 * @example
 * ```ts
 * import { softmaxSelfAttentionReference } from "./softmax_self_attention.ts";
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
