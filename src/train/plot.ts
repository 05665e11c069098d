/**
 * The loss curve of a training run (training loss per step, validation loss
 * per evaluation) as SVG via vega-lite, and as PNG through `src/plot.ts`'s
 * resvg rasteriser (bundled font, works offline).
 *
 * @module
 */

import type * as vl from "vega-lite";
import { PLOT_FONT, specToSvg, svgToPng } from "../plot.ts";

/** One point of a loss curve. */
export interface LossPoint {
  step: number;
  loss: number;
  split: "train" | "val";
}

/** Render loss against step, one line per split, as an SVG string. */
export async function lossCurveSvg(points: readonly LossPoint[], title: string): Promise<string> {
  const spec = {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title,
    width: 520,
    height: 300,
    data: { values: points.map((p) => ({ ...p })) },
    mark: { type: "line", point: { size: 12 } },
    encoding: {
      x: { field: "step", type: "quantitative", title: "step" },
      y: {
        field: "loss",
        type: "quantitative",
        title: "cross-entropy (nats/token)",
        scale: { zero: false },
      },
      color: { field: "split", type: "nominal", title: "split" },
    },
    config: { font: PLOT_FONT },
  } as vl.TopLevelSpec;
  return await specToSvg(spec);
}

/** Rasterise a loss curve SVG to PNG. */
export function lossCurvePng(svg: string): Promise<Uint8Array> {
  return svgToPng(svg);
}

/**
 * Read a run's metrics log (`log.jsonl`) into loss points, keeping for each
 * step and split the last record (a resumed run re-logs the steps it redoes).
 */
export async function readLossLog(path: string): Promise<LossPoint[]> {
  const text = await Deno.readTextFile(path);
  const byKey = new Map<string, LossPoint>();
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const r = JSON.parse(line) as Record<string, unknown>;
    const step = r.step as number;
    if (typeof r.loss === "number") byKey.set(`t${step}`, { step, loss: r.loss, split: "train" });
    if (typeof r.val_loss === "number") {
      byKey.set(`v${step}`, { step, loss: r.val_loss, split: "val" });
    }
  }
  return [...byKey.values()].sort((a, b) => a.step - b.step);
}
