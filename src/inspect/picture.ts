/**
 * The pictures of `tost inspect` (and of the `tost serve` page), written
 * directly as SVG and HTML strings rather than through vega-lite
 * (`src/plot.ts`): a grid of small heat maps laid over an image, with row
 * and column labels, is a few hundred rectangles in fixed places, while a
 * vega-lite facet of image marks with per-panel colour scales would be
 * longer to write and slower to render. The SVG is turned into PNG by the
 * same resvg path as every other plot (`svgToPng`, bundled DejaVu font).
 *
 * Colours: d3's viridis (from `d3-scale-chromatic`), dark for 0, yellow for
 * the top of the scale. In the vision grid each row (a block's Π, or a
 * class-attention block's weights) runs from 0 to its largest value, written
 * beside it: with H heads Π hovers around 1/H, and a fixed [0, 1] scale
 * would leave every map dark. The language strips use the fixed [0, 1]
 * scale, where the differences between tokens show well.
 *
 * Every element a test or a reader looks for has a class: `panel` groups
 * (`data-row`, `data-head`, `data-kind`) holding one `cell` rect per token,
 * `row-label`, `col-label`, `title`.
 *
 * Browser-safe: no Deno API.
 *
 * @module
 */

import { interpolateViridis } from "d3-scale-chromatic";
import { encode as encodePng } from "fast-png";
import type { LanguageMaps, VisionMaps } from "./maps.ts";
import type { RgbaImage } from "./image.ts";

/** The font every picture names (bundled for PNG rendering, see `src/plot.ts`). */
export const PICTURE_FONT = "DejaVu Sans";

/** Escape text for SVG/HTML content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) =>
      c === "&"
        ? "&amp;"
        : c === "<"
        ? "&lt;"
        : c === ">"
        ? "&gt;"
        : c === '"'
        ? "&quot;"
        : "&#39;",
  );
}

/** A generous estimate of a text's width in pixels (DejaVu Sans averages ~0.6 em). */
function textWidth(text: string, fontSize: number): number {
  return Math.ceil([...text].length * fontSize * 0.62);
}

const TITLE_SIZE = 17;
const SUBTITLE_SIZE = 11;
const MARGIN = 10;

/** A picture's width: its content's, widened to fit the title and subtitle. */
function pictureWidth(content: number, options: PictureOptions): number {
  return Math.max(
    content,
    textWidth(options.title, TITLE_SIZE) + 2 * MARGIN,
    textWidth(options.subtitle ?? "", SUBTITLE_SIZE) + 2 * MARGIN,
    440,
  );
}

