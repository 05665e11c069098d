/**
 * One training step's forward and backward of a vision model (ToST
 * `tost_cab_*` or its ViT twin) on the GPU, as explicit layer pairs walked
 * forwards then in reverse (no tape):
 *
 *     stem         (conv3x3/2 → BatchNorm with batch statistics → GELU) × stages,
 *                  no GELU after the last; running statistics updated in place
 *     + Fourier positional encoding: fixed sin/cos features · token_projectionᵀ + bias
 *     blocks       x += γ1·attn(LN1(x)); x += γ2·MLP(LN2(x))    (TSSA or softmax attention)
 *     class token  prepended
 *     class blocks as the reference: patch tokens take x + γ1·LN1(x), tokens_norm
 *                  normalises every token, MLP on the class token, patch tokens doubled
 *     LN(class token) → head → mean cross-entropy
 *
 * The semantics are those of `src/model/reference/vision_backward.ts`, the
 * float64 reference this file is tested against (and which is tested
 * against PyTorch).
 *
 * Parameters and gradients are `Map`s from PyTorch `state_dict` names to f32
 * tensors of the PyTorch shapes ({@linkcode uploadVisionTrainParams},
 * {@linkcode createVisionGrads}). Gradient convention: parameter gradients
 * **accumulate** (`+=`) into `grads` (zero them between optimiser steps;
 * accumulation over micro-batches is free), activation gradients are
 * assigned. The BatchNorm running statistics live in `params` and are
 * updated in place; `num_batches_tracked` is the caller's counter (one per
 * call).
 *
 * Shapes: B images, D = embed_dim, NH heads, N = Hp·Wp tokens, M = N + 1, K classes.
 *
 * @module
 */

import { Tensor } from "../gpu/runtime.ts";
import type { Gpu } from "../gpu/runtime.ts";
import type { VisionConfig } from "../model/config.ts";
import { fourierFeatures } from "../model/fourier.ts";
import { paramSpecs, stemWidths } from "../model/names.ts";
import type { NamedTensors } from "../model/_params.ts";
import { toF32 } from "../io/dtype.ts";
import { conv3x3s2Backward, conv3x3s2Train } from "../ops/conv2d_backward.ts";
import type { ConvLayout } from "../ops/conv2d_backward.ts";
import { batchNormTrainBackward, batchNormTrainForward } from "../ops/batch_norm.ts";
import { copyRows } from "../ops/copy_rows.ts";
import { addRows, residual } from "../ops/elementwise.ts";
import { gelu } from "../ops/gelu.ts";
import { geluBackward } from "../ops/gelu_backward.ts";
import { layerNorm } from "../ops/layer_norm.ts";
import { layerNormBackward } from "../ops/layer_norm_backward.ts";
import { linear } from "../ops/linear.ts";
import { accumulateRowSums, linearBackward } from "../ops/linear_backward.ts";
import { residualBackward } from "../ops/residual_backward.ts";
import { classAttention } from "../ops/class_attention.ts";
import { classAttentionBackward } from "../ops/class_attention_backward.ts";
import {
  softmaxAttentionBackward,
  softmaxAttentionForwardWithSaves,
} from "../ops/attention_backward.ts";
import { crossEntropyForwardBackward } from "../ops/cross_entropy_backward.ts";
import {
  destroyAttentionSaves,
  tssaAttentionBackward,
  tssaAttentionForwardWithSaves,
} from "../nn/tssa_attention_backward.ts";

/** Parameters (and BatchNorm running statistics) or gradients by `state_dict` name. */
export type VisionTensors = Map<string, Tensor>;

const RUNNING = /\.running_(mean|var)$/;

/**
 * Names of a config's trainable parameters (every float entry of the
 * `state_dict` except the BatchNorm running statistics), in the reference's order.
 *
 * @example
 * ```ts ignore
 * visionTrainableNames(cfg).length; // 74 for the fixture's model
 * ```
 */
export function visionTrainableNames(cfg: VisionConfig): string[] {
  return paramSpecs(cfg).filter((s) => s.kind === "float" && !RUNNING.test(s.name)).map((s) =>
    s.name
  );
}

