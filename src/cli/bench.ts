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
import type { AnyRecord } from "../bench/compare.ts";
import { DEFAULT_PRESET } from "../train/presets.ts";
import { prepareModes, printComparison, runModes, withComparison } from "./bench_modes.ts";
import { checkWritableFile } from "./_files.ts";
import { imageLimit, operatorLimit } from "./_bench_limits.ts";

const DEFAULT_OPS: OperatorName[] = ["tssa", "causal-tssa", "softmax", "flash-softmax"];
/** Lengths on a software renderer (a CPU): seconds, not hours. */
const SOFTWARE_SEQ = [256, 512, 1024, 2048];
/** Lengths on a real GPU: up to the paper's 262k tokens. */
const HARDWARE_SEQ = [1024, 4096, 16384, 65536, 262144];
/** Image sides for `--model` on a software renderer. */
const SOFTWARE_IMAGES = [64, 128, 224];
/** Image sides for `--model` on a real GPU (1344² is the paper's 7056 tokens). */
const HARDWARE_IMAGES = [224, 448, 672, 896, 1344, 1792, 2240];

function integer(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isSafeInteger(n) || n < min) {
      throw new UsageError(
        `--${name} must be ${min === 1 ? "a positive integer" : `an integer ≥ ${min}`}, got ` +
          `"${value}"`,
      );
    }
    return n;
  };
}

const positiveInt = (name: string) => integer(name, 1);

function intList(name: string, example: string) {
  return (value: string): number[] => {
    const parts = value.split(",").map((s) => s.trim()).filter(Boolean);
    if (parts.length === 0) throw new UsageError(`--${name} needs a list like ${example}`);
    return parts.map(positiveInt(name));
  };
}

function fileList(value: string): string[] {
  const files = value.split(",").map((s) => s.trim()).filter(Boolean);
  if (files.length === 0) throw new UsageError(`expected one or more JSON files, got "${value}"`);
  return files;
}

function opList(value: string): (OperatorName | "linear")[] {
  const ops = value.split(",").map((s) => s.trim()).filter(Boolean);
  if (ops.length === 0) {
    throw new UsageError(`--ops needs at least one operator (known: ${OPERATORS.join(", ")})`);
  }
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
    .option(
      "--seq <list>",
      "sequence lengths, comma-separated (default: by device)",
      intList("seq", "256,1024,4096"),
    )
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
    .option("--warmup <n>", "untimed runs first (0 for none)", integer("warmup", 0), 1)
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
      intList("images", "224,448,896"),
    )
    .option(
      "--plot <file.svg|file.png>",
      "write a log-log plot of time and memory: the SVG and a PNG beside it",
    )
    .option("--shapes <list>", "with --ops linear: layers m×k×n (default: the models' shapes)")
    .option("--variants <list>", "with --ops linear: GEMM variants to time (chosen, all, names)")
    .option("--json", "print the records as JSON on stdout")
    .option(
      "--profile",
      "with --train or --eval: GPU time per kernel (each dispatch timed alone: slower overall)",
    )
    .option("--train", "time optimizer steps of a preset's model instead (tokens or images/s)")
    .option("--preset <name>", "with --train: the model and batch of this preset", DEFAULT_PRESET)
    .option("--config <file.json>", "with --train: settings over the preset (nanoGPT names)")
    .option("--steps <n>", "with --train: timed steps (after --warmup)", positiveInt("steps"), 10)
    .option("--eval <model>", "time a vision model's MNIST evaluation instead (batch 128)")
    .option("--key <name>", "with --eval: state_dict key of a PyTorch checkpoint")
    .option("--compare <peer.json,…>", "also print tost ÷ peer per workload (bench/peer)", fileList)
    .option("--from <tost.json,…>", "with --compare: earlier tost results, nothing run", fileList)
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
binding limits) is recorded as failed and the run continues; a length no operator can run
on this adapter (a tensor over its maxBufferSize) is refused before any work (exit 2), and
a run where nothing succeeded exits 1.

