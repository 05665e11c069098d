/**
 * `tost bench --ops linear`: GEMM throughput of the linear layer at the
 * models' shapes (forward; with `--backward` also ∂x and ∂W), one record per
 * (shape, pass, variant). Kept apart from `bench.ts`, which only routes here.
 *
 * @module
 */

import Table from "cli-table3";
import { Gpu } from "../gpu/runtime.ts";
import { LINEAR_SHAPES, type LinearRecord, runLinearBench } from "../bench/linear.ts";
import { candidates } from "../ops/gemm_tune.ts";
import { type GemmVariant, gemmVariant } from "../ops/gemm.ts";
import { UsageError } from "./_errors.ts";
import { printJson, useColor } from "./_output.ts";
import { parseShapes } from "./tune.ts";

/** The bench options `--ops linear` uses. */
export interface LinearBenchFlags {
  shapes?: string;
  variants?: string;
  backward?: boolean;
  warmup: number;
  repeats: number;
  json?: boolean;
}

/** Parse `--variants`: "chosen" (default), "all" (every candidate here), or variant names. */
function variantList(gpu: Gpu, value: string | undefined): (GemmVariant | "chosen" | "all")[] {
  if (!value) return ["chosen"];
  return value.split(",").map((s) => s.trim()).filter(Boolean).map((name) => {
    if (name === "chosen" || name === "all") return name;
    let v: GemmVariant;
    try {
      v = gemmVariant(name);
    } catch (err) {
      throw new UsageError(`--variants: ${err instanceof Error ? err.message : String(err)}`);
    }
    const why = v.unsupported(gpu, "nt");
    if (why) throw new UsageError(`--variants: ${name} cannot run on ${gpu.info.name}: it ${why}`);
    return v;
  });
}

/** Run the linear bench and print its records (a table, or JSON with `--json`). */
export async function benchLinear(flags: LinearBenchFlags): Promise<void> {
  const shapes = flags.shapes ? parseShapes(flags.shapes) : LINEAR_SHAPES;
  const gpu = await Gpu.create();
  try {
    const wanted = variantList(gpu, flags.variants);
    const all = wanted.includes("all");
    const records: LinearRecord[] = [];
    for (const shape of shapes) {
      const variants: (GemmVariant | "chosen")[] = all
        ? ["chosen", ...candidates(gpu, "nt", shape[0])]
        : wanted.filter((v): v is GemmVariant | "chosen" => v !== "all");
      records.push(
        ...await runLinearBench(gpu, {
          shapes: [shape],
          passes: flags.backward ? ["fwd", "dx", "dw"] : ["fwd"],
          variants,
          warmup: flags.warmup,
          repeats: flags.repeats,
          onRecord: (r) => {
            if (flags.json) return;
            console.error(
              `linear ${r.pass} ${r.m}×${r.k}→${r.n} ${r.variant}: ${
                r.status === "ok" ? `${r.gflops?.toFixed(1)} GFLOP/s` : `failed: ${r.error}`
              }`,
            );
          },
        }),
      );
    }
    if (flags.json) {
      printJson({ device: gpu.info, results: records });
    } else {
      console.log(linearTable(records));
    }
    const failed = records.filter((r) => r.status === "failed");
    if (failed.length > 0) {
      throw new Error(
        `linear bench failed for ${
          failed.map((r) => `${r.pass} ${r.m}×${r.k}→${r.n} ${r.variant}`).join(", ")
        }`,
      );
    }
  } finally {
    gpu.destroy();
  }
}

function linearTable(records: readonly LinearRecord[]): string {
  const t = new Table({
    head: ["pass", "m×k→n", "variant", "GFLOP/s", "GPU time", "wall time", "status"],
    style: useColor() ? {} : { head: [], border: [] },
    colAligns: ["left", "right", "left", "right", "right", "right", "left"],
  });
  for (const r of records) {
    const ms = (v: number | null) => (v === null ? "-" : `${v.toFixed(v < 10 ? 3 : 1)} ms`);
    t.push([
      r.pass,
      `${r.m}×${r.k}→${r.n}`,
      r.variant + (r.chosen ? " *" : ""),
      r.gflops === null ? "-" : r.gflops.toFixed(1),
      ms(r.gpu_ms),
      ms(r.wall_ms),
      r.status === "ok" ? "ok" : `failed: ${r.error}`,
    ]);
  }
  return t.toString() + "\n* the variant tost uses for this product on this adapter";
}
