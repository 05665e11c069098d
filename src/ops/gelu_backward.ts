/**
 * Backward of exact (erf) GELU, `y = x·Φ(x)`:
 *
 *     ∂x = ∂y · (Φ(x) + x·φ(x)),   φ(x) = e^(−x²/2)/√(2π)      (assigned)
 *
 * What the forward must save: its input `x` (the pre-activation).
 *
 * GPU: `kernels/gelu_backward.wgsl`, in the elementwise designs chosen per
 * adapter by measuring ({@linkcode GELU_BACKWARD}: one value, one vec4 or
 * four vec4 per invocation; the same values), tensors over one storage
 * binding processed in pieces. Float64 reference: `geluBackwardReference`
 * in `gelu_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import geluBackwardWgsl from "../../kernels/gelu_backward.wgsl" with { type: "text" };
import { testValues, type Tunable } from "../gpu/tune.ts";
import { assertF32, assertShape, bindingLimit, storageAlignment } from "./_shapes.ts";
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
import { geluCheckValues } from "./gelu.ts";
import { geluBackwardReference } from "./gelu_reference.ts";

/**
 * GELU backward on the GPU. Records dispatches only.
 *
 * @param args `dy` upstream gradient and `x` the forward's input, same shape
 * @param options test/bench-only: chunking limit, variant
 * @returns ∂x, a new tensor shaped like `x` (assigned)
 * @throws {TypeError} on wrong shapes or dtypes
 * @example
 * ```ts ignore
 * const dPre = await geluBackward(gpu, { dy: dAct, x: pre });
 * ```
 */
export async function geluBackward(
  gpu: Gpu,
  args: { dy: Tensor; x: Tensor },
  options: ChunkOptions & { variant?: string } = {},
): Promise<Tensor> {
  const op = "geluBackward";
  const { dy, x } = args;
  assertF32(op, "dy", dy);
  assertF32(op, "x", x);
  assertShape(op, "dy", dy, x.shape);
  const dx = gpu.empty(x.shape, "f32", `${op}.dx`);
  const n = x.numel;
  if (n === 0) return dx;
  const shape = { n, vec4: n % 4 === 0 };
  const variant = await resolveVariant(gpu, op, GELU_BACKWARD, shape, options.variant);
  const d = elementDesign(variant);
  const kernel = await gpu.kernel(
    "gelu_backward",
    geluBackwardWgsl,
    laneSlots(d),
    d.vec4 ? "main4" : "main",
  );
  for (const piece of lanePieces(op, n, d, bindingLimit(gpu, options), storageAlignment(gpu))) {
    // Equal offsets give equal bases: every tensor here has the same layout.
    const [ds, xs, outs] = [dy, x, dx].map((t) => piece.bind(t));
    gpu.dispatch(kernel, {
      bindings: [ds.range, xs.range, outs.range],
      params: [piece.lanes, xs.base],
      workgroups: elementWorkgroups(piece.lanes, d),
    });
  }
  return dx;
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  for (const { rows, cols } of checkElements(elementDesign(variant).vec4)) {
    const hx = geluCheckValues(rows * cols, rows);
    const hdy = testValues(rows * cols, rows + 1);
    const x = gpu.upload(hx, [rows, cols], "check.x");
    const dy = gpu.upload(hdy, [rows, cols], "check.dy");
    try {
      const dx = await geluBackward(gpu, { dy, x }, { variant, maxBindingBytes: 1024 });
      const got = await dx.read();
      dx.destroy();
      const want = geluBackwardReference(hdy, hx);
      const why = mismatch(`${rows}×${cols}`, got, want, { atol: 1e-6, rtol: 1e-5 });
      if (why) return why;
    } finally {
      x.destroy();
      dy.destroy();
    }
  }
  return null;
}

/** GELU's backward as a tuned op ("gelu_backward"). */
export const GELU_BACKWARD: Tunable<ElementShape> = elementTunable("gelu_backward", {
  validate,
  workload(gpu, { n }) {
    const x = gpu.upload(geluCheckValues(n, 1), [n], "tune.x");
    const dy = gpu.upload(testValues(n, 2), [n], "tune.dy");
    return {
      shape: [n],
      run: async (variant) => {
        (await geluBackward(gpu, { dy, x }, { variant })).destroy();
      },
      destroy() {
        x.destroy();
        dy.destroy();
      },
    };
  },
});
