/**
 * Training settings (nanoGPT's names, so a `--config file.json` reads like
 * nanoGPT's config files) and the named presets of `tost train`.
 *
 * Every ToST preset has a softmax twin of the same size (`<name>-gpt`): same
 * data, steps and optimisation, only the attention differs — the paper's A/B.
 *
 * @module
 */

import type { AttentionKind, LanguageConfig, VisionConfig } from "../model/config.ts";
import type { Tokenizer } from "./data.ts";

/** Everything that defines a training run. */
export interface TrainSettings {
  /** Name of the preset the settings started from. */
  preset: string;
  /** "tssa" (causal ToST) or "softmax" (the GPT twin). */
  attention: AttentionKind;
  n_layer: number;
  n_head: number;
  n_embd: number;
  /** Context length T. */
  block_size: number;
  bias: boolean;
  /** "sotu" (bundled corpus) or a UTF-8 text file. */
  data: string;
  tokenizer: Tokenizer;
  /** Sequences per micro-batch. */
  batch_size: number;
  /** Micro-batches per optimizer step (gradient accumulation). */
  gradient_accumulation_steps: number;
  max_iters: number;
  learning_rate: number;
  min_lr: number;
  warmup_iters: number;
  /** Step at which the cosine reaches `min_lr`; null: `max_iters`. */
  lr_decay_iters: number | null;
  weight_decay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Global gradient-norm clip; 0 disables. */
  grad_clip: number;
  /** Evaluate (and checkpoint) every this many steps, and at the end. */
  eval_interval: number;
  /** Validation tokens per evaluation (the first ones of the split, always the same). */
  eval_tokens: number;
  /** Print a progress line every this many steps (when not on a terminal). */
  log_interval: number;
  seed: number;
  /** Characters/tokens of the sample printed at the end (0: none). */
  sample_tokens: number;
}

const COMMON = {
  bias: true,
  data: "sotu",
  tokenizer: "char",
  gradient_accumulation_steps: 1,
  weight_decay: 0.1,
  beta1: 0.9,
  beta2: 0.99,
  eps: 1e-8,
  grad_clip: 1,
  lr_decay_iters: null,
  seed: 1337,
} as const;

const TOST_PRESETS: Record<string, Omit<TrainSettings, "preset" | "attention">> = {
  tiny: {
    ...COMMON,
    n_layer: 2,
    n_head: 2,
    n_embd: 32,
    block_size: 32,
    batch_size: 8,
    max_iters: 20,
    learning_rate: 3e-3,
    min_lr: 3e-4,
    warmup_iters: 2,
    eval_interval: 10,
    eval_tokens: 2048,
    log_interval: 5,
    sample_tokens: 80,
  },
  small: {
    ...COMMON,
    n_layer: 2,
    n_head: 4,
    n_embd: 64,
    block_size: 64,
    batch_size: 16,
    max_iters: 3000,
    learning_rate: 6e-3,
    min_lr: 6e-4,
    warmup_iters: 50,
    eval_interval: 500,
    eval_tokens: 8192,
    log_interval: 10,
    sample_tokens: 200,
  },
  medium: {
    ...COMMON,
    n_layer: 6,
    n_head: 6,
    n_embd: 384,
    block_size: 256,
    batch_size: 64,
    max_iters: 5000,
    learning_rate: 1e-3,
    min_lr: 1e-4,
    warmup_iters: 100,
    eval_interval: 250,
    eval_tokens: 262144,
    log_interval: 10,
    sample_tokens: 500,
  },
};

/** Vision presets train on MNIST (`data: "mnist"`); widths reuse the language names. */
const VISION_PRESETS: Record<string, Omit<TrainSettings, "preset" | "attention">> = {
  mnist: {
    ...COMMON,
    data: "mnist",
    weight_decay: 0.05,
    beta2: 0.999,
    n_layer: 2,
    n_head: 4,
    n_embd: 64,
    block_size: 28,
    batch_size: 64,
    max_iters: 2000,
    learning_rate: 2e-3,
    min_lr: 1e-4,
    warmup_iters: 20,
    eval_interval: 250,
    eval_tokens: 1000,
    log_interval: 10,
    sample_tokens: 0,
  },
};

