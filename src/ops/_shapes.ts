/**
 * Shape checks and binding-size chunking shared by the ops.
 *
 * Every op splits its tensors into row pieces that each fit one storage
 * binding. A piece is bound from the aligned byte offset at or below its
 * first row, and the kernel is told where the piece starts inside that
 * binding (`base`, in elements). That way pieces of tensors with different
 * row sizes (linear's x, weight and y) can be cut at any row, not only at
 * rows whose byte offset happens to be aligned.
 *
 * @module
 */

import type { BufferRange, Gpu, Tensor } from "../gpu/runtime.ts";
import { rowChunks } from "../gpu/chunks.ts";
import type { RowChunk } from "../gpu/chunks.ts";

/** Options every op accepts; only tests should need them. */
export interface ChunkOptions {
  /**
   * Treat bindings as limited to this many bytes (at most the device's
   * `maxStorageBufferBindingSize`), to exercise the chunked path cheaply.
   */
  maxBindingBytes?: number;
}

/** A tensor viewed as `rows` rows of `cols` contiguous values. */
export interface Rows {
  rows: number;
  cols: number;
}

/** Throw a TypeError unless `t` is an f32 tensor that is still alive. */
export function assertF32(op: string, name: string, t: Tensor): void {
  if (t.destroyed) throw new TypeError(`${op}: ${name} is a destroyed tensor`);
  if (t.dtype !== "f32") throw new TypeError(`${op}: ${name} must be f32, got ${t.dtype}`);
}

/** View a tensor of at least one dimension as rows over its last dimension. */
export function lastDimRows(op: string, name: string, t: Tensor): Rows {
  if (t.shape.length === 0) throw new TypeError(`${op}: ${name} must have at least one dimension`);
  const cols = t.shape[t.shape.length - 1];
  const rows = cols === 0 ? 0 : t.numel / cols;
  return { rows, cols };
}

/** Throw a TypeError unless `t` has exactly `shape`. */
export function assertShape(
  op: string,
  name: string,
  t: Tensor,
  shape: readonly number[],
): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new TypeError(`${op}: ${name} must have shape [${shape}], got [${t.shape}]`);
  }
}

/**
 * Return `out` after checking it (shape, dtype, no aliasing with the inputs),
 * or allocate a fresh output tensor.
 */
export function outputTensor(
  gpu: Gpu,
  op: string,
  shape: readonly number[],
  inputs: readonly (Tensor | null)[],
  out: Tensor | undefined,
): Tensor {
  if (!out) return gpu.empty(shape, "f32", op);
  assertF32(op, "out", out);
  assertShape(op, "out", out, shape);
  if (inputs.some((t) => t !== null && t.buffer === out.buffer)) {
    // WebGPU forbids one buffer as read-only and writable storage in a dispatch.
    throw new TypeError(`${op}: out must not be one of the inputs (in-place is not supported)`);
  }
  return out;
}

/** The per-binding byte limit in force: the device's, or a smaller test limit. */
export function bindingLimit(gpu: Gpu, options: ChunkOptions = {}): number {
  const device = gpu.limits.maxStorageBufferBindingSize;
  const requested = options.maxBindingBytes;
  if (requested === undefined) return device;
  if (!Number.isInteger(requested) || requested <= 0) {
    throw new RangeError(`maxBindingBytes must be a positive integer, got ${requested}`);
  }
  return Math.min(device, requested);
}

/**
 * Row ranges of a tensor whose rows are `rowBytes` long such that each range,
 * bound with {@linkcode bindRows}, fits a binding of `maxBytes`.
 *
 * @throws {RangeError} when a single row does not fit.
 */
export function rowPieces(
  op: string,
  rows: number,
  rowBytes: number,
  maxBytes: number,
  alignment: number,
): RowChunk[] {
  // bindRows starts a piece up to alignment - 4 bytes before its first row.
  const usable = maxBytes - (alignment - 4);
  if (rowBytes > usable) {
    throw new RangeError(
      `${op}: one row of ${rowBytes} bytes does not fit a ${maxBytes}-byte storage binding`,
    );
  }
  return rowChunks(rows, rowBytes, usable, 1);
}

/** A bound piece of a tensor and where its first row starts inside it. */
export interface BoundRows {
  range: BufferRange;
  /** Element index of the piece's first row within the binding. */
  base: number;
}

/**
 * Bind rows `[start, start + count)` of a tensor with `rowElems` f32 values
 * per row, starting the binding at the aligned offset at or below the first row.
 */
export function bindRows(
  t: Tensor,
  start: number,
  count: number,
  rowElems: number,
  alignment: number,
): BoundRows {
  const first = start * rowElems * 4;
  const end = (start + count) * rowElems * 4;
  const offset = Math.floor(first / alignment) * alignment;
  return { range: { tensor: t, offset, size: end - offset }, base: (first - offset) / 4 };
}

/** The device's storage offset alignment. */
export function storageAlignment(gpu: Gpu): number {
  return gpu.limits.minStorageBufferOffsetAlignment;
}

/**
 * Threads per row for the one-workgroup-per-row kernels (softmax, LayerNorm):
 * short rows waste fewer idle threads with a small workgroup. A power of two.
 */
export function rowWorkgroupSize(cols: number): number {
  return cols >= 2048 ? 256 : 64;
}