Memory columns: "peak memory" is the most bytes tost held at once while running the
module (parameters excluded); "lower bound" is what any implementation must hold (input,
output, and what the algorithm materialises by design: softmax's N×N scores).

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
patch 16, random weights) at growing image sizes (--images), as in the paper's figure;
the operator flags (--seq, --ops, --dim, --heads, --check-tokens, --backward,
--no-projections) do not apply to it, and --images only applies to it.

--plot name.svg (or name.png) writes both name.svg and name.png; its directory is
checked before the work, and the results are printed before the plot is written.

With --train, a fresh model of a training preset (or --config, as tost train reads it;
--batch overrides batch_size) runs --warmup then --steps optimizer steps through the
training code; the record gives ms per step and tokens (or images) per second. With
--eval <model>, a vision model evaluates MNIST test digits, --repeats timed batches of
128 (or --batch) recorded back to back as tost evaluate runs them (ms per batch is their
wall time over their number). --compare peer.json (from bench/peer/peer.py, the same workloads in
PyTorch) pairs every record with the peer's and prints tost ÷ peer; records without a
partner are listed. Several files (interleaved runs) are reduced to medians; --from
tost.json,… compares earlier tost --json results without running anything.

Examples:
  tost bench --model --images 224,448,896 --plot models.svg
  tost bench                                   # default lengths for this device
  tost bench --seq 1024,4096,16384 --ops tssa,flash-softmax --json
  tost bench --backward --seq 256,512,1024     # forward and forward+backward
  tost bench --plot bench.svg                  # also writes bench.png
  tost bench --ops linear --backward --json    # GEMM GFLOP/s at the models' shapes
  tost bench --train --preset small --steps 20 --compare peer.json
  tost bench --eval tests/fixtures/tost_vision_small.pth --json`,
    )
    .action(async (options, cmd) => {
      const given = (name: string) => cmd.getOptionValueSource(name) === "cli";
      if (options.ops.includes("linear")) {
        const foreign = [
          "seq",
          "dim",
          "heads",
          "batch",
          "checkTokens",
          "model",
          "images",
          "plot",
          "train",
          "eval",
          "compare",
          "from",
        ].filter(given);
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
      const ops = options.ops.filter((op): op is OperatorName => op !== "linear");
      const flags = cmd.options.map((o) => o.attributeName());
      const peer = await prepareModes(options, given, flags);
      if (await runModes(options, given, peer)) return;
      if (options.model) {
        const operatorOnly = ["seq", "ops", "dim", "heads", "checkTokens", "backward"]
          .filter(given)
          .map((n) => `--${n.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
        if (!options.projections) operatorOnly.push("--no-projections");
        if (operatorOnly.length) {
          throw new UsageError(
            `${operatorOnly.join(", ")} appl${operatorOnly.length > 1 ? "y" : "ies"} to the ` +
              `operator benchmark, not to --model (which takes --images, --batch, --repeats, ` +
              `--warmup)`,
          );
        }
      } else if (given("images")) {
        throw new UsageError("--images applies to --model (whole models), not to the operators");
      }
      if (options.dim % options.heads !== 0) {
        throw new UsageError(`--dim ${options.dim} is not divisible by --heads ${options.heads}`);
      }
      if (!options.projections && options.backward) {
        throw new UsageError(
          "--no-projections applies to the forward operator benchmark, not to --backward or --model",
        );
      }
      if (options.plot !== undefined) {
        if (!/\.(svg|png)$/i.test(options.plot)) {
          throw new UsageError(
            `--plot "${options.plot}" must end in .svg or .png (both files are written)`,
          );
        }
        for (const path of plotPaths(options.plot)) await checkWritableFile("--plot", path);
      }
      const gpu = await Gpu.create();
      if (options.model) {
        try {
          await benchModels(gpu, options, peer);
        } finally {
          gpu.destroy();
        }
        return;
      }
      try {
        const seq = options.seq ?? (gpu.info.software ? SOFTWARE_SEQ : HARDWARE_SEQ);
        const shape = { batch: options.batch, dim: options.dim, heads: options.heads };
        const maxBuffer = gpu.limits.maxBufferSize;
        const limit = (op: OperatorName, n: number) => operatorLimit(op, shape, n, maxBuffer);
        const lengths: [string, number][] = [
          ...(options.seq ?? []).map((n): [string, number] => ["--seq", n]),
          ["--check-tokens", options.checkTokens],
        ];
        for (const [flag, n] of lengths) {
          const whys = ops.map((op) => limit(op, n));
          if (flag === "--check-tokens" ? whys.some((w) => w !== null) : whys.every((w) => w)) {
            const at = whys.findIndex((w) => w !== null);
            throw new UsageError(
              `${flag} ${n} cannot run on ${gpu.info.name} with --batch ${options.batch}: ` +
                `${ops[at]} ${whys[at]}` +
                (flag === "--seq" && options.ops.length > 1 ? " (and no other operator fits)" : ""),
            );
          }
        }
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
          ops,
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
          skip: (op, _pass, n) => limit(op, n),
        });
        const slopes = fitSlopes(records);
        // Results first: a plot that fails to write never loses them.
        const results = records.map((r) => ({ ...r, projections: options.projections }));
        if (options.json) {
          printJson(withComparison({ device: gpu.info, checks, slopes, results }, peer));
        } else {
          console.log(table(records));
          printSlopes(slopes);
          printComparison(results, peer);
        }
        if (options.plot) {
          await writePlot(
            options.plot,
            records,
            `tost bench on ${gpu.info.name} (width ${options.dim}, ${options.heads} heads)`,
            !options.json,
          );
        }
        const failedChecks = checks.filter((c) => !c.ok);
        if (failedChecks.length > 0) {
          throw new Error(
            `correctness check failed for ${
              failedChecks.map((c) => c.pass === "fwd" ? c.op : `${c.op} ${c.pass}`).join(", ")
            }: not timed`,
          );
        }
        failIfNothingRan(records);
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
  peer: readonly AnyRecord[] | null,
): Promise<void> {
  const images = options.images ?? (gpu.info.software ? SOFTWARE_IMAGES : HARDWARE_IMAGES);
  const maxBuffer = gpu.limits.maxBufferSize;
  for (const side of options.images ?? []) {
    const why = imageLimit(side, options.batch, maxBuffer);
    if (why) throw new UsageError(`--images ${side} cannot run on ${gpu.info.name}: ${why}`);
  }
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
  if (options.json) printJson(withComparison({ device: gpu.info, slopes, results: records }, peer));
  else printModelTable(records, slopes, peer);
  if (options.plot) {
    await writePlot(options.plot, records, `tost bench --model on ${gpu.info.name}`, !options.json);
  }
  failIfNothingRan(records);
}

