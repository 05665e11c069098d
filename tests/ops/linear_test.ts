import assert from "node:assert/strict";
import { linear, type LinearOptions } from "../../src/ops/linear.ts";
import { linearForwardReference, linearReference } from "../../src/ops/linear_reference.ts";
import { GEMM_VARIANTS } from "../../src/ops/gemm.ts";
import { erfc } from "../../src/ops/gelu_reference.ts";
import { linear as modelLinear } from "../../src/model/reference/layers.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";

// f32 accumulation of up to 700 products of values in [-1, 1] against float64.
const TOL = { atol: 3e-5, rtol: 1e-5 };

/** `n` values in [-1, 1) from a multiplicative hash: fast, deterministic, irregular. */
function hashedArray(n: number, seed: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = ((Math.imul(i + seed, 0x9e3779b1) >>> 16) - 32768) / 32768;
  return out;
}

function exactGelu(v: number): number {
  const tail = 0.5 * erfc(Math.abs(v) / Math.SQRT2);
  return v >= 0 ? v * (1 - tail) : v * tail;
}

/** Run linear on random data and compare with the reference. */
async function check(
  gpu: Gpu,
  xShape: number[],
  N: number,
  withBias: boolean,
  options: LinearOptions = {},
  random: (n: number, seed: number) => Float32Array<ArrayBuffer> = randomArray,
): Promise<void> {
  const K = xShape[xShape.length - 1];
  const M = xShape.slice(0, -1).reduce((a, b) => a * b, 1);
  const seed = M * 1000 + K * 10 + N;
  const xd = random(M * K, seed);
  const wd = random(N * K, seed + 1);
  const bd = withBias ? random(N, seed + 2) : null;
  const y = await linear(
    gpu,
    gpu.upload(xd, xShape, "x"),
    gpu.upload(wd, [N, K], "w"),
    bd && gpu.upload(bd, [N], "b"),
    undefined,
    options,
  );
  assert.deepEqual(y.shape, [...xShape.slice(0, -1), N]);
  const what = `linear x [${xShape}] → ${N}, bias ${withBias} ${options.variant ?? ""}`;
  const ref = linearForwardReference(xd, wd, bd, { rows: M, inFeatures: K, outFeatures: N });
  assertClose(await y.read(), ref, TOL, what);
}

Deno.test("linearReference computes x·Wᵀ + b; the model reference uses the same function", () => {
  const x = new Float32Array([1, 2, 3, 4, 5, 6]); // [2, 3]
  const w = new Float32Array([1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 0, 2]); // [4, 3]
  const b = new Float32Array([0.5, 0, 0, -1]);
  assert.deepEqual([...linearReference(x, w, b, 2, 3, 4)], [1.5, 2, 6, 5, 4.5, 5, 15, 11]);
  assert.deepEqual([...linearReference(x, w, null, 2, 3, 4)], [1, 2, 6, 6, 4, 5, 15, 12]);
  assert.throws(() => linearReference(x, w, null, 2, 3, 3), TypeError);
  const dims = { rows: 2, inFeatures: 3, outFeatures: 4 };
  assert.deepEqual(
    [...modelLinear(Float64Array.from(x), 2, Float64Array.from(w), 3, 4, Float64Array.from(b))],
    [...linearForwardReference(x, w, b, dims)],
  );
});

Deno.test("linear matches the reference at awkward sizes (M, K, N in 1, 7, 63, 700)", async () => {
  await withGpu(async (gpu) => {
    const cases: [number[], number][] = [
      [[1, 1], 1],
      [[1, 7], 1],
      [[7, 1], 63],
      [[63, 7], 700],
      [[700, 63], 7],
      [[7, 700], 63],
      [[63, 700], 1],
      [[1, 63], 700],
      [[65, 17], 65],
      [[129, 64], 128],
    ];
    for (const [xShape, N] of cases) {
      for (const withBias of [true, false]) await check(gpu, xShape, N, withBias);
    }
  });
});

Deno.test("linear is correct with every GEMM variant", async () => {
  await withGpu(async (gpu) => {
    for (const variant of GEMM_VARIANTS.keys()) {
      await check(gpu, [63, 70], 33, true, { variant });
      await check(gpu, [2, 5, 7], 9, false, { variant });
    }
  });
});

