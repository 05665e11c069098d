/**
 * Choosing a GEMM variant per adapter by measuring.
 *
 * At the first product of a (kind, shape class) on an adapter, the variants
 * that can run there are validated against a float64 reference at a small
 * awkward size (a variant that fails is excluded and reported), then timed at
 * the product's size capped to a few hundred MFLOP (timestamp queries; wall
 * time without them), and the fastest is kept: in memory, and in a
 * {@linkcode TuneStore} keyed by the adapter's description so later runs skip
 * the measurement. The core has only an in-memory store (it runs in a
 * browser too); the command line installs a file store
 * (`src/cli/_tune_file.ts`). `TOST_TUNE=off` (or {@linkcode setTuneMode})
 * skips tuning and uses a fixed default per adapter kind.
 *
 * All variants sum in the same order, so the choice changes speed only,
 * never the results (see `gemm.ts`).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { AdapterDescription } from "../gpu/device.ts";
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
export const TUNE_VERSION = 1;

/** One tuned shape class: the chosen variant and what the measurement saw. */
export interface TuneChoice {
  /** The chosen variant's name. */
  variant: string;
  /** The size of the final timing, `[m, n, k]`. */
  shape: [number, number, number];
  /** Fastest of the final timings of each variant that passed screening, ms. */
  ms: Record<string, number>;
  /** The screening product of every valid variant (null when only one could run). */
  screen: { shape: [number, number, number]; ms: Record<string, number> } | null;
  /** Variants excluded, with the reason (failed validation, cannot run here). */
  rejected: Record<string, string>;
  /** Wall time the tuning took, ms (compilation included). */
  spent_ms: number;
  /** "timestamps" or "wall" (no timestamp queries on this adapter). */
  clock: "timestamps" | "wall";
}

/** Saved choices of every adapter seen: `adapters[adapterKey][shapeClass]`. */
export interface TuneTable {
  version: number;
  adapters: Record<string, Record<string, TuneChoice>>;
}

/** Where choices persist between runs. */
export interface TuneStore {
  /** Where the choices live, for messages (a path, "memory"). */
  readonly where: string;
  /** The saved table, or null when there is none yet. Throws when it cannot be read. */
  load(): Promise<TuneTable | null>;
  /** Save the table (merging with what others saved meanwhile is the store's business). */
  save(table: TuneTable): Promise<void>;
}

/** A store that keeps choices for this process only (the default). */
export function memoryTuneStore(): TuneStore {
  let saved: TuneTable | null = null;
  return {
    where: "memory",
    load: () => Promise.resolve(saved && structuredClone(saved)),
    save: (t) => {
      saved = structuredClone(t);
      return Promise.resolve();
    },
  };
}

interface TuneState {
  store: TuneStore;
  table: Promise<TuneTable> | null;
  warned: boolean;
}

let state: TuneState = { store: memoryTuneStore(), table: null, warned: false };
let modeOverride: "on" | "off" | null = null;
const chosen = new WeakMap<Gpu, Map<string, Promise<GemmVariant>>>();
const validated = new WeakMap<Gpu, Map<string, string | null>>();

/** Install the store choices are loaded from and saved to (the CLI installs a file). */
export function setTuneStore(store: TuneStore): void {
  state = { store, table: null, warned: false };
}

/** The store in use. */
export function tuneStore(): TuneStore {
  return state.store;
}

/**
 * Force tuning on or off for this process (null: back to `TOST_TUNE`, whose
 * default is on).
 */
export function setTuneMode(mode: "on" | "off" | null): void {
  modeOverride = mode;
}

/** Whether products are tuned: {@linkcode setTuneMode}, else `TOST_TUNE` (on/off). */
export function tuneMode(): "on" | "off" {
  if (modeOverride) return modeOverride;
  // Read through globalThis: the core must also run where there is no Deno.
  const env = (globalThis as { Deno?: { env: { get(k: string): string | undefined } } }).Deno
    ?.env;
  let value: string | undefined;
  try {
    value = env?.get("TOST_TUNE");
  } catch {
    value = undefined; // no env permission: the default
  }
  if (value === undefined || value === "" || value === "on") return "on";
  if (value === "off") return "off";
  throw new RangeError(`TOST_TUNE must be "on" or "off", got "${value}"`);
}

