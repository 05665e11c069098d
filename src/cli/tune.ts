/**
 * `tost tune`: measure the kernel variants of every tuned op (the GEMM and
 * the row, elementwise and reduction ops) on this adapter at the models'
 * shapes now, save the choices in the tuning cache and print them.
 *
 * @module
 */

import { Command } from "commander";
import Table from "cli-table3";
import { Gpu } from "../gpu/runtime.ts";
import { retune, type TuneChoice, tuneStore } from "../gpu/tune.ts";
import { LINEAR_SHAPES, type LinearPass } from "../bench/linear.ts";
import { GEMM_TUNABLE, type GemmShape } from "../ops/gemm_tune.ts";
import { tunedOpNames, type TuneTarget, tuneTargets } from "../ops/tuned_ops.ts";
import { UsageError } from "./_errors.ts";
import { printJson, useColor } from "./_output.ts";

/** One tuned shape, as `tost tune --json` prints it. */
export interface TuneRecord {
  /** The op ("gemm", "layer_norm", …). */
  op: string;
  /** The shape, for people. */
  label: string;
  /** The shape's numbers (GEMM: pass, m, k, n, kind; row ops: rows, cols; …). */
  shape: Record<string, number | string>;
  /** The class the choice is filed under (null: too small to tune, not saved). */
  shape_class: string | null;
  variant: string;
  /** Time of each variant at the tuning size, ms. */
  ms: Record<string, number>;
  rejected: Record<string, string>;
  tuned_at: number[];
  spent_ms: number;
  clock: TuneChoice["clock"];
}

/** Parse `4096x384x1152,512x64x192` into `[m, k, n]` triples. */
export function parseShapes(value: string): [number, number, number][] {
  const parts = value.split(",").map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) {
    throw new UsageError("--shapes needs a list like 4096x384x1152,1x384x1152");
  }
  return parts.map((p) => {
    const dims = p.split(/[x×]/).map(Number);
    if (dims.length !== 3 || dims.some((d) => !Number.isInteger(d) || d < 1)) {
      throw new UsageError(
        `--shapes: "${p}" is not m×k×n with positive integers (e.g. 4096x384x1152)`,
      );
    }
    return dims as [number, number, number];
  });
}

/** Parse `--ops gemm,layer_norm` against the tuned ops. */
export function parseTuneOps(value: string): string[] {
  const known = tunedOpNames();
  const ops = value.split(",").map((s) => s.trim()).filter(Boolean);
  if (ops.length === 0) throw new UsageError(`--ops needs a list of: ${known.join(", ")}`);
  for (const op of ops) {
    if (!known.includes(op)) {
      throw new UsageError(`--ops: "${op}" is not a tuned op (known: ${known.join(", ")})`);
    }
  }
  return ops;
}

/** The GEMM products of the linear layers `shapes` (as `linear` and `linearBackward` run them). */
function gemmTargets(
  shapes: readonly (readonly [number, number, number])[],
  passes: LinearPass[],
): TuneTarget[] {
  return shapes.flatMap(([m, k, n]) =>
    passes.map((pass): TuneTarget => {
      const product: GemmShape = pass === "fwd"
        ? { kind: "nt", m, n, k }
        : pass === "dx"
        ? { kind: "nn", m, n: k, k: n }
        : { kind: "tn", m: n, n: k, k: m };
      return {
        op: "gemm",
        label: `${pass} ${m}×${k}→${n}`,
        shape: { pass, kind: product.kind, m, k, n },
        shapeClass: (gpu) => GEMM_TUNABLE.shapeClass(gpu, product),
        retune: (gpu) => retune(gpu, GEMM_TUNABLE, product),
      };
    })
  );
}

