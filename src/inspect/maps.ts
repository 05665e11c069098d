/**
 * What `tost inspect` and the `tost serve` page draw, read from the model's
 * one forward (`model/vision/model.ts`, `model/language/model.ts`) through
 * its activation hook: TSSA's head memberships Π of every block (the
 * operator's own saves, reported while they are valid and copied), the
 * class token's attention weights of the class-attention blocks, and the
 * logits. Nothing here runs a second forward.
 *
 * Π is `softmax over heads` per token: `Π[n, h]` is how much token `n`
 * belongs to head `h` (each token's Π sums to 1 over the heads). The class
 * attention weights are `softmax_j(q_0 · k_j / √d)` per head over the class
 * token and every patch token; the GPU kernel merges partial softmaxes and
 * never stores them, so they are computed here in float64 from the block's
 * `qkv` projection (`classAttentionWeightsReference`), which the forward
 * reports.
 *
 * Browser-safe: no Deno API (the `tost serve` page imports it).
 *
 * Shapes: one image (B = 1) of `C × H × W`, `Hp × Wp = N` tokens, `NH`
 * heads, `M = N + 1`; or one sequence of `T` tokens.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import type { ParamStore } from "../model/params.ts";
import { visionForward, visionGrid } from "../model/vision/model.ts";
import { languageForward } from "../model/language/model.ts";
import { classAttentionWeightsReference } from "../ops/attention_reference.ts";
import { softmaxRowsInPlace } from "../ops/softmax_reference.ts";
import { stemWidths } from "../model/names.ts";
import type { VisionConfig } from "../model/config.ts";

/** What a vision model's forward shows of one image. */
export interface VisionMaps {
  /** Input height and width in pixels. */
  height: number;
  width: number;
  /** The token grid `[Hp, Wp]`. */
  grid: [number, number];
  /** Pixels between neighbouring tokens' receptive-field centres (`2^stages` of the stem). */
  stride: number;
  /** Heads per block (NH). */
  heads: number;
  /** `[K]` */
  logits: Float32Array;
  /** `[K]`, softmax of the logits. */
  probabilities: Float64Array;
  /** The most likely class. */
  predicted: number;
  /** Π of each block, `[N, NH]` (token `n = i·Wp + j`). */
  pi: Float32Array[];
  /** Class-attention weights of each class-attention block, `[NH, M]`: the class token first. */
  classAttention: Float64Array[];
}

/** What a language model's forward shows of one sequence. */
export interface LanguageMaps {
  /** Tokens T. */
  tokens: number;
  heads: number;
  /** `[V]`, the logits after the last token. */
  logits: Float32Array;
  /** `[V]`, their softmax: the next-token distribution. */
  probabilities: Float64Array;
  /** Π of each block, `[T, NH]`. */
  pi: Float32Array[];
}

const WANTED = /\.attn\.(pi|qkv)$/;

function softmax(logits: ArrayLike<number>): Float64Array {
  const p = Float64Array.from(logits);
  softmaxRowsInPlace(p, 1, p.length);
  return p;
}

function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Pixels between neighbouring tokens: each stem stage is a stride-2 convolution. */
export function stemStride(cfg: VisionConfig): number {
  return 2 ** stemWidths(cfg.patch_size, cfg.embed_dim).length;
}

/**
 * Run a ToST vision model on one image `[C, H, W]` (normalised as the model
 * expects) and return its class probabilities, Π of every block and the
 * class-attention weights, all from one forward.
 *
 * @throws {TypeError} for a model without TSSA (a ViT has no Π) or a misshapen image
 * @example
 * ```ts ignore
 * const maps = await visionMaps(gpu, model.params, image, [3, 28, 28]);
 * console.log(maps.predicted, maps.pi[0].length); // class, N·NH
 * ```
 */
export async function visionMaps(
  gpu: Gpu,
  store: ParamStore,
  image: Float32Array<ArrayBuffer>,
  shape: readonly [number, number, number],
): Promise<VisionMaps> {
  const cfg = store.config;
  if (cfg.family !== "vision") throw new TypeError("visionMaps needs a vision model");
  if (cfg.attention !== "tssa") {
    throw new TypeError("the model is a ViT (softmax attention): it has no TSSA Π to show");
  }
  const [C, H, W] = shape;
  const out = await visionForward(gpu, store, image, [1, C, H, W], {
    activations: (name) => WANTED.test(name),
  });
  const [Hp, Wp] = visionGrid(cfg, H, W);
  const M = Hp * Wp + 1;
  const NH = cfg.num_heads;
  const pi = Array.from({ length: cfg.depth }, (_, i) => {
    const a = out.activations.get(`blocks.${i}.attn.pi`);
    if (!a) throw new Error(`the forward reported no Π for block ${i}`);
    return a.data; // [1, N, NH]
  });
  const classAttention = Array.from({ length: cfg.cls_attn_layers }, (_, i) => {
    const qkv = out.activations.get(`cls_attn_blocks.${i}.attn.qkv`);
    if (!qkv) throw new Error(`the forward reported no qkv for class-attention block ${i}`);
    return classAttentionWeightsReference(qkv.data, 1, M, NH, cfg.embed_dim / NH);
  });
  const probabilities = softmax(out.logits);
  return {
    height: H,
    width: W,
    grid: [Hp, Wp],
    stride: stemStride(cfg),
    heads: NH,
    logits: out.logits,
    probabilities,
    predicted: argmax(probabilities),
    pi,
    classAttention,
  };
}

/**
 * Run a causal ToST language model on one sequence of token ids and return
 * the next-token distribution and Π of every block, from one forward.
 *
 * @throws {TypeError} for a model without TSSA (GPT) or no tokens;
 *   {RangeError} for more tokens than block_size or ids outside the vocabulary
 * @example
 * ```ts ignore
 * const maps = await languageMaps(gpu, model.params, [20, 43, 50]);
 * console.log(maps.pi[0].length); // T·NH
 * ```
 */
export async function languageMaps(
  gpu: Gpu,
  store: ParamStore,
  ids: ArrayLike<number>,
): Promise<LanguageMaps> {
  const cfg = store.config;
  if (cfg.family !== "language") throw new TypeError("languageMaps needs a language model");
  if (cfg.attention !== "tssa") {
    throw new TypeError("the model is a GPT (softmax attention): it has no TSSA Π to show");
  }
  const T = ids.length;
  if (T < 1) throw new TypeError("languageMaps needs at least one token");
  const out = await languageForward(gpu, store, ids, 1, T, {
    activations: (name) => WANTED.test(name),
  });
  const V = cfg.vocab_size;
  const logits = out.logits.slice((T - 1) * V, T * V);
  const pi = Array.from({ length: cfg.n_layer }, (_, i) => {
    const a = out.activations.get(`transformer.h.${i}.attn.pi`);
    if (!a) throw new Error(`the forward reported no Π for block ${i}`);
    return a.data; // [1, T, NH]
  });
  return {
    tokens: T,
    heads: cfg.n_head,
    logits,
    probabilities: softmax(logits),
    pi,
  };
}

/** The `k` most likely entries of a distribution, most likely first. */
export function topK(probabilities: ArrayLike<number>, k: number): { id: number; p: number }[] {
  const ids = Array.from({ length: probabilities.length }, (_, i) => i);
  ids.sort((a, b) => probabilities[b] - probabilities[a]);
  return ids.slice(0, k).map((id) => ({ id, p: probabilities[id] }));
}
