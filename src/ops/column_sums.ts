/**
 * Column sums down the rows of `[rows, C]` matrices, added into `[C]`
 * gradients: the bias gradients of `linearBackward` (`∂b += Σ_rows ∂y`),
 * LayerNorm's weight and bias gradients, layer scales, position embeddings
 * and class tokens. The one implementation of a sum over tokens into a
 * parameter gradient.
 *
 * GPU: `kernels/column_sums.wgsl`. One invocation sums one lane of columns
 * (one value, or a vec4) over a block of rows, in order; with several
 * blocks the partial sums `[blocks, C]` are summed again the same way, so
 * a gradient of a few hundred rows costs one dispatch. The block length and
 * lane width are the variants ({@linkcode COLUMN_SUMS_VARIANTS}), chosen
 * per adapter by measuring (`src/gpu/tune.ts`): long blocks of vec4 lanes
 * for CPUs, short blocks of scalar lanes for GPUs. Variants round
 * differently (another grouping of the same sum); each is deterministic.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import columnSumsWgsl from "../../kernels/column_sums.wgsl" with { type: "text" };
import { chooseVariant, testValues, type Tunable } from "../gpu/tune.ts";
import {
  checkRows,
  mismatch,
  rowClass,
  type RowShape,
  tunableOp,
  vec4Unsupported,
} from "./_tuned.ts";

/** The column-sum designs: lane width and rows per block. */
export const COLUMN_SUMS_VARIANTS = ["vec4-1024", "vec4-128", "scalar-1024", "scalar-128"] as const;

/** What a column-sum variant's name says. */
export interface ColumnDesign {
  /** Lanes of 4 columns (C must be a multiple of 4). */
  vec4: boolean;
  /** Rows summed by one invocation. */
  blockRows: number;
}

/** The design a variant name stands for. @throws {RangeError} naming the known ones */
export function columnDesign(variant: string): ColumnDesign {
  const m = /^(vec4|scalar)-(\d+)$/.exec(variant);
  if (!m || !(COLUMN_SUMS_VARIANTS as readonly string[]).includes(variant)) {
    throw new RangeError(
      `Unknown column-sum variant "${variant}" (known: ${COLUMN_SUMS_VARIANTS.join(", ")})`,
    );
  }
  return { vec4: m[1] === "vec4", blockRows: Number(m[2]) };
}

/** The column-sum variant without tuning: long vec4 blocks on a CPU, short scalar ones on a GPU. */
export function defaultColumnVariant(gpu: Gpu, cols: number): string {
  if (!gpu.info.software) return "scalar-128";
  return cols % 4 === 0 ? "vec4-1024" : "scalar-1024";
}

/** Entry points of `kernels/column_sums.wgsl`. */
export type ColumnEntry = "sums" | "layer_norm" | "residual";

/** One column pass: what {@linkcode columnPass} records. */
export interface ColumnPass {
  entry: ColumnEntry;
  variant: string;
  rows: number;
  /** C, the columns of every matrix and of every output. */
  cols: number;
  /** The entry's bindings before its outputs (see the kernel's header). */
  inputs: readonly Tensor[];
  /** `[C]` tensors the sums are added into (two for `layer_norm`). */
  outputs: readonly Tensor[];
}

/**
 * Record one column pass of `kernels/column_sums.wgsl` (and, over more rows
 * than one block, the passes that sum its partial sums). Intermediate
 * tensors go onto `scratch` (the caller destroys them once it has recorded
 * its last dispatch). @internal for the backward ops
 *
 * @throws {RangeError} for a vec4 variant with C not a multiple of 4
 */
export async function columnPass(gpu: Gpu, p: ColumnPass, scratch: Tensor[]): Promise<void> {
  const { rows, cols } = p;
  if (rows === 0 || cols === 0) return;
  const d = columnDesign(p.variant);
  const why = d.vec4 ? vec4Unsupported(cols) : null;
  if (why) throw new RangeError(`column sums: variant ${p.variant} ${why}`);
  for (const t of p.inputs) gpu.assertBindable("column sums input", t.byteSize);
  const lanes = d.vec4 ? cols / 4 : cols;
  const blocks = Math.ceil(rows / d.blockRows);
  const kernel = await gpu.kernel("column_sums", columnSumsWgsl, {
    vecType: d.vec4 ? "vec4f" : "f32",
  }, p.entry);
  const targets = blocks === 1 ? p.outputs : p.outputs.map(() => {
    const partial = gpu.empty([blocks, cols], "f32", "columnSums.partial");
    scratch.push(partial);
    return partial;
  });
  gpu.dispatch(kernel, {
    bindings: [...p.inputs, ...targets],
    params: [rows, lanes, d.blockRows, blocks],
    workgroups: Math.ceil((lanes * blocks) / 64),
  });
  if (blocks === 1) return;
  for (const [i, partial] of targets.entries()) {
    await columnPass(gpu, {
      entry: "sums",
      variant: p.variant,
      rows: blocks,
      cols,
      inputs: [partial],
      outputs: [p.outputs[i]],
    }, scratch);
  }
}

