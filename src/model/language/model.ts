/**
 * The language models on the GPU — causal ToST (nanoGPT-style `GPT` with
 * `TSSA=True`) and plain GPT (`TSSA=False`, causal softmax) — from one
 * config, with or without biases: the forward that inference, decoding,
 * evaluation and training all run, and the training pass's backward.
 *
 *     x = wte[idx] + wpe[pos]
 *     n_layer × block: x += γ1·attn(ln_1(x)); x += γ2·MLP(ln_2(x))   (`nn/block.ts`)
 *     logits = ln_f(x) · wteᵀ          (lm_head tied to wte)
 *
 * {@linkcode languageTrunk} and {@linkcode languageHead} are the forward
 * (`decode.ts` feeds them one token at a time); {@linkcode encodeLanguage}
 * records them on a batch, {@linkcode languageForward} and
 * {@linkcode languageLoss} read back only the logits or the per-token
 * losses ({@linkcode recordLanguageLosses} only records the losses, for
 * evaluations that read many batches at once), and
 * {@linkcode languageForwardBackward} is the training pass:
 * the same forward keeping its saves, the fused cross-entropy, then the
 * backward walking the layers in reverse, as llm.c does (no tape).
 *
 * Gradient convention (as everywhere in tost): parameter gradients
 * accumulate (`+=`) into the gradient store, so micro-batches add up; the
 * tied head's and the embedding's gradients both land in `wte`.
 *
 * Shapes: B sequences of T ≤ block_size tokens, C = n_embd, NH = n_head,
 * V = vocab_size.
 *
 * @module
 */

import type { Gpu, Tensor } from "../../gpu/runtime.ts";
import { withArena } from "../../gpu/arena.ts";
import type { Arena } from "../../gpu/arena.ts";
import { checkTokenIds, embedding } from "../../ops/embedding.ts";
import { embeddingBackward } from "../../ops/embedding_backward.ts";
import { layerNorm } from "../../ops/layer_norm.ts";
import { layerNormBackward } from "../../ops/layer_norm_backward.ts";
import { linear } from "../../ops/linear.ts";
import { linearBackward } from "../../ops/linear_backward.ts";
import { checkTargets, crossEntropy } from "../../ops/cross_entropy.ts";
import { crossEntropyForwardBackward } from "../../ops/cross_entropy_backward.ts";
import { block, blockBackward } from "../../nn/block.ts";
import type { BlockSaves } from "../../nn/block.ts";
import type { AttentionState } from "../../nn/attention.ts";
import type { LanguageConfig } from "../config.ts";
import type { ParamStore } from "../params.ts";
import { readForward } from "../_readback.ts";
import type { ActivationFilter, ActivationHook, ForwardOutput } from "../_readback.ts";
import { languageParams } from "./params.ts";
import type { LanguageParams } from "./params.ts";

/** How {@linkcode languageTrunk} runs. */
export interface LanguageTrunkOptions {
  /** Training: keep every block's saves. */
  saves?: boolean;
  /** Decoding: one attention state per layer; the ids are the next tokens. */
  states?: readonly AttentionState[];
  /** Position of the first id (decoding), default 0. */
  pos0?: number;
  /**
   * Receives `transformer.h.i.attn` and `transformer.h.i` (fixture names) as
   * they are recorded, and for causal ToST `transformer.h.i.attn.pi`, Π `[B, T, H]`.
   */
  onActivation?: ActivationHook;
}

/**
 * Record the embedding and every block on u32 ids `[B, T]`: returns the
 * stream `[B, T, C]` and, with `saves`, each block's saves.
 *
 * @throws {RangeError} when `pos0 + T` exceeds block_size
 */
