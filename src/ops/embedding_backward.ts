/**
 * Backward of the token + position embedding `x[b, t] = wte[idx[b, t]] + wpe[t]`
 * (a full-sequence forward: positions start at 0):
 *
 *     ∂wte[v] += Σ_{(b, t): idx[b, t] = v} ∂x[b, t]     (accumulated)
 *     ∂wpe[t] += Σ_b ∂x[b, t]                          (accumulated)
 *
 * What the forward must save: nothing on the GPU; the token ids stay on the
 * host (training has them there), where a counting sort groups the rows of
 * `∂x` by token id. WGSL has no float atomics, so instead of a scatter-add
 * each (token, channel) sums its own list: the lists are cut into segments
 * of at most {@linkcode SEGMENT_ROWS} rows, one thread per (segment,
 * channel) sums a segment, and one thread per (token, channel) adds its
 * segments' partial sums to `∂wte` — a two-level tree, so a very frequent
 * token does not leave one thread summing thousands of rows
 * (`kernels/embedding_backward.wgsl`, in the elementwise designs chosen per
 * adapter by measuring, {@linkcode EMBEDDING_BACKWARD}: a channel or a vec4
 * of channels per lane; the same sums in the same order, so the same bits).
 * `∂wpe` is a column sum over the batch (`column_sums.ts`).
 *
 * Tied head: nanoGPT's `lm_head.weight` is `wte`. Pass the same `dWte` as
 * `dWeight` to `linearBackward` for the head and here; both add into it, so
 * it ends up holding the tied weight's full gradient (head part + embedding
 * part), whatever the order.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import embeddingBackwardWgsl from "../../kernels/embedding_backward.wgsl" with { type: "text" };
import { testValues, type Tunable } from "../gpu/tune.ts";
import { assertF32 } from "./_shapes.ts";
import {
  elementDesign,
  type ElementShape,
  elementSlots,
  elementTunable,
  elementWorkgroups,
  mismatch,
  resolveVariant,
} from "./_tuned.ts";
import { checkTokenIds } from "./embedding.ts";
import { accumulateRowSums } from "./column_sums.ts";

/** Rows summed by one thread in the first level of the ∂wte reduction. */
export const SEGMENT_ROWS = 32;

/** Token ids grouped by value: the host side of {@linkcode embeddingBackward}. */
export interface TokenRows {
  /** Row indices (`b·T + t`) sorted by token id (stable). */
  order: Uint32Array<ArrayBuffer>;
  /** `[segments + 1]`: segment `s` holds `order[segStart[s] .. segStart[s + 1])`. */
  segStart: Uint32Array<ArrayBuffer>;
  /** `[vocab + 1]`: token `v` owns segments `vocabSeg[v] .. vocabSeg[v + 1]`. */
  vocabSeg: Uint32Array<ArrayBuffer>;
}

/**
 * Counting sort of token ids into per-token row lists cut into segments of
 * at most `segmentRows` rows.
 *
 * @throws {RangeError} for an id outside `[0, vocab)`
 * @example
 * ```ts
 * import { groupTokenRows } from "./embedding_backward.ts";
 * const g = groupTokenRows([2, 0, 2], 3, 1);
 * if (g.order.join() !== "1,0,2" || g.vocabSeg.join() !== "0,1,1,3") throw new Error();
 * ```
 */
export function groupTokenRows(
  ids: ArrayLike<number | bigint>,
  vocab: number,
  segmentRows = SEGMENT_ROWS,
): TokenRows {
  const tok = checkTokenIds(ids, vocab);
  const counts = new Uint32Array(vocab + 1);
  for (const v of tok) counts[v + 1]++;
  const start = new Uint32Array(vocab + 1);
  for (let v = 0; v < vocab; v++) start[v + 1] = start[v] + counts[v + 1];
  const order = new Uint32Array(tok.length);
  const next = start.slice(0, vocab);
  for (let r = 0; r < tok.length; r++) order[next[tok[r]]++] = r;
  const vocabSeg = new Uint32Array(vocab + 1);
  for (let v = 0; v < vocab; v++) {
    vocabSeg[v + 1] = vocabSeg[v] + Math.ceil(counts[v + 1] / segmentRows);
  }
  const segStart = new Uint32Array(vocabSeg[vocab] + 1);
  let s = 0;
  for (let v = 0; v < vocab; v++) {
    for (let r = start[v]; r < start[v + 1]; r += segmentRows) segStart[s++] = r;
  }
  segStart[s] = tok.length;
  return { order, segStart, vocabSeg };
}