function warnOnce(message: string): void {
  if (state.warned) return;
  state.warned = true;
  console.warn(`warning: ${message}`);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The key saved choices are filed under: the adapter, its driver and the variants' version. */
export function adapterKey(info: AdapterDescription): string {
  const parts = [info.name, info.vendor, info.architecture, info.backend];
  return `${parts.map((p) => p || "-").join(" | ")} | gemm v${TUNE_VERSION}`;
}

function bucket(v: number): number {
  let b = 4;
  while (b < v) b *= 4;
  return b;
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

async function table(): Promise<TuneTable> {
  state.table ??= state.store.load().then(
    (t) => t ?? { version: TUNE_VERSION, adapters: {} },
    (err) => {
      warnOnce(
        `cannot read the GEMM tuning cache (${state.store.where}): ${
          errorText(err)
        }; tuning again in memory`,
      );
      return { version: TUNE_VERSION, adapters: {} };
    },
  );
  return await state.table;
}

/** The saved choices for an adapter (empty when none). */
export async function savedChoices(info: AdapterDescription): Promise<Record<string, TuneChoice>> {
  return (await table()).adapters[adapterKey(info)] ?? {};
}

async function remember(gpu: Gpu, cls: string, choice: TuneChoice): Promise<void> {
  const t = await table();
  const key = adapterKey(gpu.info);
  t.adapters[key] = { ...t.adapters[key], [cls]: choice };
  try {
    await state.store.save(t);
  } catch (err) {
    warnOnce(
      `cannot write the GEMM tuning cache (${state.store.where}): ${
        errorText(err)
      }; keeping choices in memory`,
    );
  }
}

/**
 * The variant for a product: the tuned choice of its shape class on this
 * adapter (tuning it now if nobody has), or the default when tuning is off.
 */
export function chooseVariant(
  gpu: Gpu,
  kind: GemmKind,
  m: number,
  n: number,
  k: number,
): Promise<GemmVariant> {
  if (tuneMode() === "off" || m * n * k < TUNE_MIN_MACS) {
    return Promise.resolve(defaultVariant(gpu, m, n, k));
  }
  const cls = shapeClass(kind, m, n, k);
  let perGpu = chosen.get(gpu);
  if (!perGpu) chosen.set(gpu, perGpu = new Map());
  let v = perGpu.get(cls);
  if (!v) {
    v = (async () => {
      const saved = (await savedChoices(gpu.info))[cls];
      const known = saved && GEMM_VARIANTS.get(saved.variant);
      if (known && known.unsupported(gpu, kind) === null) return known;
      const choice = await tuneShape(gpu, kind, m, n, k);
      await remember(gpu, cls, choice);
      return gemmVariant(choice.variant);
    })();
    perGpu.set(cls, v);
  }
  return v;
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
    : await chooseVariant(gpu, gemmKind(prod), prod.m, prod.n, prod.k);
  await gemm(gpu, prod, variant, options, op);
  return variant;
}

/** `n` deterministic values in [-1, 1) (a linear congruential sequence), for measuring. */
export function gemmTestValues(n: number, seed: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

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
 * Check each variant's `kind` product against the float64 reference at a
 * small awkward size (once per device): null when it passes, else why not.
 */
async function validate(
  gpu: Gpu,
  kind: GemmKind,
  variants: GemmVariant[],
): Promise<Map<string, string | null>> {
  let seen = validated.get(gpu);
  if (!seen) validated.set(gpu, seen = new Map());
  const todo = variants.filter((v) => !seen.has(`${kind} ${v.name}`));
  if (todo.length > 0) {
    const [m, n, k] = CHECK_SHAPE;
    const { a, b, ha, hb } = operands(gpu, kind, m, n, k);
    const outs: (Tensor | string)[] = [];
    try {
      for (const v of todo) {
        const c = gpu.empty([m, n], "f32", "tune.check");
        outs.push(c);
        try {
          await gpu.scoped(() => gemm(gpu, { a, b, c, m, n, k }, v));
        } catch (err) {
          outs[outs.length - 1] = `failed to run: ${errorText(err)}`;
          c.destroy();
        }
      }
      const ref = linearForwardReference(depthMajor(ha, a, m, k), depthMajor(hb, b, n, k), null, {
        rows: m,
        inFeatures: k,
        outFeatures: n,
      });
      const got = await Promise.all(outs.map((o) => typeof o === "string" ? o : o.read()));
      todo.forEach((v, i) => {
        const g = got[i];
        let why: string | null = typeof g === "string" ? g : null;
        if (typeof g !== "string") {
          for (let e = 0; e < ref.length && !why; e++) {
            if (!(Math.abs(g[e] - ref[e]) <= 1e-5 + 1e-5 * Math.abs(ref[e]))) {
              why = `wrong result at ${m}×${n}×${k}: element ${e} is ${g[e]}, expected ${ref[e]}`;
            }
          }
        }
        seen.set(`${kind} ${v.name}`, why);
      });
    } finally {
      a.tensor.destroy();
      b.tensor.destroy();
      for (const o of outs) if (typeof o !== "string") o.destroy();
    }
  }
  return new Map(variants.map((v) => [v.name, seen.get(`${kind} ${v.name}`) ?? null]));
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
  const checks = await validate(gpu, kind, all);
  let ok = all.filter((v) => {
    const why = checks.get(v.name);
    if (why) rejected[v.name] = why;
    return !why;
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
    shape,
    ms: Object.fromEntries(ok.map((v) => [v.name, ms[v.name]]).filter(([, t]) => t !== undefined)),
    screen,
    rejected,
    spent_ms: performance.now() - t0,
    clock: gpu.hasTimestamps ? "timestamps" : "wall",
  };
}

/**
 * Tune one product shape now (even when a choice is saved or tuning is off),
 * remember and save the choice; returns it with its shape class.
 */
export async function retune(
  gpu: Gpu,
  kind: GemmKind,
  m: number,
  n: number,
  k: number,
): Promise<{ shapeClass: string; choice: TuneChoice }> {
  const cls = shapeClass(kind, m, n, k);
  const choice = await tuneShape(gpu, kind, m, n, k);
  await remember(gpu, cls, choice);
  let perGpu = chosen.get(gpu);
  if (!perGpu) chosen.set(gpu, perGpu = new Map());
  perGpu.set(cls, Promise.resolve(gemmVariant(choice.variant)));
  return { shapeClass: cls, choice };
}