Deno.test("linear flattens batch dimensions into rows", async () => {
  await withGpu(async (gpu) => {
    await check(gpu, [2, 3, 7], 63, true);
    await check(gpu, [3, 1, 5, 63], 7, false);
    await check(gpu, [7], 9, true); // a single vector
  });
});

Deno.test("linear is exact on a small integer case", async () => {
  await withGpu(async (gpu) => {
    const x = gpu.upload(new Float32Array([1, 2]), [1, 2]);
    const w = gpu.upload(new Float32Array([1, 0, 0, 1, 1, 1]), [3, 2]);
    const b = gpu.upload(new Float32Array([10, 20, 30]), [3]);
    assert.deepEqual([...await (await linear(gpu, x, w, b)).read()], [11, 22, 33]);
  });
});

/** Data of a [M, K] → N layer and its float64 pre-activation. */
function layer(M: number, K: number, N: number, seed: number) {
  const x = randomArray(M * K, seed);
  const w = randomArray(N * K, seed + 1);
  const b = randomArray(N, seed + 2);
  const pre = linearForwardReference(x, w, b, { rows: M, inFeatures: K, outFeatures: N });
  return { x, w, b, pre };
}

Deno.test("linear's fused GELU epilogue matches gelu(x·Wᵀ + b) and keeps the pre-activation", async () => {
  await withGpu(async (gpu) => {
    for (const variant of ["texture-16x16", "tile-64x64", "simple-1x4", undefined]) {
      for (const [M, K, N] of [[1, 3, 7], [65, 63, 700], [700, 7, 65]]) {
        const d = layer(M, K, N, M + K + N);
        const pre = gpu.empty([M, N]);
        const y = await linear(
          gpu,
          gpu.upload(d.x, [M, K]),
          gpu.upload(d.w, [N, K]),
          gpu.upload(d.b, [N]),
          undefined,
          { variant, epilogue: { gelu: true, preActivation: pre } },
        );
        const what = `gelu ${M}×${K}→${N} ${variant}`;
        assertClose(await y.read(), d.pre.map(exactGelu), TOL, what);
        assertClose(await pre.read(), d.pre, TOL, `${what} pre-activation`);
      }
    }
  });
});

Deno.test("linear's residual epilogue: x += gamma ⊙ (x·Wᵀ + b) in place, out keeps the product", async () => {
  await withGpu(async (gpu) => {
    for (const variant of ["texture-8x16", "tile-128x64", "simple-4x4"]) {
      for (const [M, K, N] of [[1, 7, 3], [63, 65, 700], [700, 63, 7]]) {
        const d = layer(M, K, N, 3 * M + K);
        const r0 = randomArray(M * N, 99);
        const g = randomArray(N, 98);
        const stream = gpu.upload(r0, [M, N]);
        const out = gpu.empty([M, N]);
        const x = gpu.upload(d.x, [M, K]);
        const w = gpu.upload(d.w, [N, K]);
        const b = gpu.upload(d.b, [N]);
        const got = await linear(gpu, x, w, b, out, {
          variant,
          residual: { x: stream, gamma: gpu.upload(g, [N]) },
        });
        assert.equal(got, stream);
        const what = `residual ${M}×${K}→${N} ${variant}`;
        assertClose(await stream.read(), d.pre.map((v, i) => r0[i] + g[i % N] * v), TOL, what);
        assertClose(await out.read(), d.pre, TOL, `${what} product`);
        // Without gamma and without out: x += x·Wᵀ + b.
        const plain = gpu.upload(r0, [M, N]);
        await linear(gpu, x, w, b, undefined, { variant, residual: { x: plain, gamma: null } });
        assertClose(await plain.read(), d.pre.map((v, i) => r0[i] + v), TOL, `${what} no gamma`);
      }
    }
  });
});

