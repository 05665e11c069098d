/**
 * Uploading named checkpoint tensors to the GPU for the models: every weight
 * is looked up by its PyTorch `state_dict` name, checked against the shape
 * the model expects, converted to f32 and uploaded once.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { toF32 } from "../io/dtype.ts";
import type { StTensor } from "../io/safetensors.ts";

/** Tensors by `state_dict` name, as a safetensors file or a checkpoint gives them. */
export type NamedTensors = ReadonlyMap<string, StTensor>;

/** A linear layer's weight `[out, in]` and optional bias `[out]`. */
export interface LinearParams {
  weight: Tensor;
  bias: Tensor | null;
}

/** A LayerNorm's weight `[C]` and optional bias `[C]`. */
export interface NormParams {
  weight: Tensor;
  bias: Tensor | null;
}

/** Reads named tensors as f32 host arrays, checking shapes, and uploads them. */
export class ParamUploader {
  readonly uploaded: Tensor[] = [];
  constructor(readonly gpu: Gpu, readonly tensors: NamedTensors) {}

  /**
   * The host values of `name`, which must have `shape` (or, with `reshape`,
   * the same number of values, e.g. a 1×1 convolution read as a matrix).
   *
   * @throws {RangeError} when missing; {TypeError} when misshapen or not a float tensor
   */
  host(name: string, shape: readonly number[], reshape = false): Float32Array<ArrayBuffer> {
    const t = this.tensors.get(name);
    if (!t) throw new RangeError(`Missing parameter "${name}" (expected shape [${shape}])`);
    const same = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
    const count = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
    if (!same && !(reshape && count(t.shape) === count(shape))) {
      throw new TypeError(`Parameter "${name}" has shape [${t.shape}], expected [${shape}]`);
    }
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16" && t.dtype !== "F64") {
      throw new TypeError(`Parameter "${name}" is ${t.dtype}, not a float tensor`);
    }
    return toF32(t.dtype, t.data);
  }

  /** Upload host values under a label. */
  upload(values: Float32Array<ArrayBuffer>, shape: readonly number[], label: string): Tensor {
    const t = this.gpu.upload(values, shape, label);
    this.uploaded.push(t);
    return t;
  }

  /** Upload the tensor `name`, checked to have `shape`. */
  param(name: string, shape: readonly number[], reshape = false): Tensor {
    return this.upload(this.host(name, shape, reshape), shape, name);
  }

  /** `prefix.weight` `[out, in]` and, when `bias`, `prefix.bias` `[out]`. */
  linear(prefix: string, out: number, inp: number, bias: boolean): LinearParams {
    return {
      weight: this.param(`${prefix}.weight`, [out, inp]),
      bias: bias ? this.param(`${prefix}.bias`, [out]) : null,
    };
  }

  /** A LayerNorm's `prefix.weight` and, when `bias`, `prefix.bias`. */
  norm(prefix: string, C: number, bias: boolean): NormParams {
    return {
      weight: this.param(`${prefix}.weight`, [C]),
      bias: bias ? this.param(`${prefix}.bias`, [C]) : null,
    };
  }

  /** Destroy everything uploaded so far (after a failure half-way). */
  destroy(): void {
    for (const t of this.uploaded) t.destroy();
    this.uploaded.length = 0;
  }
}

/**
 * Temporary tensors of one forward pass, destroyed together at the end.
 *
 * A whole forward is one submission, and WebGPU frees a destroyed buffer
 * only after the submission that used it, so destroying temporaries early
 * saves nothing. Instead a temporary whose last reader has been recorded can
 * be {@linkcode Scratch.recycle}d, and {@linkcode Scratch.empty} hands it out
 * again for a later output of the same shape: dispatches run in recording
 * order, so the new writer runs after the old readers. Block i + 1 thus
 * reuses block i's buffers, and peak memory does not grow with depth.
 */
export class Scratch {
  readonly #tensors: Tensor[] = [];
  readonly #free = new Map<string, Tensor[]>();

  /** Remember `t` for {@linkcode release}; returns it. */
  keep(t: Tensor): Tensor {
    this.#tensors.push(t);
    return t;
  }

  /** A kept f32 tensor of `shape`: a recycled one if any, else a new one. */
  empty(gpu: Gpu, shape: readonly number[], label: string): Tensor {
    const reused = this.#free.get(shape.join(","))?.pop();
    return reused ?? this.keep(gpu.empty(shape, "f32", label));
  }

  /**
   * Offer kept tensors for reuse by later {@linkcode empty} calls. Call only
   * once every dispatch that reads them has been recorded.
   */
  recycle(...ts: Tensor[]): void {
    for (const t of ts) {
      if (t.dtype !== "f32" || !this.#tensors.includes(t)) continue;
      const key = t.shape.join(",");
      const list = this.#free.get(key) ?? [];
      if (!list.includes(t)) list.push(t);
      this.#free.set(key, list);
    }
  }

  /** Destroy every kept tensor except those in `except`. */
  release(except: readonly Tensor[] = []): void {
    for (const t of this.#tensors) if (!except.includes(t)) t.destroy();
    this.#tensors.length = 0;
    this.#free.clear();
  }
}

/** Called with every named intermediate activation while a forward is recorded. */
export type ActivationHook = (name: string, t: Tensor) => void;

/** Logits of a forward and, when requested, copies of its named activations. */
export interface ForwardOutput {
  logits: Float32Array;
  /** Fixture-named activations, when requested. */
  activations: Map<string, { shape: number[]; data: Float32Array }>;
}

/**
 * Record a whole forward with `encode`, submit it once and read back the
 * logits and, with `activations`, a copy of every activation the forward
 * reports through its hook.
 */
export async function readForward(
  gpu: Gpu,
  activations: boolean,
  encode: (onActivation: ActivationHook | undefined) => Promise<Tensor>,
): Promise<ForwardOutput> {
  const saved: [string, Tensor][] = [];
  try {
    const onActivation: ActivationHook | undefined = activations
      ? (name, t) => {
        const copy = gpu.empty(t.shape, "f32", `act.${name}`);
        gpu.copy(t, copy);
        saved.push([name, copy]);
      }
      : undefined;
    const logits = await encode(onActivation);
    try {
      const out: ForwardOutput = {
        logits: (await gpu.read(logits)) as Float32Array,
        activations: new Map(),
      };
      for (const [name, t] of saved) {
        out.activations.set(name, {
          shape: [...t.shape],
          data: (await gpu.read(t)) as Float32Array,
        });
      }
      return out;
    } finally {
      logits.destroy();
    }
  } finally {
    for (const [, t] of saved) t.destroy();
  }
}
