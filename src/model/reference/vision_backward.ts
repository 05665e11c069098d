/**
 * Training step of the vision models (ToST `tost_cab_*`, ViT `vit_cab_*`) in
 * plain float64 TypeScript: the forward of {@linkcode visionForwardReference}
 * with BatchNorm in **training mode**, the mean cross-entropy, and the
 * gradient of that loss with respect to every parameter, named as the
 * PyTorch `state_dict`. It is the reference the GPU backward is checked
 * against, and is itself checked against the PyTorch fixture
 * (`train.grad.*`) and against finite differences.
 *
 * BatchNorm runs in training mode (PyTorch's `BatchNorm2d.train()`, see
 * `src/ops/batch_norm_reference.ts`): batch statistics, running statistics
 * updated with momentum 0.1, `num_batches_tracked` grown by one; the updates
 * are returned, never applied to the weights given. Each layer's forward and
 * backward is the float64 reference beside its op (`src/ops/*_reference.ts`
 * and the linear and TSSA modules); this module composes them.
 *
 * Gradient convention (as in llm.c and the GPU ops): parameter gradients
 * **accumulate** (`+=`) into arrays the caller provides; activation gradients
 * are **assigned** (returned fresh).
 *
 * Shapes: B images, D = embed_dim, NH heads of HS = D/NH, N tokens, M = N + 1
 * with the class token, K classes.
 *
 * @module
 */

import type { VisionConfig } from "../config.ts";
import { fourierFeatures } from "../fourier.ts";
import { mlpHidden, stemWidths } from "../names.ts";
import { param } from "./layers.ts";
import type { Weights } from "./layers.ts";
import { linearBackwardReference, linearForwardReference } from "../../ops/linear_reference.ts";
import { conv2dBackwardReference, conv2dReference } from "../../ops/conv2d_reference.ts";
import type { FeatureMap } from "../../ops/conv2d_reference.ts";
import {
  batchNormTrainBackwardReference,
  batchNormTrainForwardReference,
} from "../../ops/batch_norm_reference.ts";
import { layerNormBackwardReference, layerNormReference } from "../../ops/layer_norm_reference.ts";
import { geluBackwardReference, geluReference } from "../../ops/gelu_reference.ts";
import {
  attentionReference,
  softmaxAttentionBackwardReference,
} from "../../ops/attention_reference.ts";
import { crossEntropyBackwardReference } from "../../ops/cross_entropy_reference.ts";
import {
  tssaAttentionBackwardReference,
  tssaAttentionReference,
} from "../../nn/tssa_attention_reference.ts";
import type { TssaAttentionParamsReference } from "../../nn/tssa_attention_reference.ts";
import {
  softmaxSelfAttentionBackwardReference,
  softmaxSelfAttentionReference,
} from "../../nn/softmax_self_attention_reference.ts";

/** Class attention: only the class token (token 0) queries. */
const CLASS_TOKEN = { classToken: true };

/** Result of {@linkcode visionTrainStepReference}. */
export interface VisionTrainStepReference {
  /** Mean cross-entropy over the batch. */
  loss: number;
  /** Logits `B × K` of the training-mode forward. */
  logits: Float64Array;
  /** ∂loss/∂parameter for every trainable parameter, by `state_dict` name. */
  grads: Map<string, Float64Array>;
  /**
   * The BatchNorm buffers after the step (`…running_mean`, `…running_var`,
   * `…num_batches_tracked`), by `state_dict` name.
   */
  buffers: Map<string, Float64Array>;
}

/** Gradient accumulators, created on first use with the parameter's size. */
class Grads {
  readonly map = new Map<string, Float64Array>();
  constructor(private readonly w: Weights) {}
  get(name: string): Float64Array {
    let g = this.map.get(name);
    if (!g) {
      const p = this.w.get(name);
      if (!p) throw new RangeError(`Missing parameter "${name}"`);
      g = new Float64Array(p.data.length);
      this.map.set(name, g);
    }
    return g;
  }
}

