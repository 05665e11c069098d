/**
 * The attention modules `tost bench` times: each is the projection in, the
 * operator, and the projection out, as the PyTorch modules the paper (and the
 * anchors in DESIGN.md) measure. Every module can check itself against a
 * plain-TypeScript composition of the references before it is timed.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { linearReference } from "../ops/linear_reference.ts";
import { projectedForward } from "../nn/_projected.ts";
import { tssa } from "../ops/tssa.ts";
import { tssaReference } from "../ops/tssa_reference.ts";
import { causalTssa } from "../ops/causal_tssa.ts";
import { causalTssaReference } from "../ops/causal_tssa_reference.ts";
import { softmaxAttention } from "../ops/attention.ts";
import { attentionReference } from "../ops/attention_reference.ts";
import { flashAttention } from "../ops/flash_attention.ts";
import {
  chunkedValues,
  fillRandom,
  INPUT_SEED,
  isCausal,
  isSoftmax,
  makeWeights,
  relativeError,
} from "./_data.ts";
import type { ModuleShape, OperatorName } from "./_data.ts";

export { OPERATORS } from "./_data.ts";
export type { ModuleShape, OperatorName } from "./_data.ts";

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
  let bytes = (shape.projections === false ? 0 : tokens) + projected + tokens;
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
    const operatorOnly = shape.projections === false;
    const x = gpu.empty([batch, n, operatorOnly ? inF : dim], "f32", "bench.x");
    owned.push(x);
    fillRandom(gpu, x, INPUT_SEED);
    return {
      minBytes: minimumBytes(op, shape, n),
      inputBytes: x.buffer.size,
      async forward() {
        const middle = async (w: Tensor) => ({
          y: await operator(gpu, op, w, { temp, denomBias }, heads),
          saves: null,
        });
        if (operatorOnly) return (await middle(x)).y;
        const p = { inWeight, inBias, outWeight, outBias };
        return (await projectedForward(gpu, x, p, middle, false)).out;
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
    const operatorOnly = shape.projections === false;
    const inF = isSoftmax(op) ? 3 * dim : dim;
    const xs = chunkedValues(batch * n * (operatorOnly ? inF : dim), INPUT_SEED);
    const out = await m.forward();
    const got = await out.read();
    out.destroy();
    const w = makeWeights(op, shape, n);
    const rows = batch * n;
    const proj = operatorOnly ? xs : linearReference(xs, w.inWeight, w.inBias, rows, dim, inF);
    let y: Float64Array;
    switch (op) {
      case "tssa":
        y = tssaReference(proj, w.temp, { batches: batch, tokens: n, heads, headDim: d }).y;
        break;
      case "causal-tssa": {
        const dims = { batches: batch, tokens: n, heads, headDim: d, blockSize: n };
        y = causalTssaReference(proj, w, dims).y;
        break;
      }
      default:
        y = attentionReference(proj, batch, n, heads, d, { causal: isCausal(op) });
    }
    if (operatorOnly) return relativeError(got, y);
    const ref = linearReference(Float32Array.from(y), w.outWeight, w.outBias, rows, dim, dim);
    return relativeError(got, ref);
  } finally {
    m.destroy();
  }
}
