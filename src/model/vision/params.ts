/**
 * Typed views of a vision model's {@linkcode ParamStore} (ToST `tost_cab_*`
 * or its ViT twin): the tensors of each layer by role, under their
 * `state_dict` names. A view holds the store's own tensors, so the same
 * function gives the parameters and (from the gradient store, which has the
 * trained names) the gradients.
 *
 * | view field               | state_dict                                        |
 * | ------------------------ | ------------------------------------------------- |
 * | `stem[s].conv` `[Cout, Cin, 3, 3]` | `patch_embed.proj.{2s}.0.weight`        |
 * | `stem[s].bn`             | `patch_embed.proj.{2s}.1.{weight, bias, running_mean, running_var}` |
 * | `pos.weight` `[D, F]`    | `pos_embeder.token_projection.weight` (`[D, F, 1, 1]`) |
 * | `pos.bias`               | `pos_embeder.token_projection.bias`               |
 * | `blocks[i]`              | `blocks.i.{norm1, attn, gamma1, norm2, mlp.fc1, mlp.fc2, gamma2}` |
 * | `clsToken` `[1, D]`      | `cls_token` (`[1, 1, D]`)                         |
 * | `clsBlocks[i]`           | `cls_attn_blocks.i.*`                             |
 * | `norm`, `head`           | `norm`, `head`                                    |
 *
 * @module
 */

import type { Tensor } from "../../gpu/runtime.ts";
import type { VisionConfig } from "../config.ts";
import { stemWidths } from "../names.ts";
import type { ParamStore } from "../params.ts";
import type { AttentionParams } from "../../nn/attention.ts";
import type { BlockParams, NormParams } from "../../nn/block.ts";
import type { LinearParams, MlpParams } from "../../nn/mlp.ts";

/** A stem stage's convolution (no bias) and BatchNorm. */
export interface StemStageParams {
  /** `[Cout, Cin, 3, 3]` */
  conv: Tensor;
  bn: {
    weight: Tensor;
    bias: Tensor;
    /** Running statistics (buffers; absent from a gradient store). */
    runningMean: Tensor | null;
    runningVar: Tensor | null;
  };
}

/** One class-attention block (`cls_attn_blocks.i`). */
export interface ClassBlockParams {
  norm1: NormParams;
  /** `attn.qkv` `[3D, D]` */
  qkv: LinearParams;
  /** `attn.proj` `[D, D]` */
  proj: LinearParams;
  gamma1: Tensor;
  norm2: NormParams;
  mlp: MlpParams;
  gamma2: Tensor;
}

/** A vision model's tensors by role. */
export interface VisionParams {
  config: VisionConfig;
  stem: StemStageParams[];
  /** The Fourier encoding's 1×1 convolution, as a linear layer `[D, F]`. */
  pos: LinearParams;
  blocks: BlockParams[];
  /** `[1, D]` */
  clsToken: Tensor;
  clsBlocks: ClassBlockParams[];
  norm: NormParams;
  head: LinearParams;
}

/**
 * Check a vision config's sizes.
 *
 * @throws {RangeError} for sizes the model cannot have
 */
export function checkVisionConfig(cfg: VisionConfig): void {
  const D = cfg.embed_dim;
  const ints = {
    embed_dim: D,
    num_heads: cfg.num_heads,
    depth: cfg.depth,
    num_classes: cfg.num_classes,
  };
  for (const [k, v] of Object.entries(ints)) {
    if (!Number.isInteger(v) || v < (k === "depth" ? 0 : 1)) {
      throw new RangeError(`Vision config: ${k} must be a positive integer, got ${v}`);
    }
  }
  if (D % cfg.num_heads !== 0) {
    throw new RangeError(
      `Vision config: embed_dim ${D} is not a multiple of num_heads ${cfg.num_heads}`,
    );
  }
  if (cfg.attention !== "tssa" && cfg.attention !== "softmax") {
    throw new RangeError(
      `Vision config: unsupported attention "${cfg.attention}" (tssa or softmax)`,
    );
  }
  stemWidths(cfg.patch_size, D);
}

/**
 * The view of a vision model's store (parameters or gradients).
 *
 * @throws {TypeError} when the store holds a language model
 * @throws {RangeError} when a tensor of the view is missing from the store
 */
export function visionParams(store: ParamStore): VisionParams {
  const cfg = store.config;
  if (cfg.family !== "vision") throw new TypeError("visionParams: not a vision model");
  checkVisionConfig(cfg);
  const D = cfg.embed_dim;
  const F = 2 * cfg.pos_hidden_dim;
  const linear = (prefix: string, bias = true): LinearParams => ({
    weight: store.get(`${prefix}.weight`),
    bias: store.optional(`${prefix}.bias`, bias),
  });
  const norm = (prefix: string): NormParams => linear(prefix);
  const mlp = (prefix: string): MlpParams => ({
    fc1: linear(`${prefix}.fc1`),
    fc2: linear(`${prefix}.fc2`),
  });
  const stem = stemWidths(cfg.patch_size, D).map((_, s): StemStageParams => {
    const p = `patch_embed.proj.${2 * s}`;
    const running = (n: string) => store.has(`${p}.1.${n}`) ? store.get(`${p}.1.${n}`) : null;
    return {
      conv: store.get(`${p}.0.weight`),
      bn: {
        weight: store.get(`${p}.1.weight`),
        bias: store.get(`${p}.1.bias`),
        runningMean: running("running_mean"),
        runningVar: running("running_var"),
      },
    };
  });
  const blocks: BlockParams[] = [];
  for (let i = 0; i < cfg.depth; i++) {
    const p = `blocks.${i}`;
    const qkv = linear(`${p}.attn.qkv`, cfg.qkv_bias);
    const out = linear(cfg.attention === "tssa" ? `${p}.attn.to_out.0` : `${p}.attn.proj`);
    const projections = {
      inWeight: qkv.weight,
      inBias: qkv.bias,
      outWeight: out.weight,
      outBias: out.bias,
    };
    const attn: AttentionParams = cfg.attention === "tssa"
      ? { kind: "tssa", ...projections, temp: store.get(`${p}.attn.temp`) }
      : { kind: "softmax", ...projections };
    blocks.push({
      norm1: norm(`${p}.norm1`),
      attn,
      gamma1: store.get(`${p}.gamma1`),
      norm2: norm(`${p}.norm2`),
      mlp: mlp(`${p}.mlp`),
      gamma2: store.get(`${p}.gamma2`),
    });
  }
  const clsBlocks: ClassBlockParams[] = [];
  for (let i = 0; i < cfg.cls_attn_layers; i++) {
    const p = `cls_attn_blocks.${i}`;
    clsBlocks.push({
      norm1: norm(`${p}.norm1`),
      qkv: linear(`${p}.attn.qkv`, cfg.qkv_bias),
      proj: linear(`${p}.attn.proj`),
      gamma1: store.get(`${p}.gamma1`),
      norm2: norm(`${p}.norm2`),
      mlp: mlp(`${p}.mlp`),
      gamma2: store.get(`${p}.gamma2`),
    });
  }
  const pos = linear("pos_embeder.token_projection");
  return {
    config: cfg,
    stem,
    pos: { weight: pos.weight.view([D, F]), bias: pos.bias },
    blocks,
    clsToken: store.get("cls_token").view([1, D]),
    clsBlocks,
    norm: norm("norm"),
    head: linear("head"),
  };
}
