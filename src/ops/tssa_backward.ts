/**
 * Backward of the non-causal TSSA operator (`AttentionTSSA` of the
 * reference): a forward that keeps what the backward needs, the backward on
 * the GPU, and float64 CPU references of both.
 *
 * Gradient convention (as in llm.c), used by every backward in tost:
 * **parameter gradients accumulate** (`+=`) into gradient buffers the caller
 * provides and zeroes; **activation gradients are assigned** (returned fresh).
 *
 * Forward, per batch element and head `h` (`c = h·d + k`, `S` clamped as
 * `F.normalize` does: `max(‖w[:, c]‖, 1e-12)²`):
 *
 *     S[c]     = max(Σ_n w[n,c]², 1e-24)
 *     u[n,h]   = Σ_k w[n,c]² / S[c]
 *     Pi[n,h]  = softmax over h of temp[h]·u[n,h]
 *     M[c]     = Σ_n Pi[n,h]·w[n,c]²,   P[h] = Σ_n Pi[n,h] + 1e-8
 *     a[c]     = 1 / (1 + M[c] / P[h])
 *     y[n,c]   = −w[n,c]·Pi[n,h]·a[c]
 *
 * Backward, with `g = ∂L/∂y`:
 *
 *     ∂a[c]      = −Σ_n g·w·Pi                    (reduction over tokens)
 *     ∂M[c]      = −a²·∂a / P
 *     ∂P[h]      = Σ_k a²·∂a·M / P²
 *     ∂Pi[n,h]   = Σ_k (∂M·w² − g·w·a) + ∂P[h]
 *     ∂z[n,h]    = Pi·(∂Pi − Σ_h' Pi·∂Pi)          (softmax over heads)
 *     ∂temp[h]  += Σ_n ∂z·u
 *     R[c]       = Σ_n ∂z[n,h]·w²                  (reduction over tokens)
 *     ∂S[c]      = −temp[h]·R[c] / S²   (0 where the clamp is active)
 *     ∂w         = −g·Pi·a + 2w·(Pi·∂M + temp[h]·∂z / S + ∂S)
 *
 * @module
 */

