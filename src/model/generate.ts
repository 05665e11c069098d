/**
 * Text generation with the language models: the generation loop over a
 * decoder (`language/decode.ts`), drawing every token on the GPU
 * (`ops/sample_token.ts`: temperature, top-k, seeded) into the context the
 * next step reads, so tokens are recorded one after another without a host
 * wait. The new tokens are read back every `readEvery` tokens (and the
 * first one at once); each read is issued after its last token is recorded
 * and awaited after the next one is, so the GPU keeps working through it.
 *
 * Draws: token `i` uses `randomAt(seed, i)`, the `i`-th number of the
 * seeded SplitMix32 sequence kept to 24 bits, computed on the GPU; the host
 * sampler `sampleToken` is the float64 reference of the GPU draw.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { checkTokenIds } from "../ops/embedding.ts";
import type { ParamStore } from "./params.ts";
import { IncrementalDecoder, RecomputeDecoder } from "./language/decode.ts";
import type { Decoder } from "./language/decode.ts";
import { recordSampleToken, samplingError } from "../ops/sample_token.ts";
import { checkSampling } from "../ops/sample_token_reference.ts";
import type { SamplingOptions } from "../ops/sample_token_reference.ts";

export {
  checkSampling,
  randomAt,
  sampleToken,
  seededRandom,
} from "../ops/sample_token_reference.ts";
export type { Random, SamplingOptions } from "../ops/sample_token_reference.ts";

/** What happens when the context reaches `block_size`. */
export type AtBlockSize = "stop" | "slide";

/** Options of {@linkcode generate}. */
export interface GenerateOptions extends SamplingOptions {
  /** New tokens to generate, at most. */
  tokens: number;
  /** Seed of the sampling generator (default 1337). */
  seed?: number;
  /** "incremental" (default): statistics / KV cache; "recompute": the whole window every token. */
  mode?: "incremental" | "recompute";
  /**
   * At `block_size` tokens of context: "stop" (default) ends generation;
   * "slide" continues on the last `block_size` tokens, recomputing that
   * window for every further token (as nanoGPT does).
   */
  atBlockSize?: AtBlockSize;
  /**
   * Sample only ids below this (a vocabulary shorter than `vocab_size`, as
   * when nanoGPT pads it): the logits of the other ids are ignored.
   */
  vocabLimit?: number;
  /**
   * Called with every new token as soon as it is read back (for streaming):
   * the first at once, then `readEvery` at a time.
   */
  onToken?: (id: number, index: number) => void | Promise<void>;
  /** Tokens per read back after the first (default 32: one host wait per 32 tokens). */
  readEvery?: number;
}

/** Default of {@linkcode GenerateOptions.readEvery}. */
export const READ_EVERY = 32;

/** What {@linkcode generate} produced. */
export interface GenerateResult {
  /** The new tokens. */
  ids: number[];
  /** Why it ended: the token budget, or the context reached `block_size` (stop mode). */
  stopped: "tokens" | "block_size";
  /** Prompt tokens actually used (the last block_size of them when sliding). */
  promptTokens: number;
  /** New tokens sampled with the incremental decoder (the rest recomputed the window). */
  incrementalTokens: number;
  /** Seconds until the first new token was on the host (the prompt and one draw). */
  promptSeconds: number;
  /** Seconds after that, for the remaining tokens. */
  decodeSeconds: number;
  /** Reads of new tokens (each one blocking host wait). */
  reads: number;
}

/**
 * Generate up to `options.tokens` new tokens after `prompt` (one sequence).
 * Deterministic for a seed. With `atBlockSize: "stop"` at most
 * `block_size + 1 − prompt length` tokens come out (the last one is
 * predicted at position `block_size − 1`); a longer prompt is a RangeError.
 * With "slide", a prompt longer than `block_size` is cropped to its end.
 *
 * @example
 * ```ts ignore
 * const { ids } = await generate(gpu, store, encodeChars("ROMEO:", vocab), {
 *   tokens: 100, temperature: 0.8, topK: 200, seed: 1337,
 * });
 * ```
 */