/** The opening of a picture: the svg element, a white ground, the title and subtitle. */
function svgHead(width: number, height: number, options: PictureOptions): string[] {
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="${PICTURE_FONT}">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text class="title" x="${MARGIN}" y="26" font-size="${TITLE_SIZE}" font-weight="bold">${
      escapeXml(options.title)
    }</text>`,
  ];
  if (options.subtitle) {
    out.push(
      `<text class="subtitle" x="${MARGIN}" y="46" font-size="${SUBTITLE_SIZE}" fill="#444">${
        escapeXml(options.subtitle)
      }</text>`,
    );
  }
  return out;
}

/** The heat colour of `v` on `[0, max]` (clamped), as `rgb(…)`. */
export function heatColor(v: number, max = 1): string {
  const t = max > 0 ? Math.max(0, Math.min(1, v / max)) : 0;
  return interpolateViridis(t);
}

/** Base64 of bytes (browser-safe; chunked so large images do not overflow the stack). */
function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** An RGBA image as a `data:image/png;base64,…` URI (encoded with fast-png). */
export function pngDataUri(img: RgbaImage): string {
  const png = encodePng({
    width: img.width,
    height: img.height,
    data: Uint8Array.from(img.data),
    channels: 4,
    depth: 8,
  });
  return `data:image/png;base64,${base64(png)}`;
}

/** Which blocks and heads to draw, and the words around the picture. */
export interface PictureOptions {
  /** Block indices (Π rows), in order. */
  layers: readonly number[];
  /** Head indices (columns), in order. */
  heads: readonly number[];
  title: string;
  subtitle?: string;
}

/** One row of the vision grid: Π of a block or a class-attention block's weights. */
interface VisionRow {
  label: string;
  kind: "pi" | "class";
  index: number;
  /** Per chosen head: `[N]` values on the grid. */
  maps: Float64Array[];
  max: number;
  /** Per chosen head: a note under the panel (the class token's weight on itself). */
  notes: string[] | null;
}

function visionRows(maps: VisionMaps, layers: readonly number[], heads: readonly number[]) {
  const [Hp, Wp] = maps.grid;
  const N = Hp * Wp;
  const NH = maps.heads;
  const rows: VisionRow[] = layers.map((l) => ({
    label: `block ${l} · Π`,
    kind: "pi",
    index: l,
    maps: heads.map((h) => Float64Array.from({ length: N }, (_, n) => maps.pi[l][n * NH + h])),
    max: 0,
    notes: null,
  }));
  for (const r of rows) r.max = Math.max(...r.maps.map((m) => Math.max(...m)));
  maps.classAttention.forEach((w, i) => {
    const M = N + 1;
    const per = heads.map((h) => w.subarray(h * M + 1, (h + 1) * M));
    rows.push({
      label: `class attn ${i}`,
      kind: "class",
      index: i,
      maps: per.map((m) => Float64Array.from(m)),
      max: Math.max(...per.map((m) => Math.max(...m))),
      notes: heads.map((h) => `class token ${w[h * M].toFixed(2)}`),
    });
  });
  return rows;
}

/**
 * The vision picture: one row per chosen block (Π of each chosen head over
 * the token grid, laid over the image) and one per class-attention block
 * (the class token's attention over the patch tokens), a colour bar, and
 * the title (the prediction). Token `(i, j)` covers the pixels nearest its
 * receptive-field centre `(stride·i, stride·j)` (a stride-2 convolution with
 * padding 1 centres output `o` on input `2o`).
 *
 * @param imageHref the image as the model sees it (a data URI), drawn under each map
 */
export function visionSvg(maps: VisionMaps, imageHref: string, options: PictureOptions): string {
  const { layers, heads } = options;
  const [Hp, Wp] = maps.grid;
  const { height: H, width: W, stride } = maps;
  const panelW = Math.max(96, Math.min(200, Wp * 24));
  const scale = panelW / W;
  const panelH = Math.round(H * scale);
  const gap = 10;
  const labelW = 112;
  const top = options.subtitle ? 64 : 46;
  const colLabelH = 18;
  const rows = visionRows(maps, layers, heads);
  const noteH = 14;
  const rowH = (r: VisionRow) => panelH + gap + (r.notes ? noteH : 0);
  const width = pictureWidth(labelW + heads.length * (panelW + gap) + gap, options);
  const gridH = rows.reduce((s, r) => s + rowH(r), 0);
  const legendH = 46;
  const height = top + colLabelH + gridH + legendH;
  const out = svgHead(width, height, options);
  heads.forEach((h, c) => {
    const x = labelW + c * (panelW + gap) + panelW / 2;
    out.push(
      `<text class="col-label" x="${x}" y="${top + 12}" font-size="12" text-anchor="middle">` +
        `head ${h}</text>`,
    );
  });
  let y = top + colLabelH;
  for (const [r, row] of rows.entries()) {
    out.push(
      `<text class="row-label" x="${labelW - 8}" y="${y + panelH / 2 - 2}" font-size="12" ` +
        `text-anchor="end">${escapeXml(row.label)}</text>`,
      `<text class="row-scale" x="${labelW - 8}" y="${y + panelH / 2 + 13}" font-size="10" ` +
        `text-anchor="end" fill="#444">0 – ${row.max.toFixed(3)}</text>`,
    );
    row.maps.forEach((m, c) => {
      const x0 = labelW + c * (panelW + gap);
      out.push(
        `<g class="panel" data-row="${r}" data-kind="${row.kind}" data-index="${row.index}" ` +
          `data-head="${heads[c]}" transform="translate(${x0},${y})">`,
        `<image href="${imageHref}" width="${panelW}" height="${panelH}" ` +
          `preserveAspectRatio="none" image-rendering="optimizeSpeed"/>`,
      );
      for (let i = 0; i < Hp; i++) {
        for (let j = 0; j < Wp; j++) {
          // The pixels nearest the token's receptive-field centre (stride·i, stride·j):
          // bounds half-way between neighbouring centres, the outer tokens to the edges.
          const edge = (k: number, last: number, side: number, up: boolean) =>
            (up ? k === last : k === 0)
              ? (up ? side : 0)
              : Math.max(0, Math.min(side, stride * k + (up ? 0.5 : -0.5) * stride + 0.5));
          const cx0 = edge(j, Wp - 1, W, false) * scale;
          const cx1 = edge(j, Wp - 1, W, true) * scale;
          const cy0 = edge(i, Hp - 1, H, false) * scale;
          const cy1 = edge(i, Hp - 1, H, true) * scale;
          if (cx1 <= cx0 || cy1 <= cy0) continue;
          const v = m[i * Wp + j];
          out.push(
            `<rect class="cell" data-token="${i * Wp + j}" x="${cx0.toFixed(2)}" ` +
              `y="${cy0.toFixed(2)}" width="${(cx1 - cx0).toFixed(2)}" ` +
              `height="${(cy1 - cy0).toFixed(2)}" fill="${heatColor(v, row.max)}" ` +
              `fill-opacity="0.62"><title>${v.toFixed(4)}</title></rect>`,
          );
        }
      }
      out.push(
        `<rect width="${panelW}" height="${panelH}" fill="none" stroke="#999" stroke-width="0.5"/>`,
        `</g>`,
      );
      if (row.notes) {
        out.push(
          `<text class="note" x="${x0 + panelW / 2}" y="${y + panelH + 11}" font-size="9.5" ` +
            `text-anchor="middle" fill="#444">${escapeXml(row.notes[c])}</text>`,
        );
      }
    });
    y += rowH(row);
  }
  out.push(
    legend(gap, y + 6, Math.min(260, width - 2 * gap), "the row's largest value (beside it)"),
  );
  out.push(`</svg>`);
  return out.join("\n");
}

/** The colour bar from 0 to `top`, with what Π is. */
function legend(x: number, y: number, w: number, top: string): string {
  const steps = 32;
  const parts = [`<g class="legend" transform="translate(${x},${y})">`];
  for (let s = 0; s < steps; s++) {
    parts.push(
      `<rect x="${(s * w / steps).toFixed(2)}" y="0" width="${(w / steps + 0.3).toFixed(2)}" ` +
        `height="10" fill="${heatColor(s / (steps - 1))}"/>`,
    );
  }
  parts.push(
    `<text x="0" y="24" font-size="10">0</text>`,
    `<text x="${w}" y="24" font-size="10" text-anchor="end">${escapeXml(top)}</text>`,
    `<text x="0" y="38" font-size="10" fill="#444">Π[token, head]: membership, softmax over ` +
      `heads (a token's Π sums to 1 over the heads)</text>`,
    `</g>`,
  );
  return parts.join("\n");
}

