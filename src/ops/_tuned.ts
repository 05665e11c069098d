/**
 * What the tuned ops other than the GEMM share: the two kernel designs
 * every row op comes in, their shape classes, and the recipe that turns an
 * op's validation and workload into a {@linkcode Tunable}.
 *
 * The designs (measured on lavapipe in `../shared/PERF.md` and the issue's
 * probes; a hardware GPU wants the opposite):
 *
 * - **row** (software adapters): one invocation per row, a serial loop over
 *   the row with vec4 loads, no workgroup memory and no barrier. Lavapipe
 *   runs a workgroup's invocations as 8-wide SIMD fibres and every barrier
 *   is a fibre switch, so a tree reduction in workgroup memory is 6–22×
 *   slower there. Needs rows of whole vec4s (C a multiple of 4).
 * - **workgroup** (hardware GPUs): one workgroup per row, a tree reduction
 *   in workgroup memory, any C.
 *
 * Elementwise kernels come as `scalar` (one f32 per invocation), `vec4` and
 * `vec4x4` (four vec4 per invocation: 3–4× faster than scalar on lavapipe);
 * column reductions as serial sums over long blocks of vec4 columns
 * (software) or short blocks of scalar columns (hardware).
 *
 * @module
 */

import type { BufferRange, Gpu, Tensor } from "../gpu/runtime.ts";
import {
  bucket,
  chooseVariant,
  measureVariants,
  type Tunable,
  type Workload,
} from "../gpu/tune.ts";
import { bindRows, rowPieces } from "./_shapes.ts";

/** A row op's call: `rows` rows of `cols` values. */
export interface RowShape {
  rows: number;
  cols: number;
}

/** An elementwise op's call: `n` values, and whether they come in whole vec4s. */
export interface ElementShape {
  n: number;
  /** Every row (or piece) starts on a multiple of 4 values and n is one too. */
  vec4: boolean;
}

/** Row ops with fewer rows than this are not measured (sampling one token, tiny tests). */
export const TUNE_MIN_ROWS = 16;
/** Elementwise calls with fewer values than this are not measured. */
export const TUNE_MIN_ELEMENTS = 4096;

/** Why a vec4 design cannot take rows of `cols` values, or null. */
export function vec4Unsupported(cols: number): string | null {
  return cols % 4 === 0 ? null : `needs rows of a multiple of 4 values, got ${cols}`;
}

/**
 * The shape class of a row op's call: rows and columns rounded up to a
 * power of 4, and whether rows are whole vec4s (which decides what can run).
 *
 * @example
 * ```ts
 * import { rowClass } from "./_tuned.ts";
 * if (rowClass({ rows: 768, cols: 128 }) !== "r1024 c256 v4") throw new Error();
 * if (rowClass({ rows: 3, cols: 128 }) !== null) throw new Error();
 * ```
 */
export function rowClass(s: RowShape): string | null {
  if (s.rows < TUNE_MIN_ROWS || s.cols === 0) return null;
  return `r${bucket(s.rows)} c${bucket(s.cols)} ${s.cols % 4 === 0 ? "v4" : "v1"}`;
}

/**
 * The shape class of an elementwise call: its size rounded up to a power of
 * 4, and whether it runs in vec4s.
 *
 * @example
 * ```ts
 * import { elementClass } from "./_tuned.ts";
 * if (elementClass({ n: 131072, vec4: true }) !== "n262144 v4") throw new Error();
 * ```
 */
export function elementClass(s: ElementShape): string | null {
  if (s.n < TUNE_MIN_ELEMENTS) return null;
  return `n${bucket(s.n)} ${s.vec4 ? "v4" : "v1"}`;
}

/** What an op gives {@linkcode tunableOp}. */
export interface TunableOpSpec<S> {
  op: string;
  version: number;
  variants: readonly string[];
  unsupported(gpu: Gpu, variant: string, shape: S): string | null;
  shapeClass(shape: S): string | null;
  fallback(gpu: Gpu, shape: S): string;
  /** Run `variant` at small awkward sizes against the float64 reference: null or why not. */
  validate(gpu: Gpu, variant: string): Promise<string | null>;
  /** Operands at (about) `shape`'s size, allocated at once. */
  workload(gpu: Gpu, shape: S): Workload;
  /** Calls per timed round (tiny ops: several, to rise above the timer's noise). */
  callsPerRound?: number;
}

