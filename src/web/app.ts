/// <reference lib="dom" />
/**
 * The `tost serve` page's script: loads the served safetensors model and
 * runs it on the browser's WebGPU with tost's own runtime, kernels and
 * models (the same TypeScript and WGSL as the command line; built for the
 * browser with `deno bundle --platform browser`, see `script.ts`).
 *
 * - Vision models: draw a digit (or drop a PNG/JPEG) → class probabilities
 *   and the Π maps of `tost inspect` (`src/inspect/`).
 * - Language models: a prompt → text streamed token by token with the
 *   incremental decoder (`model/language/decode.ts`: causal ToST carries its
 *   running statistics, O(1) work per token).
 * - No WebGPU: the page says so plainly.
 *
 * `window.tost` is the page's scripting interface (the browser tests use
 * it): `ready` (resolves with the model's config and the adapter, or rejects
 * with the reason), `classify(images, shape)` and `logits(ids)` (raw logits
 * of a batch), `generate(prompt, tokens, options)` and `timing`.
 *
 * @module
 */

import { Gpu } from "../gpu/runtime.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import { parseModelConfig, parseVocab } from "../model/config.ts";
import type { ModelConfig } from "../model/config.ts";

import { assertStateDict } from "../model/names.ts";
import { ParamStore } from "../model/params.ts";
import { checkLanguageConfig } from "../model/language/params.ts";
import { checkVisionConfig } from "../model/vision/params.ts";
import { visionForward } from "../model/vision/model.ts";
import { languageForward } from "../model/language/model.ts";
import { IncrementalDecoder } from "../model/language/decode.ts";
import { sampleToken, seededRandom } from "../model/generate.ts";
import { charCodec } from "../data/codec.ts";
import type { TextCodec } from "../data/codec.ts";
import { visionMaps } from "../inspect/maps.ts";
import { pngDataUri, visionSvg } from "../inspect/picture.ts";
import { inputToRgba, normalisationFor, prepareImage } from "../inspect/image.ts";
import type { Normalisation, RgbaImage } from "../inspect/image.ts";

/** What the page loaded. */
interface Loaded {
  gpu: Gpu;
  config: ModelConfig;
  store: ParamStore;
  metadata: Record<string, string>;
  codec: TextCodec | null;
}

/** Timings the page measured (milliseconds), for people and for the tests. */
const timing = {
  /** Each classification: upload, the forward, read back (the maps included). */
  visionMs: [] as number[],
  /** Each generated token after the prompt: one decoder step and the sampling. */
  tokenMs: [] as number[],
  promptMs: [] as number[],
};

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function status(text: string, error = false): void {
  const el = $("status");
  el.textContent = text;
  el.className = error ? "error" : "";
}

/** Open the GPU and load the model; throws an Error whose message the page shows. */
async function load(): Promise<Loaded> {
  if (!("gpu" in navigator)) {
    throw new Error(
      "This browser has no WebGPU (navigator.gpu is missing), so the model cannot run here. " +
        "Use a recent Chrome, Edge or Safari, on this page's http://127.0.0.1 or localhost " +
        "address (WebGPU needs a secure context).",
    );
  }
  const gpu = await Gpu.create(); // NoAdapterError: no usable adapter
  const response = await fetch("/model.safetensors");
  if (!response.ok) throw new Error(`Cannot load the model: HTTP ${response.status}`);
  const file = parseSafetensors(new Uint8Array(await response.arrayBuffer()), "model.safetensors");
  const metadata = file.metadata;
  if (metadata.config === undefined) throw new Error("The served model carries no tost config");
  const config = parseModelConfig(metadata.config, "the served model's config");
  const tensors = new Map(file.entries());
  assertStateDict(config, tensors);
  if (config.family === "vision") checkVisionConfig(config);
  else checkLanguageConfig(config);
  const store = ParamStore.upload(gpu, config, tensors);
  const codec = config.family === "language" && metadata.vocab !== undefined
    ? charCodec(parseVocab(metadata.vocab, "the served vocabulary"))
    : null;
  return { gpu, config, store, metadata, codec };
}

