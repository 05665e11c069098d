/**
 * The tokenizer `tost sample` and `tost evaluate` use for a language model:
 * GPT-2 BPE when the model was trained with it (saved in its metadata), else
 * its character vocabulary (saved by `tost train`, attached by
 * `tost convert --vocab`, or given with `--vocab`), which must have exactly
 * `vocab_size` entries.
 *
 * @module
 */

import { charCodec, GPT2_VOCAB_SIZE, gpt2Codec } from "../data/codec.ts";
import type { TextCodec } from "../data/codec.ts";
import { readVocabFile } from "../model/load.ts";
import type { ModelFile } from "../model/load.ts";
import { UsageError } from "./_errors.ts";
import { userFile } from "./_files.ts";

/**
 * Read a `--vocab` file and check it against the model's `vocab_size`.
 *
 * @throws {UsageError} for an unreadable file or a size that does not match
 */
export async function readVocabFor(path: string, vocabSize: number): Promise<string[]> {
  const vocab = await userFile("vocabulary", path, () => readVocabFile(path));
  if (vocab.length !== vocabSize) {
    throw new UsageError(
      `--vocab "${path}" has ${vocab.length} tokens, the model's vocab_size is ${vocabSize}: ` +
        `give the model's own vocabulary (for a character model, the distinct characters of ` +
        `its training text in id order)`,
    );
  }
  return vocab;
}

/** The tokenizer of a language model file (see the module doc). */
export async function modelCodec(file: ModelFile, vocabPath?: string): Promise<TextCodec> {
  const cfg = file.config;
  if (cfg.family !== "language") throw new UsageError(`"${file.path}" is not a language model`);
  if (file.tokenizer === "gpt2") {
    if (vocabPath !== undefined) {
      throw new UsageError(
        `"${file.path}" uses GPT-2 BPE (saved with it); --vocab is for character-level models`,
      );
    }
    if (cfg.vocab_size < GPT2_VOCAB_SIZE) {
      throw new UsageError(
        `"${file.path}" says GPT-2 BPE but its vocab_size ${cfg.vocab_size} is under GPT-2's ` +
          `${GPT2_VOCAB_SIZE}`,
      );
    }
    return await gpt2Codec();
  }
  if (vocabPath !== undefined) {
    const vocab = await readVocabFor(vocabPath, cfg.vocab_size);
    if (file.vocab && file.vocab.join("\u0000") !== vocab.join("\u0000")) {
      console.error(`note: --vocab replaces the vocabulary saved in "${file.path}"`);
    }
    return charCodec(vocab);
  }
  if (!file.vocab) {
    throw new UsageError(
      `"${file.path}" carries no vocabulary: pass --vocab <file> with its characters in id ` +
        `order (nanoGPT's itos), or attach one once with tost convert --vocab`,
    );
  }
  return charCodec(file.vocab);
}
