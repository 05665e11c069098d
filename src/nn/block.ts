/**
 * The transformer block of every model tost runs — ToST and ViT
 * (`blocks.i`), causal ToST and GPT (`transformer.h.i`) — forward and
 * backward, written once:
 *
 *     xMid = xIn  + γ1·attn(norm1(xIn))        (a = attn(h1), h1 = norm1(xIn))
 *     xOut = xMid + γ2·mlp(norm2(xMid))        (m = mlp(h2),  h2 = norm2(xMid))
 *
 * (nanoGPT's block has no layer scale; the reference ToST code's does, and
 * tost loads nanoGPT's files with γ = 1.) The attention is any
 * {@linkcode AttentionKind}; the forward serves inference (the stream `x` is
 * updated in place), training ({@linkcode BlockOptions.saves}: the stream is
 * copied so its values at the block's entry and middle stay for the
 * backward) and decoding ({@linkcode BlockOptions.state}: one layer's
 * attention state). All three run the same kernels.
 *
 * Gradient convention (as in llm.c): parameter gradients accumulate (`+=`),
 * activation gradients are assigned; the stream gradient is updated in place.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { layerNorm } from "../ops/layer_norm.ts";
import { layerNormBackward } from "../ops/layer_norm_backward.ts";
import { residualBackward } from "../ops/residual_backward.ts";
import { attention, attentionBackward } from "./attention.ts";
import type {
  AttentionKind,
  AttentionParams,
  AttentionSaves,
  AttentionState,
} from "./attention.ts";
import { mlp, mlpBackward } from "./mlp.ts";
import type { MlpParams, MlpSaves } from "./mlp.ts";

export type { AttentionKind };

/** A LayerNorm's weight `[C]` and optional bias `[C]` (or their gradients). */
export interface NormParams {
  weight: Tensor;
  bias: Tensor | null;
}

/**
 * One block's parameters (or gradients, shaped alike), by role; the
 * `state_dict` names are the model's (`norm1`/`ln_1`, `mlp.fc1`/`mlp.c_fc`, …).
 */
export interface BlockParams {
  norm1: NormParams;
  attn: AttentionParams;
  /** `[C]` */
  gamma1: Tensor;
  norm2: NormParams;
  mlp: MlpParams;
  /** `[C]` */
  gamma2: Tensor;
}

/** What the forward keeps for {@linkcode blockBackward}. */
export interface BlockSaves {
  /** `[B, N, C]` stream entering the block (norm1's input). */
  xIn: Tensor;
  /** `[B, N, C]` norm1 output (the attention's input). */
  h1: Tensor;
  attn: AttentionSaves;
  /** `[B, N, C]` attention output (before γ1). */
  a: Tensor;
  /** `[B, N, C]` stream after the attention residual (norm2's input). */
  xMid: Tensor;
  /** `[B, N, C]` norm2 output (the MLP's input). */
  h2: Tensor;
  mlp: MlpSaves;
  /** `[B, N, C]` MLP output (before γ2). */
  m: Tensor;
}

/** How {@linkcode block} runs. */
export interface BlockOptions {
  /** LayerNorm epsilon. */
  eps: number;
  /** Attention heads. */
  heads: number;
  /** Training: keep what the backward needs (the stream is copied, not updated). */
  saves?: boolean;
  /** Decoding: this layer's attention state. */
  state?: AttentionState;
  /** Receives the attention output (before γ1) while it is valid (fixture checks). */
  onAttention?: (a: Tensor) => void;
  /** TSSA kinds: receives Π `[B·N, H]` of this block's attention while it is valid (inspect). */
  onPi?: (pi: Tensor) => void;
}

function copyOf(gpu: Gpu, t: Tensor, label: string): Tensor {
  const c = gpu.empty(t.shape, "f32", label);
  gpu.copy(t, c);
  return c;
}

