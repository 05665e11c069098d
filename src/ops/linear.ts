/**
 * The linear layer `y = x·Wᵀ + b`, as PyTorch's `nn.Linear`: x `[..., K]`,
 * weight `[N, K]`, bias `[N]` or none, y `[..., N]` (batch dimensions are
 * flattened into M rows), with optional fused epilogues:
 *
 * - `{ epilogue: { gelu: true } }`: `y = gelu(x·Wᵀ + b)` (exact erf GELU), and
 *   `epilogue.preActivation` also receives `x·Wᵀ + b` (what the backward needs);
 * - `{ residual: { x: r, gamma } }`: `r += gamma ⊙ (x·Wᵀ + b)` in place (the
 *   models' `x += gamma1·attn`), returning `r`; `out`, when given, also
 *   receives `x·Wᵀ + b`.
 *
 * The product runs on the GEMM engine (`gemm.ts`) with the variant the tuner
 * chose for this adapter and shape class (`gemm_tune.ts`), or
 * `options.variant`. Tensors over one storage binding (128 MiB in software
 * WebGPU; a GPT-2 head of 50257×768 is 154 MB) are processed in pieces.
 *
 * `linear_reference.ts` holds the one float64 reference of the
 * layer; the model references use it too.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { assertF32, assertShape, lastDimRows, outputTensor } from "./_shapes.ts";
import type { GemmOptions } from "./gemm.ts";
import { gemmAuto } from "./gemm_tune.ts";

/** Fused steps after the product (see the module doc). */
export interface LinearEpilogue {
  /** Apply exact (erf) GELU: `y = gelu(x·Wᵀ + b)`. */
  gelu?: boolean;
  /** With `gelu`: also write `x·Wᵀ + b` here, f32 shaped like y (for the backward). */
  preActivation?: Tensor;
}

/** A residual stream the product is added to in place: `x += gamma ⊙ y`. */
export interface LinearResidual {
  /** f32 `[..., N]`, shaped like y; updated in place and returned. */
  x: Tensor;
  /** Layer scale f32 `[N]`, or null for a plain `x += y`. */
  gamma: Tensor | null;
}

/** Options of {@linkcode linear}. */
export interface LinearOptions extends GemmOptions {
  /** Fused GELU (and the pre-activation). */
  epilogue?: LinearEpilogue;
  /** Add the result into a residual stream instead of writing y. */
  residual?: LinearResidual;
  /** Use this GEMM variant instead of the tuned one (tests, benches): see `GEMM_VARIANTS`. */
  variant?: string;
}

/**
 * `y = x·Wᵀ + b` on the GPU, with optional fused GELU or residual epilogue.
 * Records dispatches only (the first product of a new shape class may
 * measure the GEMM variants first, see `gemm_tune.ts`).
 *
 * @param x f32 `[..., K]`
 * @param weight f32 `[N, K]` (PyTorch's layout: one row per output feature)
 * @param bias f32 `[N]`, or null
 * @param out optional f32 `[..., N]` to write into (not an input); with
 *   `options.residual`, receives `x·Wᵀ + b` before it is added
 * @param options epilogues; test/bench-only: variant, chunking limits
 * @returns `out` or a new tensor `[..., N]`; `options.residual.x` with a residual
 * @example
 * ```ts ignore
 * const x = gpu.upload(new Float32Array([1, 2]), [1, 2]);
 * const w = gpu.upload(new Float32Array([1, 0, 0, 1, 1, 1]), [3, 2]);
 * const y = await linear(gpu, x, w, null); // [[1, 2, 3]]
 * const h = await linear(gpu, x, w, null, undefined, { epilogue: { gelu: true } });
 * ```
 */
export async function linear(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  out?: Tensor,
  options: LinearOptions = {},
): Promise<Tensor> {
  const op = "linear";
  assertF32(op, "x", x);
  assertF32(op, "weight", weight);
  if (weight.shape.length !== 2) {
    throw new TypeError(`linear: weight must be [out, in], got [${weight.shape}]`);
  }
  const [N, K] = weight.shape;
  if (x.shape.length === 0 || x.shape[x.shape.length - 1] !== K) {
    throw new TypeError(`linear: x [${x.shape}] does not end in weight's ${K} input features`);
  }
  if (K === 0) throw new RangeError("linear: needs at least one input feature");
  if (bias) {
    assertF32(op, "bias", bias);
    assertShape(op, "bias", bias, [N]);
  }
  const { rows: M } = lastDimRows(op, "x", x);
  const yShape = [...x.shape.slice(0, -1), N];
  const gelu = options.epilogue?.gelu ?? false;
  const pre = options.epilogue?.preActivation ?? null;
  if (pre && !gelu) {
    throw new TypeError("linear: epilogue.preActivation is only written with epilogue.gelu");
  }
  const inputs = [x, weight, bias];
  if (pre) outputTensor(gpu, op, yShape, inputs, pre);
  const res = options.residual;
  let c: Tensor;
  let aux: Tensor | null = pre;
  if (res) {
    assertF32(op, "residual.x", res.x);
    assertShape(op, "residual.x", res.x, yShape);
    if (res.gamma) {
      assertF32(op, "residual.gamma", res.gamma);
      assertShape(op, "residual.gamma", res.gamma, [N]);
    }
    if (inputs.some((t) => t?.buffer === res.x.buffer)) {
      throw new TypeError("linear: residual.x must not be one of the inputs");
    }
    if (out) {
      if (pre) {
        throw new TypeError(
          "linear: with gelu and a residual, the pre-activation goes to epilogue.preActivation; " +
            "out would not be written",
        );
      }
      aux = outputTensor(gpu, op, yShape, [...inputs, res.x, res.gamma], out);
    }
    c = res.x;
  } else {
    c = outputTensor(gpu, op, yShape, inputs, out);
  }
  if (aux && aux.buffer === c.buffer) {
    throw new TypeError("linear: the pre-activation must not be the output");
  }
  await gemmAuto(
    gpu,
    {
      a: { tensor: x, layout: "depth", ld: K },
      b: { tensor: weight, layout: "depth", ld: K },
      c,
      m: M,
      n: N,
      k: K,
      epilogue: { bias, gelu, aux, residual: Boolean(res), gamma: res?.gamma ?? null },
    },
    options,
    op,
  );
  return res ? res.x : c;
}