function describe(config: ModelConfig): string {
  if (config.family === "vision") {
    const kind = config.attention === "tssa" ? "ToST vision" : "ViT";
    return `${kind}: width ${config.embed_dim}, ${config.depth} blocks, ${config.num_heads} ` +
      `heads, patch ${config.patch_size}, ${config.num_classes} classes, img_size ${config.img_size}`;
  }
  const kind = config.attention === "tssa" ? "causal ToST" : "GPT";
  return `${kind}: width ${config.n_embd}, ${config.n_layer} blocks, ${config.n_head} heads, ` +
    `context ${config.block_size}, ${config.vocab_size} tokens`;
}

// ---------------------------------------------------------------- vision

/** Raw logits `[B, K]` of images `[B, C, H, W]` (tests and the page). */
async function classify(m: Loaded, images: ArrayLike<number>, shape: number[]) {
  const [B, C, H, W] = shape;
  const t0 = performance.now();
  const out = await visionForward(m.gpu, m.store, Float32Array.from(images), [B, C, H, W]);
  return { logits: Array.from(out.logits), ms: performance.now() - t0 };
}

/** The pixels of a canvas as an RGBA image. */
function canvasImage(canvas: HTMLCanvasElement): RgbaImage {
  const ctx = canvas.getContext("2d")!;
  const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
  return { width: canvas.width, height: canvas.height, data };
}

/** Classify an image as `tost inspect --image` does and draw the probabilities and Π maps. */
async function showVision(m: Loaded, img: RgbaImage, normalisation: Normalisation) {
  if (m.config.family !== "vision") return;
  const cfg = m.config;
  const { input, height: H, width: W, inverted: invert } = prepareImage(
    img,
    { channels: cfg.in_chans, imgSize: cfg.img_size },
    normalisation,
  );
  const t0 = performance.now();
  const probs: number[] = [];
  let svg = "";
  if (cfg.attention === "tssa") {
    const maps = await visionMaps(m.gpu, m.store, input, [cfg.in_chans, H, W]);
    timing.visionMs.push(performance.now() - t0);
    probs.push(...maps.probabilities);
    const picture = inputToRgba(input, cfg.in_chans, H, W, normalisation);
    svg = visionSvg(maps, pngDataUri(picture), {
      layers: Array.from({ length: cfg.depth }, (_, i) => i),
      heads: Array.from({ length: cfg.num_heads }, (_, i) => i),
      title: `predicted ${maps.predicted} (p = ${maps.probabilities[maps.predicted].toFixed(3)})`,
      subtitle: `input ${H}×${W}${invert ? " (inverted)" : ""} → ${maps.grid[0]}×${
        maps.grid[1]
      } tokens · Π per block and head; class attention of the last blocks`,
    });
  } else {
    const { logits, ms } = await classify(m, input, [1, cfg.in_chans, H, W]);
    timing.visionMs.push(ms);
    const max = Math.max(...logits);
    const e = logits.map((v) => Math.exp(v - max));
    const s = e.reduce((a, b) => a + b, 0);
    probs.push(...e.map((v) => v / s));
  }
  const best = probs.indexOf(Math.max(...probs));
  $("probs").innerHTML = probs.map((p, k) =>
    `<div class="bar${k === best ? " best" : ""}"><span class="k">${k}</span>` +
    `<span class="fill" style="width:${(200 * p).toFixed(1)}px"></span>` +
    `<span>${(100 * p).toFixed(1)}%</span></div>`
  ).join("");
  $("maps").innerHTML = svg || "<p class='sub'>A ViT has softmax attention: no Π to show.</p>";
  $("vision-time").textContent = `${timing.visionMs.at(-1)!.toFixed(1)} ms for the forward ` +
    `and maps (${m.gpu.info.name})`;
}