import type { Gpu, Kernel, Param, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import accumulateWgsl from "../../kernels/accumulate_transposed.wgsl" with { type: "text" };
import savesPiWgsl from "../../kernels/tssa_backward_saves_pi.wgsl" with { type: "text" };
import yWgsl from "../../kernels/tssa_backward_y.wgsl" with { type: "text" };
import reduceWgsl from "../../kernels/tssa_backward_reduce.wgsl" with { type: "text" };
import coefWgsl from "../../kernels/tssa_backward_coef.wgsl" with { type: "text" };
import piWgsl from "../../kernels/tssa_backward_pi.wgsl" with { type: "text" };
import finishWgsl from "../../kernels/tssa_backward_finish.wgsl" with { type: "text" };
import dwWgsl from "../../kernels/tssa_backward_dw.wgsl" with { type: "text" };
import { assertF32, assertShape } from "./_shapes.ts";
import {
  bindPiece,
  blockLayout,
  blockParams,
  blockPieces,
  COLUMN_CHUNK,
  workgroupGrid,
} from "./_tssa_blocks.ts";
import type { BlockLayout, BlockPiece, TssaOptions } from "./_tssa_blocks.ts";
import { blockSums, totalSums } from "./_scan.ts";
import { tssaShape } from "./tssa.ts";
import type { TssaShape } from "./tssa.ts";

/** Sizes of a TSSA problem: `w` is `[batches, tokens, heads·headDim]`. */
export interface TssaDims {
  batches: number;
  tokens: number;
  heads: number;
  headDim: number;
}

/** What the non-causal forward keeps for the backward (float64). */
export interface TssaSavesReference {
  /** Output `[B, N, D]`. */
  y: Float64Array;
  /** Head memberships `[B, N, H]`. */
  pi: Float64Array;
  /** Column sums of squares `Σ_n w²` (unclamped), `[B, D]`. */
  sq: Float64Array;
  /** `Σ_n Pi·w²`, `[B, D]`. */
  num: Float64Array;
  /** `Σ_n Pi`, `[B, H]`. */
  den: Float64Array;
}

/** Smallest squared column norm, as `F.normalize(eps=1e-12)` clamps it. */
export const TSSA_NORM_SQ_MIN = 1e-24;
/** The `1e-8` added to `Σ Pi` in both operators. */
export const TSSA_PI_EPS = 1e-8;

/** Throw a TypeError unless `a` holds `n` values. */
export function checkLength(op: string, name: string, a: ArrayLike<number>, n: number): void {
  if (a.length !== n) {
    throw new TypeError(`${op}: ${name} has ${a.length} values, expected ${n}`);
  }
}

/** Throw unless the dims are non-negative integers and heads, headDim positive. */
export function checkDims(op: string, dims: TssaDims): void {
  const { batches, tokens, heads, headDim } = dims;
  for (const [name, v] of Object.entries({ batches, tokens })) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`${op}: ${name} is ${v}`);
  }
  for (const [name, v] of Object.entries({ heads, headDim })) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${op}: ${name} is ${v}`);
  }
}

/** Softmax of `z[off … off+n)` in place, float64. */
function softmaxAt(z: Float64Array, off: number, n: number): void {
  let m = -Infinity;
  for (let i = 0; i < n; i++) m = Math.max(m, z[off + i]);
  let s = 0;
  for (let i = 0; i < n; i++) {
    z[off + i] = Math.exp(z[off + i] - m);
    s += z[off + i];
  }
  for (let i = 0; i < n; i++) z[off + i] /= s;
}

/**
 * Non-causal TSSA forward in float64, keeping what
 * {@linkcode tssaBackwardReference} needs.
 *
 * @param w `[B, N, H·d]`
 * @param temp `H` values
 * @example
 * ```ts
 * import { tssaForwardReference } from "./tssa_backward.ts";
 * const s = tssaForwardReference([2], [1], { batches: 1, tokens: 1, heads: 1, headDim: 1 });
 * if (Math.abs(s.y[0] + 2 / 5) > 1e-8) throw new Error("tssa");
 * ```
 */
export function tssaForwardReference(
  w: ArrayLike<number>,
  temp: ArrayLike<number>,
  dims: TssaDims,
): TssaSavesReference {
  const op = "tssaForwardReference";
  checkDims(op, dims);
  const { batches: B, tokens: N, heads: H, headDim: d } = dims;
  const D = H * d;
  checkLength(op, "w", w, B * N * D);
  checkLength(op, "temp", temp, H);
  const y = new Float64Array(B * N * D);
  const pi = new Float64Array(B * N * H);
  const sq = new Float64Array(B * D);
  const num = new Float64Array(B * D);
  const den = new Float64Array(B * H);
  for (let b = 0; b < B; b++) {
    const wb = b * N * D;
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < D; c++) sq[b * D + c] += w[wb + n * D + c] ** 2;
    }
    for (let n = 0; n < N; n++) {
      const po = (b * N + n) * H;
      for (let h = 0; h < H; h++) {
        let u = 0;
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          u += w[wb + n * D + c] ** 2 / Math.max(sq[b * D + c], TSSA_NORM_SQ_MIN);
        }
        pi[po + h] = temp[h] * u;
      }
      softmaxAt(pi, po, H);
      for (let h = 0; h < H; h++) {
        den[b * H + h] += pi[po + h];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          num[b * D + c] += pi[po + h] * w[wb + n * D + c] ** 2;
        }
      }
    }
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < D; c++) {
        const h = Math.floor(c / d);
        const a = 1 / (1 + num[b * D + c] / (den[b * H + h] + TSSA_PI_EPS));
        const i = wb + n * D + c;
        y[i] = -w[i] * pi[(b * N + n) * H + h] * a;
      }
    }
  }
  return { y, pi, sq, num, den };
}

/**
 * Non-causal TSSA backward in float64 (formulas in the module docs).
 *
 * @param dy upstream gradient `[B, N, D]`
 * @param w the forward's input `[B, N, D]`
 * @param temp `H` values
 * @param saved the forward's saves for this `w` and `temp`
 * @param dtemp `H` values; `∂L/∂temp` is **added** to it
 * @returns `∂L/∂w`, `[B, N, D]`, float64 (assigned)
 * @example
 * ```ts
 * import { tssaBackwardReference, tssaForwardReference } from "./tssa_backward.ts";
 * const dims = { batches: 1, tokens: 1, heads: 1, headDim: 1 };
 * const saved = tssaForwardReference([2], [1], dims);
 * const dtemp = new Float64Array(1);
 * const dw = tssaBackwardReference({ dy: [1], w: [2], temp: [1], saved, dtemp }, dims);
 * // y = −w/(1 + w²) for one token and head: dy/dw = (w² − 1)/(1 + w²)².
 * if (Math.abs(dw[0] - 3 / 25) > 1e-8) throw new Error("tssa backward");
 * ```
 */
export function tssaBackwardReference(
  args: {
    dy: ArrayLike<number>;
    w: ArrayLike<number>;
    temp: ArrayLike<number>;
    saved: TssaSavesReference;
    dtemp: Float64Array;
  },
  dims: TssaDims,
): Float64Array {
  const op = "tssaBackwardReference";
  checkDims(op, dims);
  const { dy, w, temp, saved, dtemp } = args;
  const { batches: B, tokens: N, heads: H, headDim: d } = dims;
  const D = H * d;
  checkLength(op, "dy", dy, B * N * D);
  checkLength(op, "w", w, B * N * D);
  checkLength(op, "temp", temp, H);
  checkLength(op, "dtemp", dtemp, H);
  checkLength(op, "saved.pi", saved.pi, B * N * H);
  const dw = new Float64Array(B * N * D);
  const a = new Float64Array(D);
  const da = new Float64Array(D);
  const dM = new Float64Array(D);
  const dP = new Float64Array(H);
  const R = new Float64Array(D);
  const dz = new Float64Array(N * H);
  const dPi = new Float64Array(H);
  for (let b = 0; b < B; b++) {
    const wb = b * N * D;
    const pib = b * N * H;
    for (let c = 0; c < D; c++) {
      const h = Math.floor(c / d);
      a[c] = 1 / (1 + saved.num[b * D + c] / (saved.den[b * H + h] + TSSA_PI_EPS));
    }
    // ∂a: reduction over tokens.
    da.fill(0);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < D; c++) {
        const i = wb + n * D + c;
        da[c] -= dy[i] * w[i] * saved.pi[pib + n * H + Math.floor(c / d)];
      }
    }
    dP.fill(0);
    for (let c = 0; c < D; c++) {
      const h = Math.floor(c / d);
      const P = saved.den[b * H + h] + TSSA_PI_EPS;
      const ddots = -a[c] * a[c] * da[c];
      dM[c] = ddots / P;
      dP[h] -= ddots * saved.num[b * D + c] / (P * P);
    }
    // ∂Pi and the softmax over heads, per token; R: reduction over tokens.
    R.fill(0);
    for (let n = 0; n < N; n++) {
      const po = pib + n * H;
      let dot = 0;
      for (let h = 0; h < H; h++) {
        let s = dP[h];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          const i = wb + n * D + c;
          s += dM[c] * w[i] * w[i] - dy[i] * w[i] * a[c];
        }
        dPi[h] = s;
        dot += saved.pi[po + h] * s;
      }
      for (let h = 0; h < H; h++) {
        const z = saved.pi[po + h] * (dPi[h] - dot);
        dz[n * H + h] = z;
        let u = 0;
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          const w2 = w[wb + n * D + c] ** 2;
          u += w2 / Math.max(saved.sq[b * D + c], TSSA_NORM_SQ_MIN);
          R[c] += z * w2;
        }
        dtemp[h] += z * u;
      }
    }
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < D; c++) {
        const h = Math.floor(c / d);
        const sq = saved.sq[b * D + c];
        const S = Math.max(sq, TSSA_NORM_SQ_MIN);
        const dS = sq >= TSSA_NORM_SQ_MIN ? -temp[h] * R[c] / (S * S) : 0;
        const i = wb + n * D + c;
        const p = saved.pi[pib + n * H + h];
        dw[i] = -dy[i] * p * a[c] + 2 * w[i] * (p * dM[c] + temp[h] * dz[n * H + h] / S + dS);
      }
    }
  }
  return dw;
}

// ------------------------------------------------------------------- GPU

/** Tokens per workgroup block in the reductions (and per binding piece). */
const BLOCK_ROWS = 128;

/** What {@linkcode tssaForwardWithSaves} keeps for {@linkcode tssaBackward}. */
export interface TssaSaves {
  /** Head memberships, `[B·N, H]`. */
  pi: Tensor;
  /** `Σ_n w²` per batch element and feature (unclamped), `[B, 1, D]`. */
  sq: Tensor;
  /** `Σ_n Pi·w²`, `[B, 1, D]`. */
  num: Tensor;
  /** `Σ_n Pi`, `[B, 1, H]`. */
  den: Tensor;
}

/** Free the saved tensors of a forward. */
export function destroySaves(saves: TssaSaves): void {
  for (const t of new Set([saves.pi, saves.sq, saves.num, saves.den])) t.destroy();
}

/** The compile-time slots of the backward kernels. */
function backwardSlots(s: TssaShape): Record<string, number> {
  return { dim: s.dim, heads: s.heads, headDim: s.headDim };
}

function checkBindable(gpu: Gpu, op: string, tensors: Record<string, Tensor>): void {
  for (const [name, t] of Object.entries(tensors)) gpu.assertBindable(`${op}: ${name}`, t.byteSize);
}

/**
 * The `[B, N, D]` token tensors of a backward, cut into pieces of whole
 * blocks that each fit one storage binding.
 * @internal shared with `causal_tssa_backward.ts`
 */
export interface Pieces {
  layout: BlockLayout;
  pieces: BlockPiece[];
}

/**
 * Cut `[B, N, D]` token tensors into pieces of whole blocks of `blockRows`.
 * @internal shared with `causal_tssa_backward.ts`
 */
export function tokenPieces(
  gpu: Gpu,
  op: string,
  dims: { batches: number; tokens: number; dim: number; blockRows: number },
  options: TssaOptions,
): Pieces {
  const layout = blockLayout(dims.batches, dims.tokens, dims.dim, dims.blockRows);
  return { layout, pieces: blockPieces(gpu, op, layout, options) };
}

/** A binding of {@linkcode dispatchPieces}: a whole tensor, or a token tensor bound by piece. */
export type PieceBinding = Tensor | { piece: Tensor };

/**
 * Record one dispatch per piece of a kernel with `unitsPerRow` threads per
 * token row (1: per token, H: per (token, head), D: per element) whose
 * uniform struct starts `(count, tokens, row_base, elem_base)`, followed by
 * `extra`. Token tensors (`{ piece: t }`, all `[B, N, D]`) are bound piece by
 * piece, so they share `elem_base`; other tensors are bound whole.
 * @internal shared with `causal_tssa_backward.ts`
 */
export function dispatchPieces(
  gpu: Gpu,
  kernel: Kernel,
  p: Pieces,
  bindings: PieceBinding[],
  grid: { unitsPerRow: number; workgroupSize: number; extra?: Param[] },
  options: TssaOptions,
): void {
  const { layout } = p;
  for (const piece of p.pieces) {
    let base = 0;
    const entries = bindings.map((b) => {
      if (!("piece" in b)) return b;
      const bound = bindPiece(gpu, b.piece, layout, piece);
      base = bound.base;
      return bound.range;
    });
    const count = (piece.rowEnd - piece.rowBase) * grid.unitsPerRow;
    gpu.dispatch(kernel, {
      bindings: entries,
      params: [count, layout.tokens, piece.rowBase, base, ...(grid.extra ?? [])],
      workgroups: workgroupGrid(Math.ceil(count / grid.workgroupSize), options),
    });
  }
}

/** Grid shapes of {@linkcode dispatchPieces} for the non-causal kernels. */
const PER_TOKEN = { unitsPerRow: 1, workgroupSize: 64 };

/**
 * Non-causal TSSA forward that also returns what {@linkcode tssaBackward}
 * needs (Pi and the token statistics). Same result as `tssa()`, with its own
 * simpler passes: `Σ_n w²` (`kernels/scan_reduce.wgsl`, as a tree), Pi per
 * token (`kernels/tssa_backward_saves_pi.wgsl`), `Σ_n Pi·w²` and `Σ_n Pi`
 * (block sums as a tree), y per element (`kernels/tssa_backward_y.wgsl`).
 * Unlike `tssa()` it applies `F.normalize`'s clamp, so an all-zero feature
 * gives no NaN. Tensors over one storage binding are processed in pieces of
 * whole token blocks (the `[B·N, H]` Pi must fit one). Records dispatches only.
 *
 * @param args `w` `[B, N, H·d]`, `temp` (`H` values), `heads`
 * @param options test-only: a smaller binding limit, early grid folding
 * @returns `y` `[B, N, H·d]` and the saves (free them with {@linkcode destroySaves})
 * @throws {TypeError} on wrong shapes or dtypes
 * @throws {RangeError} when Pi or a block of tokens exceeds one binding
 * @example
 * ```ts ignore
 * const { y, saves } = await tssaForwardWithSaves(gpu, { w, temp, heads: 4 });
 * ```
 */
export async function tssaForwardWithSaves(
  gpu: Gpu,
  args: { w: Tensor; temp: Tensor; heads: number },
  options: TssaOptions = {},
): Promise<{ y: Tensor; saves: TssaSaves }> {
  const op = "tssaForwardWithSaves";
  const { w, temp, heads } = args;
  const s = tssaShape(op, w, temp, heads);
  const { batches: B, tokens: N, dim: D } = s;
  const slots = backwardSlots(s);
  const [piKernel, yKernel] = await Promise.all([
    gpu.kernel("tssa_backward_saves_pi", savesPiWgsl, slots),
    gpu.kernel("tssa_backward_y", yWgsl, slots),
  ]);
  const y = gpu.empty([B, N, D], "f32", `${op}.y`);
  const pi = gpu.empty([B * N, heads], "f32", `${op}.pi`);
  if (B * N === 0) {
    const sq = gpu.empty([B, 1, D], "f32", `${op}.sq`);
    const num = gpu.empty([B, 1, D], "f32", `${op}.num`);
    const den = gpu.empty([B, 1, heads], "f32", `${op}.den`);
    return { y, saves: { pi, sq, num, den } };
  }
  const scratch: Tensor[] = [];
  const kept: Tensor[] = [];
  try {
    checkBindable(gpu, op, { pi });
    const p = tokenPieces(gpu, op, { ...s, blockRows: BLOCK_ROWS }, options);
    const sqBlocks = await blockSums(gpu, w, p.layout, p.pieces, true, scratch);
    const sq = await totalSums(gpu, sqBlocks, B, p.layout.blocksPerBatch, D, scratch);
    kept.push(sq);
    dispatchPieces(gpu, piKernel, p, [{ piece: w }, sq, temp, pi], PER_TOKEN, options);
    const num = await reduceProduct(gpu, s, p, { x: w, w, s: pi }, options, scratch);
    kept.push(num);
    // totalSums returns pi itself for one token: add it into a fresh tensor
    // so the saves stay distinct (a kernel, not a copy: this may run inside
    // Gpu.timed()).
    let den: Tensor;
    if (N === 1) {
      den = gpu.empty([B, 1, heads], "f32", `${op}.den`);
      kept.push(den);
      gpu.dispatch(await gpu.kernel("accumulate_transposed", accumulateWgsl), {
        bindings: [pi, den],
        params: [B * heads, 1, 1, f32(1)],
        workgroups: workgroupGrid(Math.ceil((B * heads) / 64), options),
      });
    } else {
      den = await totalSums(gpu, pi, B, N, heads, scratch);
      kept.push(den);
    }
    dispatchPieces(gpu, yKernel, p, [{ piece: w }, pi, num, den, { piece: y }], {
      unitsPerRow: D,
      workgroupSize: 256,
    }, options);
    return { y, saves: { pi, sq, num, den } };
  } catch (err) {
    y.destroy();
    pi.destroy();
    for (const t of kept) t.destroy();
    throw err;
  } finally {
    // Kept sums may be scratch tensors themselves (totalSums returns its
    // input when one block is left): destroy only the others.
    for (const t of scratch) if (!kept.includes(t)) t.destroy();
  }
}

/** Record block sums of x·w·s[·, h] and reduce them to `[B, 1, D]`. */
async function reduceProduct(
  gpu: Gpu,
  s: TssaShape,
  p: Pieces,
  tensors: { x: Tensor; w: Tensor; s: Tensor },
  options: TssaOptions,
  scratch: Tensor[],
): Promise<Tensor> {
  const { batches: B, dim: D } = s;
  const { layout } = p;
  const partial = gpu.empty([B, layout.blocksPerBatch, D], "f32", "tssaBackward.partial");
  scratch.push(partial);
  gpu.assertBindable("tssaBackward: partial sums", partial.byteSize);
  const kernel = await gpu.kernel("tssa_backward_reduce", reduceWgsl, backwardSlots(s));
  const colChunks = Math.ceil(D / COLUMN_CHUNK);
  for (const piece of p.pieces) {
    const xb = bindPiece(gpu, tensors.x, layout, piece);
    const wb = bindPiece(gpu, tensors.w, layout, piece);
    gpu.dispatch(kernel, {
      bindings: [xb.range, wb.range, tensors.s, partial],
      params: [...blockParams(layout, piece, xb.base), colChunks],
      workgroups: workgroupGrid(piece.blockCount * colChunks, options),
    });
  }
  return await totalSums(gpu, partial, B, layout.blocksPerBatch, D, scratch);
}

/**
 * Non-causal TSSA backward on the GPU (formulas in the module docs): two
 * reductions over the tokens (block sums reduced as a tree), one pass per
 * token through the softmax over heads, one pass per element for ∂w, and
 * small per-column passes between them. Tensors over one storage binding are
 * processed in pieces of whole token blocks. Records dispatches only.
 *
 * @param args `dy` (∂L/∂y) and `w` `[B, N, H·d]`; `temp` (`H`); the
 *   forward's `saves`; `dtemp` (`H` values), to which ∂L/∂temp is **added**
 * @param options test-only: a smaller binding limit, early grid folding
 * @returns ∂L/∂w, a new `[B, N, H·d]` tensor (assigned)
 * @throws {TypeError} on wrong shapes or dtypes
 * @throws {RangeError} when Pi or a block of tokens exceeds one binding
 * @example
 * ```ts ignore
 * const { y, saves } = await tssaForwardWithSaves(gpu, { w, temp, heads });
 * const dw = await tssaBackward(gpu, { dy, w, temp, saves, dtemp, heads });
 * ```
 */
export async function tssaBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    w: Tensor;
    temp: Tensor;
    saves: TssaSaves;
    dtemp: Tensor;
    heads: number;
  },
  options: TssaOptions = {},
): Promise<Tensor> {
  const op = "tssaBackward";
  const { dy, w, temp, saves, dtemp, heads } = args;
  const s = tssaShape(op, w, temp, heads);
  const { batches: B, tokens: N, dim: D } = s;
  assertF32(op, "dy", dy);
  assertShape(op, "dy", dy, w.shape);
  assertF32(op, "dtemp", dtemp);
  if (dtemp.numel !== heads) {
    throw new TypeError(`${op}: dtemp must hold ${heads} values, got [${dtemp.shape}]`);
  }
  assertShape(op, "saves.pi", saves.pi, [B * N, heads]);
  assertShape(op, "saves.sq", saves.sq, [B, 1, D]);
  assertShape(op, "saves.num", saves.num, [B, 1, D]);
  assertShape(op, "saves.den", saves.den, [B, 1, heads]);
  const dw = gpu.empty([B, N, D], "f32", `${op}.dw`);
  if (B * N === 0) return dw;
  const slots = backwardSlots(s);
  const scratch: Tensor[] = [];
  try {
    const [coef, piK, finish, dwK] = await Promise.all([
      gpu.kernel("tssa_backward_coef", coefWgsl, slots),
      gpu.kernel("tssa_backward_pi", piWgsl, slots),
      gpu.kernel("tssa_backward_finish", finishWgsl, slots),
      gpu.kernel("tssa_backward_dw", dwWgsl, slots),
    ]);
    const p = tokenPieces(gpu, op, { ...s, blockRows: BLOCK_ROWS }, options);
    const col = gpu.empty([B, 4 * D], "f32", `${op}.col`);
    const dp = gpu.empty([B, heads], "f32", `${op}.dp`);
    const dz = gpu.empty([B * N, heads], "f32", `${op}.dz`);
    scratch.push(col, dp, dz);
    checkBindable(gpu, op, { col, dz });
    // Σ_n ∂y·w·Pi → a, ∂M, ∂P.
    const gwpi = await reduceProduct(gpu, s, p, { x: dy, w, s: saves.pi }, options, scratch);
    gpu.dispatch(coef, {
      bindings: [gwpi, saves.num, saves.den, col, dp],
      params: [B * heads],
      workgroups: workgroupGrid(Math.ceil((B * heads) / 64), options),
    });
    // ∂z per token, then R = Σ_n ∂z·w² → temp/S, ∂S, ∂temp.
    dispatchPieces(
      gpu,
      piK,
      p,
      [{ piece: dy }, { piece: w }, saves.pi, col, dp, dz],
      PER_TOKEN,
      options,
    );
    const r = await reduceProduct(gpu, s, p, { x: w, w, s: dz }, options, scratch);
    gpu.dispatch(finish, {
      bindings: [r, saves.sq, temp, col, dtemp],
      params: [B],
      workgroups: workgroupGrid(Math.ceil(heads / 64), options),
    });
    // ∂w per element.
    dispatchPieces(
      gpu,
      dwK,
      p,
      [{ piece: dy }, { piece: w }, saves.pi, dz, col, { piece: dw }],
      { unitsPerRow: D, workgroupSize: 256 },
      options,
    );
  } catch (err) {
    dw.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  return dw;
}
