/**
 * The global L2 norm of all gradients, as `torch.nn.utils.clip_grad_norm_`
 * measures it: one GPU reduction over the gradients (one flat buffer,
 * `model/params.ts`, so two dispatches in all), in a fixed
 * order (per-workgroup partial sums, then one workgroup adds them), so the
 * result is identical from run to run. The clipping itself is applied inside
 * the AdamW kernel (see `adamw.ts`), which reads the squared norm from the
 * GPU buffer this writes: no read-back is needed to clip.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { bindingLimit } from "../ops/_shapes.ts";
import { bindingWindows } from "./adamw.ts";
import gradNormWgsl from "../../kernels/grad_norm.wgsl" with { type: "text" };

const WORKGROUP_SIZE = 256;
const PER_WORKGROUP = 4096;

/** Partial-sum slots needed for tensors of these element counts. */
function partialCount(sizes: readonly number[]): number {
  return sizes.reduce((a, n) => a + Math.ceil(n / PER_WORKGROUP), 0);
}

/**
 * Record `out[0] = Σ_tensors Σ_i t[i]²` (the squared global norm) into the
 * f32 tensor `out` (at least one element). Records dispatches only.
 *
 * @param tensors f32 tensors (one larger than a binding takes several partial dispatches)
 * @param maxBindingBytes a smaller per-binding limit than the device's (for tests)
 * @throws {TypeError} for a non-f32 tensor or an empty `out`
 * @example
 * ```ts ignore
 * const normSq = gpu.empty([1]);
 * await gradNormSquared(gpu, grads, normSq);
 * const norm = Math.sqrt((await gpu.read(normSq))[0]);
 * ```
 */
export async function gradNormSquared(
  gpu: Gpu,
  tensors: readonly Tensor[],
  out: Tensor,
  maxBindingBytes?: number,
): Promise<void> {
  if (out.dtype !== "f32" || out.numel < 1) {
    throw new TypeError(`gradNormSquared: out must be a non-empty f32 tensor, got [${out.shape}]`);
  }
  const slots = (vec4: boolean) => ({
    workgroupSize: WORKGROUP_SIZE,
    perWorkgroup: vec4 ? PER_WORKGROUP / 4 : PER_WORKGROUP,
    vecType: vec4 ? "vec4f" : "f32",
    square: vec4 ? "dot(x, x)" : "x * x",
  });
  // vec4 loads where a piece is whole vec4s (the flat gradients): faster on lavapipe.
  const [partialK, partial4K, totalK] = await Promise.all([
    gpu.kernel("grad_norm", gradNormWgsl, slots(false), "partial"),
    gpu.kernel("grad_norm", gradNormWgsl, slots(true), "partial"),
    gpu.kernel("grad_norm", gradNormWgsl, slots(false), "total"),
  ]);
  const limit = bindingLimit(gpu, { maxBindingBytes });
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const pieces = tensors.flatMap((t) => {
    if (t.dtype !== "f32") {
      throw new TypeError(`gradNormSquared: tensors must be f32, got ${t.dtype} [${t.shape}]`);
    }
    return bindingWindows(t.numel, limit, align).map(([start, end]) => ({ t, start, end }));
  });
  const count = partialCount(pieces.map((p) => p.end - p.start));
  const partials = gpu.empty([Math.max(1, count)], "f32", "grad_norm.partials");
  try {
    let offset = 0;
    for (const { t, start, end } of pieces) {
      const n = end - start;
      const groups = Math.ceil(n / PER_WORKGROUP);
      const vec4 = n % 4 === 0 && start % 4 === 0;
      gpu.dispatch(vec4 ? partial4K : partialK, {
        bindings: [{ tensor: t, offset: start * 4, size: n * 4 }, partials],
        params: [vec4 ? n / 4 : n, offset],
        workgroups: groups,
      });
      offset += groups;
    }
    gpu.dispatch(totalK, { bindings: [partials, out], params: [count, 0], workgroups: 1 });
  } finally {
    partials.destroy();
  }
}

/**
 * The same on the host in float64, for tests.
 *
 * @example
 * ```ts
 * import { gradNormSquaredReference } from "./clip.ts";
 * if (gradNormSquaredReference([[3], [4]]) !== 25) throw new Error("norm");
 * ```
 */
export function gradNormSquaredReference(tensors: readonly ArrayLike<number>[]): number {
  let s = 0;
  for (const t of tensors) for (let i = 0; i < t.length; i++) s += t[i] * t[i];
  return s;
}

/**
 * PyTorch's clipping factor: `min(1, maxNorm / (norm + 1e-6))`, or 1 when
 * `maxNorm` is 0 (no clipping).
 *
 * @example
 * ```ts
 * import { clipCoefficient } from "./clip.ts";
 * if (clipCoefficient(2, 1) >= 0.5 || clipCoefficient(0.5, 1) !== 1) throw new Error("clip");
 * ```
 */
export function clipCoefficient(norm: number, maxNorm: number): number {
  if (!(maxNorm > 0)) return 1;
  return Math.min(1, maxNorm / (norm + 1e-6));
}
