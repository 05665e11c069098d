/**
 * The vision models (ToST `tost_cab_*`, ViT `vit_cab_*`) in plain float64
 * TypeScript, exactly as the reference PyTorch code computes them in eval mode:
 *
 * 1. stem (`patch_embed`): 3 (patch 8) or 4 (patch 16) stages of conv3x3
 *    stride 2 padding 1 without bias + BatchNorm, GELU between stages;
 *    channel widths `D/4, D/2, D` or `D/8, D/4, D/2, D`; the map is
 *    flattened to tokens `n = i·Wp + j`;
 * 2. plus the Fourier positional encoding (`pos_embeder`);
 * 3. `depth` blocks `x += γ1·attn(LN1(x)); x += γ2·MLP(LN2(x))`, attn = TSSA
 *    or multi-head softmax attention;
 * 4. the class token is prepended, then `cls_attn_layers` class-attention blocks;
 * 5. the final LayerNorm of the class token and the linear head.
 *
 * The class-attention block follows the reference (CaiT/XCiT) literally,
 * including its quirks: the attention module returns its *input* for the
 * patch tokens, so they get `x + γ1·LN1(x)`; with `tokens_norm` every token
 * is then replaced by `LN2(x)`; the MLP runs on the class token only; and the
 * final residual adds the normalised tokens to themselves, doubling the patch
 * tokens.
 *
 * Shapes: B images, D = embed_dim, NH heads of HS = D/NH, N = Hp·Wp tokens.
 *
 * @module
 */

import type { VisionConfig } from "../config.ts";
import { fourierEncoding } from "../fourier.ts";
import { mlpHidden, stemWidths } from "../names.ts";
import { addScaledInPlace, linear, param } from "./layers.ts";
import type { Capture, Weights } from "./layers.ts";
import { conv2dReference } from "../../ops/conv2d_reference.ts";
import type { FeatureMap } from "../../ops/conv2d_reference.ts";
import { BATCH_NORM_EPS, batchNormReference } from "../../ops/batch_norm_reference.ts";
import { geluReference } from "../../ops/gelu_reference.ts";
import { layerNormReference } from "../../ops/layer_norm_reference.ts";
import {
  attentionReference,
  classAttentionWeightsReference,
} from "../../ops/attention_reference.ts";
import { tssaAttentionReference } from "../../nn/tssa_attention_reference.ts";
import { softmaxSelfAttentionReference } from "../../nn/softmax_self_attention_reference.ts";

/** Options of {@linkcode visionForwardReference}. */
export interface VisionForwardOptions {
  /**
   * Receives `patch_embed`, `blocks.i` and `cls_attn_blocks.i` outputs, named
   * as the fixtures, and TSSA's head memberships `blocks.i.attn.pi` `[B, N, NH]`
   * and the class token's attention weights `cls_attn_blocks.i.attn.weights`
   * `[B, NH, N + 1]`.
   */
  capture?: Capture;
  /**
   * BatchNorm statistics: `"eval"` (running statistics, default) or `"batch"`
   * (PyTorch's training-mode forward; dropout and drop-path are 0 in every config).
   */
  batchNorm?: "eval" | "batch";
}

function checkConfig(cfg: VisionConfig): void {
  const D = cfg.embed_dim;
  if (!Number.isInteger(D) || D <= 0 || D % cfg.num_heads !== 0) {
    throw new RangeError(
      `embed_dim ${D} must be a positive multiple of num_heads ${cfg.num_heads}`,
    );
  }
  stemWidths(cfg.patch_size, D);
  if (!(Number.isInteger(cfg.num_classes) && cfg.num_classes > 0)) {
    throw new RangeError(`num_classes must be a positive integer, got ${cfg.num_classes}`);
  }
}

/** The convolutional stem: images `B × in_chans × H × W` → map `B × D × Hp × Wp`. */
function stem(
  cfg: VisionConfig,
  w: Weights,
  x: FeatureMap,
  mode: "eval" | "batch",
): FeatureMap {
  const widths = stemWidths(cfg.patch_size, cfg.embed_dim);
  let cin = cfg.in_chans;
  widths.forEach((cout, s) => {
    const pre = `patch_embed.proj.${2 * s}`;
    const kernel = param(w, `${pre}.0.weight`, [cout, cin, 3, 3]).data;
    x = conv2dReference(x, kernel, cout, { kernel: 3, stride: 2, padding: 1 });
    const vec = (n: string) => param(w, `${pre}.1.${n}`, [cout]).data;
    x = batchNormReference(x, {
      weight: vec("weight"),
      bias: vec("bias"),
      runningMean: vec("running_mean"),
      runningVar: vec("running_var"),
      eps: BATCH_NORM_EPS, // the stem's, PyTorch's default
    }, mode);
    if (s < widths.length - 1) x = { ...x, data: geluReference(x.data) };
    cin = cout;
  });
  return x;
}