/** How a token reads in a picture: spaces and line breaks made visible. */
export function showToken(text: string): string {
  return text.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(
    // deno-lint-ignore no-control-regex
    /[\u0000-\u001f]/g,
    "·",
  );
}

/** Next-token guesses for the language views. */
export interface Guess {
  text: string;
  p: number;
}

/**
 * The language picture as SVG: per chosen block, one heat strip per chosen
 * head (a cell per token, coloured by Π on [0, 1]) with the token text
 * under it; long texts wrap every `perLine` tokens. The title carries the
 * model's next-token guesses.
 */
export function languageSvg(
  maps: LanguageMaps,
  tokens: readonly string[],
  options: PictureOptions & { perLine?: number },
): string {
  const { layers, heads } = options;
  const T = maps.tokens;
  const NH = maps.heads;
  const perLine = options.perLine ?? 48;
  const shown = tokens.map(showToken);
  const longest = Math.max(1, ...shown.map((t) => [...t].length));
  const cellW = Math.min(56, Math.max(14, 7 * longest + 4));
  const cellH = 14;
  const textH = 13;
  const gap = 10;
  const labelW = 110;
  const lines = Math.ceil(T / perLine);
  const stripH = lines * (cellH + textH + 2);
  const top = options.subtitle ? 66 : 46;
  const blockTitleH = 18;
  const blockH = blockTitleH + heads.length * (stripH + 6) + gap;
  const width = pictureWidth(labelW + Math.min(T, perLine) * cellW + 2 * gap, options);
  const height = top + layers.length * blockH + 46;
  const out = svgHead(width, height, options);
  let y = top;
  for (const l of layers) {
    out.push(
      `<text class="block-label" x="${gap}" y="${y + 13}" font-size="13" font-weight="bold">` +
        `block ${l}</text>`,
    );
    y += blockTitleH;
    for (const h of heads) {
      out.push(
        `<text class="row-label" x="${labelW - 8}" y="${y + 11}" font-size="11" ` +
          `text-anchor="end">head ${h}</text>`,
        `<g class="strip" data-layer="${l}" data-head="${h}" transform="translate(${labelW},${y})">`,
      );
      for (let t = 0; t < T; t++) {
        const x = (t % perLine) * cellW;
        const ly = Math.floor(t / perLine) * (cellH + textH + 2);
        const v = maps.pi[l][t * NH + h];
        out.push(
          `<rect class="cell" data-token="${t}" x="${x}" y="${ly}" width="${cellW - 1}" ` +
            `height="${cellH}" fill="${heatColor(v)}"><title>${v.toFixed(4)}</title></rect>`,
          `<text class="token" x="${x + (cellW - 1) / 2}" y="${ly + cellH + textH - 2}" ` +
            `font-size="10" text-anchor="middle">${escapeXml(shown[t])}</text>`,
        );
      }
      out.push(`</g>`);
      y += stripH + 6;
    }
    y += gap;
  }
  out.push(legend(gap, y + 4, Math.min(260, width - 2 * gap), "1"));
  out.push(`</svg>`);
  return out.join("\n");
}