/**
 * Upload every float tensor of a vision `state_dict` (parameters and running
 * statistics; not `num_batches_tracked`) as f32 with its PyTorch shape.
 *
 * @throws {RangeError} for a missing tensor; {TypeError} for a misshapen or non-float one
 */
export function uploadVisionTrainParams(
  gpu: Gpu,
  cfg: VisionConfig,
  tensors: NamedTensors,
): VisionTensors {
  const out: VisionTensors = new Map();
  try {
    for (const spec of paramSpecs(cfg)) {
      if (spec.kind !== "float") continue;
      const t = tensors.get(spec.name);
      if (!t) throw new RangeError(`Missing parameter "${spec.name}" [${spec.shape}]`);
      if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
        throw new TypeError(
          `Parameter "${spec.name}" has shape [${t.shape}], expected [${spec.shape}]`,
        );
      }
      out.set(spec.name, gpu.upload(toF32(t.dtype, t.data), spec.shape, spec.name));
    }
  } catch (err) {
    for (const t of out.values()) t.destroy();
    throw err;
  }
  return out;
}

/** Zeroed gradient tensors for every trainable parameter of `cfg`. */
export function createVisionGrads(gpu: Gpu, cfg: VisionConfig): VisionTensors {
  const shapes = new Map(paramSpecs(cfg).map((s) => [s.name, s.shape]));
  return new Map(
    visionTrainableNames(cfg).map((n) => [n, gpu.empty(shapes.get(n)!, "f32", `grad.${n}`)]),
  );
}

/** A view of `t` with another shape of the same size (shares the buffer; never destroy it). */
function view(t: Tensor, shape: number[]): Tensor {
  if (shape.reduce((a, b) => a * b, 1) !== t.numel) {
    throw new TypeError(`Cannot view [${t.shape}] as [${shape}]`);
  }
  return new Tensor(t.gpu, t.buffer, shape, t.dtype);
}

type Back = (d: Tensor) => Promise<Tensor>;

