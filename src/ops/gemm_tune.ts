/**
 * The GEMM's side of the tuner (`src/gpu/tune.ts`): its variants as a
 * {@linkcode Tunable}, its shape classes and how they are measured.
 *
 * At the first product of a (kind, shape class) on an adapter, the variants
 * that can run there are validated against a float64 reference at a small
 * awkward size (a variant that fails is excluded and reported), screened by
 * one product at a small size, and the survivors timed at the product's
 * size capped to a few hundred MFLOP (timestamp queries; wall time without
 * them); the fastest is kept and saved like every op's choice.
 * `TOST_TUNE=off` uses a fixed default per adapter kind.
 *
 * All variants sum in the same order, so the choice changes speed only,
 * never the results (see `gemm.ts`).
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import {
  bucket,
  chooseVariant,
  testValues,
  type Tunable,
  type TuneChoice,
  validateOnce,
} from "../gpu/tune.ts";
import {
  gemm,
  GEMM_VARIANTS,
  type GemmKind,
  gemmKind,
  type GemmOperand,
  type GemmOptions,
  type GemmProduct,
  type GemmVariant,
  gemmVariant,
} from "./gemm.ts";
import { linearForwardReference } from "./linear_reference.ts";

/** Bump when the variants change in a way that invalidates saved choices. */
export const GEMM_TUNE_VERSION = 2;

/** A product's size as the tuner sees it. */
export interface GemmShape {
  kind: GemmKind;
  m: number;
  n: number;
  k: number;
}

/**
 * The shape class of a product: its kind and each side rounded up to a power
 * of 4 (one or two rows are a class of their own: sampling a token).
 *
 * @example
 * ```ts
 * import { shapeClass } from "./gemm_tune.ts";
 * if (shapeClass("nt", 4096, 1152, 384) !== "nt m4096 n4096 k1024") throw new Error();
 * ```
 */
export function shapeClass(kind: GemmKind, m: number, n: number, k: number): string {
  const ms = m <= 2 ? "m2" : `m${bucket(m)}`;
  return `${kind} ${ms} n${bucket(n)} k${bucket(k)}`;
}

/** Products this small are not worth measuring: the default serves them. */
const TUNE_MIN_MACS = 1 << 16;

/**
 * The variant used without tuning: on a software adapter the texture kernel
 * (simple for tiny or one-row products), on hardware the tile kernel.
 */
export function defaultVariant(gpu: Gpu, m: number, n: number, k: number): GemmVariant {
  if (m <= 2) return gemmVariant("simple-1x4");
  if (gpu.info.software) {
    if (m * n * k < TUNE_MIN_MACS) return gemmVariant("simple-4x4");
    const tex = gemmVariant("texture-16x16");
    return tex.unsupported(gpu, "nt") ? gemmVariant("simple-4x4") : tex;
  }
  return gemmVariant("tile-64x64");
}

/** The variants worth timing on this adapter for this product. */
export function candidates(gpu: Gpu, kind: GemmKind, m: number): GemmVariant[] {
  const names = m <= 2
    ? ["simple-1x4", "simple-4x4", "texture-8x8", "tile-64x64-4x4"]
    : gpu.info.software
    // Tile designs are slow on a CPU (PERF.md); one stays to show it.
    ? ["texture-16x16", "texture-8x16", "texture-8x8", "simple-4x4", "tile-64x64"]
    : ["tile-64x64", "tile-128x64", "tile-64x64-4x4", "texture-8x8", "simple-4x4"];
  return names.map(gemmVariant).filter((v) => v.unsupported(gpu, kind) === null);
}

/** The GEMM as a {@linkcode Tunable}: its variants, shape classes and measurement. */
export const GEMM_TUNABLE: Tunable<GemmShape> = {
  op: "gemm",
  version: GEMM_TUNE_VERSION,
  variants: [...GEMM_VARIANTS.keys()],
  unsupported: (gpu, name, s) => gemmVariant(name).unsupported(gpu, s.kind),
  shapeClass: (_gpu, s) =>
    s.m * s.n * s.k < TUNE_MIN_MACS ? null : shapeClass(s.kind, s.m, s.n, s.k),
  fallback: (gpu, s) => defaultVariant(gpu, s.m, s.n, s.k).name,
  measure: (gpu, s, names) =>
    tuneShape(gpu, s.kind, s.m, s.n, s.k, names && names.map((n) => gemmVariant(n))),
};

/**
 * The variant for a product: the tuned choice of its shape class on this
 * adapter (tuning it now if nobody has), or the default when tuning is off.
 */