/** `B × D × Hp × Wp` → tokens `B × N × D`. */
function mapToTokens(m: FeatureMap): Float64Array {
  const { B, C, H, W } = m;
  const N = H * W;
  const t = new Float64Array(B * N * C);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let n = 0; n < N; n++) t[(b * N + n) * C + c] = m.data[(b * C + c) * N + n];
    }
  }
  return t;
}

/** An attention module of one image: its size and where its weights are. */
export interface AttentionLayer {
  /** Tokens (N). */
  tokens: number;
  /** Model width (D). */
  dim: number;
  /** Heads (NH); D must be a multiple. */
  heads: number;
  weights: Weights;
  /** The module's `state_dict` prefix, e.g. `blocks.0.attn`. */
  prefix: string;
  /** Whether `qkv` has a bias. */
  qkvBias: boolean;
}

/** A module's `state_dict` projections as host arrays. */
function projections(layer: AttentionLayer, inName: string, outName: string, inFeatures: number) {
  const { dim: D, weights: w, prefix, qkvBias } = layer;
  return {
    inWeight: param(w, `${prefix}.${inName}.weight`, [inFeatures, D]).data,
    inBias: qkvBias ? param(w, `${prefix}.${inName}.bias`, [inFeatures]).data : null,
    outWeight: param(w, `${prefix}.${outName}.weight`, [D, D]).data,
    outBias: param(w, `${prefix}.${outName}.bias`, [D]).data,
  };
}

/**
 * Token Statistics Self-Attention (`AttentionTSSA`) of one image's tokens
 * `N × D` (already normalised), returning `N × D` after `to_out`: the
 * module's reference (`nn/tssa_attention_reference.ts`) on the weights of
 * `prefix`. `onPi` receives the head memberships Π `N × NH`.
 *
 * @example
 * ```ts ignore
 * const y = attentionTssa(ln1x, {
 *   tokens: N, dim: D, heads: NH, weights, prefix: "blocks.0.attn", qkvBias: true,
 * });
 * ```
 */
export function attentionTssa(
  x: Float64Array,
  layer: AttentionLayer,
  onPi?: (pi: Float64Array) => void,
): Float64Array {
  const { tokens: N, dim: D, heads: NH, weights: w, prefix } = layer;
  const params = {
    ...projections(layer, "qkv", "to_out.0", D),
    temp: param(w, `${prefix}.temp`, [NH, 1]).data,
  };
  const r = tssaAttentionReference(x, params, dims(N, D, NH));
  onPi?.(r.saves.op.pi); // [N, NH]
  return r.out;
}

/**
 * Multi-head softmax attention (timm-style `Attention`, the ViT twin) of one
 * image's tokens `N × D`: `qkv [3D, D]` laid out `(3, NH, HS)`, scale `HS^-½`,
 * then `proj` — the module's reference (`nn/softmax_self_attention_reference.ts`).
 *
 * @example
 * ```ts ignore
 * const y = attentionSoftmax(ln1x, {
 *   tokens: N, dim: D, heads: NH, weights, prefix: "blocks.0.attn", qkvBias: true,
 * });
 * ```
 */
export function attentionSoftmax(x: Float64Array, layer: AttentionLayer): Float64Array {
  const { tokens: N, dim: D, heads: NH } = layer;
  const params = projections(layer, "qkv", "proj", 3 * D);
  return softmaxSelfAttentionReference(x, params, dims(N, D, NH), { causal: false }).out;
}

function dims(N: number, D: number, NH: number) {
  return { batches: 1, tokens: N, heads: NH, headDim: D / NH };
}

/** timm `Mlp`: fc1 → GELU → fc2 over `rows × D`. */
function mlp(x: Float64Array, rows: number, D: number, hidden: number, w: Weights, p: string) {
  const h = linear(
    x,
    rows,
    param(w, `${p}.fc1.weight`, [hidden, D]).data,
    D,
    hidden,
    param(w, `${p}.fc1.bias`, [hidden]).data,
  );
  return linear(
    geluReference(h),
    rows,
    param(w, `${p}.fc2.weight`, [D, hidden]).data,
    hidden,
    D,
    param(w, `${p}.fc2.bias`, [D]).data,
  );
}

