/**
 * The `state_dict` name tables of the reference models: every parameter and
 * buffer a config's PyTorch model has, with its shape, so that a loaded
 * checkpoint can be checked in both directions (nothing missing, nothing
 * unexpected, every shape right) before a model runs on it.
 *
 * Names are exactly PyTorch's (`_orig_mod.` prefixes already removed):
 * vision `patch_embed.proj.{0,2,4[,6]}.{0,1}.*`, `blocks.i.*`,
 * `cls_attn_blocks.i.*`, `pos_embeder.token_projection.*`; language
 * `transformer.{wte,wpe,h.i.*,ln_f}.*`, `lm_head.weight`.
 *
 * @module
 */

import type { LanguageConfig, ModelConfig, VisionConfig } from "./config.ts";

/** One entry of a model's `state_dict`. */
export interface ParamSpec {
  name: string;
  shape: number[];
  /** `"float"` for parameters and float buffers, `"int"` for BatchNorm's `num_batches_tracked`. */
  kind: "float" | "int";
  /**
   * A buffer some versions of the reference save and others do not (nanoGPT's
   * causal mask `attn.bias` when flash attention is unavailable); never used by tost.
   */
  optional?: boolean;
}

/**
 * Channel widths of the vision stem's conv stages: patch 8 → `D/4, D/2, D`
 * (three stride-2 stages), patch 16 → `D/8, D/4, D/2, D` (four).
 *
 * @throws {RangeError} for another patch size or a width that is not a whole number
 * @example
 * ```ts
 * import { stemWidths } from "./names.ts";
 * stemWidths(16, 384); // [48, 96, 192, 384]
 * ```
 */
export function stemWidths(patchSize: number, D: number): number[] {
  let widths: number[];
  if (patchSize === 8) widths = [D / 4, D / 2, D];
  else if (patchSize === 16) widths = [D / 8, D / 4, D / 2, D];
  else throw new RangeError(`Vision stem needs patch size 8 or 16, got ${patchSize}`);
  if (!widths.every((c) => Number.isInteger(c) && c > 0)) {
    throw new RangeError(
      `embed_dim ${D} must be a positive multiple of ${
        patchSize / 2
      } for a patch ${patchSize} stem`,
    );
  }
  return widths;
}

/**
 * Width of a vision MLP's hidden layer, `int(dim · mlp_ratio)` as the reference computes it.
 *
 * @example
 * ```ts
 * import { mlpHidden } from "./names.ts";
 * mlpHidden(64, 4); // 256
 * ```
 */
export function mlpHidden(dim: number, ratio: number): number {
  return Math.floor(dim * ratio);
}

function entry(name: string, shape: number[], kind: "float" | "int" = "float"): ParamSpec {
  return { name, shape, kind };
}

/** `weight` and `bias` of a LayerNorm or linear layer. */
function pair(prefix: string, weight: number[], bias: number[] | false): ParamSpec[] {
  const out = [entry(`${prefix}.weight`, weight)];
  if (bias) out.push(entry(`${prefix}.bias`, bias));
  return out;
}

/**
 * The `state_dict` entries of a vision model (`tost_cab_*` with attention
 * `"tssa"`, `vit_cab_*` with `"softmax"`), in the reference's order.
 *
 * @throws {RangeError} for a patch size other than 8 or 16 (see {@linkcode stemWidths})
 * @example
 * ```ts
 * import { visionParamSpecs } from "./names.ts";
 * import type { VisionConfig } from "./config.ts";
 * const cfg: VisionConfig = {
 *   family: "vision", attention: "tssa", img_size: 32, patch_size: 8, in_chans: 3,
 *   num_classes: 10, embed_dim: 64, depth: 2, num_heads: 4, mlp_ratio: 4, qkv_bias: true,
 *   eta: 1, tokens_norm: true, cls_attn_layers: 2, pos_hidden_dim: 32, norm_eps: 1e-6,
 * };
 * visionParamSpecs(cfg).length; // 86
 * ```
 */
