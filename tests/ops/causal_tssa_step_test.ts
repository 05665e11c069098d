/**
 * The causal TSSA decoding step: fed a sequence in pieces (one token at a
 * time, or several), it reproduces the whole-sequence operator at every
 * position — the float64 reference, the GPU scan and its own float64
 * reference step — and carries the same statistics.
 */

import assert from "node:assert/strict";
import { causalTssa } from "../../src/ops/causal_tssa.ts";
import {
  causalTssaReference,
  causalTssaStepReference,
  createCausalTssaHostState,
} from "../../src/ops/causal_tssa_reference.ts";
import {
  causalTssaStep,
  createCausalTssaState,
  destroyCausalTssaState,
  resetCausalTssaState,
} from "../../src/ops/causal_tssa_step.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

interface Case {
  B: number;
  N: number;
  H: number;
  d: number;
  /** block_size: denom_bias positions (≥ N). */
  P: number;
  /** Tokens fed per step, cycled (e.g. [1] token by token; [3, 1, 5] mixed). */
  pieces: number[];
}

function inputs(c: Case, seed: number) {
  return {
    w: randomArray(c.B * c.N * c.H * c.d, seed, -1, 1.5),
    temp: randomArray(c.H, seed + 1, 0.5, 1.5),
    bias: randomArray(c.H * c.P, seed + 2, -0.2, 0.2),
  };
}

/** Rows [t0, t0 + T) of every sequence of `w` [B, N, D]. */
function slice(w: Float32Array, B: number, N: number, D: number, t0: number, T: number) {
  const out = new Float32Array(B * T * D);
  for (let b = 0; b < B; b++) {
    out.set(w.subarray((b * N + t0) * D, (b * N + t0 + T) * D), b * T * D);
  }
  return out;
}

/** Scatter rows [t0, t0 + T) back into a [B, N, D] array. */
function place(
  dst: Float64Array,
  src: ArrayLike<number>,
  B: number,
  N: number,
  D: number,
  t0: number,
  T: number,
) {
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < T * D; i++) dst[(b * N + t0) * D + i] = src[b * T * D + i];
  }
}

/**
 * Feed the case piece by piece on the GPU (all steps in one submission, the
 * outputs gathered into one tensor) and on the CPU; returns y from both and
 * the final states.
 */
async function feed(gpu: Gpu, c: Case, data: ReturnType<typeof inputs>) {
  const D = c.H * c.d;
  const temp = gpu.upload(data.temp, [c.H, 1], "temp");
  const bias = gpu.upload(data.bias, [c.H, c.P, 1], "denom_bias");
  const state = createCausalTssaState(gpu, c.B, c.H, c.d);
  const host = createCausalTssaHostState(c.B, c.H, c.d);
  const out = gpu.empty([c.B, c.N, D], "f32", "y.all");
  const yHost = new Float64Array(c.B * c.N * D);
  try {
    let t0 = 0;
    for (let i = 0; t0 < c.N; i++) {
      const T = Math.min(c.pieces[i % c.pieces.length], c.N - t0);
      const piece = slice(data.w, c.B, c.N, D, t0, T);
      const w = gpu.upload(piece, [c.B, T, D], "w");
      const y = await causalTssaStep(gpu, w, temp, bias, state);
      assert.deepEqual(y.shape, [c.B, T, D]);
      assert.equal(state.position, t0 + T);
      for (let b = 0; b < c.B; b++) {
        gpu.copy(y, out, T * D * 4, b * T * D * 4, (b * c.N + t0) * D * 4);
      }
      w.destroy();
      y.destroy();
      const r = causalTssaStepReference(piece, data.temp, data.bias, host, c.B, T, c.H, c.d, c.P);
      place(yHost, r, c.B, c.N, D, t0, T);
      t0 += T;
    }
    const yGpu = await out.read();
    const s = {
      s1: await state.s1.read(),
      s2: await state.s2.read(),
      s3: await state.s3.read(),
    };
    return { yGpu, yHost, state: s, host };
  } finally {
    destroyCausalTssaState(state);
    for (const t of [temp, bias, out]) t.destroy();
  }
}

const CASES: Case[] = [
  { B: 1, N: 1, H: 1, d: 1, P: 1, pieces: [1] },
  { B: 2, N: 9, H: 4, d: 5, P: 9, pieces: [1] }, // up to the last position
  { B: 3, N: 23, H: 4, d: 16, P: 64, pieces: [1] }, // the fixture model's heads
  { B: 1, N: 70, H: 6, d: 64, P: 80, pieces: [3, 1, 7, 2] }, // D = 384: two columns per thread
  { B: 2, N: 33, H: 7, d: 100, P: 40, pieces: [33] }, // D = 700, the whole sequence at once
  { B: 1, N: 130, H: 3, d: 7, P: 130, pieces: [64, 1, 65] }, // spans three scan blocks
  { B: 2, N: 12, H: 12, d: 3, P: 15, pieces: [5, 1] },
];

