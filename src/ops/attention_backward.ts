/**
 * Backward of standard softmax attention (causal or not) on packed
 * `qkv [B, N, 3·C]` (last dimension `(3, H, d)`, `C = H·d`), from the
 * probabilities the forward materialised. Per batch element and head, with
 * `S = q·kᵀ/√d`, `P = softmax(S)` (row-wise, causal mask `j ≤ i`), `O = P·v`:
 *
 *     ∂v = Pᵀ·∂O
 *     ∂P = ∂O·vᵀ,   Δ_i = Σ_j P_ij ∂P_ij = ∂O_i · O_i
 *     ∂S = P ⊙ (∂P − Δ)                     (zero where P is masked)
 *     ∂q = ∂S·k/√d,  ∂k = ∂Sᵀ·q/√d          → ∂qkv (assigned)
 *
 * What the forward must save: `qkv`, the probabilities `P [B, H, N, N]` and
 * the output `O [B, N, C]` (the output projection's input, saved anyway).
 * The forward is `softmaxAttention` (`attention.ts`) asked for its saves,
 * which then keeps `P` instead of freeing it.
 *
 * GPU kernels: `kernels/attention_backward_delta.wgsl` (Δ, one thread per
 * row and head), `attention_backward_ds.wgsl` (∂P tile by tile, then ∂S
 * scaled by 1/√d, into a `[B, H, N, N]` buffer; causal tiles above the
 * diagonal are skipped), `attention_backward_matmul.wgsl` (the three
 * products `Pᵀ·∂O`, `∂S·k`, `∂Sᵀ·q` written into their thirds of ∂qkv;
 * causal products stop at the diagonal). Tensors over one storage binding
 * are processed in pieces of whole batch elements and of whole heads, as
 * the forward does. Memory: one more `[B, H, N, N]` buffer (∂S). For long
 * sequences, `flashAttentionBackward` (`flash_attention_backward.ts`)
 * recomputes the probabilities instead and needs no `[N, N]` buffer.
 * Float64 reference: `softmaxAttentionBackwardReference` in
 * `attention_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32, formatBytes } from "../gpu/runtime.ts";
import deltaWgsl from "../../kernels/attention_backward_delta.wgsl" with { type: "text" };
import dsWgsl from "../../kernels/attention_backward_ds.wgsl" with { type: "text" };
import matmulWgsl from "../../kernels/attention_backward_matmul.wgsl" with { type: "text" };
import {
  assertF32,
  assertShape,
  bindingLimit,
  bindRows,
  rowPieces,
  storageAlignment,
} from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";
import { qkvShape } from "./_attention_shape.ts";
import type { AttentionShape } from "./_attention_shape.ts";
import type { SoftmaxAttentionSaves } from "./attention.ts";

const TILE = 32;

/** Arguments of {@linkcode softmaxAttentionBackward}. */
export interface AttentionBackwardArgs {
  /** Upstream gradient `[B, N, C]` of the attention output. */
  dout: Tensor;
  /** The forward's input `[B, N, 3·C]`. */
  qkv: Tensor;
  /** The forward's output `[B, N, C]`. */
  out: Tensor;
  /** The forward's saves: its probabilities `[B, H, N, N]`. */
  saves: SoftmaxAttentionSaves;
  /** Number of heads H. */
  heads: number;
  /** Whether the forward was causal. */
  causal: boolean;
}

interface Plan {
  shape: AttentionShape;
  limit: number;
  align: number;
  headBytes: number;
}

function plan(gpu: Gpu, op: string, qkv: Tensor, heads: number, options: ChunkOptions): Plan {
  const shape = qkvShape(op, qkv, heads);
  const { B, N, H, C } = shape;
  const limit = bindingLimit(gpu, options);
  const align = storageAlignment(gpu);
  const headBytes = N * N * 4;
  const scoreBytes = B * H * headBytes;
  const maxBuffer = gpu.limits.maxBufferSize;
  if (scoreBytes > maxBuffer) {
    throw new RangeError(
      `${op}: the attention probabilities [${B}, ${H}, ${N}, ${N}] need ${
        formatBytes(scoreBytes)
      }, the device allows ${formatBytes(maxBuffer)} per buffer`,
    );
  }
  if (headBytes + align - 4 > limit) {
    throw new RangeError(
      `${op}: one head's probabilities [${N}, ${N}] need a ${formatBytes(headBytes)} ` +
        `storage binding, the device allows ${formatBytes(limit)}`,
    );
  }
  if (N * 3 * C * 4 + align - 4 > limit) {
    throw new RangeError(
      `${op}: one batch of qkv [${N}, ${3 * C}] needs a ${formatBytes(N * 3 * C * 4)} ` +
        `storage binding, the device allows ${formatBytes(limit)}`,
    );
  }
  return { shape, limit, align, headBytes };
}