interface LinearLayer {
  weight: Float64Array;
  bias: Float64Array | null;
  inF: number;
  outF: number;
  prefix: string;
}

function linearLayer(w: Weights, prefix: string, inF: number, outF: number, bias: boolean) {
  return {
    weight: param(w, `${prefix}.weight`, [outF, inF]).data,
    bias: bias ? param(w, `${prefix}.bias`, [outF]).data : null,
    inF,
    outF,
    prefix,
  };
}

function linFwd(l: LinearLayer, x: Float64Array, rows: number): Float64Array {
  return linearForwardReference(x, l.weight, l.bias, {
    rows,
    inFeatures: l.inF,
    outFeatures: l.outF,
  });
}

function linBwd(l: LinearLayer, g: Grads, dy: Float64Array, x: Float64Array, rows: number) {
  return linearBackwardReference({
    dy,
    x,
    weight: l.weight,
    dWeight: g.get(`${l.prefix}.weight`),
    dBias: l.bias ? g.get(`${l.prefix}.bias`) : null,
  }, { rows, inFeatures: l.inF, outFeatures: l.outF });
}

/** LayerNorm forward (`rows × D`) and a closure for its backward. */
function lnFwd(cfg: VisionConfig, w: Weights, g: Grads, p: string, x: Float64Array) {
  const D = cfg.embed_dim;
  const weight = param(w, `${p}.weight`, [D]).data;
  const bias = param(w, `${p}.bias`, [D]).data;
  const y = layerNormReference(x, weight, bias, x.length / D, D, cfg.norm_eps);
  const back = (dy: Float64Array) =>
    layerNormBackwardReference(
      {
        dy,
        x,
        weight,
        dWeight: g.get(`${p}.weight`),
        dBias: g.get(`${p}.bias`),
      },
      D,
      cfg.norm_eps,
    );
  return { y, back };
}

/** fc1 → GELU → fc2 over `rows × D`, with a closure for the backward. */
function mlpFwd(cfg: VisionConfig, w: Weights, g: Grads, p: string, x: Float64Array, rows: number) {
  const D = cfg.embed_dim;
  const hidden = mlpHidden(D, cfg.mlp_ratio);
  const fc1 = linearLayer(w, `${p}.fc1`, D, hidden, true);
  const fc2 = linearLayer(w, `${p}.fc2`, hidden, D, true);
  const pre = linFwd(fc1, x, rows);
  const act = geluReference(pre);
  const y = linFwd(fc2, act, rows);
  const back = (dy: Float64Array) => {
    const dAct = linBwd(fc2, g, dy, act, rows);
    return linBwd(fc1, g, geluBackwardReference(dAct, pre), x, rows);
  };
  return { y, back };
}

