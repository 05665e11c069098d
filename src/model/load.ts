/**
 * Loading a model to run: a tost safetensors file (config in
 * `__metadata__.config`) or a PyTorch checkpoint (`.pt`, `.pth`, `.bin`,
 * `.ckpt`: converted on the fly, config inferred from names and shapes).
 * Either way the tensors are checked against the config's name table in both
 * directions (nothing missing, nothing unexpected, every shape right) before
 * anything is uploaded.
 *
 * Vocabulary of language models: a tost file may carry `__metadata__.vocab`
 * (a JSON array of the token strings in id order, or a JSON string whose
 * characters are the tokens); a converted checkpoint has none, so callers take
 * one from the user ({@linkcode readVocabFile}).
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { readSafetensors } from "../io/safetensors.ts";
import type { StTensor } from "../io/safetensors.ts";
import { inferConfig, loadCheckpoint } from "../checkpoint/mod.ts";
import type { LanguageConfig, ModelConfig, VisionConfig } from "./config.ts";
import { assertStateDict } from "./names.ts";
import { ParamStore } from "./params.ts";
import { checkLanguageConfig } from "./language/params.ts";
import { checkVisionConfig } from "./vision/params.ts";
import { describeKind, sniffFile } from "../io/sniff.ts";
import { checkVocab, parseModelConfig, parseVocab } from "./config.ts";

export { parseModelConfig, parseVocab };

/** A model file read into memory and checked, not yet on the GPU. */
export interface ModelFile {
  path: string;
  format: "safetensors" | "pytorch";
  config: ModelConfig;
  tensors: Map<string, StTensor>;
  metadata: Record<string, string>;
  /** Token strings by id, when the file carries a vocabulary. */
  vocab: string[] | null;
  /**
   * How a language model's text becomes ids: `char` (a character
   * vocabulary, carried or given with --vocab) or `gpt2` (GPT-2 BPE);
   * null for vision models.
   */
  tokenizer: "char" | "gpt2" | null;
}

/** A model on the GPU: its parameter store, config and file. */
export type GpuModel =
  | { family: "vision"; config: VisionConfig; params: ParamStore; file: ModelFile }
  | { family: "language"; config: LanguageConfig; params: ParamStore; file: ModelFile };

/** Options of {@linkcode readModelFile}. */
export interface ReadModelOptions {
  /** Top-level key of a PyTorch checkpoint's state_dict (e.g. `model_ema`). */
  key?: string;
}

/**
 * Read a vocabulary file: `.json` as {@linkcode parseVocab}; any other file
 * holds the characters of a character-level vocabulary in id order (as
 * nanoGPT's `sorted(set(text))`), exactly, newline included. A single final
 * newline that repeats a character already listed is taken as the editor's
 * and dropped.
 *
 * @throws {TypeError} for an empty vocabulary or duplicate characters
 */
export async function readVocabFile(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(path);
  if (path.endsWith(".json")) return parseVocab(text, `Vocabulary file "${path}"`);
  let chars = [...text];
  if (chars.length > 1 && chars[chars.length - 1] === "\n" && chars.slice(0, -1).includes("\n")) {
    chars = chars.slice(0, -1);
  }
  if (chars.length === 0) throw new TypeError(`Vocabulary file "${path}" is empty`);
  checkVocab(chars, `Vocabulary file "${path}"`);
  return chars;
}

/**
 * nanoGPT's own GPT (`model.py`) has no layer scale: give each block
 * `gamma1 = gamma2 = 1` (the identity), so it runs as tost's softmax twin.
 * Only when no block has either (a file missing some is still an error).
 */
function addIdentityLayerScale(cfg: ModelConfig, tensors: Map<string, StTensor>): void {
  if (cfg.family !== "language") return;
  const names = Array.from({ length: cfg.n_layer }, (_, i) => [
    `transformer.h.${i}.gamma1`,
    `transformer.h.${i}.gamma2`,
  ]).flat();
  if (names.some((n) => tensors.has(n))) return;
  const ones = new Float32Array(cfg.n_embd).fill(1);
  for (const n of names) {
    tensors.set(n, { dtype: "F32", shape: [cfg.n_embd], data: new Uint8Array(ones.buffer) });
  }
}

/** Tensor names of tost's data files (`--inputs`, `--save-outputs`, reference fixtures). */
const DATA_NAME = /^(case\d+|train)\./;

