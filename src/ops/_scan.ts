/**
 * Parallel reductions and prefix sums down the rows of `[B, L, C]` tensors,
 * per batch element and column: the token statistics of the TSSA operators.
 *
 * - {@linkcode blockSums}: sums (or sums of squares) over blocks of rows, one
 *   workgroup per block and 64-column chunk (`kernels/scan_reduce.wgsl`);
 * - {@linkcode totalSums}: repeated block sums until one row is left;
 * - {@linkcode exclusiveScanRows}: in-place exclusive scan, hierarchical
 *   (`kernels/scan_block.wgsl` then `kernels/scan_add.wgsl` per level):
 *   work O(L·C), depth O(log L), partial sums formed as a tree.
 *
 * All of them only record dispatches. Intermediate tensors are pushed onto
 * the caller's `scratch` list, which the caller destroys when its op has
 * recorded its last dispatch (the runtime defers the buffers' destruction
 * until that work is submitted).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import scanReduceWgsl from "../../kernels/scan_reduce.wgsl" with { type: "text" };
import scanBlockWgsl from "../../kernels/scan_block.wgsl" with { type: "text" };
import scanAddWgsl from "../../kernels/scan_add.wgsl" with { type: "text" };
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
/** Rows per block of scan_block.wgsl. */
const SCAN_ROWS = 64;

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
  const kernel = await gpu.kernel("scan_reduce", scanReduceWgsl, { square: String(square) });
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

/**
 * Record an in-place exclusive scan of `x` (`[B, L, C]`, one binding) down
 * its rows: `x[b, l, c] ← Σ_{l' < l} x[b, l', c]`.
 */
export async function exclusiveScanRows(
  gpu: Gpu,
  x: Tensor,
  batches: number,
  rows: number,
  cols: number,
  scratch: Tensor[],
  options: TssaOptions = {},
): Promise<void> {
  if (batches * rows * cols === 0) return;
  gpu.assertBindable("scanned sums", x.byteSize);
  const blocksPerBatch = Math.ceil(rows / SCAN_ROWS);
  const colChunks = Math.ceil(cols / COLUMN_CHUNK);
  const totals = gpu.empty([batches, blocksPerBatch, cols], "f32", "scan.totals");
  scratch.push(totals);
  const scan = await gpu.kernel("scan_block", scanBlockWgsl);
  gpu.dispatch(scan, {
    bindings: [x, totals],
    params: [rows, cols, blocksPerBatch, batches * blocksPerBatch, colChunks],
    workgroups: workgroupGrid(batches * blocksPerBatch * colChunks, options),
  });
  if (blocksPerBatch === 1) return;
  await exclusiveScanRows(gpu, totals, batches, blocksPerBatch, cols, scratch, options);
  const add = await gpu.kernel("scan_add", scanAddWgsl);
  const total = batches * rows * cols;
  gpu.dispatch(add, {
    bindings: [x, totals],
    params: [rows, cols, blocksPerBatch, total],
    workgroups: workgroupGrid(Math.ceil(total / 256), options),
  });
}