function norm(cfg: VisionConfig, w: Weights, p: string, x: Float64Array, rows: number) {
  const D = cfg.embed_dim;
  return layerNormReference(
    x,
    param(w, `${p}.weight`, [D]).data,
    param(w, `${p}.bias`, [D]).data,
    rows,
    D,
    cfg.norm_eps,
  );
}

/** One block over one image's tokens `N × D`, in place; `onPi` receives TSSA's Π `N × NH`. */
function block(
  cfg: VisionConfig,
  w: Weights,
  i: number,
  x: Float64Array,
  N: number,
  onPi?: (pi: Float64Array) => void,
): void {
  const D = cfg.embed_dim;
  const p = `blocks.${i}`;
  const layer = {
    tokens: N,
    dim: D,
    heads: cfg.num_heads,
    weights: w,
    prefix: `${p}.attn`,
    qkvBias: cfg.qkv_bias,
  };
  const h = norm(cfg, w, `${p}.norm1`, x, N);
  const a = cfg.attention === "tssa" ? attentionTssa(h, layer, onPi) : attentionSoftmax(h, layer);
  addScaledInPlace(x, a, param(w, `${p}.gamma1`, [D]).data);
  const m = mlp(norm(cfg, w, `${p}.norm2`, x, N), N, D, mlpHidden(D, cfg.mlp_ratio), w, `${p}.mlp`);
  addScaledInPlace(x, m, param(w, `${p}.gamma2`, [D]).data);
}

/**
 * `ClassAttention` of one image's `M = N + 1` tokens (class token first):
 * returns `M × D` holding the attended, projected class token in row 0 and
 * the input rows 1… unchanged, as the reference module does. `onWeights`
 * receives the class token's attention weights `NH × M`.
 */
function classAttention(
  cfg: VisionConfig,
  w: Weights,
  p: string,
  x: Float64Array,
  M: number,
  onWeights?: (weights: Float64Array) => void,
): Float64Array {
  const D = cfg.embed_dim;
  const NH = cfg.num_heads;
  const HS = D / NH;
  const qkvW = param(w, `${p}.qkv.weight`, [3 * D, D]).data;
  const qkvB = cfg.qkv_bias ? param(w, `${p}.qkv.bias`, [3 * D]).data : undefined;
  const qkv = linear(x, M, qkvW, D, 3 * D, qkvB); // [m, (s, h, k)]
  // Only the class token's query; softmax over all M tokens (class token included).
  const cls = attentionReference(qkv, 1, M, NH, HS, { classToken: true });
  onWeights?.(classAttentionWeightsReference(qkv, 1, M, NH, HS));
  const out = x.slice();
  out.set(
    linear(
      cls,
      1,
      param(w, `${p}.proj.weight`, [D, D]).data,
      D,
      D,
      param(w, `${p}.proj.bias`, [D]).data,
    ),
    0,
  );
  return out;
}

/**
 * One class-attention block over one image's `M × D` tokens; returns the new
 * tokens. `onWeights` receives the class token's attention weights `NH × M`.
 */
function classAttentionBlock(
  cfg: VisionConfig,
  w: Weights,
  i: number,
  x: Float64Array,
  M: number,
  onWeights?: (weights: Float64Array) => void,
): Float64Array {
  const D = cfg.embed_dim;
  const p = `cls_attn_blocks.${i}`;
  const n1 = norm(cfg, w, `${p}.norm1`, x, M);
  const a = classAttention(cfg, w, `${p}.attn`, n1, M, onWeights);
  x = addScaledInPlace(x.slice(), a, param(w, `${p}.gamma1`, [D]).data);
  if (cfg.tokens_norm) {
    x = norm(cfg, w, `${p}.norm2`, x, M);
  } else {
    x.set(norm(cfg, w, `${p}.norm2`, x.subarray(0, D), 1), 0);
  }
  // x_res + cat([γ2·MLP(x[0]), x[1:]]): the class token gets its MLP residual,
  // the patch tokens are added to themselves.
  const m = mlp(x.subarray(0, D), 1, D, mlpHidden(D, cfg.mlp_ratio), w, `${p}.mlp`);
  const gamma2 = param(w, `${p}.gamma2`, [D]).data;
  const out = new Float64Array(M * D);
  for (let c = 0; c < D; c++) out[c] = x[c] + gamma2[c] * m[c];
  for (let r = D; r < M * D; r++) out[r] = 2 * x[r];
  return out;
}

