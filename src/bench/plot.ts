/**
 * `tost bench --plot`: log-log time and memory against tokens, one line per
 * operator (coloured) and pass (solid forward, dashed forward+backward), rendered with vega-lite to SVG (no DOM needed) and to PNG with
 * resvg (WebAssembly) and a bundled DejaVu font, so it works offline and
 * without system fonts.
 *
 * @module
 */

import * as vega from "vega";
import * as vl from "vega-lite";
import { initWasm, Resvg } from "@resvg/resvg-wasm";
import resvgWasm from "@resvg/resvg-wasm/index_bg.wasm" with { type: "bytes" };
import dejavuSans from "dejavu-fonts-ttf/ttf/DejaVuSans.ttf" with { type: "bytes" };
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
    config: { font: "DejaVu Sans" },
  } as vl.TopLevelSpec;
}

/** Render the benchmark plot as an SVG string. */
export async function renderSvg(records: readonly PlotRecord[], title: string): Promise<string> {
  const compiled = vl.compile(spec(records, title)).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

let resvgReady: Promise<void> | undefined;

/** Rasterise an SVG to PNG (white background, 2× scale). */
export async function svgToPng(svg: string): Promise<Uint8Array> {
  resvgReady ??= initWasm(resvgWasm);
  await resvgReady;
  const r = new Resvg(svg, {
    background: "white",
    fitTo: { mode: "zoom", value: 2 },
    font: { loadSystemFonts: false, fontBuffers: [dejavuSans], defaultFontFamily: "DejaVu Sans" },
  });
  return r.render().asPng();
}
