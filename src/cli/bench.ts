/**
 * `tost bench`: time and memory of attention against sequence length, TSSA
 * against softmax, on the WebGPU device at hand.
 *
 * @module
 */

import { Command, Option } from "commander";
import Table from "cli-table3";
import { Gpu } from "../gpu/runtime.ts";
import { formatBytes } from "../gpu/runtime.ts";
import { type OperatorName, OPERATORS } from "../bench/operators.ts";
import { type BenchRecord, type CheckResult, runBench } from "../bench/run.ts";
import { logLogSlope } from "../bench/stats.ts";
import { MODEL_NAMES, type ModelRecord, runModelBench } from "../bench/models.ts";
import { UsageError } from "./_errors.ts";
import { printJson, useColor } from "./_output.ts";
import { benchLinear } from "./_bench_linear.ts";

const DEFAULT_OPS: OperatorName[] = ["tssa", "causal-tssa", "softmax", "flash-softmax"];
/** Lengths on a software renderer (a CPU): seconds, not hours. */
const SOFTWARE_SEQ = [256, 512, 1024, 2048];
/** Lengths on a real GPU: up to the paper's 262k tokens. */
const HARDWARE_SEQ = [1024, 4096, 16384, 65536, 262144];
/** Image sides for `--model` on a software renderer. */
const SOFTWARE_IMAGES = [64, 128, 224];
/** Image sides for `--model` on a real GPU (1344² is the paper's 7056 tokens). */
const HARDWARE_IMAGES = [224, 448, 672, 896, 1344, 1792, 2240];

function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) {
      throw new UsageError(`--${name} must be a positive integer, got "${value}"`);
    }
    return n;
  };
}

function intList(value: string): number[] {
  const parts = value.split(",").map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) throw new UsageError(`--seq needs a list like 256,1024,4096`);
  return parts.map(positiveInt("seq"));
}

function opList(value: string): (OperatorName | "linear")[] {
  const ops = value.split(",").map((s) => s.trim()).filter(Boolean);
  for (const op of ops) {
    if (op !== "linear" && !(OPERATORS as readonly string[]).includes(op)) {
      throw new UsageError(`unknown operator "${op}" (known: ${OPERATORS.join(", ")}, linear)`);
    }
  }
  return ops as (OperatorName | "linear")[];
}