function setUpVision(m: Loaded) {
  $("vision").hidden = false;
  const pad = $<HTMLCanvasElement>("pad");
  const ctx = pad.getContext("2d")!;
  const clear = () => {
    ctx.fillStyle = "black";
    ctx.fillRect(0, 0, pad.width, pad.height);
  };
  clear();
  const normalisation = normalisationFor(m.metadata);
  let drawing = false;
  let last: [number, number] | null = null;
  let pending: Promise<void> = Promise.resolve();
  const run = (img: RgbaImage, norm: Normalisation) => {
    pending = pending.then(() => showVision(m, img, norm)).catch((e) => status(String(e), true));
  };
  const at = (e: PointerEvent): [number, number] => {
    const r = pad.getBoundingClientRect();
    return [
      (e.clientX - r.left) * pad.width / r.width,
      (e.clientY - r.top) * pad.height / r.height,
    ];
  };
  pad.addEventListener("pointerdown", (e) => {
    drawing = true;
    last = at(e);
    pad.setPointerCapture(e.pointerId);
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing || !last) return;
    const p = at(e);
    ctx.strokeStyle = "white";
    ctx.lineWidth = pad.width / 12;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...p);
    ctx.stroke();
    last = p;
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    last = null;
    run(canvasImage(pad), normalisation);
  };
  pad.addEventListener("pointerup", finish);
  pad.addEventListener("pointerleave", finish);
  $("clear").addEventListener("click", clear);
  const openFile = async (f: File) => {
    const bitmap = await createImageBitmap(f);
    const c = document.createElement("canvas");
    [c.width, c.height] = [bitmap.width, bitmap.height];
    c.getContext("2d")!.drawImage(bitmap, 0, 0);
    run(canvasImage(c), normalisation);
  };
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer?.files[0];
    if (f) openFile(f);
  });
  $<HTMLInputElement>("file").addEventListener("change", (e) => {
    const f = (e.target as HTMLInputElement).files?.[0];
    if (f) openFile(f);
  });
  /** Show an image on the pad (scaled) and classify it, as if drawn. */
  const draw = (img: RgbaImage) => {
    const c = document.createElement("canvas");
    [c.width, c.height] = [img.width, img.height];
    c.getContext("2d")!.putImageData(
      new ImageData(Uint8ClampedArray.from(img.data), img.width, img.height),
      0,
      0,
    );
    clear();
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(c, 0, 0, pad.width, pad.height);
    return showVision(m, img, normalisation);
  };
  return { draw };
}

// ---------------------------------------------------------------- language

/** Raw logits `[B, T, V]` of token ids `[B, T]` (tests). */
async function logits(m: Loaded, ids: ArrayLike<number>, B: number, T: number) {
  const t0 = performance.now();
  const out = await languageForward(m.gpu, m.store, Array.from(ids), B, T);
  return { logits: Array.from(out.logits), ms: performance.now() - t0 };
}

interface GenerateOptions {
  temperature?: number;
  topK?: number | null;
  seed?: number;
  onText?: (text: string) => void;
  shouldStop?: () => boolean;
}

/**
 * Sample up to `tokens` tokens after `prompt` with the incremental decoder:
 * one decoder step per token, sampled on the host; stops at block_size.
 */
