import { linearBackward, linearBackwardReference } from "../../src/ops/linear_backward.ts";
import { assertCloseScaled, randomArray, withGpu } from "../_util.ts";

Deno.test("linearBackward on the GPU matches the float64 reference and accumulates", async () => {
  await withGpu(async (gpu) => {
    for (
      const [M, K, N, bias] of [[1, 5, 3, true], [700, 17, 33, true], [63, 64, 7, false]] as const
    ) {
      const x = randomArray(M * K, M + 1);
      const w = randomArray(N * K, M + 2);
      const dy = randomArray(M * N, M + 3);
      const dW0 = randomArray(N * K, M + 4);
      const dB0 = randomArray(N, M + 5);
      const dWeight = gpu.upload(dW0, [N, K]);
      const dBias = bias ? gpu.upload(dB0, [N]) : null;
      const dx = await linearBackward(gpu, {
        dy: gpu.upload(dy, [M, N]),
        x: gpu.upload(x, [M, K]),
        weight: gpu.upload(w, [N, K]),
        dWeight,
        dBias,
      });
      const refW = Float64Array.from(dW0);
      const refB = Float64Array.from(dB0);
      const dims = { rows: M, inFeatures: K, outFeatures: N };
      const refX = linearBackwardReference(
        { dy, x, weight: w, dWeight: refW, dBias: bias ? refB : null },
        dims,
      );
      assertCloseScaled(await dx.read(), refX, 1e-5, `dx ${M}×${K}→${N}`);
      assertCloseScaled(await dWeight.read(), refW, 1e-5, `dW ${M}×${K}→${N}`);
      if (dBias) assertCloseScaled(await dBias.read(), refB, 1e-5, `db ${M}×${K}→${N}`);
    }
  });
});
