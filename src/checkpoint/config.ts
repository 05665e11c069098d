/**
 * The model config of a state_dict, inferred from its tensor names and
 * shapes, then checked name by name: every tensor the architecture needs
 * must be present with the right shape, and no tensor may be left over.
 * Hyper-parameters a checkpoint records (`model_args` of the language
 * trainer, `args` of the vision trainer) are cross-checked against it.
 *
 * @module
 */

import type { LanguageConfig, ModelConfig, VisionConfig } from "../model/config.ts";

/** Tensor shapes by (cleaned) state_dict name. */
export type ShapeMap = ReadonlyMap<string, readonly number[]>;

/** Hyper-parameters recorded beside the weights, as plain values. */
export interface ConfigHints {
  /** The language trainer's `model_args` dict. */
  model_args?: Record<string, unknown>;
  /** The vision trainer's `args` (an `argparse.Namespace`'s attributes). */
  args?: Record<string, unknown>;
}

function fmt(shape: readonly number[] | undefined): string {
  return shape ? `[${shape.join(", ")}]` : "missing";
}

function need(shapes: ShapeMap, name: string, rank?: number): readonly number[] {
  const s = shapes.get(name);
  if (!s) throw new TypeError(`tensor "${name}" is missing`);
  if (rank !== undefined && s.length !== rank) {
    throw new TypeError(`tensor "${name}" has shape ${fmt(s)}, expected ${rank} dimensions`);
  }
  return s;
}

/** Number of consecutive indices `prefix.<i>.` present, checking there are no holes. */
function countIndexed(shapes: ShapeMap, prefix: string): number {
  const seen = new Set<number>();
  const re = new RegExp(`^${prefix.replace(/\./g, "\\.")}\\.(\\d+)\\.`);
  for (const name of shapes.keys()) {
    const m = re.exec(name);
    if (m) seen.add(Number(m[1]));
  }
  for (let i = 0; i < seen.size; i++) {
    if (!seen.has(i)) throw new TypeError(`"${prefix}.${i}" is missing but higher indices exist`);
  }
  return seen.size;
}

type Spec = Map<string, { shape: number[]; optional?: boolean }>;

/** Assert that `shapes` holds exactly the tensors of `spec`, with their shapes. */
function checkSpec(shapes: ShapeMap, spec: Spec, arch: string): void {
  const problems: string[] = [];
  for (const [name, { shape, optional }] of spec) {
    const got = shapes.get(name);
    if (!got) {
      if (!optional) problems.push(`"${name}" is missing`);
    } else if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      problems.push(`"${name}" has shape ${fmt(got)}, expected ${fmt(shape)}`);
    }
  }
  for (const name of shapes.keys()) {
    if (!spec.has(name)) problems.push(`"${name}" is not part of a ${arch}`);
  }
  if (problems.length) {
    const more = problems.length > 8 ? `; and ${problems.length - 8} more` : "";
    throw new TypeError(
      `state_dict does not match a ${arch}: ${problems.slice(0, 8).join("; ")}${more}`,
    );
  }
}

/**
 * Infer the model config from tensor names and shapes (names without the
 * `_orig_mod.`/`module.` prefixes). Throws a TypeError naming the tensor that
 * does not fit when the state_dict is not one of tost's architectures, or
 * when a value cannot be known from shapes alone and `hints` lack it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { inferConfig } from "./config.ts";
 * const C = 8, V = 11, T = 5, H = 2;
 * const shapes = new Map<string, number[]>([
 *   ["transformer.wte.weight", [V, C]], ["transformer.wpe.weight", [T, C]],
 *   ["transformer.h.0.gamma1", [C]], ["transformer.h.0.gamma2", [C]],
 *   ["transformer.h.0.ln_1.weight", [C]], ["transformer.h.0.attn.temp", [H, 1]],
 *   ["transformer.h.0.attn.denom_bias", [H, T, 1]], ["transformer.h.0.attn.c_attn.weight", [C, C]],
 *   ["transformer.h.0.attn.c_proj.weight", [C, C]], ["transformer.h.0.ln_2.weight", [C]],
 *   ["transformer.h.0.mlp.c_fc.weight", [4 * C, C]], ["transformer.h.0.mlp.c_proj.weight", [C, 4 * C]],
 *   ["transformer.ln_f.weight", [C]], ["lm_head.weight", [V, C]],
 * ]);
 * const cfg = inferConfig(shapes);
 * assert.ok(cfg.family === "language" && cfg.n_head === 2 && !cfg.bias && cfg.attention === "tssa");
 * ```
 */
