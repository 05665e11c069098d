/**
 * The one tuner of every op: which kernel variant runs an op on this
 * adapter, chosen by measuring.
 *
 * An op that has several kernel designs (the GEMM's texture, tile and
 * simple kernels; the row ops' one-invocation-per-row and
 * one-workgroup-per-row kernels; scalar and vec4 elementwise kernels)
 * describes them as a {@linkcode Tunable}. At the op's first use on an
 * adapter for a *shape class*, {@linkcode chooseVariant} looks for a saved
 * choice; without one it validates every variant that can run there
 * against the float64 reference at small awkward sizes (a variant that
 * fails is excluded and reported), times the rest interleaved at the
 * op's size (timestamp queries; wall time without them), keeps the
 * fastest in memory and saves it in the {@linkcode TuneStore}, keyed by the
 * adapter's description, so later runs skip the measurement.
 *
 * - The core keeps choices in memory only (it runs in a browser too); the
 *   command line installs a file store (`src/cli/_tune_file.ts`), one JSON
 *   file holding every op's choices for every adapter seen.
 * - `TOST_TUNE=off` (or {@linkcode setTuneMode}) skips tuning: each op uses
 *   its fixed default for the adapter kind (tests run this way).
 * - `tost tune` re-measures every tuned op at the models' shapes; `tost
 *   info` lists the saved choices.
 *
 * What a change of variant may change: the GEMM variants sum in the same
 * order and give the same bits. The other ops' variants (row ops,
 * elementwise, reductions) may round differently in the last bits (a
 * serial sum over a row against a tree of partial sums); each is checked
 * against the float64 reference, and each is deterministic (the same
 * variant on the same adapter gives the same bits every run). So a run
 * repeats bit for bit as long as it uses the same choices: the same cache.
 * A training run pins the choices it starts with (`src/cli/_tune_file.ts`,
 * `pinnedTuneStore`) so that `--resume` continues with them even if the
 * global cache was retuned in between.
 *
 * @module
 */

import type { Gpu } from "./runtime.ts";
import type { AdapterDescription } from "./device.ts";

/** Version of the cache's layout (the ops version their own choices). */
export const TUNE_FORMAT = 2;

/** One tuned shape class of an op: the chosen variant and what the measurement saw. */
export interface TuneChoice {
  /** The chosen variant's name. */
  variant: string;
  /** The op's {@linkcode Tunable.version} the choice was measured with. */
  version: number;
  /** The size of the final timing, in the op's own terms (GEMM `[m, n, k]`, rows `[rows, cols]`). */
  shape: number[];
  /** Fastest of the final timings of each variant timed, ms. */
  ms: Record<string, number>;
  /** A first, smaller timing that dropped slow variants (null when there was none). */
  screen: { shape: number[]; ms: Record<string, number> } | null;
  /** Variants excluded, with the reason (failed validation, cannot run here). */
  rejected: Record<string, string>;
  /** Wall time the tuning took, ms (compilation included). */
  spent_ms: number;
  /** "timestamps" or "wall" (no timestamp queries on this adapter). */
  clock: "timestamps" | "wall";
}

/** Saved choices of every adapter seen: `adapters[adapterKey]["<op> <shape class>"]`. */
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

/**
 * An op with several kernel variants, chosen per adapter and shape class.
 * `S` is the op's description of a call's size.
 */
