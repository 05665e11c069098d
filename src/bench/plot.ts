/**
 * `tost bench --plot`: log-log time and memory against tokens, one line per
 * operator (coloured) and pass (solid forward, dashed forward+backward),
 * rendered by `src/plot.ts`.
 *
 * @module
 */

import type * as vl from "vega-lite";
import { PLOT_FONT, specToSvg } from "../plot.ts";

/** What a plotted point needs (operator and model records both have it). */
export interface PlotRecord {
  op: string;
  /** `fwd` or `fwd+bwd`. */
  pass: string;
  n: number;
  batch: number;
  gpu_ms: number | null;
  wall_ms: number | null;
  peak_bytes: number | null;
  status: "ok" | "failed";
}

function spec(records: readonly PlotRecord[], title: string): vl.TopLevelSpec {
  const values = records
    .filter((r) => r.status === "ok")
    .map((r) => ({
      op: r.op,
      pass: r.pass,
      tokens: r.n * r.batch,
      ms: r.gpu_ms ?? r.wall_ms,
      mib: (r.peak_bytes ?? 0) / 2 ** 20,
    }));
  const x = {
    field: "tokens",
    type: "quantitative",
    scale: { type: "log" },
    title: "tokens (batch × sequence)",
  } as const;
  const color = { field: "op", type: "nominal", title: "operator" } as const;
  // Dashes only when both passes are plotted (a forward-only plot keeps one legend).
  const passes = new Set(values.map((v) => v.pass));
  const dash = passes.size > 1
    ? {
      strokeDash: {
        field: "pass",
        type: "nominal",
        title: "pass",
        sort: ["fwd", "fwd+bwd"],
        scale: { domain: ["fwd", "fwd+bwd"], range: [[1, 0], [6, 3]] },
        legend: {
          symbolType: "stroke",
          symbolSize: 300,
          symbolStrokeWidth: 2,
          encode: { symbols: { update: { stroke: { value: "#555" } } } },
        },
      },
    } as const
    : {};
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title,
    data: { values },
    hconcat: [
      {
        width: 320,
        height: 260,
        mark: { type: "line", point: true },
        encoding: {
          x,
          y: { field: "ms", type: "quantitative", scale: { type: "log" }, title: "time (ms)" },
          color,
          ...dash,
        },
      },
      {
        width: 320,
        height: 260,
        mark: { type: "line", point: true },
        encoding: {
          x,
          y: {
            field: "mib",
            type: "quantitative",
            scale: { type: "log" },
            title: "peak memory (MiB)",
          },
          color,
          ...dash,
        },
      },
    ],
    config: { font: PLOT_FONT },
  } as vl.TopLevelSpec;
}

/** Render the benchmark plot as an SVG string. */
export function renderSvg(records: readonly PlotRecord[], title: string): Promise<string> {
  return specToSvg(spec(records, title));
}
