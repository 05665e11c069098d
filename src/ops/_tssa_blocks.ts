/**
 * Token blocks: how the TSSA operators cut `[B, N, D]` tensors into work.
 *
 * Every TSSA kernel that reads the token tensor gives one workgroup one
 * *block* of up to `blockRows` consecutive tokens of one batch element (plus,
 * for some kernels, one chunk of 64 feature columns). Blocks are numbered
 * globally, `g = b·blocksPerBatch + k`, block `k` of batch `b` holding tokens
 * `[k·blockRows, min(N, (k+1)·blockRows))`. Per-block results (partial sums,
 * scan totals) are stored as `[B, blocksPerBatch, C]`.
 *
 * Tensors over one storage binding are bound in *pieces* of whole blocks
 * (a block never straddles two bindings, so a workgroup always sees all its
 * tokens). Each piece is bound from the aligned offset at or below its first
 * row ({@linkcode bindRows}); the kernel gets `rowBase`/`elemBase` to find
 * row `r` at element `elemBase + (r - rowBase)·D` of the binding.
 *
 * @module
 */

import type { BufferRange, Gpu, Tensor } from "../gpu/runtime.ts";
import { foldWorkgroups } from "../gpu/runtime.ts";
import { bindingLimit, bindRows, storageAlignment } from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";

/** Options of the TSSA operators; only tests should need them. */
export interface TssaOptions extends ChunkOptions {
  /**
   * Fold workgroup grids over this many workgroups per dimension instead of
   * the device's limit (65535), so that tests exercise every kernel's
   * folded (x, y, z) workgroup index without dispatching 65536 workgroups.
   */
  foldWorkgroupsAt?: number;
}

/** The `workgroups` of a dispatch of `count` workgroups (folded early in tests). */
export function workgroupGrid(
  count: number,
  options: TssaOptions = {},
): number | [number, number, number] {
  const at = options.foldWorkgroupsAt;
  return at === undefined ? count : foldWorkgroups(count, at);
}

/** Feature columns per workgroup column chunk in every TSSA kernel. */
export const COLUMN_CHUNK = 64;

/** The block layout of a `[B, N, D]` token tensor. */
export interface BlockLayout {
  batches: number;
  tokens: number;
  dim: number;
  /** Tokens per block. */
  blockRows: number;
  /** `ceil(tokens / blockRows)`. */
  blocksPerBatch: number;
  /** `batches · blocksPerBatch`. */
  blocks: number;
}

/** A run of whole blocks that fits one binding. */
export interface BlockPiece {
  /** First global block index. */
  firstBlock: number;
  /** Number of blocks. */
  blockCount: number;
  /** Flat row (`b·N + n`) of the piece's first token. */
  rowBase: number;
  /** Flat row one past the piece's last token. */
  rowEnd: number;
}

/** Describe the blocks of a `[batches, tokens, dim]` tensor. */
export function blockLayout(
  batches: number,
  tokens: number,
  dim: number,
  blockRows: number,
): BlockLayout {
  const blocksPerBatch = Math.ceil(tokens / blockRows);
  return { batches, tokens, dim, blockRows, blocksPerBatch, blocks: batches * blocksPerBatch };
}

function blockStartRow(l: BlockLayout, g: number): number {
  const b = Math.floor(g / l.blocksPerBatch);
  return b * l.tokens + (g % l.blocksPerBatch) * l.blockRows;
}

function blockEndRow(l: BlockLayout, g: number): number {
  const b = Math.floor(g / l.blocksPerBatch);
  const k = g % l.blocksPerBatch;
  return b * l.tokens + Math.min(l.tokens, (k + 1) * l.blockRows);
}

/**
 * Split the blocks into pieces whose rows, bound from the aligned offset at
 * or below their first row, fit `maxBindingBytes` (or the device limit).
 *
 * @throws {RangeError} when one block does not fit a binding.
 */
export function blockPieces(
  gpu: Gpu,
  op: string,
  l: BlockLayout,
  options: ChunkOptions = {},
): BlockPiece[] {
  const maxBytes = bindingLimit(gpu, options);
  const align = storageAlignment(gpu);
  const rowBytes = l.dim * 4;
  if (l.blocks === 0) return [];
  if (l.batches * l.tokens * rowBytes <= maxBytes) {
    return [{ firstBlock: 0, blockCount: l.blocks, rowBase: 0, rowEnd: l.batches * l.tokens }];
  }
  if (l.blockRows * rowBytes + align - 4 > maxBytes) {
    throw new RangeError(
      `${op}: a block of ${l.blockRows} tokens × ${l.dim} features does not fit a ` +
        `${maxBytes}-byte storage binding`,
    );
  }
  const pieces: BlockPiece[] = [];
  let first = 0;
  while (first < l.blocks) {
    const start = blockStartRow(l, first);
    const offset = Math.floor((start * rowBytes) / align) * align;
    let end = first + 1;
    while (end < l.blocks && blockEndRow(l, end) * rowBytes - offset <= maxBytes) end++;
    pieces.push({
      firstBlock: first,
      blockCount: end - first,
      rowBase: start,
      rowEnd: blockEndRow(l, end - 1),
    });
    first = end;
  }
  return pieces;
}

/** Bind a piece's rows of a `[B, N, D]` tensor; `base` is `elemBase`. */
export function bindPiece(
  gpu: Gpu,
  t: Tensor,
  l: BlockLayout,
  piece: BlockPiece,
): { range: BufferRange; base: number } {
  return bindRows(t, piece.rowBase, piece.rowEnd - piece.rowBase, l.dim, storageAlignment(gpu));
}

/** The uniform values every block kernel starts with, in struct order. */
export function blockParams(l: BlockLayout, piece: BlockPiece, elemBase: number): number[] {
  return [
    l.tokens,
    l.blockRows,
    l.blocksPerBatch,
    piece.firstBlock,
    piece.blockCount,
    piece.rowBase,
    elemBase,
  ];
}