/** Everything one step allocates, destroyed together at its end. */
class Step {
  readonly owned: Tensor[] = [];
  /** Frees what ops kept for their backward (attention saves). */
  readonly cleanups: (() => void)[] = [];
  constructor(
    readonly gpu: Gpu,
    readonly cfg: VisionConfig,
    readonly params: VisionTensors,
    readonly grads: VisionTensors,
  ) {}
  keep<T extends Tensor>(t: T): T {
    this.owned.push(t);
    return t;
  }
  p(name: string): Tensor {
    const t = this.params.get(name);
    if (!t) throw new RangeError(`Missing parameter "${name}"`);
    return t;
  }
  g(name: string): Tensor {
    const t = this.grads.get(name);
    if (!t) throw new RangeError(`Missing gradient buffer "${name}"`);
    return t;
  }
  bias(name: string, has = true): Tensor | null {
    return has ? this.p(name) : null;
  }
  gbias(name: string, has = true): Tensor | null {
    return has ? this.g(name) : null;
  }
  copy(t: Tensor): Tensor {
    const c = this.keep(this.gpu.empty(t.shape, "f32", "vision_step.copy"));
    this.gpu.copy(t, c);
    return c;
  }
  /** Rows `row0…row0+rows` of every batch of `src [B, S, D]` into a new `[B, rows, D]`. */
  async rows(src: Tensor, B: number, S: number, row0: number, rows: number): Promise<Tensor> {
    const D = src.shape[src.shape.length - 1];
    const out = this.keep(this.gpu.empty([B, rows, D], "f32", "vision_step.rows"));
    await copyRows(this.gpu, src, out, {
      batches: B,
      rows,
      cols: D,
      srcBatchRows: S,
      srcRow0: row0,
      dstBatchRows: rows,
    });
    return out;
  }
  /** Write `src [B, rows, D]` into rows `row0…` of every batch of `dst [B, S, D]`. */
  async put(src: Tensor, dst: Tensor, B: number, S: number, row0: number, rows: number) {
    await copyRows(this.gpu, src, dst, {
      batches: B,
      rows,
      cols: dst.shape[dst.shape.length - 1],
      srcBatchRows: rows,
      dstBatchRows: S,
      dstRow0: row0,
    });
  }
  async layerNorm(name: string, x: Tensor): Promise<{ y: Tensor; back: Back }> {
    const eps = this.cfg.norm_eps;
    const weight = this.p(`${name}.weight`);
    const y = this.keep(await layerNorm(this.gpu, x, weight, this.p(`${name}.bias`), eps));
    const back = async (dy: Tensor) =>
      this.keep(
        await layerNormBackward(this.gpu, {
          dy,
          x,
          weight,
          eps,
          dWeight: this.g(`${name}.weight`),
          dBias: this.g(`${name}.bias`),
        }),
      );
    return { y, back };
  }
  async linear(name: string, x: Tensor, hasBias = true): Promise<{ y: Tensor; back: Back }> {
    const weight = this.p(`${name}.weight`);
    const y = this.keep(await linear(this.gpu, x, weight, this.bias(`${name}.bias`, hasBias)));
    const back = async (dy: Tensor) =>
      this.keep(
        await linearBackward(this.gpu, {
          dy,
          x,
          weight,
          dWeight: this.g(`${name}.weight`),
          dBias: this.gbias(`${name}.bias`, hasBias),
        }),
      );
    return { y, back };
  }
  async mlp(name: string, x: Tensor): Promise<{ y: Tensor; back: Back }> {
    const fc1 = await this.linear(`${name}.fc1`, x);
    const act = this.keep(await gelu(this.gpu, fc1.y));
    const fc2 = await this.linear(`${name}.fc2`, act);
    const back = async (dy: Tensor) => {
      const dAct = await fc2.back(dy);
      const dPre = this.keep(await geluBackward(this.gpu, { dy: dAct, x: fc1.y }));
      return fc1.back(dPre);
    };
    return { y: fc2.y, back };
  }
  /** `x + γ⊙f` as a new tensor; the backward adds ∂γ and returns ∂f (∂x is the stream itself). */
  async scaled(name: string, x: Tensor, f: Tensor): Promise<{ y: Tensor; back: Back }> {
    const gamma = this.p(name);
    const y = this.copy(x);
    await residual(this.gpu, y, f, gamma);
    const back = async (dy: Tensor) =>
      this.keep(await residualBackward(this.gpu, { dy, f, gamma, dGamma: this.g(name) }));
    return { y, back };
  }
}

async function stemForward(s: Step, images: Tensor, backs: Back[]): Promise<Tensor> {
  const { gpu, cfg } = s;
  const widths = stemWidths(cfg.patch_size, cfg.embed_dim);
  let x = images;
  let layout: ConvLayout = "nchw";
  for (let st = 0; st < widths.length; st++) {
    const pre = `patch_embed.proj.${2 * st}`;
    const input = x;
    const inputLayout = layout;
    const weight = s.p(`${pre}.0.weight`);
    const conv = s.keep(await conv3x3s2Train(gpu, input, weight, inputLayout));
    const bnWeight = s.p(`${pre}.1.weight`);
    const bn = await batchNormTrainForward(gpu, {
      x: conv,
      weight: bnWeight,
      bias: s.p(`${pre}.1.bias`),
      runningMean: s.p(`${pre}.1.running_mean`),
      runningVar: s.p(`${pre}.1.running_var`),
    });
    s.keep(bn.y);
    s.keep(bn.stats);
    const last = st === widths.length - 1;
    const out = last ? bn.y : s.keep(await gelu(gpu, bn.y));
    backs.push(async (dOut) => {
      const dBn = last ? dOut : s.keep(await geluBackward(gpu, { dy: dOut, x: bn.y }));
      const dConv = s.keep(
        await batchNormTrainBackward(gpu, {
          dy: dBn,
          x: conv,
          stats: bn.stats,
          weight: bnWeight,
          dWeight: s.g(`${pre}.1.weight`),
          dBias: s.g(`${pre}.1.bias`),
        }),
      );
      const dx = await conv3x3s2Backward(gpu, {
        dy: dConv,
        x: input,
        weight,
        dWeight: s.g(`${pre}.0.weight`),
        layout: inputLayout,
        inputGrad: st > 0,
      });
      // The images need no gradient: the first stage returns its ∂y unchanged (unused).
      return dx ? s.keep(dx) : dOut;
    });
    x = out;
    layout = "nhwc";
  }
  return x;
}