/**
 * Eval-mode forward of a vision model on `B` images `B × in_chans × H × W`
 * (NCHW, float64), returning the logits `B × num_classes`. Any `H, W` the
 * stem accepts work (the token grid is `⌈H/2⌉…` per stage, `H/patch` when
 * divisible); the reference itself imposes no more.
 *
 * @throws {RangeError} or {TypeError} for a bad config, image size or a missing or misshapen weight
 * @example
 * ```ts ignore
 * const logits = visionForwardReference(cfg, weights, images, 2, 32, 32, {
 *   capture: (name, shape) => console.log(name, shape),
 * });
 * ```
 */
export function visionForwardReference(
  cfg: VisionConfig,
  w: Weights,
  images: Float64Array,
  B: number,
  H: number,
  W: number,
  opts: VisionForwardOptions = {},
): Float64Array {
  checkConfig(cfg);
  if (images.length !== B * cfg.in_chans * H * W) {
    throw new TypeError(
      `Images have ${images.length} values, expected ${B}×${cfg.in_chans}×${H}×${W}`,
    );
  }
  const D = cfg.embed_dim;
  const capture = opts.capture;
  const map = stem(cfg, w, { data: images, B, C: cfg.in_chans, H, W }, opts.batchNorm ?? "eval");
  const { H: Hp, W: Wp } = map;
  const N = Hp * Wp;
  const x = mapToTokens(map); // B × N × D
  capture?.("patch_embed", [B, N, D], x.slice());

  const F = 2 * cfg.pos_hidden_dim;
  const pe = fourierEncoding(
    Hp,
    Wp,
    param(w, "pos_embeder.token_projection.weight", [D, F, 1, 1]).data,
    param(w, "pos_embeder.token_projection.bias", [D]).data,
    { hidden: cfg.pos_hidden_dim },
  );
  for (let b = 0; b < B; b++) for (let i = 0; i < N * D; i++) x[b * N * D + i] += pe[i];

  const NH = cfg.num_heads;
  for (let i = 0; i < cfg.depth; i++) {
    const pi = capture && cfg.attention === "tssa" ? new Float64Array(B * N * NH) : null;
    for (let b = 0; b < B; b++) {
      const onPi = pi ? (p: Float64Array) => pi.set(p, b * N * NH) : undefined;
      block(cfg, w, i, x.subarray(b * N * D, (b + 1) * N * D), N, onPi);
    }
    capture?.(`blocks.${i}`, [B, N, D], x.slice());
    if (pi) capture?.(`blocks.${i}.attn.pi`, [B, N, NH], pi);
  }

  const M = N + 1;
  const clsToken = param(w, "cls_token", [1, 1, D]).data;
  const tokens: Float64Array[] = [];
  for (let b = 0; b < B; b++) {
    const t = new Float64Array(M * D);
    t.set(clsToken, 0);
    t.set(x.subarray(b * N * D, (b + 1) * N * D), D);
    tokens.push(t);
  }
  for (let i = 0; i < cfg.cls_attn_layers; i++) {
    const weights = capture ? new Float64Array(B * NH * M) : null;
    for (let b = 0; b < B; b++) {
      const onWeights = weights ? (p: Float64Array) => weights.set(p, b * NH * M) : undefined;
      tokens[b] = classAttentionBlock(cfg, w, i, tokens[b], M, onWeights);
    }
    if (weights) capture?.(`cls_attn_blocks.${i}.attn.weights`, [B, NH, M], weights);
    if (capture) {
      const all = new Float64Array(B * M * D);
      tokens.forEach((t, b) => all.set(t, b * M * D));
      capture(`cls_attn_blocks.${i}`, [B, M, D], all);
    }
  }

  const K = cfg.num_classes;
  const headW = param(w, "head.weight", [K, D]).data;
  const headB = param(w, "head.bias", [K]).data;
  const logits = new Float64Array(B * K);
  for (let b = 0; b < B; b++) {
    const cls = norm(cfg, w, "norm", tokens[b].subarray(0, D), 1);
    logits.set(linear(cls, 1, headW, D, K, headB), b * K);
  }
  return logits;
}
