/**
 * The measurement loop of `tost bench`: for every operator, one correctness
 * check against the CPU references, then at every length warm-up runs and
 * timed repeats (GPU time from timestamp queries, wall time around
 * submit-and-wait) with peak bytes from the runtime's allocation counter.
 * A length an operator cannot run at (memory, binding limits) is recorded as
 * its result and the run goes on.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { checkModule, createModule, type ModuleShape, type OperatorName } from "./operators.ts";
import { median } from "./stats.ts";

/** One measurement, as printed by `tost bench --json`. */
export interface BenchRecord {
  op: OperatorName;
  n: number;
  pass: "fwd";
  batch: number;
  dim: number;
  heads: number;
  /** Median GPU time (timestamp queries); null without `timestamp-query`. */
  gpu_ms: number | null;
  /** Median wall time of one forward including submit and wait (~10 ms floor). */
  wall_ms: number | null;
  /** Peak bytes allocated while running the module, parameters excluded. */
  peak_bytes: number | null;
  /** Bytes any implementation must hold (input, output, what it materialises by design). */
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
  n: number;
  /** Largest |gpu − ref| / max(1, max|ref|). */
  error: number;
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
  /** Tolerance of the correctness check. */
  tolerance: number;
  /** Called after each check and each measurement (progress lines). */
  onProgress?: (event: CheckResult | BenchRecord) => void;
}

/** Check every operator, then measure every (operator, length). */
export async function runBench(
  gpu: Gpu,
  options: BenchOptions,
): Promise<{ checks: CheckResult[]; records: BenchRecord[] }> {
  const shape: ModuleShape = { batch: options.batch, dim: options.dim, heads: options.heads };
  const checks: CheckResult[] = [];
  for (const op of options.ops) {
    const error = await gpu.scoped(() => checkModule(gpu, op, shape, options.checkTokens));
    const check = { op, n: options.checkTokens, error, ok: error <= options.tolerance };
    checks.push(check);
    options.onProgress?.(check);
  }
  const records: BenchRecord[] = [];
  for (const op of options.ops) {
    if (!checks.find((c) => c.op === op)?.ok) continue; // never time a wrong kernel
    for (const n of options.seq) {
      const record = await measure(gpu, op, shape, n, options);
      records.push(record);
      options.onProgress?.(record);
    }
  }
  return { checks, records };
}

async function measure(
  gpu: Gpu,
  op: OperatorName,
  shape: ModuleShape,
  n: number,
  options: BenchOptions,
): Promise<BenchRecord> {
  const base: BenchRecord = {
    op,
    n,
    pass: "fwd",
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
  let module: ReturnType<typeof createModule> | undefined;
  try {
    const live0 = gpu.memory().liveBytes;
    module = createModule(gpu, op, shape, n);
    base.min_bytes = module.minBytes;
    const paramBytes = gpu.memory().liveBytes - live0 - module.inputBytes;
    gpu.resetPeak();
    const m = module;
    for (let i = 0; i < options.warmup; i++) {
      await gpu.scoped(async () => (await m.forward()).destroy());
    }
    const walls: number[] = [];
    for (let i = 0; i < options.repeats; i++) {
      const t0 = performance.now();
      await gpu.scoped(async () => {
        await gpu.timed(`${op}@${n}#${i}`, async () => (await m.forward()).destroy());
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
