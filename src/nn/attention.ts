/**
 * The attention of a transformer block, whatever its kind — the one place
 * that picks the module for a kind:
 *
 * | kind             | module                                   | model        |
 * | ---------------- | ---------------------------------------- | ------------ |
 * | `tssa`           | `AttentionTSSA` (`tssa_attention.ts`)    | vision ToST  |
 * | `causal-tssa`    | `CausalSelfAttention_TSSA` (`causal_tssa_attention.ts`) | language ToST |
 * | `softmax`        | `Attention` (`softmax_self_attention.ts`) | ViT         |
 * | `causal-softmax` | `CausalSelfAttention` (`softmax_self_attention.ts`) | GPT |
 *
 * with the forward (inference, training with saves, or decoding with a
 * per-layer {@linkcode AttentionState}) and the backward.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import {
  createCausalTssaState,
  destroyCausalTssaState,
  resetCausalTssaState,
} from "../ops/causal_tssa_step.ts";
import type { CausalTssaState } from "../ops/causal_tssa_step.ts";
import { createKvCache, destroyKvCache } from "../ops/kv_cache_attention.ts";
import type { KvCache } from "../ops/kv_cache_attention.ts";
import { tssaAttention, tssaAttentionBackward } from "./tssa_attention.ts";
import type { TssaAttentionParams, TssaAttentionSaves } from "./tssa_attention.ts";
import { causalTssaAttention, causalTssaAttentionBackward } from "./causal_tssa_attention.ts";
import type {
  CausalTssaAttentionParams,
  CausalTssaAttentionSaves,
} from "./causal_tssa_attention.ts";
import { softmaxSelfAttention, softmaxSelfAttentionBackward } from "./softmax_self_attention.ts";
import type { SoftmaxSelfAttentionSaves } from "./softmax_self_attention.ts";
import type { Projections, ResidualInto } from "./_projected.ts";

/** The attention kinds of the models. */
export type AttentionKind = "tssa" | "causal-tssa" | "softmax" | "causal-softmax";

/** An attention module's parameters (or gradients, shaped alike), tagged with its kind. */
export type AttentionParams =
  | ({ kind: "tssa" } & TssaAttentionParams)
  | ({ kind: "causal-tssa" } & CausalTssaAttentionParams)
  | ({ kind: "softmax" | "causal-softmax" } & Projections);

/** What an attention forward kept for its backward. */
export type AttentionSaves =
  | { kind: "tssa"; saves: TssaAttentionSaves }
  | { kind: "causal-tssa"; saves: CausalTssaAttentionSaves }
  | { kind: "softmax" | "causal-softmax"; saves: SoftmaxSelfAttentionSaves };

/**
 * One layer's decoding state: the running statistics of causal TSSA (O(C)
 * numbers per sequence) or the keys and values of causal softmax attention.
 */
export type AttentionState =
  | { kind: "causal-tssa"; state: CausalTssaState }
  | { kind: "causal-softmax"; cache: KvCache };

/** How {@linkcode attention} runs. */
export interface AttentionOptions {
  /** Keep what the backward needs and return it. */
  saves?: boolean;
  /** Decode the next tokens with this layer state (causal kinds). */
  state?: AttentionState;
  /**
   * Add the output into this residual stream in place, fused into the
   * output projection (`x += gamma ⊙ attn`); `out` is then the stream, and
   * `residual.out` (when given) receives the attention output itself.
   */
  residual?: ResidualInto;
  /**
   * TSSA kinds: receives Π `[B·N, H]` of this forward while it is valid
   * (copy it to keep it). Softmax kinds have no Π: they refuse it.
   */
  onPi?: (pi: Tensor) => void;
}

/**
 * Record the attention of `kind` on `x` `[B, N, D]` (already normalised):
 * returns its output `[B, N, D]` and, when asked, its saves.
 *
 * @throws {TypeError} for a decoding state of another kind, or `onPi` on softmax attention
 */
