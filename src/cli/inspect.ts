/**
 * `tost inspect`: see inside ToST. TSSA gives every token a membership Π
 * over the heads (softmax over heads, per token); the paper's claim is that
 * these memberships group tokens — for images, object parts. This command
 * draws them, read from the model's one forward (`src/inspect/maps.ts`):
 *
 * - vision: `--image photo.png|jpg` or `--mnist N` → per chosen block and
 *   head, Π over the token grid as a heat map laid over the image, and the
 *   class token's attention of the class-attention blocks; the title gives
 *   the predicted class and its probability (PNG or SVG);
 * - language: `--text "…"` → per block and head a heat strip of Π with each
 *   token under it, and the next-token guess (HTML, SVG or PNG);
 * - `--json`: the numbers on stdout.
 *
 * @module
 */

import { Command } from "commander";
import { Gpu } from "../gpu/runtime.ts";
import { destroyModel, readModelFile, uploadModel } from "../model/load.ts";
import type { ModelFile } from "../model/load.ts";
import { loadMnistTest, mnistBatch } from "../data/mnist.ts";
import { decodeImage, inputToRgba, normalisationFor, prepareImage } from "../inspect/image.ts";
import type { Normalisation, PreparedImage } from "../inspect/image.ts";
import { languageMaps, topK, visionMaps } from "../inspect/maps.ts";
import type { LanguageMaps, VisionMaps } from "../inspect/maps.ts";
import { languageHtml, languageSvg, pngDataUri, visionSvg } from "../inspect/picture.ts";
import { UsageError } from "./_errors.ts";
import { printJson, warnNonFiniteWeights } from "./_output.ts";
import { modelCodec } from "./_codec.ts";
import { checkWritableFile, refuseOverwritingInputs, userFile } from "./_files.ts";
import { atomicTempPath, writeError } from "../io/atomic.ts";

/**
 * Parse `--layers`/`--heads`: `all`, or indices and ranges (`0,2-3`), each
 * below `count`.
 *
 * @throws {UsageError} for anything else
 * @example
 * ```ts
 * import { parseIndexList } from "./inspect.ts";
 * if (parseIndexList("--heads", "0,2-3", 4).join() !== "0,2,3") throw new Error();
 * ```
 */
export function parseIndexList(flag: string, value: string, count: number): number[] {
  if (value.trim() === "all") return Array.from({ length: count }, (_, i) => i);
  const out: number[] = [];
  for (const part of value.split(",")) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) {
      throw new UsageError(`${flag} must be "all" or indices like 0,2-3, got "${value}"`);
    }
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new UsageError(`${flag}: the range ${part.trim()} runs backwards`);
    for (let i = a; i <= b; i++) {
      if (i >= count) {
        throw new UsageError(
          `${flag}: ${i} is out of range: the model has ${count} (0–${count - 1})`,
        );
      }
      if (!out.includes(i)) out.push(i);
    }
  }
  return out;
}

/** Parse `--size`: `native`, a number (the shorter side) or `HxW`. */
function parseSize(value: string): number | "native" | [number, number] {
  if (value === "native") return "native";
  const one = /^(\d+)$/.exec(value);
  const two = /^(\d+)x(\d+)$/i.exec(value);
  const n = one ? [Number(one[1])] : two ? [Number(two[1]), Number(two[2])] : null;
  if (!n || n.some((v) => v < 1 || v > 4096)) {
    throw new UsageError(
      `--size must be native, a side in 1..4096 (the shorter side) or HxW, got "${value}"`,
    );
  }
  return n.length === 1 ? n[0] : [n[0], n[1]];
}

/** Write a file atomically (a temporary beside it, renamed into place). */
async function writeOutput(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = atomicTempPath(path);
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data, { createNew: true });
    else await Deno.writeFile(tmp, data, { createNew: true });
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw writeError(path, err);
  }
}

function extensionOf(path: string): string {
  const m = /\.([a-z0-9]+)$/i.exec(path);
  return m ? m[1].toLowerCase() : "";
}

/** Nested arrays `[head][i][j]` (or `[head][t]`) of chosen heads from a `[tokens, NH]` map. */
function byHead(
  values: ArrayLike<number>,
  NH: number,
  heads: readonly number[],
  grid: readonly number[],
) {
  const N = values.length / NH;
  return heads.map((h) => {
    const row = Array.from({ length: N }, (_, n) => values[n * NH + h]);
    if (grid.length === 1) return row;
    return Array.from({ length: grid[0] }, (_, i) => row.slice(i * grid[1], (i + 1) * grid[1]));
  });
}

