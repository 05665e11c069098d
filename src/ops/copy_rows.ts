/**
 * Strided copies of rows between batched `[B, N, C]` tensors on the GPU:
 * concatenation along tokens (prepending the class token), writing one row of
 * every batch, or picking one row out of every batch.
 *
 * GPU kernel: `kernels/copy_rows.wgsl` in the elementwise designs chosen per
 * adapter by measuring ({@linkcode COPY_ROWS}: one value, one vec4 or four
 * vec4 per invocation; a copy is a copy whichever runs).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import copyRowsWgsl from "../../kernels/copy_rows.wgsl" with { type: "text" };
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

/** Where {@linkcode copyRows} reads and writes, in rows of C values. */
export interface RowCopy {
  /** Batches B. */
  batches: number;
  /** Rows copied per batch. */
  rows: number;
  /** Values per row C. */
  cols: number;
  /** Rows between consecutive batches of src; 0 repeats the same rows for every batch. */
  srcBatchRows: number;
  /** First row copied inside each batch of src. */
  srcRow0?: number;
  /** Rows between consecutive batches of dst. */
  dstBatchRows: number;
  /** First row written inside each batch of dst. */
  dstRow0?: number;
}

/**
 * `dst[b, dstRow0 + r, :] = src[b·srcBatchRows + srcRow0 + r, :]` for every
 * batch b and row r < rows. Records one dispatch.
 *
 * @throws {RangeError} when a read or write would fall outside its tensor.
 * @example
 * ```ts ignore
 * // x = cat([cls, tokens], dim=1): cls [C] broadcast, tokens [B, N, C] → x [B, N + 1, C]
 * await copyRows(gpu, cls, x, { batches: B, rows: 1, cols: C, srcBatchRows: 0, dstBatchRows: N + 1 });
 * await copyRows(gpu, tokens, x, { batches: B, rows: N, cols: C, srcBatchRows: N, dstBatchRows: N + 1, dstRow0: 1 });
 * ```
 */
export async function copyRows(
  gpu: Gpu,
  src: Tensor,
  dst: Tensor,
  spec: RowCopy,
  options: { variant?: string } = {},
): Promise<void> {
  assertF32("copyRows", "src", src);
  assertF32("copyRows", "dst", dst);
  if (src.buffer === dst.buffer) throw new TypeError("copyRows: src and dst must differ");
  const { batches: B, rows, cols: C, srcBatchRows, dstBatchRows } = spec;
  const srcRow0 = spec.srcRow0 ?? 0;
  const dstRow0 = spec.dstRow0 ?? 0;
  for (
    const [k, v] of Object.entries({ B, rows, C, srcBatchRows, dstBatchRows, srcRow0, dstRow0 })
  ) {
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(
        `copyRows: ${k} must be an integer ≥ 0, got ${v}`,
      );
    }
  }
  const n = B * rows * C;
  if (n === 0) return;
  const srcEnd = ((B - 1) * srcBatchRows + srcRow0 + rows) * C;
  const dstEnd = ((B - 1) * dstBatchRows + dstRow0 + rows) * C;
  if (srcEnd > src.numel) {
    throw new RangeError(`copyRows: reads up to element ${srcEnd} of src [${src.shape}]`);
  }
  if (dstEnd > dst.numel) {
    throw new RangeError(`copyRows: writes up to element ${dstEnd} of dst [${dst.shape}]`);
  }
  gpu.assertBindable("copyRows src", src.byteSize);
  gpu.assertBindable("copyRows dst", dst.byteSize);
  const shape = { n, vec4: C % 4 === 0 };
  const variant = await resolveVariant(gpu, "copyRows", COPY_ROWS, shape, options.variant);
  const d = elementDesign(variant);
  const w = d.vec4 ? 4 : 1;
  const kernel = await gpu.kernel("copy_rows", copyRowsWgsl, elementSlots(d));
  gpu.dispatch(kernel, {
    bindings: [src, dst],
    params: [n / w, rows, C / w, srcBatchRows, srcRow0, dstBatchRows, dstRow0],
    workgroups: elementWorkgroups(n / w, d),
  });
}

