/**
 * Backward of the non-causal TSSA operator (`AttentionTSSA` of the
 * reference) on the GPU. The forward is `tssa()` (`tssa.ts`) asked for its
 * saves: Pi and the token statistics. The float64 reference of this
 * backward is `tssaBackwardReference` in `tssa_reference.ts`.
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
import { totalSums } from "./_scan.ts";
import { tssaShape } from "./tssa.ts";
import type { TssaSaves, TssaShape } from "./tssa.ts";

/** Tokens per workgroup block in the reductions (and per binding piece). */
const BLOCK_ROWS = 128;

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
 *   forward's `saves` (`tssa(…, { saves: true })`); `dtemp` (`H` values), to
 *   which ∂L/∂temp is **added**
 * @param options test-only: a smaller binding limit, early grid folding
 * @returns ∂L/∂w, a new `[B, N, H·d]` tensor (assigned)
 * @throws {TypeError} on wrong shapes or dtypes
 * @throws {RangeError} when Pi or a block of tokens exceeds one binding
 * @example
 * ```ts ignore
 * const { y, saves } = await tssa(gpu, w, temp, heads, { saves: true });
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
  assertShape(op, "saves.stats", saves.stats, [B, 1, 2 * D]);
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
      bindings: [gwpi, saves.stats, col, dp],
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
