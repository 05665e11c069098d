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
 * Two GPU designs, chosen per adapter by measuring ({@linkcode TSSA},
 * `src/gpu/tune.ts`):
 *
 * - `blocks` (hardware GPUs): three passes over the tokens, each parallel
 *   over blocks of 128 tokens: column sums of w² (`kernels/block_sums.wgsl`,
 *   reduced over blocks as a tree), Pi with the Pi-weighted sums fused
 *   (`kernels/tssa_pi.wgsl`, workgroups of 256 threads with barriers,
 *   reduced the same way), and the output (`kernels/tssa_out.wgsl`).
 *   Tensors over one storage binding are processed in pieces of whole blocks.
 * - `serial` (software adapters such as lavapipe): one dispatch, one
 *   invocation per batch element doing all of it in token order with no
 *   workgroup memory and no barriers (`kernels/tssa_serial.wgsl`); pieces of
 *   whole batch elements.
 *
 * Both give the same saves. Asked for them, the forward keeps Pi and the
 * statistics for the backward (`tssa_backward.ts`) instead of freeing them.
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
import tssaSerialWgsl from "../../kernels/tssa_serial.wgsl" with { type: "text" };
import { blockSums, totalSums } from "./_scan.ts";
import { bucket, testValues, type Tunable } from "../gpu/tune.ts";
import { mismatch, resolveVariant, tunableOp } from "./_tuned.ts";
import { bindingLimit, bindRows, rowPieces, storageAlignment } from "./_shapes.ts";
import { tssaReference } from "./tssa_reference.ts";
import { serialBudgetExceeded } from "./_serial.ts";

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
  /** Test/bench-only: run this design of {@linkcode TSSA_VARIANTS} instead of the tuned one. */
  variant?: string;
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
      let variant = await resolveVariant(gpu, "tssa", TSSA, s, options.variant);
      // A tuned (not forced) serial choice gives way to blocks when a test's
      // smaller binding limit cannot hold one batch element.
      if (variant === "serial" && !options.variant && !serialFits(gpu, s, options)) {
        variant = "blocks";
      }
      saves = variant === "serial"
        ? await recordSerial(gpu, s, { w, temp, pi, y }, scratch, options)
        : await record(gpu, s, { w, temp, pi, y }, scratch, options);
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

/** Batch elements (invocations) per workgroup of the serial design. */
const SERIAL_WG = 8;

/** The serial design: one dispatch per piece of whole batch elements. */
async function recordSerial(
  gpu: Gpu,
  s: TssaShape,
  t: { w: Tensor; temp: Tensor; pi: Tensor; y: Tensor },
  scratch: Tensor[],
  options: TssaOptions,
): Promise<TssaSaves> {
  const { batches: B, tokens: N, dim: D } = s;
  const { w, temp, pi, y } = t;
  const sq = gpu.empty([B, 1, D], "f32", "tssa.sq");
  const stats = gpu.empty([B, 1, 2 * D], "f32", "tssa.stats");
  scratch.push(sq, stats);
  gpu.assertBindable("tssa: Pi", pi.byteSize);
  gpu.assertBindable("tssa: statistics", stats.byteSize);
  const kernel = await gpu.kernel("tssa_serial", tssaSerialWgsl, {
    dim: D,
    heads: s.heads,
    headDim: s.headDim,
    workgroupSize: SERIAL_WG,
  });
  const align = storageAlignment(gpu);
  const pieces = rowPieces("tssa", B, N * D * 4, bindingLimit(gpu, options), align);
  for (const { start, count } of pieces) {
    const wb = bindRows(w, start, count, N * D, align);
    const yb = bindRows(y, start, count, N * D, align);
    gpu.dispatch(kernel, {
      bindings: [wb.range, temp, pi, sq, stats, yb.range],
      params: [count, N, start, wb.base],
      workgroups: workgroupGrid(Math.ceil(count / SERIAL_WG), options),
    });
  }
  return { pi, sq, stats };
}

/** Whether one batch element of w fits a storage binding (the serial designs' pieces). */
export function serialFits(gpu: Gpu, s: TssaShape, options: TssaOptions = {}): boolean {
  return s.tokens * s.dim * 4 + storageAlignment(gpu) - 4 <= bindingLimit(gpu, options);
}

/** The TSSA forward designs (see the module doc). */
export const TSSA_VARIANTS = ["blocks", "serial"] as const;

/** Calls with fewer tokens than this over all batch elements are not measured. */
const TUNE_MIN_TOKENS = 16;

/**
 * The shape class of a TSSA call: batch elements, tokens, features and heads,
 * each rounded up to a power of 4 (the serial design's parallelism is the
 * batch, its serial work tokens × features).
 */