Deno.test("causalTssaStep fed in pieces reproduces the whole-sequence operator", async () => {
  await withGpu(async (gpu) => {
    for (const [i, c] of CASES.entries()) {
      const what = JSON.stringify(c);
      const data = inputs(c, 100 + 7 * i);
      const { yGpu, yHost, state, host } = await feed(gpu, c, data);
      const full = causalTssaReference(data.w, { temp: data.temp, denomBias: data.bias }, {
        batches: c.B,
        tokens: c.N,
        heads: c.H,
        headDim: c.d,
        blockSize: c.P,
      }).y;
      // The float64 step is the full reference up to rounding of the sums' order.
      assertClose(yHost, full, { atol: 1e-12, rtol: 1e-10 }, `${what}: reference step`);
      assertClose(yGpu, full, { atol: 1e-6, rtol: 1e-5 }, `${what}: GPU step vs reference`);
      // The GPU's whole-sequence scan (a different summation order in f32).
      const D = c.H * c.d;
      const w = gpu.upload(data.w, [c.B, c.N, D], "w");
      const temp = gpu.upload(data.temp, [c.H, 1], "temp");
      const bias = gpu.upload(data.bias, [c.H, c.P, 1], "denom_bias");
      const y = await causalTssa(gpu, w, temp, bias, c.H);
      const scan = await y.read();
      for (const t of [w, temp, bias, y]) t.destroy();
      assertClose(yGpu, scan, { atol: 1e-6, rtol: 1e-5 }, `${what}: GPU step vs GPU scan`);
      // The carried statistics.
      assertClose(state.s1, host.s1, { atol: 1e-6, rtol: 1e-5 }, `${what}: s1`);
      assertClose(state.s2, host.s2, { atol: 1e-6, rtol: 1e-5 }, `${what}: s2`);
      assertClose(state.s3, host.s3, { atol: 1e-6, rtol: 1e-5 }, `${what}: s3`);
    }
  });
});

Deno.test("causalTssaStep: a reset state starts the sequence again; sequences stay apart", async () => {
  await withGpu(async (gpu) => {
    const [B, H, d, P] = [2, 3, 4, 8];
    const D = H * d;
    const temp = gpu.upload(randomArray(H, 1, 0.5, 1.5), [H], "temp");
    const bias = gpu.upload(randomArray(H * P, 2, -0.2, 0.2), [H, P], "denom_bias");
    const state = createCausalTssaState(gpu, B, H, d);
    try {
      const a = randomArray(B * 3 * D, 3);
      const run = async () => {
        const w = gpu.upload(a, [B, 3, D], "w");
        const y = await causalTssaStep(gpu, w, temp, bias, state);
        const out = await y.read();
        w.destroy();
        y.destroy();
        return out;
      };
      const first = await run();
      const second = await run(); // positions 3…5: a different result
      assert.notDeepEqual(second, first);
      resetCausalTssaState(gpu, state);
      assert.equal(state.position, 0);
      assert.deepEqual(await run(), first);
      // Sequence 1 alone gives the same rows as in the batch of two.
      const one = createCausalTssaState(gpu, 1, H, d);
      const w1 = gpu.upload(a.slice(3 * D), [1, 3, D], "w1");
      const y1 = await causalTssaStep(gpu, w1, temp, bias, one);
      assert.deepEqual(await y1.read(), first.slice(3 * D));
      destroyCausalTssaState(one);
      w1.destroy();
      y1.destroy();
    } finally {
      destroyCausalTssaState(state);
      temp.destroy();
      bias.destroy();
    }
  });
});

Deno.test("causalTssaStep refuses positions past block_size and mismatched shapes", async () => {
  await withGpu(async (gpu) => {
    const [H, d, P] = [2, 4, 5];
    const temp = gpu.upload(new Float32Array(H).fill(1), [H, 1], "temp");
    const bias = gpu.upload(new Float32Array(H * P), [H, P, 1], "denom_bias");
    const state = createCausalTssaState(gpu, 1, H, d);
    const w4 = gpu.upload(new Float32Array(4 * H * d).fill(0.5), [1, 4, H * d], "w4");
    const w2 = gpu.upload(new Float32Array(2 * H * d).fill(0.5), [1, 2, H * d], "w2");
    const wb = gpu.upload(new Float32Array(2 * H * d).fill(0.5), [2, 1, H * d], "wb");
    try {
      (await causalTssaStep(gpu, w4, temp, bias, state)).destroy();
      await assert.rejects(
        () => causalTssaStep(gpu, w2, temp, bias, state),
        (e: Error) =>
          e instanceof RangeError && /positions 4…5 pass the block size 5/.test(e.message),
      );
      assert.equal(state.position, 4);
      await assert.rejects(() => causalTssaStep(gpu, wb, temp, bias, state), TypeError);
      assert.throws(
        () =>
          causalTssaStepReference(
            new Float32Array(2 * H * d),
            [1, 1],
            new Float32Array(H * P),
            { ...createCausalTssaHostState(1, H, d), position: 4 },
            1,
            2,
            H,
            d,
            P,
          ),
        RangeError,
      );
    } finally {
      destroyCausalTssaState(state);
      for (const t of [temp, bias, w4, w2, wb]) t.destroy();
    }
  });
});
