/**
 * The input side of the vision models: the convolutional patch stem and the
 * Fourier positional encoding, forward and backward.
 *
 *     stem     3 (patch 8) or 4 (patch 16) × [conv3x3/2 (no bias) → BatchNorm], GELU between
 *     tokens   the last map, NHWC `[B, Hp, Wp, D]`, is the token layout `[B, N, D]`
 *     + pe     Fourier features of the grid `[N, F]` · token_projectionᵀ + bias, to every image
 *
 * BatchNorm has two modes, as in PyTorch. In **eval** mode (inference,
 * evaluation) it uses the running statistics, folded into the convolution
 * on the GPU from the live parameters (`foldBatchNorm`, one small dispatch
 * per stage), and the GELU between stages is fused into the convolution. In **training** mode it normalises with the batch statistics,
 * updates the running statistics in place (momentum 0.1, unbiased
 * variance) and keeps what its backward needs.
 *
 * The Fourier features depend only on the grid: they are computed on the
 * host once per grid size and cached with the parameter store; the
 * projection runs on the GPU with the live weights.
 *
 * @module
 */

import type { Gpu, Tensor } from "../../gpu/runtime.ts";
import { conv3x3s2, foldBatchNorm } from "../../ops/conv2d.ts";
import { conv3x3s2Backward, conv3x3s2Train } from "../../ops/conv2d_backward.ts";
import type { ConvLayout } from "../../ops/conv2d_backward.ts";
import {
  BATCH_NORM_EPS,
  batchNormTrainBackward,
  batchNormTrainForward,
} from "../../ops/batch_norm.ts";
import { gelu } from "../../ops/gelu.ts";
import { geluBackward } from "../../ops/gelu_backward.ts";
import { linear } from "../../ops/linear.ts";
import { linearBackward } from "../../ops/linear_backward.ts";
import { accumulateRowSums } from "../../ops/column_sums.ts";
import { addRows } from "../../ops/elementwise.ts";
import { fourierFeatures } from "../fourier.ts";
import type { ParamStore } from "../params.ts";
import type { StemStageParams, VisionParams } from "./params.ts";

/** What a training-mode stage keeps for its backward. */
interface StageSaves {
  /** The stage's input and its layout. */
  input: Tensor;
  layout: ConvLayout;
  /** Convolution output (BatchNorm's input), `[B, Ho, Wo, Cout]`. */
  conv: Tensor;
  /** BatchNorm output (GELU's input), and the batch statistics `[Cout, 2]`. */
  bn: Tensor;
  stats: Tensor;
}

/** What the training-mode stem keeps for {@linkcode stemBackward}. */
export interface StemSaves {
  stages: StageSaves[];
}

/**
 * Record the stem on `images` `[B, in_chans, H, W]` (NCHW): returns the map
 * `[B, Hp, Wp, D]` (NHWC) and, in training mode, the saves. Eval mode folds
 * the running statistics into the convolutions; training mode uses the
 * batch statistics and updates the running ones.
 */
export async function stem(
  gpu: Gpu,
  p: VisionParams,
  images: Tensor,
  options: { training?: boolean } = {},
): Promise<{ map: Tensor; saves: StemSaves | null }> {
  const training = options.training ?? false;
  const stages: StageSaves[] = [];
  let x = images;
  let layout: ConvLayout = "nchw";
  for (let s = 0; s < p.stem.length; s++) {
    const last = s === p.stem.length - 1;
    let out: Tensor;
    if (training) {
      const stage = await trainingStage(gpu, p.stem[s], x, layout);
      out = last ? stage.out : await gelu(gpu, stage.out);
      stages.push(stage.saves);
    } else {
      // GELU between stages is the GEMM's epilogue (BatchNorm is folded in).
      out = await evalStage(gpu, p.stem[s], x, layout, !last);
    }
    if (!training && x !== images) x.destroy();
    x = out;
    layout = "nhwc";
  }
  return { map: x, saves: training ? { stages } : null };
}

function runningStats(op: string, bn: StemStageParams["bn"]) {
  if (!bn.runningMean || !bn.runningVar) {
    throw new TypeError(`${op}: the stem's BatchNorm has no running statistics`);
  }
  return { runningMean: bn.runningMean, runningVar: bn.runningVar };
}

