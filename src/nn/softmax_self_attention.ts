/**
 * The softmax self-attention module of the baselines — timm's `Attention`
 * (ViT) and nanoGPT's `CausalSelfAttention` (GPT): `qkv`/`c_attn` projection
 * to packed `[B, N, 3·C]` → multi-head softmax attention → `proj`/`c_proj`
 * (dropout is the identity). The forward (with its saves on request) and
 * the backward; their float64 references are in
 * `softmax_self_attention_reference.ts`.
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
import { flashAttention } from "../ops/flash_attention.ts";
import { flashAttentionBackward } from "../ops/flash_attention_backward.ts";
import { kvCacheAttention } from "../ops/kv_cache_attention.ts";
import type { KvCache } from "../ops/kv_cache_attention.ts";
import { projectedBackward, projectedForward } from "./_projected.ts";
import type { ProjectedSaves, Projections, ResidualInto } from "./_projected.ts";

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
  /**
   * Add the output into this residual stream in place (fused into the
   * output projection) and return the stream instead of a new tensor.
   */
  residual?: ResidualInto;
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
  const r = await projectedForward<SoftmaxAttentionSaves | null>(
    gpu,
    x,
    p,
    async (w, keep) => {
      if (cache) return { y: await kvCacheAttention(gpu, w, cache), saves: null };
      const [B, N] = w.shape;
      if (B * heads * N * N * 4 > MAX_SCORE_BYTES) {
        return { y: await flashAttention(gpu, w, heads, { causal }), saves: null };
      }
      if (!keep) return { y: await softmaxAttention(gpu, w, heads, { causal }), saves: null };
      const { out, saves } = await softmaxAttention(gpu, w, heads, { causal, saves: true });
      return { y: out, saves };
    },
    options.saves ?? false,
    options.residual,
  );
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