/** An attention module of a block over all images, with a closure for its backward. */
function blockAttentionFwd(
  cfg: VisionConfig,
  w: Weights,
  g: Grads,
  p: string,
  x: Float64Array,
  B: number,
  N: number,
) {
  const D = cfg.embed_dim;
  const NH = cfg.num_heads;
  const dims = { batches: B, tokens: N, heads: NH, headDim: D / NH };
  if (cfg.attention === "tssa") {
    const params: TssaAttentionParamsReference = {
      inWeight: param(w, `${p}.qkv.weight`, [D, D]).data,
      inBias: cfg.qkv_bias ? param(w, `${p}.qkv.bias`, [D]).data : null,
      temp: param(w, `${p}.temp`, [NH, 1]).data,
      outWeight: param(w, `${p}.to_out.0.weight`, [D, D]).data,
      outBias: param(w, `${p}.to_out.0.bias`, [D]).data,
    };
    const { out, saves } = tssaAttentionReference(x, params, dims);
    const back = (dy: Float64Array) =>
      tssaAttentionBackwardReference({
        dy,
        x,
        params,
        saves,
        grads: {
          inWeight: g.get(`${p}.qkv.weight`),
          inBias: cfg.qkv_bias ? g.get(`${p}.qkv.bias`) : null,
          temp: g.get(`${p}.temp`),
          outWeight: g.get(`${p}.to_out.0.weight`),
          outBias: g.get(`${p}.to_out.0.bias`),
        },
      }, dims);
    return { y: out, back };
  }
  const params = {
    inWeight: param(w, `${p}.qkv.weight`, [3 * D, D]).data,
    inBias: cfg.qkv_bias ? param(w, `${p}.qkv.bias`, [3 * D]).data : null,
    outWeight: param(w, `${p}.proj.weight`, [D, D]).data,
    outBias: param(w, `${p}.proj.bias`, [D]).data,
  };
  const options = { causal: false };
  const { out, saves } = softmaxSelfAttentionReference(x, params, dims, options);
  const back = (dy: Float64Array) =>
    softmaxSelfAttentionBackwardReference(
      {
        dy,
        x,
        params,
        saves,
        grads: {
          inWeight: g.get(`${p}.qkv.weight`),
          inBias: cfg.qkv_bias ? g.get(`${p}.qkv.bias`) : null,
          outWeight: g.get(`${p}.proj.weight`),
          outBias: g.get(`${p}.proj.bias`),
        },
      },
      dims,
      options,
    );
  return { y: out, back };
}

/** `x + γ⊙y` over rows of D; the backward adds ∂γ and returns ∂y (∂x is the input). */
function scaledResidual(
  w: Weights,
  g: Grads,
  name: string,
  x: Float64Array,
  y: Float64Array,
  D: number,
) {
  const gamma = param(w, name, [D]).data;
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] + gamma[i % D] * y[i];
  const back = (dOut: Float64Array) => {
    const dGamma = g.get(name);
    const dy = new Float64Array(y.length);
    for (let i = 0; i < y.length; i++) {
      dGamma[i % D] += dOut[i] * y[i];
      dy[i] = dOut[i] * gamma[i % D];
    }
    return dy;
  };
  return { out, back };
}

function addInPlace(a: Float64Array, b: Float64Array): Float64Array {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
  return a;
}

/** One ToST/ViT block over all images `B·N × D`, with a closure for the backward. */
function blockFwd(
  cfg: VisionConfig,
  w: Weights,
  g: Grads,
  i: number,
  x: Float64Array,
  B: number,
  N: number,
) {
  const p = `blocks.${i}`;
  const n1 = lnFwd(cfg, w, g, `${p}.norm1`, x);
  const a = blockAttentionFwd(cfg, w, g, `${p}.attn`, n1.y, B, N);
  const r1 = scaledResidual(w, g, `${p}.gamma1`, x, a.y, cfg.embed_dim);
  const n2 = lnFwd(cfg, w, g, `${p}.norm2`, r1.out);
  const m = mlpFwd(cfg, w, g, `${p}.mlp`, n2.y, B * N);
  const r2 = scaledResidual(w, g, `${p}.gamma2`, r1.out, m.y, cfg.embed_dim);
  const back = (dOut: Float64Array) => {
    const dx1 = addInPlace(n2.back(m.back(r2.back(dOut))), dOut);
    return addInPlace(n1.back(a.back(r1.back(dx1))), dx1);
  };
  return { out: r2.out, back };
}

/**
 * One class-attention block over all images `B·M × D` (class token first in
 * each image), following the reference literally: the attention module
 * returns its input for the patch tokens, `tokens_norm` normalises every
 * token, the MLP sees the class token only, and the patch tokens are
 * doubled by the final residual.
 */
