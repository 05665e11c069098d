/**
 * The skeleton every attention module of tost shares: an input projection,
 * an attention operator, an output projection (dropout is the identity),
 *
 *     w = x·W_inᵀ + b_in,   y = op(w),   out = y·W_outᵀ + b_out,
 *
 * on the GPU (forward with optional saves, backward); its float64 reference
 * is `_projected_reference.ts`. The modules (`tssa_attention.ts`,
 * `causal_tssa_attention.ts`, `softmax_self_attention.ts`) differ only in the
 * operator they put in the middle.
 *
 * Gradient convention (as in llm.c): parameter gradients accumulate (`+=`),
 * activation gradients are assigned.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { linear } from "../ops/linear.ts";
import { linearBackward } from "../ops/linear_backward.ts";

/** The two projections of an attention module (PyTorch layouts: weights `[out, in]`). */
export interface Projections {
  /** Input projection weight (`qkv.weight`, `c_attn.weight`), `[P, D]`. */
  inWeight: Tensor;
  /** Its bias `[P]`, or null. */
  inBias: Tensor | null;
  /** Output projection weight (`to_out.0.weight`, `proj.weight`, `c_proj.weight`), `[D, D]`. */
  outWeight: Tensor;
  /** Its bias `[D]`, or null. */
  outBias: Tensor | null;
}

/** What a module's forward keeps for its backward. */
export interface ProjectedSaves<S> {
  /** The module input `[B, N, D]` (the caller's tensor). */
  x: Tensor;
  /** The input projection `[B, N, P]` (the operator's input). */
  w: Tensor;
  /** The operator's output `[B, N, D]` (the output projection's input). */
  y: Tensor;
  /** The operator's own saves. */
  op: S;
}

/**
 * Where the output projection's result goes instead of a new tensor: added
 * into a residual stream in place, `x += gamma ⊙ out`, fused into the
 * projection's product (the GEMM's residual epilogue: one dispatch, no
 * separate elementwise pass).
 */
export interface ResidualInto {
  /** `[B, N, D]` stream, updated in place. */
  x: Tensor;
  /** `[D]` layer scale, or null for `x += out`. */
  gamma: Tensor | null;
  /** Also receives the module's output (before gamma), when given: the backward's `f`. */
  out?: Tensor;
}

/** The operator in the middle: `w` → `y`, with its saves when asked. */
export type Operator<S> = (w: Tensor, saves: boolean) => Promise<{ y: Tensor; saves: S | null }>;

/**
 * Record `out = proj_out(op(proj_in(x)))`. Without `keep` the projection and
 * the operator's output are freed once read; with it they are returned as
 * the saves. With `residual`, `out` is added into the stream `residual.x`
 * (which is returned as `out`) instead of being written to a new tensor.
 */
export async function projectedForward<S>(
  gpu: Gpu,
  x: Tensor,
  p: Projections,
  op: Operator<S>,
  keep: boolean,
  residual?: ResidualInto,
): Promise<{ out: Tensor; saves: ProjectedSaves<S> | null }> {
  const w = await linear(gpu, x, p.inWeight, p.inBias);
  try {
    const r = await op(w, keep);
    try {
      const out = await linear(
        gpu,
        r.y,
        p.outWeight,
        p.outBias,
        residual?.out,
        residual ? { residual: { x: residual.x, gamma: residual.gamma } } : {},
      );
      if (!keep) return { out, saves: null };
      return { out, saves: { x, w, y: r.y, op: r.saves as S } };
    } finally {
      if (!keep) r.y.destroy();
    }
  } finally {
    if (!keep) w.destroy();
  }
}

/**
 * Record the backward of {@linkcode projectedForward}: through the output
 * projection, the operator (`opBackward`: ∂y → ∂w) and the input
 * projection, adding the projections' gradients into `grads`.
 *
 * @returns ∂x, a new tensor (assigned)
 */
export async function projectedBackward<S>(
  gpu: Gpu,
  args: {
    dy: Tensor;
    saves: ProjectedSaves<S>;
    params: Projections;
    grads: Projections;
    opBackward: (dY: Tensor) => Promise<Tensor>;
  },
): Promise<Tensor> {
  const { dy, saves, params, grads } = args;
  const dY = await linearBackward(gpu, {
    dy,
    x: saves.y,
    weight: params.outWeight,
    dWeight: grads.outWeight,
    dBias: grads.outBias,
  });
  let dw: Tensor;
  try {
    dw = await args.opBackward(dY);
  } finally {
    dY.destroy();
  }
  try {
    return await linearBackward(gpu, {
      dy: dw,
      x: saves.x,
      weight: params.inWeight,
      dWeight: grads.inWeight,
      dBias: grads.inBias,
    });
  } finally {
    dw.destroy();
  }
}