export async function attention(
  gpu: Gpu,
  x: Tensor,
  p: AttentionParams,
  heads: number,
  options: AttentionOptions = {},
): Promise<{ out: Tensor; saves: AttentionSaves | null }> {
  const { state, residual, onPi } = options;
  if (state && state.kind !== p.kind) {
    throw new TypeError(`attention: a ${state.kind} decoding state for ${p.kind} attention`);
  }
  if (onPi && (p.kind === "softmax" || p.kind === "causal-softmax")) {
    throw new TypeError(`attention: ${p.kind} attention has no Π (only TSSA has)`);
  }
  if (options.saves) {
    switch (p.kind) {
      case "tssa": {
        const r = await tssaAttention(gpu, x, p, heads, { saves: true, residual, onPi });
        return { out: r.out, saves: { kind: p.kind, saves: r.saves } };
      }
      case "causal-tssa": {
        const r = await causalTssaAttention(gpu, x, p, heads, { saves: true, residual, onPi });
        return { out: r.out, saves: { kind: p.kind, saves: r.saves } };
      }
      default: {
        const causal = p.kind === "causal-softmax";
        const r = await softmaxSelfAttention(gpu, x, p, heads, {
          causal,
          saves: true,
          residual,
        });
        return { out: r.out, saves: { kind: p.kind, saves: r.saves } };
      }
    }
  }
  let out: Tensor;
  switch (p.kind) {
    case "tssa":
      out = await tssaAttention(gpu, x, p, heads, { residual, onPi });
      break;
    case "causal-tssa":
      out = await causalTssaAttention(gpu, x, p, heads, {
        state: state?.kind === "causal-tssa" ? state.state : undefined,
        residual,
        onPi,
      });
      break;
    default:
      out = await softmaxSelfAttention(gpu, x, p, heads, {
        causal: p.kind === "causal-softmax",
        cache: state?.kind === "causal-softmax" ? state.cache : undefined,
        residual,
      });
  }
  return { out, saves: null };
}

/**
 * Record the backward of {@linkcode attention}: adds the module's
 * parameter gradients into `grads`, returns ∂x (new).
 *
 * @throws {TypeError} when the saves, parameters and gradients are of different kinds
 */
export async function attentionBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    saves: AttentionSaves;
    params: AttentionParams;
    grads: AttentionParams;
    heads: number;
  },
): Promise<Tensor> {
  const { dy, saves: s, params: p, grads: g, heads } = args;
  if (s.kind !== p.kind || g.kind !== p.kind) {
    throw new TypeError(`attentionBackward: saves ${s.kind}, params ${p.kind}, grads ${g.kind}`);
  }
  if (s.kind === "tssa" && p.kind === "tssa" && g.kind === "tssa") {
    return await tssaAttentionBackward(gpu, { dy, saves: s.saves, params: p, grads: g, heads });
  }
  if (s.kind === "causal-tssa" && p.kind === "causal-tssa" && g.kind === "causal-tssa") {
    return await causalTssaAttentionBackward(gpu, {
      dy,
      saves: s.saves,
      params: p,
      grads: g,
      heads,
    });
  }
  if (s.kind === "softmax" || s.kind === "causal-softmax") {
    return await softmaxSelfAttentionBackward(gpu, {
      dy,
      saves: s.saves,
      params: p,
      grads: g,
      heads,
      causal: s.kind === "causal-softmax",
    });
  }
  throw new TypeError(`attentionBackward: no backward for ${s.kind}`);
}

/**
 * A fresh decoding state for one layer of a causal kind: B sequences, H
 * heads of d features, up to `capacity` tokens (the model's block_size).
 * Allocated outside any arena: it lives as long as the decoder.
 *
 * @throws {TypeError} for a kind that does not decode (non-causal)
 */
export function createAttentionState(
  gpu: Gpu,
  kind: AttentionKind,
  sizes: { batches: number; heads: number; headDim: number; capacity: number },
): AttentionState {
  const { batches, heads, headDim, capacity } = sizes;
  return gpu.outsideArena((): AttentionState => {
    if (kind === "causal-tssa") {
      return { kind, state: createCausalTssaState(gpu, batches, heads, headDim) };
    }
    if (kind === "causal-softmax") {
      return { kind, cache: createKvCache(gpu, batches, heads, headDim, capacity) };
    }
    throw new TypeError(`createAttentionState: ${kind} attention does not decode token by token`);
  });
}

/** Forget every token of a decoding state. */
export function resetAttentionState(gpu: Gpu, s: AttentionState): void {
  if (s.kind === "causal-tssa") resetCausalTssaState(gpu, s.state);
  else s.cache.position = 0; // stale keys are overwritten before they are read
}

/** Free a decoding state's tensors. */
export function destroyAttentionState(s: AttentionState): void {
  if (s.kind === "causal-tssa") destroyCausalTssaState(s.state);
  else destroyKvCache(s.cache);
}
