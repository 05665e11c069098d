/**
 * Flash-style backward of softmax attention (causal or not) on packed
 * `qkv [B, N, 3·C]`: the probabilities are recomputed tile by tile from
 * `qkv` instead of being saved, so memory stays linear in N (the companion
 * of `flashAttention` in `flash_attention.ts`). Same gradients as
 * `softmaxAttentionBackward` (`attention_backward.ts`, whose module doc
 * gives the formulas).
 *
 * What the forward must save: `qkv` and the output `O [B, N, C]` (from
 * `flashAttention` or `softmaxAttention`, either works: only O is used).
 *
 * GPU kernels: `kernels/flash_attention_backward_stats.wgsl` (per query the
 * log-sum-exp of its scores, recomputed, and `Δ_i = ∂O_i·O_i`), then
 * `kernels/flash_attention_backward.wgsl` entry points `dq` (one invocation
 * per query, walking key tiles) and `dkdv` (one invocation per key, walking
 * query tiles). Cost: three passes over the N² (causal: N²/2) score pairs;
 * no `[N, N]` buffer.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import statsWgsl from "../../kernels/flash_attention_backward_stats.wgsl" with { type: "text" };
import backwardWgsl from "../../kernels/flash_attention_backward.wgsl" with { type: "text" };
import { assertF32, assertShape } from "./_shapes.ts";
import { qkvShape } from "./_attention_shape.ts";

/** Workgroup memory the staged tiles may use, in bytes. */
const TILE_BYTES = 16 * 1024;

/**
 * Compile-time sizes for head size `d` and `tokens` tokens: rows owned per
 * workgroup (16–64) and rows per staged tile (two tiles of ⌈d/4⌉ vec4s plus
 * two floats per row within {@linkcode TILE_BYTES}, 4–64 rows).
 */
export function flashBackwardTiles(d: number, tokens: number): {
  rows: number;
  tileRows: number;
  headVec4s: number;
} {
  const headVec4s = Math.ceil(d / 4);
  const fit = Math.floor(TILE_BYTES / (2 * 16 * headVec4s + 8));
  let tileRows = 4;
  while (tileRows * 2 <= Math.min(64, fit) && tileRows < tokens) tileRows *= 2;
  let rows = 16;
  while (rows < 64 && rows < tokens) rows *= 2;
  return { rows, tileRows, headVec4s };
}

/** Arguments of {@linkcode flashAttentionBackward}. */
export interface FlashAttentionBackwardArgs {
  /** Upstream gradient `[B, N, C]` of the attention output. */
  dout: Tensor;
  /** The forward's input `[B, N, 3·C]`. */
  qkv: Tensor;
  /** The forward's output `[B, N, C]`. */
  out: Tensor;
  /** Number of heads H. */
  heads: number;
  /** Whether the forward was causal. */
  causal: boolean;
}

/**
 * Softmax attention backward without saved probabilities. Records
 * dispatches only; `qkv`, `dout`, `out` and the result must each fit one
 * storage binding.
 *
 * @returns ∂qkv, a new tensor `[B, N, 3·C]` (assigned)
 * @throws {TypeError} on wrong shapes or dtypes
 * @throws {RangeError} for a head size over 128 or a tensor over one storage binding
 * @example
 * ```ts ignore
 * const out = await flashAttention(gpu, qkv, 6, { causal: true });
 * const dqkv = await flashAttentionBackward(gpu, { dout, qkv, out, heads: 6, causal: true });
 * ```
 */
export async function flashAttentionBackward(
  gpu: Gpu,
  args: FlashAttentionBackwardArgs,
): Promise<Tensor> {
  const op = "flashAttentionBackward";
  const { dout, qkv, out, heads } = args;
  const { B, N, H, d, C } = qkvShape(op, qkv, heads);
  assertF32(op, "dout", dout);
  assertF32(op, "out", out);
  assertShape(op, "dout", dout, [B, N, C]);
  assertShape(op, "out", out, [B, N, C]);
  for (const [name, t] of Object.entries({ qkv, dout, out })) {
    gpu.assertBindable(`${op}: ${name}`, t.byteSize);
  }
  const dqkv = gpu.empty([B, N, 3 * C], "f32", `${op}.dqkv`);
  if (B === 0 || N === 0) return dqkv;
  const scratch: Tensor[] = [];
  try {
    const slots = flashBackwardTiles(d, N);
    const [statsK, dqK, dkdvK] = await Promise.all([
      gpu.kernel("flash_attention_backward_stats", statsWgsl, slots),
      gpu.kernel("flash_attention_backward", backwardWgsl, slots, "dq"),
      gpu.kernel("flash_attention_backward", backwardWgsl, slots, "dkdv"),
    ]);
    const lse = gpu.empty([B, H, N], "f32", `${op}.lse`);
    scratch.push(lse);
    const delta = gpu.empty([B, H, N], "f32", `${op}.delta`);
    scratch.push(delta);
    const causal = args.causal ? 1 : 0;
    const scale = f32(Math.LOG2E / Math.sqrt(d));
    const workgroups = B * H * Math.ceil(N / slots.rows);
    gpu.dispatch(statsK, {
      bindings: [qkv, dout, out, lse, delta],
      params: [N, H, d, C, B, scale, causal],
      workgroups,
    });
    for (const kernel of [dqK, dkdvK]) {
      gpu.dispatch(kernel, {
        bindings: [qkv, dout, lse, delta, dqkv],
        params: [N, H, d, C, B, scale, f32(1 / Math.sqrt(d)), causal],
        workgroups,
      });
    }
  } catch (err) {
    dqkv.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  return dqkv;
}