export function inferConfig(shapes: ShapeMap, hints: ConfigHints = {}): ModelConfig {
  if (shapes.has("transformer.wte.weight")) return inferLanguage(shapes, hints);
  if (shapes.has("cls_token") && shapes.has("patch_embed.proj.0.0.weight")) {
    return inferVision(shapes, hints);
  }
  const sample = [...shapes.keys()].slice(0, 5).map((n) => `"${n}"`).join(", ");
  throw new TypeError(
    `unrecognised architecture: neither a language model (no "transformer.wte.weight") nor a ` +
      `vision model (no "cls_token"); tensors include ${sample || "none"}`,
  );
}

function num(v: unknown): number | undefined {
  return typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : undefined;
}

function inferLanguage(shapes: ShapeMap, hints: ConfigHints): LanguageConfig {
  const [V, C] = need(shapes, "transformer.wte.weight", 2);
  const [T, C2] = need(shapes, "transformer.wpe.weight", 2);
  if (C2 !== C) {
    throw new TypeError(
      `"transformer.wpe.weight" has width ${C2} but "transformer.wte.weight" has ${C}`,
    );
  }
  const L = countIndexed(shapes, "transformer.h");
  if (L === 0) throw new TypeError(`no blocks "transformer.h.<i>.*"`);
  const tssa = shapes.has("transformer.h.0.attn.temp") ||
    shapes.has("transformer.h.0.attn.denom_bias");
  let H: number;
  if (tssa) {
    H = need(shapes, "transformer.h.0.attn.temp", 2)[0];
  } else {
    const h = num(hints.model_args?.n_head);
    if (h === undefined) {
      throw new TypeError(
        "a softmax GPT's head count cannot be inferred from its weights and the checkpoint has " +
          "no model_args.n_head",
      );
    }
    H = h;
  }
  if (!(H > 0) || C % H !== 0) throw new TypeError(`${H} heads do not divide the width ${C}`);
  const bias = shapes.has("transformer.h.0.ln_1.bias");
  const gamma = shapes.has("transformer.h.0.gamma1");
  const spec: Spec = new Map();
  const add = (name: string, shape: number[], optional = false) =>
    spec.set(name, { shape, optional });
  const ln = (p: string) => {
    add(`${p}.weight`, [C]);
    if (bias) add(`${p}.bias`, [C]);
  };
  const lin = (p: string, out: number, inp: number) => {
    add(`${p}.weight`, [out, inp]);
    if (bias) add(`${p}.bias`, [out]);
  };
  add("transformer.wte.weight", [V, C]);
  add("transformer.wpe.weight", [T, C]);
  for (let i = 0; i < L; i++) {
    const p = `transformer.h.${i}`;
    if (gamma || tssa) {
      add(`${p}.gamma1`, [C]);
      add(`${p}.gamma2`, [C]);
    }
    ln(`${p}.ln_1`);
    if (tssa) {
      add(`${p}.attn.temp`, [H, 1]);
      add(`${p}.attn.denom_bias`, [H, T, 1]);
      lin(`${p}.attn.c_attn`, C, C);
    } else {
      lin(`${p}.attn.c_attn`, 3 * C, C);
      add(`${p}.attn.bias`, [1, 1, T, T], true); // nanoGPT's causal mask buffer
    }
    lin(`${p}.attn.c_proj`, C, C);
    ln(`${p}.ln_2`);
    lin(`${p}.mlp.c_fc`, 4 * C, C);
    lin(`${p}.mlp.c_proj`, C, 4 * C);
  }
  ln("transformer.ln_f");
  add("lm_head.weight", [V, C]);
  checkSpec(shapes, spec, tssa ? "causal ToST language model" : "GPT language model");
  const dropout = num(hints.model_args?.dropout) ?? 0;
  return {
    family: "language",
    attention: tssa ? "tssa" : "softmax",
    block_size: T,
    vocab_size: V,
    n_layer: L,
    n_head: H,
    n_embd: C,
    bias,
    dropout,
    norm_eps: 1e-5,
  };
}