/** Arguments of {@linkcode embeddingBackward}. */
export interface EmbeddingBackwardArgs {
  /** Upstream gradient `[B, T, C]` of the embedding's output. */
  dy: Tensor;
  /** The `B·T` token ids, on the host. */
  ids: ArrayLike<number | bigint>;
  /** Vocabulary size V. */
  vocab: number;
  /** `[V, C]`, receives the token embedding's gradient (added). */
  dWte: Tensor;
  /** `[P, C]` with `P ≥ T`, receives the position embedding's gradient (added); null to skip. */
  dWpe: Tensor | null;
}

/**
 * Embedding backward on the GPU. Records dispatches only (and uploads the
 * sorted ids); every tensor must fit one storage binding.
 *
 * @throws {TypeError} on wrong shapes or dtypes
 * @throws {RangeError} for token ids outside the vocabulary
 * @example
 * ```ts ignore
 * await linearBackward(gpu, { dy: dLogits, x: lnF, weight: wte, dWeight: dWte, dBias: null });
 * await embeddingBackward(gpu, { dy: dx0, ids, vocab: V, dWte, dWpe });
 * ```
 */
export async function embeddingBackward(
  gpu: Gpu,
  args: EmbeddingBackwardArgs,
  options: { variant?: string } = {},
): Promise<void> {
  const op = "embeddingBackward";
  const { dy, ids, vocab, dWte, dWpe } = args;
  assertF32(op, "dy", dy);
  assertF32(op, "dWte", dWte);
  if (dy.shape.length !== 3) throw new TypeError(`${op}: dy must be [B, T, C], got [${dy.shape}]`);
  const [B, T, C] = dy.shape;
  if (dWte.shape.length !== 2 || dWte.shape[0] !== vocab || dWte.shape[1] !== C) {
    throw new TypeError(`${op}: dWte must have shape [${vocab}, ${C}], got [${dWte.shape}]`);
  }
  if (ids.length !== B * T) {
    throw new TypeError(`${op}: ${ids.length} token ids for dy [${dy.shape}]`);
  }
  if (dWpe) {
    assertF32(op, "dWpe", dWpe);
    if (dWpe.shape.length !== 2 || dWpe.shape[1] !== C || dWpe.shape[0] < T) {
      throw new TypeError(`${op}: dWpe must have shape [P ≥ ${T}, ${C}], got [${dWpe.shape}]`);
    }
  }
  gpu.assertBindable(`${op}: dy`, dy.byteSize);
  gpu.assertBindable(`${op}: dWte`, dWte.byteSize);
  if (B * T * C === 0) return;
  const groups = groupTokenRows(ids, vocab);
  const segments = groups.segStart.length - 1;
  const scratch: Tensor[] = [];
  try {
    const shape = { n: B * T * C, vec4: C % 4 === 0 };
    const variant = await resolveVariant(gpu, op, EMBEDDING_BACKWARD, shape, options.variant);
    const d = elementDesign(variant);
    const lanes = d.vec4 ? C / 4 : C;
    const [segmentK, tokenK] = await Promise.all([
      gpu.kernel("embedding_backward", embeddingBackwardWgsl, elementSlots(d), "segment_sums"),
      gpu.kernel("embedding_backward", embeddingBackwardWgsl, elementSlots(d), "token_sums"),
    ]);
    const order = gpu.upload(groups.order, [groups.order.length], `${op}.order`);
    scratch.push(order);
    // Sized by the most segments any batch of B·T ids can have, not by this
    // batch's count: every step then allocates the same sizes, and a step's
    // arena (src/gpu/arena.ts) serves them from the same buffers.
    const N = B * T;
    const maxSegments = Math.min(N, Math.ceil(N / SEGMENT_ROWS) + Math.min(vocab, N));
    const segStartHost = new Uint32Array(maxSegments + 1);
    segStartHost.set(groups.segStart);
    const segStart = gpu.upload(segStartHost, [maxSegments + 1], `${op}.segStart`);
    scratch.push(segStart);
    const vocabSeg = gpu.upload(groups.vocabSeg, [groups.vocabSeg.length], `${op}.vocabSeg`);
    scratch.push(vocabSeg);
    const partial = gpu.empty([maxSegments, C], "f32", `${op}.partial`);
    scratch.push(partial);
    gpu.assertBindable(`${op}: partial sums`, partial.byteSize);
    gpu.dispatch(segmentK, {
      bindings: [dy, order, segStart, partial],
      params: [segments, lanes],
      workgroups: elementWorkgroups(segments * lanes, d),
    });
    gpu.dispatch(tokenK, {
      bindings: [partial, vocabSeg, dWte],
      params: [vocab, lanes],
      workgroups: elementWorkgroups(vocab * lanes, d),
    });
    if (dWpe) await accumulateRowSums(gpu, dy, dWpe, { rows: B, count: T * C }, scratch);
  } finally {
    for (const t of scratch) t.destroy();
  }
}

