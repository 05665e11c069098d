/**
 * The attention modules `tost bench` times: each is the projection in, the
 * operator, and the projection out, as the PyTorch modules the paper (and the
 * anchors in DESIGN.md) measure. Every module can check itself against a
 * plain-TypeScript composition of the references before it is timed.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { linear, linearReference } from "../ops/linear.ts";
import { tssa, tssaReference } from "../ops/tssa.ts";
import { causalTssa, causalTssaReference } from "../ops/causal_tssa.ts";
import { attentionReference, softmaxAttention } from "../ops/attention.ts";
import { flashAttention } from "../ops/flash_attention.ts";

/** Operators `tost bench` knows, by their command-line names. */
export const OPERATORS = [
  "tssa",
  "causal-tssa",
  "softmax",
  "causal-softmax",
  "flash-softmax",
  "causal-flash-softmax",
] as const;

/** One of {@linkcode OPERATORS}. */
export type OperatorName = typeof OPERATORS[number];

/** Sizes shared by every operator in a run. */
export interface ModuleShape {
  batch: number;
  dim: number;
  heads: number;
}

/** A module ready to run at one length. */
export interface BenchModule {
  /** Record one forward pass (no waiting); returns the output to free. */
  forward(): Promise<Tensor>;
  /** Bytes any implementation must hold: input, output, and what it must materialise. */
  minBytes: number;
  /** Bytes of the input tensor (allocated with the parameters). */
  inputBytes: number;
  /** Free parameters and input. */
  destroy(): void;
}

interface Weights {
  inWeight: Float32Array<ArrayBuffer>;
  inBias: Float32Array<ArrayBuffer> | null;
  outWeight: Float32Array<ArrayBuffer>;
  outBias: Float32Array<ArrayBuffer>;
  temp: Float32Array<ArrayBuffer>;
  denomBias: Float32Array<ArrayBuffer>;
  blockSize: number;
}

