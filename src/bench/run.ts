/**
 * The measurement loop of `tost bench`: for every operator, one correctness
 * check against the CPU references, then at every length warm-up runs and
 * timed repeats (GPU time from timestamp queries, wall time around
 * submit-and-wait) with peak bytes from the runtime's allocation counter.
 * A length an operator cannot run at (memory, binding limits) is recorded as
 * its result and the run goes on.
 *
 * With `backward`, every operator is also checked and timed as one
 * training-style forward+backward step (`pass: "fwd+bwd"`, see
 * `operators_backward.ts`), after all the forward records.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import {
  checkModule,
  createModule,
  minimumBytes,
  type ModuleShape,
  type OperatorName,
} from "./operators.ts";
import { checkStepModule, createStepModule, minimumStepBytes } from "./operators_backward.ts";
import { median } from "./stats.ts";

/**
 * What is timed: the module forward, or one training-style step (forward
 * keeping what the backward needs, backward to `dx` and every parameter
 * gradient).
 */
export type BenchPass = "fwd" | "fwd+bwd";

/** One measurement, as printed by `tost bench --json`. */
export interface BenchRecord {
  op: OperatorName;
  n: number;
  pass: BenchPass;
  batch: number;
  dim: number;
  heads: number;
  /** Median GPU time (timestamp queries); null without `timestamp-query`. */
  gpu_ms: number | null;
  /** Median wall time of one pass including submit and wait (~10 ms floor). */
  wall_ms: number | null;
  /** Peak bytes allocated while running the module, parameters (and their gradients) excluded. */
  peak_bytes: number | null;
  /**
   * Bytes any implementation must hold at once (fwd: input, output, what it
   * materialises by design; fwd+bwd: see `minimumStepBytes`).
   */
  min_bytes: number;
  repeats: number;
  status: "ok" | "failed";
  error?: string;
  device: string;
  backend: string;
  software: boolean;
}

/** Result of the pre-timing correctness check of one operator. */
export interface CheckResult {
  op: OperatorName;
  pass: BenchPass;
  n: number;
  /** Largest |gpu − ref| / max(1, max|ref|) (fwd+bwd: over dx and every parameter gradient). */
  error: number;
  /** fwd+bwd only: the tensor with the largest error (`dx` or a parameter gradient). */
  worst?: string;
  ok: boolean;
}

/** Options of {@linkcode runBench}. */
export interface BenchOptions extends ModuleShape {
  ops: readonly OperatorName[];
  seq: readonly number[];
  warmup: number;
  repeats: number;
  /** Tokens for the correctness check (small, so the CPU reference is quick). */
  checkTokens: number;
  /** Tolerance of the forward correctness check. */
  tolerance: number;
  /** Also check and time the forward+backward step of every operator. */
  backward?: boolean;
  /** Tolerance of the forward+backward check (default 1e-3). */
  backwardTolerance?: number;
  /** Called after each check and each measurement (progress lines). */
  onProgress?: (event: CheckResult | BenchRecord) => void;
  /**
   * Why an (operator, pass, length) cannot run on this device (e.g. a tensor
   * over the adapter's buffer limit), or null: such a length is recorded as
   * failed with that reason and not tried.
   */
  skip?: (op: OperatorName, pass: BenchPass, n: number) => string | null;
}

/**
 * Check every operator (forward, then with `backward` the forward+backward
 * step), then measure every (operator, length): all forward records first,
 * then the forward+backward ones. An operator is timed only in the passes
 * whose check (and the forward check) it passed.
 */