/**
 * Read and check a model file (tost safetensors or PyTorch checkpoint).
 * A missing file throws `Deno.errors.NotFound`.
 *
 * @throws {TypeError} when the tensors do not match the config (or no config
 *   can be inferred, e.g. an XCiT checkpoint)
 */
export async function readModelFile(
  path: string,
  options: ReadModelOptions = {},
): Promise<ModelFile> {
  const kind = await sniffFile(path);
  if (kind === "safetensors") {
    if (options.key !== undefined) {
      throw new TypeError(`--key applies to PyTorch checkpoints, "${path}" is a safetensors file`);
    }
    const file = await readSafetensors(path);
    const tensors = new Map(file.entries());
    // Training checkpoints (`tost train`) also carry AdamW state under "optimizer.".
    for (const name of [...tensors.keys()]) if (name.startsWith("optimizer.")) tensors.delete(name);
    const metadata = file.metadata;
    if (file.names.every((n) => DATA_NAME.test(n))) {
      const some = file.names.slice(0, 4).join(", ");
      throw new TypeError(
        `"${path}" is a safetensors file of data, not a model: it holds no model weights ` +
          `(its tensors: ${some || "none"}${file.names.length > 4 ? ", …" : ""})`,
      );
    }
    let config: ModelConfig;
    if (metadata.config !== undefined) {
      config = parseModelConfig(metadata.config, `Config in "${path}"`);
    } else {
      const shapes = new Map([...tensors].map(([n, t]) => [n, t.shape]));
      try {
        config = inferConfig(shapes);
      } catch (err) {
        throw new TypeError(
          `"${path}" has no tost config in its metadata and is not a model tost knows`,
          { cause: err },
        );
      }
    }
    addIdentityLayerScale(config, tensors);
    assertStateDict(config, tensors);
    const vocab = metadata.vocab !== undefined
      ? parseVocab(metadata.vocab, `Vocabulary in "${path}"`)
      : null;
    return {
      path,
      format: "safetensors",
      config,
      tensors,
      metadata,
      vocab,
      tokenizer: parseTokenizer(config, metadata.tokenizer, path),
    };
  }
  if (kind !== "pytorch-zip" && kind !== "pytorch-legacy") {
    throw new TypeError(
      `"${path}" is ${describeKind(kind)}, not a model (a tost safetensors file or a PyTorch ` +
        `checkpoint)`,
    );
  }
  const ck = await loadCheckpoint(path, { key: options.key });
  addIdentityLayerScale(ck.config, ck.tensors);
  assertStateDict(ck.config, ck.tensors);
  return {
    path,
    format: "pytorch",
    config: ck.config,
    tensors: ck.tensors,
    metadata: ck.metadata,
    vocab: null,
    tokenizer: ck.config.family === "language" ? "char" : null,
  };
}

function parseTokenizer(
  cfg: ModelConfig,
  value: string | undefined,
  path: string,
): "char" | "gpt2" | null {
  if (cfg.family !== "language") return null;
  if (value === undefined || value === "char") return "char";
  if (value === "gpt2") return "gpt2";
  throw new TypeError(`"${path}": unknown tokenizer ${JSON.stringify(value)} (char or gpt2)`);
}

/** Upload a checked model file to the GPU. */
export function uploadModel(gpu: Gpu, file: ModelFile): GpuModel {
  const cfg = file.config;
  if (cfg.family === "vision") {
    checkVisionConfig(cfg);
    return {
      family: "vision",
      config: cfg,
      params: ParamStore.upload(gpu, cfg, file.tensors),
      file,
    };
  }
  if (file.vocab && file.vocab.length !== cfg.vocab_size) {
    throw new TypeError(
      `"${file.path}": vocabulary of ${file.vocab.length} tokens for a model with vocab_size ${cfg.vocab_size}`,
    );
  }
  checkLanguageConfig(cfg);
  return {
    family: "language",
    config: cfg,
    params: ParamStore.upload(gpu, cfg, file.tensors),
    file,
  };
}

/**
 * Read, check and upload a model.
 *
 * @example
 * ```ts ignore
 * const model = await loadModel(gpu, "tests/fixtures/tost_vision_small.pth");
 * if (model.family === "vision") console.log(model.config.embed_dim);
 * destroyModel(model);
 * ```
 */
export async function loadModel(
  gpu: Gpu,
  path: string,
  options: ReadModelOptions = {},
): Promise<GpuModel> {
  return uploadModel(gpu, await readModelFile(path, options));
}

/** Free a model's GPU tensors. */
export function destroyModel(model: GpuModel): void {
  model.params.destroy();
}
