/**
 * In-place elementwise updates of activations: the layer-scaled residual
 * `x += gamma ⊙ y` (per-channel gamma), plain `x += y`, a row-broadcast add
 * (positional encodings) and a per-channel scale.
 *
 * GPU kernel: `kernels/elementwise.wgsl`, one thread per element, tensors
 * over one storage binding are processed in pieces of whole rows.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import elementwiseWgsl from "../../kernels/elementwise.wgsl" with { type: "text" };
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

const WORKGROUP_SIZE = 256;

function assertDistinct(op: string, x: Tensor, others: readonly (Tensor | null)[]): void {
  if (others.some((t) => t !== null && t.buffer === x.buffer)) {
    throw new TypeError(`${op}: x is updated in place and must not also be an input`);
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
  options: ChunkOptions = {},
): Promise<void> {
  const op = "residual";
  assertF32(op, "x", x);
  assertF32(op, "y", y);
  assertShape(op, "y", y, x.shape);
  const { rows, cols } = lastDimRows(op, "x", x);
  if (gamma) {
    assertF32(op, "gamma", gamma);
    assertShape(op, "gamma", gamma, [cols]);
  }
  assertDistinct(op, x, [y, gamma]);
  const align = storageAlignment(gpu);
  const pieces = rowPieces(op, rows, cols * 4, bindingLimit(gpu, options), align);
  if (pieces.length === 0) return;
  const kernel = await gpu.kernel(
    "elementwise",
    elementwiseWgsl,
    { workgroupSize: WORKGROUP_SIZE },
    gamma ? "residual" : "residual_no_gamma",
  );
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, cols, align);
    const ys = bindRows(y, start, count, cols, align);
    const n = count * cols;
    gpu.dispatch(kernel, {
      bindings: gamma ? [xs.range, ys.range, gamma] : [xs.range, ys.range],
      params: [n, cols, xs.base, ys.base, 0, 1],
      workgroups: Math.ceil(n / WORKGROUP_SIZE),
    });
  }
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
  options: ChunkOptions = {},
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
  const align = storageAlignment(gpu);
  const pieces = rowPieces(op, rows, cols * 4, bindingLimit(gpu, options), align);
  if (pieces.length === 0) return;
  const kernel = await gpu.kernel(
    "elementwise",
    elementwiseWgsl,
    { workgroupSize: WORKGROUP_SIZE },
    "add_rows",
  );
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, cols, align);
    const n = count * cols;
    gpu.dispatch(kernel, {
      bindings: [xs.range, y],
      params: [n, cols, xs.base, 0, start % period, period],
      workgroups: Math.ceil(n / WORKGROUP_SIZE),
    });
  }
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
  options: ChunkOptions = {},
): Promise<void> {
  const op = "scaleChannels";
  assertF32(op, "x", x);
  assertF32(op, "gamma", gamma);
  const { rows, cols } = lastDimRows(op, "x", x);
  assertShape(op, "gamma", gamma, [cols]);
  assertDistinct(op, x, [gamma]);
  const align = storageAlignment(gpu);
  const pieces = rowPieces(op, rows, cols * 4, bindingLimit(gpu, options), align);
  if (pieces.length === 0) return;
  const kernel = await gpu.kernel(
    "elementwise",
    elementwiseWgsl,
    { workgroupSize: WORKGROUP_SIZE },
    "scale_channels",
  );
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, cols, align);
    const n = count * cols;
    gpu.dispatch(kernel, {
      bindings: [xs.range, gamma],
      params: [n, cols, xs.base, 0, 0, 1],
      workgroups: Math.ceil(n / WORKGROUP_SIZE),
    });
  }
}
