/**
 * What the plain-TypeScript reference models share besides the ops: named
 * float64 weights, linear and the layer-scaled residual. The float64
 * reference of every other op (LayerNorm, GELU, softmax, attention, TSSA,
 * causal TSSA, 2-D convolution, BatchNorm, cross-entropy) lives beside that
 * op, in `src/ops/<op>_reference.ts`, and that of each attention module
 * beside the module, in `src/nn/<module>_reference.ts`; the models import
 * them from there.
 * Everything is written for clarity, not speed.
 *
 * Layout conventions (dimension names as in the models): activations are
 * row-major; a "rows × C" matrix holds `rows` tokens of `C` features; images
 * and feature maps are `B × C × H × W` (NCHW) as in PyTorch; a linear weight
 * is `[out, in]` as `nn.Linear` stores it.
 *
 * @module
 */

import { toF32 } from "../../io/dtype.ts";
import type { StTensor } from "../../io/safetensors.ts";
import { linearForwardReference } from "../../ops/linear_reference.ts";

/** One named parameter or buffer of a model, widened to float64. */
export interface Param {
  shape: number[];
  data: Float64Array;
}

/** A model's parameters by their PyTorch `state_dict` names. */
export type Weights = Map<string, Param>;

/** Receives an intermediate activation: a module name, its shape and a copy of its values. */
export type Capture = (name: string, shape: number[], data: Float64Array) => void;

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * The parameter `name` of `w`, checked to have `shape`.
 *
 * @throws {RangeError} when it is missing
 * @throws {TypeError} when its shape differs
 * @example
 * ```ts
 * import { param } from "./layers.ts";
 * const w = new Map([["b", { shape: [2], data: new Float64Array([1, 2]) }]]);
 * param(w, "b", [2]).data; // Float64Array [1, 2]
 * ```
 */
export function param(w: Weights, name: string, shape: readonly number[]): Param {
  const p = w.get(name);
  if (!p) throw new RangeError(`Missing parameter "${name}" (expected shape [${shape}])`);
  if (!sameShape(p.shape, shape)) {
    throw new TypeError(`Parameter "${name}" has shape [${p.shape}], expected [${shape}]`);
  }
  return p;
}

/**
 * Widen raw checkpoint tensors (F64, F32, F16, BF16, I64, I32) to float64 {@linkcode Weights}.
 * Integer buffers such as BatchNorm's `num_batches_tracked` are kept (as numbers).
 *
 * @throws {TypeError} for any other dtype, or bytes that do not match the shape
 * @example
 * ```ts
 * import { weightsFromTensors } from "./layers.ts";
 * const bytes = new Uint8Array(new Float32Array([0.5, -2]).buffer);
 * const w = weightsFromTensors(new Map([["x", { dtype: "F32", shape: [2], data: bytes }]]));
 * w.get("x")?.data; // Float64Array [0.5, -2]
 * ```
 */
export function weightsFromTensors(tensors: ReadonlyMap<string, StTensor>): Weights {
  const out: Weights = new Map();
  for (const [name, t] of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const view = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const data = new Float64Array(numel);
    const expectBytes = (size: number) => {
      if (t.data.byteLength !== numel * size) {
        throw new TypeError(
          `Tensor "${name}" (${t.dtype} [${t.shape}]) has ${t.data.byteLength} bytes, ` +
            `expected ${numel * size}`,
        );
      }
    };
    switch (t.dtype) {
      case "F64":
        expectBytes(8);
        for (let i = 0; i < numel; i++) data[i] = view.getFloat64(8 * i, true);
        break;
      case "I64":
        expectBytes(8);
        for (let i = 0; i < numel; i++) data[i] = Number(view.getBigInt64(8 * i, true));
        break;
      case "I32":
        expectBytes(4);
        for (let i = 0; i < numel; i++) data[i] = view.getInt32(4 * i, true);
        break;
      case "F32":
      case "F16":
      case "BF16":
        expectBytes(t.dtype === "F32" ? 4 : 2);
        data.set(toF32(t.dtype, t.data));
        break;
      default:
        throw new TypeError(`Tensor "${name}" has dtype ${t.dtype}, which no model parameter uses`);
    }
    out.set(name, { shape: [...t.shape], data });
  }
  return out;
}

/**
 * `y[r, o] = Σ_i x[r, i]·weight[o, i] + bias[o]` for `rows` rows (`nn.Linear`).
 *
 * @param x `rows × inF`
 * @param weight `outF × inF`
 * @param bias `outF`, or undefined for none
 * @returns `rows × outF`
 * @example
 * ```ts
 * import { linear } from "./layers.ts";
 * linear(new Float64Array([1, 2]), 1, new Float64Array([3, 4]), 2, 1); // [11]
 * ```
 */
export function linear(
  x: Float64Array,
  rows: number,
  weight: Float64Array,
  inF: number,
  outF: number,
  bias?: Float64Array,
): Float64Array {
  return linearForwardReference(x, weight, bias, { rows, inFeatures: inF, outFeatures: outF });
}

/**
 * `x[i] += gamma[i mod C]·y[i]` over `rows × C`: a residual with a layer scale.
 *
 * @returns `x`
 * @example
 * ```ts
 * import { addScaledInPlace } from "./layers.ts";
 * addScaledInPlace(new Float64Array([1, 1]), new Float64Array([2, 3]), new Float64Array([1, 2]));
 * // [3, 7]
 * ```
 */
export function addScaledInPlace(
  x: Float64Array,
  y: Float64Array,
  gamma: Float64Array,
): Float64Array {
  const C = gamma.length;
  for (let i = 0; i < x.length; i++) x[i] += gamma[i % C] * y[i];
  return x;
}
