/**
 * The language models (nanoGPT-style `GPT` with `TSSA=True` — causal ToST —
 * or `TSSA=False` — GPT with causal softmax attention) in plain float64
 * TypeScript, exactly as the reference PyTorch code computes them:
 *
 *     x = wte[idx] + wpe[t]
 *     per block: x += γ1·attn(ln_1(x));  x += γ2·MLP(ln_2(x))
 *     logits = lm_head(ln_f(x))            (lm_head tied to wte)
 *
 * LayerNorms use `cfg.norm_eps` (1e-5 in the reference) and have a bias only
 * when `cfg.bias`; so do all linear layers except `lm_head`. The MLP is
 * `c_fc` (4C) → exact GELU → `c_proj`.
 *
 * Shapes: B sequences of T ≤ block_size tokens, C = n_embd, NH = n_head,
 * HS = C/NH, V = vocab_size.
 *
 * @module
 */

import type { LanguageConfig } from "../config.ts";
import { addScaledInPlace, linear, param } from "./layers.ts";
import type { Capture, Weights } from "./layers.ts";
import { causalTssaAttentionReference } from "../../nn/causal_tssa_attention_reference.ts";
import { softmaxSelfAttentionReference } from "../../nn/softmax_self_attention_reference.ts";
import { geluReference } from "../../ops/gelu_reference.ts";
import { layerNormReference } from "../../ops/layer_norm_reference.ts";

/** Options of {@linkcode languageForwardReference}. */
export interface LanguageForwardOptions {
  /**
   * Receives `transformer.h.i.attn` (the attention module's output, before
   * γ1) and `transformer.h.i` (the block's output), named as the fixtures,
   * and for causal ToST the head memberships `transformer.h.i.attn.pi` `[B, T, NH]`.
   */
  capture?: Capture;
}

/** A causal attention module of one sequence: the model, the length and where its weights are. */
export interface CausalAttentionLayer {
  cfg: LanguageConfig;
  /** Sequence length (T ≤ block_size). */
  tokens: number;
  weights: Weights;
  /** The module's `state_dict` prefix, e.g. `transformer.h.0.attn`. */
  prefix: string;
}

/** A module's `state_dict` projections as host arrays (`c_attn` → `inFeatures`). */
function projections(layer: CausalAttentionLayer, inFeatures: number) {
  const { cfg, weights: w, prefix } = layer;
  const C = cfg.n_embd;
  const bias = (name: string, n: number) =>
    cfg.bias ? param(w, `${prefix}.${name}.bias`, [n]).data : null;
  return {
    inWeight: param(w, `${prefix}.c_attn.weight`, [inFeatures, C]).data,
    inBias: bias("c_attn", inFeatures),
    outWeight: param(w, `${prefix}.c_proj.weight`, [C, C]).data,
    outBias: bias("c_proj", C),
  };
}

function dims(layer: CausalAttentionLayer) {
  const { cfg, tokens: T } = layer;
  return { batches: 1, tokens: T, heads: cfg.n_head, headDim: cfg.n_embd / cfg.n_head };
}

/**
 * Causal Token Statistics Self-Attention (`CausalSelfAttention_TSSA`) of one
 * sequence `T × C` (already normalised), returning `T × C` after `c_proj`:
 * the module's reference (`nn/causal_tssa_attention_reference.ts`) on the
 * weights of `prefix`; `onPi` receives the head memberships Π `T × NH`.
 *
 *     w = c_attn(x) split into heads;  S[t,k] = Σ_{s≤t} w[s,k]²  (clamped ≥ 1e-12)
 *     Pi[t,h]   = softmax over h of temp[h]·Σ_k (w[t,k]²/S[t,k] + denom_bias[h,t])
 *     dots[t,k] = Σ_{s≤t} w[s,k]²·Pi[s,h] / (Σ_{s≤t} Pi[s,h] + 1e-8)
 *     y[t,k]    = −w[t,k]·Pi[t,h] / (1 + dots[t,k])
 *
 * @example
 * ```ts ignore
 * const y = causalSelfAttentionTssa(ln1x, { cfg, tokens: T, weights, prefix: "transformer.h.0.attn" });
 * ```
 */
export function causalSelfAttentionTssa(
  x: Float64Array,
  layer: CausalAttentionLayer,
  onPi?: (pi: Float64Array) => void,
): Float64Array {
  const { cfg, weights: w, prefix } = layer;
  const NH = cfg.n_head;
  const params = {
    ...projections(layer, cfg.n_embd),
    temp: param(w, `${prefix}.temp`, [NH, 1]).data,
    denomBias: param(w, `${prefix}.denom_bias`, [NH, cfg.block_size, 1]).data,
  };
  const r = causalTssaAttentionReference(x, params, dims(layer));
  onPi?.(r.saves.op.pi); // [T, NH]
  return r.out;
}

/**
 * Causal multi-head softmax attention (nanoGPT's `CausalSelfAttention`) of
 * one sequence `T × C`: `c_attn [3C, C]` gives q, k, v (in that order, heads
 * side by side), scale `HS^-½`, each position attends to itself and the past
 * — the module's reference (`nn/softmax_self_attention_reference.ts`).
 *
 * @example
 * ```ts ignore
 * const y = causalSelfAttention(ln1x, { cfg, tokens: T, weights, prefix: "transformer.h.0.attn" });
 * ```
 */
