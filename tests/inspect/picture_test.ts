/**
 * The pictures' structure: the vision grid has one panel per chosen block
 * and head plus one per class-attention block and head, each with one cell
 * per token of the grid over the image, labelled rows and columns and the
 * prediction in the title; the language SVG and HTML have one strip per
 * chosen block and head with a cell and the text of every token. Checked on
 * hand-made maps whose values say where they belong.
 */

import assert from "node:assert/strict";
import { interpolateViridis } from "d3-scale-chromatic";
import type { LanguageMaps, VisionMaps } from "../../src/inspect/maps.ts";
import {
  escapeXml,
  heatColor,
  languageHtml,
  languageSvg,
  pngDataUri,
  showToken,
  visionSvg,
} from "../../src/inspect/picture.ts";
import { decodeImage } from "../../src/inspect/image.ts";
import { byClass, parseXml, textOf } from "./_xml.ts";

/** A 3×4 grid (12 tokens, stride 8 on a 24×32 image), 3 blocks, 3 heads, 2 class blocks. */
function visionMapsFixture(): VisionMaps {
  const [Hp, Wp, NH, N] = [3, 4, 3, 12];
  // Π[l][n, h] = (l + 1)·(n + 1)·(h + 1) scaled below 1; the largest is block 2, token 11, head 2.
  const pi = [0, 1, 2].map((l) =>
    Float32Array.from(
      { length: N * NH },
      (_, i) => ((l + 1) * (1 + Math.floor(i / NH)) * (1 + i % NH)) / 200,
    )
  );
  const M = N + 1;
  const classAttention = [0, 1].map(() =>
    Float64Array.from({ length: NH * M }, (_, i) => (i % M === 0 ? 0.5 : 0.5 / N))
  );
  return {
    height: 24,
    width: 32,
    grid: [Hp, Wp],
    stride: 8,
    heads: NH,
    logits: new Float32Array([0, 2, 1]),
    probabilities: new Float64Array([0.09, 0.665, 0.245]),
    predicted: 1,
    pi,
    classAttention,
  };
}

const IMAGE = pngDataUri({
  width: 2,
  height: 1,
  data: new Uint8Array([0, 0, 0, 255, 9, 9, 9, 255]),
});

Deno.test("vision picture: one panel per chosen block × head and class block × head, a cell per token, labels", () => {
  const maps = visionMapsFixture();
  const svg = visionSvg(maps, IMAGE, {
    layers: [0, 2],
    heads: [0, 2],
    title: "MNIST test #3: predicted 1 (p = 0.665)",
    subtitle: "a subtitle & more",
  });
  const doc = parseXml(svg);
  const root = doc.children[0];
  assert.equal(root.name, "svg");
  assert.ok(Number(root.attrs.width) > 0 && Number(root.attrs.height) > 0);
  assert.equal(textOf(byClass(doc, "title")[0]), "MNIST test #3: predicted 1 (p = 0.665)");
  assert.equal(textOf(byClass(doc, "subtitle")[0]), "a subtitle & more");
  assert.deepEqual(byClass(doc, "col-label").map(textOf), ["head 0", "head 2"]);
  assert.deepEqual(byClass(doc, "row-label").map(textOf), [
    "block 0 · Π",
    "block 2 · Π",
    "class attn 0",
    "class attn 1",
  ]);
  const panels = byClass(doc, "panel");
  assert.equal(panels.length, 4 * 2);
  for (const p of panels) {
    assert.equal(p.children.filter((c) => c.name === "image").length, 1);
    assert.equal(p.children[0].attrs.href, IMAGE);
    const cells = byClass(p, "cell");
    assert.equal(cells.length, 12, "a cell per token");
    assert.deepEqual(cells.map((c) => Number(c.attrs["data-token"])), [...Array(12).keys()]);
  }
  assert.deepEqual(
    panels.map((p) => `${p.attrs["data-kind"]}${p.attrs["data-index"]}h${p.attrs["data-head"]}`),
    ["pi0h0", "pi0h2", "pi2h0", "pi2h2", "class0h0", "class0h2", "class1h0", "class1h2"],
  );
  // Each row runs from 0 to its largest value: block 2's largest Π is token 11, head 2.
  const block2head2 = byClass(panels[3], "cell");
  assert.equal(block2head2[11].attrs.fill, interpolateViridis(1));
  assert.equal(textOf(block2head2[11]), (3 * 12 * 3 / 200).toFixed(4));
  assert.equal(byClass(doc, "row-scale")[1].text, `0 – ${(3 * 12 * 3 / 200).toFixed(3)}`);
  // Cells tile the image: token (i, j) centred on pixel (8i, 8j), clipped to the image.
  const first = byClass(panels[0], "cell")[0];
  const scale = Number(panels[0].children[0].attrs.width) / 32;
  assert.equal(Number(first.attrs.x), 0);
  assert.ok(Math.abs(Number(first.attrs.width) - 4.5 * scale) < 0.01);
  const last = byClass(panels[0], "cell")[11];
  assert.ok(Math.abs(Number(last.attrs.x) + Number(last.attrs.width) - 32 * scale) < 0.01);
  // The class token's own weight is written under each class-attention panel.
  assert.deepEqual(byClass(doc, "note").map(textOf), Array(4).fill("class token 0.50"));
});