/** Class-attention block over `x [B, M, D]`; see the module doc for the reference's quirks. */
async function classBlockForward(
  s: Step,
  i: number,
  x: Tensor,
  B: number,
  M: number,
  backs: Back[],
): Promise<Tensor> {
  const { gpu, cfg } = s;
  const D = cfg.embed_dim;
  const p = `cls_attn_blocks.${i}`;
  const n1 = await s.layerNorm(`${p}.norm1`, x);
  const qkv = await s.linear(`${p}.attn.qkv`, n1.y, cfg.qkv_bias);
  const ca = s.keep(await classAttention(gpu, qkv.y, cfg.num_heads)); // [B, 1, D]
  const proj = await s.linear(`${p}.attn.proj`, ca);
  const a = s.copy(n1.y); // the module returns its input for the patch tokens
  await s.put(proj.y, a, B, M, 0, 1);
  const r1 = await s.scaled(`${p}.gamma1`, x, a);
  const x1 = r1.y;

  let x2: Tensor;
  let n2back: Back;
  if (cfg.tokens_norm) {
    const n2 = await s.layerNorm(`${p}.norm2`, x1);
    x2 = n2.y;
    n2back = n2.back;
  } else {
    const cls = await s.rows(x1, B, M, 0, 1);
    const n2 = await s.layerNorm(`${p}.norm2`, cls);
    x2 = s.copy(x1);
    await s.put(n2.y, x2, B, M, 0, 1);
    n2back = async (dy) => {
      const dCls = await n2.back(await s.rows(dy, B, M, 0, 1));
      const dx = s.copy(dy);
      await s.put(dCls, dx, B, M, 0, 1);
      return dx;
    };
  }
  const clsRows = await s.rows(x2, B, M, 0, 1);
  const mlp = await s.mlp(`${p}.mlp`, clsRows);
  const out = s.copy(x2);
  await residual(gpu, out, x2, null); // 2·x2: the patch tokens are added to themselves
  const clsOut = await s.scaled(`${p}.gamma2`, clsRows, mlp.y);
  await s.put(clsOut.y, out, B, M, 0, 1);

  backs.push(async (dOut) => {
    const dx2 = s.copy(dOut);
    await residual(gpu, dx2, dOut, null);
    const dClsOut = await s.rows(dOut, B, M, 0, 1);
    const dClsMlp = await mlp.back(await clsOut.back(dClsOut));
    await residual(gpu, dClsOut, dClsMlp, null);
    await s.put(dClsOut, dx2, B, M, 0, 1);
    const dx1 = await n2back(dx2); // the stream gradient from here on
    const da = await r1.back(dx1);
    const dProj = await proj.back(await s.rows(da, B, M, 0, 1));
    const dqkv = s.keep(
      await classAttentionBackward(gpu, { dOut: dProj, qkv: qkv.y, heads: cfg.num_heads }),
    );
    const dn1 = await qkv.back(dqkv);
    // The patch rows of ∂a reach LN1's output directly; its class rows went through attention.
    const zero = s.keep(gpu.empty([1, D], "f32", "vision_step.zero"));
    await copyRows(gpu, zero, da, {
      batches: B,
      rows: 1,
      cols: D,
      srcBatchRows: 0,
      dstBatchRows: M,
    });
    await residual(gpu, dn1, da, null);
    await residual(gpu, dx1, await n1.back(dn1), null);
    return dx1;
  });
  return out;
}

