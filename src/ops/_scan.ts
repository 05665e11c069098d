/**
 * Parallel reductions and scans down the rows of `[B, L, C]` tensors, per
 * batch element and column: the token statistics of the TSSA operators, the
 * prefix and suffix sums of the causal ones, the row sums of the backward
 * ops. The one implementation of each.
 *
 * - {@linkcode blockSums}: sums (or sums of squares) over blocks of rows, one
 *   workgroup per block and 64-column chunk (`kernels/block_sums.wgsl`);
 * - {@linkcode totalSums}: repeated block sums until one row is left;
 * - {@linkcode blockScan}: a scan within 64-row blocks, forward (exclusive
 *   prefix sums) or reverse (inclusive suffix sums), in place, returning the
 *   carries that complete it (`kernels/scan_block.wgsl`, then the block
 *   totals scanned the same way);
 * - {@linkcode scanRows}: the whole scan in place, a block scan plus its
 *   carries added (`kernels/scan_add.wgsl`);
 * - {@linkcode serialScan}: the whole scan in place in one dispatch, one
 *   invocation per batch element and column walking the rows
 *   (`kernels/scan_serial.wgsl`: the design for software adapters, with no
 *   barriers; rounding grows with L/64 + 64 terms).
 *
 * Scans are hierarchical: work O(L·C), depth O(log L), every partial sum
 * formed as a tree (f32 rounding grows with log L, not L).
 *
 * All of them only record dispatches. Intermediate tensors are pushed onto
 * the caller's `scratch` list, which the caller destroys when its op has
 * recorded its last dispatch (the runtime defers the buffers' destruction
 * until that work is submitted).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import blockSumsWgsl from "../../kernels/block_sums.wgsl" with { type: "text" };
import scanBlockWgsl from "../../kernels/scan_block.wgsl" with { type: "text" };
import scanAddWgsl from "../../kernels/scan_add.wgsl" with { type: "text" };
import scanSerialWgsl from "../../kernels/scan_serial.wgsl" with { type: "text" };
import {
  bindPiece,
  blockLayout,
  blockParams,
  COLUMN_CHUNK,
  workgroupGrid,
} from "./_tssa_blocks.ts";
import type { BlockLayout, BlockPiece, TssaOptions } from "./_tssa_blocks.ts";

/** Rows per block when reducing partial sums again. */
const REDUCE_ROWS = 128;
/** Rows per block of scan_block.wgsl (fixed by the kernel). */
export const SCAN_ROWS = 64;

/**
 * Record block sums of `x` (`[B, L, C]` with the given layout, bound piece by
 * piece) into a new `[B, blocksPerBatch, C]` tensor.
 */
export async function blockSums(
  gpu: Gpu,
  x: Tensor,
  layout: BlockLayout,
  pieces: readonly BlockPiece[],
  square: boolean,
  scratch: Tensor[],
  options: TssaOptions = {},
): Promise<Tensor> {
  const C = layout.dim;
  const out = gpu.empty([layout.batches, layout.blocksPerBatch, C], "f32", "scan.blockSums");
  scratch.push(out);
  gpu.assertBindable("block sums", out.byteSize);
  const kernel = await gpu.kernel("block_sums", blockSumsWgsl, { square: String(square) });
  const colChunks = Math.ceil(C / COLUMN_CHUNK);
  for (const piece of pieces) {
    const bound = bindPiece(gpu, x, layout, piece);
    gpu.dispatch(kernel, {
      bindings: [bound.range, out],
      params: [...blockParams(layout, piece, bound.base), C, colChunks],
      workgroups: workgroupGrid(piece.blockCount * colChunks, options),
    });
  }
  return out;
}

/**
 * Record the column sums over all rows of `x` (`[B, L, C]`, one binding),
 * reducing in tree levels of 128 rows; returns `x` itself when `L == 1`,
 * else a new `[B, 1, C]` tensor.
 */
export async function totalSums(
  gpu: Gpu,
  x: Tensor,
  batches: number,
  rows: number,
  cols: number,
  scratch: Tensor[],
  options: TssaOptions = {},
): Promise<Tensor> {
  let current = x;
  let L = rows;
  while (L > 1) {
    gpu.assertBindable("partial sums", current.byteSize);
    const layout = blockLayout(batches, L, cols, REDUCE_ROWS);
    const piece = { firstBlock: 0, blockCount: layout.blocks, rowBase: 0, rowEnd: batches * L };
    current = await blockSums(gpu, current, layout, [piece], false, scratch, options);
    L = layout.blocksPerBatch;
  }
  return current;
}

/** A scan's direction. */
export interface ScanDirection {
  /**
   * false: exclusive prefix sums, `x[b, l] ← Σ_{l' < l} x[b, l']`;
   * true: inclusive suffix sums, `x[b, l] ← Σ_{l' ≥ l} x[b, l']`.
   */
  reverse: boolean;
}

/** Rows, columns and batch elements of a `[B, L, C]` tensor to scan. */
export interface ScanDims {
  batches: number;
  rows: number;
  cols: number;
}

