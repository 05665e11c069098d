import assert from "node:assert/strict";
import { LAYER_NORM, layerNorm } from "../../src/ops/layer_norm.ts";
import { layerNormReference } from "../../src/ops/layer_norm_reference.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";
import { runnableVariants } from "./_variants.ts";

// f32 rounding of inputs near 30 (ulp 2e-6) and of their mean, scaled up by 1/std ≈ 1.
const TOL = { atol: 1e-5, rtol: 1e-5 };

Deno.test("layerNormReference normalises and applies the affine map", () => {
  const y = layerNormReference(
    new Float32Array([1, 2, 3, 4, 10, 10, 10, 10]),
    new Float32Array([1, 2, 1, 1]),
    new Float32Array([0, 0, 0, 5]),
    2,
    4,
    0,
  );
  const s = 1 / Math.sqrt(1.25);
  assertClose(y.subarray(0, 4), [-1.5 * s, -1 * s, 0.5 * s, 1.5 * s + 5], { atol: 0, rtol: 1e-15 });
  // A constant row with eps 0 divides 0 by 0: NaN, as PyTorch.
  assert.ok(Number.isNaN(y[4]));
  assert.throws(() => layerNormReference(new Float32Array(3), new Float32Array(2), null, 1, 3, 0));
  assert.throws(() => layerNormReference(new Float32Array(6), new Float32Array(3), null, 1, 3, 0));
});

Deno.test("layerNorm matches the reference at awkward sizes, with and without bias", async () => {
  await withGpu(async (gpu) => {
    const cases = [
      [1],
      [7],
      [63],
      [700],
      [5, 1],
      [3, 7],
      [9, 63],
      [4, 700],
      [2, 3, 7],
      [2, 2500],
      [7, 4],
      [2, 3, 68],
      [63, 12],
    ];
    for (const shape of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      const C = shape[shape.length - 1];
      const rows = n / C;
      // An offset mean makes a one-pass E[x²] − E[x]² variance visibly wrong.
      const data = randomArray(n, n, -2, 2).map((v) => v + 30);
      const w = randomArray(C, C + 1, 0.5, 1.5);
      const b = randomArray(C, C + 2, -1, 1);
      const x = gpu.upload(data, shape, "x");
      const wt = gpu.upload(w, [C], "w");
      // eps 0.25 is large enough to show if the kernel ignored its eps.
      for (const variant of runnableVariants(gpu, LAYER_NORM, { rows, cols: C })) {
        for (const [bias, eps] of [[null, 1e-5], [b, 1e-6], [b, 0.25]] as const) {
          const bt = bias && gpu.upload(bias, [C], "b");
          const y = await layerNorm(gpu, x, wt, bt, eps, undefined, { variant });
          assert.deepEqual(y.shape, shape);
          const want = layerNormReference(data, w, bias, rows, C, eps);
          const what = `layerNorm ${variant} [${shape}] bias ${bias !== null}`;
          assertClose(await y.read(), want, TOL, what);
        }
      }
    }
  });
});

Deno.test("layerNorm writes into out and rejects bad arguments", async () => {
  await withGpu(async (gpu) => {
    const data = randomArray(12, 3);
    const x = gpu.upload(data, [3, 4], "x");
    const w = gpu.upload(new Float32Array([1, 2, 3, 4]), [4]);
    const out = gpu.empty([3, 4]);
    assert.equal(await layerNorm(gpu, x, w, null, 1e-5, out), out);
    const want = layerNormReference(data, new Float32Array([1, 2, 3, 4]), null, 3, 4, 1e-5);
    assertClose(await out.read(), want, TOL);
    await assert.rejects(layerNorm(gpu, x, w, null, 1e-5, x), /in-place/);
    await assert.rejects(layerNorm(gpu, x, w, null, 1e-5, w), TypeError);
    await assert.rejects(layerNorm(gpu, x, gpu.empty([3]), null, 1e-5), /weight must have shape/);
    await assert.rejects(layerNorm(gpu, x, w, gpu.empty([4, 1]), 1e-5), /bias must have shape/);
    await assert.rejects(layerNorm(gpu, x, w, null, -1), RangeError);
    await assert.rejects(layerNorm(gpu, x, w, null, NaN), RangeError);
  });
});

Deno.test("layerNorm splits tensors over the binding limit into pieces", async () => {
  await withGpu(async (gpu) => {
    for (const [rows, C] of [[300, 7], [41, 63], [3, 700], [300, 8], [41, 68]]) {
      const data = randomArray(rows * C, C, -3, 3);
      const w = randomArray(C, 1, 0.5, 1.5);
      const b = randomArray(C, 2);
      for (const variant of runnableVariants(gpu, LAYER_NORM, { rows, cols: C })) {
        const y = await layerNorm(
          gpu,
          gpu.upload(data, [rows, C]),
          gpu.upload(w, [C]),
          gpu.upload(b, [C]),
          1e-5,
          undefined,
          { maxBindingBytes: 3000, variant },
        );
        const want = layerNormReference(data, w, b, rows, C, 1e-5);
        assertClose(await y.read(), want, TOL, `chunked ${variant} ${rows}×${C}`);
      }
    }
  });
});

Deno.test("layerNorm over more than 65535 rows (folded workgroup grid)", async () => {
  await withGpu(async (gpu) => {
    const rows = 65_600;
    const C = 3;
    // Rows spread by ~1 around a random offset, so 1/std does not amplify f32 rounding.
    const offsets = randomArray(rows, 13, -4, 4);
    const data = randomArray(rows * C, 14, -0.2, 0.2).map((v, i) =>
      v + (i % C) - 1 + offsets[Math.floor(i / C)]
    );
    const w = new Float32Array([1, -1, 0.5]);
    const y = await layerNorm(gpu, gpu.upload(data, [rows, C]), gpu.upload(w, [C]), null, 1e-5);
    assertClose(await y.read(), layerNormReference(data, w, null, rows, C, 1e-5), TOL, "rows");
  });
});

Deno.test("layerNorm: the row design needs rows of whole vec4s and says so", async () => {
  await withGpu(async (gpu) => {
    const x = gpu.upload(randomArray(21, 1), [3, 7]);
    const w = gpu.upload(randomArray(7, 2), [7]);
    await assert.rejects(
      layerNorm(gpu, x, w, null, 1e-5, undefined, { variant: "row" }),
      /layerNorm: variant row needs rows of a multiple of 4 values, got 7/,
    );
    await assert.rejects(
      layerNorm(gpu, x, w, null, 1e-5, undefined, { variant: "tree" }),
      /variant tree is unknown \(known: row, workgroup\)/,
    );
  });
});
