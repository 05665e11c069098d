/**
 * The parts of `tost bench` that compare tost with a peer (`bench/peer/`):
 * `--train` (training throughput), `--eval` (vision evaluation throughput),
 * `--compare peer.json` (tost ÷ peer after any mode) and `--from tost.json`
 * (compare earlier results without running anything). `bench.ts` wires them.
 *
 * @module
 */

import { Gpu } from "../gpu/runtime.ts";
import type { KernelTime } from "../gpu/runtime.ts";
import Table from "cli-table3";
import {
  type AnyRecord,
  compareRecords,
  formatComparison,
  parseRecords,
} from "../bench/compare.ts";
import { runEvalBench } from "../bench/eval.ts";
import { runTrainBench, type TrainRecord } from "../bench/train.ts";
import { applySettings, presetSettings, type TrainSettings } from "../train/presets.ts";
import { UsageError } from "./_errors.ts";
import { printJson, useColor } from "./_output.ts";

/**
 * Per-kernel GPU time of one pass, slowest first, with each kernel's share.
 *
 * @example
 * ```ts
 * import { kernelTable } from "./bench_modes.ts";
 * const t = kernelTable([{ kernel: "gemm", dispatches: 3, ms: 2 }], "step");
 * if (!t.includes("gemm")) throw new Error("kernel missing");
 * ```
 */
export function kernelTable(kernels: readonly KernelTime[], pass: string): string {
  const total = kernels.reduce((a, k) => a + k.ms, 0);
  const t = new Table({
    head: ["kernel", `dispatches/${pass}`, `GPU ms/${pass}`, "share"],
    style: useColor() ? {} : { head: [], border: [] },
    colAligns: ["left", "right", "right", "right"],
  });
  for (const k of kernels) {
    t.push([
      k.kernel,
      k.dispatches.toFixed(k.dispatches % 1 === 0 ? 0 : 1),
      k.ms.toFixed(3),
      `${(100 * k.ms / total).toFixed(1)}%`,
    ]);
  }
  const dispatches = kernels.reduce((a, k) => a + k.dispatches, 0);
  t.push(["total", dispatches.toFixed(0), total.toFixed(3), "100%"]);
  return t.toString();
}

/** The options of `tost bench` these modes read. */
export interface ModeOptions {
  /** Time every kernel (each dispatch in a pass of its own: slower, but it shows where time goes). */
  profile?: true;
  train?: true;
  preset: string;
  config?: string;
  steps: number;
  eval?: string;
  key?: string;
  compare?: string[];
  from?: string[];
  batch: number;
  warmup: number;
  repeats: number;
  json?: true;
}

/** Flags (commander's attribute names) each mode takes; others given with it are refused. */
const MODE_FLAGS: Record<"train" | "eval" | "from", string[]> = {
  train: ["train", "preset", "config", "steps", "batch", "warmup", "compare", "json", "profile"],
  eval: ["eval", "key", "batch", "warmup", "repeats", "compare", "json", "profile"],
  from: ["from", "compare", "json"],
};

/** Flags that belong to one of these modes only. */
const OWNED: Record<string, "train" | "eval" | "from"> = {
  preset: "train",
  config: "train",
  steps: "train",
  key: "eval",
};