export function visionParamSpecs(cfg: VisionConfig): ParamSpec[] {
  const D = cfg.embed_dim;
  const NH = cfg.num_heads;
  const hidden = mlpHidden(D, cfg.mlp_ratio);
  const qkvBias = (n: number): number[] | false => cfg.qkv_bias ? [n] : false;
  const out: ParamSpec[] = [entry("cls_token", [1, 1, D])];

  let cin = cfg.in_chans;
  stemWidths(cfg.patch_size, D).forEach((c, s) => {
    const p = `patch_embed.proj.${2 * s}`;
    out.push(entry(`${p}.0.weight`, [c, cin, 3, 3]));
    out.push(...pair(`${p}.1`, [c], [c]));
    out.push(entry(`${p}.1.running_mean`, [c]), entry(`${p}.1.running_var`, [c]));
    out.push(entry(`${p}.1.num_batches_tracked`, [], "int"));
    cin = c;
  });

  const mlp = (
    p: string,
  ) => [...pair(`${p}.fc1`, [hidden, D], [hidden]), ...pair(`${p}.fc2`, [D, hidden], [D])];
  for (let i = 0; i < cfg.depth; i++) {
    const p = `blocks.${i}`;
    out.push(entry(`${p}.gamma1`, [D]), entry(`${p}.gamma2`, [D]));
    out.push(...pair(`${p}.norm1`, [D], [D]));
    if (cfg.attention === "tssa") {
      out.push(entry(`${p}.attn.temp`, [NH, 1]));
      out.push(...pair(`${p}.attn.qkv`, [D, D], qkvBias(D)));
      out.push(...pair(`${p}.attn.to_out.0`, [D, D], [D]));
    } else {
      out.push(...pair(`${p}.attn.qkv`, [3 * D, D], qkvBias(3 * D)));
      out.push(...pair(`${p}.attn.proj`, [D, D], [D]));
    }
    out.push(...pair(`${p}.norm2`, [D], [D]), ...mlp(`${p}.mlp`));
  }
  for (let i = 0; i < cfg.cls_attn_layers; i++) {
    const p = `cls_attn_blocks.${i}`;
    out.push(entry(`${p}.gamma1`, [D]), entry(`${p}.gamma2`, [D]));
    out.push(...pair(`${p}.norm1`, [D], [D]));
    out.push(...pair(`${p}.attn.qkv`, [3 * D, D], qkvBias(3 * D)));
    out.push(...pair(`${p}.attn.proj`, [D, D], [D]));
    out.push(...pair(`${p}.norm2`, [D], [D]), ...mlp(`${p}.mlp`));
  }
  out.push(...pair("norm", [D], [D]));
  out.push(...pair("head", [cfg.num_classes, D], [cfg.num_classes]));
  out.push(...pair("pos_embeder.token_projection", [D, 2 * cfg.pos_hidden_dim, 1, 1], [D]));
  return out;
}

/**
 * The `state_dict` entries of a language model (causal ToST with attention
 * `"tssa"`, GPT with `"softmax"`), in the reference's order. `lm_head.weight`
 * is listed although it is tied to `transformer.wte.weight`: PyTorch saves both.
 *
 * @example
 * ```ts
 * import { languageParamSpecs } from "./names.ts";
 * const specs = languageParamSpecs({
 *   family: "language", attention: "tssa", block_size: 64, vocab_size: 65, n_layer: 2,
 *   n_head: 4, n_embd: 64, bias: true, dropout: 0, norm_eps: 1e-5,
 * });
 * specs.length; // 37
 * ```
 */
export function languageParamSpecs(cfg: LanguageConfig): ParamSpec[] {
  const C = cfg.n_embd;
  const NH = cfg.n_head;
  const bias = (n: number): number[] | false => cfg.bias ? [n] : false;
  const out: ParamSpec[] = [
    entry("transformer.wte.weight", [cfg.vocab_size, C]),
    entry("transformer.wpe.weight", [cfg.block_size, C]),
  ];
  for (let i = 0; i < cfg.n_layer; i++) {
    const p = `transformer.h.${i}`;
    out.push(entry(`${p}.gamma1`, [C]), entry(`${p}.gamma2`, [C]));
    out.push(...pair(`${p}.ln_1`, [C], bias(C)));
    if (cfg.attention === "tssa") {
      out.push(entry(`${p}.attn.temp`, [NH, 1]));
      out.push(entry(`${p}.attn.denom_bias`, [NH, cfg.block_size, 1]));
      out.push(...pair(`${p}.attn.c_attn`, [C, C], bias(C)));
    } else {
      out.push({
        ...entry(`${p}.attn.bias`, [1, 1, cfg.block_size, cfg.block_size]),
        optional: true,
      });
      out.push(...pair(`${p}.attn.c_attn`, [3 * C, C], bias(3 * C)));
    }
    out.push(...pair(`${p}.attn.c_proj`, [C, C], bias(C)));
    out.push(...pair(`${p}.ln_2`, [C], bias(C)));
    out.push(...pair(`${p}.mlp.c_fc`, [4 * C, C], bias(4 * C)));
    out.push(...pair(`${p}.mlp.c_proj`, [C, 4 * C], bias(C)));
  }
  out.push(...pair("transformer.ln_f", [C], bias(C)));
  out.push(entry("lm_head.weight", [cfg.vocab_size, C]));
  return out;
}

