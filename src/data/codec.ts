/**
 * Text ↔ token ids for the language models, one interface for both
 * tokenizers: characters (a vocabulary of single characters in id order, as
 * nanoGPT's `sorted(set(text))`) and GPT-2 BPE (`js-tiktoken`'s GPT-2 ranks,
 * offline). `tost train` saves which one a model uses; `tost sample` and
 * `tost evaluate` read it back.
 *
 * @module
 */

import { encodeChars } from "./text.ts";

/** GPT-2's vocabulary size (BPE ranks plus `<|endoftext|>`). */
export const GPT2_VOCAB_SIZE = 50257;

/** A tokenizer. */
export interface TextCodec {
  kind: "char" | "gpt2";
  /** Number of distinct ids it produces (≤ the model's vocab_size). */
  size: number;
  /** Token strings by id (characters); null for BPE. */
  vocab: string[] | null;
  /** Text → ids; throws a RangeError for text it cannot encode. */
  encode(text: string): Int32Array<ArrayBuffer>;
  /** Ids → text. */
  decode(ids: ArrayLike<number>): string;
  /**
   * A streaming decoder: feed ids one at a time, get the text they add
   * (BPE tokens can split a character: its bytes wait for the next token).
   */
  streamer(): (id: number) => string;
}

/**
 * The character tokenizer of a vocabulary.
 *
 * @example
 * ```ts
 * import { charCodec } from "./codec.ts";
 * const c = charCodec(["a", "b"]);
 * if (c.decode(c.encode("abba")) !== "abba") throw new Error("round trip");
 * ```
 */
export function charCodec(vocab: readonly string[]): TextCodec {
  const tokens = [...vocab];
  return {
    kind: "char",
    size: tokens.length,
    vocab: tokens,
    encode: (text) => encodeChars(text, tokens),
    decode: (ids) => Array.from(ids, (id) => tokens[id] ?? "\uFFFD").join(""),
    streamer: () => (id) => tokens[id] ?? "\uFFFD",
  };
}

/** GPT-2 BPE (loaded on first use: the ranks are a few MB). */
export async function gpt2Codec(): Promise<TextCodec> {
  const [{ Tiktoken }, ranks] = await Promise.all([
    import("js-tiktoken/lite"),
    import("js-tiktoken/ranks/gpt2"),
  ]);
  const enc = new Tiktoken(ranks.default);
  const decode = (ids: ArrayLike<number>) => enc.decode(Array.from(ids));
  return {
    kind: "gpt2",
    size: GPT2_VOCAB_SIZE,
    vocab: null,
    encode: (text) => Int32Array.from(enc.encode(text, "all")),
    decode,
    streamer: () => {
      const pending: number[] = [];
      return (id) => {
        pending.push(id);
        const text = decode(pending);
        if (text.endsWith("\uFFFD") && pending.length < 4) return ""; // a character in pieces
        pending.length = 0;
        return text;
      };
    },
  };
}