function classBlockFwd(
  cfg: VisionConfig,
  w: Weights,
  g: Grads,
  i: number,
  x: Float64Array,
  B: number,
  M: number,
) {
  const D = cfg.embed_dim;
  const NH = cfg.num_heads;
  const p = `cls_attn_blocks.${i}`;
  const n1 = lnFwd(cfg, w, g, `${p}.norm1`, x);
  const qkvL = linearLayer(w, `${p}.attn.qkv`, D, 3 * D, cfg.qkv_bias);
  const projL = linearLayer(w, `${p}.attn.proj`, D, D, true);
  const qkv = linFwd(qkvL, n1.y, B * M);
  const att = attentionReference(qkv, B, M, NH, D / NH, CLASS_TOKEN);
  const cls = linFwd(projL, att, B);
  const a = n1.y.slice(); // patch tokens pass through the attention module
  for (let b = 0; b < B; b++) a.set(cls.subarray(b * D, (b + 1) * D), b * M * D);
  const r1 = scaledResidual(w, g, `${p}.gamma1`, x, a, D);

  // Rows normalised by norm2: all (tokens_norm) or the class tokens only.
  const x2 = r1.out.slice();
  let n2back: (dy: Float64Array) => Float64Array;
  if (cfg.tokens_norm) {
    const n2 = lnFwd(cfg, w, g, `${p}.norm2`, r1.out);
    x2.set(n2.y);
    n2back = n2.back;
  } else {
    const rows = new Float64Array(B * D);
    for (let b = 0; b < B; b++) rows.set(r1.out.subarray(b * M * D, b * M * D + D), b * D);
    const n2 = lnFwd(cfg, w, g, `${p}.norm2`, rows);
    for (let b = 0; b < B; b++) x2.set(n2.y.subarray(b * D, (b + 1) * D), b * M * D);
    n2back = (dy) => {
      const dRows = new Float64Array(B * D);
      for (let b = 0; b < B; b++) dRows.set(dy.subarray(b * M * D, b * M * D + D), b * D);
      const dx = dy.slice();
      const back = n2.back(dRows);
      for (let b = 0; b < B; b++) dx.set(back.subarray(b * D, (b + 1) * D), b * M * D);
      return dx;
    };
  }
  const clsRows = new Float64Array(B * D);
  for (let b = 0; b < B; b++) clsRows.set(x2.subarray(b * M * D, b * M * D + D), b * D);
  const m = mlpFwd(cfg, w, g, `${p}.mlp`, clsRows, B);
  const gamma2 = param(w, `${p}.gamma2`, [D]).data;
  const out = new Float64Array(B * M * D);
  for (let r = 0; r < B * M * D; r++) out[r] = 2 * x2[r];
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < D; c++) {
      out[b * M * D + c] = x2[b * M * D + c] + gamma2[c] * m.y[b * D + c];
    }
  }

  const back = (dOut: Float64Array) => {
    const dx2 = new Float64Array(B * M * D);
    for (let r = 0; r < B * M * D; r++) dx2[r] = 2 * dOut[r];
    const dM = new Float64Array(B * D);
    const dGamma2 = g.get(`${p}.gamma2`);
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < D; c++) {
        const go = dOut[b * M * D + c];
        dx2[b * M * D + c] = go;
        dGamma2[c] += go * m.y[b * D + c];
        dM[b * D + c] = go * gamma2[c];
      }
    }
    const dCls = m.back(dM);
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < D; c++) dx2[b * M * D + c] += dCls[b * D + c];
    }
    const dx1 = n2back(dx2);
    const da = r1.back(dx1);
    // ∂ of the attention module: the patch rows pass through, the class row
    // goes back through proj, class attention and qkv (over every token).
    const dAttOut = new Float64Array(B * D);
    for (let b = 0; b < B; b++) dAttOut.set(da.subarray(b * M * D, b * M * D + D), b * D);
    const dAtt = linBwd(projL, g, dAttOut, att, B);
    const dqkv = softmaxAttentionBackwardReference(qkv, dAtt, B, M, NH, D / NH, CLASS_TOKEN);
    const dn1 = linBwd(qkvL, g, dqkv, n1.y, B * M);
    for (let b = 0; b < B; b++) {
      for (let r = D; r < M * D; r++) dn1[b * M * D + r] += da[b * M * D + r];
    }
    return addInPlace(n1.back(dn1), dx1);
  };
  return { out, back };
}

