/**
 * The attention modules of `tost bench --backward`: one training-style step
 * of each module (input projection → operator → output projection), the
 * forward keeping what the backward needs and the backward from a fixed
 * upstream gradient `dy`, producing `dx` and adding every parameter
 * gradient into buffers allocated (zeroed) with the parameters.
 *
 * - `tssa`, `causal-tssa`: the modules `tssaAttention` and
 *   `causalTssaAttention` (`nn/`) with their saves, and their backwards;
 * - `softmax`, `causal-softmax`: `softmaxAttention` keeping its
 *   probabilities, and `softmaxAttentionBackward` (`ops/attention*.ts`);
 * - `flash-softmax`, `causal-flash-softmax`: `flashAttention` forward, and
 *   the backward recomputes the probabilities (`flashAttentionBackward`),
 *
 * the softmax operators between the same projections as the modules
 * (`nn/_projected.ts`).
 *
 * Every step can check itself once against a float64 composition of the
 * references (`dx` and every parameter gradient) before it is timed.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { softmaxAttention } from "../ops/attention.ts";
import type { SoftmaxAttentionSaves } from "../ops/attention.ts";
import { softmaxAttentionBackward } from "../ops/attention_backward.ts";
import { flashAttention } from "../ops/flash_attention.ts";
import { flashAttentionBackward } from "../ops/flash_attention_backward.ts";
import {
  tssaAttentionBackwardReference,
  tssaAttentionReference,
} from "../nn/tssa_attention_reference.ts";
import { tssaAttention, tssaAttentionBackward } from "../nn/tssa_attention.ts";
import {
  causalTssaAttentionBackwardReference,
  causalTssaAttentionReference,
} from "../nn/causal_tssa_attention_reference.ts";
import { causalTssaAttention, causalTssaAttentionBackward } from "../nn/causal_tssa_attention.ts";
import {
  softmaxSelfAttentionBackwardReference,
  softmaxSelfAttentionReference,
} from "../nn/softmax_self_attention_reference.ts";
import { projectedBackward, projectedForward } from "../nn/_projected.ts";
import type { Projections } from "../nn/_projected.ts";
import type { ProjectionGradsReference } from "../nn/_projected_reference.ts";
import {
  chunkedValues,
  fillRandom,
  GRADIENT_SEED,
  INPUT_SEED,
  isCausal,
  isSoftmax,
  makeWeights,
  projectedFeatures,
  relativeError,
  type Weights,
} from "./_data.ts";
import type { ModuleShape, OperatorName } from "./_data.ts";

/**
 * Names of the parameter gradients a step accumulates (PyTorch-like; the
 * bias of the input projection exists for causal TSSA only, `temp` for the
 * TSSA operators, `denom_bias` for causal TSSA).
 */
export type GradientName =
  | "in.weight"
  | "in.bias"
  | "out.weight"
  | "out.bias"
  | "temp"
  | "denom_bias";

/** A module ready to run training-style steps at one length. */
export interface BenchStepModule {
  /**
   * Record one step (no waiting): forward with saves, then the backward from
   * the fixed `dy`, adding into {@linkcode BenchStepModule.grads}. Returns
   * `dx` (the caller frees it); everything else the step made is freed.
   */
  step(): Promise<Tensor>;
  /** The parameter gradient buffers, zeroed at creation and added to by every step. */
  grads: ReadonlyMap<GradientName, Tensor>;
  /** Bytes any implementation must hold at once: see {@linkcode minimumStepBytes}. */
  minBytes: number;
  /** Bytes of the input `x` and of the upstream gradient `dy` (allocated with the parameters). */
  inputBytes: number;
  /** Free parameters, gradients, `x` and `dy`. */
  destroy(): void;
}