const flagName = (attr: string) =>
  attr === "projections"
    ? "--no-projections"
    : `--${attr.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/**
 * Check the flags of the comparison modes against each other and read the
 * peer files of `--compare` (early, so a bad file fails before a long run).
 *
 * @param given whether a flag (commander attribute name) was given on the command line
 * @param all the attribute names of every flag of `tost bench`
 * @returns the peer's records, or null without `--compare`
 * @throws {UsageError} for a flag that does not apply, or an unreadable or malformed file
 */
export async function prepareModes(
  options: ModeOptions,
  given: (attr: string) => boolean,
  all: readonly string[],
): Promise<AnyRecord[] | null> {
  const modes = (["train", "eval", "from", "model"] as const).filter((m) => given(m));
  if (modes.length > 1) {
    throw new UsageError(`choose one of ${modes.map(flagName).join(", ")}`);
  }
  const mode = modes[0];
  if (mode === "train" || mode === "eval" || mode === "from") {
    const stray = all.filter((a) => given(a) && !MODE_FLAGS[mode].includes(a));
    if (stray.length) {
      throw new UsageError(`${stray.map(flagName).join(", ")} does not apply to ${flagName(mode)}`);
    }
  }
  for (const [attr, owner] of Object.entries(OWNED)) {
    if (given(attr) && mode !== owner) {
      throw new UsageError(`${flagName(attr)} applies to ${flagName(owner)} only`);
    }
  }
  if (given("profile") && mode !== "train" && mode !== "eval") {
    throw new UsageError("--profile applies to --train and --eval only");
  }
  if (mode === "from" && !options.compare) {
    throw new UsageError("--from compares earlier results: it needs --compare <peer.json>");
  }
  return options.compare ? await readRecordFiles(options.compare, "peer results") : null;
}

async function readRecordFiles(paths: readonly string[], what: string): Promise<AnyRecord[]> {
  const out: AnyRecord[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new UsageError(`Cannot read ${what} "${path}": no such file`);
      }
      throw err;
    }
    try {
      out.push(...parseRecords(text, `"${path}"`));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  return out;
}

/** `doc` with the comparison of its `results` against `peer` added (unchanged without a peer). */
export function withComparison<T extends { results: readonly object[] }>(
  doc: T,
  peer: readonly AnyRecord[] | null,
): T | T & { comparison: ReturnType<typeof compareRecords> } {
  if (!peer) return doc;
  return { ...doc, comparison: compareRecords(doc.results as AnyRecord[], peer) };
}

/** Print tost ÷ peer for the records (nothing without a peer). */
export function printComparison(
  records: readonly object[],
  peer: readonly AnyRecord[] | null,
): void {
  if (!peer) return;
  console.log(`\ntost ÷ peer (time: above 1 tost is slower; throughput: below 1)`);
  console.log(
    formatComparison(compareRecords(records as AnyRecord[], peer), { color: useColor() }),
  );
}

async function readSettings(options: ModeOptions, given: (a: string) => boolean) {
  let file: Record<string, unknown> = {};
  if (options.config) {
    const [doc] = await readJson(options.config);
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
      throw new UsageError(`Config "${options.config}" must hold a JSON object of settings`);
    }
    file = doc as Record<string, unknown>;
  }
  try {
    let s: TrainSettings = applySettings(
      presetSettings(options.preset),
      file,
      `Config "${options.config}"`,
    );
    if (given("batch")) s = applySettings(s, { batch_size: options.batch }, "options");
    return s;
  } catch (err) {
    if (err instanceof TypeError || err instanceof RangeError) throw new UsageError(err.message);
    throw err;
  }
}

async function readJson(path: string): Promise<[unknown]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new UsageError(`Cannot read "${path}": no such file`);
    }
    throw err;
  }
  try {
    return [JSON.parse(text)];
  } catch (err) {
    throw new UsageError(`"${path}" is not valid JSON: ${(err as Error).message}`);
  }
}

function describeTrain(r: TrainRecord): string {
  const rate = r.tokens_per_s ?? r.images_per_s;
  return `train ${r.preset} (${r.model}, ${r.n_layer} layers × ${r.n_embd}, ${r.n_head} heads, ` +
    `${r.unit === "images" ? `${r.block_size}px images` : `context ${r.block_size}`}, ` +
    `batch ${r.batch_size}): ` +
    (r.status === "ok"
      ? `${r.step_ms!.toFixed(1)} ms/step, ${rate!.toFixed(0)} ${r.unit}/s over ${r.steps} ` +
        `steps (loss ${r.loss?.toFixed(3)}; ${r.waits_per_step?.toFixed(2)} host waits/step, ` +
        `${r.record_ms?.toFixed(1)} ms to record a step)`
      : `failed: ${r.error}`);
}

/**
 * Run `--train`, `--eval` or `--from` when one is given, printing its
 * records (and the comparison).
 *
 * @returns false when none of these modes was asked for
 */
export async function runModes(
  options: ModeOptions,
  given: (attr: string) => boolean,
  peer: readonly AnyRecord[] | null,
): Promise<boolean> {
  if (options.from) {
    const tost = await readRecordFiles(options.from, "tost results");
    const doc = withComparison({ results: tost }, peer);
    if (options.json) printJson(doc);
    else printComparison(tost, peer);
    return true;
  }
  if (!options.train && options.eval === undefined) return false;
  const settings = options.train ? await readSettings(options, given) : null;
  const gpu = await Gpu.create();
  try {
    let line: string;
    let record: object;
    // The profile covers the timed passes only: warm-up and first-use tuning stay out.
    if (options.profile && !gpu.hasTimestamps) {
      throw new Error("Kernel profiles need the timestamp-query feature, which this adapter lacks");
    }
    let profiling = false;
    const onTimed = options.profile
      ? () => {
        gpu.startKernelProfile();
        profiling = true;
      }
      : undefined;
    if (settings) {
      const r = await runTrainBench(gpu, settings, {
        steps: options.steps,
        warmup: options.warmup,
        onTimed,
      });
      [record, line] = [r, describeTrain(r)];
    } else {
      const path = options.eval!;
      let r;
      try {
        r = await runEvalBench(gpu, path, {
          batch: given("batch") ? options.batch : 128,
          warmup: options.warmup,
          repeats: options.repeats,
          key: options.key,
          onTimed,
        });
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) {
          throw new UsageError(`Cannot read model "${path}": no such file`);
        }
        if (err instanceof TypeError || err instanceof RangeError) {
          throw new UsageError(err.message);
        }
        throw err;
      }
      line =
        `eval ${r.file} (${r.model}, ${r.depth} blocks × ${r.embed_dim}, batch ${r.batch_size}` +
        `, ${r.image}px): ` +
        (r.status === "ok"
          ? `${r.batch_ms!.toFixed(1)} ms/batch, ${r.images_per_s!.toFixed(0)} images/s ` +
            `(top-1 on the timed digits ${(100 * r.accuracy!).toFixed(1)}%)`
          : `failed: ${r.error}`);
      record = r;
    }
    let kernels: KernelTime[] | null = null;
    if (profiling) {
      // Per timed pass (optimizer step or evaluation batch).
      const passes = settings ? options.steps : options.repeats;
      kernels = (await gpu.stopKernelProfile()).map((k) => ({
        kernel: k.kernel,
        dispatches: k.dispatches / passes,
        ms: k.ms / passes,
      }));
      record = { ...record, profiled: true };
    }
    const doc = withComparison({ device: gpu.info, results: [record] }, peer);
    if (options.json) printJson(kernels ? { ...doc, kernels } : doc);
    else {
      console.log(line);
      if (kernels) console.log(kernelTable(kernels, settings ? "step" : "batch"));
      printComparison([record], peer);
    }
    if ((record as { status: string }).status !== "ok") {
      throw new Error(`the benchmark failed: ${(record as { error?: string }).error}`);
    }
  } finally {
    gpu.destroy();
  }
  return true;
}
