/**
 * Decoders: turn token ids into next-token logits, keeping whatever state
 * they need between calls. One interface ({@linkcode Decoder}), two ways:
 *
 * - {@linkcode IncrementalDecoder} feeds only the new tokens through the
 *   model (the same forward as everything else, `model.ts`, with one
 *   attention state per layer). Causal ToST carries the running statistics
 *   of causal TSSA (`Σ w²`, `Σ Pi·w²`, `Σ Pi`: O(C) numbers per sequence,
 *   see `ops/causal_tssa_step.ts`), so a new token costs the same whatever
 *   the context length; GPT carries a key/value cache
 *   (`ops/kv_cache_attention.ts`), so a new token costs one pass over the
 *   cache. Both stop at `block_size` tokens: the learned positions (`wpe`,
 *   and ToST's `denom_bias`) end there.
 * - {@linkcode RecomputeDecoder} runs the whole forward on the last
 *   `block_size` tokens for every new token, as nanoGPT's `generate` does
 *   (its `idx[:, -block_size:]` crop): the reference, and the only faithful
 *   way past `block_size` — sliding the window changes every position, and
 *   ToST's statistics cannot drop their oldest token, so the window must be
 *   recomputed.
 *
 * Every `feed` records the whole step in one submission, on the decoder's
 * arena (the same buffers every step), and reads back only the logits of
 * the last token of each sequence.
 *
 * Shapes: B sequences, T new tokens, C = n_embd, V = vocab_size.
 *
 * @module
 */

import type { Gpu } from "../../gpu/runtime.ts";
import { Arena } from "../../gpu/arena.ts";
import { copyRows } from "../../ops/copy_rows.ts";
import {
  createAttentionState,
  destroyAttentionState,
  resetAttentionState,
} from "../../nn/attention.ts";
import type { AttentionState } from "../../nn/attention.ts";
import type { ParamStore } from "../params.ts";
import { languageParams } from "./params.ts";
import type { LanguageParams } from "./params.ts";
import { encodeLanguage, languageHead, languageTrunk, uploadTokenIds } from "./model.ts";

/** Options of {@linkcode Decoder.feed}. */
export interface FeedOptions {
  /** Return the logits of every fed token, `[B, T, V]`, not only the last `[B, V]`. */
  all?: boolean;
}

/** Turns token ids into next-token logits, keeping whatever state it needs between calls. */
export interface Decoder {
  /** Sequences B. */
  readonly batches: number;
  /** Tokens consumed so far per sequence (the context length). */
  readonly position: number;
  /** Largest context the decoder can take another token at (Infinity: it slides). */
  readonly capacity: number;
  /**
   * Consume `ids` (`[B, T]`, T ≥ 1 new tokens per sequence) and return the
   * logits after the last one, `[B, V]` (or after each, with `all`).
   */
  feed(ids: ArrayLike<number>, options?: FeedOptions): Promise<Float32Array>;
  /** Forget every token. */
  reset(): void;
  /** Free the decoder's GPU state (not the model). */
  destroy(): void;
}

function tokensPerSequence(ids: ArrayLike<number>, B: number): number {
  const T = ids.length / B;
  if (!Number.isInteger(T) || T < 1) {
    throw new TypeError(
      `Got ${ids.length} token ids for ${B} sequence(s): need T ≥ 1 per sequence`,
    );
  }
  return T;
}

/**
 * Decoding that feeds only the new tokens: O(1) work per token and layer for
 * causal ToST (running statistics), one pass over a KV cache for GPT.
 * Stops at `block_size` (a RangeError past it).
 *
 * @example
 * ```ts ignore
 * const dec = new IncrementalDecoder(gpu, store);
 * let logits = await dec.feed(promptIds); // [V]
 * logits = await dec.feed([nextId]);       // one new token: O(1) for ToST
 * dec.destroy();
 * ```
 */
export class IncrementalDecoder implements Decoder {
  readonly #gpu: Gpu;
  readonly #params: LanguageParams;
  readonly #states: AttentionState[] = [];
  readonly #arena: Arena;
  #position = 0;
  readonly batches: number;