/**
 * The language picture as a self-contained HTML page (no script): per
 * chosen block and head, the text as a row of tokens, each over its Π
 * colour (hover for the value), wrapping like text; the next-token guesses
 * in the heading.
 */
export function languageHtml(
  maps: LanguageMaps,
  tokens: readonly string[],
  options: PictureOptions & { guesses: readonly Guess[] },
): string {
  const NH = maps.heads;
  const guess = options.guesses
    .map((g) => `<code>${escapeXml(showToken(g.text))}</code> ${(100 * g.p).toFixed(1)}%`)
    .join(", ");
  const sections = options.layers.map((l) => {
    const strips = options.heads.map((h) => {
      const cells = tokens.map((tok, t) => {
        const v = maps.pi[l][t * NH + h];
        return `<span class="tok" data-token="${t}" title="Π = ${v.toFixed(4)}">` +
          `<span class="heat" style="background:${heatColor(v)}"></span>` +
          `<span class="text">${escapeXml(showToken(tok))}</span></span>`;
      }).join("");
      return `<div class="strip" data-layer="${l}" data-head="${h}">` +
        `<span class="label">head ${h}</span><span class="tokens">${cells}</span></div>`;
    }).join("\n");
    return `<section class="layer" data-layer="${l}"><h2>block ${l}</h2>\n${strips}</section>`;
  }).join("\n");
  const bar = Array.from(
    { length: 11 },
    (_, i) => `<span style="background:${heatColor(i / 10)}">${(i / 10).toFixed(1)}</span>`,
  ).join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>${escapeXml(options.title)}</title>
<style>
body { font-family: "${PICTURE_FONT}", sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; } h2 { font-size: 1em; margin: 1em 0 0.3em; }
.sub { color: #555; font-size: 0.85em; }
.strip { display: flex; align-items: flex-start; margin: 0.2em 0; }
.label { width: 5em; flex: none; font-size: 0.8em; padding-top: 0.1em; }
.tokens { display: flex; flex-wrap: wrap; }
.tok { display: inline-flex; flex-direction: column; align-items: center; margin: 0 1px 3px 0; }
.heat { display: block; width: 100%; min-width: 0.9em; height: 0.9em; }
.text { font-family: "DejaVu Sans Mono", monospace; font-size: 0.8em; white-space: pre; }
.legend span { display: inline-block; padding: 0 0.4em; font-size: 0.7em; color: white; }
</style></head>
<body>
<h1 class="title">${escapeXml(options.title)}</h1>
<p class="guess">next-token guess: ${guess}</p>
${options.subtitle ? `<p class="sub">${escapeXml(options.subtitle)}</p>` : ""}
<p class="legend sub">Π[token, head] (membership, softmax over heads): ${bar}</p>
${sections}
</body></html>
`;
}
