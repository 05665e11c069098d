/**
 * Token plus learned position embedding, nanoGPT's `wte(idx) + wpe(pos)`.
 *
 * GPU kernel: `kernels/embedding.wgsl`, one thread per output element.
 * Token ids are checked on the host ({@linkcode checkTokenIds}) before they
 * are uploaded: an id outside the vocabulary is a RangeError, never a silent
 * clamp.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import embeddingWgsl from "../../kernels/embedding.wgsl" with { type: "text" };
import { assertF32, outputTensor } from "./_shapes.ts";

const WORKGROUP_SIZE = 256;

/**
 * Convert token ids to u32, checking each is in `[0, vocab)`.
 *
 * @throws {RangeError} naming the first bad id and its position.
 */
export function checkTokenIds(
  ids: ArrayLike<number | bigint>,
  vocab: number,
): Uint32Array<ArrayBuffer> {
  const out = new Uint32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const v = Number(ids[i]);
    if (!Number.isInteger(v) || v < 0 || v >= vocab) {
      throw new RangeError(
        `Token id ${ids[i]} at position ${i} is outside the vocabulary [0, ${vocab})`,
      );
    }
    out[i] = v;
  }
  return out;
}

/**
 * `y[b, t, :] = wte[idx[b, t], :] + wpe[pos0 + t, :]` on the GPU.
 * Records one dispatch.
 *
 * @param idx u32 `[B, T]` token ids, already checked with {@linkcode checkTokenIds}
 * @param wte f32 `[V, C]` token embedding
 * @param wpe f32 `[P, C]` position embedding, P ≥ pos0 + T
 * @param pos0 position of each sequence's first token (0 for a full forward)
 * @returns f32 `[B, T, C]`
 * @example
 * ```ts ignore
 * const ids = gpu.upload(checkTokenIds([1, 2, 3], V), [1, 3]);
 * const x = await embedding(gpu, ids, wte, wpe);
 * ```
 */
export async function embedding(
  gpu: Gpu,
  idx: Tensor,
  wte: Tensor,
  wpe: Tensor,
  pos0 = 0,
  out?: Tensor,
): Promise<Tensor> {
  const op = "embedding";
  if (idx.dtype !== "u32" || idx.shape.length !== 2) {
    throw new TypeError(`${op}: idx must be u32 [B, T], got ${idx.dtype} [${idx.shape}]`);
  }
  assertF32(op, "wte", wte);
  assertF32(op, "wpe", wpe);
  if (wte.shape.length !== 2 || wpe.shape.length !== 2 || wte.shape[1] !== wpe.shape[1]) {
    throw new TypeError(
      `${op}: wte [V, C] and wpe [P, C] expected, got [${wte.shape}] and [${wpe.shape}]`,
    );
  }
  const [B, T] = idx.shape;
  const [V, C] = wte.shape;
  if (!Number.isInteger(pos0) || pos0 < 0 || pos0 + T > wpe.shape[0]) {
    throw new RangeError(
      `${op}: positions ${pos0}..${pos0 + T - 1} exceed the ${
        wpe.shape[0]
      } learned positions (block_size)`,
    );
  }
  const y = outputTensor(gpu, op, [B, T, C], [wte, wpe], out);
  const n = B * T * C;
  if (n === 0) return y;
  gpu.assertBindable(`${op} wte`, wte.byteSize);
  gpu.assertBindable(`${op} output`, y.byteSize);
  const kernel = await gpu.kernel("embedding", embeddingWgsl, { workgroupSize: WORKGROUP_SIZE });
  gpu.dispatch(kernel, {
    bindings: [idx, wte, wpe, y],
    params: [n, C, T, V, pos0],
    workgroups: Math.ceil(n / WORKGROUP_SIZE),
  });
  return y;
}

/**
 * The same on the CPU (float32 sums), for tests.
 *
 * @example
 * ```ts
 * import { embeddingReference } from "./embedding.ts";
 * const y = embeddingReference([1], new Float32Array([0, 0, 5, 6]), new Float32Array([1, 2]), 1, 1, 2);
 * if (y[0] !== 6 || y[1] !== 8) throw new Error("embedding");
 * ```
 */
export function embeddingReference(
  idx: ArrayLike<number>,
  wte: Float32Array,
  wpe: Float32Array,
  B: number,
  T: number,
  C: number,
  pos0 = 0,
): Float32Array<ArrayBuffer> {
  const y = new Float32Array(B * T * C);
  for (let r = 0; r < B * T; r++) {
    const tok = idx[r];
    const pos = pos0 + (r % T);
    for (let c = 0; c < C; c++) y[r * C + c] = wte[tok * C + c] + wpe[pos * C + c];
  }
  return y;
}