export async function chooseGemmVariant(
  gpu: Gpu,
  kind: GemmKind,
  m: number,
  n: number,
  k: number,
): Promise<GemmVariant> {
  return gemmVariant(await chooseVariant(gpu, GEMM_TUNABLE, { kind, m, n, k }));
}

/**
 * Record `C = A·Bᵀ` (with `prod`'s epilogue) using `options.variant` or the
 * chosen variant for its shape class.
 */
export async function gemmAuto(
  gpu: Gpu,
  prod: GemmProduct,
  options: GemmOptions & { variant?: string } = {},
  op = "gemm",
): Promise<GemmVariant> {
  const variant = options.variant
    ? gemmVariant(options.variant)
    : await chooseGemmVariant(gpu, gemmKind(prod), prod.m, prod.n, prod.k);
  await gemm(gpu, prod, variant, options, op);
  return variant;
}

/** `n` deterministic values in [-1, 1), for measuring (see `testValues`). */
export const gemmTestValues = testValues;

/** Operands of a `kind` product of `[m, n, k]` in fresh tensors. */
function operands(
  gpu: Gpu,
  kind: GemmKind,
  m: number,
  n: number,
  k: number,
): { a: GemmOperand; b: GemmOperand; ha: Float32Array; hb: Float32Array } {
  const ha = gemmTestValues(m * k, 1);
  const hb = gemmTestValues(n * k, 2);
  const aDepth = kind[0] === "n";
  const bDepth = kind[1] === "t";
  return {
    a: {
      tensor: gpu.upload(ha, [m * k], "tune.a"),
      layout: aDepth ? "depth" : "rows",
      ld: aDepth ? k : m,
    },
    b: {
      tensor: gpu.upload(hb, [n * k], "tune.b"),
      layout: bDepth ? "depth" : "rows",
      ld: bDepth ? k : n,
    },
    ha,
    hb,
  };
}

/** An operand as `rows × k` row-major values (depth layout), copied from any layout. */
function depthMajor(data: Float32Array, o: GemmOperand, rows: number, k: number): Float32Array {
  if (o.layout === "depth") return data;
  const out = new Float32Array(rows * k);
  for (let r = 0; r < k; r++) for (let i = 0; i < rows; i++) out[i * k + r] = data[r * o.ld + i];
  return out;
}

const CHECK_SHAPE = [37, 29, 19] as const;

/**
 * Check a variant's `kind` product against the float64 reference at a small
 * awkward size (once per device): null when it passes, else why not.
 */
function validate(gpu: Gpu, kind: GemmKind, v: GemmVariant): Promise<string | null> {
  return validateOnce(gpu, "gemm", `${kind} ${v.name}`, async () => {
    const [m, n, k] = CHECK_SHAPE;
    const { a, b, ha, hb } = operands(gpu, kind, m, n, k);
    const c = gpu.empty([m, n], "f32", "tune.check");
    try {
      await gemm(gpu, { a, b, c, m, n, k }, v);
      const ref = linearForwardReference(depthMajor(ha, a, m, k), depthMajor(hb, b, n, k), null, {
        rows: m,
        inFeatures: k,
        outFeatures: n,
      });
      const g = await c.read();
      for (let e = 0; e < ref.length; e++) {
        if (!(Math.abs(g[e] - ref[e]) <= 1e-5 + 1e-5 * Math.abs(ref[e]))) {
          return `wrong result at ${m}×${n}×${k}: element ${e} is ${g[e]}, expected ${ref[e]}`;
        }
      }
      return null;
    } finally {
      a.tensor.destroy();
      b.tensor.destroy();
      c.destroy();
    }
  });
}

/**
 * The size a product of `[m, n, k]` is timed at: its own, each side capped
 * (m 256, n 1024, k 2048), then halved until it has at most `macs`
 * multiply-adds: k first (down to 64), then the longer of m and n (down to
 * 16 and 64), so that the output keeps enough blocks to fill the device.
 *
 * @example
 * ```ts
 * import { tuningShape } from "./gemm_tune.ts";
 * if (tuningShape(4096, 1152, 384, 1 << 26).join() !== "256,1024,192") throw new Error();
 * ```
 */
