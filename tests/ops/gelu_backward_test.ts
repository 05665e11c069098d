import assert from "node:assert/strict";
import { geluBackward } from "../../src/ops/gelu_backward.ts";
import { geluBackwardReference, geluReference } from "../../src/ops/gelu_reference.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";

Deno.test("geluBackwardReference matches finite differences of exact GELU", () => {
  const x = Float64Array.from([-7, -3.1, -1, -0.2, 0, 1e-3, 0.7, 1.5, 2.9, 6]);
  const dy = Float64Array.from(randomArray(x.length, 1));
  const f = () => geluReference(x).reduce((s, v, i) => s + v * dy[i], 0);
  assertClose(geluBackwardReference(dy, x), numericGradient(x, f, 1e-6), {
    atol: 1e-9,
    rtol: 1e-7,
  });
});

async function checkGpu(n: number, seed: number, maxBindingBytes?: number): Promise<void> {
  await withGpu(async (gpu) => {
    const x = randomArray(n, seed, -8, 8);
    if (n > 2) x[1] = 0;
    const dy = randomArray(n, seed + 1);
    const dx = await geluBackward(
      gpu,
      { dy: gpu.upload(dy, [n]), x: gpu.upload(x, [n]) },
      { maxBindingBytes },
    );
    // the erfc approximation is good to ~1.2e-7 relative; φ and the product add a few ulp
    assertClose(await dx.read(), geluBackwardReference(dy, x), { atol: 1e-6, rtol: 1e-5 });
  });
}

for (const n of [1, 7, 63, 700]) {
  Deno.test(`geluBackward matches the reference (${n} values)`, async () => {
    await checkGpu(n, n);
  });
}

Deno.test("geluBackward: pieces over a small binding limit give the same result", async () => {
  await checkGpu(5000, 3, 4096);
});

Deno.test("geluBackward: shape mismatch is a TypeError", async () => {
  await withGpu(async (gpu) => {
    await assert.rejects(
      geluBackward(gpu, { dy: gpu.empty([3]), x: gpu.empty([4]) }),
      TypeError,
    );
  });
});