/**
 * Record `dst[i] += Σ_rows src[row, i]` for `src` viewed as `[rows, count]`
 * (one storage binding), with the tuned variant or `options.variant`.
 * Intermediate tensors go onto `scratch`.
 *
 * @example
 * ```ts ignore
 * const scratch: Tensor[] = [];
 * await accumulateRowSums(gpu, dy, dBias, { rows: M, count: N }, scratch); // ∂b += Σ_rows ∂y
 * for (const t of scratch) t.destroy();
 * ```
 */
export async function accumulateRowSums(
  gpu: Gpu,
  src: Tensor,
  dst: Tensor,
  dims: { rows: number; count: number },
  scratch: Tensor[],
  options: { variant?: string } = {},
): Promise<void> {
  const { rows, count } = dims;
  if (rows === 0 || count === 0) return;
  if (src.numel < rows * count || dst.numel < count) {
    throw new TypeError(
      `accumulateRowSums: [${src.shape}] → [${dst.shape}] do not hold ${rows} rows of ${count}`,
    );
  }
  const variant = options.variant ??
    await chooseVariant(gpu, COLUMN_SUMS, { rows, cols: count });
  await columnPass(gpu, {
    entry: "sums",
    variant,
    rows,
    cols: count,
    inputs: [src],
    outputs: [dst],
  }, scratch);
}

/** Column sums in float64, added into `dst` (the reference of {@linkcode accumulateRowSums}). */
export function columnSumsReference(
  src: ArrayLike<number>,
  dst: Float64Array,
  rows: number,
): void {
  const C = dst.length;
  for (let r = 0; r < rows; r++) for (let c = 0; c < C; c++) dst[c] += src[r * C + c];
}

/** Validation shapes: the common ones plus enough rows for several blocks. */
function checkShapes(vec4: boolean): RowShape[] {
  return [...checkRows(vec4), { rows: 1100, cols: 8 }, { rows: 300, cols: 20 }];
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  for (const { rows, cols } of checkShapes(columnDesign(variant).vec4)) {
    const hs = testValues(rows * cols, rows);
    const hd = testValues(cols, cols + 1);
    const src = gpu.upload(hs, [rows, cols], "check.src");
    const dst = gpu.upload(hd, [cols], "check.dst");
    const scratch: Tensor[] = [src, dst];
    try {
      await accumulateRowSums(gpu, src, dst, { rows, count: cols }, scratch, { variant });
      const want = Float64Array.from(hd);
      columnSumsReference(hs, want, rows);
      const why = mismatch(`${rows}×${cols}`, await dst.read(), want, { atol: 1e-5, rtol: 1e-5 });
      if (why) return why;
    } finally {
      for (const t of scratch) t.destroy();
    }
  }
  return null;
}

/** The column sums as a tuned op (`tost tune`, `tost info`: "column_sums"). */
export const COLUMN_SUMS: Tunable<RowShape> = tunableOp<RowShape>({
  op: "column_sums",
  version: 1,
  variants: COLUMN_SUMS_VARIANTS,
  unsupported: (_gpu, v, s) => columnDesign(v).vec4 ? vec4Unsupported(s.cols) : null,
  shapeClass: rowClass,
  fallback: (gpu, s) => defaultColumnVariant(gpu, s.cols),
  validate,
  workload(gpu, { rows, cols }) {
    const src = gpu.upload(testValues(rows * cols, 1), [rows, cols], "tune.src");
    const dst = gpu.empty([cols], "f32", "tune.dst");
    const scratch: Tensor[] = [];
    return {
      shape: [rows, cols],
      run: (variant) =>
        accumulateRowSums(gpu, src, dst, { rows, count: cols }, scratch, { variant }),
      destroy() {
        for (const t of [src, dst, ...scratch]) t.destroy();
      },
    };
  },
});
