import assert from "node:assert/strict";
import { LAYER_NORM_BACKWARD, layerNormBackward } from "../../src/ops/layer_norm_backward.ts";
import { COLUMN_SUMS } from "../../src/ops/column_sums.ts";
import {
  layerNormBackwardReference,
  layerNormReference,
} from "../../src/ops/layer_norm_reference.ts";
import { assertClose, assertCloseScaled, randomArray, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";
import { runnableVariants } from "./_variants.ts";

const f64 = (a: Float32Array) => Float64Array.from(a);

for (const [rows, C, bias] of [[1, 1, true], [3, 5, true], [4, 7, false]] as const) {
  Deno.test(`layerNormBackwardReference matches finite differences (${rows}×${C}, bias ${bias})`, () => {
    const x = f64(randomArray(rows * C, 1, -2, 2));
    const w = f64(randomArray(C, 2, 0.5, 1.5));
    const b = bias ? f64(randomArray(C, 3)) : null;
    const dy = f64(randomArray(rows * C, 4));
    const eps = 1e-5;
    const f = () => {
      const y = layerNormReference(x, w, b, rows, C, eps);
      return y.reduce((s, v, i) => s + v * dy[i], 0);
    };
    const dWeight = new Float64Array(C).fill(0.5);
    const dBias = b ? new Float64Array(C).fill(-0.25) : null;
    const dx = layerNormBackwardReference({ dy, x, weight: w, dWeight, dBias }, C, eps);
    assertClose(dx, numericGradient(x, f), { atol: 1e-6, rtol: 1e-5 }, "dx");
    // parameter gradients are added to what was there
    assertClose(dWeight, numericGradient(w, f).map((v) => v + 0.5), { atol: 1e-7 }, "dWeight");
    if (b && dBias) {
      assertClose(dBias, numericGradient(b, f).map((v) => v - 0.25), { atol: 1e-7 }, "dBias");
    }
  });
}

async function checkGpu(rows: number, C: number, bias: boolean, seed: number): Promise<void> {
  await withGpu(async (gpu) => {
    const x = randomArray(rows * C, seed, -2, 2);
    // a shifted row mean checks that the statistics are not E[x²] − E[x]²
    for (let i = 0; i < x.length; i++) x[i] += 30;
    const w = randomArray(C, seed + 1, 0.5, 1.5);
    const dy = randomArray(rows * C, seed + 2);
    const dW0 = randomArray(C, seed + 3);
    const dB0 = randomArray(C, seed + 4);
    const eps = 1e-5;
    const dWeightRef = f64(dW0);
    const dBiasRef = bias ? f64(dB0) : null;
    const dxRef = layerNormBackwardReference(
      { dy, x, weight: w, dWeight: dWeightRef, dBias: dBiasRef },
      C,
      eps,
    );
    const inputs = { dy: gpu.upload(dy, [rows, C]), x: gpu.upload(x, [rows, C]) };
    const weight = gpu.upload(w, [C]);
    // Every design of the row pass, with every design of the column pass.
    for (const variant of runnableVariants(gpu, LAYER_NORM_BACKWARD, { rows, cols: C })) {
      for (const columnVariant of runnableVariants(gpu, COLUMN_SUMS, { rows, cols: C })) {
        const what = `${variant}/${columnVariant}`;
        const dWeight = gpu.upload(dW0, [C]);
        const dBias = bias ? gpu.upload(dB0, [C]) : null;
        const dx = await layerNormBackward(
          gpu,
          { ...inputs, weight, eps, dWeight, dBias },
          { variant, columnVariant },
        );
        assert.deepEqual(dx.shape, [rows, C]);
        assertCloseScaled(await dx.read(), dxRef, 2e-4, `dx ${what}`);
        const tol = 1e-5 * Math.max(1, rows / 10);
        assertCloseScaled(await dWeight.read(), dWeightRef, tol, `dWeight ${what}`);
        if (dBias && dBiasRef) {
          assertCloseScaled(await dBias.read(), dBiasRef, tol, `dBias ${what}`);
        }
        // Into a stream gradient: dxInto += ∂x, and dxInto is returned.
        const d0 = randomArray(rows * C, seed + 5);
        const into = gpu.upload(d0, [rows, C]);
        const got = await layerNormBackward(
          gpu,
          { ...inputs, weight, eps, dWeight, dBias, dxInto: into },
          { variant, columnVariant },
        );
        assert.equal(got, into);
        const want = dxRef.map((v, i) => v + d0[i]);
        assertCloseScaled(await into.read(), want, 2e-4, `dxInto ${what}`);
      }
    }
  });
}

for (
  const [rows, C, bias] of [
    [1, 1, true],
    [7, 5, true],
    [63, 33, false],
    [700, 100, true],
    [7, 3000, true], // 256 threads per row
    [300, 64, true], // more rows than one level of the tree reduction
    [5, 8, false],
    [2100, 12, true], // several blocks of every column-sum design
  ] as const
) {
  Deno.test(`layerNormBackward matches the reference (${rows}×${C}, bias ${bias})`, async () => {
    await checkGpu(rows, C, bias, rows * 31 + C);
  });
}

Deno.test("layerNormBackward: over 65535 rows (folded workgroup grid)", async () => {
  await checkGpu(70_000, 3, true, 9);
});

Deno.test("layerNormBackward: batched [B, T, C] input and shape errors", async () => {
  await withGpu(async (gpu) => {
    const x = gpu.upload(randomArray(2 * 3 * 4, 1), [2, 3, 4]);
    const w = gpu.upload(randomArray(4, 2), [4]);
    const dWeight = gpu.empty([4]);
    const dx = await layerNormBackward(gpu, {
      dy: x,
      x,
      weight: w,
      eps: 1e-5,
      dWeight,
      dBias: null,
    });
    assert.deepEqual(dx.shape, [2, 3, 4]);
    await assert.rejects(
      layerNormBackward(gpu, { dy: x, x, weight: gpu.empty([5]), eps: 1e-5, dWeight, dBias: null }),
      TypeError,
    );
    await assert.rejects(
      layerNormBackward(gpu, { dy: x, x, weight: w, eps: -1, dWeight, dBias: null }),
      RangeError,
    );
    await assert.rejects(
      layerNormBackward(gpu, { dy: x, x, weight: w, eps: 1e-5, dWeight, dBias: null, dxInto: x }),
      /dxInto must not be one of the inputs/,
    );
  });
});
