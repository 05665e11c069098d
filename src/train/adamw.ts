/**
 * AdamW as `torch.optim.AdamW` computes it (decoupled weight decay), with the
 * reference training recipe's parameter groups: weight decay on weights of two
 * or more dimensions except ToST's `temp` and `denom_bias`; none on biases,
 * norms and layer scales (`gamma1`, `gamma2`).
 *
 * One dispatch over every parameter at once (`kernels/adamw.wgsl`): the
 * parameters, gradients and moments are flat stores laid out alike
 * (`model/params.ts`), decayed tensors first, so the kernel applies weight
 * decay below one index. A store over one binding's limit takes one
 * dispatch per binding-sized window. The kernel also applies the
 * global-norm clipping (reading the squared norm `clip.ts` left on the GPU)
 * and the 1/micro-steps scale of gradient accumulation, and zeroes the
 * gradient for the next step, so the training loop never zeroes gradients
 * itself. It updates nothing once the halt word on the GPU names a
 * non-finite step (`step.ts`), so a diverging run keeps its last good
 * parameters without the host looking at any loss.
 *
 * @module
 */

import type { BufferRange, Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import type { FlatSegment } from "../model/params.ts";
import { bindingLimit } from "../ops/_shapes.ts";
import adamwWgsl from "../../kernels/adamw.wgsl" with { type: "text" };

const WORKGROUP_SIZE = 256;

/** AdamW's hyperparameters (the per-step learning rate comes separately). */
export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One trained tensor: its value, gradient and the two moment estimates (same shape). */
export interface OptimizedParam {
  /** `state_dict` name. */
  name: string;
  param: Tensor;
  grad: Tensor;
  /** First moment (`exp_avg`). */
  m: Tensor;
  /** Second moment (`exp_avg_sq`). */
  v: Tensor;
  /** Whether weight decay applies ({@linkcode decays}). */
  decay: boolean;
}

/**
 * The optimizer's flat buffers: the trained segments of the parameter,
 * gradient and moment stores (`ParamStore.segments`), laid out alike.
 */
export interface FlatOptimizerState {
  param: readonly FlatSegment[];
  grad: readonly FlatSegment[];
  m: readonly FlatSegment[];
  v: readonly FlatSegment[];
}

/** What one {@linkcode adamwStep} needs besides the parameters. */
export interface AdamWStep extends AdamWOptions {
  /** Learning rate of this step. */
  lr: number;
  /** 1-based step count `t` (for the bias corrections). */
  step: number;
  /** Multiplies the accumulated gradients (1 / micro-steps). */
  gradScale: number;
  /** Global-norm clipping threshold; 0 disables clipping. */
  maxNorm: number;
  /** f32 `[1]` holding Σ grad² of the accumulated (unscaled) gradients. */
  normSq: Tensor;
  /**
   * u32 tensor whose first word, when not 0, skips the update (gradients
   * are still zeroed): the training stats' halt word (`step.ts`).
   */
  halt: Tensor;
}

export { decays } from "../model/params.ts";

/**
 * Check AdamW's hyperparameters.
 *
 * @throws {RangeError} for betas outside [0, 1), a non-positive eps or a negative decay
 */
export function checkAdamW(o: AdamWOptions): void {
  for (const [k, b] of [["beta1", o.beta1], ["beta2", o.beta2]] as const) {
    if (!(b >= 0 && b < 1)) throw new RangeError(`${k} must be in [0, 1), got ${b}`);
  }
  if (!(o.eps > 0 && Number.isFinite(o.eps))) {
    throw new RangeError(`eps must be a positive number, got ${o.eps}`);
  }
  if (!(o.weightDecay >= 0 && Number.isFinite(o.weightDecay))) {
    throw new RangeError(`weight_decay must be ≥ 0, got ${o.weightDecay}`);
  }
}

/**
 * Windows of at most `maxBytes` (aligned starts) covering `n` elements.
 * @returns element ranges `[start, end)`
 */
export function bindingWindows(n: number, maxBytes: number, align: number): [number, number][] {
  const size = Math.floor(maxBytes / align) * align / 4;
  if (size < 1) throw new RangeError(`A ${maxBytes}-byte binding holds no aligned window`);
  const out: [number, number][] = [];
  for (let start = 0; start < n; start += size) out.push([start, Math.min(n, start + size)]);
  return out;
}

/**
 * Record one AdamW step on every parameter (and zero their gradients):
 * one dispatch per flat segment (per binding window of one).
 * Records dispatches only.
 *
 * @param maxBindingBytes a smaller per-binding limit than the device's (for tests)
 * @throws {RangeError} for a step count below 1 or bad hyperparameters
 * @throws {TypeError} when the four stores are not laid out alike
 * @example
 * ```ts ignore
 * await gradNormSquared(gpu, flat.grad.map((g) => g.tensor), normSq);
 * await adamwStep(gpu, flat, { lr, step, beta1: 0.9, beta2: 0.95, eps: 1e-8,
 *   weightDecay: 0.1, gradScale: 1, maxNorm: 1, normSq, halt });
 * ```
 */
export async function adamwStep(
  gpu: Gpu,
  flat: FlatOptimizerState,
  s: AdamWStep,
  maxBindingBytes?: number,
): Promise<void> {
  checkAdamW(s);
  if (!Number.isInteger(s.step) || s.step < 1) {
    throw new RangeError(`AdamW step count must be an integer ≥ 1, got ${s.step}`);
  }
  if (s.halt.dtype !== "u32" || s.halt.numel < 1) {
    throw new TypeError(`AdamW: halt must be a non-empty u32 tensor, got ${s.halt.dtype}`);
  }
  // vec4 loads: twice as fast as f32 on lavapipe (measured); segments are whole vec4s.
  const width = 4;
  const kernel = await gpu.kernel("adamw", adamwWgsl, {
    workgroupSize: WORKGROUP_SIZE,
    vecType: "vec4f",
  });
  const bc1 = 1 - s.beta1 ** s.step;
  const sqrtBc2 = Math.sqrt(1 - s.beta2 ** s.step);
  const limit = bindingLimit(gpu, { maxBindingBytes });
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  for (const [k, seg] of flat.param.entries()) {
    const others = [flat.grad[k], flat.m[k], flat.v[k]];
    for (const o of others) {
      if (
        flat.grad.length !== flat.param.length || !o || o.tensor.numel !== seg.tensor.numel ||
        o.decayEnd !== seg.decayEnd
      ) {
        throw new TypeError(`AdamW: the optimizer's stores differ in layout at segment ${k}`);
      }
    }
    const buffers = [seg.tensor, ...others.map((o) => o.tensor)];
    for (const [start, end] of bindingWindows(seg.tensor.numel, limit, align)) {
      const n = end - start;
      const bind = (t: Tensor): BufferRange => ({ tensor: t, offset: start * 4, size: n * 4 });
      const decayEnd = Math.max(0, Math.min(n, seg.decayEnd - start));
      if (n % width !== 0 || decayEnd % width !== 0) {
        throw new RangeError(`AdamW: a ${n}-element window is not whole vec${width}s`);
      }
      gpu.dispatch(kernel, {
        bindings: [...buffers.map(bind), s.normSq, s.halt],
        params: [
          n / width,
          decayEnd / width,
          f32(s.lr),
          f32(s.beta1),
          f32(s.beta2),
          f32(s.eps),
          f32(s.weightDecay),
          f32(bc1),
          f32(sqrtBc2),
          f32(s.gradScale),
          f32(s.maxNorm),
        ],
        workgroups: Math.ceil(n / width / WORKGROUP_SIZE),
      });
    }
  }
}

/** Host state of one tensor for {@linkcode adamwStepReference}. */
export interface AdamWStateReference {
  param: Float64Array;
  grad: ArrayLike<number>;
  m: Float64Array;
  v: Float64Array;
  decay: boolean;
}

/**
 * The same step in float64 on the host, for tests: PyTorch's AdamW formulas
 * applied to `grad · gradScale · clip` (clip from the global norm), updating
 * `param`, `m` and `v` in place.
 *
 * @example
 * ```ts
 * import { adamwStepReference } from "./adamw.ts";
 * const s = { param: new Float64Array([1]), grad: [0.5], m: new Float64Array(1),
 *   v: new Float64Array(1), decay: false };
 * adamwStepReference([s], { lr: 0.1, step: 1, beta1: 0.9, beta2: 0.999, eps: 0,
 *   weightDecay: 0, gradScale: 1, maxNorm: 0 });
 * if (Math.abs(s.param[0] - 0.9) > 1e-12) throw new Error("first step moves by lr");
 * ```
 */
export function adamwStepReference(
  states: readonly AdamWStateReference[],
  s: Omit<AdamWStep, "normSq" | "halt">,
): void {
  let sq = 0;
  for (const st of states) for (let i = 0; i < st.grad.length; i++) sq += st.grad[i] ** 2;
  const norm = Math.sqrt(sq) * s.gradScale;
  const clip = s.maxNorm > 0 ? Math.min(1, s.maxNorm / (norm + 1e-6)) : 1;
  const bc1 = 1 - s.beta1 ** s.step;
  const bc2 = 1 - s.beta2 ** s.step;
  for (const st of states) {
    const wd = st.decay ? s.weightDecay : 0;
    for (let i = 0; i < st.param.length; i++) {
      const g = st.grad[i] * s.gradScale * clip;
      st.m[i] = s.beta1 * st.m[i] + (1 - s.beta1) * g;
      st.v[i] = s.beta2 * st.v[i] + (1 - s.beta2) * g * g;
      st.param[i] *= 1 - s.lr * wd;
      st.param[i] -= (s.lr / bc1) * st.m[i] / (Math.sqrt(st.v[i]) / Math.sqrt(bc2) + s.eps);
    }
  }
}
