/**
 * Token plus learned position embedding, nanoGPT's `wte(idx) + wpe(pos)`.
 *
 * GPU kernel: `kernels/embedding.wgsl` in the elementwise designs chosen
 * per adapter by measuring ({@linkcode EMBEDDING}: one value, one vec4 or
 * four vec4 per invocation; the same values).
 * Token ids are checked on the host ({@linkcode checkTokenIds}) before they
 * are uploaded: an id outside the vocabulary is a RangeError, never a silent
 * clamp.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import embeddingWgsl from "../../kernels/embedding.wgsl" with { type: "text" };
import { testValues, type Tunable } from "../gpu/tune.ts";
import { assertF32, outputTensor } from "./_shapes.ts";
import {
  elementDesign,
  type ElementShape,
  elementSlots,
  elementTunable,
  elementWorkgroups,
  mismatch,
  resolveVariant,
} from "./_tuned.ts";

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
  options: { variant?: string } = {},
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
  const shape = { n, vec4: C % 4 === 0 };
  const variant = await resolveVariant(gpu, op, EMBEDDING, shape, options.variant);
  const d = elementDesign(variant);
  const w = d.vec4 ? 4 : 1;
  const kernel = await gpu.kernel("embedding", embeddingWgsl, elementSlots(d));
  gpu.dispatch(kernel, {
    bindings: [idx, wte, wpe, y],
    params: [n / w, C / w, T, V, pos0],
    workgroups: elementWorkgroups(n / w, d),
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

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  const vec4 = elementDesign(variant).vec4;
  const cases = [[3, 5, 12, 11, 2], [2, 700, 8, 5, 0], [1, 1, 4, 1, 3], [4, 3, 7, 9, 1]]
    .filter(([, , C]) => !vec4 || C % 4 === 0);
  for (const [B, T, C, V, pos0] of cases) {
    const ids = Array.from({ length: B * T }, (_, i) => (i * 7 + 3) % V);
    const hte = testValues(V * C, V);
    const hpe = testValues((pos0 + T) * C, T);
    const owned = [
      gpu.upload(checkTokenIds(ids, V), [B, T], "check.idx"),
      gpu.upload(hte, [V, C], "check.wte"),
      gpu.upload(hpe, [pos0 + T, C], "check.wpe"),
    ];
    try {
      const y = await embedding(gpu, owned[0], owned[1], owned[2], pos0, undefined, { variant });
      owned.push(y);
      const want = Float64Array.from({ length: B * T * C }, (_, i) => {
        const r = Math.floor(i / C);
        return hte[ids[r] * C + (i % C)] + hpe[(pos0 + (r % T)) * C + (i % C)];
      });
      const why = mismatch(`${B}×${T}×${C}`, await y.read(), want, { atol: 1e-6, rtol: 1e-6 });
      if (why) return why;
    } finally {
      for (const t of owned) t.destroy();
    }
  }
  return null;
}

/** The embedding's forward as a tuned op ("embedding" in `tost tune`, `tost info`). */
export const EMBEDDING: Tunable<ElementShape> = elementTunable("embedding", {
  validate,
  workload(gpu, { n, vec4 }) {
    const [T, C, V] = [64, vec4 ? 64 : 63, 97];
    const B = Math.max(1, Math.round(n / (T * C)));
    const ids = Array.from({ length: B * T }, (_, i) => (i * 31) % V);
    const owned = [
      gpu.upload(checkTokenIds(ids, V), [B, T], "tune.idx"),
      gpu.upload(testValues(V * C, 1), [V, C], "tune.wte"),
      gpu.upload(testValues(T * C, 2), [T, C], "tune.wpe"),
      gpu.empty([B, T, C], "f32", "tune.y"),
    ];
    const [idx, wte, wpe, y] = owned;
    return {
      shape: [B * T * C],
      run: async (variant) => {
        await embedding(gpu, idx, wte, wpe, 0, y, { variant });
      },
      destroy() {
        for (const t of owned) t.destroy();
      },
    };
  },
});
