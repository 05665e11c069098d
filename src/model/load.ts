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

const VISION_FIELDS: Record<
  keyof Omit<VisionConfig, "family" | "attention">,
  "number" | "boolean"
> = {
  img_size: "number",
  patch_size: "number",
  in_chans: "number",
  num_classes: "number",
  embed_dim: "number",
  depth: "number",
  num_heads: "number",
  mlp_ratio: "number",
  qkv_bias: "boolean",
  eta: "number",
  tokens_norm: "boolean",
  cls_attn_layers: "number",
  pos_hidden_dim: "number",
  norm_eps: "number",
};

const LANGUAGE_FIELDS: Record<
  keyof Omit<LanguageConfig, "family" | "attention">,
  "number" | "boolean"
> = {
  block_size: "number",
  vocab_size: "number",
  n_layer: "number",
  n_head: "number",
  n_embd: "number",
  bias: "boolean",
  dropout: "number",
  norm_eps: "number",
};

/**
 * Parse and check a config from a tost file's `__metadata__.config`.
 *
 * @throws {SyntaxError} for text that is not JSON; {TypeError} for a config
 *   that is not a vision or language config
 * @example
 * ```ts
 * import { parseModelConfig } from "./load.ts";
 * const cfg = parseModelConfig(JSON.stringify({
 *   family: "language", attention: "tssa", block_size: 8, vocab_size: 5, n_layer: 1,
 *   n_head: 1, n_embd: 4, bias: false, dropout: 0, norm_eps: 1e-5,
 * }));
 * if (cfg.family !== "language") throw new Error("family");
 * ```
 */
export function parseModelConfig(text: string, source = "config"): ModelConfig {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SyntaxError(`${source} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(`${source} must be a JSON object`);
  }
  const v = value as Record<string, unknown>;
  const fields = v.family === "vision"
    ? VISION_FIELDS
    : v.family === "language"
    ? LANGUAGE_FIELDS
    : null;
  if (!fields) {
    throw new TypeError(
      `${source}: family must be "vision" or "language", got ${JSON.stringify(v.family)}`,
    );
  }
  if (v.attention !== "tssa" && v.attention !== "softmax") {
    throw new TypeError(
      `${source}: attention must be "tssa" or "softmax", got ${JSON.stringify(v.attention)}`,
    );
  }
  for (const [k, type] of Object.entries(fields)) {
    if (typeof v[k] !== type || (type === "number" && !Number.isFinite(v[k]))) {
      throw new TypeError(`${source}: "${k}" must be a ${type}, got ${JSON.stringify(v[k])}`);
    }
  }
  return v as unknown as ModelConfig;
}

/**
 * Parse a vocabulary: a JSON array of token strings, or a JSON string whose
 * characters are the tokens, in id order.
 *
 * @throws {TypeError} for anything else, or duplicate tokens
 */
export function parseVocab(text: string, source = "vocab"): string[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SyntaxError(`${source} is not valid JSON: ${(err as Error).message}`);
  }
  const tokens = typeof value === "string"
    ? [...value]
    : Array.isArray(value) && value.every((t) => typeof t === "string")
    ? value as string[]
    : null;
  if (!tokens) throw new TypeError(`${source} must be a JSON array of strings or a JSON string`);
  checkVocab(tokens, source);
  return tokens;
}

function checkVocab(tokens: string[], source: string): void {
  const seen = new Set<string>();
  for (const t of tokens) {
    if (seen.has(t)) throw new TypeError(`${source}: token ${JSON.stringify(t)} appears twice`);
    seen.add(t);
  }
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
