/**
 * Training data for the language models: a tokenised text (the bundled
 * State of the Union corpus or any text file; characters, or GPT-2 BPE
 * through `js-tiktoken`, both offline), split deterministically into
 * training and validation tokens (nanoGPT's first 90 % / last 10 %, the same
 * split `tost evaluate` measures on), and a seeded batch sampler whose whole
 * state is two integers, saved in checkpoints so a resumed run draws exactly
 * the batches an uninterrupted one would.
 *
 * @module
 */

import { charVocab, loadSotu, readTextData, splitTrainVal } from "../data/text.ts";
import type { TokenBatch } from "../data/text.ts";
import { charCodec, GPT2_VOCAB_SIZE, gpt2Codec } from "../data/codec.ts";

export { GPT2_VOCAB_SIZE };

/** How text becomes token ids. */
export type Tokenizer = "char" | "gpt2";

/** A tokenised, split text. */
export interface TextDataset {
  /** `"sotu"` or the text file's path. */
  source: string;
  tokenizer: Tokenizer;
  /** Token strings by id for character-level data; null for BPE. */
  vocab: string[] | null;
  vocabSize: number;
  train: Int32Array;
  val: Int32Array;
  /** Token ids → text. */
  decode(ids: ArrayLike<number>): string;
  /** Text → token ids (throws for characters outside a character vocabulary). */
  encode(text: string): Int32Array;
}

/**
 * Load and tokenise a text: `"sotu"` for the bundled corpus, else a UTF-8
 * file. Character-level data gets the vocabulary `sorted(set(text))`.
 *
 * @throws {RangeError} when the text is too short to hold a validation split
 * @example
 * ```ts ignore
 * const data = await loadTextDataset("sotu", "char");
 * console.log(data.vocabSize, data.train.length, data.val.length); // 97 …
 * ```
 */
export async function loadTextDataset(
  source: string,
  tokenizer: Tokenizer = "char",
): Promise<TextDataset> {
  const text = source === "sotu" ? await loadSotu() : await readTextData(source);
  return tokenizeText(text, source, tokenizer);
}

/** Tokenise and split text already in memory (see {@linkcode loadTextDataset}). */
export async function tokenizeText(
  text: string,
  source: string,
  tokenizer: Tokenizer = "char",
): Promise<TextDataset> {
  if (tokenizer !== "char" && tokenizer !== "gpt2") {
    throw new RangeError(`Unknown tokenizer "${tokenizer}" (char or gpt2)`);
  }
  const codec = tokenizer === "char" ? charCodec(charVocab(text)) : await gpt2Codec();
  const { train, val } = splitTrainVal(codec.encode(text));
  return {
    source,
    tokenizer,
    vocab: codec.vocab,
    vocabSize: codec.size,
    decode: codec.decode,
    encode: codec.encode,
    train,
    val,
  };
}

/** The position of a {@linkcode BatchSampler}: everything needed to continue it. */
export interface SamplerState {
  seed: number;
  /** Batches drawn so far. */
  position: number;
}

/** A 32-bit integer hash (the finaliser of MurmurHash3). */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * Draw `b` of batch `k` for a seed: an integer uniform in `[0, n)`, a pure
 * function of its arguments (a counter-based generator, so a sampler's state
 * is just its seed and batch count).
 *
 * @example
 * ```ts
 * import { sampleIndex } from "./data.ts";
 * const i = sampleIndex(7, 3, 1, 1000);
 * if (i !== sampleIndex(7, 3, 1, 1000) || i < 0 || i >= 1000) throw new Error("index");
 * ```
 */
export function sampleIndex(seed: number, k: number, b: number, n: number): number {
  const hi = mix32(seed ^ mix32(k + 0x9e3779b9));
  const u = mix32(hi ^ mix32(b * 0x7feb352d + 0x165667b1));
  const u2 = mix32(u + 0x27d4eb2f);
  // 53 random bits, so every index is (nearly) equally likely for any n.
  const r = (u * 2 ** 21 + (u2 >>> 11)) / 2 ** 53;
  return Math.floor(r * n);
}

/**
 * Random windows of `T + 1` tokens (inputs and next-token targets), as
 * nanoGPT's `get_batch` draws them, from a counter-based generator: the
 * `b`-th start of batch `k` depends only on `(seed, k, b)`, so the sampler's
 * state is its seed and how many batches it has drawn.
 *
 * @example
 * ```ts
 * import { BatchSampler } from "./data.ts";
 * const tokens = Int32Array.from({ length: 100 }, (_, i) => i);
 * const a = new BatchSampler(tokens, 2, 8, { seed: 1, position: 0 });
 * a.next();
 * const b = new BatchSampler(tokens, 2, 8, a.state);
 * if (a.next().x.join() !== b.next().x.join()) throw new Error("resumable");
 * ```
 */
export class BatchSampler {
  #seed: number;
  #position: number;

  constructor(
    readonly tokens: Int32Array,
    readonly batchSize: number,
    readonly blockSize: number,
    state: SamplerState,
  ) {
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new RangeError(`batch size must be a positive integer, got ${batchSize}`);
    }
    if (tokens.length < blockSize + 1) {
      throw new RangeError(
        `the training split has ${tokens.length} tokens, fewer than one window of ` +
          `${blockSize + 1} (block_size + 1)`,
      );
    }
    if (!Number.isInteger(state.seed) || state.seed < 0 || state.seed > 0xffffffff) {
      throw new RangeError(`sampler seed must be an integer in [0, 2^32), got ${state.seed}`);
    }
    if (!Number.isInteger(state.position) || state.position < 0) {
      throw new RangeError(`sampler position must be an integer ≥ 0, got ${state.position}`);
    }
    this.#seed = state.seed;
    this.#position = state.position;
  }

  /** The state to save (and to construct an identical sampler from). */
  get state(): SamplerState {
    return { seed: this.#seed, position: this.#position };
  }

  /** Start of window `b` of batch `k`, uniform in `[0, tokens − T − 1]`. */
  start(k: number, b: number): number {
    return sampleIndex(this.#seed, k, b, this.tokens.length - this.blockSize);
  }

  /** Draw the next batch `[B, T]` of inputs and targets. */
  next(): TokenBatch {
    const B = this.batchSize;
    const T = this.blockSize;
    const x = new Int32Array(B * T);
    const y = new Int32Array(B * T);
    const k = this.#position++;
    for (let b = 0; b < B; b++) {
      const at = this.start(k, b);
      x.set(this.tokens.subarray(at, at + T), b * T);
      y.set(this.tokens.subarray(at + 1, at + T + 1), b * T);
    }
    return { B, T, x, y };
  }
}
