/**
 * Backward of the causal TSSA operator (`CausalSelfAttention_TSSA` of the
 * reference) on the GPU. The forward is `causalTssa()` (`causal_tssa.ts`)
 * asked for its saves (Pi). The float64 reference of this backward is
 * `causalTssaBackwardReference` in `causal_tssa_reference.ts`.
 *
 * Gradient convention (as in llm.c): **parameter gradients accumulate**
 * (`+=`) into gradient buffers the caller provides and zeroes; **activation
 * gradients are assigned** (returned fresh).
 *
 * Forward, per batch element and head `h` (`c = h·d + k`, `s = w²`):
 *
 *     C[n,c]   = Σ_{m≤n} s[m,c],          Cc = max(C, 1e-12)
 *     u[n,h]   = Σ_k s[n,c] / Cc[n,c] + d·denom_bias[h,n]
 *     Pi[n,h]  = softmax over h of temp[h]·u[n,h]
 *     A[n,c]   = Σ_{m≤n} Pi[m,h]·s[m,c],  Q[n,h] = Σ_{m≤n} Pi[m,h] + 1e-8
 *     a[n,c]   = 1 / (1 + A / Q)
 *     y[n,c]   = −w·Pi·a
 *
 * Backward, with `g = ∂L/∂y`: the prefix sums become suffix sums
 * (`Σ_{n≥m}`, written `rev`):
 *
 *     e[n,c]    = a²·g·w·Pi                         (= ∂dots)
 *     ∂A[n,c]   = e / Q,   ∂Q[n,h] = −Σ_k e·A / Q²
 *     ∂Pi[n,h]  = −Σ_k g·w·a + Σ_k rev(∂A)·s + rev(∂Q)
 *     ∂z[n,h]   = Pi·(∂Pi − Σ_h' Pi·∂Pi),   ∂u = temp·∂z
 *     ∂temp[h]       += Σ_{b,n} ∂z·u
 *     ∂denom_bias[h,n] += d·Σ_b ∂u
 *     ∂C[n,c]   = −∂u·s / Cc²   (0 where C < 1e-12: the clamp)
 *     ∂w        = −g·Pi·a + 2w·(rev(∂A)·Pi + ∂u / Cc + rev(∂C))
 *
 * The backward needs `w`, `temp`, `denom_bias` and the forward's `Pi`; it
 * recomputes the prefix sums `C`, `A`, `Q` (three scans) rather than keeping
 * three more `[B, N, ·]` tensors alive between forward and backward.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import prepWgsl from "../../kernels/causal_tssa_backward_prep.wgsl" with { type: "text" };
import tokenWgsl from "../../kernels/causal_tssa_backward_token.wgsl" with { type: "text" };
import softmaxWgsl from "../../kernels/causal_tssa_backward_softmax.wgsl" with { type: "text" };
import dwWgsl from "../../kernels/causal_tssa_backward_dw.wgsl" with { type: "text" };
import accumulateWgsl from "../../kernels/accumulate_transposed.wgsl" with { type: "text" };
import { assertF32, assertShape } from "./_shapes.ts";
import { blockLayout, workgroupGrid } from "./_tssa_blocks.ts";
import type { TssaOptions } from "./_tssa_blocks.ts";
import { blockScan, SCAN_ROWS, totalSums } from "./_scan.ts";
import { tssaShape } from "./tssa.ts";
import type { TssaShape } from "./tssa.ts";
import { causalBlockSize } from "./causal_tssa.ts";
import type { CausalTssaSaves } from "./causal_tssa.ts";
import { dispatchPieces, tokenPieces } from "./tssa_backward.ts";
import type { Pieces } from "./tssa_backward.ts";

function checkBindable(gpu: Gpu, op: string, tensors: Record<string, Tensor>): void {
  for (const [name, t] of Object.entries(tensors)) gpu.assertBindable(`${op}: ${name}`, t.byteSize);
}

/** The compile-time slots of the backward kernels. */
function backwardSlots(s: TssaShape): Record<string, number> {
  return { dim: s.dim, heads: s.heads, headDim: s.headDim };
}

