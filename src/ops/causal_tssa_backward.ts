/**
 * Backward of the causal TSSA operator (`CausalSelfAttention_TSSA` of the
 * reference) on the GPU, and its float64 CPU reference. The forward is
 * `causalTssa()` (`causal_tssa.ts`) asked for its saves (Pi).
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
import { checkLength, TSSA_PI_EPS, tssaShape } from "./tssa.ts";
import type { TssaShape } from "./tssa.ts";
import { CAUSAL_DENOM_MIN, causalBlockSize, checkCausalDims } from "./causal_tssa.ts";
import type { CausalTssaDims, CausalTssaSaves } from "./causal_tssa.ts";
import { dispatchPieces, tokenPieces } from "./tssa_backward.ts";
import type { Pieces } from "./tssa_backward.ts";

/**
 * Causal TSSA backward in float64 (formulas in the module docs).
 *
 * @param args `dy` and `w` `[B, N, D]`; `temp` (`H`), `denomBias`
 *   (`H·blockSize`); `pi` `[B, N, H]` from the forward (`causalTssaReference`); `dtemp` (`H`) and
 *   `dDenomBias` (`H·blockSize`), to which the parameter gradients are **added**
 * @returns `∂L/∂w`, `[B, N, D]`, float64 (assigned)
 * @example
 * ```ts
 * import { causalTssaBackwardReference } from "./causal_tssa_backward.ts";
 * const dims = { batches: 1, tokens: 1, heads: 1, headDim: 1, blockSize: 1 };
 * const dtemp = new Float64Array(1);
 * const dDenomBias = new Float64Array(1);
 * const dw = causalTssaBackwardReference(
 *   { dy: [1], w: [2], temp: [1], denomBias: [0], pi: [1], dtemp, dDenomBias },
 *   dims,
 * );
 * // One token and head: y = −w/(1 + w²), dy/dw = (w² − 1)/(1 + w²)².
 * if (Math.abs(dw[0] - 3 / 25) > 1e-8) throw new Error("causal tssa backward");
 * ```
 */
export function causalTssaBackwardReference(
  args: {
    dy: ArrayLike<number>;
    w: ArrayLike<number>;
    temp: ArrayLike<number>;
    denomBias: ArrayLike<number>;
    pi: ArrayLike<number>;
    dtemp: Float64Array;
    dDenomBias: Float64Array;
  },
  dims: CausalTssaDims,
): Float64Array {
  const op = "causalTssaBackwardReference";
  checkCausalDims(op, dims);
  const { dy, w, temp, pi, dtemp, dDenomBias } = args;
  const { batches: B, tokens: N, heads: H, headDim: d, blockSize } = dims;
  const D = H * d;
  checkLength(op, "dy", dy, B * N * D);
  checkLength(op, "w", w, B * N * D);
  checkLength(op, "temp", temp, H);
  checkLength(op, "denomBias", args.denomBias, H * blockSize);
  checkLength(op, "pi", pi, B * N * H);
  checkLength(op, "dtemp", dtemp, H);
  checkLength(op, "dDenomBias", dDenomBias, H * blockSize);
  const dw = new Float64Array(B * N * D);
  // Per batch element: prefix sums, then the per-token gradients, then suffix sums.
  const Cc = new Float64Array(N * D); // clamped prefix sums of s
  const clamped = new Uint8Array(N * D); // where the clamp is active (no gradient to C)
  const dA = new Float64Array(N * D); // ∂A, then rev(∂A)
  const dC = new Float64Array(N * D); // ∂C, then rev(∂C)
  const dQ = new Float64Array(N * H); // ∂Q, then rev(∂Q)
  const dPi0 = new Float64Array(N * H); // −Σ_k g·w·a
  const C = new Float64Array(D);
  const A = new Float64Array(D);
  const Q = new Float64Array(H);
  const dPi = new Float64Array(H);
  for (let b = 0; b < B; b++) {
    C.fill(0);
    A.fill(0);
    Q.fill(0);
    dQ.fill(0);
    dPi0.fill(0);
    for (let n = 0; n < N; n++) {
      const ro = (b * N + n) * D;
      const po = (b * N + n) * H;
      for (let h = 0; h < H; h++) {
        const p = pi[po + h];
        Q[h] += p;
        const q = Q[h] + TSSA_PI_EPS;
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          const x = w[ro + c];
          const s = x * x;
          C[c] += s;
          A[c] += p * s;
          Cc[n * D + c] = Math.max(C[c], CAUSAL_DENOM_MIN);
          clamped[n * D + c] = C[c] >= CAUSAL_DENOM_MIN ? 0 : 1;
          const a = 1 / (1 + A[c] / q);
          const e = a * a * dy[ro + c] * x * p;
          dA[n * D + c] = e / q;
          dQ[n * H + h] -= e * A[c] / (q * q);
          dPi0[n * H + h] -= dy[ro + c] * x * a;
          dw[ro + c] = -dy[ro + c] * p * a;
        }
      }
    }
    suffixSums(dA, N, D);
    suffixSums(dQ, N, H);
    for (let n = 0; n < N; n++) {
      const ro = (b * N + n) * D;
      const po = (b * N + n) * H;
      let dot = 0;
      for (let h = 0; h < H; h++) {
        let s = dPi0[n * H + h] + dQ[n * H + h];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          s += dA[n * D + c] * w[ro + c] ** 2;
        }
        dPi[h] = s;
        dot += pi[po + h] * s;
      }
      for (let h = 0; h < H; h++) {
        const z = pi[po + h] * (dPi[h] - dot);
        let u = d * args.denomBias[h * blockSize + n];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          const cc = Cc[n * D + c];
          const s = w[ro + c] ** 2;
          u += s / cc;
          const g = temp[h] * z;
          dC[n * D + c] = clamped[n * D + c] ? 0 : -g * s / (cc * cc);
          dw[ro + c] += 2 * w[ro + c] * g / cc;
        }
        dtemp[h] += z * u;
        dDenomBias[h * blockSize + n] += d * temp[h] * z;
      }
    }
    suffixSums(dC, N, D);
    for (let n = 0; n < N; n++) {
      const ro = (b * N + n) * D;
      for (let c = 0; c < D; c++) {
        const p = pi[(b * N + n) * H + Math.floor(c / d)];
        dw[ro + c] += 2 * w[ro + c] * (dA[n * D + c] * p + dC[n * D + c]);
      }
    }
  }
  return dw;
}

/** In place: `x[n, c] ← Σ_{m ≥ n} x[m, c]` for `x` `[rows, cols]`. */
function suffixSums(x: Float64Array, rows: number, cols: number): void {
  for (let n = rows - 2; n >= 0; n--) {
    for (let c = 0; c < cols; c++) x[n * cols + c] += x[(n + 1) * cols + c];
  }
}

// ------------------------------------------------------------------- GPU

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
