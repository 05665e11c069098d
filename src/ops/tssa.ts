/**
 * Token Statistics Self-Attention (TSSA), the non-causal operator of ToST
 * (`AttentionTSSA` of the reference), on the GPU and in float64 on the CPU.
 *
 * With `w = qkv(x)` split into heads, `w[b, n, h·d + k]`:
 *
 *     w_sq[h,n,k] = w[h,n,k]² / max(Σ_n' w[h,n',k]², 1e-24)
 *     Pi[h,n]     = softmax over h of (temp[h] · Σ_k w_sq[h,n,k])
 *     dots[h,k]   = Σ_n Pi[h,n]·w[h,n,k]² / (Σ_n Pi[h,n] + 1e-8)
 *     y[h,n,k]    = −w[h,n,k] · Pi[h,n] / (1 + dots[h,k])
 *
 * (the clamp is `F.normalize`'s `max(‖w‖, 1e-12)`, which the reference
 * applies before squaring: an all-zero feature gives zeros, not NaN).
 *
 * The GPU version makes three passes over the tokens, each parallel over
 * blocks of 128 tokens: column sums of w² (`kernels/block_sums.wgsl`,
 * reduced over blocks as a tree), Pi with the Pi-weighted sums fused
 * (`kernels/tssa_pi.wgsl`, reduced the same way), and the output
 * (`kernels/tssa_out.wgsl`). Tensors over one storage binding are processed
 * in pieces of whole blocks. Asked for its saves, the same forward keeps
 * Pi and the statistics for the backward (`tssa_backward.ts`) instead of
 * freeing them.
 *
 * The float64 reference of the forward and of its saves is `tssaReference`
 * in `tssa_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import tssaPiWgsl from "../../kernels/tssa_pi.wgsl" with { type: "text" };
import tssaOutWgsl from "../../kernels/tssa_out.wgsl" with { type: "text" };
import { assertF32 } from "./_shapes.ts";
import {
  bindPiece,
  blockLayout,
  blockParams,
  blockPieces,
  COLUMN_CHUNK,
  workgroupGrid,
} from "./_tssa_blocks.ts";
import type { TssaOptions } from "./_tssa_blocks.ts";
import { blockSums, totalSums } from "./_scan.ts";

/** Tokens per workgroup block in the non-causal passes. */
const BLOCK_ROWS = 128;
/** Largest head count: a tile of (token, head) pairs fills at most 256 threads. */
const MAX_HEADS = 256;
/** Largest feature size: the Pi kernels' token tile holds 3072 floats. */
const TILE_FLOATS = 3072;

/** Shape of a TSSA input `[B, N, heads·d]`, checked. */
export interface TssaShape {
  batches: number;
  tokens: number;
  dim: number;
  heads: number;
  headDim: number;
}

/**
 * Check `w` (`[B, N, D]`, f32), `heads` and `temp` (`heads` values, e.g.
 * `[H]` or `[H, 1]`) and return the sizes.
 *
 * @throws {TypeError} on wrong ranks, dtypes or sizes
 * @throws {RangeError} on a head count below 1 or over 256, or over 3072 features
 * @example
 * ```ts ignore
 * const s = tssaShape("myOp", gpu.empty([2, 50, 64]), gpu.empty([4, 1]), 4);
 * // { batches: 2, tokens: 50, dim: 64, heads: 4, headDim: 16 }
 * ```
 */
export function tssaShape(op: string, w: Tensor, temp: Tensor, heads: number): TssaShape {
  assertF32(op, "w", w);
  assertF32(op, "temp", temp);
  if (w.shape.length !== 3) {
    throw new TypeError(`${op}: w must have shape [B, N, heads·d], got [${w.shape}]`);
  }
  const [batches, tokens, dim] = w.shape;
  if (!Number.isInteger(heads) || heads < 1) {
    throw new RangeError(`${op}: heads must be a positive integer, got ${heads}`);
  }
  if (heads > MAX_HEADS) {
    throw new RangeError(`${op}: at most ${MAX_HEADS} heads are supported, got ${heads}`);
  }
  if (dim % heads !== 0 || dim === 0) {
    throw new TypeError(`${op}: feature size ${dim} of w is not a positive multiple of ${heads}`);
  }
  if (dim > TILE_FLOATS) {
    throw new RangeError(`${op}: at most ${TILE_FLOATS} features are supported, got ${dim}`);
  }
  if (temp.numel !== heads) {
    throw new TypeError(
      `${op}: temp must hold ${heads} values (one per head), got [${temp.shape}]`,
    );
  }
  return { batches, tokens, dim, heads, headDim: dim / heads };
}

/**
 * The compile-time slots of the TSSA kernels (`kernels/tssa_*.wgsl`,
 * `kernels/causal_tssa_*.wgsl`): sizes and the number of 64-column chunks.
 *
 * @example
 * ```ts
 * import { tssaSlots } from "./tssa.ts";
 * const slots = tssaSlots({ batches: 1, tokens: 9, dim: 384, heads: 8, headDim: 48 });
 * if (slots.chunks !== 6) throw new Error("six chunks of 64 columns");
 * ```
 */
export function tssaSlots(s: TssaShape): Record<string, number> {
  return {
    dim: s.dim,
    heads: s.heads,
    headDim: s.headDim,
    chunks: Math.ceil(s.dim / COLUMN_CHUNK),
  };
}

/**
 * What the forward keeps for {@linkcode tssaBackward} (`tssa_backward.ts`)
 * when asked for its saves.
 */
