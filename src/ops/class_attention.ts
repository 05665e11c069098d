/**
 * Class attention (CaiT, XCiT): softmax attention in which only the class
 * token (token 0) queries, over all `N` tokens including itself. The vision
 * models' class-attention blocks use it; its cost is linear in `N`.
 *
 * Input is the packed projection `qkv [B, N, 3·C]` (last dimension
 * `(3, H, d)`); output `[B, 1, C]`, heads concatenated. Scale `1/√d`.
 *
 * GPU kernel: `kernels/class_attention.wgsl` (one workgroup per batch and
 * head, keys spread over its invocations, partial softmaxes merged).
 * Float64 reference: `attentionReference(…, { classToken: true })` in
 * `attention_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import classWgsl from "../../kernels/class_attention.wgsl" with { type: "text" };
import { bindingLimit, bindRows, rowPieces, storageAlignment } from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";
import { qkvShape } from "./_attention_shape.ts";

/** vec4 columns merged per step: 8 (or fewer for small heads), dividing ⌈d/4⌉. */
function mergeVec4s(headVec4s: number): number {
  for (let ch = Math.min(8, headVec4s); ch > 1; ch--) {
    if (headVec4s % ch === 0) return ch;
  }
  return 1;
}

/**
 * Class attention of packed `qkv`: token 0's query against every token.
 * Records dispatches only.
 *
 * @param qkv f32 `[B, N, 3·C]`, last dimension `(3, heads, d)`, `d ≤ 128`, `N ≥ 1`
 * @param heads number of heads `H` (`C = H·d`)
 * @param options `maxBindingBytes` (tests)
 * @returns a new f32 tensor `[B, 1, C]`, heads concatenated
 * @throws {TypeError} for a malformed `qkv`, a head count that does not
 *   divide it, or no tokens
 * @throws {RangeError} for a head size over 128 or one row of `qkv` over one
 *   storage binding
 * @example
 * ```ts ignore
 * const cls = await classAttention(gpu, qkv, 4); // [B, 1, C]
 * ```
 */
export async function classAttention(
  gpu: Gpu,
  qkv: Tensor,
  heads: number,
  options: ChunkOptions = {},
): Promise<Tensor> {
  const op = "classAttention";
  const { B, N, H, d, C } = qkvShape(op, qkv, heads);
  if (N === 0) throw new TypeError(`${op}: qkv has no tokens (the class token is token 0)`);
  const out = gpu.empty([B, 1, C], "f32", "class_attention.out");
  if (B === 0) return out;
  const limit = bindingLimit(gpu, options);
  const align = storageAlignment(gpu);
  const headVec4s = Math.ceil(d / 4);
  const kernel = await gpu.kernel("class_attention", classWgsl, {
    headVec4s,
    mergeVec4s: mergeVec4s(headVec4s),
  });
  const scale = f32(Math.LOG2E / Math.sqrt(d));
  const params = (
    pairs: number,
    keys: number,
    qBase: number,
    kvBase: number,
    oBase: number,
    sBase: number,
    first: boolean,
    last: boolean,
  ) => [
    H,
    d,
    C,
    pairs,
    keys,
    qBase,
    kvBase,
    oBase,
    sBase,
    N * 3 * C,
    scale,
    first ? 1 : 0,
    last ? 1 : 0,
  ];

  const batchBytes = N * 3 * C * 4;
  if (batchBytes + align - 4 <= limit) {
    const placeholder = gpu.empty([4], "f32", "class_attention.no_state");
    for (const { start, count } of rowPieces(op, B, batchBytes, limit, align)) {
      const src = bindRows(qkv, start, count, N * 3 * C, align);
      const dst = bindRows(out, start, count, C, align);
      gpu.dispatch(kernel, {
        bindings: [src.range, src.range, dst.range, placeholder],
        params: params(count * H, N, src.base, src.base, dst.base, 0, true, true),
        workgroups: count * H,
      });
    }
    placeholder.destroy();
    return out;
  }

  // One batch is over a binding: ranges of keys, carrying the softmax state.
  const pieces = rowPieces(op, N, 3 * C * 4, limit, align);
  const state = gpu.empty([B, H, 2], "f32", "class_attention.state");
  for (let b = 0; b < B; b++) {
    const q = bindRows(qkv, b * N, 1, 3 * C, align);
    const dst = bindRows(out, b, 1, C, align);
    const st = bindRows(state, b, 1, 2 * H, align);
    pieces.forEach((kp, index) => {
      const kv = bindRows(qkv, b * N + kp.start, kp.count, 3 * C, align);
      gpu.dispatch(kernel, {
        bindings: [q.range, kv.range, dst.range, st.range],
        params: params(
          H,
          kp.count,
          q.base,
          kv.base,
          dst.base,
          st.base,
          index === 0,
          index === pieces.length - 1,
        ),
        workgroups: H,
      });
    });
  }
  state.destroy();
  return out;
}