interface VisionInput {
  /** `[C, H, W]`, normalised. */
  data: Float32Array<ArrayBuffer>;
  height: number;
  width: number;
  source: string;
  normalisation: Normalisation;
  inverted: boolean;
  label: number | null;
}

async function readVisionInput(
  file: ModelFile,
  options: { image?: string; mnist?: number; size?: string; normalise?: string },
): Promise<VisionInput> {
  const cfg = file.config;
  if (cfg.family !== "vision") throw new Error("unreachable");
  const C = cfg.in_chans;
  if (options.mnist !== undefined) {
    const set = await loadMnistTest();
    if (options.mnist >= set.count) {
      throw new UsageError(
        `--mnist must be below ${set.count} (the test set), got ${options.mnist}`,
      );
    }
    return {
      data: mnistBatch(set, options.mnist, 1, C),
      height: set.rows,
      width: set.cols,
      source: `MNIST test #${options.mnist}`,
      normalisation: "mnist",
      inverted: false,
      label: set.labels[options.mnist],
    };
  }
  const path = options.image!;
  const img = await userFile("--image", path, async () => {
    const bytes = await Deno.readFile(path);
    return decodeImage(bytes);
  });
  const normalisation = (options.normalise as Normalisation | undefined) ??
    normalisationFor(file.metadata);
  const size = options.size === undefined ? cfg.img_size : parseSize(options.size);
  let ready: PreparedImage;
  try {
    ready = prepareImage(img, { channels: C, imgSize: cfg.img_size }, normalisation, size);
  } catch (err) {
    throw new UsageError(`--image "${path}": ${(err as Error).message}`);
  }
  return {
    data: ready.input,
    height: ready.height,
    width: ready.width,
    source: path.split("/").pop()!,
    normalisation,
    inverted: ready.inverted,
    label: null,
  };
}

function visionJson(
  model: string,
  input: VisionInput,
  maps: VisionMaps,
  layers: number[],
  heads: number[],
  out: string | undefined,
) {
  const [Hp, Wp] = maps.grid;
  const M = Hp * Wp + 1;
  return {
    model,
    input: {
      source: input.source,
      height: input.height,
      width: input.width,
      normalisation: input.normalisation,
      inverted: input.inverted,
      label: input.label,
    },
    grid: [Hp, Wp],
    stride: maps.stride,
    heads,
    predicted: maps.predicted,
    probability: maps.probabilities[maps.predicted],
    probabilities: Array.from(maps.probabilities),
    pi: layers.map((l) => ({
      block: l,
      shape: [heads.length, Hp, Wp],
      values: byHead(maps.pi[l], maps.heads, heads, [Hp, Wp]),
    })),
    class_attention: maps.classAttention.map((w, i) => ({
      block: i,
      shape: [heads.length, Hp, Wp],
      class_token: heads.map((h) => w[h * M]),
      values: heads.map((h) => {
        const row = Array.from(w.subarray(h * M + 1, (h + 1) * M));
        return Array.from({ length: Hp }, (_, r) => row.slice(r * Wp, (r + 1) * Wp));
      }),
    })),
    out: out ?? null,
  };
}

async function svgOrPng(path: string, svg: string): Promise<void> {
  if (extensionOf(path) === "svg") return await writeOutput(path, svg);
  const { svgToPng } = await import("../plot.ts");
  await writeOutput(path, await svgToPng(svg));
}

