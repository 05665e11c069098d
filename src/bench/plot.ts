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

/** Translucent lines with filled points (their shape is the operator's). */
const MARK = {
  type: "line",
  point: { filled: true, size: 60, opacity: 0.9 },
  strokeWidth: 2,
  opacity: 0.75,
} as const;

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
  // Axes span the data, not the enclosing powers of ten ("nice" would stretch 32…128 to 10…1000).
  const logScale = { type: "log", nice: false, padding: 12 } as const;
  const x = {
    field: "tokens",
    type: "quantitative",
    scale: logScale,
    title: "tokens (batch × sequence)",
  } as const;
  // Each operator has its own colour and point shape, and lines are translucent, so a
  // series that coincides with another (causal and full softmax memory) stays visible.
  const color = { field: "op", type: "nominal", title: "operator" } as const;
  const shape = { field: "op", type: "nominal", title: "operator" } as const;
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
        mark: MARK,
        encoding: {
          x,
          y: { field: "ms", type: "quantitative", scale: logScale, title: "time (ms)" },
          color,
          shape,
          ...dash,
        },
      },
      {
        width: 320,
        height: 260,
        mark: MARK,
        encoding: {
          x,
          y: {
            field: "mib",
            type: "quantitative",
            scale: logScale,
            title: "peak memory (MiB)",
          },
          color,
          shape,
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