function printModelTable(
  records: readonly ModelRecord[],
  slopes: ReturnType<typeof fitSlopes>,
  peer: readonly AnyRecord[] | null,
) {
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
  printComparison(records, peer);
}

/** `name.svg` and `name.png` for `--plot name.svg` or `--plot name.png`. */
function plotPaths(path: string): [string, string] {
  const stem = path.replace(/\.(svg|png)$/i, "");
  return [`${stem}.svg`, `${stem}.png`];
}

async function writePlot(
  path: string,
  records: readonly (BenchRecord | ModelRecord)[],
  title: string,
  say: boolean,
): Promise<void> {
  const { renderSvg } = await import("../bench/plot.ts");
  const { svgToPng } = await import("../plot.ts");
  const [svgPath, pngPath] = plotPaths(path);
  const svg = await renderSvg(records, title);
  await Deno.writeTextFile(svgPath, svg);
  await Deno.writeFile(pngPath, await svgToPng(svg));
  if (say) console.error(`plot: ${svgPath}, ${pngPath}`);
}

/** A benchmark where every measurement failed is a failed run (exit 1). */
export function failIfNothingRan(records: readonly { status: string }[]): void {
  if (records.length > 0 && records.every((r) => r.status === "failed")) {
    throw new Error(
      `no measurement succeeded: all ${records.length} failed (see the status column)`,
    );
  }
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
    head: ["op", "pass", "n", "GPU time", "wall time", "peak memory", "lower bound", "status"],
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
  return t.toString() + "\n" + MEMORY_NOTE;
}

/** What the memory columns mean, printed under the table. */
const MEMORY_NOTE =
  "peak memory: the most bytes tost held at once in the module (parameters excluded); " +
  "lower bound: what any implementation must hold (input, output, and softmax's N×N scores)";

function truncate(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}
