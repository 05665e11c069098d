/**
 * Flash attention: softmax attention computed tile by tile with a running
 * maximum and sum (online softmax), so the N×N scores are never stored and
 * memory stays O(N·C). Same inputs, outputs and results as
 * {@linkcode softmaxAttention}.
 *
 * GPU kernel: `kernels/flash_attention.wgsl` (one workgroup per block of
 * queries of one batch and head, key/value tiles in workgroup memory).
 *
 * Tensors over one storage binding are processed in pieces: whole batches
 * when one batch fits a binding; otherwise, per batch, ranges of query rows
 * against ranges of key rows, carrying the online-softmax state from one key
 * range to the next.
 *
 * @module
 */

import type { BufferRange, Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import flashWgsl from "../../kernels/flash_attention.wgsl" with { type: "text" };
import { bindingLimit, bindRows, rowPieces, storageAlignment } from "./_shapes.ts";
import { qkvShape } from "./_attention_shape.ts";
import type { AttentionOptions } from "./attention.ts";

/** Queries per workgroup (one invocation each) for long sequences. */
const MAX_BLOCK_QUERIES = 64;
/** Workgroup memory the key/value tiles may use: WebGPU's guaranteed minimum. */
const TILE_BYTES = 16384;
/** Upper bound on keys per tile (each invocation keeps a score per key). */
const MAX_BLOCK_KEYS = 64;

/**
 * Compile-time tile sizes for head size `d` and sequence length `tokens`:
 * key/value tiles within 16 KiB of workgroup memory, at most 64 keys and 64
 * queries, smaller for short sequences.
 */
export function flashTiles(d: number, tokens: number): {
  blockQueries: number;
  blockKeys: number;
  headVec4s: number;
} {
  const headVec4s = Math.ceil(d / 4);
  const maxKeys = Math.min(MAX_BLOCK_KEYS, Math.floor(TILE_BYTES / (2 * 16 * headVec4s)));
  // Short sequences get smaller tiles and workgroups so that padding wastes less.
  let blockKeys = 4;
  while (blockKeys < maxKeys && blockKeys < tokens) blockKeys *= 2;
  let blockQueries = 16;
  while (blockQueries < MAX_BLOCK_QUERIES && blockQueries < tokens) blockQueries *= 2;
  return { blockQueries, blockKeys: Math.min(blockKeys, maxKeys), headVec4s };
}

/**
 * Softmax attention of packed `qkv` without materialising the scores.
 * Records dispatches only; nothing waits.
 *
 * @param qkv f32 `[B, N, 3·C]`, last dimension `(3, heads, d)`, `d ≤ 128`
 * @param heads number of heads `H` (`C = H·d`)
 * @param options `causal` (query i sees keys 0..i); `maxBindingBytes` (tests)
 * @returns a new f32 tensor `[B, N, C]`, heads concatenated
 * @throws {TypeError} for a malformed `qkv` or head count
 * @throws {RangeError} for a head size over 128, or a row of `qkv` over one
 *   storage binding
 * @example
 * ```ts ignore
 * const y = await flashAttention(gpu, qkv, 8, { causal: true });
 * ```
 */
export async function flashAttention(
  gpu: Gpu,
  qkv: Tensor,
  heads: number,
  options: AttentionOptions = {},
): Promise<Tensor> {
  const op = "flashAttention";
  const { B, N, H, d, C } = qkvShape(op, qkv, heads);
  const causal = options.causal ?? false;
  const out = gpu.empty([B, N, C], "f32", "flash_attention.out");
  if (B === 0 || N === 0) return out;
  const limit = bindingLimit(gpu, options);
  const align = storageAlignment(gpu);
  const kernel = await gpu.kernel("flash_attention", flashWgsl, flashTiles(d, N));
  const scale = f32(Math.LOG2E / Math.sqrt(d));

  const common = (fields: {
    batches: number;
    qStart: number;
    qCount: number;
    kStart: number;
    kCount: number;
    qBase: number;
    kvBase: number;
    oBase: number;
    sBase: number;
    first: boolean;
    last: boolean;
  }) => [
    N,
    H,
    d,
    C,
    fields.batches,
    fields.qStart,
    fields.qCount,
    fields.kStart,
    fields.kCount,
    fields.qBase,
    fields.kvBase,
    fields.oBase,
    fields.sBase,
    N * 3 * C,
    N * C,
    N * 2 * H,
    scale,
    causal ? 1 : 0,
    fields.first ? 1 : 0,
    fields.last ? 1 : 0,
  ];
  const { blockQueries } = flashTiles(d, N);
  const workgroups = (batches: number, queries: number) =>
    batches * H * Math.ceil(queries / blockQueries);

  const batchBytes = N * 3 * C * 4;
  if (batchBytes + align - 4 <= limit) {
    // Whole batches per dispatch: one pass over all keys.
    const placeholder = gpu.empty([4], "f32", "flash_attention.no_state");
    for (const { start, count } of rowPieces(op, B, batchBytes, limit, align)) {
      const src = bindRows(qkv, start, count, N * 3 * C, align);
      const dst = bindRows(out, start, count, N * C, align);
      gpu.dispatch(kernel, {
        bindings: [src.range, src.range, dst.range, placeholder],
        params: common({
          batches: count,
          qStart: 0,
          qCount: N,
          kStart: 0,
          kCount: N,
          qBase: src.base,
          kvBase: src.base,
          oBase: dst.base,
          sBase: 0,
          first: true,
          last: true,
        }),
        workgroups: workgroups(count, N),
      });
    }
    placeholder.destroy();
    return out;
  }

  // One batch is over a binding: ranges of queries × ranges of keys, with
  // the online-softmax state (m, l per head and token) carried between key ranges.
  const pieces = rowPieces(op, N, 3 * C * 4, limit, align);
  const state = gpu.empty([B, N, H, 2], "f32", "flash_attention.state");
  for (let b = 0; b < B; b++) {
    for (const qp of pieces) {
      const keyPieces = causal
        ? pieces.filter((kp) => kp.start <= qp.start + qp.count - 1)
        : pieces;
      const src = bindRows(qkv, b * N + qp.start, qp.count, 3 * C, align);
      const dst = bindRows(out, b * N + qp.start, qp.count, C, align);
      const st = bindRows(state, b * N + qp.start, qp.count, 2 * H, align);
      keyPieces.forEach((kp, index) => {
        const kv: { range: BufferRange; base: number } = kp.start === qp.start
          ? src
          : bindRows(qkv, b * N + kp.start, kp.count, 3 * C, align);
        gpu.dispatch(kernel, {
          bindings: [src.range, kv.range, dst.range, st.range],
          params: common({
            batches: 1,
            qStart: qp.start,
            qCount: qp.count,
            kStart: kp.start,
            kCount: kp.count,
            qBase: src.base,
            kvBase: kv.base,
            oBase: dst.base,
            sBase: st.base,
            first: index === 0,
            last: index === keyPieces.length - 1,
          }),
          workgroups: workgroups(1, qp.count),
        });
      });
    }
  }
  state.destroy();
  return out;
}
