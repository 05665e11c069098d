/**
 * Strided copies of rows between batched `[B, N, C]` tensors on the GPU:
 * concatenation along tokens (prepending the class token), writing one row of
 * every batch, or picking one row out of every batch.
 *
 * GPU kernel: `kernels/copy_rows.wgsl`, one thread per element.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import copyRowsWgsl from "../../kernels/copy_rows.wgsl" with { type: "text" };
import { assertF32 } from "./_shapes.ts";

const WORKGROUP_SIZE = 256;

/** Where {@linkcode copyRows} reads and writes, in rows of C values. */
export interface RowCopy {
  /** Batches B. */
  batches: number;
  /** Rows copied per batch. */
  rows: number;
  /** Values per row C. */
  cols: number;
  /** Rows between consecutive batches of src; 0 repeats the same rows for every batch. */
  srcBatchRows: number;
  /** First row copied inside each batch of src. */
  srcRow0?: number;
  /** Rows between consecutive batches of dst. */
  dstBatchRows: number;
  /** First row written inside each batch of dst. */
  dstRow0?: number;
}

/**
 * `dst[b, dstRow0 + r, :] = src[b·srcBatchRows + srcRow0 + r, :]` for every
 * batch b and row r < rows. Records one dispatch.
 *
 * @throws {RangeError} when a read or write would fall outside its tensor.
 * @example
 * ```ts ignore
 * // x = cat([cls, tokens], dim=1): cls [C] broadcast, tokens [B, N, C] → x [B, N + 1, C]
 * await copyRows(gpu, cls, x, { batches: B, rows: 1, cols: C, srcBatchRows: 0, dstBatchRows: N + 1 });
 * await copyRows(gpu, tokens, x, { batches: B, rows: N, cols: C, srcBatchRows: N, dstBatchRows: N + 1, dstRow0: 1 });
 * ```
 */
export async function copyRows(gpu: Gpu, src: Tensor, dst: Tensor, spec: RowCopy): Promise<void> {
  assertF32("copyRows", "src", src);
  assertF32("copyRows", "dst", dst);
  if (src.buffer === dst.buffer) throw new TypeError("copyRows: src and dst must differ");
  const { batches: B, rows, cols: C, srcBatchRows, dstBatchRows } = spec;
  const srcRow0 = spec.srcRow0 ?? 0;
  const dstRow0 = spec.dstRow0 ?? 0;
  for (
    const [k, v] of Object.entries({ B, rows, C, srcBatchRows, dstBatchRows, srcRow0, dstRow0 })
  ) {
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(
        `copyRows: ${k} must be an integer ≥ 0, got ${v}`,
      );
    }
  }
  const n = B * rows * C;
  if (n === 0) return;
  const srcEnd = ((B - 1) * srcBatchRows + srcRow0 + rows) * C;
  const dstEnd = ((B - 1) * dstBatchRows + dstRow0 + rows) * C;
  if (srcEnd > src.numel) {
    throw new RangeError(`copyRows: reads up to element ${srcEnd} of src [${src.shape}]`);
  }
  if (dstEnd > dst.numel) {
    throw new RangeError(`copyRows: writes up to element ${dstEnd} of dst [${dst.shape}]`);
  }
  gpu.assertBindable("copyRows src", src.byteSize);
  gpu.assertBindable("copyRows dst", dst.byteSize);
  const kernel = await gpu.kernel("copy_rows", copyRowsWgsl, { workgroupSize: WORKGROUP_SIZE });
  gpu.dispatch(kernel, {
    bindings: [src, dst],
    params: [n, rows, C, srcBatchRows, srcRow0, dstBatchRows, dstRow0],
    workgroups: Math.ceil(n / WORKGROUP_SIZE),
  });
}

/** `[B, count, D]`: rows `row0 …` of every batch of `src` `[B, S, D]`. */
export async function takeRows(
  gpu: Gpu,
  src: Tensor,
  row0: number,
  count: number,
): Promise<Tensor> {
  const [B, S, D] = src.shape;
  const out = gpu.empty([B, count, D], "f32", "rows");
  await copyRows(gpu, src, out, {
    batches: B,
    rows: count,
    cols: D,
    srcBatchRows: S,
    srcRow0: row0,
    dstBatchRows: count,
  });
  return out;
}

/** Write `src` `[B, count, D]` into rows `row0 …` of every batch of `dst` `[B, S, D]`. */
export async function putRows(gpu: Gpu, src: Tensor, dst: Tensor, row0: number): Promise<void> {
  const [B, S, D] = dst.shape;
  const count = src.shape[1];
  await copyRows(gpu, src, dst, {
    batches: B,
    rows: count,
    cols: D,
    srcBatchRows: count,
    dstBatchRows: S,
    dstRow0: row0,
  });
}