/**
 * One training step's forward and backward of a vision model in float64:
 * BatchNorm with batch statistics, mean cross-entropy against `labels`, and
 * the gradient of every trainable parameter (BatchNorm buffers excluded).
 *
 * @param images `B × in_chans × H × W` (NCHW)
 * @param labels `B` class indices in `[0, num_classes)`
 * @throws {TypeError} or {RangeError} for inconsistent sizes, a bad label or
 *   a missing or misshapen weight
 * @example
 * ```ts ignore
 * const { loss, grads, buffers } = visionTrainStepReference(cfg, w, images, { B: 2, H: 32, W: 32 }, [3, 7]);
 * grads.get("head.weight"); // Float64Array, 10·64 values
 * ```
 */
export function visionTrainStepReference(
  cfg: VisionConfig,
  w: Weights,
  images: Float64Array,
  size: { B: number; H: number; W: number },
  labels: ArrayLike<number | bigint>,
): VisionTrainStepReference {
  const { B, H, W } = size;
  const D = cfg.embed_dim;
  const K = cfg.num_classes;
  if (images.length !== B * cfg.in_chans * H * W) {
    throw new TypeError(
      `Images have ${images.length} values, expected ${B}×${cfg.in_chans}×${H}×${W}`,
    );
  }
  if (labels.length !== B) throw new TypeError(`${labels.length} labels for ${B} images`);
  const targets = Array.from(labels, (l, b) => {
    const t = Number(l);
    if (!Number.isInteger(t) || t < 0 || t >= K) {
      throw new RangeError(`Label ${t} of image ${b} is outside [0, ${K})`);
    }
    return t;
  });
  const g = new Grads(w);
  const buffers = new Map<string, Float64Array>();
  const backs: Array<(dy: Float64Array) => Float64Array> = [];

  // 1. stem: conv → BatchNorm (batch statistics) → GELU (not after the last stage).
  const widths = stemWidths(cfg.patch_size, D);
  let map: FeatureMap = { data: images, B, C: cfg.in_chans, H, W };
  const geometry = { kernel: 3, stride: 2, padding: 1 };
  widths.forEach((cout, s) => {
    const pre = `patch_embed.proj.${2 * s}`;
    const input = map;
    const kernel = param(w, `${pre}.0.weight`, [cout, input.C, 3, 3]).data;
    const conv = conv2dReference(input, kernel, cout, geometry);
    const vec = (n: string) => param(w, `${pre}.1.${n}`, [cout]).data;
    const bn = batchNormTrainForwardReference(conv, {
      weight: vec("weight"),
      bias: vec("bias"),
      runningMean: vec("running_mean"),
      runningVar: vec("running_var"),
    });
    buffers.set(`${pre}.1.running_mean`, bn.runningMean);
    buffers.set(`${pre}.1.running_var`, bn.runningVar);
    const tracked = w.get(`${pre}.1.num_batches_tracked`)?.data[0] ?? 0;
    buffers.set(`${pre}.1.num_batches_tracked`, new Float64Array([tracked + 1]));
    const last = s === widths.length - 1;
    const out = last ? bn.y : geluReference(bn.y);
    backs.push((dy) => {
      const dBn = last ? dy : geluBackwardReference(dy, bn.y);
      const dConv = batchNormTrainBackwardReference(dBn, bn, vec("weight"), {
        dWeight: g.get(`${pre}.1.weight`),
        dBias: g.get(`${pre}.1.bias`),
      }, conv);
      return conv2dBackwardReference(dConv, input, kernel, g.get(`${pre}.0.weight`), geometry);
    });
    map = { ...conv, data: out };
  });
  const { H: Hp, W: Wp } = map;
  const N = Hp * Wp;

  // 2. tokens `B × N × D` plus the Fourier encoding (a linear map of fixed features).
  const x = new Float64Array(B * N * D);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < D; c++) {
      for (let n = 0; n < N; n++) x[(b * N + n) * D + c] = map.data[(b * D + c) * N + n];
    }
  }
  const F = 2 * cfg.pos_hidden_dim;
  const feat = fourierFeatures(Hp, Wp, { hidden: cfg.pos_hidden_dim });
  const peW = param(w, "pos_embeder.token_projection.weight", [D, F, 1, 1]).data;
  const peB = param(w, "pos_embeder.token_projection.bias", [D]).data;
  const pe = linearForwardReference(feat, peW, peB, { rows: N, inFeatures: F, outFeatures: D });
  for (let b = 0; b < B; b++) for (let i = 0; i < N * D; i++) x[b * N * D + i] += pe[i];
  backs.push((dx) => {
    // ∂pe = Σ_b ∂x; the projection's gradient; the map gets ∂x back in NCHW.
    const dPe = new Float64Array(N * D);
    for (let b = 0; b < B; b++) for (let i = 0; i < N * D; i++) dPe[i] += dx[b * N * D + i];
    linearBackwardReference({
      dy: dPe,
      x: feat,
      weight: peW,
      dWeight: g.get("pos_embeder.token_projection.weight"),
      dBias: g.get("pos_embeder.token_projection.bias"),
    }, { rows: N, inFeatures: F, outFeatures: D });
    const dMap = new Float64Array(B * D * N);
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < D; c++) {
        for (let n = 0; n < N; n++) dMap[(b * D + c) * N + n] = dx[(b * N + n) * D + c];
      }
    }
    return dMap;
  });

  // 3. blocks.
  let tokens = x;
  for (let i = 0; i < cfg.depth; i++) {
    const blk = blockFwd(cfg, w, g, i, tokens, B, N);
    tokens = blk.out;
    backs.push(blk.back);
  }

  // 4. class token first, then the class-attention blocks.
  const M = N + 1;
  const clsToken = param(w, "cls_token", [1, 1, D]).data;
  let t = new Float64Array(B * M * D);
  for (let b = 0; b < B; b++) {
    t.set(clsToken, b * M * D);
    t.set(tokens.subarray(b * N * D, (b + 1) * N * D), b * M * D + D);
  }
  backs.push((dt) => {
    const dCls = g.get("cls_token");
    const dx = new Float64Array(B * N * D);
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < D; c++) dCls[c] += dt[b * M * D + c];
      dx.set(dt.subarray(b * M * D + D, (b + 1) * M * D), b * N * D);
    }
    return dx;
  });
  for (let i = 0; i < cfg.cls_attn_layers; i++) {
    const blk = classBlockFwd(cfg, w, g, i, t, B, M);
    t = blk.out;
    backs.push(blk.back);
  }

  // 5. final norm of the class token, head, mean cross-entropy.
  const clsRows = new Float64Array(B * D);
  for (let b = 0; b < B; b++) clsRows.set(t.subarray(b * M * D, b * M * D + D), b * D);
  const fin = lnFwd(cfg, w, g, "norm", clsRows);
  const head = linearLayer(w, "head", D, K, true);
  const logits = linFwd(head, fin.y, B);
  const { loss, dlogits: dLogits } = crossEntropyBackwardReference(logits, targets, K);

  // Backward, in reverse.
  const dCls = fin.back(linBwd(head, g, dLogits, fin.y, B));
  let d: Float64Array = new Float64Array(B * M * D);
  for (let b = 0; b < B; b++) d.set(dCls.subarray(b * D, (b + 1) * D), b * M * D);
  for (let k = backs.length - 1; k >= 0; k--) d = backs[k](d);
  return { loss, logits, grads: g.map, buffers };
}