const PER_TOKEN = { unitsPerRow: 1, workgroupSize: 64 };

/**
}

/** Record `dst[h·stride + n] += scale · Σ_rows src[row, n·H + h]` (src `[1, rows, positions·H]`). */
async function accumulateParam(
  gpu: Gpu,
  src: Tensor,
  dst: Tensor,
  dims: { rows: number; positions: number; heads: number; stride: number; scale: number },
  options: TssaOptions,
  scratch: Tensor[],
): Promise<void> {
  const { rows, positions, heads, stride, scale } = dims;
  const sums = await totalSums(gpu, src, 1, rows, positions * heads, scratch);
  const kernel = await gpu.kernel("accumulate_transposed", accumulateWgsl);
  gpu.dispatch(kernel, {
    bindings: [sums, dst],
    params: [positions, heads, stride, f32(scale)],
    workgroups: workgroupGrid(Math.ceil((positions * heads) / 64), options),
  });
}

/**
 * Causal TSSA backward on the GPU (formulas in the module docs). The
 * forward's prefix sums are recomputed with three block scans; the
 * backward's suffix sums are reverse block scans ({@linkcode blockScan});
 * each scan's carries are added by the kernels that read it. The rest is
 * one pass per (token, head), one per token through the softmax over heads
 * and one per element. Tensors over one storage binding are processed in
 * pieces of whole 64-token blocks (the `[B·N, H]` tensors must fit one).
 * Records dispatches only.
 *
 * @param args `dy` (∂L/∂y) and `w` `[B, N, H·d]`; `temp` (`H`); `denomBias`
 *   `[H, blockSize(, 1)]`; the forward's `saves` (`causalTssa(…, { saves:
 *   true })`); `dtemp` (`H`) and `dDenomBias` (shaped like `denomBias`), to
 *   which the parameter gradients are **added**
 * @param options test-only: a smaller binding limit, early grid folding
 * @returns ∂L/∂w, a new `[B, N, H·d]` tensor (assigned)
 * @throws {TypeError} on wrong shapes or dtypes
 * @throws {RangeError} when `N > blockSize` or a `[B·N, H]` tensor exceeds one binding
 * @example
 * ```ts ignore
 * const { y, saves } = await causalTssa(gpu, w, temp, denomBias, heads, { saves: true });
 * const dw = await causalTssaBackward(gpu, { dy, w, temp, denomBias, saves, dtemp, dDenomBias, heads });
 * ```
 */