/** An op's {@linkcode Tunable}, measured the common way (`measureVariants`). */
export function tunableOp<S>(spec: TunableOpSpec<S>): Tunable<S> {
  return {
    op: spec.op,
    version: spec.version,
    variants: spec.variants,
    unsupported: spec.unsupported,
    shapeClass: (_gpu, s) => spec.shapeClass(s),
    fallback: spec.fallback,
    measure(gpu, shape, candidates = spec.variants) {
      const unsupported: Record<string, string> = {};
      for (const v of candidates) {
        const why = spec.unsupported(gpu, v, shape);
        if (why) unsupported[v] = `cannot run here: ${why}`;
      }
      return measureVariants(gpu, {
        op: spec.op,
        version: spec.version,
        candidates,
        unsupported,
        validate: (v) => spec.validate(gpu, v),
        workload: () => spec.workload(gpu, shape),
        callsPerRound: spec.callsPerRound ?? 4,
      });
    },
  };
}

/**
 * Compare a result with its float64 reference (`|got − want| ≤ atol + rtol·|want|`):
 * null when close, else a message naming the first bad element.
 */
export function mismatch(
  what: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: { atol: number; rtol: number },
): string | null {
  if (got.length !== want.length) return `${what}: ${got.length} values, expected ${want.length}`;
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol.atol + tol.rtol * Math.abs(want[i]))) {
      return `wrong result for ${what}: element ${i} is ${got[i]}, expected ${want[i]}`;
    }
  }
  return null;
}

/** Shapes every row op's variants are validated at (awkward row counts; C a multiple of 4 or not). */
export const CHECK_ROWS: readonly RowShape[] = [
  { rows: 1, cols: 4 },
  { rows: 7, cols: 68 },
  { rows: 70, cols: 12 },
  { rows: 5, cols: 63 },
];

/** The check shapes a variant can run (vec4 designs skip C not a multiple of 4). */
export function checkRows(vec4Only: boolean): RowShape[] {
  return CHECK_ROWS.filter((s) => !vec4Only || s.cols % 4 === 0);
}

/** The elementwise designs: one f32, one vec4 or four vec4 per invocation. */
export const ELEMENT_VARIANTS = ["scalar", "vec4", "vec4x4"] as const;

/** What an elementwise variant's name says. */
export interface ElementDesign {
  /** vec4 lanes (sizes and rows must be whole vec4s). */
  vec4: boolean;
  /** Lanes per invocation (strided by the workgroup size, so loads stay contiguous). */
  per: number;
  /** Invocations per workgroup. */
  wg: number;
}

/** The design a variant name stands for. @throws {RangeError} naming the known ones */
export function elementDesign(variant: string): ElementDesign {
  switch (variant) {
    case "scalar":
      return { vec4: false, per: 1, wg: 256 };
    case "vec4":
      return { vec4: true, per: 1, wg: 256 };
    case "vec4x4":
      return { vec4: true, per: 4, wg: 256 };
  }
  throw new RangeError(
    `Unknown elementwise variant "${variant}" (known: ${ELEMENT_VARIANTS.join(", ")})`,
  );
}

/** The slots of a kernel with `lanes` (`perInvocation`, `workgroupSize`) for a design. */
export function laneSlots(d: ElementDesign): Record<string, string | number> {
  return { perInvocation: d.per, workgroupSize: d.wg };
}

/** {@linkcode laneSlots} and the lane type `vecType` (f32 or vec4f), for kernels typed by a slot. */
export function elementSlots(d: ElementDesign): Record<string, string | number> {
  return { ...laneSlots(d), vecType: d.vec4 ? "vec4f" : "f32" };
}

/** Workgroups covering `lanes` lanes with design `d`. */
export function elementWorkgroups(lanes: number, d: ElementDesign): number {
  return Math.ceil(lanes / (d.wg * d.per));
}

/**
 * The elementwise variant without tuning: four vec4 per invocation on a CPU
 * (3–4× faster than scalar on lavapipe), one vec4 on a GPU; scalar when the
 * values do not come in whole vec4s.
 */
export function defaultElementVariant(gpu: Gpu, vec4: boolean): string {
  if (!vec4) return "scalar";
  return gpu.info.software ? "vec4x4" : "vec4";
}

