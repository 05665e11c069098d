/**
 * In-place elementwise updates of activations: the layer-scaled residual
 * `x += gamma ⊙ y` (per-channel gamma), plain `x += y`, a row-broadcast add
 * (positional encodings) and a per-channel scale.
 *
 * GPU kernel: `kernels/elementwise.wgsl` in three designs chosen per
 * adapter by measuring ({@linkcode ELEMENTWISE}): one value, one vec4 or
 * four vec4 per invocation (the vec4 ones when C is a multiple of 4). They
 * compute the same values. Tensors over one storage binding are processed
 * in pieces of whole rows.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import elementwiseWgsl from "../../kernels/elementwise.wgsl" with { type: "text" };
import { testValues, type Tunable } from "../gpu/tune.ts";
import {
  assertF32,
  assertShape,
  bindingLimit,
  bindRows,
  lastDimRows,
  rowPieces,
  storageAlignment,
} from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";
import {
  checkElements,
  elementDesign,
  type ElementShape,
  elementSlots,
  elementTunable,
  elementWorkgroups,
  mismatch,
  resolveVariant,
} from "./_tuned.ts";

/** Test and bench options of the elementwise ops. */
export interface ElementwiseOptions extends ChunkOptions {
  /** Use this variant (`scalar`, `vec4`, `vec4x4`) instead of the tuned one. */
  variant?: string;
}

function assertDistinct(op: string, x: Tensor, others: readonly (Tensor | null)[]): void {
  if (others.some((t) => t !== null && t.buffer === x.buffer)) {
    throw new TypeError(`${op}: x is updated in place and must not also be an input`);
  }
}

type Entry = "residual" | "residual_no_gamma" | "add_rows" | "scale_channels";

/**
 * Record one entry of `kernels/elementwise.wgsl` over `x` (`rows × cols`),
 * piece by piece: `y` is read at x's offsets when `yRows`, else bound whole;
 * `period` is add_rows' row period.
 */
async function record(
  gpu: Gpu,
  op: string,
  entry: Entry,
  args: { x: Tensor; y: Tensor | null; yRows: boolean; gamma: Tensor | null; period: number },
  options: ElementwiseOptions,
): Promise<void> {
  const { x, y, gamma } = args;
  const { rows, cols } = lastDimRows(op, "x", x);
  const align = storageAlignment(gpu);
  const pieces = rowPieces(op, rows, cols * 4, bindingLimit(gpu, options), align);
  if (pieces.length === 0) return;
  const shape = { n: rows * cols, vec4: cols % 4 === 0 };
  const variant = await resolveVariant(gpu, op, ELEMENTWISE, shape, options.variant);
  const d = elementDesign(variant);
  const w = d.vec4 ? 4 : 1; // values per lane
  const kernel = await gpu.kernel("elementwise", elementwiseWgsl, elementSlots(d), entry);
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, cols, align);
    const ys = y && args.yRows ? bindRows(y, start, count, cols, align) : null;
    const bindings = [xs.range, ys ? ys.range : y!];
    if (gamma) bindings.push(gamma);
    const lanes = (count * cols) / w;
    gpu.dispatch(kernel, {
      bindings,
      params: [lanes, cols / w, xs.base / w, (ys?.base ?? 0) / w, start % args.period, args.period],
      workgroups: elementWorkgroups(lanes, d),
    });
  }
}

/**
 * `x += gamma ⊙ y` in place (gamma per channel, over x's last dimension), or
 * `x += y` when gamma is null. Records dispatches only.
 *
 * @param x f32 `[..., C]`, updated in place
 * @param y f32 of x's shape
 * @param gamma f32 `[C]` or null
 * @example
 * ```ts ignore
 * await residual(gpu, x, attnOut, gamma1); // x += gamma1 * attn(x)
 * ```
 */
export async function residual(
  gpu: Gpu,
  x: Tensor,
  y: Tensor,
  gamma: Tensor | null,
  options: ElementwiseOptions = {},
): Promise<void> {
  const op = "residual";
  assertF32(op, "x", x);
  assertF32(op, "y", y);
  assertShape(op, "y", y, x.shape);
  const { cols } = lastDimRows(op, "x", x);
  if (gamma) {
    assertF32(op, "gamma", gamma);
    assertShape(op, "gamma", gamma, [cols]);
  }
  assertDistinct(op, x, [y, gamma]);
  await record(gpu, op, gamma ? "residual" : "residual_no_gamma", {
    x,
    y,
    yRows: true,
    gamma,
    period: 1,
  }, options);
}

