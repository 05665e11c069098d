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
 * Two GPU designs, chosen per adapter by measuring ({@linkcode CAUSAL_TSSA}):
 * `serial` (software adapters such as lavapipe; `kernels/causal_tssa_serial.wgsl`:
 * three dispatches, one invocation per (batch element, column) walking the
 * tokens for the prefix sums and one per token for Pi, no scans and no
 * barriers) and `blocks`, described next (hardware GPUs).
 *
 * The `blocks` version is a parallel scan: work O(N·D), depth O(log N). Tokens
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
import causalSerialWgsl from "../../kernels/causal_tssa_serial.wgsl" with { type: "text" };
import { assertF32, bindingLimit, bindRows, rowPieces, storageAlignment } from "./_shapes.ts";
import { testValues, type Tunable } from "../gpu/tune.ts";
import { mismatch, resolveVariant, tunableOp } from "./_tuned.ts";
import { causalTssaReference } from "./causal_tssa_reference.ts";
import { bindPiece, blockLayout, blockParams, blockPieces, workgroupGrid } from "./_tssa_blocks.ts";
import type { TssaOptions } from "./_tssa_blocks.ts";
import { blockSums, scanRows } from "./_scan.ts";
import { serialFits, tssaClass, tssaShape, tssaSlots, tssaVariantUnsupported } from "./tssa.ts";
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
  /** Test/bench-only: run this design of {@linkcode CAUSAL_TSSA_VARIANTS} instead of the tuned one. */
  variant?: string;
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
      let variant = await resolveVariant(gpu, op, CAUSAL_TSSA, s, options.variant);
      // A tuned (not forced) serial choice gives way to blocks when a test's
      // smaller binding limit cannot hold one batch element.
      if (variant === "serial" && !options.variant && !serialFits(gpu, s, options)) {
        variant = "blocks";
      }
      const tensors = { w, temp, denomBias, pi, y };
      if (variant === "serial") await recordSerial(gpu, s, tensors, blockSize, options);
      else await record(gpu, s, tensors, blockSize, scratch, options);
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

/** Invocations per workgroup of the serial design. */
const SERIAL_WG = 64;

/** The serial design: three dispatches per piece of whole batch elements. */
async function recordSerial(
  gpu: Gpu,
  s: TssaShape,
  t: { w: Tensor; temp: Tensor; denomBias: Tensor; pi: Tensor; y: Tensor },
  blockSize: number,
  options: TssaOptions,
): Promise<void> {
  const op = "causalTssa";
  const { batches: B, tokens: N, dim: D } = s;
  const { w, temp, denomBias, pi, y } = t;
  gpu.assertBindable(`${op}: Pi`, pi.byteSize);
  const slots = { dim: D, heads: s.heads, headDim: s.headDim, workgroupSize: SERIAL_WG };
  const [squares, memberships, output] = await Promise.all(
    ["squares", "memberships", "output"].map((entry) =>
      gpu.kernel("causal_tssa_serial", causalSerialWgsl, slots, entry)
    ),
  );
  const align = storageAlignment(gpu);
  const groups = (n: number) => workgroupGrid(Math.ceil(n / SERIAL_WG), options);
  for (const { start, count } of rowPieces(op, B, N * D * 4, bindingLimit(gpu, options), align)) {
    const wb = bindRows(w, start, count, N * D, align);
    const yb = bindRows(y, start, count, N * D, align);
    const params = [count, N, start, wb.base, blockSize];
    gpu.dispatch(squares, {
      bindings: [wb.range, yb.range],
      params,
      workgroups: groups(count * D),
    });
    gpu.dispatch(memberships, {
      bindings: [wb.range, yb.range, pi, temp, denomBias],
      params,
      workgroups: groups(count * N),
    });
    gpu.dispatch(output, {
      bindings: [wb.range, yb.range, pi],
      params,
      workgroups: groups(count * D),
    });
  }
}

/** The causal TSSA forward designs (see the module doc). */
export const CAUSAL_TSSA_VARIANTS = ["blocks", "serial"] as const;