/** `[B, count, D]`: rows `row0 …` of every batch of `src` `[B, S, D]`. */
export async function takeRows(
  gpu: Gpu,
  src: Tensor,
  row0: number,
  count: number,
): Promise<Tensor> {
  const [B, S, D] = src.shape;
  const out = gpu.empty([B, count, D], "f32", "rows");
  await copyRows(gpu, src, out, {
    batches: B,
    rows: count,
    cols: D,
    srcBatchRows: S,
    srcRow0: row0,
    dstBatchRows: count,
  });
  return out;
}

/** Write `src` `[B, count, D]` into rows `row0 …` of every batch of `dst` `[B, S, D]`. */
export async function putRows(gpu: Gpu, src: Tensor, dst: Tensor, row0: number): Promise<void> {
  const [B, S, D] = dst.shape;
  const count = src.shape[1];
  await copyRows(gpu, src, dst, {
    batches: B,
    rows: count,
    cols: D,
    srcBatchRows: count,
    dstBatchRows: S,
    dstRow0: row0,
  });
}

/** `copyRows` in plain TypeScript (its reference: a copy is exact). */
export function copyRowsReference(src: ArrayLike<number>, dst: Float64Array, spec: RowCopy): void {
  const { batches: B, rows, cols: C, srcBatchRows, dstBatchRows } = spec;
  const srcRow0 = spec.srcRow0 ?? 0;
  const dstRow0 = spec.dstRow0 ?? 0;
  for (let b = 0; b < B; b++) {
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < C; c++) {
        dst[(b * dstBatchRows + dstRow0 + r) * C + c] =
          src[(b * srcBatchRows + srcRow0 + r) * C + c];
      }
    }
  }
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  const vec4 = elementDesign(variant).vec4;
  const specs: RowCopy[] = [
    { batches: 3, rows: 5, cols: 12, srcBatchRows: 0, dstBatchRows: 6, dstRow0: 1 },
    { batches: 70, rows: 1, cols: 68, srcBatchRows: 9, srcRow0: 4, dstBatchRows: 1 },
    { batches: 2, rows: 700, cols: 8, srcBatchRows: 700, dstBatchRows: 701, dstRow0: 1 },
    { batches: 7, rows: 3, cols: 7, srcBatchRows: 3, dstBatchRows: 4 },
  ].filter((s) => !vec4 || s.cols % 4 === 0);
  for (const spec of specs) {
    const { batches: B, rows, cols: C } = spec;
    const srcN = ((B - 1) * spec.srcBatchRows + (spec.srcRow0 ?? 0) + rows) * C;
    const dstN = ((B - 1) * spec.dstBatchRows + (spec.dstRow0 ?? 0) + rows) * C;
    const hs = testValues(srcN, srcN);
    const hd = testValues(dstN, dstN + 1);
    const src = gpu.upload(hs, [srcN], "check.src");
    const dst = gpu.upload(hd, [dstN], "check.dst");
    try {
      await copyRows(gpu, src, dst, spec, { variant });
      const want = Float64Array.from(hd);
      copyRowsReference(hs, want, spec);
      const why = mismatch(`${B}×${rows}×${C}`, await dst.read(), want, { atol: 0, rtol: 0 });
      if (why) return why;
    } finally {
      src.destroy();
      dst.destroy();
    }
  }
  return null;
}

/** The row copies as a tuned op ("copy_rows" in `tost tune`, `tost info`). */
export const COPY_ROWS: Tunable<ElementShape> = elementTunable("copy_rows", {
  validate,
  workload(gpu, { n, vec4 }) {
    // Concatenation along tokens: the vision model's class token and patches.
    const C = vec4 ? 64 : 63;
    const B = Math.max(1, Math.round(n / (16 * C)));
    const src = gpu.upload(testValues(B * 16 * C, 1), [B, 16, C], "tune.src");
    const dst = gpu.empty([B, 17, C], "f32", "tune.dst");
    const spec = { batches: B, rows: 16, cols: C, srcBatchRows: 16, dstBatchRows: 17, dstRow0: 1 };
    return {
      shape: [B * 16 * C],
      run: (variant) => copyRows(gpu, src, dst, spec, { variant }),
      destroy() {
        src.destroy();
        dst.destroy();
      },
    };
  },
});