/**
 * Bytes one forward+backward step of a module must hold at once at length
 * `n`, whatever the implementation. With `t` the bytes of a token tensor
 * `[B, n, D]` and `p` those of the projected tokens (`3t` for softmax's
 * packed qkv, else `t`), the input `x` and the given upstream gradient `dy`
 * live throughout, and the largest of these sets must coexist:
 *
 * - end of the forward: `x`, `dy`, saved projection `w`, saved operator
 *   output `y`, module output (`4t + p`);
 * - operator backward: `x`, `dy`, `w`, the gradient `∂y` arriving and the
 *   gradient `∂w` leaving (`3t + 2p`), plus `y` for softmax (its backward
 *   reads the attention output);
 * - input projection backward: `x`, `dy`, `∂w`, `dx` (`3t + p`).
 *
 * Standard softmax also holds its `[B, H, n, n]` probabilities from the
 * forward to the operator backward (its gradient can overwrite them).
 * TSSA's per-token memberships (`H` of every `D` values, recomputable from
 * `w`) are not counted.
 */
export function minimumStepBytes(op: OperatorName, shape: ModuleShape, n: number): number {
  const t = shape.batch * n * shape.dim * 4;
  const p = shape.batch * n * projectedFeatures(op, shape.dim) * 4;
  const probs = op === "softmax" || op === "causal-softmax"
    ? shape.batch * shape.heads * n * n * 4
    : 0;
  const forwardEnd = 4 * t + p + probs;
  const operatorBackward = 3 * t + 2 * p + (isSoftmax(op) ? t : 0) + probs;
  const inputBackward = 3 * t + p;
  return Math.max(forwardEnd, operatorBackward, inputBackward);
}

interface GpuParams extends Projections {
  temp: Tensor | null;
  denomBias: Tensor | null;
}

/**
 * Allocate a module's parameters, zeroed gradients, input `x` and upstream
 * gradient `dy` at length `n` on the GPU.
 */
export function createStepModule(
  gpu: Gpu,
  op: OperatorName,
  shape: ModuleShape,
  n: number,
): BenchStepModule {
  const { batch, dim, heads } = shape;
  const w = makeWeights(op, shape, n);
  const inF = projectedFeatures(op, dim);
  const tssaOp = !isSoftmax(op);
  const owned: Tensor[] = [];
  const grads = new Map<GradientName, Tensor>();
  const param = (
    name: GradientName,
    data: Float32Array<ArrayBuffer>,
    dims: number[],
  ): Tensor => {
    const t = gpu.upload(data, dims, `bench.${name}`);
    owned.push(t);
    const g = gpu.empty(dims, "f32", `bench.grad.${name}`); // zero-initialised
    owned.push(g);
    grads.set(name, g);
    return t;
  };
  try {
    const params: GpuParams = {
      inWeight: param("in.weight", w.inWeight, [inF, dim]),
      inBias: w.inBias ? param("in.bias", w.inBias, [inF]) : null,
      outWeight: param("out.weight", w.outWeight, [dim, dim]),
      outBias: param("out.bias", w.outBias, [dim]),
      temp: tssaOp ? param("temp", w.temp, [heads]) : null,
      denomBias: op === "causal-tssa" ? param("denom_bias", w.denomBias, [heads, n]) : null,
    };
    const x = gpu.empty([batch, n, dim], "f32", "bench.x");
    owned.push(x);
    fillRandom(gpu, x, INPUT_SEED);
    const dy = gpu.empty([batch, n, dim], "f32", "bench.dy");
    owned.push(dy);
    fillRandom(gpu, dy, GRADIENT_SEED);
    const step = tssaOp
      ? () => tssaStep(gpu, { x, dy, params, grads, heads })
      : () => softmaxStep(gpu, op, { x, dy, params, grads, heads });
    return {
      step,
      grads,
      minBytes: minimumStepBytes(op, shape, n),
      inputBytes: x.buffer.size + dy.buffer.size,
      destroy() {
        for (const t of owned) t.destroy();
      },
    };
  } catch (err) {
    for (const t of owned) t.destroy();
    throw err;
  }
}

interface StepArgs {
  x: Tensor;
  dy: Tensor;
  params: GpuParams;
  grads: ReadonlyMap<GradientName, Tensor>;
  heads: number;
}