export function causalSelfAttention(x: Float64Array, layer: CausalAttentionLayer): Float64Array {
  const params = projections(layer, 3 * layer.cfg.n_embd);
  return softmaxSelfAttentionReference(x, params, dims(layer), { causal: true }).out;
}

function norm(cfg: LanguageConfig, w: Weights, p: string, x: Float64Array, rows: number) {
  const C = cfg.n_embd;
  return layerNormReference(
    x,
    param(w, `${p}.weight`, [C]).data,
    cfg.bias ? param(w, `${p}.bias`, [C]).data : null,
    rows,
    C,
    cfg.norm_eps,
  );
}

function mlp(cfg: LanguageConfig, w: Weights, p: string, x: Float64Array, rows: number) {
  const C = cfg.n_embd;
  const bias = (name: string, n: number) =>
    cfg.bias ? param(w, `${p}.${name}.bias`, [n]).data : undefined;
  const h = linear(
    x,
    rows,
    param(w, `${p}.c_fc.weight`, [4 * C, C]).data,
    C,
    4 * C,
    bias("c_fc", 4 * C),
  );
  return linear(
    geluReference(h),
    rows,
    param(w, `${p}.c_proj.weight`, [C, 4 * C]).data,
    4 * C,
    C,
    bias("c_proj", C),
  );
}

/**
 * Forward of a language model on `B` sequences of `T` token ids (row-major
 * `B × T`), returning the logits of every position, `B × T × V`.
 *
 * @throws {RangeError} when `T` exceeds `block_size`, an id is outside the
 *   vocabulary, or a weight is missing; {@linkcode TypeError} for misshapen weights or inputs
 * @example
 * ```ts ignore
 * const logits = languageForwardReference(cfg, weights, [0, 1, 2], 1, 3);
 * const loss = crossEntropyReference(logits, [1, 2, 3], 3, cfg.vocab_size); // cross_entropy_reference.ts
 * ```
 */
export function languageForwardReference(
  cfg: LanguageConfig,
  w: Weights,
  idx: ArrayLike<number | bigint>,
  B: number,
  T: number,
  opts: LanguageForwardOptions = {},
): Float64Array {
  const C = cfg.n_embd;
  const V = cfg.vocab_size;
  if (!Number.isInteger(C) || C <= 0 || C % cfg.n_head !== 0) {
    throw new RangeError(`n_embd ${C} must be a positive multiple of n_head ${cfg.n_head}`);
  }
  if (T > cfg.block_size) {
    throw new RangeError(`Cannot run ${T} tokens: block_size is ${cfg.block_size}`);
  }
  if (idx.length !== B * T) throw new TypeError(`Got ${idx.length} token ids, expected ${B}×${T}`);
  const wte = param(w, "transformer.wte.weight", [V, C]).data;
  const wpe = param(w, "transformer.wpe.weight", [cfg.block_size, C]).data;
  const x = new Float64Array(B * T * C);
  for (let r = 0; r < B * T; r++) {
    const id = Number(idx[r]);
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new RangeError(`Token id ${idx[r]} at ${r} is outside the vocabulary [0, ${V})`);
    }
    const t = r % T;
    for (let c = 0; c < C; c++) x[r * C + c] = wte[id * C + c] + wpe[t * C + c];
  }

  const NH = cfg.n_head;
  for (let i = 0; i < cfg.n_layer; i++) {
    const p = `transformer.h.${i}`;
    const gamma1 = param(w, `${p}.gamma1`, [C]).data;
    const attnOut = new Float64Array(B * T * C);
    const pi = opts.capture && cfg.attention === "tssa" ? new Float64Array(B * T * NH) : null;
    for (let b = 0; b < B; b++) {
      const xb = x.subarray(b * T * C, (b + 1) * T * C);
      const h = norm(cfg, w, `${p}.ln_1`, xb, T);
      const layer = { cfg, tokens: T, weights: w, prefix: `${p}.attn` };
      const a = cfg.attention === "tssa"
        ? causalSelfAttentionTssa(h, layer, pi ? (v) => pi.set(v, b * T * NH) : undefined)
        : causalSelfAttention(h, layer);
      attnOut.set(a, b * T * C);
    }
    opts.capture?.(`${p}.attn`, [B, T, C], attnOut.slice());
    if (pi) opts.capture?.(`${p}.attn.pi`, [B, T, NH], pi);
    addScaledInPlace(x, attnOut, gamma1);
    const m = mlp(cfg, w, `${p}.mlp`, norm(cfg, w, `${p}.ln_2`, x, B * T), B * T);
    addScaledInPlace(x, m, param(w, `${p}.gamma2`, [C]).data);
    opts.capture?.(p, [B, T, C], x.slice());
  }

  const head = param(w, "lm_head.weight", [V, C]).data;
  return linear(norm(cfg, w, "transformer.ln_f", x, B * T), B * T, head, C, V);
}
