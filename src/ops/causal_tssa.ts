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
 * log N, not N.
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
import { softmaxInPlace, tssaShape, tssaSlots } from "./tssa.ts";

/** Tokens per block: the length of the serial in-block part of each prefix sum. */
const BLOCK_ROWS = 64;
/** Exclusive prefix sums over the blocks. */
const FORWARD = { reverse: false };

/**
 * Causal TSSA on the GPU: `w` `[B, N, H·d]` (the `c_attn` projection, heads
 * interleaved as `(h d)`) → `y` `[B, N, H·d]`, ready for `c_proj`. Records
 * dispatches only; read `y` to wait.
 *
 * @param temp per-head temperature, `H` values (the reference's `[H, 1]`)
 * @param denomBias `[H, blockSize]` (or the reference's `[H, blockSize, 1]`)
 * @param heads number of heads `H`
 * @param options test-only: a smaller binding limit and early grid folding
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
  options: TssaOptions = {},
): Promise<Tensor> {
  const op = "causalTssa";
  const s = tssaShape(op, w, temp, heads);
  assertF32(op, "denomBias", denomBias);
  const blockSize = denomBias.numel / heads;
  if (denomBias.shape[0] !== heads || !Number.isInteger(blockSize)) {
    throw new TypeError(
      `${op}: denomBias must have shape [${heads}, blockSize(, 1)], got [${denomBias.shape}]`,
    );
  }
  const { batches: B, tokens: N, dim: D } = s;
  if (N > blockSize) {
    throw new RangeError(`${op}: ${N} tokens exceed the block size ${blockSize} of denomBias`);
  }
  const y = gpu.empty([B, N, D], "f32", "causalTssa.y");
  if (B * N === 0) return y;
  const layout = blockLayout(B, N, D, BLOCK_ROWS);
  const pieces = blockPieces(gpu, op, layout, options);
  const slots = tssaSlots(s);
  const [piKernel, outKernel] = await Promise.all([
    gpu.kernel("causal_tssa_pi", causalPiWgsl, slots),
    gpu.kernel("causal_tssa_out", causalOutWgsl, slots),
  ]);
  const NB = layout.blocksPerBatch;
  const scratch: Tensor[] = [];
  try {
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
    const pi = gpu.empty([B * N, heads], "f32", "causalTssa.pi");
    scratch.push(pi);
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
      const dims = { batches: B, rows: NB, cols: 2 * D };
      await scanRows(gpu, totals, dims, FORWARD, scratch, options);
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
  } catch (err) {
    y.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  return y;
}

/**
 * Causal TSSA on the CPU in float64, exactly as the reference computes it
 * (see the module documentation). `w` is `[B, N, heads·d]`, `denomBias` is
 * `[heads, blockSize]`, both row-major.
 *
 * @returns y, `[B, N, heads·d]`, float64
 * @throws {RangeError} when `N > blockSize`
 * @example
 * ```ts
 * import { causalTssaReference } from "./causal_tssa.ts";
 * // One head: Pi = 1 and dots = w²_0 / (1 + 1e-8) at the first token.
 * const y = causalTssaReference(new Float64Array([2, 1]), [1], [0, 0], 1, 2, 1, 1, 2);
 * if (Math.abs(y[0] + 2 / (1 + 4 / (1 + 1e-8))) > 1e-12) throw new Error("causal");
 * ```
 */
export function causalTssaReference(
  w: ArrayLike<number>,
  temp: ArrayLike<number>,
  denomBias: ArrayLike<number>,
  B: number,
  N: number,
  heads: number,
  d: number,
  blockSize: number,
): Float64Array {
  const D = heads * d;
  if (w.length !== B * N * D) {
    throw new TypeError(`causalTssaReference: w has ${w.length} values, expected ${B}·${N}·${D}`);
  }
  if (temp.length !== heads || denomBias.length !== heads * blockSize) {
    throw new TypeError(
      `causalTssaReference: temp must hold ${heads} and denomBias ${heads}·${blockSize} values`,
    );
  }
  if (N > blockSize) {
    throw new RangeError(`causalTssaReference: ${N} tokens exceed the block size ${blockSize}`);
  }
  const y = new Float64Array(B * N * D);
  const sq = new Float64Array(D);
  const num = new Float64Array(D);
  const den = new Float64Array(heads);
  const z = new Float64Array(heads);
  for (let b = 0; b < B; b++) {
    sq.fill(0);
    num.fill(0);
    den.fill(0);
    for (let n = 0; n < N; n++) {
      const row = (b * N + n) * D;
      for (let c = 0; c < D; c++) sq[c] += w[row + c] ** 2;
      for (let h = 0; h < heads; h++) {
        let s = 0;
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          s += w[row + c] ** 2 / Math.max(sq[c], 1e-12) + denomBias[h * blockSize + n];
        }
        z[h] = temp[h] * s;
      }
      softmaxInPlace(z);
      for (let h = 0; h < heads; h++) {
        den[h] += z[h];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          num[c] += z[h] * w[row + c] ** 2;
          const dots = num[c] / (den[h] + 1e-8);
          y[row + c] = -(w[row + c] * z[h]) / (1 + dots);
        }
      }
    }
  }
  return y;
}