const DESCRIPTIONS: Record<string, string> = {
  tiny: "causal ToST, 2 layers × 32, context 32, 20 steps: a smoke test",
  small: "causal ToST, 2 layers × 64, context 64, 3000 steps of 16: the default (~3 CPU minutes)",
  medium: "causal ToST, 6 layers × 384, 6 heads, context 256 (nanoGPT char): for a GPU",
  mnist: "vision ToST on MNIST, patch 8, 2 blocks × 64, 2000 steps of 64 images",
};

/** Preset names, ToST first then each twin. */
export const PRESET_NAMES: readonly string[] = [
  ...Object.keys(TOST_PRESETS).flatMap((n) => [n, `${n}-gpt`]),
  ...Object.keys(VISION_PRESETS).flatMap((n) => [n, `${n}-vit`]),
];

/** The default preset of `tost train`. */
export const DEFAULT_PRESET = "small";

/** One line per preset, for help texts. */
export function describePresets(): string {
  return PRESET_NAMES.map((n) => {
    const base = n.replace(/-(gpt|vit)$/, "");
    const what = n.endsWith("-gpt")
      ? `its softmax-attention (GPT) twin`
      : n.endsWith("-vit")
      ? `its softmax-attention (ViT) twin`
      : DESCRIPTIONS[base];
    return `  ${n.padEnd(12)} ${what}`;
  }).join("\n");
}

/**
 * The settings of a preset.
 *
 * @throws {RangeError} for an unknown name (listing the known ones)
 * @example
 * ```ts
 * import { presetSettings } from "./presets.ts";
 * const s = presetSettings("tiny-gpt");
 * if (s.attention !== "softmax" || s.max_iters !== 20) throw new Error("twin");
 * ```
 */
export function presetSettings(name: string): TrainSettings {
  const twin = name.endsWith("-gpt") || name.endsWith("-vit");
  const baseName = twin ? name.slice(0, -4) : name;
  const base = name.endsWith("-vit")
    ? VISION_PRESETS[baseName]
    : name.endsWith("-gpt")
    ? TOST_PRESETS[baseName]
    : TOST_PRESETS[name] ?? VISION_PRESETS[name];
  if (!base) {
    throw new RangeError(`Unknown preset "${name}" (known: ${PRESET_NAMES.join(", ")})`);
  }
  return { ...base, preset: name, attention: twin ? "softmax" : "tssa" };
}

const KINDS: Record<keyof TrainSettings, "int" | "number" | "string" | "boolean" | "special"> = {
  preset: "string",
  attention: "special",
  n_layer: "int",
  n_head: "int",
  n_embd: "int",
  block_size: "int",
  bias: "boolean",
  data: "string",
  tokenizer: "special",
  batch_size: "int",
  gradient_accumulation_steps: "int",
  max_iters: "int",
  learning_rate: "number",
  min_lr: "number",
  warmup_iters: "int",
  lr_decay_iters: "special",
  weight_decay: "number",
  beta1: "number",
  beta2: "number",
  eps: "number",
  grad_clip: "number",
  eval_interval: "int",
  eval_tokens: "int",
  log_interval: "int",
  seed: "int",
  sample_tokens: "int",
};

/**
 * Apply overrides (from a JSON config file or flags) to settings, checking
 * every field's type and range.
 *
 * @throws {TypeError} for an unknown field or a value of the wrong type;
 *   {RangeError} for a value out of range
 */
