/**
 * Training-mode BatchNorm kernels against the float64 references: output,
 * batch statistics, running-statistic update (momentum, unbiased variance),
 * input and parameter gradients (accumulated), at awkward sizes and with
 * more than 65535 channels' workgroups.
 */

import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { batchNormTrainBackward, batchNormTrainForward } from "../../src/ops/batch_norm.ts";
import {
  batchNormReference,
  batchNormTrainBackwardReference,
  batchNormTrainForwardReference,
} from "../../src/ops/batch_norm_reference.ts";
import { assertClose, randomArray, seededRandom, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";

/** A channels-last map [rows, C] as NCHW with B = 1, H = rows, W = 1. */
function asNchw(a: Float32Array, rows: number, C: number): Float64Array {
  const out = new Float64Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < C; c++) out[c * rows + r] = a[r * C + c];
  return out;
}

function toRows(a: Float64Array, rows: number, C: number): Float64Array {
  const out = new Float64Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < C; c++) out[r * C + c] = a[c * rows + r];
  return out;
}

async function check(gpu: Gpu, rows: number, C: number, seed: number, shift = 0) {
  const x = randomArray(rows * C, seed, -1 + shift, 1 + shift);
  const weight = randomArray(C, seed + 1, 0.5, 1.5);
  const bias = randomArray(C, seed + 2);
  const rm = randomArray(C, seed + 3);
  const rv = randomArray(C, seed + 4, 0.5, 2);
  const dyHost = randomArray(rows * C, seed + 5);
  // The reference is NCHW; a [rows, C] map is B = 1, H = rows, W = 1 channel by channel.
  const map = { data: asNchw(x, rows, C), B: 1, C, H: rows, W: 1 };
  const ref = batchNormTrainForwardReference(map, {
    weight: Float64Array.from(weight),
    bias: Float64Array.from(bias),
    runningMean: Float64Array.from(rm),
    runningVar: Float64Array.from(rv),
  });
  const grads = { dWeight: new Float64Array(C).fill(0.5), dBias: new Float64Array(C).fill(-0.5) };
  const dxRef = batchNormTrainBackwardReference(
    asNchw(dyHost, rows, C),
    ref,
    Float64Array.from(weight),
    grads,
    map,
  );

  const t = (a: Float32Array<ArrayBuffer>, shape: number[]) => gpu.upload(a, shape);
  const xt = t(x, [rows, C]);
  const wt = t(weight, [C]);
  const bt = t(bias, [C]);
  const rmt = t(rm, [C]);
  const rvt = t(rv, [C]);
  const dy = t(dyHost, [rows, C]);
  const dWeight = t(new Float32Array(C).fill(0.5), [C]);
  const dBias = t(new Float32Array(C).fill(-0.5), [C]);
  const { y, stats } = await batchNormTrainForward(gpu, {
    x: xt,
    weight: wt,
    bias: bt,
    runningMean: rmt,
    runningVar: rvt,
  });
  const dx = await batchNormTrainBackward(gpu, { dy, x: xt, stats, weight: wt, dWeight, dBias });
  const what = `rows ${rows} C ${C}`;
  const tol = { atol: 2e-5, rtol: 2e-5 };
  assertClose(await y.read(), toRows(ref.y, rows, C), tol, `${what} y`);
  const s = await stats.read();
  assertClose(s.filter((_, i) => i % 2 === 0), ref.mean, tol, `${what} mean`);
  assertClose(
    s.filter((_, i) => i % 2 === 1),
    ref.invStd,
    { atol: 1e-5, rtol: 1e-4 },
    `${what} invstd`,
  );
  assertClose(await rmt.read(), ref.runningMean, tol, `${what} running mean`);
  assertClose(await rvt.read(), ref.runningVar, tol, `${what} running var`);
  assertClose(await dx.read(), toRows(dxRef, rows, C), { atol: 1e-4, rtol: 1e-4 }, `${what} dx`);
  assertClose(await dWeight.read(), grads.dWeight, { atol: 1e-4, rtol: 1e-5 }, `${what} dweight`);
  assertClose(await dBias.read(), grads.dBias, { atol: 1e-4, rtol: 1e-5 }, `${what} dbias`);
  for (const u of [xt, wt, bt, rmt, rvt, dy, dWeight, dBias, y, stats, dx]) u.destroy();
}

Deno.test("BatchNorm training forward/backward match float64 at awkward sizes", async () => {
  await withGpu(async (gpu) => {
    await check(gpu, 2, 1, 1);
    await check(gpu, 7, 3, 2);
    await check(gpu, 63, 5, 3, 4); // channels far from zero mean
    await check(gpu, 700, 17, 4);
    await check(gpu, 2 * 16 * 16, 16, 5); // the stem's first stage at 32×32, B = 2
  });
});