function grad(grads: ReadonlyMap<GradientName, Tensor>, name: GradientName): Tensor {
  const g = grads.get(name);
  if (!g) throw new TypeError(`bench step: no gradient buffer for "${name}"`);
  return g;
}

function projectionGrads(grads: ReadonlyMap<GradientName, Tensor>, p: GpuParams): Projections {
  return {
    inWeight: grad(grads, "in.weight"),
    inBias: p.inBias ? grad(grads, "in.bias") : null,
    outWeight: grad(grads, "out.weight"),
    outBias: grad(grads, "out.bias"),
  };
}

async function tssaStep(gpu: Gpu, args: StepArgs): Promise<Tensor> {
  const { x, dy, grads, heads } = args;
  const p = args.params;
  if (!p.temp) throw new TypeError("bench step: the TSSA module has no temp");
  const g = { ...projectionGrads(grads, p), temp: grad(grads, "temp") };
  const live: Tensor[] = [];
  try {
    if (p.denomBias) {
      const params = { ...p, temp: p.temp, denomBias: p.denomBias };
      const { out, saves } = await causalTssaAttention(gpu, x, params, heads, { saves: true });
      live.push(out, saves.w, saves.y, saves.op.pi); // `out` goes to the loss, which gives `dy`
      const gc = { ...g, denomBias: grad(grads, "denom_bias") };
      return await causalTssaAttentionBackward(gpu, { dy, saves, params, grads: gc, heads });
    }
    const params = { ...p, temp: p.temp };
    const { out, saves } = await tssaAttention(gpu, x, params, heads, { saves: true });
    live.push(out, saves.w, saves.y, ...Object.values(saves.op));
    return await tssaAttentionBackward(gpu, { dy, saves, params, grads: g, heads });
  } finally {
    for (const t of live) t.destroy();
  }
}

async function softmaxStep(gpu: Gpu, op: OperatorName, args: StepArgs): Promise<Tensor> {
  const { x, dy, params, grads, heads } = args;
  const causal = isCausal(op);
  const flash = op.includes("flash");
  const { out, saves } = await projectedForward<SoftmaxAttentionSaves | null>(
    gpu,
    x,
    params,
    async (w) => {
      if (flash) return { y: await flashAttention(gpu, w, heads, { causal }), saves: null };
      const r = await softmaxAttention(gpu, w, heads, { causal, saves: true });
      return { y: r.out, saves: r.saves };
    },
    true,
  );
  out.destroy(); // to the loss, which gives `dy`
  const s = saves!;
  try {
    return await projectedBackward(gpu, {
      dy,
      saves: s,
      params,
      grads: projectionGrads(grads, params),
      opBackward: (dO) => {
        const common = { dout: dO, qkv: s.w, out: s.y, heads, causal };
        return s.op
          ? softmaxAttentionBackward(gpu, { ...common, saves: s.op })
          : flashAttentionBackward(gpu, common);
      },
    });
  } finally {
    for (const t of [s.w, s.y, s.op?.probs]) t?.destroy();
  }
}

/** Result of {@linkcode checkStepModule}. */
export interface StepCheck {
  /** Largest error over `dx` and every parameter gradient, each relative to max(1, max|ref|). */
  error: number;
  /** The tensor with that error (`dx` or a {@linkcode GradientName}). */
  worst: string;
}

/**
 * Check one step of a module at length `n`: `dx` and every parameter
 * gradient against a float64 composition of the references.
 */
export async function checkStepModule(
  gpu: Gpu,
  op: OperatorName,
  shape: ModuleShape,
  n: number,
): Promise<StepCheck> {
  const m = createStepModule(gpu, op, shape, n);
  try {
    const dx = await m.step();
    const got = new Map<string, ArrayLike<number>>();
    try {
      got.set("dx", await dx.read());
    } finally {
      dx.destroy();
    }
    for (const [name, g] of m.grads) got.set(name, await g.read());
    const ref = stepReference(op, shape, n);
    if (got.size !== ref.size || [...ref.keys()].some((name) => !got.has(name))) {
      throw new TypeError(
        `bench check: the step gave ${[...got.keys()]}, the references ${[...ref.keys()]}`,
      );
    }
    let error = 0;
    let worst = "dx";
    for (const [name, values] of ref) {
      const e = relativeError(got.get(name)!, values);
      // NaN is the worst error and stays so.
      if (!Number.isNaN(error) && !(e <= error)) {
        error = e;
        worst = name;
      }
    }
    return { error, worst };
  } finally {
    m.destroy();
  }
}