/** Why an elementwise variant cannot run a call, or null. */
export function elementUnsupported(variant: string, vec4: boolean): string | null {
  return elementDesign(variant).vec4 && !vec4
    ? "needs sizes and rows of a multiple of 4 values"
    : null;
}

/** Shapes elementwise variants are validated at: `[rows, C]`, C a multiple of 4 or not. */
export function checkElements(vec4Only: boolean): RowShape[] {
  const shapes = [
    { rows: 1, cols: 4 },
    { rows: 3, cols: 700 },
    { rows: 700, cols: 12 },
    { rows: 2000, cols: 36 },
    { rows: 9, cols: 63 },
    { rows: 1, cols: 7 },
  ];
  return shapes.filter((s) => !vec4Only || s.cols % 4 === 0);
}

/** One piece of a flat elementwise call: where it starts in lanes, and its bound ranges. */
export interface LanePiece {
  /** Lanes in the piece. */
  lanes: number;
  /** Bind the piece of `t` (laid out like the call's tensors): the range and its first lane. */
  bind(t: Tensor): { range: BufferRange; base: number };
}

/**
 * Cut a flat call of `n` values into pieces that fit a storage binding of
 * `maxBytes`, in lanes of design `d` (vec4 pieces start on whole vec4s).
 */
export function lanePieces(
  op: string,
  n: number,
  d: ElementDesign,
  maxBytes: number,
  alignment: number,
): LanePiece[] {
  const w = d.vec4 ? 4 : 1;
  return rowPieces(op, n / w, 4 * w, maxBytes, alignment).map(({ start, count }) => ({
    lanes: count,
    bind(t: Tensor) {
      const b = bindRows(t, start, count, w, alignment);
      return { range: b.range, base: b.base / w };
    },
  }));
}

/** The two designs of the row ops that read rows serially in scalars (softmax, cross-entropy). */
export const ROW_VARIANTS = ["row", "workgroup"] as const;

/** Why a row-op variant is not one of {@linkcode ROW_VARIANTS}, or null. */
export function rowVariantUnknown(variant: string): string | null {
  return (ROW_VARIANTS as readonly string[]).includes(variant)
    ? null
    : `is unknown (known: ${ROW_VARIANTS.join(", ")})`;
}

/** The row design without tuning: `row` on a CPU, `workgroup` on a GPU. */
export function defaultRowVariant(gpu: Gpu): string {
  return gpu.info.software ? "row" : "workgroup";
}

/** What an op adds to a family's {@linkcode Tunable}: its name, validation and workload. */
export type OpChecks<S> = Pick<TunableOpSpec<S>, "validate" | "workload" | "callsPerRound"> & {
  /** Bump when the op's variants change (default 1). */
  version?: number;
};

/** An elementwise op's {@linkcode Tunable}: the designs of {@linkcode ELEMENT_VARIANTS}. */
export function elementTunable(op: string, checks: OpChecks<ElementShape>): Tunable<ElementShape> {
  return tunableOp<ElementShape>({
    op,
    version: checks.version ?? 1,
    variants: ELEMENT_VARIANTS,
    unsupported: (_gpu, v, s) => elementUnsupported(v, s.vec4),
    shapeClass: elementClass,
    fallback: (gpu, s) => defaultElementVariant(gpu, s.vec4),
    ...checks,
  });
}

/** A serial-row op's {@linkcode Tunable} (softmax, cross-entropy): {@linkcode ROW_VARIANTS}. */
export function rowTunable(op: string, checks: OpChecks<RowShape>): Tunable<RowShape> {
  return tunableOp<RowShape>({
    op,
    version: checks.version ?? 1,
    variants: ROW_VARIANTS,
    unsupported: (_gpu, v) => rowVariantUnknown(v),
    shapeClass: rowClass,
    fallback: (gpu) => defaultRowVariant(gpu),
    ...checks,
  });
}

/**
 * The variant a call runs: `forced` (tests, benches) or the tuned choice;
 * a RangeError naming the op when it cannot run the call.
 */
export async function resolveVariant<S>(
  gpu: Gpu,
  op: string,
  t: Tunable<S>,
  shape: S,
  forced?: string,
): Promise<string> {
  const variant = forced ?? await chooseVariant(gpu, t, shape);
  const why = t.unsupported(gpu, variant, shape);
  if (why) throw new RangeError(`${op}: variant ${variant} ${why}`);
  return variant;
}
