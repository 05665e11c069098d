/**
 * The GPT twin's attention module for training: `c_attn` (to packed
 * `qkv [B, T, 3C]`) → causal softmax attention → `c_proj`, forward keeping
 * what the backward needs, and the backward through all three.
 *
 * Gradient convention: parameter gradients accumulate, the input gradient
 * is returned (assigned).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { LinearParams } from "../model/_params.ts";
import { linear } from "../ops/linear.ts";
import { linearBackward } from "../ops/linear_backward.ts";
import {
  softmaxAttentionBackward as attentionOpBackward,
  softmaxAttentionForwardWithSaves as attentionOpForward,
} from "../ops/attention_backward.ts";

/** What the module forward keeps (owned; `x` is the caller's). */
export interface SoftmaxAttentionSaves {
  /** Module input `[B, T, C]` (not owned). */
  x: Tensor;
  /** `[B, T, 3C]` */
  qkv: Tensor;
  /** Attention output `[B, T, C]` (c_proj's input). */
  y: Tensor;
  /** `[B, NH, T, T]` probabilities. */
  probs: Tensor;
  /** Free the owned tensors. */
  destroy(): void;
}

/**
 * Module forward with saves on `x` `[B, T, C]`; returns the output `[B, T, C]`.
 * Records dispatches only.
 */
export async function softmaxAttentionForwardWithSaves(
  gpu: Gpu,
  args: { x: Tensor; cAttn: LinearParams; cProj: LinearParams; heads: number },
): Promise<{ out: Tensor; saves: SoftmaxAttentionSaves }> {
  const { x, cAttn, cProj, heads } = args;
  const qkv = await linear(gpu, x, cAttn.weight, cAttn.bias);
  try {
    const { out: y, probs } = await attentionOpForward(gpu, qkv, heads, { causal: true });
    const saves: SoftmaxAttentionSaves = {
      x,
      qkv,
      y,
      probs,
      destroy() {
        qkv.destroy();
        y.destroy();
        probs.destroy();
      },
    };
    try {
      const out = await linear(gpu, y, cProj.weight, cProj.bias);
      return { out, saves };
    } catch (err) {
      y.destroy();
      probs.destroy();
      throw err;
    }
  } catch (err) {
    qkv.destroy();
    throw err;
  }
}

/**
 * Module backward: adds the gradients of `c_attn` and `c_proj` into
 * `grads`, returns ∂x `[B, T, C]` (new). Records dispatches only.
 */
export async function softmaxAttentionBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    saves: SoftmaxAttentionSaves;
    cAttn: LinearParams;
    cProj: LinearParams;
    grads: { cAttn: LinearParams; cProj: LinearParams };
    heads: number;
  },
): Promise<Tensor> {
  const { dy, saves, cAttn, cProj, grads, heads } = args;
  const dY = await linearBackward(gpu, {
    dy,
    x: saves.y,
    weight: cProj.weight,
    dWeight: grads.cProj.weight,
    dBias: grads.cProj.bias,
  });
  let dqkv: Tensor;
  try {
    dqkv = await attentionOpBackward(gpu, {
      dout: dY,
      qkv: saves.qkv,
      out: saves.y,
      probs: saves.probs,
      heads,
      causal: true,
    });
  } finally {
    dY.destroy();
  }
  try {
    return await linearBackward(gpu, {
      dy: dqkv,
      x: saves.x,
      weight: cAttn.weight,
      dWeight: grads.cAttn.weight,
      dBias: grads.cAttn.bias,
    });
  } finally {
    dqkv.destroy();
  }
}