/**
 * Record one block on the stream `x` `[B, N, C]`. Without saves the stream
 * is updated in place and returned; with them the block's output is a new
 * tensor and `x` is kept (it is `saves.xIn`). Both residual adds are fused
 * into the output products of the attention and the MLP (the GEMM's
 * residual epilogue), which also write `a` and `m` when they are kept.
 */
export async function block(
  gpu: Gpu,
  x: Tensor,
  p: BlockParams,
  options: BlockOptions,
): Promise<{ y: Tensor; saves: BlockSaves | null }> {
  const { eps, heads } = options;
  const keep = options.saves ?? false;
  const h1 = await layerNorm(gpu, x, p.norm1.weight, p.norm1.bias, eps);
  const xMid = keep ? copyOf(gpu, x, "block.xMid") : x;
  // The attention output itself, when the backward or a caller wants it.
  const a = keep || options.onAttention ? gpu.empty(x.shape, "f32", "block.a") : undefined;
  const at = await attention(gpu, h1, p.attn, heads, {
    saves: keep,
    state: options.state,
    onPi: options.onPi,
    residual: { x: xMid, gamma: p.gamma1, out: a }, // xMid += γ1·a
  });
  if (a) options.onAttention?.(a);
  const h2 = await layerNorm(gpu, xMid, p.norm2.weight, p.norm2.bias, eps);
  const y = keep ? copyOf(gpu, xMid, "block.xOut") : xMid;
  const m = keep ? gpu.empty(x.shape, "f32", "block.m") : undefined;
  const ml = await mlp(gpu, h2, p.mlp, {
    saves: keep,
    residual: { x: y, gamma: p.gamma2, out: m }, // y += γ2·m
  });
  if (keep) {
    const saves = { xIn: x, h1, attn: at.saves!, a: a!, xMid, h2, mlp: ml.saves!, m: m! };
    return { y, saves };
  }
  for (const t of [h1, a, h2]) t?.destroy();
  return { y, saves: null };
}

/**
 * Record one block's backward. `dx` holds ∂L/∂xOut and is turned into
 * ∂L/∂xIn in place; every parameter gradient is added into `grads`.
 */
export async function blockBackward(
  gpu: Gpu,
  dx: Tensor,
  args: { params: BlockParams; grads: BlockParams; saves: BlockSaves; eps: number; heads: number },
): Promise<void> {
  const { params: p, grads: g, saves: s, eps, heads } = args;
  const temps: Tensor[] = [];
  const tmp = (t: Tensor) => {
    temps.push(t);
    return t;
  };
  try {
    // xOut = xMid + γ2·m
    const dm = tmp(
      await residualBackward(gpu, { dy: dx, f: s.m, gamma: p.gamma2, dGamma: g.gamma2 }),
    );
    const dh2 = tmp(await mlpBackward(gpu, { dy: dm, saves: s.mlp, params: p.mlp, grads: g.mlp }));
    // dx += ∂xMid through norm2, added in place by the LayerNorm backward.
    await layerNormBackward(gpu, {
      dy: dh2,
      x: s.xMid,
      weight: p.norm2.weight,
      eps,
      dWeight: g.norm2.weight,
      dBias: g.norm2.bias,
      dxInto: dx,
    });
    // xMid = xIn + γ1·a
    const da = tmp(
      await residualBackward(gpu, { dy: dx, f: s.a, gamma: p.gamma1, dGamma: g.gamma1 }),
    );
    const dh1 = tmp(
      await attentionBackward(gpu, { dy: da, saves: s.attn, params: p.attn, grads: g.attn, heads }),
    );
    await layerNormBackward(gpu, {
      dy: dh1,
      x: s.xIn,
      weight: p.norm1.weight,
      eps,
      dWeight: g.norm1.weight,
      dBias: g.norm1.bias,
      dxInto: dx, // dx += ∂xIn through norm1
    });
  } finally {
    for (const t of temps) t.destroy();
  }
}
