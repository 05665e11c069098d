import assert from "node:assert/strict";
import { residualBackward, residualBackwardReference } from "../../src/ops/residual_backward.ts";
import { assertClose, assertCloseScaled, randomArray, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";
import { runnableVariants } from "./_variants.ts";
import { COLUMN_SUMS } from "../../src/ops/column_sums.ts";

const f64 = (a: Float32Array) => Float64Array.from(a);

Deno.test("residualBackwardReference matches finite differences of x + γ⊙f", () => {
  const C = 3;
  const x = f64(randomArray(4 * C, 1));
  const f = f64(randomArray(4 * C, 2));
  const gamma = f64(randomArray(C, 3));
  const dy = f64(randomArray(4 * C, 4));
  const loss = () => x.reduce((s, v, i) => s + dy[i] * (v + gamma[i % C] * f[i]), 0);
  const dGamma = new Float64Array(C).fill(1);
  const df = residualBackwardReference({ dy, f, gamma, dGamma }, C);
  assertClose(df, numericGradient(f, loss), { atol: 1e-8 }, "df");
  assertClose(dGamma, numericGradient(gamma, loss).map((v) => v + 1), { atol: 1e-8 }, "dGamma");
  // ∂x = ∂y: the pass-through the op documents
  assertClose(numericGradient(x, loss), dy, { atol: 1e-8 }, "dx");
});

for (
  const [rows, C] of [[1, 1], [7, 5], [63, 33], [700, 100], [300, 7], [1, 4], [2100, 12]] as const
) {
  Deno.test(`residualBackward matches the reference (${rows}×${C})`, async () => {
    await withGpu(async (gpu) => {
      const seed = rows * 7 + C;
      const dy = randomArray(rows * C, seed);
      const f = randomArray(rows * C, seed + 1);
      const gamma = randomArray(C, seed + 2);
      const dG0 = randomArray(C, seed + 3);
      const dGammaRef = f64(dG0);
      const dfRef = residualBackwardReference({ dy, f, gamma, dGamma: dGammaRef }, C);
      const dyT = gpu.upload(dy, [1, rows, C]);
      const fT = gpu.upload(f, [1, rows, C]);
      const gammaT = gpu.upload(gamma, [C]);
      for (const variant of runnableVariants(gpu, COLUMN_SUMS, { rows, cols: C })) {
        const dGamma = gpu.upload(dG0, [C]);
        const df = await residualBackward(gpu, { dy: dyT, f: fT, gamma: gammaT, dGamma }, {
          variant,
        });
        assert.deepEqual(df.shape, [1, rows, C]);
        assertClose(await df.read(), dfRef, { atol: 1e-7, rtol: 1e-6 }, `df ${variant}`);
        const tol = 1e-5 * Math.max(1, rows / 10);
        assertCloseScaled(await dGamma.read(), dGammaRef, tol, `dGamma ${variant}`);
      }
      // dy is left untouched (it is ∂x)
      assert.deepEqual(await dyT.read(), dy);
    });
  });
}

Deno.test("residualBackward: shape errors are TypeErrors", async () => {
  await withGpu(async (gpu) => {
    const dy = gpu.empty([2, 3]);
    await assert.rejects(
      residualBackward(gpu, {
        dy,
        f: gpu.empty([3, 2]),
        gamma: gpu.empty([3]),
        dGamma: gpu.empty([3]),
      }),
      TypeError,
    );
    await assert.rejects(
      residualBackward(gpu, { dy, f: dy, gamma: gpu.empty([2]), dGamma: gpu.empty([3]) }),
      TypeError,
    );
  });
});
