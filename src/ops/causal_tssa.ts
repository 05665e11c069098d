/**
 * Causal Token Statistics Self-Attention (`CausalSelfAttention_TSSA` of the
 * reference) on the GPU and in float64 on the CPU. The sums over tokens of
 * the non-causal operator become prefix sums over the past:
 *
 *     denom[h,n,k] = max(Σ_{n' ≤ n} w[h,n',k]², 1e-12)
 *     Pi[h,n]      = softmax over h of temp[h] · (Σ_k w[h,n,k]² / denom[h,n,k]
 *                                                 + d · denom_bias[h,n])
 *     dots[h,n,k]  = Σ_{n' ≤ n} Pi[h,n']·w[h,n',k]² / (Σ_{n' ≤ n} Pi[h,n'] + 1e-8)
 *     y[h,n,k]     = −w[h,n,k] · Pi[h,n] / (1 + dots[h,n,k])
 *
 * The GPU version is a parallel scan: work O(N·D), depth O(log N). Tokens
 * are cut into blocks of 64; block totals of w² (`kernels/block_sums.wgsl`)
 * are scanned hierarchically (`kernels/scan_block.wgsl`,
 * `kernels/scan_add.wgsl`); `kernels/causal_tssa_pi.wgsl` finishes the prefix
 * sums inside each block, computes Pi and the block totals of Pi·w² and Pi,
 * which are scanned the same way; `kernels/causal_tssa_out.wgsl` finishes
 * those prefix sums and writes y. Every prefix sum is a block-local f32 sum
 * of at most 64 terms plus a carry formed as a tree, so rounding grows with
 * log N, not N. Asked for its saves, the same forward keeps Pi for the
 * backward (`causal_tssa_backward.ts`, which recomputes the prefix sums
 * rather than keep three more `[B, N, ·]` tensors alive).
 *
 * The float64 reference of the forward and of its saves is
 * `causalTssaReference` in `causal_tssa_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import causalPiWgsl from "../../kernels/causal_tssa_pi.wgsl" with { type: "text" };
import causalOutWgsl from "../../kernels/causal_tssa_out.wgsl" with { type: "text" };
import { assertF32 } from "./_shapes.ts";
import { bindPiece, blockLayout, blockParams, blockPieces, workgroupGrid } from "./_tssa_blocks.ts";
import type { TssaOptions } from "./_tssa_blocks.ts";
import { blockSums, scanRows } from "./_scan.ts";
import { tssaShape, tssaSlots } from "./tssa.ts";
import type { TssaShape } from "./tssa.ts";

/** Tokens per block: the length of the serial in-block part of each prefix sum. */
const BLOCK_ROWS = 64;
/** Exclusive prefix sums over the blocks. */
const FORWARD = { reverse: false };

/** What the forward keeps for `causalTssaBackward` when asked for its saves. */
export interface CausalTssaSaves {
  /** Head memberships Pi, `[B·N, H]`. */
  pi: Tensor;
}

/** Options of {@linkcode causalTssa}: the saves request and the test-only options. */
export interface CausalTssaForwardOptions extends TssaOptions {
  /** Keep Pi for the backward and return it. */
  saves?: boolean;
}

/**
 * Check `denomBias` (`[H, blockSize(, 1)]`, f32) against the head count and
 * the tokens; returns `blockSize`.
 *
 * @throws {TypeError} for a misshapen tensor; {RangeError} when `tokens > blockSize`
 */
export function causalBlockSize(
  op: string,
  denomBias: Tensor,
  heads: number,
  tokens: number,
): number {
  assertF32(op, "denomBias", denomBias);
  const blockSize = denomBias.numel / heads;
  if (denomBias.shape[0] !== heads || !Number.isInteger(blockSize)) {
    throw new TypeError(
      `${op}: denomBias must have shape [${heads}, blockSize(, 1)], got [${denomBias.shape}]`,
    );
  }
  if (tokens > blockSize) {
    throw new RangeError(`${op}: ${tokens} tokens exceed the block size ${blockSize} of denomBias`);
  }
  return blockSize;
}

/**
 * Causal TSSA on the GPU: `w` `[B, N, H·d]` (the `c_attn` projection, heads
 * interleaved as `(h d)`) → `y` `[B, N, H·d]`, ready for `c_proj`. Records
 * dispatches only; read `y` to wait. With `{ saves: true }` it returns
 * `{ y, saves }`: the same passes, with Pi kept for the backward.
 *
 * @param temp per-head temperature, `H` values (the reference's `[H, 1]`)
 * @param denomBias `[H, blockSize]` (or the reference's `[H, blockSize, 1]`)
 * @param heads number of heads `H`
 * @param options `saves`; test-only: a smaller binding limit and early grid folding
 * @throws {RangeError} when `N > blockSize`
 * @throws {TypeError} on wrong shapes or dtypes
 * @example
 * ```ts ignore
 * const w = gpu.upload(new Float32Array(3 * 8).fill(0.5), [1, 3, 8]);
 * const temp = gpu.upload(new Float32Array([1, 1]), [2, 1]);
 * const denomBias = gpu.upload(new Float32Array(2 * 16), [2, 16, 1]);
 * const y = await causalTssa(gpu, w, temp, denomBias, 2); // [1, 3, 8]
 * ```
 */
