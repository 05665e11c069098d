/**
 * Typed views of a language model's {@linkcode ParamStore} (causal ToST or
 * its GPT twin): the tensors of each layer by role, under their
 * `state_dict` names. A view holds the store's own tensors, so the same
 * function gives the parameters (from the model's store) and the gradients
 * (from the gradient store, which has the same names).
 *
 * | view field                | state_dict (`transformer.` omitted)     |
 * | ------------------------- | --------------------------------------- |
 * | `wte` `[V, C]`            | `wte.weight` (also the tied `lm_head.weight`) |
 * | `wpe` `[block_size, C]`   | `wpe.weight`                            |
 * | `blocks[i].norm1/norm2`   | `h.i.ln_1`, `h.i.ln_2` (`.weight`, `.bias`) |
 * | `blocks[i].attn`          | `h.i.attn.{c_attn, c_proj}`, `temp`, `denom_bias` (ToST) |
 * | `blocks[i].mlp.fc1/fc2`   | `h.i.mlp.c_fc`, `h.i.mlp.c_proj`        |
 * | `blocks[i].gamma1/gamma2` | `h.i.gamma1`, `h.i.gamma2`              |
 * | `lnF`                     | `ln_f`                                  |
 *
 * @module
 */

import type { Tensor } from "../../gpu/runtime.ts";
import type { LanguageConfig } from "../config.ts";
import type { ParamStore } from "../params.ts";
import type { AttentionParams } from "../../nn/attention.ts";
import type { BlockParams, NormParams } from "../../nn/block.ts";
import type { LinearParams } from "../../nn/mlp.ts";

/** A language model's tensors by role. */
export interface LanguageParams {
  config: LanguageConfig;
  /** `[V, C]`, also the tied `lm_head`. */
  wte: Tensor;
  /** `[block_size, C]` */
  wpe: Tensor;
  blocks: BlockParams[];
  lnF: NormParams;
}

/**
 * Check a language config's sizes.
 *
 * @throws {RangeError} for sizes the model cannot have
 */
export function checkLanguageConfig(cfg: LanguageConfig): void {
  const ints = {
    n_embd: cfg.n_embd,
    n_head: cfg.n_head,
    n_layer: cfg.n_layer,
    vocab_size: cfg.vocab_size,
    block_size: cfg.block_size,
  };
  for (const [k, v] of Object.entries(ints)) {
    if (!Number.isInteger(v) || v < (k === "n_layer" ? 0 : 1)) {
      throw new RangeError(`Language config: ${k} must be a positive integer, got ${v}`);
    }
  }
  if (cfg.n_embd % cfg.n_head !== 0) {
    throw new RangeError(
      `Language config: n_embd ${cfg.n_embd} is not a multiple of n_head ${cfg.n_head}`,
    );
  }
  if (cfg.attention !== "tssa" && cfg.attention !== "softmax") {
    throw new RangeError(
      `Language config: unsupported attention "${cfg.attention}" (tssa or softmax)`,
    );
  }
}

/**
 * The view of a language model's store (parameters or gradients).
 *
 * @throws {TypeError} when the store holds a vision model
 * @throws {RangeError} when a tensor of the view is missing from the store
 */
export function languageParams(store: ParamStore): LanguageParams {
  const cfg = store.config;
  if (cfg.family !== "language") throw new TypeError("languageParams: not a language model");
  checkLanguageConfig(cfg);
  const linear = (prefix: string): LinearParams => ({
    weight: store.get(`${prefix}.weight`),
    bias: store.optional(`${prefix}.bias`, cfg.bias),
  });
  const blocks: BlockParams[] = [];
  for (let i = 0; i < cfg.n_layer; i++) {
    const p = `transformer.h.${i}`;
    const cAttn = linear(`${p}.attn.c_attn`);
    const cProj = linear(`${p}.attn.c_proj`);
    const projections = {
      inWeight: cAttn.weight,
      inBias: cAttn.bias,
      outWeight: cProj.weight,
      outBias: cProj.bias,
    };
    const attn: AttentionParams = cfg.attention === "tssa"
      ? {
        kind: "causal-tssa",
        ...projections,
        temp: store.get(`${p}.attn.temp`),
        denomBias: store.get(`${p}.attn.denom_bias`),
      }
      : { kind: "causal-softmax", ...projections };
    blocks.push({
      norm1: linear(`${p}.ln_1`),
      attn,
      gamma1: store.get(`${p}.gamma1`),
      norm2: linear(`${p}.ln_2`),
      mlp: { fc1: linear(`${p}.mlp.c_fc`), fc2: linear(`${p}.mlp.c_proj`) },
      gamma2: store.get(`${p}.gamma2`),
    });
  }
  return {
    config: cfg,
    wte: store.get("transformer.wte.weight"),
    wpe: store.get("transformer.wpe.weight"),
    blocks,
    lnF: linear("transformer.ln_f"),
  };
}