export async function languageTrunk(
  gpu: Gpu,
  p: LanguageParams,
  idx: Tensor,
  options: LanguageTrunkOptions = {},
): Promise<{ x: Tensor; saves: BlockSaves[] }> {
  const cfg = p.config;
  const pos0 = options.pos0 ?? 0;
  const T = idx.shape[1];
  if (pos0 + T > cfg.block_size) {
    throw new RangeError(
      `Cannot run ${T} tokens at position ${pos0}: the model's block_size is ${cfg.block_size}`,
    );
  }
  if (options.states && options.states.length !== p.blocks.length) {
    throw new TypeError(`${options.states.length} decoding states for ${p.blocks.length} layers`);
  }
  const hook = options.onActivation;
  let x = await embedding(gpu, idx, p.wte, p.wpe, pos0); // [B, T, C]
  const saves: BlockSaves[] = [];
  for (let i = 0; i < p.blocks.length; i++) {
    const name = `transformer.h.${i}`;
    const r = await block(gpu, x, p.blocks[i], {
      eps: cfg.norm_eps,
      heads: cfg.n_head,
      saves: options.saves,
      state: options.states?.[i],
      onAttention: hook && ((a) => hook(`${name}.attn`, a)),
      onPi: hook && cfg.attention === "tssa" && !options.states
        ? (pi) => hook(`${name}.attn.pi`, pi.view([idx.shape[0], T, cfg.n_head]))
        : undefined,
    });
    hook?.(name, r.y);
    if (r.saves) saves.push(r.saves);
    x = r.y;
  }
  return { x, saves };
}

/**
 * Record `ln_f` and the tied head on `x` `[..., C]`: the logits `[..., V]`
 * and the normalised stream the head's backward reads.
 */
export async function languageHead(
  gpu: Gpu,
  p: LanguageParams,
  x: Tensor,
): Promise<{ hf: Tensor; logits: Tensor }> {
  const hf = await layerNorm(gpu, x, p.lnF.weight, p.lnF.bias, p.config.norm_eps);
  const logits = await linear(gpu, hf, p.wte, null);
  return { hf, logits };
}

/**
 * Record the whole forward on u32 token ids `[B, T]` and return the logits
 * `[B, T, V]`; nothing is submitted. The temporaries are freed (or handed
 * back to the active arena) as soon as they are read.
 *
 * @throws {RangeError} when T exceeds block_size
 */
export async function encodeLanguage(
  gpu: Gpu,
  store: ParamStore,
  idx: Tensor,
  options: { onActivation?: ActivationHook } = {},
): Promise<Tensor> {
  const p = languageParams(store);
  const { x } = await languageTrunk(gpu, p, idx, options);
  const { hf, logits } = await languageHead(gpu, p, x);
  x.destroy();
  hf.destroy();
  return logits;
}

/** Upload token ids `[B, T]` after checking them against the vocabulary. */
export function uploadTokenIds(
  gpu: Gpu,
  cfg: LanguageConfig,
  ids: ArrayLike<number | bigint>,
  B: number,
  T: number,
): Tensor {
  if (ids.length !== B * T) throw new TypeError(`Got ${ids.length} token ids, expected ${B}×${T}`);
  return gpu.upload(checkTokenIds(ids, cfg.vocab_size), [B, T], "language.idx");
}

function languageConfig(store: ParamStore): LanguageConfig {
  const cfg = store.config;
  if (cfg.family !== "language") throw new TypeError("Not a language model");
  return cfg;
}

/** What {@linkcode languageForward} returns. */
export type LanguageOutput = ForwardOutput; // logits `[B, T, V]`

/**
 * Run a language model on token ids `[B, T]`: upload, record the whole
 * forward, submit once and read back the logits of every position (and,
 * with `activations`, every fixture-named intermediate and causal ToST's Π
 * `transformer.h.i.attn.pi`, or those a filter accepts). Temporaries come
 * from `arena` (reset by the caller) or a fresh one.
 *
 * @example
 * ```ts ignore
 * const { logits } = await languageForward(gpu, store, [0, 1, 2], 1, 3);
 * ```
 */
export async function languageForward(
  gpu: Gpu,
  store: ParamStore,
  ids: ArrayLike<number | bigint>,
  B: number,
  T: number,
  options: { activations?: ActivationFilter; arena?: Arena } = {},
): Promise<LanguageOutput> {
  const cfg = languageConfig(store);
  return await withArena(gpu, options.arena, async () => {
    const idx = uploadTokenIds(gpu, cfg, ids, B, T);
    return await readForward(
      gpu,
      options.activations ?? false,
      (onActivation) => encodeLanguage(gpu, store, idx, { onActivation }),
    );
  });
}

/**
 * Record a forward on ids `[B, T]` and the per-token cross-entropy against
 * `targets` (−1 = ignore) inside the active arena; returns the f32 `[B·T]`
 * losses tensor (nothing read; `collectBatches` gathers many of them).
 *
 * @throws {Error} outside `Arena.use`
 */