/** Build the `bench` subcommand. */
export function benchCommand() {
  return new Command("bench")
    .description(
      "Profile attention time and memory against sequence length: TSSA against softmax.",
    )
    .option("--seq <list>", "sequence lengths, comma-separated (default: by device)", intList)
    .option("--ops <list>", `operators (${OPERATORS.join(", ")}), or linear`, opList, DEFAULT_OPS)
    .option("--dim <n>", "embedding width", positiveInt("dim"), 384)
    .option("--heads <n>", "attention heads", positiveInt("heads"), 8)
    .option("--batch <n>", "batch size", positiveInt("batch"), 1)
    .option(
      "--repeats <n>",
      "timed repeats per length (median reported)",
      positiveInt("repeats"),
      5,
    )
    .option("--warmup <n>", "untimed runs first", positiveInt("warmup"), 1)
    .addOption(
      new Option("--check-tokens <n>", "tokens of the correctness check run before timing")
        .argParser(positiveInt("check-tokens")).default(64),
    )
    .option(
      "--backward",
      "also time one forward+backward training step of every module (pass fwd+bwd)",
    )
    .option(
      "--no-projections",
      "time the operators alone on projected tokens, without the modules' projections",
    )
    .option("--model", "compare whole ToST-S and ViT-S (vision, random weights) instead")
    .option(
      "--images <list>",
      "image sides in pixels for --model, comma-separated (default: by device)",
      intList,
    )
    .option("--shapes <list>", "with --ops linear: layers m×k×n (default: the models' shapes)")
    .option("--variants <list>", "with --ops linear: GEMM variants to time (chosen, all, names)")
    .option("--plot <file.svg>", "write a log-log plot of time and memory (and a PNG beside it)")
    .option("--json", "print the records as JSON on stdout")
    .addHelpText(
      "after",
      `
Each operator is timed as the attention module the paper measures: input projection,
operator, output projection (ToST-S sizes by default: width 384, 8 heads, batch 1).
  tssa           Token Statistics Self-Attention, linear in tokens
  causal-tssa    its causal form (prefix statistics), linear in tokens
  softmax        standard attention, materialises the N×N scores (quadratic memory)
  flash-softmax  tiled online-softmax attention, never materialises N×N
  causal-…       causal variants of the softmax operators
With --no-projections the operators run alone on already-projected tokens: on a CPU the
projections' linear cost hides the operators' own scaling at small lengths.
Before timing, every operator is checked against the CPU reference at --check-tokens.
GPU times come from timestamp queries (median of --repeats); wall time includes the
~10 ms submit-and-wait of every WebGPU round trip. Peak bytes come from tost's own
allocation counter, parameters excluded. A length an operator cannot run at (memory,
binding limits) is recorded as failed and the run continues.

With --backward, each module is also timed as one training step (pass fwd+bwd, after the
forward records): the forward keeping what the backward needs (standard softmax keeps its
N×N probabilities, flash recomputes them), then the backward from a fixed upstream
gradient to the input gradient and every parameter gradient (accumulated into buffers
allocated with the parameters and, like them, excluded from peak memory). It is checked
first against a float64 composition of the CPU references (tolerance 1e-3).

With --ops linear, the linear layer's GEMM is timed instead (GFLOP/s, records with op
"linear", m, k, n, gflops, variant) at the models' shapes (--shapes 4096x384x1152,…):
the forward product, and with --backward also ∂x and ∂W; --variants all times every
kernel variant that can run here, not only the one tost chose (see \`tost tune\`).

With --model, whole models are timed instead: ToST-S against ViT-S (width 384, 12 blocks,
patch 16, random weights) at growing image sizes (--images), as in the paper's figure.

Examples:
  tost bench --model --images 224,448,896 --plot models.svg
  tost bench                                   # default lengths for this device
  tost bench --seq 1024,4096,16384 --ops tssa,flash-softmax --json
  tost bench --backward --seq 256,512,1024     # forward and forward+backward
  tost bench --plot bench.svg                  # also writes bench.png
  tost bench --ops linear --backward --json    # GEMM GFLOP/s at the models' shapes`,
    )
    .action(async (options, command) => {
      if (options.ops.includes("linear")) {
        const cli = (name: string) => command.getOptionValueSource(name) === "cli";
        const foreign = ["seq", "dim", "heads", "batch", "checkTokens", "model", "images", "plot"]
          .filter(cli);
        if (options.ops.length > 1 || foreign.length > 0 || !options.projections) {
          throw new UsageError(
            "--ops linear runs alone and takes only --shapes, --variants, --backward, " +
              "--repeats, --warmup and --json",
          );
        }
        await benchLinear({ ...options, json: options.json ?? false });
        return;
      }
      if (options.shapes || options.variants) {
        throw new UsageError("--shapes and --variants apply to --ops linear");
      }
      if (options.dim % options.heads !== 0) {
        throw new UsageError(`--dim ${options.dim} is not divisible by --heads ${options.heads}`);
      }
      if (!options.projections && (options.backward || options.model)) {
        throw new UsageError(
          "--no-projections applies to the forward operator benchmark, not to --backward or --model",
        );
      }
      if (options.model && options.backward) {
        throw new UsageError(
          "--backward times the attention modules; it does not apply to --model",
        );
      }
      const gpu = await Gpu.create();
      if (options.model) {
        try {
          await benchModels(gpu, options);
        } finally {
          gpu.destroy();
        }
        return;
      }
      try {
        const seq = options.seq ?? (gpu.info.software ? SOFTWARE_SEQ : HARDWARE_SEQ);
        const progress = (e: CheckResult | BenchRecord) => {
          if (options.json) return;
          if ("ok" in e) {
            const what = e.pass === "fwd" ? e.op : `${e.op} ${e.pass}`;
            console.error(
              `check ${what} (${e.n} tokens): ${e.ok ? "ok" : "FAILED"}, error ${
                e.error.toExponential(2)
              }${e.worst && !e.ok ? ` (worst: ${e.worst})` : ""}`,
            );
          } else {
            console.error(
              `${seriesLabel(e)} n=${e.n}: ${
                e.status === "ok"
                  ? `${fmtMs(e.gpu_ms)} GPU, ${fmtMs(e.wall_ms)} wall, ${
                    formatBytes(e.peak_bytes ?? 0)
                  }`
                  : `failed: ${e.error}`
              }`,
            );
          }
        };
        const { checks, records } = await runBench(gpu, {
          ops: options.ops as OperatorName[],
          seq,
          dim: options.dim,
          heads: options.heads,
          batch: options.batch,
          repeats: options.repeats,
          warmup: options.warmup,
          checkTokens: options.checkTokens,
          tolerance: 1e-4,
          projections: options.projections,
          backward: options.backward ?? false,
          backwardTolerance: 1e-3,
          onProgress: progress,
        });
        const slopes = fitSlopes(records);
        if (options.plot) {
          await writePlot(
            options.plot,
            records,
            `tost bench on ${gpu.info.name} (width ${options.dim}, ${options.heads} heads)`,
            !options.json,
          );
        }
        if (options.json) {
          printJson({ device: gpu.info, checks, slopes, results: records });
        } else {
          console.log(table(records));
          printSlopes(slopes);
        }
        const failedChecks = checks.filter((c) => !c.ok);
        if (failedChecks.length > 0) {
          throw new Error(
            `correctness check failed for ${
              failedChecks.map((c) => c.pass === "fwd" ? c.op : `${c.op} ${c.pass}`).join(", ")
            }: not timed`,
          );
        }
      } finally {
        gpu.destroy();
      }
    });
}

