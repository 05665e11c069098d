/**
 * The class-attention block of the vision models (`cls_attn_blocks.i`,
 * CaiT/XCiT `ClassAttentionBlock`), forward and backward, following the
 * reference literally, quirks included:
 *
 *     n1   = LN1(x)                                        [B, M, D], M = N + 1
 *     a    = [proj(class_attention(qkv(n1))); n1[1:]]      (the module returns its
 *                                                           input for the patch tokens)
 *     x1   = x + γ1·a
 *     x2   = LN2(x1)             with tokens_norm (every config), else LN2 on row 0 only
 *     out  = [x2[0] + γ2·MLP(x2[0]); 2·x2[1:]]             (the MLP runs on the class token;
 *                                                           the patch tokens are added to themselves)
 *
 * One forward for inference and training (`saves`); the backward walks it
 * in reverse. Gradient convention: parameter gradients accumulate,
 * activation gradients are assigned.
 *
 * @module
 */

import type { Gpu, Tensor } from "../../gpu/runtime.ts";
import { classAttention } from "../../ops/class_attention.ts";
import { classAttentionBackward } from "../../ops/class_attention_backward.ts";
import { copyRows, putRows, takeRows } from "../../ops/copy_rows.ts";
import { residual } from "../../ops/elementwise.ts";
import { layerNorm } from "../../ops/layer_norm.ts";
import { layerNormBackward } from "../../ops/layer_norm_backward.ts";
import { linear } from "../../ops/linear.ts";
import { linearBackward } from "../../ops/linear_backward.ts";
import { residualBackward } from "../../ops/residual_backward.ts";
import { mlp, mlpBackward } from "../../nn/mlp.ts";
import type { MlpSaves } from "../../nn/mlp.ts";
import type { NormParams } from "../../nn/block.ts";
import type { VisionConfig } from "../config.ts";
import type { ClassBlockParams } from "./params.ts";

/** What the forward keeps for {@linkcode classBlockBackward}. */
export interface ClassBlockSaves {
  /** `[B, M, D]` block input. */
  x: Tensor;
  /** `[B, M, D]` LN1 output. */
  n1: Tensor;
  /** `[B, M, 3D]` */
  qkv: Tensor;
  /** `[B, 1, D]` class attention output (proj's input). */
  ca: Tensor;
  /** `[B, M, D]` the attention module's output. */
  a: Tensor;
  /** `[B, M, D]` after the first residual (LN2's input). */
  x1: Tensor;
  /** `[B, 1, D]` the class row of x1 (LN2's input without tokens_norm). */
  cls1: Tensor | null;
  /** `[B, 1, D]` the class row after LN2 (the MLP's input). */
  cls2: Tensor;
  mlp: MlpSaves;
  /** `[B, 1, D]` MLP output (before γ2). */
  m: Tensor;
}

function copyOf(gpu: Gpu, t: Tensor): Tensor {
  const c = gpu.empty(t.shape, "f32", "cls_block.copy");
  gpu.copy(t, c);
  return c;
}

async function norm(gpu: Gpu, p: NormParams, x: Tensor, eps: number): Promise<Tensor> {
  return await layerNorm(gpu, x, p.weight, p.bias, eps);
}

/**
 * Record one class-attention block on `x` `[B, M, D]` (class token first):
 * returns the new tokens and, when asked, the saves.
 */
export async function classBlock(
  gpu: Gpu,
  cfg: VisionConfig,
  p: ClassBlockParams,
  x: Tensor,
  options: {
    saves?: boolean;
    /** Receives the attention's projection `qkv` `[B, M, 3D]` while it is valid (inspect). */
    onQkv?: (qkv: Tensor) => void;
  } = {},
): Promise<{ y: Tensor; saves: ClassBlockSaves | null }> {
  const eps = cfg.norm_eps;
  const n1 = await norm(gpu, p.norm1, x, eps);
  const qkv = await linear(gpu, n1, p.qkv.weight, p.qkv.bias);
  options.onQkv?.(qkv);
  const ca = await classAttention(gpu, qkv, cfg.num_heads); // [B, 1, D]
  const proj = await linear(gpu, ca, p.proj.weight, p.proj.bias);
  const a = copyOf(gpu, n1);
  await putRows(gpu, proj, a, 0);
  const x1 = copyOf(gpu, x);
  await residual(gpu, x1, a, p.gamma1);
  let x2: Tensor;
  let cls1: Tensor | null = null;
  if (cfg.tokens_norm) {
    x2 = await norm(gpu, p.norm2, x1, eps);
  } else {
    cls1 = await takeRows(gpu, x1, 0, 1);
    const n2 = await norm(gpu, p.norm2, cls1, eps);
    x2 = copyOf(gpu, x1);
    await putRows(gpu, n2, x2, 0);
    n2.destroy();
  }
  const cls2 = await takeRows(gpu, x2, 0, 1);
  const clsOut = copyOf(gpu, cls2);
  // clsOut += γ2·m, fused into the MLP's last product (m itself kept for the backward).
  const m = options.saves ? gpu.empty(cls2.shape, "f32", "cls_block.m") : undefined;
  const ml = await mlp(gpu, cls2, p.mlp, {
    saves: options.saves,
    residual: { x: clsOut, gamma: p.gamma2, out: m },
  });
  const y = copyOf(gpu, x2);
  await residual(gpu, y, x2, null); // 2·x2: the patch tokens are added to themselves
  await putRows(gpu, clsOut, y, 0);
  for (const t of [proj, x2, clsOut]) t.destroy();
  if (m) {
    return { y, saves: { x, n1, qkv, ca, a, x1, cls1, cls2, mlp: ml.saves!, m } };
  }
  for (const t of [n1, qkv, ca, a, x1, cls2]) t.destroy();
  cls1?.destroy();
  return { y, saves: null };
}