export async function causalTssa(
  gpu: Gpu,
  w: Tensor,
  temp: Tensor,
  denomBias: Tensor,
  heads: number,
  options: CausalTssaForwardOptions & { saves: true },
): Promise<{ y: Tensor; saves: CausalTssaSaves }>;
export async function causalTssa(
  gpu: Gpu,
  w: Tensor,
  temp: Tensor,
  denomBias: Tensor,
  heads: number,
  options?: CausalTssaForwardOptions,
): Promise<Tensor>;
export async function causalTssa(
  gpu: Gpu,
  w: Tensor,
  temp: Tensor,
  denomBias: Tensor,
  heads: number,
  options: CausalTssaForwardOptions = {},
): Promise<Tensor | { y: Tensor; saves: CausalTssaSaves }> {
  const op = "causalTssa";
  const s = tssaShape(op, w, temp, heads);
  const { batches: B, tokens: N, dim: D } = s;
  const blockSize = causalBlockSize(op, denomBias, heads, N);
  const y = gpu.empty([B, N, D], "f32", "causalTssa.y");
  const pi = gpu.empty([B * N, heads], "f32", "causalTssa.pi");
  const scratch: Tensor[] = [];
  try {
    if (B * N > 0) {
      await record(gpu, s, { w, temp, denomBias, pi, y }, blockSize, scratch, options);
    }
  } catch (err) {
    y.destroy();
    pi.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  if (options.saves) return { y, saves: { pi } };
  pi.destroy();
  return y;
}

/** Record the passes; the temporaries are pushed onto `scratch`. */
async function record(
  gpu: Gpu,
  s: TssaShape,
  t: { w: Tensor; temp: Tensor; denomBias: Tensor; pi: Tensor; y: Tensor },
  blockSize: number,
  scratch: Tensor[],
  options: TssaOptions,
): Promise<void> {
  const op = "causalTssa";
  const { batches: B, tokens: N, dim: D } = s;
  const { w, temp, denomBias, pi, y } = t;
  const layout = blockLayout(B, N, D, BLOCK_ROWS);
  const pieces = blockPieces(gpu, op, layout, options);
  const slots = tssaSlots(s);
  const [piKernel, outKernel] = await Promise.all([
    gpu.kernel("causal_tssa_pi", causalPiWgsl, slots),
    gpu.kernel("causal_tssa_out", causalOutWgsl, slots),
  ]);
  const NB = layout.blocksPerBatch;
  // Σ w² over the earlier blocks, per batch and feature (zero with one block:
  // new tensors are zero-filled).
  let sqOff: Tensor;
  if (NB === 1) {
    sqOff = gpu.empty([B, 1, D], "f32", "causalTssa.zeros");
    scratch.push(sqOff);
  } else {
    sqOff = await blockSums(gpu, w, layout, pieces, true, scratch, options);
    await scanRows(gpu, sqOff, { batches: B, rows: NB, cols: D }, FORWARD, scratch, options);
  }
  // Pi, and the block totals of Pi·w² and Pi.
  gpu.assertBindable(`${op}: Pi`, pi.byteSize);
  const totals = gpu.empty([B, NB, 2 * D], "f32", "causalTssa.totals");
  scratch.push(totals);
  gpu.assertBindable(`${op}: block totals`, totals.byteSize);
  for (const piece of pieces) {
    const bound = bindPiece(gpu, w, layout, piece);
    gpu.dispatch(piKernel, {
      bindings: [bound.range, sqOff, temp, denomBias, pi, totals],
      params: [...blockParams(layout, piece, bound.base), blockSize],
      workgroups: workgroupGrid(piece.blockCount, options),
    });
  }
  let offsets = totals;
  if (NB === 1) {
    offsets = gpu.empty([B, 1, 2 * D], "f32", "causalTssa.zeros");
    scratch.push(offsets);
  } else {
    await scanRows(gpu, totals, { batches: B, rows: NB, cols: 2 * D }, FORWARD, scratch, options);
  }
  for (const piece of pieces) {
    const wb = bindPiece(gpu, w, layout, piece);
    const yb = bindPiece(gpu, y, layout, piece);
    gpu.dispatch(outKernel, {
      bindings: [wb.range, pi, offsets, yb.range],
      params: blockParams(layout, piece, wb.base),
      workgroups: workgroupGrid(piece.blockCount * slots.chunks, options),
    });
  }
}