export async function generate(
  gpu: Gpu,
  store: ParamStore,
  prompt: ArrayLike<number>,
  options: GenerateOptions,
): Promise<GenerateResult> {
  checkSampling(options);
  const N = options.tokens;
  if (!Number.isInteger(N) || N < 0) {
    throw new RangeError(`The number of tokens must be an integer ≥ 0, got ${N}`);
  }
  const cfg = store.config;
  if (cfg.family !== "language") throw new TypeError("generate: not a language model");
  const bs = cfg.block_size;
  const V = cfg.vocab_size;
  const limit = options.vocabLimit ?? V;
  if (!Number.isInteger(limit) || limit < 1 || limit > V) {
    throw new RangeError(`vocabLimit must be an integer in [1, ${V}], got ${limit}`);
  }
  const slide = (options.atBlockSize ?? "stop") === "slide";
  let context = Array.from(prompt, Number);
  if (context.length === 0) throw new RangeError("The prompt must have at least one token");
  if (context.length > bs) {
    if (!slide) {
      throw new RangeError(
        `The prompt has ${context.length} tokens, more than the model's block_size ${bs} ` +
          `(slide the window to use its last ${bs})`,
      );
    }
    context = context.slice(context.length - bs);
  }
  const readEvery = options.readEvery ?? READ_EVERY;
  if (!Number.isInteger(readEvery) || readEvery < 1) {
    throw new RangeError(`readEvery must be a positive integer, got ${readEvery}`);
  }
  const result: GenerateResult = {
    ids: [],
    stopped: "tokens",
    promptTokens: context.length,
    incrementalTokens: 0,
    promptSeconds: 0,
    decodeSeconds: 0,
    reads: 0,
  };
  if (N === 0) return result;
  const seed = options.seed ?? 1337;
  const P = context.length;
  const ids = checkTokenIds(context, V);
  // The whole context on the GPU: the prompt, then every token as it is drawn.
  const [tokens, status] = gpu.outsideArena(() => [
    gpu.empty([P + N], "u32", "generate.tokens"),
    gpu.empty([4], "u32", "generate.status"),
  ]);
  let decoder: Decoder = options.mode === "recompute"
    ? new RecomputeDecoder(gpu, store)
    : new IncrementalDecoder(gpu, store);
  /** Tokens drawn on the GPU so far; the first `read` of them are on the host. */
  let drawn = 0;
  let read = 0;
  let inFlight: Promise<void> | null = null;
  const t0 = performance.now();
  let t1 = t0;
  const issueRead = () => {
    const from = read;
    const count = drawn - from;
    read = drawn;
    result.reads++;
    // The wait starts here; the tokens and the status come back together.
    const pending = gpu.readMany([
      { tensor: tokens, offset: (P + from) * 4, size: count * 4 },
      status,
    ]);
    return (async () => {
      const [got, st] = await pending;
      const failure = samplingError(st);
      const good = failure ? Math.max(0, Math.min(count, failure.draw - from)) : count;
      if (from === 0) {
        t1 = performance.now();
        result.promptSeconds = (t1 - t0) / 1000;
      }
      for (let i = 0; i < good; i++) {
        result.ids.push(got[i]);
        await options.onToken?.(got[i], from + i);
      }
      if (failure) throw failure.error;
    })();
  };
  try {
    gpu.write(tokens, ids);
    let length = P; // the context on the GPU: tokens[0, length)
    for (let i = 0; i < N; i++) {
      const logits = await decoder.encodeContext(tokens, length); // [1, V]
      await recordSampleToken(gpu, logits, {
        temperature: options.temperature,
        topK: options.topK,
        limit,
        seed,
        draw: i,
        tokens,
        at: length,
        status,
      });
      if (decoder instanceof IncrementalDecoder) result.incrementalTokens++;
      length++;
      drawn++;
      gpu.flush();
      // The read issued after the token before: awaited while this one runs.
      if (inFlight) {
        const p = inFlight;
        inFlight = null;
        await p;
      }
      if (i === N - 1) break;
      if (length > bs) {
        if (!slide) {
          result.stopped = "block_size";
          break;
        }
        if (decoder instanceof IncrementalDecoder) {
          // A faithful slide recomputes the window: statistics cannot forget a token.
          decoder.destroy();
          decoder = new RecomputeDecoder(gpu, store);
        }
      }
      if (i === 0 || (i % readEvery === 0)) inFlight = issueRead();
    }
    if (inFlight) await inFlight;
    inFlight = null;
    if (drawn > read) await issueRead();
    result.decodeSeconds = (performance.now() - t1) / 1000;
    return result;
  } finally {
    await inFlight?.catch(() => {});
    decoder.destroy();
    status.destroy();
    tokens.destroy();
  }
}