/** Registered vision model names: `<kind>_cab_<size>_<depth>_p<patch>`. */
const VISION_NAME = /^(tost|vit|xcit)_cab_(tiny|small|medium|large)_(\d+)_p(\d+)$/;
const VISION_WIDTH: Record<string, number> = { tiny: 192, small: 384, medium: 512, large: 768 };

function inferVision(shapes: ShapeMap, hints: ConfigHints): VisionConfig {
  const cls = need(shapes, "cls_token", 3);
  const C = cls[2];
  if (cls[0] !== 1 || cls[1] !== 1) throw new TypeError(`"cls_token" has shape ${fmt(cls)}`);
  const convs = countIndexedStem(shapes);
  if (convs !== 3 && convs !== 4) {
    throw new TypeError(
      `patch stem has ${convs} conv layers; tost knows 3 (patch 8) and 4 (patch 16)`,
    );
  }
  const patch = convs === 3 ? 8 : 16;
  const inChans = need(shapes, "patch_embed.proj.0.0.weight", 4)[1];
  const pos = need(shapes, "pos_embeder.token_projection.weight", 4);
  if (pos[1] % 2 !== 0) {
    throw new TypeError(`"pos_embeder.token_projection.weight" has shape ${fmt(pos)}`);
  }
  const posHidden = pos[1] / 2;
  const depth = countIndexed(shapes, "blocks");
  const clsLayers = countIndexed(shapes, "cls_attn_blocks");
  if (depth === 0) throw new TypeError(`no blocks "blocks.<i>.*"`);
  if (shapes.has("blocks.0.attn.temperature")) {
    throw new TypeError("XCiT (cross-covariance attention) models are not supported by tost");
  }
  const tssa = shapes.has("blocks.0.attn.temp");
  let H: number;
  if (tssa) H = need(shapes, "blocks.0.attn.temp", 2)[0];
  else {
    const h = num(hints.args?.num_heads);
    if (h === undefined) {
      throw new TypeError(
        "a ViT's head count cannot be inferred from its weights and the checkpoint's args do " +
          "not record num_heads",
      );
    }
    H = h;
  }
  if (!(H > 0) || C % H !== 0) throw new TypeError(`${H} heads do not divide the width ${C}`);
  const hidden = need(shapes, "blocks.0.mlp.fc1.weight", 2)[0];
  const qkvBias = shapes.has("blocks.0.attn.qkv.bias");
  const head = shapes.get("head.weight");
  const K = head ? head[0] : 0;

  const spec: Spec = new Map();
  const add = (name: string, shape: number[]) => spec.set(name, { shape });
  const lin = (p: string, out: number, inp: number, bias = true) => {
    add(`${p}.weight`, [out, inp]);
    if (bias) add(`${p}.bias`, [out]);
  };
  const norm = (p: string) => {
    add(`${p}.weight`, [C]);
    add(`${p}.bias`, [C]);
  };
  add("cls_token", [1, 1, C]);
  const widths = patch === 8 ? [C / 4, C / 2, C] : [C / 8, C / 4, C / 2, C];
  let prev = inChans;
  widths.forEach((w, i) => {
    const p = `patch_embed.proj.${2 * i}`;
    add(`${p}.0.weight`, [w, prev, 3, 3]);
    for (const b of ["weight", "bias", "running_mean", "running_var"]) add(`${p}.1.${b}`, [w]);
    add(`${p}.1.num_batches_tracked`, []);
    prev = w;
  });
  add("pos_embeder.token_projection.weight", [C, 2 * posHidden, 1, 1]);
  add("pos_embeder.token_projection.bias", [C]);
  for (let i = 0; i < depth; i++) {
    const p = `blocks.${i}`;
    add(`${p}.gamma1`, [C]);
    add(`${p}.gamma2`, [C]);
    norm(`${p}.norm1`);
    if (tssa) {
      add(`${p}.attn.temp`, [H, 1]);
      lin(`${p}.attn.qkv`, C, C, qkvBias);
      lin(`${p}.attn.to_out.0`, C, C);
    } else {
      lin(`${p}.attn.qkv`, 3 * C, C, qkvBias);
      lin(`${p}.attn.proj`, C, C);
    }
    norm(`${p}.norm2`);
    lin(`${p}.mlp.fc1`, hidden, C);
    lin(`${p}.mlp.fc2`, C, hidden);
  }
  for (let i = 0; i < clsLayers; i++) {
    const p = `cls_attn_blocks.${i}`;
    add(`${p}.gamma1`, [C]);
    add(`${p}.gamma2`, [C]);
    norm(`${p}.norm1`);
    lin(`${p}.attn.qkv`, 3 * C, C, qkvBias);
    lin(`${p}.attn.proj`, C, C);
    norm(`${p}.norm2`);
    lin(`${p}.mlp.fc1`, hidden, C);
    lin(`${p}.mlp.fc2`, C, hidden);
  }
  norm("norm");
  if (head) lin("head", K, C);
  checkSpec(shapes, spec, tssa ? "vision ToST" : "vision ViT");

  const imgSize = num(hints.args?.input_size) ?? 224;
  // Layer-scale init only matters for training from scratch; trained gammas are in the weights.
  const eta = num(hints.args?.eta) ?? 1.0;
  return {
    family: "vision",
    attention: tssa ? "tssa" : "softmax",
    img_size: imgSize,
    patch_size: patch,
    in_chans: inChans,
    num_classes: K,
    embed_dim: C,
    depth,
    num_heads: H,
    mlp_ratio: hidden / C,
    qkv_bias: qkvBias,
    eta,
    tokens_norm: true,
    cls_attn_layers: clsLayers,
    pos_hidden_dim: posHidden,
    norm_eps: 1e-6,
  };
}