/** Build the `inspect` subcommand. */
export function inspectCommand() {
  return new Command("inspect")
    .description(
      "Draw TSSA's head memberships Π (and the class attention) of a ToST model on an input.",
    )
    .argument(
      "<model>",
      "tost .safetensors file or PyTorch checkpoint (.pt/.pth, converted on the fly)",
    )
    .option("--image <file>", "vision: a PNG or JPEG image")
    .option("--mnist <n>", "vision: digit n of the bundled MNIST test set", (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) {
        throw new UsageError(`--mnist must be an index ≥ 0 into the MNIST test set, got "${v}"`);
      }
      return n;
    })
    .option("--text <text>", "language: the text to run")
    .option("--layers <list>", "blocks to draw: all, or indices like 0,2-3", "all")
    .option("--heads <list>", "heads to draw: all, or indices like 0,2-3", "all")
    .option(
      "--size <size>",
      "vision --image: native, the shorter side in pixels, or HxW (default: the model's img_size " +
        "on the shorter side)",
    )
    .option(
      "--normalise <kind>",
      "vision --image: mnist or imagenet (default: mnist for models tost trained on MNIST)",
    )
    .option("--out <file>", "the picture: .png or .svg (vision); .html, .svg or .png (language)")
    .option("--vocab <file>", "characters of a language model's vocabulary, in id order")
    .option("--key <name>", "PyTorch checkpoint entry holding the weights (e.g. model_ema)")
    .option("--json", "print the numbers (Π per block and head, shapes) as JSON on stdout")
    .addHelpText(
      "after",
      `
Π[token, head] is TSSA's membership of a token in a head: a softmax over the heads, so each
token's Π sums to 1 across the heads. It comes from the same forward that computes the
prediction (the operator's saves), not from a second run.

Vision (ToST vision models): one row per chosen block (Π of each chosen head over the token
grid, laid over the image the model sees) and one row per class-attention block (where the
class token looks, scaled to its largest weight; its weight on itself is written under each
map). Token (i, j) sits at pixel (stride·i, stride·j), stride = 2^(stem stages).
  --image: decoded (PNG, JPEG), resized bilinearly so the shorter side is the model's
    img_size (the aspect ratio kept; the Fourier position encoding takes any grid), or as
    --size says. Models tost trained on MNIST get the image in grey, inverted when its
    background is light, with MNIST's normalisation; others RGB with ImageNet's.
  --mnist N: the N-th digit of the bundled MNIST test set, 28×28, as in training.

Language (causal ToST): per block and head a strip of Π, one cell per token with the token
under it, and the model's next-token guess. The text may not be longer than block_size.

Examples:
  tost inspect runs/mnist/best.safetensors --mnist 17 --out maps.png
  tost inspect runs/mnist/best.safetensors --image digit.png --layers 1 --out maps.svg
  tost inspect runs/small/best.safetensors --text "The Congress" --out pi.html
  tost inspect runs/small/best.safetensors --text "The" --heads 0 --json > pi.json`,
    )
    .action(async (modelPath, options) => {
      if (options.out === undefined && !options.json) {
        throw new UsageError("give --out <file> for the picture, --json for the numbers, or both");
      }
      const file = await userFile(
        "model",
        modelPath,
        () => readModelFile(modelPath, { key: options.key }),
      );
      const cfg = file.config;
      const what = cfg.family === "vision" ? "vision" : "language";
      if (cfg.attention !== "tssa") {
        throw new UsageError(
          `"${modelPath}" is a ${
            cfg.family === "vision" ? "ViT" : "GPT"
          } (softmax attention): it has no TSSA Π to draw`,
        );
      }
      const inputs = [options.image, options.mnist, options.text].filter((v) => v !== undefined);
      if (cfg.family === "vision") {
        if (options.text !== undefined) {
          throw new UsageError(
            `--text is for language models; "${modelPath}" is a vision model (give --image or --mnist)`,
          );
        }
        if (inputs.length !== 1) {
          throw new UsageError("give exactly one of --image <file> or --mnist <n>");
        }
        if (options.vocab !== undefined) throw new UsageError("--vocab applies to language models");
      } else {
        for (const flag of ["image", "mnist", "size", "normalise"] as const) {
          if (options[flag] !== undefined) {
            throw new UsageError(
              `--${flag} is for vision models; "${modelPath}" is a language model (give --text)`,
            );
          }
        }
        if (options.text === undefined) throw new UsageError("give the text to run with --text");
      }
      if (options.normalise !== undefined && !["mnist", "imagenet"].includes(options.normalise)) {
        throw new UsageError(`--normalise must be mnist or imagenet, got "${options.normalise}"`);
      }
      if (options.size !== undefined && options.image === undefined && cfg.family === "vision") {
        throw new UsageError("--size applies to --image; MNIST digits are fed at 28×28");
      }
      const depth = cfg.family === "vision" ? cfg.depth : cfg.n_layer;
      const NH = cfg.family === "vision" ? cfg.num_heads : cfg.n_head;
      const layers = parseIndexList("--layers", options.layers, depth);
      const heads = parseIndexList("--heads", options.heads, NH);
      if (options.out !== undefined) {
        const ext = extensionOf(options.out);
        const allowed = what === "vision" ? ["png", "svg"] : ["html", "svg", "png"];
        if (!allowed.includes(ext)) {
          throw new UsageError(
            `--out "${options.out}": a ${what} picture is ${
              allowed.map((e) => `.${e}`).join(", ")
            }, not "${ext ? `.${ext}` : "no extension"}"`,
          );
        }
        await refuseOverwritingInputs({ what: "--out", path: options.out }, [
          { what: "the model", path: modelPath },
          options.image === undefined ? undefined : { what: "--image", path: options.image },
          options.vocab === undefined ? undefined : { what: "--vocab", path: options.vocab },
        ]);
        await checkWritableFile("--out", options.out);
      }
      warnNonFiniteWeights(modelPath, file.tensors);
      if (cfg.family === "vision") {
        const input = await readVisionInput(file, options);
        const gpu = await Gpu.create();
        let maps: VisionMaps;
        try {
          const model = uploadModel(gpu, file);
          try {
            maps = await visionMaps(gpu, model.params, input.data, [
              cfg.in_chans,
              input.height,
              input.width,
            ]);
          } finally {
            destroyModel(model);
          }
        } finally {
          gpu.destroy();
        }
        const p = maps.probabilities[maps.predicted];
        const label = input.label === null ? "" : `, label ${input.label}`;
        const title = `${input.source}${label}: predicted ${maps.predicted} (p = ${p.toFixed(3)})`;
        if (options.out !== undefined) {
          const picture = inputToRgba(
            input.data,
            cfg.in_chans,
            input.height,
            input.width,
            input.normalisation,
          );
          const [Hp, Wp] = maps.grid;
          const svg = visionSvg(maps, pngDataUri(picture), {
            layers,
            heads,
            title,
            subtitle: `${modelPath.split("/").pop()} · input ${input.height}×${input.width}` +
              `${input.inverted ? " (inverted)" : ""} → ${Hp}×${Wp} tokens · Π per block ` +
              `and head; class attention of the last blocks`,
          });
          await svgOrPng(options.out, svg);
        }
        if (options.json) {
          printJson(visionJson(modelPath, input, maps, layers, heads, options.out));
        } else {
          if (input.inverted) {
            console.error("note: the image is light on dark, inverted for an MNIST model");
          }
          console.log(title);
          console.log(`wrote ${options.out}`);
        }
        return;
      }
      const codec = await modelCodec(file, options.vocab);
      let ids: Int32Array;
      try {
        ids = codec.encode(options.text!);
      } catch (err) {
        throw new UsageError(`Cannot encode --text: ${(err as Error).message}`);
      }
      if (ids.length === 0) throw new UsageError("--text is empty: give at least one character");
      if (ids.length > cfg.block_size) {
        throw new UsageError(
          `--text has ${ids.length} tokens, more than the model's block_size ${cfg.block_size}`,
        );
      }
      const gpu = await Gpu.create();
      let maps: LanguageMaps;
      try {
        const model = uploadModel(gpu, file);
        try {
          maps = await languageMaps(gpu, model.params, ids);
        } finally {
          destroyModel(model);
        }
      } finally {
        gpu.destroy();
      }
      const tokens = Array.from(ids, (id) => codec.decode([id]));
      const guesses = topK(maps.probabilities.subarray(0, codec.size), 5).map((g) => ({
        text: codec.decode([g.id]),
        p: g.p,
      }));
      const best = guesses[0];
      const title = `next token: ${JSON.stringify(best.text)} (p = ${best.p.toFixed(3)})`;
      if (options.out !== undefined) {
        const picture = {
          layers,
          heads,
          title,
          subtitle: `${modelPath.split("/").pop()} · ${ids.length} tokens · Π per block and head`,
        };
        if (extensionOf(options.out) === "html") {
          await writeOutput(options.out, languageHtml(maps, tokens, { ...picture, guesses }));
        } else {
          await svgOrPng(options.out, languageSvg(maps, tokens, picture));
        }
      }
      if (options.json) {
        printJson({
          model: modelPath,
          text: options.text,
          tokens,
          ids: Array.from(ids),
          heads,
          next: guesses,
          pi: layers.map((l) => ({
            block: l,
            shape: [heads.length, ids.length],
            values: byHead(maps.pi[l], maps.heads, heads, [ids.length]),
          })),
          out: options.out ?? null,
        });
      } else {
        console.log(title);
        console.log(`wrote ${options.out}`);
      }
    });
}