/**
 * Record one class-attention block's backward from ∂out `[B, M, D]`: adds
 * every parameter's gradient into `grads` and returns ∂x (new).
 */
export async function classBlockBackward(
  gpu: Gpu,
  dOut: Tensor,
  args: {
    cfg: VisionConfig;
    params: ClassBlockParams;
    grads: ClassBlockParams;
    saves: ClassBlockSaves;
  },
): Promise<Tensor> {
  const { cfg, params: p, grads: g, saves: s } = args;
  const eps = cfg.norm_eps;
  const [B, M, D] = dOut.shape;
  const temps: Tensor[] = [];
  const tmp = (t: Tensor) => {
    temps.push(t);
    return t;
  };
  try {
    // out = [cls2 + γ2·m; 2·x2[1:]]
    const dx2 = tmp(copyOf(gpu, dOut));
    await residual(gpu, dx2, dOut, null);
    const dCls = tmp(await takeRows(gpu, dOut, 0, 1));
    const dm = tmp(
      await residualBackward(gpu, { dy: dCls, f: s.m, gamma: p.gamma2, dGamma: g.gamma2 }),
    );
    const dClsMlp = tmp(
      await mlpBackward(gpu, { dy: dm, saves: s.mlp, params: p.mlp, grads: g.mlp }),
    );
    await residual(gpu, dCls, dClsMlp, null);
    await putRows(gpu, dCls, dx2, 0);
    // x2 = LN2(x1) (every token, or the class token only)
    let dx1: Tensor;
    if (cfg.tokens_norm) {
      dx1 = await layerNormBackward(gpu, {
        dy: dx2,
        x: s.x1,
        weight: p.norm2.weight,
        eps,
        dWeight: g.norm2.weight,
        dBias: g.norm2.bias,
      });
    } else {
      const dRow = tmp(await takeRows(gpu, dx2, 0, 1));
      const dCls1 = tmp(
        await layerNormBackward(gpu, {
          dy: dRow,
          x: s.cls1!,
          weight: p.norm2.weight,
          eps,
          dWeight: g.norm2.weight,
          dBias: g.norm2.bias,
        }),
      );
      dx1 = copyOf(gpu, dx2);
      await putRows(gpu, dCls1, dx1, 0);
    }
    // x1 = x + γ1·a: dx1 is the stream gradient from here on.
    const da = tmp(
      await residualBackward(gpu, { dy: dx1, f: s.a, gamma: p.gamma1, dGamma: g.gamma1 }),
    );
    const dProj = tmp(await takeRows(gpu, da, 0, 1));
    const dca = tmp(
      await linearBackward(gpu, {
        dy: dProj,
        x: s.ca,
        weight: p.proj.weight,
        dWeight: g.proj.weight,
        dBias: g.proj.bias,
      }),
    );
    const dqkv = tmp(
      await classAttentionBackward(gpu, { dOut: dca, qkv: s.qkv, heads: cfg.num_heads }),
    );
    const dn1 = tmp(
      await linearBackward(gpu, {
        dy: dqkv,
        x: s.n1,
        weight: p.qkv.weight,
        dWeight: g.qkv.weight,
        dBias: g.qkv.bias,
      }),
    );
    // The patch rows of ∂a reach LN1's output directly; its class rows went through attention.
    const zero = tmp(gpu.empty([1, D], "f32", "cls_block.zero"));
    await copyRows(gpu, zero, da, {
      batches: B,
      rows: 1,
      cols: D,
      srcBatchRows: 0,
      dstBatchRows: M,
    });
    await residual(gpu, dn1, da, null);
    await layerNormBackward(gpu, {
      dy: dn1,
      x: s.x,
      weight: p.norm1.weight,
      eps,
      dWeight: g.norm1.weight,
      dBias: g.norm1.bias,
      dxInto: dx1, // dx1 += ∂x through norm1
    });
    return dx1;
  } finally {
    for (const t of temps) t.destroy();
  }
}