export function tssaClass(s: TssaShape): string | null {
  if (s.batches * s.tokens < TUNE_MIN_TOKENS) return null;
  return `b${bucket(s.batches)} n${bucket(s.tokens)} d${bucket(s.dim)} h${bucket(s.heads)}`;
}

/** Loop iterations of one invocation of `kernels/tssa_serial.wgsl`, counting every loop level. */
export function tssaSerialIterations(s: TssaShape): number {
  const { tokens: N, dim: D, heads: H } = s;
  return D * (N + 1) + N * (D + 3 * H + 1) + D * (2 * N + 1);
}

/**
 * Why a variant of a TSSA-family op (`variants`: its designs, one of them
 * "serial") cannot run a call whose serial design loops `iterations` times
 * per invocation, or null. Shared by the non-causal and causal forwards.
 */
export function tssaVariantUnsupported(
  gpu: Gpu,
  variants: readonly string[],
  variant: string,
  s: TssaShape,
  iterations: number,
): string | null {
  if (!variants.includes(variant)) return `is unknown (known: ${variants.join(", ")})`;
  if (variant !== "serial") return null;
  const over = serialBudgetExceeded(iterations, `${s.tokens} tokens × ${s.dim} features`);
  if (over) return over;
  if (!serialFits(gpu, s)) {
    return `needs one batch element (${s.tokens * s.dim * 4} bytes) in a storage binding`;
  }
  return null;
}

/** Why a TSSA variant cannot run a call, or null. */
export function tssaUnsupported(gpu: Gpu, variant: string, s: TssaShape): string | null {
  return tssaVariantUnsupported(gpu, TSSA_VARIANTS, variant, s, tssaSerialIterations(s));
}

/** Shapes the variants are validated at: awkward sizes, heads over chunk edges, an all-zero feature. */
const CHECK_TSSA: readonly TssaShape[] = [
  { batches: 1, tokens: 1, dim: 1, heads: 1, headDim: 1 },
  { batches: 3, tokens: 7, dim: 20, heads: 4, headDim: 5 },
  { batches: 9, tokens: 17, dim: 64, heads: 4, headDim: 16 },
  { batches: 2, tokens: 130, dim: 96, heads: 6, headDim: 16 },
];

async function validateTssa(gpu: Gpu, variant: string): Promise<string | null> {
  for (const s of CHECK_TSSA) {
    const { batches: B, tokens: N, dim: D, heads: H } = s;
    const hw = testValues(B * N * D, N + D);
    for (let i = D - 1; i < hw.length; i += D) hw[i] = 0; // the last feature: all zero
    const ht = testValues(H, 5).map((v) => v + 1.5);
    const w = gpu.upload(hw, [B, N, D], "check.w");
    const temp = gpu.upload(ht, [H], "check.temp");
    try {
      // A piece limit of about one batch element (serial) or one block of
      // 128 tokens (blocks) exercises the pieces.
      const limit = Math.max((variant === "serial" ? N : 128) * D * 4 + 512, 4096);
      const { y, saves } = await tssa(gpu, w, temp, H, {
        variant,
        saves: true,
        maxBindingBytes: limit,
      });
      const [gy, gpi] = [await y.read(), await saves.pi.read()];
      for (const t of [y, saves.pi, saves.sq, saves.stats]) t.destroy();
      const ref = tssaReference(hw, ht, { batches: B, tokens: N, heads: H, headDim: s.headDim });
      const tol = { atol: 1e-6, rtol: 1e-4 };
      const what = `${B}×${N}×${D}, ${H} heads`;
      const why = mismatch(`y ${what}`, gy, ref.y, tol) ?? mismatch(`Pi ${what}`, gpi, ref.pi, tol);
      if (why) return why;
    } finally {
      w.destroy();
      temp.destroy();
    }
  }
  return null;
}

/** The TSSA forward as a tuned op ("tssa" in `tost tune` and `tost info`). */
export const TSSA: Tunable<TssaShape> = tunableOp<TssaShape>({
  op: "tssa",
  version: 1,
  variants: TSSA_VARIANTS,
  unsupported: tssaUnsupported,
  shapeClass: tssaClass,
  fallback: (gpu, s) =>
    gpu.info.software && tssaUnsupported(gpu, "serial", s) === null ? "serial" : "blocks",
  validate: validateTssa,
  workload(gpu, s) {
    const { batches: B, tokens: N, dim: D, heads: H } = s;
    const w = gpu.upload(testValues(B * N * D, 1), [B, N, D], "tune.w");
    const temp = gpu.upload(testValues(H, 2), [H], "tune.temp");
    return {
      shape: [B, N, D, H],
      run: async (variant) => {
        const { y, saves } = await tssa(gpu, w, temp, H, { variant, saves: true });
        for (const t of [y, saves.pi, saves.sq, saves.stats]) t.destroy();
      },
      destroy() {
        w.destroy();
        temp.destroy();
      },
    };
  },
});