async function evalStage(
  gpu: Gpu,
  p: StemStageParams,
  x: Tensor,
  layout: ConvLayout,
  gelu: boolean,
): Promise<Tensor> {
  const bn = { weight: p.bn.weight, bias: p.bn.bias, ...runningStats("stem", p.bn) };
  const folded = await foldBatchNorm(gpu, p.conv, bn, BATCH_NORM_EPS);
  const y = await conv3x3s2(gpu, x, folded.weight, folded.bias, layout, { gelu });
  folded.weight.destroy();
  folded.bias.destroy();
  return y;
}

async function trainingStage(
  gpu: Gpu,
  p: StemStageParams,
  input: Tensor,
  layout: ConvLayout,
): Promise<{ out: Tensor; saves: StageSaves }> {
  const conv = await conv3x3s2Train(gpu, input, p.conv, layout);
  const bn = await batchNormTrainForward(gpu, {
    x: conv,
    weight: p.bn.weight,
    bias: p.bn.bias,
    ...runningStats("stem", p.bn),
  });
  return { out: bn.y, saves: { input, layout, conv, bn: bn.y, stats: bn.stats } };
}

/**
 * Record the stem's backward from ∂map (`[B, Hp, Wp, D]`), adding the
 * convolution and BatchNorm gradients into `grads`. The images need no
 * gradient, so nothing is returned.
 */
export async function stemBackward(
  gpu: Gpu,
  dMap: Tensor,
  args: { params: VisionParams; grads: VisionParams; saves: StemSaves },
): Promise<void> {
  const { params: p, grads: g, saves } = args;
  let d = dMap;
  for (let s = saves.stages.length - 1; s >= 0; s--) {
    const st = saves.stages[s];
    const last = s === saves.stages.length - 1;
    const dBn = last ? d : await geluBackward(gpu, { dy: d, x: st.bn });
    const dConv = await batchNormTrainBackward(gpu, {
      dy: dBn,
      x: st.conv,
      stats: st.stats,
      weight: p.stem[s].bn.weight,
      dWeight: g.stem[s].bn.weight,
      dBias: g.stem[s].bn.bias,
    });
    const dx = await conv3x3s2Backward(gpu, {
      dy: dConv,
      x: st.input,
      weight: p.stem[s].conv,
      dWeight: g.stem[s].conv,
      layout: st.layout,
      inputGrad: s > 0,
    });
    if (!last) dBn.destroy();
    dConv.destroy();
    if (d !== dMap) d.destroy();
    if (!dx) return;
    d = dx;
  }
}

/** The Fourier features `[Hp·Wp, 2·pos_hidden_dim]` of a grid, cached with the store. */
export function gridFeatures(gpu: Gpu, store: ParamStore, Hp: number, Wp: number): Tensor {
  const cfg = store.config;
  if (cfg.family !== "vision") throw new TypeError("gridFeatures: not a vision model");
  const hidden = cfg.pos_hidden_dim;
  return store.constant(`fourier.${Hp}x${Wp}`, () => {
    const values = Float32Array.from(fourierFeatures(Hp, Wp, { hidden }));
    return gpu.upload(values, [Hp * Wp, 2 * hidden], `fourier.${Hp}x${Wp}`);
  });
}

/**
 * Record `x += features · W_posᵀ + b_pos` on the tokens `x` `[B, N, D]`
 * (the positional encoding added to every image).
 */
export async function addPositions(
  gpu: Gpu,
  p: VisionParams,
  x: Tensor,
  features: Tensor,
): Promise<void> {
  const pe = await linear(gpu, features, p.pos.weight, p.pos.bias); // [N, D]
  await addRows(gpu, x, pe);
  pe.destroy();
}

/**
 * Record the positional encoding's backward from the tokens' gradient `dx`
 * `[B, N, D]`: `∂W += Σ_n (Σ_b ∂x[b, n])ᵀ·features[n]`, `∂b += Σ_{b,n} ∂x`.
 */
export async function addPositionsBackward(
  gpu: Gpu,
  dx: Tensor,
  args: { params: VisionParams; grads: VisionParams; features: Tensor },
): Promise<void> {
  const [B, N, D] = dx.shape;
  const dPe = gpu.empty([N, D], "f32", "pos.dpe"); // Σ_b ∂x[b]
  const scratch: Tensor[] = [dPe];
  try {
    await accumulateRowSums(gpu, dx.view([B, N * D]), dPe.view([N * D]), {
      rows: B,
      count: N * D,
    }, scratch);
    scratch.push(
      await linearBackward(gpu, {
        dy: dPe,
        x: args.features,
        weight: args.params.pos.weight,
        dWeight: args.grads.pos.weight,
        dBias: args.grads.pos.bias,
      }),
    );
  } finally {
    for (const t of scratch) t.destroy();
  }
}