export function tuningShape(
  m: number,
  n: number,
  k: number,
  macs: number,
): [number, number, number] {
  const s: [number, number, number] = [Math.min(m, 256), Math.min(n, 1024), Math.min(k, 2048)];
  const floor = [Math.min(m, 16), Math.min(n, 64), Math.min(k, 64)];
  while (s[0] * s[1] * s[2] > macs) {
    const d = s[2] > floor[2]
      ? 2
      : [0, 1].filter((x) => s[x] > floor[x]).sort((x, y) => s[y] - s[x])[0];
    if (d === undefined) break;
    s[d] = Math.max(floor[d], Math.ceil(s[d] / 2));
  }
  return s;
}

/** Screening size: slow variants are dropped after one product this big (~8 MFLOP). */
const SCREEN_MACS = 1 << 22;
/** Final timing size (~130 MFLOP: milliseconds for a fast variant on lavapipe). */
const FINAL_MACS = 1 << 26;
/** Variants slower than this factor times the best at screening are not timed further. */
const SCREEN_FACTOR = 3;
const FINAL_REPEATS = 3;

/** Time `variants` at `shape` (one untimed round, then `repeats`): the fastest time of each, ms. */
async function timeAt(
  gpu: Gpu,
  kind: GemmKind,
  [m, n, k]: [number, number, number],
  variants: GemmVariant[],
  repeats: number,
): Promise<number[]> {
  const { a, b } = operands(gpu, kind, m, n, k);
  const c = gpu.empty([m, n], "f32", "tune.c");
  try {
    const prod: GemmProduct = { a, b, c, m, n, k };
    for (const v of variants) await gemm(gpu, prod, v); // pipelines compile, caches fill
    const times = await gpu.profile(variants.map((v) => () => gemm(gpu, prod, v)), repeats);
    // Other work on the machine only ever slows a run down: the fastest is the fairest.
    return times.map((t) => Math.min(...t));
  } finally {
    a.tensor.destroy();
    b.tensor.destroy();
    c.destroy();
  }
}

/**
 * Validate and time the candidates (by default {@linkcode candidates}) for a
 * `kind` product of about `[m, n, k]` on `gpu` and return the measurement
 * (nothing is saved): one screening product at a small size drops the slow
 * designs, the rest are timed {@linkcode FINAL_REPEATS} times at a larger
 * size, interleaved.
 *
 * @throws {Error} when no candidate passes validation
 */
export async function tuneShape(
  gpu: Gpu,
  kind: GemmKind,
  m: number,
  n: number,
  k: number,
  all: GemmVariant[] = candidates(gpu, kind, m),
): Promise<TuneChoice> {
  const t0 = performance.now();
  const rejected: Record<string, string> = {};
  for (const name of GEMM_VARIANTS.keys()) {
    const why = gemmVariant(name).unsupported(gpu, kind);
    if (why) rejected[name] = `cannot run here: ${why}`;
  }
  const checks: (string | null)[] = [];
  for (const v of all) checks.push(await validate(gpu, kind, v));
  let ok = all.filter((v, i) => {
    if (checks[i]) rejected[v.name] = checks[i]!;
    return !checks[i];
  });
  if (ok.length === 0) {
    throw new Error(
      `No GEMM variant passed validation for ${kind} products on ${gpu.info.name}: ${
        JSON.stringify(rejected)
      }`,
    );
  }
  let ms: Record<string, number> = {};
  let screen: TuneChoice["screen"] = null;
  const screenShape = tuningShape(m, n, k, SCREEN_MACS);
  const finalShape = tuningShape(m, n, k, FINAL_MACS);
  let shape = screenShape;
  if (ok.length > 1) {
    const times = await timeAt(gpu, kind, screenShape, ok, 1);
    const fastest = Math.min(...times);
    screen = { shape: screenShape, ms: Object.fromEntries(ok.map((v, i) => [v.name, times[i]])) };
    ms = { ...screen.ms };
    ok = ok.filter((_, i) => times[i] <= SCREEN_FACTOR * fastest);
    if (ok.length > 1 && finalShape.join() !== screenShape.join()) {
      shape = finalShape;
      const final = await timeAt(gpu, kind, finalShape, ok, FINAL_REPEATS);
      ms = Object.fromEntries(ok.map((v, i) => [v.name, final[i]]));
    }
  }
  const best = ok.reduce((x, y) => ((ms[y.name] ?? 0) < (ms[x.name] ?? 0) ? y : x));
  return {
    variant: best.name,
    version: GEMM_TUNE_VERSION,
    shape,
    ms: Object.fromEntries(ok.map((v) => [v.name, ms[v.name]]).filter(([, t]) => t !== undefined)),
    screen,
    rejected,
    spent_ms: performance.now() - t0,
    clock: gpu.hasTimestamps ? "timestamps" : "wall",
  };
}
