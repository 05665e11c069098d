/**
 * `tost inspect` run as the real program on the shared fixture models: the
 * vision grid from an MNIST digit and from a PNG file (PNG and SVG out),
 * the language strips (HTML, SVG), `--json`'s numbers, and exit code 2 with
 * one `error:` line for each user mistake, before any work.
 */

import assert from "node:assert/strict";
import { encode as encodePng } from "fast-png";
import { assertSnapshot, runTost } from "./_run.ts";
import { byClass, parseXml, textOf } from "../inspect/_xml.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const VISION = `${FIXTURES}tost_vision_small.pth`;
const LANG = `${FIXTURES}tost_lang_small.pt`;
const VOCAB = `${FIXTURES}shakespeare_char_vocab.txt`;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tost-inspect-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A 40×30 grey PNG: a dark bar on light paper. */
function digitPng(): Uint8Array {
  const [w, h] = [30, 40];
  const data = new Uint8Array(w * h).fill(230);
  for (let y = 5; y < 35; y++) for (let x = 13; x < 17; x++) data[y * w + x] = 20;
  return encodePng({ width: w, height: h, data, channels: 1 });
}

Deno.test("tost inspect --mnist: a PNG grid, and the numbers with --json", async () => {
  await withDir(async (dir) => {
    const r = await runTost(["inspect", VISION, "--mnist", "17", "--out", `${dir}/maps.png`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^MNIST test #17, label \d: predicted \d \(p = 0\.\d{3}\)$/m);
    const png = await Deno.readFile(`${dir}/maps.png`);
    assert.deepEqual([...png.slice(1, 4)], [0x50, 0x4e, 0x47]);
    const j = await runTost([
      "inspect",
      VISION,
      "--mnist",
      "17",
      "--json",
      "--layers",
      "1",
      "--heads",
      "0,3",
    ]);
    assert.equal(j.code, 0, j.stderr);
    const out = JSON.parse(j.stdout);
    assert.deepEqual(out.grid, [4, 4]);
    assert.equal(out.stride, 8);
    assert.deepEqual(out.heads, [0, 3]);
    assert.equal(out.pi.length, 1);
    assert.equal(out.pi[0].block, 1);
    assert.deepEqual(out.pi[0].shape, [2, 4, 4]);
    assert.equal(out.pi[0].values.length, 2);
    assert.equal(out.pi[0].values[0].length, 4);
    assert.equal(out.class_attention.length, 2);
    assert.equal(out.class_attention[0].class_token.length, 2);
    assert.equal(out.input.label, JSON.parse(j.stdout).input.label);
    assert.equal(out.probabilities.length, 10);
    assert.equal(out.predicted, out.probabilities.indexOf(Math.max(...out.probabilities)));
    assert.match(r.stdout, new RegExp(`predicted ${out.predicted} `));
  });
});

Deno.test("tost inspect --image: any size, resized to the model's img_size, SVG out", async () => {
  await withDir(async (dir) => {
    await Deno.writeFile(`${dir}/digit.png`, digitPng());
    const r = await runTost([
      "inspect",
      VISION,
      "--image",
      `${dir}/digit.png`,
      "--out",
      `${dir}/maps.svg`,
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    // The fixture's img_size is 32 on the shorter side: 30×40 → 32×43, grid ⌈·/8⌉ = 4×6.
    assert.equal(j.input.width, 32);
    assert.equal(j.input.height, 43);
    assert.deepEqual(j.grid, [6, 4]);
    assert.equal(j.input.normalisation, "imagenet");
    const svg = parseXml(await Deno.readTextFile(`${dir}/maps.svg`));
    const panels = byClass(svg, "panel");
    assert.equal(panels.length, (2 + 2) * 4);
    for (const p of panels) assert.equal(byClass(p, "cell").length, 24);
    assert.match(textOf(byClass(svg, "title")[0]), /^digit\.png: predicted \d \(p = /);
    // Native size and MNIST normalisation (inverted: the paper is light).
    const n = await runTost([
      "inspect",
      VISION,
      "--image",
      `${dir}/digit.png`,
      "--size",
      "native",
      "--normalise",
      "mnist",
      "--json",
    ]);
    assert.equal(n.code, 0, n.stderr);
    const k = JSON.parse(n.stdout);
    assert.deepEqual([k.input.height, k.input.width, k.input.inverted], [40, 30, true]);
    assert.deepEqual(k.grid, [5, 4]);
  });
});

Deno.test("tost inspect --text: HTML and SVG strips and the next-token guess", async () => {
  await withDir(async (dir) => {
    const text = "ROMEO: soft";
    const r = await runTost([
      "inspect",
      LANG,
      "--vocab",
      VOCAB,
      "--text",
      text,
      "--out",
      `${dir}/pi.html`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^next token: ".*" \(p = 0\.\d{3}\)$/m);
    const page = parseXml(await Deno.readTextFile(`${dir}/pi.html`));
    const strips = byClass(page, "strip");
    assert.equal(strips.length, 2 * 4);
    for (const s of strips) assert.equal(byClass(s, "tok").length, text.length);
    const s = await runTost([
      "inspect",
      LANG,
      "--vocab",
      VOCAB,
      "--text",
      text,
      "--layers",
      "0",
      "--heads",
      "1-2",
      "--out",
      `${dir}/pi.svg`,
      "--json",
    ]);
    assert.equal(s.code, 0, s.stderr);
    const j = JSON.parse(s.stdout);
    assert.deepEqual(j.tokens, [...text]);
    assert.deepEqual(j.pi[0].shape, [2, text.length]);
    assert.equal(j.next.length, 5);
    const svg = parseXml(await Deno.readTextFile(`${dir}/pi.svg`));
    assert.deepEqual(byClass(svg, "strip").map((e) => e.attrs["data-head"]), ["1", "2"]);
  });
});

Deno.test("tost inspect: exit 2 with one error line for each user mistake", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/notes.txt`, "not an image\n");
    await Deno.writeFile(`${dir}/d.png`, digitPng());
    const cases: [string[], RegExp][] = [
      [
        ["inspect", VISION, "--image", `${dir}/missing.png`, "--out", `${dir}/m.png`],
        /Cannot read --image .*no such file/,
      ],
      [
        ["inspect", VISION, "--image", `${dir}/notes.txt`, "--out", `${dir}/m.png`],
        /not a PNG or JPEG/,
      ],
      [
        ["inspect", LANG, "--vocab", VOCAB, "--image", `${dir}/x.png`, "--out", `${dir}/m.html`],
        /--image is for vision models/,
      ],
      [
        ["inspect", VISION, "--text", "hi", "--out", `${dir}/m.png`],
        /--text is for language models/,
      ],
      [["inspect", VISION, "--mnist", "3"], /give --out/],
      [["inspect", VISION, "--mnist", "3", "--image", `${dir}/x.png`, "--json"], /exactly one of/],
      [["inspect", VISION, "--mnist", "99999", "--json"], /below 10000/],
      [["inspect", VISION, "--mnist", "-1", "--json"], /--mnist must be/],
      [
        ["inspect", VISION, "--mnist", "3", "--layers", "5", "--json"],
        /--layers: 5 is out of range/,
      ],
      [["inspect", VISION, "--mnist", "3", "--heads", "x", "--json"], /--heads must be/],
      [["inspect", VISION, "--mnist", "3", "--out", `${dir}/m.txt`], /\.png, \.svg/],
      [
        ["inspect", VISION, "--image", `${dir}/d.png`, "--out", `${dir}/d.png`],
        /same file as --image/,
      ],
      [["inspect", VISION, "--mnist", "3", "--out", VISION], /not "\.pth"/],
      [["inspect", VISION, "--mnist", "3", "--out", `${dir}/nodir/m.png`], /does not exist/],
      [["inspect", VISION, "--mnist", "3", "--size", "64", "--json"], /--size applies to --image/],
      [
        ["inspect", LANG, "--vocab", VOCAB, "--text", "x".repeat(65), "--json"],
        /more than the model's block_size 64/,
      ],
      [["inspect", LANG, "--vocab", VOCAB, "--text", "~", "--json"], /Cannot encode --text/],
      [["inspect", LANG, "--text", "hi", "--json"], /carries no vocabulary/],
      [["inspect", `${dir}/notes.txt`, "--text", "hi", "--json"], /model/],
    ];
    for (const [args, message] of cases) {
      const r = await runTost(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(" "));
      assert.equal(r.stderr.split("\n").filter((l) => l.startsWith("error:")).length, 1);
    }
    const left = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(left.toSorted(), ["d.png", "notes.txt"], "nothing written");
  });
});

Deno.test("tost inspect --help matches its snapshot", async () => {
  const r = await runTost(["inspect", "--help"]);
  assert.equal(r.code, 0);
  await assertSnapshot("help_inspect.txt", r.stdout);
});