async function generate(m: Loaded, prompt: string, tokens: number, o: GenerateOptions = {}) {
  if (m.config.family !== "language" || !m.codec) throw new Error("not a language model");
  const cfg = m.config;
  const codec = m.codec;
  const ids = Array.from(codec.encode(prompt));
  if (ids.length === 0) throw new Error("The prompt is empty");
  if (ids.length > cfg.block_size) {
    throw new Error(`The prompt has ${ids.length} tokens, over the context of ${cfg.block_size}`);
  }
  const random = seededRandom(o.seed ?? 1);
  const dec = new IncrementalDecoder(m.gpu, m.store);
  const out: number[] = [];
  try {
    let t0 = performance.now();
    let row = await dec.feed(ids);
    timing.promptMs.push(performance.now() - t0);
    const stream = codec.streamer();
    while (out.length < tokens) {
      const next = sampleToken(row.subarray(0, codec.size), {
        temperature: o.temperature ?? 1,
        topK: o.topK ?? null,
      }, random);
      out.push(next);
      o.onText?.(stream(next));
      if (dec.position >= dec.capacity || out.length >= tokens || o.shouldStop?.()) break;
      t0 = performance.now();
      row = await dec.feed([next]);
      timing.tokenMs.push(performance.now() - t0);
    }
  } finally {
    dec.destroy();
  }
  return { ids: out, text: codec.decode(out) };
}

function setUpLanguage(m: Loaded) {
  $("language").hidden = false;
  if (!m.codec) {
    status(
      "The served language model carries no vocabulary: restart tost serve with --vocab",
      true,
    );
    return;
  }
  let stop = false;
  const button = $<HTMLButtonElement>("generate");
  const stopButton = $<HTMLButtonElement>("stop");
  stopButton.addEventListener("click", () => (stop = true));
  button.addEventListener("click", async () => {
    const prompt = $<HTMLTextAreaElement>("prompt").value;
    const n = Number($<HTMLInputElement>("tokens").value);
    const out = $("output");
    out.textContent = "";
    const p = document.createElement("span");
    p.className = "prompt";
    p.textContent = prompt;
    out.append(p);
    const text = document.createTextNode("");
    out.append(text);
    stop = false;
    button.disabled = true;
    stopButton.disabled = false;
    const before = timing.tokenMs.length;
    try {
      const r = await generate(m, prompt, n, {
        temperature: Number($<HTMLInputElement>("temperature").value),
        topK: Number($<HTMLInputElement>("topk").value) || null,
        seed: Number($<HTMLInputElement>("seed").value),
        onText: (t) => (text.data += t),
        shouldStop: () => stop,
      });
      const steps = timing.tokenMs.slice(before);
      const ms = steps.reduce((a, b) => a + b, 0) / Math.max(1, steps.length);
      $("rate").textContent = `${r.ids.length} tokens; ${ms.toFixed(1)} ms per token after ` +
        `the prompt (${(1000 / ms).toFixed(1)} tokens/s, incremental ${
          m.config.family === "language" && m.config.attention === "tssa"
            ? "causal TSSA statistics"
            : "KV cache"
        }, ${m.gpu.info.name})`;
      status("Ready.");
    } catch (e) {
      status(e instanceof Error ? e.message : String(e), true);
    } finally {
      button.disabled = false;
      stopButton.disabled = true;
    }
  });
}

// ---------------------------------------------------------------- start

async function start() {
  let m: Loaded;
  try {
    m = await load();
  } catch (e) {
    status(e instanceof Error ? e.message : String(e), true);
    throw e;
  }
  $("model").textContent = `${describe(m.config)} · WebGPU adapter: ${m.gpu.info.name}`;
  status("Ready.");
  const vision = m.config.family === "vision" ? setUpVision(m) : null;
  if (m.config.family === "language") setUpLanguage(m);
  return {
    config: m.config,
    adapter: m.gpu.info.name,
    classify: (images: ArrayLike<number>, shape: number[]) => classify(m, images, shape),
    logits: (ids: ArrayLike<number>, B: number, T: number) => logits(m, ids, B, T),
    generate: (prompt: string, tokens: number, o: GenerateOptions = {}) =>
      generate(m, prompt, tokens, o),
    /** Show an image `{width, height, data}` (RGBA bytes) as if drawn. */
    show: (img: RgbaImage) => vision?.draw(img),
  };
}

const ready = start();
ready.catch(() => {}); // the page shows the reason; window.tost.ready rejects with it
(globalThis as unknown as { tost: unknown }).tost = { ready, timing };