/**
 * Embedding backward in float64.
 *
 * @param args `dy` (`B·T·C`), host `ids` (`B·T`); `dWte` (`V·C`) and `dWpe`
 *   (`≥ T·C`, or null) receive the **added** gradients
 * @example
 * ```ts
 * import { embeddingBackwardReference } from "./embedding_backward.ts";
 * const dWte = new Float64Array(4); // V = 2, C = 2
 * const dWpe = new Float64Array(2);
 * embeddingBackwardReference({ dy: [1, 2, 3, 4], ids: [1, 1], dWte, dWpe }, { B: 2, T: 1, C: 2 });
 * if (dWte.join() !== "0,0,4,6" || dWpe.join() !== "4,6") throw new Error();
 * ```
 */
export function embeddingBackwardReference(
  args: {
    dy: ArrayLike<number>;
    ids: ArrayLike<number>;
    dWte: Float64Array;
    dWpe: Float64Array | null;
  },
  dims: { B: number; T: number; C: number },
): void {
  const { dy, ids, dWte, dWpe } = args;
  const { B, T, C } = dims;
  if (dy.length !== B * T * C || ids.length !== B * T || (dWpe && dWpe.length < T * C)) {
    throw new TypeError(
      `embeddingBackwardReference: dy ${dy.length}, ids ${ids.length}, dWpe ${dWpe?.length} ` +
        `do not fit B=${B}, T=${T}, C=${C}`,
    );
  }
  for (let r = 0; r < B * T; r++) {
    const v = ids[r];
    if (!Number.isInteger(v) || v < 0 || (v + 1) * C > dWte.length) {
      throw new RangeError(`embeddingBackwardReference: token id ${v} at ${r} out of range`);
    }
    for (let c = 0; c < C; c++) {
      dWte[v * C + c] += dy[r * C + c];
      if (dWpe) dWpe[(r % T) * C + c] += dy[r * C + c];
    }
  }
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  const vec4 = elementDesign(variant).vec4;
  // [B, T, C, V]: a frequent token (several segments), absent tokens, odd C.
  const cases = [[3, 70, 12, 9], [2, 5, 8, 40], [1, 1, 4, 3], [4, 33, 7, 5]]
    .filter(([, , C]) => !vec4 || C % 4 === 0);
  for (const [B, T, C, V] of cases) {
    const ids = Array.from({ length: B * T }, (_, i) => i % 3 === 0 ? 1 : (i * 7) % V);
    const hdy = testValues(B * T * C, T);
    const hte = testValues(V * C, V);
    const hpe = testValues(T * C, C);
    const dy = gpu.upload(hdy, [B, T, C], "check.dy");
    const dWte = gpu.upload(hte, [V, C], "check.dwte");
    const dWpe = gpu.upload(hpe, [T, C], "check.dwpe");
    try {
      await embeddingBackward(gpu, { dy, ids, vocab: V, dWte, dWpe }, { variant });
      const wte = Float64Array.from(hte);
      const wpe = Float64Array.from(hpe);
      embeddingBackwardReference({ dy: hdy, ids, dWte: wte, dWpe: wpe }, { B, T, C });
      const tol = { atol: 1e-5, rtol: 1e-5 };
      const why = mismatch(`∂wte ${B}×${T}×${C}`, await dWte.read(), wte, tol) ??
        mismatch(`∂wpe ${B}×${T}×${C}`, await dWpe.read(), wpe, tol);
      if (why) return why;
    } finally {
      for (const t of [dy, dWte, dWpe]) t.destroy();
    }
  }
  return null;
}

/** The embedding's backward as a tuned op ("embedding_backward"): its ∂wte sums. */
export const EMBEDDING_BACKWARD: Tunable<ElementShape> = elementTunable("embedding_backward", {
  validate,
  workload(gpu, { n, vec4 }) {
    const [T, C, V] = [64, vec4 ? 64 : 63, 97];
    const B = Math.max(1, Math.round(n / (T * C)));
    const ids = Array.from({ length: B * T }, (_, i) => (i * 31) % V);
    const dy = gpu.upload(testValues(B * T * C, 1), [B, T, C], "tune.dy");
    const dWte = gpu.empty([V, C], "f32", "tune.dwte");
    return {
      shape: [B * T * C],
      run: (variant) =>
        embeddingBackward(gpu, { dy, ids, vocab: V, dWte, dWpe: null }, { variant }),
      destroy() {
        dy.destroy();
        dWte.destroy();
      },
    };
  },
});
