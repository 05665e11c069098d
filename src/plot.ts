/**
 * Plot rendering shared by `tost bench --plot` and `tost train`'s loss curve:
 * a vega-lite spec to SVG (no DOM needed), and SVG to PNG with resvg
 * (WebAssembly) and a bundled DejaVu font, so both work offline and without
 * system fonts.
 *
 * @module
 */

import * as vega from "vega";
import * as vl from "vega-lite";
import { initWasm, Resvg } from "@resvg/resvg-wasm";
import resvgWasm from "@resvg/resvg-wasm/index_bg.wasm" with { type: "bytes" };
import dejavuSans from "dejavu-fonts-ttf/ttf/DejaVuSans.ttf" with { type: "bytes" };

/** The font family every plot uses (bundled, see {@linkcode svgToPng}). */
export const PLOT_FONT = "DejaVu Sans";

/** Render a vega-lite spec as an SVG string. */
export async function specToSvg(spec: vl.TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: "none" });
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
    font: { loadSystemFonts: false, fontBuffers: [dejavuSans], defaultFontFamily: PLOT_FONT },
  });
  return r.render().asPng();
}
