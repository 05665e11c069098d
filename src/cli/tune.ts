/**
 * `tost tune`: measure the GEMM variants on this adapter at the models'
 * shapes now, save the choices in the tuning cache and print them.
 *
 * @module
 */

import { Command } from "commander";
import Table from "cli-table3";
import { Gpu } from "../gpu/runtime.ts";
import { LINEAR_SHAPES, type LinearPass, linearProduct } from "../bench/linear.ts";
import { retune, type TuneChoice, tuneStore } from "../ops/gemm_tune.ts";
import { UsageError } from "./_errors.ts";
import { printJson, useColor } from "./_output.ts";

/** One tuned product, as `tost tune --json` prints it. */
export interface TuneRecord {
  pass: LinearPass;
  m: number;
  k: number;
  n: number;
  kind: string;
  shape_class: string;
  variant: string;
  /** Time of each variant at the tuning size, ms. */
  ms: Record<string, number>;
  rejected: Record<string, string>;
  tuned_at: [number, number, number];
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

/** Build the `tune` subcommand. */
export function tuneCommand() {
  return new Command("tune")
    .description(
      "Measure the GEMM kernel variants on this adapter at the models' shapes and save the choices.",
    )
    .option(
      "--shapes <list>",
      "linear layers m×k×n (rows × in → out), comma-separated (default: the models' shapes)",
      parseShapes,
    )
    .option("--forward-only", "tune only the forward product, not ∂x and ∂W")
    .option("--json", "print the choices as JSON on stdout")
    .addHelpText(
      "after",
      `
Every matrix product tost runs picks one of several kernel designs (texture-…:
packed textures and big register blocks, fast on software Vulkan; tile-…:
workgroup-memory tiles for hardware GPUs; simple-…: no packing, for one row or
tiny products). The first product of a shape class on an adapter measures them
(about a few hundred ms) and the choice is cached on disk:
  $TOST_TUNE_CACHE, else $XDG_CACHE_HOME/tost/tune.json, else ~/.cache/tost/tune.json
\`tost tune\` re-measures now (for each layer: the forward, ∂x and ∂W products);
\`tost info\` lists the cached choices. TOST_TUNE=off skips tuning (fixed defaults).

Examples:
  tost tune
  tost tune --shapes 4096x384x1152,1x768x50257 --json`,
    )
    .action(async (options) => {
      const shapes = options.shapes ?? LINEAR_SHAPES;
      const passes: LinearPass[] = options.forwardOnly ? ["fwd"] : ["fwd", "dx", "dw"];
      const gpu = await Gpu.create();
      const records: TuneRecord[] = [];
      try {
        for (const shape of shapes) {
          for (const pass of passes) {
            const p = linearProduct(gpu, pass, shape);
            p.destroy(); // only its sizes are needed: tuning makes its own operands
            const { shapeClass, choice } = await retune(
              gpu,
              p.kind,
              p.prod.m,
              p.prod.n,
              p.prod.k,
            );
            const [m, k, n] = shape;
            const rec: TuneRecord = {
              pass,
              m,
              k,
              n,
              kind: p.kind,
              shape_class: shapeClass,
              variant: choice.variant,
              ms: choice.ms,
              rejected: choice.rejected,
              tuned_at: choice.shape,
              spent_ms: choice.spent_ms,
              clock: choice.clock,
            };
            records.push(rec);
            if (!options.json) {
              console.error(
                `${pass} ${m}×${k}→${n}: ${choice.variant} (${choice.spent_ms.toFixed(0)} ms)`,
              );
            }
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
    head: ["pass", "m×k→n", "class", "chosen", "times at the tuning size (ms)"],
    style: useColor() ? {} : { head: [], border: [] },
  });
  for (const r of records) {
    const times = Object.entries(r.ms).sort((a, b) => a[1] - b[1])
      .map(([v, ms]) => `${v} ${ms.toFixed(2)}`).join(", ");
    const rejected = Object.keys(r.rejected).length;
    t.push([
      r.pass,
      `${r.m}×${r.k}→${r.n}`,
      r.shape_class,
      r.variant,
      times + (rejected ? ` (${rejected} not run)` : ""),
    ]);
  }
  return t.toString();
}