export interface TssaSaves {
  /** Head memberships Pi, `[B·N, H]`. */
  pi: Tensor;
  /** `Σ_n w²` per batch element and feature (unclamped), `[B, 1, D]`. */
  sq: Tensor;
  /**
   * `[B, 1, 2·D]`: `Σ_n Pi·w²` per feature, then `Σ_n Pi` of the feature's
   * head repeated for each of its `d` features.
   */
  stats: Tensor;
}

/** Options of {@linkcode tssa}: the saves request and the test-only options. */
export interface TssaForwardOptions extends TssaOptions {
  /** Keep Pi and the statistics for the backward and return them. */
  saves?: boolean;
}

/**
 * Non-causal TSSA on the GPU: `w` `[B, N, H·d]` (the qkv projection, heads
 * interleaved as `(h d)`) → `y` `[B, N, H·d]` in the same layout, ready for
 * the output projection. Records dispatches only; read `y` to wait. With
 * `{ saves: true }` it returns `{ y, saves }`: the same passes, with Pi and
 * the statistics kept for the backward.
 *
 * @param temp the per-head temperature, `H` values (the reference's `[H, 1]`)
 * @param heads number of heads `H`; `H·d` must equal w's last dimension
 * @param options `saves`; test-only: a smaller binding limit and early grid folding
 * @throws {TypeError} on wrong shapes or dtypes
 * @example
 * ```ts ignore
 * const w = gpu.upload(new Float32Array(2 * 5 * 8).fill(0.5), [2, 5, 8]);
 * const temp = gpu.upload(new Float32Array([1, 1]), [2, 1]);
 * const y = await tssa(gpu, w, temp, 2); // [2, 5, 8]
 * const { saves } = await tssa(gpu, w, temp, 2, { saves: true }); // for tssaBackward
 * ```
 */
export async function tssa(
  gpu: Gpu,
  w: Tensor,
  temp: Tensor,
  heads: number,
  options: TssaForwardOptions & { saves: true },
): Promise<{ y: Tensor; saves: TssaSaves }>;
export async function tssa(
  gpu: Gpu,
  w: Tensor,
  temp: Tensor,
  heads: number,
  options?: TssaForwardOptions,
): Promise<Tensor>;
export async function tssa(
  gpu: Gpu,
  w: Tensor,
  temp: Tensor,
  heads: number,
  options: TssaForwardOptions = {},
): Promise<Tensor | { y: Tensor; saves: TssaSaves }> {
  const s = tssaShape("tssa", w, temp, heads);
  const { batches: B, tokens: N, dim: D } = s;
  const y = gpu.empty([B, N, D], "f32", "tssa.y");
  const pi = gpu.empty([B * N, heads], "f32", "tssa.pi");
  const scratch: Tensor[] = [pi];
  let saves: TssaSaves | null = null;
  try {
    if (B * N === 0) {
      const sq = gpu.empty([B, 1, D], "f32", "tssa.sq");
      const stats = gpu.empty([B, 1, 2 * D], "f32", "tssa.stats");
      scratch.push(sq, stats);
      saves = { pi, sq, stats };
    } else {
      saves = await record(gpu, s, { w, temp, pi, y }, scratch, options);
    }
  } catch (err) {
    y.destroy();
    for (const t of scratch) t.destroy();
    throw err;
  }
  if (options.saves) {
    const kept = new Set(Object.values(saves));
    for (const t of scratch) if (!kept.has(t)) t.destroy();
    return { y, saves };
  }
  for (const t of scratch) t.destroy();
  return y;
}

/** Record the three passes; every tensor made is pushed onto `scratch`. */
async function record(
  gpu: Gpu,
  s: TssaShape,
  t: { w: Tensor; temp: Tensor; pi: Tensor; y: Tensor },
  scratch: Tensor[],
  options: TssaOptions,
): Promise<TssaSaves> {
  const { batches: B, tokens: N, dim: D } = s;
  const { w, temp, pi, y } = t;
  const layout = blockLayout(B, N, D, BLOCK_ROWS);
  const pieces = blockPieces(gpu, "tssa", layout, options);
  const slots = tssaSlots(s);
  const [piKernel, outKernel] = await Promise.all([
    gpu.kernel("tssa_pi", tssaPiWgsl, slots),
    gpu.kernel("tssa_out", tssaOutWgsl, slots),
  ]);
  // Pass 1: Σ_n w² per batch and feature.
  const sqBlocks = await blockSums(gpu, w, layout, pieces, true, scratch, options);
  const sq = await totalSums(gpu, sqBlocks, B, layout.blocksPerBatch, D, scratch, options);
  // Pass 2: Pi, and per block Σ Pi·w² and Σ Pi.
  gpu.assertBindable("tssa: Pi", pi.byteSize);
  const partial = gpu.empty([B, layout.blocksPerBatch, 2 * D], "f32", "tssa.partial");
  scratch.push(partial);
  gpu.assertBindable("tssa: partial sums", partial.byteSize);
  for (const piece of pieces) {
    const bound = bindPiece(gpu, w, layout, piece);
    gpu.dispatch(piKernel, {
      bindings: [bound.range, sq, temp, pi, partial],
      params: blockParams(layout, piece, bound.base),
      workgroups: workgroupGrid(piece.blockCount, options),
    });
  }
  const stats = await totalSums(gpu, partial, B, layout.blocksPerBatch, 2 * D, scratch, options);
  // Pass 3: y.
  for (const piece of pieces) {
    const wb = bindPiece(gpu, w, layout, piece);
    const yb = bindPiece(gpu, y, layout, piece);
    gpu.dispatch(outKernel, {
      bindings: [wb.range, pi, stats, yb.range],
      params: blockParams(layout, piece, wb.base),
      workgroups: workgroupGrid(piece.blockCount * slots.chunks, options),
    });
  }
  return { pi, sq, stats };
}