/** Build the `tune` subcommand. */
export function tuneCommand() {
  return new Command("tune")
    .description(
      "Measure the kernel variants of every tuned op on this adapter at the models' shapes and " +
        "save the choices.",
    )
    .option("--ops <list>", "tune only these ops, comma-separated (default: all)", parseTuneOps)
    .option(
      "--shapes <list>",
      "GEMM only: linear layers m×k×n (rows × in → out), comma-separated (default: the models')",
      parseShapes,
    )
    .option("--forward-only", "GEMM only: tune the forward product, not ∂x and ∂W")
    .option("--json", "print the choices as JSON on stdout")
    .addHelpText(
      "after",
      `
Every kernel tost runs for a tuned op picks one of several designs: GEMM
(texture-…: packed textures and big register blocks, fast on software Vulkan;
tile-…: workgroup-memory tiles for hardware GPUs; simple-…: no packing, for one
row or tiny products), row ops such as LayerNorm (row: one invocation per row,
no barrier, for CPUs; workgroup: one workgroup per row, for GPUs), elementwise
ops (scalar, vec4, vec4x4) and column sums. The first call of a shape class on
an adapter measures them (milliseconds to a few hundred) and the choice is
cached on disk:
  $TOST_TUNE_CACHE, else $XDG_CACHE_HOME/tost/tune.json, else ~/.cache/tost/tune.json
\`tost tune\` re-measures now (the GEMM for each layer: the forward, ∂x and ∂W
products); \`tost info\` lists the cached choices. TOST_TUNE=off skips tuning
(fixed defaults). Variants of ops other than the GEMM may differ in the last
bits of a result; a training run keeps the choices it started with (its
tune.json), so --resume stays bit-identical.

Tuned ops: ${tunedOpNames().join(", ")}

Examples:
  tost tune
  tost tune --ops layer_norm,layer_norm_backward
  tost tune --shapes 4096x384x1152,1x768x50257 --json`,
    )
    .action(async (options) => {
      if ((options.shapes || options.forwardOnly) && options.ops && !options.ops.includes("gemm")) {
        throw new UsageError("--shapes and --forward-only apply to the GEMM: add gemm to --ops");
      }
      // --shapes alone means: these GEMM shapes only.
      const ops = options.ops ?? (options.shapes ? ["gemm"] : tunedOpNames());
      const passes: LinearPass[] = options.forwardOnly ? ["fwd"] : ["fwd", "dx", "dw"];
      const targets = [
        ...(ops.includes("gemm") ? gemmTargets(options.shapes ?? LINEAR_SHAPES, passes) : []),
        ...tuneTargets().filter((t) => ops.includes(t.op)),
      ];
      const gpu = await Gpu.create();
      const records: TuneRecord[] = [];
      try {
        const done = new Set<string>();
        for (const t of targets) {
          const cls = t.shapeClass(gpu);
          // Shapes of one class share a choice: measure the first only.
          if (cls !== null && done.has(`${t.op} ${cls}`)) continue;
          if (cls !== null) done.add(`${t.op} ${cls}`);
          const { shapeClass, choice } = await t.retune(gpu);
          records.push({
            op: t.op,
            label: t.label,
            shape: t.shape,
            shape_class: shapeClass,
            variant: choice.variant,
            ms: choice.ms,
            rejected: choice.rejected,
            tuned_at: choice.shape,
            spent_ms: choice.spent_ms,
            clock: choice.clock,
          });
          if (!options.json) {
            console.error(
              `${t.op} ${t.label}: ${choice.variant} (${choice.spent_ms.toFixed(0)} ms)`,
            );
          }
        }
      } finally {
        gpu.destroy();
      }
      if (options.json) {
        printJson({ device: gpu.info, cache: tuneStore().where, results: records });
        return;
      }
      console.log(tuneTable(records));
      console.log(`saved in ${tuneStore().where}`);
    });
}

function tuneTable(records: readonly TuneRecord[]): string {
  const t = new Table({
    head: ["op", "shape", "class", "chosen", "times at the tuning size (ms)"],
    style: useColor() ? {} : { head: [], border: [] },
  });
  for (const r of records) {
    const times = Object.entries(r.ms).sort((a, b) => a[1] - b[1])
      .map(([v, ms]) => `${v} ${ms.toFixed(3)}`).join(", ");
    const rejected = Object.keys(r.rejected).length;
    t.push([
      r.op,
      r.label,
      r.shape_class ?? "(not tuned)",
      r.variant,
      times + (rejected ? ` (${rejected} not run)` : ""),
    ]);
  }
  return t.toString();
}
