import assert from "node:assert/strict";
import { linear, LINEAR_TILING, linearReference } from "../../src/ops/linear.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import type { LinearOptions } from "../../src/ops/linear.ts";

// f32 accumulation of up to 700 products of values in [-1, 1] against float64.
const TOL = { atol: 2e-5, rtol: 1e-5 };

/** `n` values in [-1, 1) from a multiplicative hash: fast, deterministic, irregular. */
function hashedArray(n: number, seed: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = ((Math.imul(i + seed, 0x9e3779b1) >>> 16) - 32768) / 32768;
  return out;
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
  const what = `linear x [${xShape}] → ${N}, bias ${withBias}`;
  assertClose(await y.read(), linearReference(xd, wd, bd, M, K, N), TOL, what);
}

Deno.test("linearReference computes x·Wᵀ + b", () => {
  const x = new Float32Array([1, 2, 3, 4, 5, 6]); // [2, 3]
  const w = new Float32Array([1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 0, 2]); // [4, 3]
  const b = new Float32Array([0.5, 0, 0, -1]);
  assert.deepEqual([...linearReference(x, w, b, 2, 3, 4)], [1.5, 2, 6, 5, 4.5, 5, 15, 11]);
  assert.deepEqual([...linearReference(x, w, null, 2, 3, 4)], [1, 2, 6, 6, 4, 5, 15, 12]);
  assert.throws(() => linearReference(x, w, null, 2, 3, 3), TypeError);
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
      [[65, 17], 65], // one past the 64×64 tile and a K not a multiple of its depth 16
      [[129, 64], 128],
    ];
    for (const [xShape, N] of cases) {
      for (const withBias of [true, false]) await check(gpu, xShape, N, withBias);
    }
  });
});

Deno.test("linear is correct with other tilings", async () => {
  await withGpu(async (gpu) => {
    for (
      const tiling of [{ bm: 32, bn: 64, bk: 8, tm: 4, tn: 8 }, {
        bm: 8,
        bn: 4,
        bk: 3,
        tm: 1,
        tn: 2,
      }]
    ) {
      await check(gpu, [63, 70], 33, true, { tiling });
      await check(gpu, [5, 7], 9, false, { tiling });
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
    const bad = { ...LINEAR_TILING, tm: 3 };
    await assert.rejects(linear(gpu, x, w, null, undefined, { tiling: bad }), RangeError);
    const huge = { bm: 64, bn: 64, bk: 4096, tm: 1, tn: 1 };
    await assert.rejects(linear(gpu, x, w, null, undefined, { tiling: huge }), /the device allows/);
    assert.deepEqual((await linear(gpu, gpu.empty([0, 3]), w, null)).shape, [0, 5]);
  });
});

Deno.test("linear splits x, y and the weight over the binding limit", async () => {
  await withGpu(async (gpu) => {
    // 2000-byte bindings: x and y in row pieces, W and b in output-feature pieces,
    // with y pieces written as column bands of full rows.
    const small = { maxBindingBytes: 2000 };
    await check(gpu, [130, 7], 63, true, small); // W fits, x/y in pieces
    await check(gpu, [9, 63], 70, true, small); // W (17640 B) in 10 pieces, y rows 280 B
    await check(gpu, [2, 5, 40], 300, false, small); // both
    await check(gpu, [3, 400], 2, true, small); // one 1600-byte row per piece
    await assert.rejects(
      linear(gpu, gpu.empty([1, 600]), gpu.empty([1, 600]), null, undefined, small),
      /does not fit a 2000-byte storage binding/,
    );
  });
});

Deno.test("linear over more than 65535 workgroups (folded grid)", async () => {
  await withGpu(async (gpu) => {
    // The grid folding is the same code for every tiling; a tiny tile keeps
    // 65537 workgroups cheap on software WebGPU (the default tile takes ~9 s here).
    const tiling = { bm: 4, bn: 4, bk: 4, tm: 2, tn: 2 };
    const M = 65_536 * tiling.bm + 3; // 65537 row tiles of one column tile
    await check(gpu, [M, 5], 3, true, { tiling });
  });
});

Deno.test("linear with a weight over the device's binding limit (134 MB)", async () => {
  await withGpu(async (gpu) => {
    const K = 64;
    const N = Math.floor(gpu.limits.maxStorageBufferBindingSize / (K * 4)) + 1;
    if (N * K * 4 > gpu.limits.maxBufferSize) return; // cannot hold it in one buffer either
    // Two rows (the skinny tiling keeps 8k workgroups cheap); hashed values fill
    // the 33.5M weights 5× faster than the seeded generator.
    await check(gpu, [2, K], N, true, {}, hashedArray);
  });
});
