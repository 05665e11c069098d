import assert from "node:assert/strict";
import { linearBackward, type LinearBackwardOptions } from "../../src/ops/linear_backward.ts";
import { linearBackwardReference } from "../../src/ops/linear_reference.ts";
import { GEMM_VARIANTS } from "../../src/ops/gemm.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

// f32 sums of up to 700 products of values in [-1, 1] against float64.
const TOL = { atol: 3e-5, rtol: 1e-5 };

/**
 * Run linearBackward on `[M, K] → N` with existing gradients (to check `+=`)
 * and compare ∂x, ∂W and ∂b with the float64 reference.
 */
async function check(
  gpu: Gpu,
  [M, K, N]: [number, number, number],
  withBias: boolean,
  options: LinearBackwardOptions = {},
): Promise<void> {
  const seed = M * 31 + K * 7 + N;
  const x = randomArray(M * K, seed);
  const w = randomArray(N * K, seed + 1);
  const dy = randomArray(M * N, seed + 2);
  const dW0 = randomArray(N * K, seed + 3);
  const dB0 = randomArray(N, seed + 4);
  const dWeight = gpu.upload(dW0, [N, K]);
  const dBias = withBias ? gpu.upload(dB0, [N]) : null;
  const dx = await linearBackward(gpu, {
    dy: gpu.upload(dy, [M, N]),
    x: gpu.upload(x, [M, K]),
    weight: gpu.upload(w, [N, K]),
    dWeight,
    dBias,
  }, options);
  assert.deepEqual(dx.shape, [M, K]);
  const refW = Float64Array.from(dW0);
  const refB = Float64Array.from(dB0);
  const refX = linearBackwardReference(
    { dy, x, weight: w, dWeight: refW, dBias: withBias ? refB : null },
    { rows: M, inFeatures: K, outFeatures: N },
  );
  const what = `${M}×${K}→${N} ${JSON.stringify(options)}`;
  assertClose(await dx.read(), refX, TOL, `dx ${what}`);
  assertClose(await dWeight.read(), refW, TOL, `dW ${what}`);
  if (dBias) assertClose(await dBias.read(), refB, TOL, `db ${what}`);
}

/** [M, K, N] with 1, 3, 7, 63, 65, 700 in every position and K not a multiple of 4. */
const SIZES: [number, number, number][] = [
  [1, 1, 1],
  [1, 7, 3],
  [3, 65, 1],
  [7, 3, 63],
  [63, 63, 65],
  [65, 7, 700],
  [700, 63, 7],
];

Deno.test("linearBackward matches the reference at awkward sizes and accumulates ∂W, ∂b", async () => {
  await withGpu(async (gpu) => {
    for (const size of SIZES) {
      for (const bias of [true, false]) await check(gpu, size, bias);
    }
  });
});

Deno.test("linearBackward is correct with every GEMM variant for ∂x and ∂W", async () => {
  await withGpu(async (gpu) => {
    for (const v of GEMM_VARIANTS.keys()) {
      await check(gpu, [65, 63, 7], true, { dxVariant: v, dwVariant: v });
      await check(gpu, [7, 3, 70], false, { dxVariant: v, dwVariant: v });
    }
  });
});

Deno.test("linearBackward splits every tensor over small bindings", async () => {
  await withGpu(async (gpu) => {
    for (const v of ["texture-16x16", "tile-64x64", "simple-4x4"]) {
      const small = { maxBindingBytes: 2000, dxVariant: v, dwVariant: v };
      await check(gpu, [130, 7, 63], true, small); // ∂y rows 252 B, W in spans of n
      await check(gpu, [40, 70, 9], true, small); // x rows 280 B: ∂W over spans of m
    }
    // Texture sides of 20 texels: ∂W's reduction over 300 rows comes in 4 spans.
    await check(gpu, [300, 40, 35], true, { maxTextureSide: 20, dwVariant: "texture-8x8" });
  });
});

Deno.test("linearBackward of zero rows or features leaves the gradients alone", async () => {
  await withGpu(async (gpu) => {
    const dWeight = gpu.upload(new Float32Array([1, 2, 3]), [1, 3]);
    const dx = await linearBackward(gpu, {
      dy: gpu.empty([0, 1]),
      x: gpu.empty([0, 3]),
      weight: gpu.empty([1, 3]),
      dWeight,
      dBias: null,
    });
    assert.deepEqual(dx.shape, [0, 3]);
    assert.deepEqual([...await dWeight.read()], [1, 2, 3]);
    await assert.rejects(
      linearBackward(gpu, {
        dy: gpu.empty([2, 2]),
        x: gpu.empty([2, 3]),
        weight: gpu.empty([1, 3]),
        dWeight,
        dBias: null,
      }),
      /dy must have shape \[2,1\]/,
    );
  });
});