/**
 * `dx` and every parameter gradient of one step from zeroed gradients, in
 * float64, keyed `dx` and by {@linkcode GradientName}: the module input,
 * weights and `dy` are rebuilt exactly as {@linkcode createStepModule}
 * makes them.
 *
 * @example
 * ```ts
 * import { stepReference } from "./operators_backward.ts";
 * const ref = stepReference("tssa", { batch: 1, dim: 4, heads: 2 }, 3);
 * if ([...ref.keys()].join() !== "dx,in.weight,out.weight,out.bias,temp") throw new Error();
 * ```
 */
export function stepReference(
  op: OperatorName,
  shape: ModuleShape,
  n: number,
): Map<string, Float64Array> {
  const { batch, dim } = shape;
  const w = makeWeights(op, shape, n);
  const x = chunkedValues(batch * n * dim, INPUT_SEED);
  const dy = chunkedValues(batch * n * dim, GRADIENT_SEED);
  return isSoftmax(op)
    ? softmaxStepReference(op, shape, n, { w, x, dy })
    : tssaStepReference(op, shape, n, { w, x, dy });
}

interface ReferenceInputs {
  w: Weights;
  x: Float32Array;
  dy: Float32Array;
}

function tssaStepReference(
  op: OperatorName,
  shape: ModuleShape,
  n: number,
  { w, x, dy }: ReferenceInputs,
): Map<string, Float64Array> {
  const { batch, dim, heads } = shape;
  const dims = { batches: batch, tokens: n, heads, headDim: dim / heads };
  const grads = {
    ...projectionGradsReference(w, dim),
    temp: new Float64Array(heads),
    denomBias: new Float64Array(w.denomBias.length),
  };
  let dx: Float64Array;
  if (op === "causal-tssa") {
    const saves = causalTssaAttentionReference(x, w, dims).saves;
    dx = causalTssaAttentionBackwardReference({ dy, x, params: w, saves, grads }, dims);
  } else {
    const saves = tssaAttentionReference(x, w, dims).saves;
    dx = tssaAttentionBackwardReference({ dy, x, params: w, saves, grads }, dims);
  }
  const out = gradientMap(dx, grads);
  out.set("temp", grads.temp);
  if (op === "causal-tssa") out.set("denom_bias", grads.denomBias);
  return out;
}

function projectionGradsReference(w: Weights, dim: number): ProjectionGradsReference {
  return {
    inWeight: new Float64Array(w.inWeight.length),
    inBias: w.inBias ? new Float64Array(w.inBias.length) : null,
    outWeight: new Float64Array(w.outWeight.length),
    outBias: new Float64Array(dim),
  };
}

function gradientMap(dx: Float64Array, g: ProjectionGradsReference): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>([
    ["dx", dx],
    ["in.weight", g.inWeight],
    ["out.weight", g.outWeight],
    ["out.bias", g.outBias!],
  ]);
  if (g.inBias) out.set("in.bias", g.inBias);
  return out;
}

function softmaxStepReference(
  op: OperatorName,
  shape: ModuleShape,
  n: number,
  { w, x, dy }: ReferenceInputs,
): Map<string, Float64Array> {
  const { batch, dim, heads } = shape;
  const dims = { batches: batch, tokens: n, heads, headDim: dim / heads };
  const options = { causal: isCausal(op) };
  const grads = projectionGradsReference(w, dim);
  const { saves } = softmaxSelfAttentionReference(x, w, dims, options);
  const dx = softmaxSelfAttentionBackwardReference(
    { dy, x, params: w, saves, grads },
    dims,
    options,
  );
  return gradientMap(dx, grads);
}