  constructor(gpu: Gpu, store: ParamStore, batches = 1) {
    if (!Number.isInteger(batches) || batches < 1) {
      throw new RangeError(
        `IncrementalDecoder: batches must be a positive integer, got ${batches}`,
      );
    }
    this.#gpu = gpu;
    this.#params = languageParams(store);
    this.batches = batches;
    this.#arena = new Arena(gpu, "decode");
    const cfg = this.#params.config;
    const sizes = {
      batches,
      heads: cfg.n_head,
      headDim: cfg.n_embd / cfg.n_head,
      capacity: cfg.block_size,
    };
    try {
      for (const b of this.#params.blocks) {
        this.#states.push(createAttentionState(gpu, b.attn.kind, sizes));
      }
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  get position(): number {
    return this.#position;
  }

  get capacity(): number {
    return this.#params.config.block_size;
  }

  async feed(ids: ArrayLike<number>, options: FeedOptions = {}): Promise<Float32Array> {
    const gpu = this.#gpu;
    const p = this.#params;
    const cfg = p.config;
    const B = this.batches;
    const T = tokensPerSequence(ids, B);
    if (this.#position + T > cfg.block_size) {
      throw new RangeError(
        `Cannot feed ${T} more token(s) after ${this.#position}: the model's block_size is ` +
          `${cfg.block_size} (its learned positions end there)`,
      );
    }
    this.#arena.reset();
    try {
      return await this.#arena.use(async () => {
        const idx = uploadTokenIds(gpu, cfg, ids, B, T);
        const { x } = await languageTrunk(gpu, p, idx, {
          states: this.#states,
          pos0: this.#position,
        }); // [B, T, C]
        let last = x;
        if (T > 1 && !options.all) {
          last = gpu.empty([B, 1, cfg.n_embd], "f32", "decode.last"); // [B, 1, C]
          await copyRows(gpu, x, last, {
            batches: B,
            rows: 1,
            cols: cfg.n_embd,
            srcBatchRows: T,
            srcRow0: T - 1,
            dstBatchRows: 1,
          });
        }
        const { logits } = await languageHead(gpu, p, last); // [B, 1 or T, V]
        this.#position += T;
        return (await gpu.read(logits)) as Float32Array;
      });
    } catch (err) {
      // The layers' states may have taken part of the tokens: start over.
      this.reset();
      throw err;
    }
  }

  reset(): void {
    for (const s of this.#states) resetAttentionState(this.#gpu, s);
    this.#position = 0;
  }

  destroy(): void {
    for (const s of this.#states) destroyAttentionState(s);
    this.#states.length = 0;
    this.#arena.destroy();
  }
}

/**
 * Decoding by recomputation: keeps the token ids on the host and runs the
 * whole forward on the last `block_size` of them for every call (nanoGPT's
 * crop), reading back only the logits of the last position. Never full: past
 * `block_size` the window slides.
 *
 * @example
 * ```ts ignore
 * const dec = new RecomputeDecoder(gpu, store);
 * const logits = await dec.feed(promptIds);
 * ```
 */
export class RecomputeDecoder implements Decoder {
  readonly #gpu: Gpu;
  readonly #store: ParamStore;
  readonly #arena: Arena;
  #history: number[][];
  readonly batches: number;
  readonly capacity = Infinity;

  /** `history`: tokens already in the context, one array per sequence. */
  constructor(gpu: Gpu, store: ParamStore, batches = 1, history?: readonly number[][]) {
    if (!Number.isInteger(batches) || batches < 1) {
      throw new RangeError(`RecomputeDecoder: batches must be a positive integer, got ${batches}`);
    }
    if (
      history && (history.length !== batches || history.some((h) => h.length !== history[0].length))
    ) {
      throw new TypeError(`RecomputeDecoder: history must hold ${batches} sequences of one length`);
    }
    this.#gpu = gpu;
    this.#store = store;
    this.#arena = new Arena(gpu, "recompute");
    this.batches = batches;
    this.#history = history
      ? history.map((h) => [...h])
      : Array.from({ length: batches }, () => []);
  }

  get position(): number {
    return this.#history[0].length;
  }

  async feed(ids: ArrayLike<number>, options: FeedOptions = {}): Promise<Float32Array> {
    const gpu = this.#gpu;
    const cfg = languageParams(this.#store).config;
    const B = this.batches;
    const T = tokensPerSequence(ids, B);
    const added = this.#history.map((
      h,
      b,
    ) => [...h, ...Array.from({ length: T }, (_, t) => ids[b * T + t])]);
    const L = added[0].length;
    const W = Math.min(L, cfg.block_size); // the window
    if (options.all && T > W) {
      throw new RangeError(
        `RecomputeDecoder: all logits of ${T} tokens need T ≤ block_size ${cfg.block_size}`,
      );
    }
    const windowIds = added.flatMap((h) => h.slice(L - W));
    this.#arena.reset();
    const result = await this.#arena.use(async () => {
      const idx = uploadTokenIds(gpu, cfg, windowIds, B, W);
      const logits = await encodeLanguage(gpu, this.#store, idx); // [B, W, V]
      const R = options.all ? T : 1;
      const V = cfg.vocab_size;
      const out = gpu.empty([B, R, V], "f32", "decode.logits");
      await copyRows(gpu, logits, out, {
        batches: B,
        rows: R,
        cols: V,
        srcBatchRows: W,
        srcRow0: W - R,
        dstBatchRows: R,
      });
      return (await gpu.read(out)) as Float32Array;
    });
    this.#history = added;
    return result;
  }

  /** The context so far, one array of ids per sequence. */
  get history(): readonly (readonly number[])[] {
    return this.#history;
  }

  reset(): void {
    this.#history = this.#history.map(() => []);
  }

  destroy(): void {
    this.#arena.destroy();
  }
}