export function applySettings(
  base: TrainSettings,
  overrides: Record<string, unknown>,
  source = "settings",
): TrainSettings {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) continue;
    const kind = KINDS[k as keyof TrainSettings];
    if (!kind) {
      throw new TypeError(
        `${source}: unknown setting "${k}" (known: ${Object.keys(KINDS).join(", ")})`,
      );
    }
    const bad = (want: string) =>
      new TypeError(`${source}: "${k}" must be ${want}, got ${JSON.stringify(v)}`);
    if (kind === "int" && !(typeof v === "number" && Number.isInteger(v))) throw bad("an integer");
    if (kind === "number" && !(typeof v === "number" && Number.isFinite(v))) throw bad("a number");
    if (kind === "string" && typeof v !== "string") throw bad("a string");
    if (kind === "boolean" && typeof v !== "boolean") throw bad("true or false");
    if (k === "attention" && v !== "tssa" && v !== "softmax") throw bad('"tssa" or "softmax"');
    if (k === "tokenizer" && v !== "char" && v !== "gpt2") throw bad('"char" or "gpt2"');
    if (k === "lr_decay_iters" && v !== null && !(typeof v === "number" && Number.isInteger(v))) {
      throw bad("an integer or null");
    }
    out[k] = v;
  }
  const s = out as unknown as TrainSettings;
  checkSettings(s, source);
  return s;
}

/**
 * Check ranges that types cannot express.
 *
 * @throws {RangeError} naming the first bad setting
 */
export function checkSettings(s: TrainSettings, source = "settings"): void {
  const positive: (keyof TrainSettings)[] = [
    "n_head",
    "n_embd",
    "block_size",
    "batch_size",
    "gradient_accumulation_steps",
    "eval_interval",
    "eval_tokens",
    "log_interval",
  ];
  for (const k of positive) {
    if (!((s[k] as number) >= 1)) throw new RangeError(`${source}: ${k} must be ≥ 1, got ${s[k]}`);
  }
  for (const k of ["n_layer", "max_iters", "warmup_iters", "sample_tokens"] as const) {
    if (!(s[k] >= 0)) throw new RangeError(`${source}: ${k} must be ≥ 0, got ${s[k]}`);
  }
  if (s.n_embd % s.n_head !== 0) {
    throw new RangeError(
      `${source}: n_embd ${s.n_embd} must be a multiple of n_head ${s.n_head}`,
    );
  }
  if (!(s.learning_rate > 0) || !(s.min_lr >= 0)) {
    throw new RangeError(`${source}: learning_rate must be > 0 and min_lr ≥ 0`);
  }
  if (!(s.seed >= 0 && s.seed <= 0xffffffff)) {
    throw new RangeError(`${source}: seed must be in [0, 2^32), got ${s.seed}`);
  }
  if (!(s.grad_clip >= 0)) throw new RangeError(`${source}: grad_clip must be ≥ 0`);
}

/** The model config a run trains, for a vocabulary size. */
export function modelConfig(s: TrainSettings, vocabSize: number): LanguageConfig {
  return {
    family: "language",
    attention: s.attention,
    block_size: s.block_size,
    vocab_size: vocabSize,
    n_layer: s.n_layer,
    n_head: s.n_head,
    n_embd: s.n_embd,
    bias: s.bias,
    dropout: 0,
    norm_eps: 1e-5,
  };
}

/** The vision model config of MNIST settings (28×28 digits, 3 input channels, 10 classes). */
export function visionModelConfig(s: TrainSettings): VisionConfig {
  return {
    family: "vision",
    attention: s.attention,
    img_size: 28,
    patch_size: 8,
    in_chans: 3,
    num_classes: 10,
    embed_dim: s.n_embd,
    depth: s.n_layer,
    num_heads: s.n_head,
    mlp_ratio: 4,
    qkv_bias: true,
    eta: 1,
    tokens_norm: true,
    cls_attn_layers: 2,
    pos_hidden_dim: 32,
    norm_eps: 1e-6,
  };
}