export async function causalTssaBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    w: Tensor;
    temp: Tensor;
    denomBias: Tensor;
    saves: CausalTssaSaves;
    dtemp: Tensor;
    dDenomBias: Tensor;
    heads: number;
  },
  options: TssaOptions = {},
): Promise<Tensor> {
  const op = "causalTssaBackward";
  const { dy, w, temp, denomBias, dtemp, dDenomBias, heads } = args;
  const pi = args.saves.pi;
  const s = tssaShape(op, w, temp, heads);
  const { batches: B, tokens: N, dim: D, headDim: d } = s;
  const blockSize = causalBlockSize(op, denomBias, heads, N);
  assertF32(op, "dy", dy);
  assertShape(op, "dy", dy, w.shape);
  assertShape(op, "saves.pi", pi, [B * N, heads]);
  assertF32(op, "dtemp", dtemp);
  assertF32(op, "dDenomBias", dDenomBias);
  if (dtemp.numel !== heads) {
    throw new TypeError(`${op}: dtemp must hold ${heads} values, got [${dtemp.shape}]`);
  }
  assertShape(op, "dDenomBias", dDenomBias, denomBias.shape);
  const dw = gpu.empty([B, N, D], "f32", `${op}.dw`);
  if (B * N === 0) return dw;
  const slots = backwardSlots(s);
  const scratch: Tensor[] = [];
  try {
    const [prep, token, softmax, dwK] = await Promise.all([
      gpu.kernel("causal_tssa_backward_prep", prepWgsl, slots),
      gpu.kernel("causal_tssa_backward_token", tokenWgsl, slots),
      gpu.kernel("causal_tssa_backward_softmax", softmaxWgsl, slots),
      gpu.kernel("causal_tssa_backward_dw", dwWgsl, slots),
    ]);
    const p = tokenPieces(gpu, op, { ...s, blockRows: SCAN_ROWS }, options);
    const narrow: Pieces = {
      layout: blockLayout(B, N, heads, SCAN_ROWS),
      pieces: [{
        firstBlock: 0,
        blockCount: B * p.layout.blocksPerBatch,
        rowBase: 0,
        rowEnd: B * N,
      }],
    };
    const NB = p.layout.blocksPerBatch;
    const cs = gpu.empty([B, N, D], "f32", `${op}.c`); // C, then ∂C, then rev(∂C)
    const as = gpu.empty([B, N, D], "f32", `${op}.a`); // A, then ∂A, then rev(∂A)
    const qs = gpu.empty([B, N, heads], "f32", `${op}.q`); // Σ Pi, then ∂Q, then rev(∂Q)
    const dpi0 = gpu.empty([B * N, heads], "f32", `${op}.dpi0`);
    const du = gpu.empty([B * N, heads], "f32", `${op}.du`);
    const dzu = gpu.empty([B * N, heads], "f32", `${op}.dzu`);
    scratch.push(cs, as, qs, dpi0, du, dzu);
    checkBindable(gpu, op, { pi, qs });
    const perElement = { unitsPerRow: D, workgroupSize: 256, extra: [NB] };
    // The forward's prefix sums, recomputed: block scans and their carries.
    dispatchPieces(
      gpu,
      prep,
      p,
      [{ piece: w }, pi, { piece: cs }, { piece: as }, qs],
      perElement,
      options,
    );
    const cCarry = await blockScan(gpu, cs, p, { reverse: false }, options, scratch);
    const aCarry = await blockScan(gpu, as, p, { reverse: false }, options, scratch);
    const qCarry = await blockScan(gpu, qs, narrow, { reverse: false }, options, scratch);
    // ∂A, ∂Q, the direct terms; then their suffix sums.
    dispatchPieces(
      gpu,
      token,
      p,
      [{ piece: dy }, { piece: w }, pi, { piece: as }, qs, dpi0, { piece: dw }, aCarry, qCarry],
      { unitsPerRow: heads, workgroupSize: 64, extra: [NB] },
      options,
    );
    const aRCarry = await blockScan(gpu, as, p, { reverse: true }, options, scratch);
    const qRCarry = await blockScan(gpu, qs, narrow, { reverse: true }, options, scratch);
    // The softmax over heads, ∂C; then its suffix sums and the rest of ∂w.
    dispatchPieces(
      gpu,
      softmax,
      p,
      [
        { piece: w },
        pi,
        { piece: as },
        qs,
        dpi0,
        temp,
        denomBias,
        { piece: cs },
        { piece: dw },
        du,
        dzu,
        aRCarry,
        qRCarry,
        cCarry,
      ],
      { ...PER_TOKEN, extra: [NB, blockSize] },
      options,
    );
    const cRCarry = await blockScan(gpu, cs, p, { reverse: true }, options, scratch);
    dispatchPieces(
      gpu,
      dwK,
      p,
      [{ piece: w }, pi, { piece: as }, { piece: cs }, { piece: dw }, aRCarry, cRCarry],
      perElement,
      options,
    );
    // ∂temp[h] += Σ_{b,n} ∂z·u;  ∂denom_bias[h, n] += d·Σ_b ∂u.
    const one = { positions: 1, heads, stride: 1, scale: 1 };
    await accumulateParam(gpu, dzu, dtemp, { ...one, rows: B * N }, options, scratch);
    const perPosition = { rows: B, positions: N, heads, stride: blockSize, scale: d };
    await accumulateParam(gpu, du, dDenomBias, perPosition, options, scratch);
  } catch (err) {
    dw.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  return dw;
}