export interface Tunable<S> {
  /** The op's name in the cache, in `tost tune` and `tost info` (e.g. "layer_norm"). */
  readonly op: string;
  /** Bump when the variants change so that saved choices are measured again. */
  readonly version: number;
  /** Every variant's name. */
  readonly variants: readonly string[];
  /** Why `variant` cannot run `shape` on `gpu` (a device limit, an alignment), or null. */
  unsupported(gpu: Gpu, variant: string, shape: S): string | null;
  /**
   * The shape class within the op (calls of one class share a choice), or
   * null for calls too small to be worth measuring (the fallback serves them).
   * Whether a variant can run must be the same for every shape of a class.
   */
  shapeClass(gpu: Gpu, shape: S): string | null;
  /** The variant used without tuning (and for unclassed shapes). */
  fallback(gpu: Gpu, shape: S): string;
  /**
   * Validate and time the variants (all that can run, or `candidates`) for
   * `shape` on `gpu` and return the measurement; nothing is saved.
   *
   * @throws {Error} when no variant passes validation
   */
  measure(gpu: Gpu, shape: S, candidates?: readonly string[]): Promise<TuneChoice>;
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
/** Per device: the choice of every `"<op> <class>"` asked for so far. */
const chosen = new WeakMap<Gpu, Map<string, Promise<string>>>();
/** Per device: validation results by `"<op> <variant>"` (null: passed). */
const validated = new WeakMap<Gpu, Map<string, Promise<string | null>>>();

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

/** Whether ops are tuned: {@linkcode setTuneMode}, else `TOST_TUNE` (on/off). */
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

/** An error's message (or the thrown value as text). */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The key saved choices are filed under: the adapter, its driver and backend. */
export function adapterKey(info: AdapterDescription): string {
  const parts = [info.name, info.vendor, info.architecture, info.backend];
  return `${parts.map((p) => p || "-").join(" | ")} | tune v${TUNE_FORMAT}`;
}

/** The key of a shape class in the table: `"<op> <class>"`. */
export function choiceKey(op: string, shapeClass: string): string {
  return `${op} ${shapeClass}`;
}

/** The smallest power of 4 (at least 4) that is ≥ v: how shape classes round sizes. */
export function bucket(v: number): number {
  let b = 4;
  while (b < v) b *= 4;
  return b;
}

async function table(): Promise<TuneTable> {
  state.table ??= state.store.load().then(
    (t) => t ?? { version: TUNE_FORMAT, adapters: {} },
    (err) => {
      warnOnce(
        `cannot read the tuning cache (${state.store.where}): ${
          errorText(err)
        }; tuning again in memory`,
      );
      return { version: TUNE_FORMAT, adapters: {} };
    },
  );
  return await state.table;
}

/** The saved choices for an adapter, by `"<op> <class>"` (empty when none). */
export async function savedChoices(info: AdapterDescription): Promise<Record<string, TuneChoice>> {
  return (await table()).adapters[adapterKey(info)] ?? {};
}

async function remember(gpu: Gpu, key: string, choice: TuneChoice): Promise<void> {
  const t = await table();
  const adapter = adapterKey(gpu.info);
  t.adapters[adapter] = { ...t.adapters[adapter], [key]: choice };
  try {
    await state.store.save(t);
  } catch (err) {
    warnOnce(
      `cannot write the tuning cache (${state.store.where}): ${
        errorText(err)
      }; keeping choices in memory`,
    );
  }
}

function memo(gpu: Gpu): Map<string, Promise<string>> {
  let perGpu = chosen.get(gpu);
  if (!perGpu) chosen.set(gpu, perGpu = new Map());
  return perGpu;
}

/**
 * The variant of `t` for a call of `shape`: the choice of its shape class on
 * this adapter (saved, or measured now if nobody has), or the fallback when
 * tuning is off, the shape is too small to classify, or the chosen variant
 * cannot run this particular call.
 */
export async function chooseVariant<S>(gpu: Gpu, t: Tunable<S>, shape: S): Promise<string> {
  const fallback = () => t.fallback(gpu, shape);
  if (tuneMode() === "off") return fallback();
  const cls = t.shapeClass(gpu, shape);
  if (cls === null) return fallback();
  const key = choiceKey(t.op, cls);
  const perGpu = memo(gpu);
  const memoKey = `${key} @${t.version}`;
  let v = perGpu.get(memoKey);
  if (!v) {
    v = (async () => {
      const saved = (await savedChoices(gpu.info))[key];
      if (
        saved && saved.version === t.version && t.variants.includes(saved.variant) &&
        t.unsupported(gpu, saved.variant, shape) === null
      ) {
        return saved.variant;
      }
      const choice = await t.measure(gpu, shape);
      await remember(gpu, key, choice);
      return choice.variant;
    })();
    perGpu.set(memoKey, v);
    v.catch(() => perGpu.delete(memoKey));
  }
  const name = await v;
  return t.unsupported(gpu, name, shape) === null ? name : fallback();
}

/**
 * Measure `t` for `shape` now (even when a choice is saved or tuning is
 * off), remember and save the choice; returns it with its shape class
 * (null for shapes the op does not classify: nothing is saved then).
 */
export async function retune<S>(
  gpu: Gpu,
  t: Tunable<S>,
  shape: S,
): Promise<{ shapeClass: string | null; choice: TuneChoice }> {
  const cls = t.shapeClass(gpu, shape);
  const choice = await t.measure(gpu, shape);
  if (cls !== null) {
    const key = choiceKey(t.op, cls);
    await remember(gpu, key, choice);
    memo(gpu).set(`${key} @${t.version}`, Promise.resolve(choice.variant));
  }
  return { shapeClass: cls, choice };
}

/**
 * Validate a variant once per device: `check` runs it against the float64
 * reference and returns null when it passes, else why not (a throw counts as
 * a failure). Later calls return the first result.
 */
export function validateOnce(
  gpu: Gpu,
  op: string,
  variant: string,
  check: () => Promise<string | null>,
): Promise<string | null> {
  let seen = validated.get(gpu);
  if (!seen) validated.set(gpu, seen = new Map());
  const key = `${op} ${variant}`;
  let r = seen.get(key);
  if (!r) {
    r = gpu.scoped(check).catch((err) => `failed to run: ${errorText(err)}`);
    seen.set(key, r);
  }
  return r;
}

/** What {@linkcode measureVariants} times: one call of the op, by variant. */
export interface Workload {
  /** The call's size as saved in the choice. */
  shape: number[];
  /** Record one call of the op with `variant` (dispatches only). */
  run(variant: string): Promise<void>;
  /** Free the workload's tensors. */
  destroy(): void;
}

/** How {@linkcode measureVariants} measures one op. */
export interface MeasureSpec {
  /** The op's name, for messages and validation records. */
  op: string;
  version: number;
  /** Variants to consider; those in `unsupported` are not run. */
  candidates: readonly string[];
  /** Variants that cannot run here, with the reason. */
  unsupported: Record<string, string>;
  /** Run one variant against the float64 reference: null when it passes, else why not. */
  validate(variant: string): Promise<string | null>;
  /** Operands at the size to time (allocated at once, outside any arena). */
  workload(): Workload;
  /** Timed rounds (interleaved A B A B …); the fastest of each variant counts. Default 5. */
  repeats?: number;
  /** Calls recorded per timed round, to lift tiny ops above the timer's noise. Default 1. */
  callsPerRound?: number;
}

/**
 * The tuning recipe of the ops other than the GEMM: validate every candidate
 * (once per device), then time the valid ones interleaved at the workload's
 * size, one untimed round first (compilation), and pick the fastest.
 *
 * @throws {Error} when no candidate passes validation
 */
export async function measureVariants(gpu: Gpu, spec: MeasureSpec): Promise<TuneChoice> {
  const t0 = performance.now();
  const rejected: Record<string, string> = { ...spec.unsupported };
  const runnable = spec.candidates.filter((v) => !(v in spec.unsupported));
  const checks: (string | null)[] = [];
  for (const v of runnable) {
    // One at a time: each runs inside error scopes of its own.
    checks.push(await validateOnce(gpu, spec.op, v, () => spec.validate(v)));
  }
  const ok = runnable.filter((v, i) => {
    if (checks[i]) rejected[v] = checks[i]!;
    return !checks[i];
  });
  if (ok.length === 0) {
    throw new Error(
      `No ${spec.op} variant passed validation on ${gpu.info.name}: ${JSON.stringify(rejected)}`,
    );
  }
  const work = gpu.outsideArena(() => spec.workload());
  let ms: Record<string, number> = {};
  try {
    if (ok.length > 1) {
      const calls = spec.callsPerRound ?? 1;
      const round = (v: string) => async () => {
        for (let c = 0; c < calls; c++) await work.run(v);
      };
      for (const v of ok) await round(v)(); // pipelines compile
      const times = await gpu.profile(ok.map(round), spec.repeats ?? 5);
      // Other work on the machine only ever slows a run down: the fastest is the fairest.
      ms = Object.fromEntries(ok.map((v, i) => [v, Math.min(...times[i]) / calls]));
    }
  } finally {
    work.destroy();
  }
  const best = ok.reduce((x, y) => ((ms[y] ?? 0) < (ms[x] ?? 0) ? y : x));
  return {
    variant: best,
    version: spec.version,
    shape: work.shape,
    ms,
    screen: null,
    rejected,
    spent_ms: performance.now() - t0,
    clock: gpu.hasTimestamps ? "timestamps" : "wall",
  };
}

/**
 * `n` deterministic values in [-1, 1) (a linear congruential sequence):
 * the operands of validation and timing runs.
 *
 * @example
 * ```ts
 * import { testValues } from "./tune.ts";
 * const v = testValues(3, 1);
 * if (v.length !== 3 || v.some((x) => x < -1 || x >= 1)) throw new Error();
 * ```
 */
export function testValues(n: number, seed: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}
