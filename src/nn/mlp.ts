/**
 * The MLP of a transformer block — timm's `Mlp` (`fc1` → GELU → `fc2`) and
 * nanoGPT's `MLP` (`c_fc` → GELU → `c_proj`) — forward (with its saves on
 * request) and backward. Exact (erf) GELU; dropout is the identity.
 *
 * The forward is two dispatches of the GEMM engine: GELU runs in `fc1`'s
 * epilogue (which also writes the pre-activation when the backward needs
 * it), and with `residual` the output is added into the residual stream in
 * `fc2`'s epilogue (`x += γ ⊙ mlp(h)`) instead of a pass of its own.
 *
 * Gradient convention: parameter gradients accumulate, ∂x is assigned.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { linear } from "../ops/linear.ts";
import { linearBackward } from "../ops/linear_backward.ts";
import { geluBackward } from "../ops/gelu_backward.ts";
import type { ResidualInto } from "./_projected.ts";

/** A linear layer's weight `[out, in]` and optional bias `[out]` (or their gradients). */
export interface LinearParams {
  weight: Tensor;
  bias: Tensor | null;
}

/** The MLP's two layers: `fc1`/`c_fc` `[hidden, D]` and `fc2`/`c_proj` `[D, hidden]`. */
export interface MlpParams {
  fc1: LinearParams;
  fc2: LinearParams;
}

/** What {@linkcode mlp} keeps for {@linkcode mlpBackward}. */
export interface MlpSaves {
  /** The input `[..., D]` (the caller's tensor). */
  x: Tensor;
  /** `fc1` output `[..., hidden]` (GELU's input). */
  h: Tensor;
  /** GELU output `[..., hidden]` (`fc2`'s input). */
  a: Tensor;
}

/** How {@linkcode mlp} runs. */
export interface MlpOptions {
  /** Keep what the backward needs and return it. */
  saves?: boolean;
  /**
   * Add the output into this residual stream in place (fused into `fc2`)
   * and return the stream; `residual.out` (when given) receives the output.
   */
  residual?: ResidualInto;
}

/**
 * Record `fc2(gelu(fc1(x)))` on `x` `[..., D]`; returns `[..., D]` (or the
 * residual stream it was added into) and, when asked, the saves (otherwise
 * the hidden activations are freed).
 */
export async function mlp(
  gpu: Gpu,
  x: Tensor,
  p: MlpParams,
  options: MlpOptions = {},
): Promise<{ out: Tensor; saves: MlpSaves | null }> {
  const hidden = p.fc1.weight.shape[0];
  const h = options.saves
    ? gpu.empty([...x.shape.slice(0, -1), hidden], "f32", "mlp.h") // GELU's input
    : undefined;
  const a = await linear(gpu, x, p.fc1.weight, p.fc1.bias, undefined, {
    epilogue: { gelu: true, preActivation: h },
  });
  const res = options.residual;
  const out = await linear(
    gpu,
    a,
    p.fc2.weight,
    p.fc2.bias,
    res?.out,
    res ? { residual: { x: res.x, gamma: res.gamma } } : {},
  );
  if (h) return { out, saves: { x, h, a } };
  a.destroy();
  return { out, saves: null };
}

/** Record the MLP backward: adds the layers' gradients into `grads`, returns ∂x (new). */
export async function mlpBackward(
  gpu: Gpu,
  args: { dy: Tensor; saves: MlpSaves; params: MlpParams; grads: MlpParams },
): Promise<Tensor> {
  const { dy, saves: s, params: p, grads: g } = args;
  const temps: Tensor[] = [];
  try {
    const da = await linearBackward(gpu, {
      dy,
      x: s.a,
      weight: p.fc2.weight,
      dWeight: g.fc2.weight,
      dBias: g.fc2.bias,
    });
    temps.push(da);
    const dh = await geluBackward(gpu, { dy: da, x: s.h });
    temps.push(dh);
    return await linearBackward(gpu, {
      dy: dh,
      x: s.x,
      weight: p.fc1.weight,
      dWeight: g.fc1.weight,
      dBias: g.fc1.bias,
    });
  } finally {
    for (const t of temps) t.destroy();
  }
}
