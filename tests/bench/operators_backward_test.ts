import assert from "node:assert/strict";
import { OPERATORS } from "../../src/bench/operators.ts";
import {
  checkStepModule,
  createStepModule,
  minimumStepBytes,
  stepReference,
} from "../../src/bench/operators_backward.ts";
import { assertCloseScaled, withGpu } from "../_util.ts";

Deno.test("bench step: dx and every parameter gradient match the float64 references", async () => {
  // Awkward sizes: 2 batches, 17 tokens, 3 heads of 16.
  const shape = { batch: 2, dim: 48, heads: 3 };
  await withGpu(async (gpu) => {
    for (const op of OPERATORS) {
      const { error, worst } = await gpu.scoped(() => checkStepModule(gpu, op, shape, 17));
      assert.ok(error <= 1e-4, `${op}: error ${error} in ${worst}`);
    }
  });
});

Deno.test("bench step: gradients accumulate over steps, dx is assigned, peak ≥ minimum", async () => {
  const shape = { batch: 1, dim: 16, heads: 2 };
  const n = 7;
  await withGpu(async (gpu) => {
    for (const op of OPERATORS) {
      const ref = stepReference(op, shape, n);
      const live0 = gpu.memory().liveBytes;
      const m = createStepModule(gpu, op, shape, n);
      try {
        const paramBytes = gpu.memory().liveBytes - live0 - m.inputBytes;
        assert.deepEqual(new Set(["dx", ...m.grads.keys()]), new Set(ref.keys()), op);
        gpu.resetPeak();
        let dx = null;
        for (let i = 0; i < 2; i++) {
          dx?.destroy();
          dx = await gpu.scoped(() => m.step());
        }
        const peak = gpu.memory().peakBytes - live0 - paramBytes;
        assert.ok(peak >= m.minBytes, `${op}: peak ${peak} below the minimum ${m.minBytes}`);
        assertCloseScaled(await dx!.read(), ref.get("dx")!, 1e-4, `${op} dx`);
        dx!.destroy();
        for (const [name, g] of m.grads) {
          const twice = ref.get(name)!.map((v) => 2 * v);
          assertCloseScaled(await g.read(), twice, 1e-4, `${op} ${name} after two steps`);
        }
      } finally {
        m.destroy();
      }
    }
  });
});

Deno.test("minimumStepBytes: linear for TSSA and flash, N×N probabilities for softmax", () => {
  const shape = { batch: 2, dim: 8, heads: 2 };
  const t = (n: number) => 2 * n * 8 * 4; // one [B, n, D] float32 tensor
  // TSSA: x, dy, w, ∂y, ∂w at the operator backward (= x, dy, w, y, out).
  assert.equal(minimumStepBytes("tssa", shape, 10), 5 * t(10));
  assert.equal(minimumStepBytes("causal-tssa", shape, 10), 5 * t(10));
  // Softmax: x, dy, qkv (3t), O, ∂O, ∂qkv (3t) at the operator backward.
  assert.equal(minimumStepBytes("flash-softmax", shape, 10), 10 * t(10));
  assert.equal(minimumStepBytes("causal-flash-softmax", shape, 10), 10 * t(10));
  const probs = 2 * 2 * 10 * 10 * 4;
  assert.equal(minimumStepBytes("softmax", shape, 10), 10 * t(10) + probs);
  assert.equal(minimumStepBytes("causal-softmax", shape, 10), 10 * t(10) + probs);
  const growth = (op: Parameters<typeof minimumStepBytes>[0]) =>
    minimumStepBytes(op, shape, 4096) / minimumStepBytes(op, shape, 1024);
  assert.equal(growth("tssa"), 4);
  assert.equal(growth("flash-softmax"), 4);
  assert.ok(growth("softmax") > 15);
});
