/**
 * Exact (erf) GELU, `y = x·Φ(x) = 0.5·x·(1 + erf(x/√2))`, as PyTorch's
 * `nn.GELU()` with its default `approximate="none"`.
 *
 * The GPU kernel is `kernels/gelu.wgsl` (its header says which erf
 * approximation it uses and why); {@linkcode geluReference} is an
 * independent float64 version built on {@linkcode erfcReference}.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import geluWgsl from "../../kernels/gelu.wgsl" with { type: "text" };
import {
  assertF32,
  bindingLimit,
  bindRows,
  outputTensor,
  rowPieces,
  storageAlignment,
} from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";

const WORKGROUP_SIZE = 256;

/**
 * Apply exact GELU elementwise on the GPU. Records dispatches only.
 *
 * @param x any-shaped f32 tensor
 * @param out optional f32 tensor of x's shape to write into (not x itself)
 * @param options test-only chunking limit
 * @returns `out` or a new tensor of x's shape
 * @example
 * ```ts ignore
 * const y = await gelu(gpu, gpu.upload(new Float32Array([-1, 0, 1]), [3]));
 * console.log(await y.read()); // ≈ [-0.1587, 0, 0.8413]
 * ```
 */
export async function gelu(
  gpu: Gpu,
  x: Tensor,
  out?: Tensor,
  options: ChunkOptions = {},
): Promise<Tensor> {
  assertF32("gelu", "x", x);
  const y = outputTensor(gpu, "gelu", x.shape, [x], out);
  const n = x.numel;
  const align = storageAlignment(gpu);
  const pieces = rowPieces("gelu", n, 4, bindingLimit(gpu, options), align);
  if (pieces.length === 0) return y;
  const kernel = await gpu.kernel("gelu", geluWgsl, { workgroupSize: WORKGROUP_SIZE });
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, 1, align);
    const ys = bindRows(y, start, count, 1, align);
    gpu.dispatch(kernel, {
      bindings: [xs.range, ys.range],
      params: [count, xs.base],
      workgroups: Math.ceil(count / WORKGROUP_SIZE),
    });
  }
  return y;
}

/**
 * The complementary error function in float64, to about 1e-15 relative:
 * the everywhere-positive power series `erf(z) = 2/√π·e^(−z²)·Σ 2ⁿz^(2n+1)/(2n+1)!!`
 * for |z| < 1.5 and the Laplace continued fraction
 * `erfc(z) = e^(−z²)/√π / (z + ½/(z + 1/(z + (3/2)/(z + …))))` beyond.
 *
 * @example
 * ```ts
 * import { erfcReference } from "./gelu.ts";
 * if (Math.abs(erfcReference(1) - 0.15729920705028513) > 1e-15) throw new Error("erfc");
 * ```
 */
export function erfcReference(z: number): number {
  if (Number.isNaN(z)) return NaN;
  if (z < 0) return 2 - erfcReference(-z);
  if (z < 1.5) return 1 - erfSeries(z);
  // Backward evaluation of the continued fraction; 200 levels reach 1e-15 from z = 1.5 on.
  let f = z;
  for (let k = 200; k >= 1; k--) f = z + (k / 2) / f;
  return Math.exp(-z * z) / (Math.sqrt(Math.PI) * f);
}

function erfSeries(z: number): number {
  const z2 = z * z;
  let term = z;
  let sum = z;
  for (let n = 1; n < 200 && Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
    term *= (2 * z2) / (2 * n + 1);
    sum += term;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-z2) * sum;
}

/**
 * Exact GELU on the CPU in float64 (rounded to f32 on return).
 *
 * @example
 * ```ts
 * import { geluReference } from "./gelu.ts";
 * const [a, b] = geluReference(new Float32Array([0, 1]));
 * if (a !== 0 || Math.abs(b - 0.8413447) > 1e-6) throw new Error("gelu");
 * ```
 */
export function geluReference(x: Float32Array): Float32Array<ArrayBuffer> {
  const y = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    // Φ(−|v|) from erfc so both tails keep their relative accuracy.
    const tail = 0.5 * erfcReference(Math.abs(v) / Math.SQRT2);
    y[i] = v >= 0 ? v * (1 - tail) : v * tail;
  }
  return y;
}