/**
 * Record one training step's forward and backward of a vision model: the
 * gradients of the mean cross-entropy of `labels` are **added** to `grads`,
 * and the BatchNorm running statistics in `params` are updated (momentum
 * 0.1, unbiased variance). Records dispatches only; read the returned loss
 * (a `[1]` tensor the caller destroys) when needed.
 *
 * @param params every float tensor of the `state_dict` ({@linkcode uploadVisionTrainParams})
 * @param grads gradient buffers ({@linkcode createVisionGrads})
 * @param images f32 `[B, in_chans, H, W]`
 * @param labels `B` class indices in `[0, num_classes)` (host values or an i32 tensor)
 * @returns the mean loss, `[1]`
 * @throws {TypeError} or {RangeError} for mismatched shapes, labels or missing tensors
 * @example
 * ```ts ignore
 * const params = uploadVisionTrainParams(gpu, cfg, tensors);
 * const grads = createVisionGrads(gpu, cfg);
 * const loss = await visionForwardBackward(gpu, cfg, { params, grads, images, labels: [3, 7] });
 * console.log((await loss.read())[0]);
 * loss.destroy();
 * ```
 */
export async function visionForwardBackward(
  gpu: Gpu,
  cfg: VisionConfig,
  args: {
    params: VisionTensors;
    grads: VisionTensors;
    images: Tensor;
    labels: Tensor | ArrayLike<number | bigint>;
  },
): Promise<Tensor> {
  const { params, grads, images, labels } = args;
  if (images.shape.length !== 4 || images.shape[1] !== cfg.in_chans) {
    throw new TypeError(
      `visionForwardBackward: images must be [B, ${cfg.in_chans}, H, W], got [${images.shape}]`,
    );
  }
  const B = images.shape[0];
  const D = cfg.embed_dim;
  const s = new Step(gpu, cfg, params, grads);
  const backs: Back[] = [];
  let loss: Tensor | null = null;
  try {
    // Stem → tokens [B, N, D] (its NHWC output is the token layout).
    const map = await stemForward(s, images, backs);
    const [, Hp, Wp] = map.shape;
    const N = Hp * Wp;
    const tokens = view(map, [B, N, D]);

    // Fourier positional encoding: features [N, F] · Wᵀ + b, added to every image.
    const F = 2 * cfg.pos_hidden_dim;
    const feat = fourierFeatures(Hp, Wp, { hidden: cfg.pos_hidden_dim });
    const feat32 = Float32Array.from(feat);
    const featT = s.keep(gpu.upload(feat32, [N, F], "vision_step.fourier"));
    const peWeight = view(s.p("pos_embeder.token_projection.weight"), [D, F]);
    const pe = s.keep(
      await linear(gpu, featT, peWeight, s.p("pos_embeder.token_projection.bias")),
    );
    const x0 = s.copy(tokens);
    await addRows(gpu, x0, pe);
    backs.push(async (dx) => {
      // ∂W = Σ_b Σ_n ∂x[b, n]ᵀ·feat[n]: the features repeated for every image.
      const featB = new Float32Array(B * N * F);
      for (let b = 0; b < B; b++) featB.set(feat32, b * N * F);
      const featBT = s.keep(gpu.upload(featB, [B * N, F], "vision_step.fourier_batch"));
      s.keep(
        await linearBackward(gpu, {
          dy: view(dx, [B * N, D]),
          x: featBT,
          weight: peWeight,
          dWeight: view(s.g("pos_embeder.token_projection.weight"), [D, F]),
          dBias: s.g("pos_embeder.token_projection.bias"),
        }),
      );
      return view(dx, map.shape as number[]);
    });

    // Blocks.
    let x = x0;
    for (let i = 0; i < cfg.depth; i++) {
      const p = `blocks.${i}`;
      const n1 = await s.layerNorm(`${p}.norm1`, x);
      let attnOut: Tensor;
      let attnBack: Back;
      if (cfg.attention === "tssa") {
        const aParams = {
          inWeight: s.p(`${p}.attn.qkv.weight`),
          inBias: s.bias(`${p}.attn.qkv.bias`, cfg.qkv_bias),
          temp: s.p(`${p}.attn.temp`),
          outWeight: s.p(`${p}.attn.to_out.0.weight`),
          outBias: s.p(`${p}.attn.to_out.0.bias`),
        };
        const aGrads = {
          inWeight: s.g(`${p}.attn.qkv.weight`),
          inBias: s.gbias(`${p}.attn.qkv.bias`, cfg.qkv_bias),
          temp: s.g(`${p}.attn.temp`),
          outWeight: s.g(`${p}.attn.to_out.0.weight`),
          outBias: s.g(`${p}.attn.to_out.0.bias`),
        };
        const { out, saves } = await tssaAttentionForwardWithSaves(gpu, {
          x: n1.y,
          params: aParams,
          heads: cfg.num_heads,
        });
        s.keep(out);
        s.cleanups.push(() => destroyAttentionSaves(saves));
        attnOut = out;
        attnBack = async (dy) =>
          s.keep(
            await tssaAttentionBackward(gpu, {
              dy,
              saves,
              params: aParams,
              grads: aGrads,
              heads: cfg.num_heads,
            }),
          );
      } else {
        const qkv = await s.linear(`${p}.attn.qkv`, n1.y, cfg.qkv_bias);
        const att = await softmaxAttentionForwardWithSaves(gpu, qkv.y, cfg.num_heads);
        s.keep(att.out);
        s.keep(att.probs);
        const proj = await s.linear(`${p}.attn.proj`, att.out);
        attnOut = proj.y;
        attnBack = async (dy) => {
          const dAtt = await proj.back(dy);
          const dqkv = s.keep(
            await softmaxAttentionBackward(gpu, {
              dout: dAtt,
              qkv: qkv.y,
              out: att.out,
              probs: att.probs,
              heads: cfg.num_heads,
              causal: false,
            }),
          );
          return qkv.back(dqkv);
        };
      }
      const r1 = await s.scaled(`${p}.gamma1`, x, attnOut);
      const n2 = await s.layerNorm(`${p}.norm2`, r1.y);
      const mlp = await s.mlp(`${p}.mlp`, n2.y);
      const r2 = await s.scaled(`${p}.gamma2`, r1.y, mlp.y);
      backs.push(async (dOut) => {
        // dOut is the stream gradient: branch input gradients are added into it.
        await residual(gpu, dOut, await n2.back(await mlp.back(await r2.back(dOut))), null);
        await residual(gpu, dOut, await n1.back(await attnBack(await r1.back(dOut))), null);
        return dOut;
      });
      x = r2.y;
    }

    // Class token first, then the class-attention blocks.
    const M = N + 1;
    let t = s.keep(gpu.empty([B, M, D], "f32", "vision_step.tokens"));
    await copyRows(gpu, view(s.p("cls_token"), [1, D]), t, {
      batches: B,
      rows: 1,
      cols: D,
      srcBatchRows: 0,
      dstBatchRows: M,
    });
    await s.put(x, t, B, M, 1, N);
    backs.push(async (dt) => {
      const dCls = await s.rows(dt, B, M, 0, 1);
      const scratch: Tensor[] = [];
      try {
        await accumulateRowSums(
          gpu,
          dCls,
          view(s.g("cls_token"), [D]),
          { rows: B, count: D },
          scratch,
        );
      } finally {
        for (const u of scratch) u.destroy();
      }
      return s.rows(dt, B, M, 1, N);
    });
    for (let i = 0; i < cfg.cls_attn_layers; i++) {
      t = await classBlockForward(s, i, t, B, M, backs);
    }

    // Final norm of the class token, head, mean cross-entropy.
    const cls = await s.rows(t, B, M, 0, 1);
    const fin = await s.layerNorm("norm", cls);
    const head = await s.linear("head", view(fin.y, [B, D]));
    const ce = await crossEntropyForwardBackward(gpu, { logits: head.y, targets: labels });
    loss = ce.loss;
    s.keep(ce.dlogits);

    // Backward, in reverse.
    const dCls = await fin.back(view(await head.back(ce.dlogits), [B, 1, D]));
    let d = s.keep(gpu.empty([B, M, D], "f32", "vision_step.dtokens"));
    await s.put(dCls, d, B, M, 0, 1);
    for (let k = backs.length - 1; k >= 0; k--) d = await backs[k](d);
    return loss;
  } catch (err) {
    loss?.destroy();
    throw err;
  } finally {
    for (const t of s.owned) t.destroy();
    for (const f of s.cleanups) f();
  }
}