export async function runBench(
  gpu: Gpu,
  options: BenchOptions,
): Promise<{ checks: CheckResult[]; records: BenchRecord[] }> {
  const shape: ModuleShape = {
    batch: options.batch,
    dim: options.dim,
    heads: options.heads,
    projections: options.projections ?? true,
  };
  const n = options.checkTokens;
  const passes: BenchPass[] = options.backward ? ["fwd", "fwd+bwd"] : ["fwd"];
  const checks: CheckResult[] = [];
  for (const pass of passes) {
    for (const op of options.ops) {
      let check: CheckResult;
      if (pass === "fwd") {
        const error = await gpu.scoped(() => checkModule(gpu, op, shape, n));
        check = { op, pass, n, error, ok: error <= options.tolerance };
      } else {
        const { error, worst } = await gpu.scoped(() => checkStepModule(gpu, op, shape, n));
        const ok = error <= (options.backwardTolerance ?? 1e-3);
        check = { op, pass, n, error, worst, ok };
      }
      checks.push(check);
      options.onProgress?.(check);
    }
  }
  const passed = (op: OperatorName, pass: BenchPass) =>
    checks.some((c) => c.op === op && c.pass === "fwd" && c.ok) &&
    checks.some((c) => c.op === op && c.pass === pass && c.ok);
  const records: BenchRecord[] = [];
  for (const pass of passes) {
    for (const op of options.ops) {
      if (!passed(op, pass)) continue; // never time a wrong kernel
      for (const len of options.seq) {
        const why = options.skip?.(op, pass, len) ?? null;
        const record = why === null
          ? await measure(gpu, op, pass, shape, len, options)
          : notTried(gpu, op, pass, shape, len, options, why);
        records.push(record);
        options.onProgress?.(record);
      }
    }
  }
  return { checks, records };
}

/** A record with nothing measured yet. */
function emptyRecord(
  gpu: Gpu,
  op: OperatorName,
  pass: BenchPass,
  shape: ModuleShape,
  n: number,
  options: BenchOptions,
): BenchRecord {
  return {
    op,
    n,
    pass,
    ...shape,
    gpu_ms: null,
    wall_ms: null,
    peak_bytes: null,
    min_bytes: 0,
    repeats: options.repeats,
    status: "ok",
    device: gpu.info.name,
    backend: gpu.info.backend,
    software: gpu.info.software,
  };
}

/** The record of a length not tried, with the reason. */
function notTried(
  gpu: Gpu,
  op: OperatorName,
  pass: BenchPass,
  shape: ModuleShape,
  n: number,
  options: BenchOptions,
  why: string,
): BenchRecord {
  return {
    ...emptyRecord(gpu, op, pass, shape, n, options),
    min_bytes: pass === "fwd" ? minimumBytes(op, shape, n) : minimumStepBytes(op, shape, n),
    status: "failed",
    error: why,
  };
}

/** What `measure` runs: one pass that frees its own results. */
interface Timed {
  once(): Promise<void>;
  minBytes: number;
  inputBytes: number;
  destroy(): void;
}

function timedModule(
  gpu: Gpu,
  op: OperatorName,
  pass: BenchPass,
  shape: ModuleShape,
  n: number,
): Timed {
  if (pass === "fwd") {
    const m = createModule(gpu, op, shape, n);
    return { ...m, once: async () => (await m.forward()).destroy() };
  }
  const m = createStepModule(gpu, op, shape, n);
  return { ...m, once: async () => (await m.step()).destroy() };
}

async function measure(
  gpu: Gpu,
  op: OperatorName,
  pass: BenchPass,
  shape: ModuleShape,
  n: number,
  options: BenchOptions,
): Promise<BenchRecord> {
  const base = emptyRecord(gpu, op, pass, shape, n, options);
  let module: Timed | undefined;
  try {
    const live0 = gpu.memory().liveBytes;
    module = timedModule(gpu, op, pass, shape, n);
    base.min_bytes = module.minBytes;
    const paramBytes = gpu.memory().liveBytes - live0 - module.inputBytes;
    gpu.resetPeak();
    const m = module;
    for (let i = 0; i < options.warmup; i++) {
      await gpu.scoped(() => m.once());
    }
    const walls: number[] = [];
    for (let i = 0; i < options.repeats; i++) {
      const t0 = performance.now();
      await gpu.scoped(async () => {
        await gpu.timed(`${op}:${pass}@${n}#${i}`, () => m.once());
      });
      walls.push(performance.now() - t0);
    }
    const timings = await gpu.timings();
    base.wall_ms = median(walls);
    base.gpu_ms = timings.length ? median(timings.map((t) => t.ms)) : null;
    base.peak_bytes = gpu.memory().peakBytes - live0 - paramBytes;
  } catch (err) {
    base.status = "failed";
    base.error = err instanceof Error ? err.message : String(err);
    await gpu.timings().catch(() => []);
  } finally {
    module?.destroy();
  }
  return base;
}
