/**
 * Model configurations, with the reference implementation's field names.
 * A config travels in a tost safetensors file as `__metadata__.config` (JSON)
 * and a language model's vocabulary as `__metadata__.vocab`; both are parsed
 * here, with no file or GPU code (the `tost serve` page parses them too).
 *
 * @module
 */

/** Attention used by a model's blocks. */
export type AttentionKind = "tssa" | "softmax";

/**
 * Vision ToST (`tost_cab_*`) or its ViT twin (`vit_cab_*`): XCiT-style
 * convolutional stem, Fourier positional encoding, `depth` blocks, class
 * token, `cls_attn_layers` class-attention blocks, final norm, linear head.
 */
export interface VisionConfig {
  family: "vision";
  /** "tssa" for ToST, "softmax" for ViT. */
  attention: AttentionKind;
  img_size: number;
  /** 8 (three conv3x3 stride-2 + BN stages) or 16 (four). */
  patch_size: number;
  in_chans: number;
  num_classes: number;
  embed_dim: number;
  depth: number;
  num_heads: number;
  mlp_ratio: number;
  qkv_bias: boolean;
  /** Layer-scale initial value (the `gamma*` parameters). */
  eta: number;
  tokens_norm: boolean;
  cls_attn_layers: number;
  /** Hidden width of the Fourier positional encoding (XCiT: 32). */
  pos_hidden_dim: number;
  /** LayerNorm epsilon (1e-6 in the reference). */
  norm_eps: number;
}

/**
 * Language ToST (nanoGPT-style `GPT` with `TSSA=True`) or plain GPT
 * (`TSSA=False`, causal softmax).
 */
export interface LanguageConfig {
  family: "language";
  attention: AttentionKind;
  block_size: number;
  vocab_size: number;
  n_layer: number;
  n_head: number;
  n_embd: number;
  bias: boolean;
  dropout: number;
  /** LayerNorm epsilon (1e-5 in the reference). */
  norm_eps: number;
}

/** Any model tost can run. */
export type ModelConfig = VisionConfig | LanguageConfig;

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
 * import { parseModelConfig } from "./config.ts";
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

/** Throw a TypeError naming `source` when a token appears twice. */
export function checkVocab(tokens: string[], source: string): void {
  const seen = new Set<string>();
  for (const t of tokens) {
    if (seen.has(t)) throw new TypeError(`${source}: token ${JSON.stringify(t)} appears twice`);
    seen.add(t);
  }
}