Deno.test("language pictures: a strip per chosen block × head with every token's cell and text", () => {
  const tokens = ["T", "h", "e", " ", "<", "\n"];
  const T = tokens.length;
  const maps: LanguageMaps = {
    tokens: T,
    heads: 2,
    logits: new Float32Array(3),
    probabilities: new Float64Array([0.2, 0.5, 0.3]),
    pi: [0, 1].map((l) => Float32Array.from({ length: T * 2 }, (_, i) => (i % 2 ? 1 : 0) ^ l)),
  };
  const options = { layers: [1], heads: [0, 1], title: 'next token: "e" (p = 0.500)' };
  const svg = parseXml(languageSvg(maps, tokens, { ...options, perLine: 4 }));
  const strips = byClass(svg, "strip");
  assert.deepEqual(strips.map((s) => `${s.attrs["data-layer"]}:${s.attrs["data-head"]}`), [
    "1:0",
    "1:1",
  ]);
  for (const [k, s] of strips.entries()) {
    const cells = byClass(s, "cell");
    assert.equal(cells.length, T);
    // Block 1: head 0 holds Π = 1, head 1 Π = 0 everywhere.
    for (const c of cells) assert.equal(c.attrs.fill, heatColor(k === 0 ? 1 : 0));
    assert.deepEqual(byClass(s, "token").map(textOf), tokens.map(showToken));
    // Wrapped after 4 tokens: the fifth cell starts a new line.
    assert.equal(cells[4].attrs.x, "0");
    assert.ok(Number(cells[4].attrs.y) > 0);
  }
  assert.deepEqual(byClass(svg, "token").map(textOf).slice(0, T), ["T", "h", "e", "␣", "<", "↵"]);
  const html = languageHtml(maps, tokens, {
    ...options,
    guesses: [{ text: "e", p: 0.5 }, { text: " ", p: 0.3 }],
  });
  const page = parseXml(html);
  assert.equal(textOf(byClass(page, "title")[0]), options.title);
  assert.match(textOf(byClass(page, "guess")[0]), /next-token guess: e 50\.0%, ␣ 30\.0%/);
  const rows = byClass(page, "strip");
  assert.equal(rows.length, 2);
  for (const r of rows) {
    assert.equal(byClass(r, "tok").length, T);
    assert.deepEqual(byClass(r, "text").map(textOf), tokens.map(showToken));
  }
  assert.match(byClass(rows[0], "tok")[0].attrs.title, /^Π = 1\.0000$/);
});

Deno.test("picture helpers: escaping, colours, PNG data URIs round-trip", () => {
  assert.equal(escapeXml(`<a href="x">&'`), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
  assert.equal(heatColor(2, 1), interpolateViridis(1));
  assert.equal(heatColor(-1), interpolateViridis(0));
  assert.equal(heatColor(0.5, 0), interpolateViridis(0));
  const img = { width: 3, height: 2, data: Uint8Array.from({ length: 24 }, (_, i) => i * 10) };
  const uri = pngDataUri(img);
  assert.ok(uri.startsWith("data:image/png;base64,"));
  const bytes = Uint8Array.from(atob(uri.slice(22)), (c) => c.charCodeAt(0));
  const back = decodeImage(bytes);
  assert.equal(back.width, 3);
  assert.equal(back.height, 2);
  // Alpha below 255 is laid on white by the decoder; opaque pixels come back as they were.
  const opaque = { width: 1, height: 1, data: new Uint8Array([12, 34, 56, 255]) };
  const again = decodeImage(
    Uint8Array.from(atob(pngDataUri(opaque).slice(22)), (c) => c.charCodeAt(0)),
  );
  assert.deepEqual([...again.data], [12, 34, 56, 255]);
});
