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
 * Two designs of its six scans, chosen per adapter by measuring
 * ({@linkcode CAUSAL_TSSA_BACKWARD}): `blocks` (hierarchical block scans,
 * `kernels/scan_block.wgsl`, for hardware GPUs) and `serial` (one dispatch
 * per scan, one invocation per batch element and column walking the tokens,
 * `kernels/scan_serial.wgsl`, no barriers: software adapters; its carries
 * are zero; the first pass and the three forward scans are one such walk,
 * `kernels/causal_tssa_backward_prefix.wgsl`). The other passes are the same
 * in both.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import prepWgsl from "../../kernels/causal_tssa_backward_prep.wgsl" with { type: "text" };
import prefixWgsl from "../../kernels/causal_tssa_backward_prefix.wgsl" with { type: "text" };
import tokenWgsl from "../../kernels/causal_tssa_backward_token.wgsl" with { type: "text" };
import softmaxWgsl from "../../kernels/causal_tssa_backward_softmax.wgsl" with { type: "text" };
import dwWgsl from "../../kernels/causal_tssa_backward_dw.wgsl" with { type: "text" };
import accumulateWgsl from "../../kernels/accumulate_transposed.wgsl" with { type: "text" };
import { assertF32, assertShape } from "./_shapes.ts";
import { blockLayout, workgroupGrid } from "./_tssa_blocks.ts";
import type { TssaOptions } from "./_tssa_blocks.ts";
import { blockScan, SCAN_ROWS, serialScan, totalSums } from "./_scan.ts";
import { testValues, type Tunable } from "../gpu/tune.ts";
import { mismatch, resolveVariant, tunableOp } from "./_tuned.ts";
import { serialBudgetExceeded } from "./_serial.ts";
import { causalTssa } from "./causal_tssa.ts";
import { causalTssaBackwardReference, causalTssaReference } from "./causal_tssa_reference.ts";
import { tssaClass, tssaShape } from "./tssa.ts";
import type { TssaShape } from "./tssa.ts";
import { causalBlockSize } from "./causal_tssa.ts";
import { bindingLimit } from "./_shapes.ts";
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
 * @param options test-only: a smaller binding limit, early grid folding; the `variant`
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
  options: TssaOptions & { variant?: string } = {},
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
    let variant = await resolveVariant(gpu, op, CAUSAL_TSSA_BACKWARD, s, options.variant);
    // A tuned (not forced) serial choice gives way to blocks when a test's
    // smaller binding limit cuts the token tensors into pieces.
    if (variant === "serial" && p.pieces.length > 1 && !options.variant) variant = "blocks";
    if (variant === "serial" && p.pieces.length > 1) {
      throw new RangeError(`${op}: variant serial needs the token tensors in one storage binding`);
    }
    /** Scan a token tensor (`[B, N, cols]`) in place; the carries that complete it. */
    const scan = (x: Tensor, cols: number, reverse: boolean) =>
      variant === "serial"
        ? serialScan(gpu, x, { batches: B, rows: N, cols }, { reverse }, options, scratch)
        : blockScan(gpu, x, cols === D ? p : narrow, { reverse }, options, scratch);
    const cs = gpu.empty([B, N, D], "f32", `${op}.c`); // C, then ∂C, then rev(∂C)
    const as = gpu.empty([B, N, D], "f32", `${op}.a`); // A, then ∂A, then rev(∂A)
    const qs = gpu.empty([B, N, heads], "f32", `${op}.q`); // Σ Pi, then ∂Q, then rev(∂Q)
    const dpi0 = gpu.empty([B * N, heads], "f32", `${op}.dpi0`);
    const du = gpu.empty([B * N, heads], "f32", `${op}.du`);
    const dzu = gpu.empty([B * N, heads], "f32", `${op}.dzu`);
    scratch.push(cs, as, qs, dpi0, du, dzu);
    checkBindable(gpu, op, { pi, qs });
    const perElement = { unitsPerRow: D, workgroupSize: 256, extra: [NB] };
    // The forward's prefix sums, recomputed: scans and their carries.
    let cCarry: Tensor, aCarry: Tensor, qCarry: Tensor;
    if (variant === "serial") {
      // One pass writes all three; the carries are zero.
      const prefix = await gpu.kernel("causal_tssa_backward_prefix", prefixWgsl, slots);
      gpu.dispatch(prefix, {
        bindings: [w, pi, cs, as, qs],
        params: [B, N],
        workgroups: workgroupGrid(Math.ceil((B * D) / 64), options),
      });
      cCarry = aCarry = gpu.empty([B, NB, D], "f32", `${op}.zeros`);
      qCarry = gpu.empty([B, NB, heads], "f32", `${op}.zeros`);
      scratch.push(cCarry, qCarry);
    } else {
      dispatchPieces(
        gpu,
        prep,
        p,
        [{ piece: w }, pi, { piece: cs }, { piece: as }, qs],
        perElement,
        options,
      );
      cCarry = await scan(cs, D, false);
      aCarry = await scan(as, D, false);
      qCarry = await scan(qs, heads, false);
    }
    // ∂A, ∂Q, the direct terms; then their suffix sums.
    dispatchPieces(
      gpu,
      token,
      p,
      [{ piece: dy }, { piece: w }, pi, { piece: as }, qs, dpi0, { piece: dw }, aCarry, qCarry],
      { unitsPerRow: heads, workgroupSize: 64, extra: [NB] },
      options,
    );
    const aRCarry = await scan(as, D, true);
    const qRCarry = await scan(qs, heads, true);
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
    const cRCarry = await scan(cs, D, true);
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

