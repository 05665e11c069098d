/**
 * Backward of class attention (CaiT/XCiT; forward in `class_attention.ts`):
 * only the class token (token 0) queries, over all `M` tokens of packed
 * `qkv [B, M, 3C]` (last dimension `(3, heads, d)`), output `[B, 1, C]`.
 *
 *     p_j  = softmax_j(q·k_j/√d),   dp_j = ∂out·v_j,   ds_j = p_j·(dp_j − Σ p·dp)/√d
 *     ∂q   = Σ_j ds_j·k_j  (class token only),  ∂k_j = ds_j·q,  ∂v_j = p_j·∂out
 *
 * The softmax weights are recomputed (two passes), so the forward saves
 * nothing beyond `qkv`. Cost linear in M.
 *
 * GPU kernels: `kernels/class_attention_backward_coef.wgsl` (one workgroup
 * per batch and head: p_j and ds_j) and
 * `kernels/class_attention_backward_qkv.wgsl` (one thread per element of
 * ∂qkv). Float64 reference: `softmaxAttentionBackwardReference(…, { classToken:
 * true })` in `attention_reference.ts`.
 *
 * Gradient convention: activation gradients are assigned (returned new).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import coefWgsl from "../../kernels/class_attention_backward_coef.wgsl" with { type: "text" };
import qkvWgsl from "../../kernels/class_attention_backward_qkv.wgsl" with { type: "text" };
import { assertF32, assertShape } from "./_shapes.ts";
import { qkvShape } from "./_attention_shape.ts";

const WG = 64;

/**
 * Class attention backward on the GPU. Records dispatches only; `qkv` and
 * its gradient must fit one storage binding.
 *
 * @param args `dOut` f32 `[B, 1, C]` (or `[B, C]`), the forward's `qkv`
 *   `[B, M, 3C]`, and the head count
 * @returns ∂qkv `[B, M, 3C]` (assigned)
 * @throws {TypeError} for wrong shapes, no tokens or a head count that does not divide C
 * @example
 * ```ts ignore
 * const dqkv = await classAttentionBackward(gpu, { dOut, qkv, heads: 4 });
 * ```
 */
export async function classAttentionBackward(
  gpu: Gpu,
  args: { dOut: Tensor; qkv: Tensor; heads: number },
): Promise<Tensor> {
  const op = "classAttentionBackward";
  const { dOut, qkv, heads } = args;
  const { B, N: M, H, d, C } = qkvShape(op, qkv, heads);
  if (M === 0) throw new TypeError(`${op}: qkv has no tokens (the class token is token 0)`);
  assertF32(op, "dOut", dOut);
  if (dOut.numel !== B * C) {
    throw new TypeError(`${op}: dOut [${dOut.shape}] does not hold [${B}, 1, ${C}]`);
  }
  if (dOut.shape.length === 3) assertShape(op, "dOut", dOut, [B, 1, C]);
  gpu.assertBindable(`${op}: qkv`, qkv.byteSize);
  const dqkv = gpu.empty(qkv.shape, "f32", `${op}.dqkv`);
  if (B === 0) return dqkv;
  const coef = gpu.empty([B, H, M, 2], "f32", `${op}.coef`);
  try {
    gpu.assertBindable(`${op}: coefficients`, coef.byteSize);
    const [coefKernel, qkvKernel] = await Promise.all([
      gpu.kernel("class_attention_backward_coef", coefWgsl),
      gpu.kernel("class_attention_backward_qkv", qkvWgsl),
    ]);
    gpu.dispatch(coefKernel, {
      bindings: [qkv, dOut, coef],
      params: [B * H, H, d, C, M, f32(1 / Math.sqrt(d))],
      workgroups: B * H,
    });
    const n = qkv.numel;
    gpu.dispatch(qkvKernel, {
      bindings: [qkv, dOut, coef, dqkv],
      params: [n, H, d, C, M],
      workgroups: Math.ceil(n / WG),
    });
  } catch (err) {
    dqkv.destroy();
    throw err;
  } finally {
    coef.destroy();
  }
  return dqkv;
}