/** Deterministic small random values (LCG), so every run times the same data. */
function randomFill(n: number, seed: number, scale: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

function isSoftmax(op: OperatorName): boolean {
  return op.includes("softmax");
}

function isCausal(op: OperatorName): boolean {
  return op.startsWith("causal");
}

function makeWeights(op: OperatorName, shape: ModuleShape, n: number): Weights {
  const c = shape.dim;
  const inFeatures = isSoftmax(op) ? 3 * c : c;
  const s = 1 / Math.sqrt(c);
  return {
    inWeight: randomFill(inFeatures * c, 1, s),
    inBias: op === "causal-tssa" ? randomFill(inFeatures, 2, 0.1) : null,
    outWeight: randomFill(c * c, 3, s),
    outBias: randomFill(c, 4, 0.1),
    temp: randomFill(shape.heads, 5, 0.2).map((v) => 1 + v),
    denomBias: randomFill(shape.heads * n, 6, 0.05),
    blockSize: n,
  };
}

/** Run the module's operator on a GPU tensor of projected tokens. */
async function operator(
  gpu: Gpu,
  op: OperatorName,
  w: Tensor,
  params: { temp: Tensor; denomBias: Tensor },
  heads: number,
): Promise<Tensor> {
  switch (op) {
    case "tssa":
      return await tssa(gpu, w, params.temp, heads);
    case "causal-tssa":
      return await causalTssa(gpu, w, params.temp, params.denomBias, heads);
    case "softmax":
    case "causal-softmax":
      return await softmaxAttention(gpu, w, heads, { causal: isCausal(op) });
    case "flash-softmax":
    case "causal-flash-softmax":
      return await flashAttention(gpu, w, heads, { causal: isCausal(op) });
  }
}

/**
 * Bytes a module must hold at length `n` whatever the implementation: at the
 * operator, the module input, the projected tokens it reads and the output it
 * writes coexist (the module output can reuse the projection's memory), and
 * standard softmax attention also holds its N×N scores by design.
 */
export function minimumBytes(op: OperatorName, shape: ModuleShape, n: number): number {
  const tokens = shape.batch * n * shape.dim * 4;
  const projected = isSoftmax(op) ? 3 * tokens : tokens;
  let bytes = tokens + projected + tokens;
  if (op === "softmax" || op === "causal-softmax") {
    bytes += shape.batch * shape.heads * n * n * 4;
  }
  return bytes;
}

/** Allocate a module's weights and input at length `n` on the GPU. */
export function createModule(
  gpu: Gpu,
  op: OperatorName,
  shape: ModuleShape,
  n: number,
): BenchModule {
  const { batch, dim, heads } = shape;
  const w = makeWeights(op, shape, n);
  const inF = isSoftmax(op) ? 3 * dim : dim;
  const owned: Tensor[] = [];
  const up = (data: Float32Array<ArrayBuffer>, dims: number[], label: string) => {
    const t = gpu.upload(data, dims, label);
    owned.push(t);
    return t;
  };
  try {
    const inWeight = up(w.inWeight, [inF, dim], "bench.in.weight");
    const inBias = w.inBias ? up(w.inBias, [inF], "bench.in.bias") : null;
    const outWeight = up(w.outWeight, [dim, dim], "bench.out.weight");
    const outBias = up(w.outBias, [dim], "bench.out.bias");
    const temp = up(w.temp, [heads], "bench.temp");
    const denomBias = up(w.denomBias, [heads, n], "bench.denom_bias");
    const x = gpu.empty([batch, n, dim], "f32", "bench.x");
    owned.push(x);
    fillRandom(gpu, x);
    return {
      minBytes: minimumBytes(op, shape, n),
      inputBytes: x.buffer.size,
      async forward() {
        const proj = await linear(gpu, x, inWeight, inBias);
        let y: Tensor | undefined;
        try {
          y = await operator(gpu, op, proj, { temp, denomBias }, heads);
        } finally {
          proj.destroy();
        }
        try {
          return await linear(gpu, y, outWeight, outBias);
        } finally {
          y.destroy();
        }
      },
      destroy() {
        for (const t of owned) t.destroy();
      },
    };
  } catch (err) {
    for (const t of owned) t.destroy();
    throw err;
  }
}

const FILL_CHUNK = 1 << 20;

/** Fill a (possibly huge) tensor with deterministic values in chunks. */
function fillRandom(gpu: Gpu, t: Tensor): void {
  for (let start = 0, seed = 7; start < t.numel; start += FILL_CHUNK, seed++) {
    const len = Math.min(FILL_CHUNK, t.numel - start);
    gpu.write(t, randomFill(len, seed, 1), start);
  }
}

/**
 * Check a module at length `n` against the CPU references; returns the
 * largest error relative to max(1, max|ref|).
 */
export async function checkModule(
  gpu: Gpu,
  op: OperatorName,
  shape: ModuleShape,
  n: number,
): Promise<number> {
  const { batch, dim, heads } = shape;
  const d = dim / heads;
  const m = createModule(gpu, op, shape, n);
  try {
    const xs = inputValues(batch * n * dim);
    const out = await m.forward();
    const got = await out.read();
    out.destroy();
    const w = makeWeights(op, shape, n);
    const inF = isSoftmax(op) ? 3 * dim : dim;
    const rows = batch * n;
    const proj = linearReference(xs, w.inWeight, w.inBias, rows, dim, inF);
    let y: Float64Array;
    switch (op) {
      case "tssa":
        y = tssaReference(proj, w.temp, batch, n, heads, d);
        break;
      case "causal-tssa":
        y = causalTssaReference(proj, w.temp, w.denomBias, batch, n, heads, d, n);
        break;
      default:
        y = attentionReference(proj, batch, n, heads, d, { causal: isCausal(op) });
    }
    const ref = linearReference(Float32Array.from(y), w.outWeight, w.outBias, rows, dim, dim);
    let maxRef = 1;
    for (const v of ref) maxRef = Math.max(maxRef, Math.abs(v));
    let err = 0;
    for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(got[i] - ref[i]));
    return err / maxRef;
  } finally {
    m.destroy();
  }
}

/** The module input as {@linkcode fillRandom} writes it, built on the CPU. */
function inputValues(total: number): Float32Array {
  const out = new Float32Array(total);
  for (let start = 0, seed = 7; start < total; start += FILL_CHUNK, seed++) {
    out.set(randomFill(Math.min(FILL_CHUNK, total - start), seed, 1), start);
  }
  return out;
}