export async function recordLanguageLosses(
  gpu: Gpu,
  store: ParamStore,
  batch: { x: ArrayLike<number | bigint>; y: ArrayLike<number | bigint>; B: number; T: number },
): Promise<Tensor> {
  if (!gpu.inArena) {
    throw new Error("recordLanguageLosses records into an arena: call it inside arena.use()");
  }
  const cfg = languageConfig(store);
  const { B, T } = batch;
  const idx = uploadTokenIds(gpu, cfg, batch.x, B, T);
  const targets = gpu.upload(checkTargets(batch.y, cfg.vocab_size), [B * T], "language.targets");
  const logits = await encodeLanguage(gpu, store, idx);
  return await crossEntropy(gpu, logits, targets);
}

/**
 * Per-token cross-entropy of a forward on ids `[B, T]` against `targets`
 * (−1 = ignore), reading back only the `B·T` losses, not the logits.
 * Temporaries come from `arena` (reset by the caller) or a fresh one.
 */
export async function languageLoss(
  gpu: Gpu,
  store: ParamStore,
  batch: { x: ArrayLike<number | bigint>; y: ArrayLike<number | bigint>; B: number; T: number },
  options: { arena?: Arena } = {},
): Promise<Float32Array> {
  return await withArena(gpu, options.arena, async () => {
    const losses = await recordLanguageLosses(gpu, store, batch);
    return (await gpu.read(losses)) as Float32Array;
  });
}

/** A batch to train on: token ids and next-token targets (−1 = ignore), `[B, T]` each. */
export interface TrainBatch {
  B: number;
  T: number;
  x: ArrayLike<number | bigint>;
  y: ArrayLike<number | bigint>;
}

/**
 * Record a whole training pass on one batch inside the active arena: the
 * forward with saves, the fused cross-entropy, the backward through every
 * layer, adding every parameter's gradient into `grads` (a store from
 * `ParamStore.zeros`). Returns the mean loss, a `[1]` tensor of the
 * arena's pass (read it before the arena is reset).
 *
 * @throws {Error} outside `Arena.use` (the saves and temporaries need an arena)
 * @throws {RangeError} for ids or targets outside the vocabulary, or T > block_size
 * @example
 * ```ts ignore
 * const grads = ParamStore.zeros(gpu, cfg);
 * const arena = new Arena(gpu);
 * await arena.use(async () => {
 *   const loss = await languageForwardBackward(gpu, store, grads, batch);
 *   console.log((await loss.read())[0]);
 * });
 * ```
 */
export async function languageForwardBackward(
  gpu: Gpu,
  store: ParamStore,
  grads: ParamStore,
  batch: TrainBatch,
  options: { lossScale?: number } = {},
): Promise<Tensor> {
  if (!gpu.inArena) {
    throw new Error("languageForwardBackward records into an arena: call it inside arena.use()");
  }
  const cfg = languageConfig(store);
  const p = languageParams(store);
  const g = languageParams(grads);
  const { B, T } = batch;
  const idx = uploadTokenIds(gpu, cfg, batch.x, B, T);
  const targets = gpu.upload(checkTargets(batch.y, cfg.vocab_size), [B * T], "train.targets");
  const { x, saves } = await languageTrunk(gpu, p, idx, { saves: true });
  const { hf, logits } = await languageHead(gpu, p, x);
  const { loss, dlogits } = await crossEntropyForwardBackward(gpu, {
    logits,
    targets,
    scale: options.lossScale ?? 1,
  });
  const dhf = await linearBackward(gpu, {
    dy: dlogits,
    x: hf,
    weight: p.wte,
    dWeight: g.wte,
    dBias: null,
  });
  const dx = await layerNormBackward(gpu, {
    dy: dhf,
    x,
    weight: p.lnF.weight,
    eps: cfg.norm_eps,
    dWeight: g.lnF.weight,
    dBias: g.lnF.bias,
  });
  for (let i = p.blocks.length - 1; i >= 0; i--) {
    await blockBackward(gpu, dx, {
      params: p.blocks[i],
      grads: g.blocks[i],
      saves: saves[i],
      eps: cfg.norm_eps,
      heads: cfg.n_head,
    });
  }
  await embeddingBackward(gpu, {
    dy: dx,
    ids: batch.x,
    vocab: cfg.vocab_size,
    dWte: g.wte,
    dWpe: g.wpe,
  });
  return loss;
}
