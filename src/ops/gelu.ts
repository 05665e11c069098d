/**
 * Exact (erf) GELU, `y = x·Φ(x) = 0.5·x·(1 + erf(x/√2))`, as PyTorch's
 * `nn.GELU()` with its default `approximate="none"`.
 *
 * The GPU kernel is `kernels/gelu.wgsl` (its header says which erf
 * approximation it uses and why), in the elementwise designs chosen per
 * adapter by measuring ({@linkcode GELU}: one value, one vec4 or four vec4
 * per invocation; they compute the same values); the float64 reference,
 * with an independent erf, is `geluReference` in `gelu_reference.ts`. The
 * MLP's forward fuses GELU into its first product instead (`linear`'s GELU
 * epilogue); this op serves the vision stem and the tests.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import geluWgsl from "../../kernels/gelu.wgsl" with { type: "text" };
import { testValues, type Tunable } from "../gpu/tune.ts";
import { assertF32, bindingLimit, outputTensor, storageAlignment } from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";
import {
  checkElements,
  elementDesign,
  type ElementShape,
  elementTunable,
  elementWorkgroups,
  lanePieces,
  laneSlots,
  mismatch,
  resolveVariant,
} from "./_tuned.ts";
import { geluReference } from "./gelu_reference.ts";

/**
 * Apply exact GELU elementwise on the GPU. Records dispatches only.
 *
 * @param x any-shaped f32 tensor
 * @param out optional f32 tensor of x's shape to write into (not x itself)
 * @param options test/bench-only: chunking limit, variant
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
  options: ChunkOptions & { variant?: string } = {},
): Promise<Tensor> {
  assertF32("gelu", "x", x);
  const y = outputTensor(gpu, "gelu", x.shape, [x], out);
  const n = x.numel;
  if (n === 0) return y;
  const shape = { n, vec4: n % 4 === 0 };
  const variant = await resolveVariant(gpu, "gelu", GELU, shape, options.variant);
  const d = elementDesign(variant);
  const kernel = await gpu.kernel("gelu", geluWgsl, laneSlots(d), d.vec4 ? "main4" : "main");
  const pieces = lanePieces("gelu", n, d, bindingLimit(gpu, options), storageAlignment(gpu));
  for (const piece of pieces) {
    const xs = piece.bind(x);
    const ys = piece.bind(y); // equal offsets give equal bases
    gpu.dispatch(kernel, {
      bindings: [xs.range, ys.range],
      params: [piece.lanes, xs.base],
      workgroups: elementWorkgroups(piece.lanes, d),
    });
  }
  return y;
}

/** Values GELU's variants are checked at: both tails, zero and in between. */
export function geluCheckValues(n: number, seed: number): Float32Array<ArrayBuffer> {
  return testValues(n, seed).map((v) => 7 * v);
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  for (const { rows, cols } of checkElements(elementDesign(variant).vec4)) {
    const hx = geluCheckValues(rows * cols, rows);
    const x = gpu.upload(hx, [rows, cols], "check.x");
    try {
      const y = await gelu(gpu, x, undefined, { variant, maxBindingBytes: 1024 });
      const got = await y.read();
      y.destroy();
      const why = mismatch(`${rows}×${cols}`, got, geluReference(hx), { atol: 1e-6, rtol: 1e-6 });
      if (why) return why;
    } finally {
      x.destroy();
    }
  }
  return null;
}

/** GELU as a tuned op ("gelu" in `tost tune`, `tost info`). */
export const GELU: Tunable<ElementShape> = elementTunable("gelu", {
  validate,
  workload(gpu, { n }) {
    const x = gpu.upload(geluCheckValues(n, 1), [n], "tune.x");
    const y = gpu.empty([n], "f32", "tune.y");
    return {
      shape: [n],
      run: async (variant) => {
        await gelu(gpu, x, y, { variant });
      },
      destroy() {
        x.destroy();
        y.destroy();
      },
    };
  },
});