/**
 * The `state_dict` entries of any model.
 *
 * @example
 * ```ts
 * import { paramSpecs } from "./names.ts";
 * const names = paramSpecs({
 *   family: "language", attention: "softmax", block_size: 8, vocab_size: 5, n_layer: 1,
 *   n_head: 1, n_embd: 4, bias: false, dropout: 0, norm_eps: 1e-5,
 * }).map((s) => s.name);
 * names.includes("lm_head.weight"); // true
 * ```
 */
export function paramSpecs(cfg: ModelConfig): ParamSpec[] {
  return cfg.family === "vision" ? visionParamSpecs(cfg) : languageParamSpecs(cfg);
}

/** How a set of tensors differs from a config's table (see {@linkcode compareStateDict}). */
export interface StateDictDiff {
  /** Required names the tensors lack. */
  missing: string[];
  /** Names the table does not know. */
  unexpected: string[];
  /** Present in both with different shapes. */
  mismatched: { name: string; expected: number[]; actual: number[] }[];
}

/**
 * Compare tensors (anything with a `shape` per name) with a config's table in
 * both directions. Optional entries may be absent but are shape-checked when present.
 *
 * @example
 * ```ts
 * import { compareStateDict } from "./names.ts";
 * const diff = compareStateDict({
 *   family: "language", attention: "tssa", block_size: 4, vocab_size: 3, n_layer: 0,
 *   n_head: 1, n_embd: 2, bias: false, dropout: 0, norm_eps: 1e-5,
 * }, new Map([["transformer.wte.weight", { shape: [3, 2] }], ["extra", { shape: [1] }]]));
 * diff.unexpected; // ["extra"]
 * diff.missing; // ["transformer.wpe.weight", "transformer.ln_f.weight", "lm_head.weight"]
 * ```
 */
export function compareStateDict(
  cfg: ModelConfig,
  tensors: ReadonlyMap<string, { shape: readonly number[] }>,
): StateDictDiff {
  const specs = paramSpecs(cfg);
  const known = new Set(specs.map((s) => s.name));
  const diff: StateDictDiff = { missing: [], unexpected: [], mismatched: [] };
  for (const s of specs) {
    const t = tensors.get(s.name);
    if (!t) {
      if (!s.optional) diff.missing.push(s.name);
      continue;
    }
    const actual = [...t.shape];
    if (actual.length !== s.shape.length || actual.some((d, i) => d !== s.shape[i])) {
      diff.mismatched.push({ name: s.name, expected: s.shape, actual });
    }
  }
  for (const name of tensors.keys()) if (!known.has(name)) diff.unexpected.push(name);
  return diff;
}

/**
 * Throw unless the tensors match the config's table exactly (see
 * {@linkcode compareStateDict}); the message lists up to 10 names of each kind.
 *
 * @throws {TypeError} naming the missing, unexpected and misshapen tensors
 * @example
 * ```ts
 * import { assertStateDict } from "./names.ts";
 * try {
 *   assertStateDict({
 *     family: "language", attention: "tssa", block_size: 4, vocab_size: 3, n_layer: 0,
 *     n_head: 1, n_embd: 2, bias: false, dropout: 0, norm_eps: 1e-5,
 *   }, new Map());
 * } catch (e) {
 *   (e as TypeError).message; // "State dict does not match the language config: missing …"
 * }
 * ```
 */
export function assertStateDict(
  cfg: ModelConfig,
  tensors: ReadonlyMap<string, { shape: readonly number[] }>,
): void {
  const { missing, unexpected, mismatched } = compareStateDict(cfg, tensors);
  const list = (names: string[]) =>
    names.slice(0, 10).join(", ") + (names.length > 10 ? `, … (${names.length} in all)` : "");
  const parts: string[] = [];
  if (missing.length) parts.push(`missing ${list(missing)}`);
  if (unexpected.length) parts.push(`unexpected ${list(unexpected)}`);
  if (mismatched.length) {
    parts.push(
      `wrong shape ${
        list(mismatched.map((m) => `${m.name} [${m.actual}] (expected [${m.expected}])`))
      }`,
    );
  }
  if (parts.length) {
    throw new TypeError(`State dict does not match the ${cfg.family} config: ${parts.join("; ")}`);
  }
}