/** Loop iterations of one invocation of the serial kernels: the longest of the three. */
function serialIterations(s: TssaShape): number {
  return Math.max(s.tokens, s.heads * (s.headDim + 3));
}

/** Why a causal TSSA variant cannot run a call, or null. */
export function causalTssaUnsupported(gpu: Gpu, variant: string, s: TssaShape): string | null {
  return tssaVariantUnsupported(gpu, CAUSAL_TSSA_VARIANTS, variant, s, serialIterations(s));
}

/** Shapes the variants are validated at: awkward sizes, more than one 64-token block. */
const CHECK_CAUSAL: readonly TssaShape[] = [
  { batches: 1, tokens: 1, dim: 1, heads: 1, headDim: 1 },
  { batches: 3, tokens: 7, dim: 20, heads: 4, headDim: 5 },
  { batches: 2, tokens: 130, dim: 96, heads: 6, headDim: 16 },
];

async function validateCausal(gpu: Gpu, variant: string): Promise<string | null> {
  for (const s of CHECK_CAUSAL) {
    const { batches: B, tokens: N, dim: D, heads: H } = s;
    const hw = testValues(B * N * D, N + D);
    const ht = testValues(H, 5).map((v) => v + 1.5);
    const hb = testValues(H * (N + 3), 6).map((v) => v / 4);
    const w = gpu.upload(hw, [B, N, D], "check.w");
    const temp = gpu.upload(ht, [H], "check.temp");
    const bias = gpu.upload(hb, [H, N + 3], "check.denom_bias");
    try {
      // A piece limit of about one batch element (serial) or one block of
      // 64 tokens (blocks) exercises the pieces.
      const limit = Math.max((variant === "serial" ? N : 64) * D * 4 + 512, 4096);
      const { y, saves } = await causalTssa(gpu, w, temp, bias, H, {
        variant,
        saves: true,
        maxBindingBytes: limit,
      });
      const [gy, gpi] = [await y.read(), await saves.pi.read()];
      y.destroy();
      saves.pi.destroy();
      const dims = { batches: B, tokens: N, heads: H, headDim: s.headDim, blockSize: N + 3 };
      const ref = causalTssaReference(hw, { temp: ht, denomBias: hb }, dims);
      const tol = { atol: 1e-6, rtol: 1e-4 };
      const what = `${B}×${N}×${D}, ${H} heads`;
      const why = mismatch(`y ${what}`, gy, ref.y, tol) ?? mismatch(`Pi ${what}`, gpi, ref.pi, tol);
      if (why) return why;
    } finally {
      for (const t of [w, temp, bias]) t.destroy();
    }
  }
  return null;
}

/** The causal TSSA forward as a tuned op ("causal_tssa" in `tost tune` and `tost info`). */
export const CAUSAL_TSSA: Tunable<TssaShape> = tunableOp<TssaShape>({
  op: "causal_tssa",
  version: 1,
  variants: CAUSAL_TSSA_VARIANTS,
  unsupported: causalTssaUnsupported,
  shapeClass: tssaClass,
  fallback: (gpu, s) =>
    gpu.info.software && causalTssaUnsupported(gpu, "serial", s) === null ? "serial" : "blocks",
  validate: validateCausal,
  workload(gpu, s) {
    const { batches: B, tokens: N, dim: D, heads: H } = s;
    const w = gpu.upload(testValues(B * N * D, 1), [B, N, D], "tune.w");
    const temp = gpu.upload(testValues(H, 2), [H], "tune.temp");
    const bias = gpu.upload(testValues(H * N, 3), [H, N], "tune.denom_bias");
    return {
      shape: [B, N, D, H],
      run: async (variant) => {
        const { y, saves } = await causalTssa(gpu, w, temp, bias, H, { variant, saves: true });
        y.destroy();
        saves.pi.destroy();
      },
      destroy() {
        for (const t of [w, temp, bias]) t.destroy();
      },
    };
  },
});