Deno.test("linear writes into out and rejects bad arguments", async () => {
  await withGpu(async (gpu) => {
    const xd = randomArray(12, 1);
    const wd = randomArray(15, 2);
    const x = gpu.upload(xd, [4, 3]);
    const w = gpu.upload(wd, [5, 3]);
    const out = gpu.empty([4, 5]);
    assert.equal(await linear(gpu, x, w, null, out), out);
    assertClose(await out.read(), linearReference(xd, wd, null, 4, 3, 5), TOL);
    await assert.rejects(linear(gpu, x, gpu.empty([5, 4]), null), /does not end in weight's 4/);
    await assert.rejects(linear(gpu, x, gpu.empty([15]), null), /weight must be \[out, in\]/);
    await assert.rejects(linear(gpu, x, w, gpu.empty([4])), /bias must have shape \[5\]/);
    await assert.rejects(linear(gpu, x, w, null, gpu.empty([5, 4])), /out must have shape/);
    await assert.rejects(linear(gpu, x, gpu.empty([5, 3]), null, x), TypeError);
    await assert.rejects(linear(gpu, gpu.empty([2, 0]), gpu.empty([5, 0]), null), RangeError);
    await assert.rejects(
      linear(gpu, x, w, null, undefined, { variant: "tile-1x1" }),
      /Unknown GEMM variant "tile-1x1"/,
    );
    await assert.rejects(
      linear(gpu, x, w, null, undefined, { epilogue: { preActivation: gpu.empty([4, 5]) } }),
      /only written with epilogue.gelu/,
    );
    await assert.rejects(
      linear(gpu, x, w, null, undefined, { residual: { x: gpu.empty([4, 4]), gamma: null } }),
      /residual.x must have shape \[4,5\]/,
    );
    await assert.rejects(
      linear(gpu, x, w, null, undefined, { residual: { x: w, gamma: null } }),
      /residual.x must have shape/,
    );
    const stream = gpu.empty([4, 5]);
    await assert.rejects(
      linear(gpu, x, w, null, stream, { residual: { x: stream, gamma: null } }),
      /out must not be one of the inputs/,
    );
    await assert.rejects(
      linear(gpu, x, w, null, gpu.empty([4, 5]), {
        epilogue: { gelu: true, preActivation: gpu.empty([4, 5]) },
        residual: { x: stream, gamma: null },
      }),
      /pre-activation goes to epilogue.preActivation/,
    );
    assert.deepEqual((await linear(gpu, gpu.empty([0, 3]), w, null)).shape, [0, 5]);
  });
});

Deno.test("linear splits x, y and the weight over the binding limit", async () => {
  await withGpu(async (gpu) => {
    // 2000-byte bindings: x and y in row pieces, W and b in output-feature pieces,
    // with y pieces written as column bands of full rows.
    for (const variant of ["texture-16x16", "tile-64x64", "simple-4x4"]) {
      const small = { maxBindingBytes: 2000, variant };
      await check(gpu, [130, 7], 63, true, small); // W fits, x/y in pieces
      await check(gpu, [9, 63], 70, true, small); // W (17640 B) in 10 pieces, y rows 280 B
      await check(gpu, [2, 5, 40], 300, false, small); // both
      await check(gpu, [3, 400], 2, true, small); // one 1600-byte row per piece
    }
    await assert.rejects(
      linear(gpu, gpu.empty([1, 600]), gpu.empty([1, 600]), null, undefined, {
        maxBindingBytes: 2000,
      }),
      /does not fit a 2000-byte storage binding/,
    );
  });
});

Deno.test("linear over more than 65535 workgroups (folded grid)", async () => {
  await withGpu(async (gpu) => {
    // simple-1x4 runs 64 rows of y per workgroup: 65537 workgroups.
    await check(gpu, [65_536 * 64 + 3, 1], 1, true, { variant: "simple-1x4" });
  });
});

Deno.test("linear with a weight over the device's binding limit (134 MB)", async () => {
  await withGpu(async (gpu) => {
    const K = 64;
    const N = Math.floor(gpu.limits.maxStorageBufferBindingSize / (K * 4)) + 1;
    if (N * K * 4 > gpu.limits.maxBufferSize) return; // cannot hold it in one buffer either
    // Two rows (one token pair, as when sampling); hashed values fill the
    // 33.5M weights 5× faster than the seeded generator.
    await check(gpu, [2, K], N, true, {}, hashedArray);
  });
});