/** The designs of the backward's scans (see the module doc). */
export const CAUSAL_TSSA_BACKWARD_VARIANTS = ["blocks", "serial"] as const;

/** Why a backward variant cannot run a call, or null. */
export function causalTssaBackwardUnsupported(
  gpu: Gpu,
  variant: string,
  s: TssaShape,
): string | null {
  if (!(CAUSAL_TSSA_BACKWARD_VARIANTS as readonly string[]).includes(variant)) {
    return `is unknown (known: ${CAUSAL_TSSA_BACKWARD_VARIANTS.join(", ")})`;
  }
  if (variant !== "serial") return null;
  const over = serialBudgetExceeded(s.tokens, `${s.tokens} tokens`);
  if (over) return over;
  const bytes = s.batches * s.tokens * s.dim * 4;
  if (bytes > bindingLimit(gpu)) {
    return `needs the token tensors (${bytes} bytes) in one storage binding`;
  }
  return null;
}

/** Shapes the variants are validated at: awkward sizes, more than one 64-token block. */
const CHECK_BACKWARD: readonly TssaShape[] = [
  { batches: 1, tokens: 1, dim: 1, heads: 1, headDim: 1 },
  { batches: 3, tokens: 7, dim: 20, heads: 4, headDim: 5 },
  { batches: 2, tokens: 130, dim: 12, heads: 2, headDim: 6 },
];

async function validateBackward(gpu: Gpu, variant: string): Promise<string | null> {
  for (const s of CHECK_BACKWARD) {
    const { batches: B, tokens: N, dim: D, heads: H, headDim: d } = s;
    const hw = testValues(B * N * D, N + D);
    const hdy = testValues(B * N * D, N + 2 * D);
    const ht = testValues(H, 5).map((v) => v + 1.5);
    const hb = testValues(H * N, 6).map((v) => v / 4);
    const t = {
      w: gpu.upload(hw, [B, N, D], "check.w"),
      dy: gpu.upload(hdy, [B, N, D], "check.dy"),
      temp: gpu.upload(ht, [H], "check.temp"),
      bias: gpu.upload(hb, [H, N], "check.denom_bias"),
      dtemp: gpu.empty([H], "f32", "check.dtemp"),
      dbias: gpu.empty([H, N], "f32", "check.ddenom_bias"),
    };
    const made: Tensor[] = [];
    try {
      const { y, saves } = await causalTssa(gpu, t.w, t.temp, t.bias, H, { saves: true });
      made.push(y, saves.pi);
      const dw = await causalTssaBackward(gpu, {
        dy: t.dy,
        w: t.w,
        temp: t.temp,
        denomBias: t.bias,
        saves,
        dtemp: t.dtemp,
        dDenomBias: t.dbias,
        heads: H,
      }, { variant });
      made.push(dw);
      const dims = { batches: B, tokens: N, heads: H, headDim: d, blockSize: N };
      const pi = causalTssaReference(hw, { temp: ht, denomBias: hb }, dims).pi;
      const dtemp = new Float64Array(H);
      const dDenomBias = new Float64Array(H * N);
      const want = causalTssaBackwardReference(
        { dy: hdy, w: hw, temp: ht, denomBias: hb, pi, dtemp, dDenomBias },
        dims,
      );
      const tol = { atol: 1e-4, rtol: 1e-3 };
      const what = `${B}×${N}×${D}, ${H} heads`;
      const why = mismatch(`dw ${what}`, await dw.read(), want, tol) ??
        mismatch(`dtemp ${what}`, await t.dtemp.read(), dtemp, tol) ??
        mismatch(`dDenomBias ${what}`, await t.dbias.read(), dDenomBias, tol);
      if (why) return why;
    } finally {
      for (const x of [...Object.values(t), ...made]) x.destroy();
    }
  }
  return null;
}

/** The causal TSSA backward as a tuned op ("causal_tssa_backward" in `tost tune` and `tost info`). */
export const CAUSAL_TSSA_BACKWARD: Tunable<TssaShape> = tunableOp<TssaShape>({
  op: "causal_tssa_backward",
  version: 1,
  variants: CAUSAL_TSSA_BACKWARD_VARIANTS,
  unsupported: causalTssaBackwardUnsupported,
  shapeClass: tssaClass,
  fallback: (gpu, s) =>
    gpu.info.software && causalTssaBackwardUnsupported(gpu, "serial", s) === null
      ? "serial"
      : "blocks",
  validate: validateBackward,
  workload(gpu, s) {
    const { batches: B, tokens: N, dim: D, heads: H } = s;
    const w = gpu.upload(testValues(B * N * D, 1), [B, N, D], "tune.w");
    const dy = gpu.upload(testValues(B * N * D, 4), [B, N, D], "tune.dy");
    const temp = gpu.upload(testValues(H, 2), [H], "tune.temp");
    const bias = gpu.upload(testValues(H * N, 3), [H, N], "tune.denom_bias");
    const dtemp = gpu.empty([H], "f32", "tune.dtemp");
    const dbias = gpu.empty([H, N], "f32", "tune.ddenom_bias");
    const pi = gpu.upload(new Float32Array(B * N * H).fill(1 / H), [B * N, H], "tune.pi");
    return {
      shape: [B, N, D, H],
      run: async (variant) => {
        const args = { dy, w, temp, denomBias: bias, saves: { pi }, dtemp, dDenomBias: dbias };
        (await causalTssaBackward(gpu, { ...args, heads: H }, { variant })).destroy();
      },
      destroy() {
        for (const t of [w, dy, temp, bias, dtemp, dbias, pi]) t.destroy();
      },
    };
  },
});