/**
 * Softmax attention backward on the GPU, from saved probabilities. Records
 * dispatches only.
 *
 * @param options `maxBindingBytes` (tests)
 * @returns ∂qkv, a new tensor `[B, N, 3·C]` (assigned)
 * @throws {TypeError} on wrong shapes or dtypes
 * @throws {RangeError} as the forward, `softmaxAttention`
 * @example
 * ```ts ignore
 * const dqkv = await softmaxAttentionBackward(gpu, { dout, qkv, out, saves, heads: 4, causal: true });
 * ```
 */
export async function softmaxAttentionBackward(
  gpu: Gpu,
  args: AttentionBackwardArgs,
  options: ChunkOptions = {},
): Promise<Tensor> {
  const op = "softmaxAttentionBackward";
  const { dout, qkv, out, heads } = args;
  const probs = args.saves.probs;
  const { shape, limit, align, headBytes } = plan(gpu, op, qkv, heads, options);
  const { B, N, H, d, C } = shape;
  for (const [name, t] of Object.entries({ dout, out, probs })) assertF32(op, name, t);
  assertShape(op, "dout", dout, [B, N, C]);
  assertShape(op, "out", out, [B, N, C]);
  assertShape(op, "probs", probs, [B, H, N, N]);
  const causal = args.causal ? 1 : 0;
  const dqkv = gpu.empty([B, N, 3 * C], "f32", `${op}.dqkv`);
  if (B === 0 || N === 0) return dqkv;
  const scratch: Tensor[] = [];
  try {
    const [deltaK, dsK, matmulK] = await Promise.all([
      gpu.kernel("attention_backward_delta", deltaWgsl),
      gpu.kernel("attention_backward_ds", dsWgsl),
      gpu.kernel("attention_backward_matmul", matmulWgsl),
    ]);
    const delta = gpu.empty([B, H, N], "f32", `${op}.delta`);
    scratch.push(delta);
    gpu.assertBindable(`${op}: delta`, delta.byteSize);
    const ds = gpu.empty([B, H, N, N], "f32", `${op}.ds`);
    scratch.push(ds);
    const tiles = Math.ceil(N / TILE);
    const colTiles = Math.ceil(d / TILE);
    const scale = f32(1 / Math.sqrt(d));
    for (const bp of rowPieces(op, B, N * 3 * C * 4, limit, align)) {
      const q = bindRows(qkv, bp.start, bp.count, N * 3 * C, align);
      const dq = bindRows(dqkv, bp.start, bp.count, N * 3 * C, align);
      const g = bindRows(dout, bp.start, bp.count, N * C, align);
      const o = bindRows(out, bp.start, bp.count, N * C, align);
      const rows = bp.count * H * N;
      gpu.dispatch(deltaK, {
        bindings: [g.range, o.range, delta],
        params: [N, H, d, C, rows, g.base, o.base, bp.start * H * N],
        workgroups: Math.ceil(rows / 64),
      });
      for (const hp of rowPieces(op, bp.count * H, headBytes, limit, align)) {
        const first = bp.start * H + hp.start;
        const p = bindRows(probs, first, hp.count, N * N, align);
        const s = bindRows(ds, first, hp.count, N * N, align);
        gpu.dispatch(dsK, {
          bindings: [g.range, q.range, p.range, delta, s.range],
          params: [
            N,
            H,
            d,
            C,
            hp.count,
            hp.start,
            g.base,
            q.base,
            p.base,
            s.base,
            first,
            scale,
            causal,
          ],
          workgroups: hp.count * tiles * tiles,
        });
        // Each product: matrix (P or ∂S, scaled), transposed?, the rows it
        // multiplies (∂O or qkv) with their row stride and column, and the
        // column of ∂qkv it fills.
        const products = [
          { a: p, transposed: 1, x: g, stride: C, xCol: 0, outCol: 2 * C }, // ∂v = Pᵀ·∂O
          { a: s, transposed: 0, x: q, stride: 3 * C, xCol: C, outCol: 0 }, // ∂q = ∂S·k
          { a: s, transposed: 1, x: q, stride: 3 * C, xCol: 0, outCol: C }, // ∂k = ∂Sᵀ·q
        ];
        for (const { a, transposed, x, stride, xCol, outCol } of products) {
          gpu.dispatch(matmulK, {
            bindings: [a.range, x.range, dq.range],
            params: [
              N,
              H,
              d,
              C,
              hp.count,
              hp.start,
              a.base,
              x.base,
              stride,
              xCol,
              dq.base,
              outCol,
              causal,
              transposed,
            ],
            workgroups: hp.count * tiles * colTiles,
          });
        }
      }
    }
  } catch (err) {
    dqkv.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  return dqkv;
}