/**
 * Record a scan of `x` (`[B, L, C]`, bound in `p.pieces` of whole 64-row
 * blocks of `p.layout`) within each block, in place, and return the carries
 * `[B, ceil(L/64), C]` (a new scratch tensor) that complete it:
 *
 * - forward: `x` becomes the exclusive prefix sums within each block; the
 *   full exclusive prefix sum at row `r` is `x[b, r, c] + carries[b, r/64, c]`;
 * - reverse: `x` becomes the inclusive suffix sums within each block; the
 *   full suffix sum is `x[b, r, c] + carries[b, r/64 + 1, c]` (nothing for
 *   the last block).
 *
 * Consumers that add the carries as they read `x` save a pass over it
 * ({@linkcode scanRows} adds them in a pass of its own).
 *
 * @throws {RangeError} when the layout's blocks do not hold 64 rows
 */
export async function blockScan(
  gpu: Gpu,
  x: Tensor,
  p: { layout: BlockLayout; pieces: readonly BlockPiece[] },
  scan: ScanDirection,
  options: TssaOptions,
  scratch: Tensor[],
): Promise<Tensor> {
  const { batches, tokens: rows, dim: cols, blocksPerBatch } = p.layout;
  if (p.layout.blockRows !== SCAN_ROWS) {
    throw new RangeError(
      `blockScan: blocks must hold ${SCAN_ROWS} rows, got ${p.layout.blockRows}`,
    );
  }
  const totals = gpu.empty([batches, blocksPerBatch, cols], "f32", "scan.totals");
  scratch.push(totals);
  if (batches * rows * cols === 0) return totals;
  gpu.assertBindable("scan totals", totals.byteSize);
  const kernel = await gpu.kernel("scan_block", scanBlockWgsl, { reverse: String(scan.reverse) });
  const colChunks = Math.ceil(cols / COLUMN_CHUNK);
  for (const piece of p.pieces) {
    const bound = bindPiece(gpu, x, p.layout, piece);
    gpu.dispatch(kernel, {
      bindings: [bound.range, totals],
      params: [...blockParams(p.layout, piece, bound.base), cols, colChunks],
      workgroups: workgroupGrid(piece.blockCount * colChunks, options),
    });
  }
  if (blocksPerBatch > 1) {
    // Block totals → carries: the same scan over the blocks.
    await scanRows(gpu, totals, { batches, rows: blocksPerBatch, cols }, scan, scratch, options);
    return totals;
  }
  // One block: the reverse carries are never read, the forward ones are 0.
  if (scan.reverse) return totals;
  const zeros = gpu.empty([batches, 1, cols], "f32", "scan.carries");
  scratch.push(zeros);
  return zeros;
}

/**
 * Record an in-place scan of `x` (`[B, L, C]`, one binding) down its rows:
 * exclusive prefix sums forward, inclusive suffix sums reversed (see
 * {@linkcode ScanDirection}). A {@linkcode blockScan}, then the carries
 * added.
 *
 * @example
 * ```ts ignore
 * const scratch: Tensor[] = [];
 * await scanRows(gpu, x, { batches: 2, rows: 700, cols: 3 }, { reverse: true }, scratch);
 * // … after the dispatches are recorded:
 * for (const t of scratch) t.destroy();
 * ```
 */
export async function scanRows(
  gpu: Gpu,
  x: Tensor,
  dims: ScanDims,
  scan: ScanDirection,
  scratch: Tensor[],
  options: TssaOptions = {},
): Promise<void> {
  const { batches, rows, cols } = dims;
  if (batches * rows * cols === 0) return;
  gpu.assertBindable("scanned rows", x.byteSize);
  const layout = blockLayout(batches, rows, cols, SCAN_ROWS);
  const whole = { firstBlock: 0, blockCount: layout.blocks, rowBase: 0, rowEnd: batches * rows };
  const carries = await blockScan(gpu, x, { layout, pieces: [whole] }, scan, options, scratch);
  if (layout.blocksPerBatch === 1) return;
  const add = await gpu.kernel("scan_add", scanAddWgsl, { reverse: String(scan.reverse) });
  const total = batches * rows * cols;
  gpu.dispatch(add, {
    bindings: [x, carries],
    params: [rows, cols, layout.blocksPerBatch, total],
    workgroups: workgroupGrid(Math.ceil(total / 256), options),
  });
}

/**
 * Record the whole scan of `x` (`[B, L, C]`, one binding) in place in one
 * dispatch (`kernels/scan_serial.wgsl`), and return carries of
 * {@linkcode blockScan}'s shape `[B, ceil(L/64), C]` that are all zero (a new
 * scratch tensor), so that consumers of a block scan read the same sums.
 * Each invocation loops over L rows: callers keep L within the serial
 * designs' loop budget (`_serial.ts`).
 */
export async function serialScan(
  gpu: Gpu,
  x: Tensor,
  dims: ScanDims,
  scan: ScanDirection,
  options: TssaOptions,
  scratch: Tensor[],
): Promise<Tensor> {
  const { batches, rows, cols } = dims;
  const zeros = gpu.empty([batches, Math.ceil(rows / SCAN_ROWS), cols], "f32", "scan.carries");
  scratch.push(zeros);
  if (batches * rows * cols === 0) return zeros;
  gpu.assertBindable("scanned rows", x.byteSize);
  const kernel = await gpu.kernel("scan_serial", scanSerialWgsl, { reverse: String(scan.reverse) });
  gpu.dispatch(kernel, {
    bindings: [x],
    params: [batches, rows, cols],
    workgroups: workgroupGrid(Math.ceil((batches * cols) / 64), options),
  });
  return zeros;
}