async function benchModels(
  gpu: Gpu,
  options: {
    images?: number[];
    batch: number;
    warmup: number;
    repeats: number;
    json?: true;
    plot?: string;
  },
): Promise<void> {
  const images = options.images ?? (gpu.info.software ? SOFTWARE_IMAGES : HARDWARE_IMAGES);
  const records = await runModelBench(gpu, {
    models: MODEL_NAMES,
    images,
    batch: options.batch,
    warmup: options.warmup,
    repeats: options.repeats,
    onProgress: (r) => {
      if (options.json) return;
      console.error(
        `${r.op} ${r.image}px (${r.n} tokens): ${
          r.status === "ok"
            ? `${fmtMs(r.gpu_ms)} GPU, ${fmtMs(r.wall_ms)} wall, ${formatBytes(r.peak_bytes ?? 0)}`
            : `failed: ${r.error}`
        }`,
      );
    },
  });
  const slopes = fitSlopes(records);
  if (options.plot) {
    await writePlot(options.plot, records, `tost bench --model on ${gpu.info.name}`, !options.json);
  }
  if (options.json) {
    printJson({ device: gpu.info, slopes, results: records });
    return;
  }
  const t = new Table({
    head: ["model", "image", "tokens", "GPU time", "wall time", "peak memory", "status"],
    style: useColor() ? {} : { head: [], border: [] },
    colAligns: ["left", "right", "right", "right", "right", "right", "left"],
  });
  for (const r of records) {
    t.push([
      r.op,
      `${r.image}²`,
      String(r.n),
      fmtMs(r.gpu_ms),
      fmtMs(r.wall_ms),
      r.peak_bytes === null ? "-" : formatBytes(r.peak_bytes),
      r.status === "ok" ? "ok" : `failed: ${truncate(r.error ?? "", 60)}`,
    ]);
  }
  console.log(t.toString());
  printSlopes(slopes);
}

async function writePlot(
  path: string,
  records: readonly (BenchRecord | ModelRecord)[],
  title: string,
  say: boolean,
): Promise<void> {
  const { renderSvg } = await import("../bench/plot.ts");
  const { svgToPng } = await import("../plot.ts");
  const svg = await renderSvg(records, title);
  await Deno.writeTextFile(path, svg);
  const png = path.replace(/\.svg$/i, "") + ".png";
  await Deno.writeFile(png, await svgToPng(svg));
  if (say) console.error(`plot: ${path}, ${png}`);
}

function printSlopes(slopes: ReturnType<typeof fitSlopes>): void {
  for (const s of slopes) {
    const label = s.pass === "fwd" ? s.op : `${s.op} (${s.pass})`;
    console.log(
      `${label.padEnd(32)} time slope ${fmtSlope(s.time)}   memory slope ${
        fmtSlope(s.memory)
      }   (≈1 linear, ≈2 quadratic)`,
    );
  }
}

/** Log-log slopes of time and memory against tokens, per operator (or model) and pass. */
export function fitSlopes(
  records: readonly (BenchRecord | ModelRecord)[],
): { op: string; pass: string; time: number | null; memory: number | null }[] {
  const series = [...new Map(records.map((r) => [seriesLabel(r), r])).values()];
  return series.map(({ op, pass }) => {
    const ok = records.filter((r) => r.op === op && r.pass === pass && r.status === "ok");
    const n = ok.map((r) => r.n * r.batch);
    return {
      op,
      pass,
      time: logLogSlope(n, ok.map((r) => r.gpu_ms ?? r.wall_ms ?? 0)),
      memory: logLogSlope(n, ok.map((r) => r.peak_bytes ?? 0)),
    };
  });
}

/** `op` for forward records, `op (fwd+bwd)` for the others. */
function seriesLabel(r: { op: string; pass: string }): string {
  return r.pass === "fwd" ? r.op : `${r.op} (${r.pass})`;
}

function fmtMs(ms: number | null): string {
  return ms === null ? "-" : `${ms < 10 ? ms.toFixed(3) : ms.toFixed(1)} ms`;
}

function fmtSlope(s: number | null): string {
  return s === null ? "-" : s.toFixed(2);
}

function table(records: readonly BenchRecord[]): string {
  const t = new Table({
    head: ["op", "pass", "n", "GPU time", "wall time", "peak memory", "minimum", "status"],
    style: useColor() ? {} : { head: [], border: [] },
    colAligns: ["left", "left", "right", "right", "right", "right", "right", "left"],
  });
  for (const r of records) {
    t.push([
      r.op,
      r.pass,
      String(r.n),
      fmtMs(r.gpu_ms),
      fmtMs(r.wall_ms),
      r.peak_bytes === null ? "-" : formatBytes(r.peak_bytes),
      formatBytes(r.min_bytes),
      r.status === "ok" ? "ok" : `failed: ${truncate(r.error ?? "", 60)}`,
    ]);
  }
  return t.toString();
}

function truncate(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}