/**
 * `x[..., r, c] += y[r mod P, c]` in place: `y` of shape `[P, C]` is added to
 * every block of P consecutive rows of x (a positional encoding added to every
 * sequence of a batch; a bias when P = 1). Records dispatches only.
 *
 * @param x f32 `[..., C]` with a row count divisible by P
 * @param y f32 `[P, C]` (or `[C]` for P = 1), within one storage binding
 */
export async function addRows(
  gpu: Gpu,
  x: Tensor,
  y: Tensor,
  options: ElementwiseOptions = {},
): Promise<void> {
  const op = "addRows";
  assertF32(op, "x", x);
  assertF32(op, "y", y);
  const { rows, cols } = lastDimRows(op, "x", x);
  const period = y.shape.length === 1 ? 1 : y.shape[0];
  if (
    y.shape.length > 2 || y.shape[y.shape.length - 1] !== cols ||
    (period > 0 && rows % period !== 0) || (period === 0 && rows !== 0)
  ) {
    throw new TypeError(
      `${op}: y must be [P, ${cols}] with P dividing x's ${rows} rows, got [${y.shape}]`,
    );
  }
  assertDistinct(op, x, [y]);
  gpu.assertBindable(`${op} y`, y.byteSize);
  await record(gpu, op, "add_rows", { x, y, yRows: false, gamma: null, period }, options);
}

/**
 * `x *= gamma` in place, gamma per channel (x's last dimension).
 * Records dispatches only.
 *
 * @param x f32 `[..., C]`
 * @param gamma f32 `[C]`
 */
export async function scaleChannels(
  gpu: Gpu,
  x: Tensor,
  gamma: Tensor,
  options: ElementwiseOptions = {},
): Promise<void> {
  const op = "scaleChannels";
  assertF32(op, "x", x);
  assertF32(op, "gamma", gamma);
  const { cols } = lastDimRows(op, "x", x);
  assertShape(op, "gamma", gamma, [cols]);
  assertDistinct(op, x, [gamma]);
  await record(gpu, op, "scale_channels", {
    x,
    y: gamma,
    yRows: false,
    gamma: null,
    period: 1,
  }, options);
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  for (const { rows, cols } of checkElements(elementDesign(variant).vec4)) {
    const hx = testValues(rows * cols, rows);
    const hy = testValues(rows * cols, rows + 1);
    const hg = testValues(cols, cols);
    const x = gpu.upload(hx, [rows, cols], "check.x");
    const y = gpu.upload(hy, [rows, cols], "check.y");
    const g = gpu.upload(hg, [cols], "check.gamma");
    try {
      // Pieces of at most 3 rows (the binding is then cut at 256-byte offsets).
      const limit = Math.max(3 * cols * 4 + 256, 1024);
      await residual(gpu, x, y, g, { variant, maxBindingBytes: limit });
      await scaleChannels(gpu, x, g, { variant });
      const want = Float64Array.from(hx, (v, i) => (v + hg[i % cols] * hy[i]) * hg[i % cols]);
      const why = mismatch(`${rows}×${cols}`, await x.read(), want, { atol: 1e-6, rtol: 1e-6 });
      if (why) return why;
    } finally {
      for (const t of [x, y, g]) t.destroy();
    }
  }
  return null;
}

/** The in-place elementwise updates as a tuned op ("elementwise" in `tost tune`, `tost info`). */
export const ELEMENTWISE: Tunable<ElementShape> = elementTunable("elementwise", {
  validate,
  workload(gpu, { n, vec4 }) {
    const cols = vec4 ? 64 : 63;
    const rows = Math.max(1, Math.round(n / cols));
    const x = gpu.upload(testValues(rows * cols, 1), [rows, cols], "tune.x");
    const y = gpu.upload(testValues(rows * cols, 2), [rows, cols], "tune.y");
    const g = gpu.upload(testValues(cols, 3), [cols], "tune.gamma");
    return {
      shape: [rows * cols],
      run: (variant) => residual(gpu, x, y, g, { variant }),
      destroy() {
        for (const t of [x, y, g]) t.destroy();
      },
    };
  },
});