function countIndexedStem(shapes: ShapeMap): number {
  let n = 0;
  while (shapes.has(`patch_embed.proj.${2 * n}.0.weight`)) n++;
  return n;
}

/**
 * Compare an inferred config with what the checkpoint records. Throws a
 * RangeError naming both values at the first disagreement.
 *
 * @example
 * ```ts
 * import { crossCheckConfig } from "./config.ts";
 * const cfg = { family: "language", attention: "tssa", block_size: 64, vocab_size: 65, n_layer: 2,
 *   n_head: 4, n_embd: 64, bias: true, dropout: 0, norm_eps: 1e-5 } as const;
 * crossCheckConfig(cfg, { model_args: { n_layer: 2, n_head: 4, TSSA: true } });
 * ```
 */
export function crossCheckConfig(config: ModelConfig, hints: ConfigHints): void {
  const differ = (what: string, recorded: unknown, inferred: unknown) => {
    throw new RangeError(
      `${what} is ${JSON.stringify(recorded)} but the weights say ${JSON.stringify(inferred)}`,
    );
  };
  if (config.family === "language") {
    const a = hints.model_args;
    if (!a) return;
    for (const k of ["block_size", "vocab_size", "n_layer", "n_head", "n_embd"] as const) {
      const v = num(a[k]);
      if (a[k] !== undefined && v !== config[k]) differ(`model_args.${k}`, a[k], config[k]);
    }
    if (typeof a.bias === "boolean" && a.bias !== config.bias) {
      differ("model_args.bias", a.bias, config.bias);
    }
    if (typeof a.TSSA === "boolean" && a.TSSA !== (config.attention === "tssa")) {
      differ("model_args.TSSA", a.TSSA, config.attention === "tssa");
    }
    return;
  }
  const a = hints.args;
  if (!a) return;
  const classes = num(a.nb_classes);
  if (classes !== undefined && classes !== config.num_classes) {
    differ("args.nb_classes", a.nb_classes, config.num_classes);
  }
  const m = typeof a.model === "string" ? VISION_NAME.exec(a.model) : null;
  if (!m) return;
  const [, kind, size, depth, patch] = m;
  if (kind === "xcit") differ(`args.model`, a.model, "a ToST or ViT model");
  const attention = kind === "tost" ? "tssa" : "softmax";
  if (attention !== config.attention) {
    differ(`args.model ("${a.model}") attention`, attention, config.attention);
  }
  if (Number(depth) !== config.depth) {
    differ(`args.model ("${a.model}") depth`, Number(depth), config.depth);
  }
  if (Number(patch) !== config.patch_size) {
    differ(`args.model ("${a.model}") patch size`, Number(patch), config.patch_size);
  }
  if (VISION_WIDTH[size] !== config.embed_dim) {
    differ(`args.model ("${a.model}") width`, VISION_WIDTH[size], config.embed_dim);
  }
}