Deno.test("BatchNorm training: more than 65535 channels (workgroups) and eval-style no-update", async () => {
  await withGpu(async (gpu) => {
    await check(gpu, 8, 65600, 6);
    const x = gpu.upload(new Float32Array([1, 2, 3, 4]), [4, 1]);
    const one = gpu.upload(new Float32Array([1]), [1]);
    const zero = gpu.upload(new Float32Array([0]), [1]);
    const rm = gpu.upload(new Float32Array([7]), [1]);
    const { y, stats } = await batchNormTrainForward(gpu, {
      x,
      weight: one,
      bias: zero,
      runningMean: rm,
      runningVar: one,
      updateRunning: false,
    });
    assert.deepEqual(Array.from(await rm.read()), [7]);
    const z = 1 / Math.sqrt(1.25 + 1e-5);
    assertClose(await y.read(), [-1.5 * z, -0.5 * z, 0.5 * z, 1.5 * z], { atol: 1e-6, rtol: 1e-6 });
    await assert.rejects(
      batchNormTrainForward(gpu, {
        x: one,
        weight: one,
        bias: zero,
        runningMean: rm,
        runningVar: one,
      }),
      RangeError,
    );
    for (const t of [x, one, zero, rm, y, stats]) t.destroy();
  });
});

Deno.test("BatchNorm training forward: batch statistics, running update with unbiased variance", () => {
  // Channel 0 holds 1, 2, 3, 4 (two images × 2 positions), channel 1 holds 0, 0, 2, 2.
  const x = { data: new Float64Array([1, 2, 0, 0, 3, 4, 2, 2]), B: 2, C: 2, H: 1, W: 2 };
  const s = batchNormTrainForwardReference(x, {
    weight: new Float64Array([2, 1]),
    bias: new Float64Array([0, 1]),
    runningMean: new Float64Array([1, -1]),
    runningVar: new Float64Array([1, 2]),
    eps: 0,
  });
  assertClose(s.mean, [2.5, 1], { atol: 1e-15, rtol: 0 });
  assertClose(s.invStd, [1 / Math.sqrt(1.25), 1], { atol: 1e-15, rtol: 0 });
  assertClose(s.runningMean, [0.9 + 0.25, -0.9 + 0.1], { atol: 1e-15, rtol: 0 });
  assertClose(s.runningVar, [0.9 + 0.1 * 5 / 3, 1.8 + 0.1 * 4 / 3], { atol: 1e-15, rtol: 0 });
  const z = 1 / Math.sqrt(1.25);
  assertClose(s.y, [-3 * z, -z, 0, 0, z, 3 * z, 2, 2], { atol: 1e-15, rtol: 0 });
});

Deno.test("batchNormReference: batch mode normalises each channel to weight·z + bias", () => {
  const rand = seededRandom(7);
  const B = 3, C = 2, H = 4, W = 5;
  const x = { data: Float64Array.from({ length: B * C * H * W }, () => rand(-3, 5)), B, C, H, W };
  const weight = new Float64Array([2, 0.5]);
  const bias = new Float64Array([1, -1]);
  const unused = new Float64Array([NaN, NaN]);
  const p = { weight, bias, runningMean: unused, runningVar: unused, eps: 0 };
  const y = batchNormReference(x, p, "batch");
  for (let c = 0; c < C; c++) {
    const v: number[] = [];
    for (let b = 0; b < B; b++) {
      v.push(...y.data.subarray((b * C + c) * H * W, (b * C + c + 1) * H * W));
    }
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    const variance = v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length;
    assert.ok(Math.abs(mean - bias[c]) < 1e-12, `channel ${c} mean ${mean}`);
    assert.ok(Math.abs(variance - weight[c] ** 2) < 1e-12, `channel ${c} variance ${variance}`);
  }
});

Deno.test("batchNormTrainBackwardReference agrees with finite differences", () => {
  const rand = seededRandom(5);
  const fill = (n: number) => Float64Array.from({ length: n }, () => rand(-1, 1));
  const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);
  // BatchNorm (training) on 2×3×2×3.
  const bx = { data: fill(36), B: 2, C: 3, H: 2, W: 3 };
  const bp = {
    weight: fill(3),
    bias: fill(3),
    runningMean: new Float64Array(3),
    runningVar: new Float64Array(3).fill(1),
  };
  const bdy = fill(36);
  const grads = { dWeight: new Float64Array(3), dBias: new Float64Array(3) };
  const bdx = batchNormTrainBackwardReference(
    bdy,
    batchNormTrainForwardReference(bx, bp),
    bp.weight,
    grads,
    bx,
  );
  const bnLoss = () => dot(batchNormTrainForwardReference(bx, bp).y, bdy);
  assertClose(bdx, numericGradient(bx.data, bnLoss), { atol: 1e-8, rtol: 1e-6 }, "bn dx");
  assertClose(
    grads.dWeight,
    numericGradient(bp.weight, bnLoss),
    { atol: 1e-8, rtol: 1e-6 },
    "bn dw",
  );
  assertClose(grads.dBias, numericGradient(bp.bias, bnLoss), { atol: 1e-8, rtol: 1e-6 }, "bn db");
});
