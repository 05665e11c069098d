/**
 * Every variant of every tuned op (but the GEMM, which has its own tests)
 * against its float64 reference, through the op's own validation: the
 * awkward sizes of `_tuned.ts` (1, 7, 63, 700 rows or values; C a multiple
 * of 4 or not; several blocks; pieces over a small binding limit). And the
 * variants that reduce are deterministic: the same call twice gives the
 * same bits.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Gpu, Tensor } from "../../src/gpu/runtime.ts";
import { testValues } from "../../src/gpu/tune.ts";
import { mismatch } from "../../src/ops/_tuned.ts";
import { accumulateRowSums, COLUMN_SUMS } from "../../src/ops/column_sums.ts";
import { crossEntropyForwardBackward } from "../../src/ops/cross_entropy_backward.ts";
import { LAYER_NORM, layerNorm } from "../../src/ops/layer_norm.ts";
import { LAYER_NORM_BACKWARD, layerNormBackward } from "../../src/ops/layer_norm_backward.ts";
import { residualBackward } from "../../src/ops/residual_backward.ts";
import { CROSS_ENTROPY_FORWARD_BACKWARD } from "../../src/ops/cross_entropy_backward.ts";
import { tuneTargets } from "../../src/ops/tuned_ops.ts";
import { withGpu } from "../_util.ts";
import { runnableVariants } from "./_variants.ts";

Deno.test("mismatch names the first element out of tolerance", () => {
  assert.equal(mismatch("x", [1, 2], [1, 2.1], { atol: 0.2, rtol: 0 }), null);
  assert.equal(
    mismatch("x", [1, 2], [1, 2.5], { atol: 0.2, rtol: 0 }),
    "wrong result for x: element 1 is 2, expected 2.5",
  );
  assert.match(mismatch("x", [NaN], [0], { atol: 1, rtol: 1 })!, /element 0 is NaN/);
  assert.match(mismatch("x", [1], [1, 2], { atol: 1, rtol: 1 })!, /1 values, expected 2/);
});

// One test per op: its validation runs every runnable variant at the check sizes.
const ops = new Map(tuneTargets().map((t) => [t.op, t]));
for (const op of ops.keys()) {
  Deno.test(`every ${op} variant passes its validation against the float64 reference`, async () => {
    await withGpu(async (gpu) => {
      const target = tuneTargets().find((t) => t.op === op)!;
      // measure() validates every variant before timing; a failure lands in `rejected`.
      const { choice } = await target.retune(gpu);
      const failed = Object.entries(choice.rejected).filter(([, why]) =>
        !why.startsWith("cannot run here")
      );
      assert.deepEqual(failed, [], `${op}: ${JSON.stringify(choice.rejected)}`);
      assert.ok(choice.variant);
    });
  });
}

/** Run `fn` twice on fresh outputs and check that it gives the same bits. */
async function sameBitsTwice(
  what: string,
  fn: () => Promise<Tensor[]>,
): Promise<void> {
  const read = async () => {
    const outs = await fn();
    const data = await Promise.all(outs.map((t) => t.read()));
    for (const t of outs) t.destroy();
    return data.map((d) => new Uint32Array(d.buffer));
  };
  const [a, b] = [await read(), await read()];
  a.forEach((x, i) => assert.deepEqual(x, b[i], `${what}: output ${i} differs between two runs`));
}

function up(gpu: Gpu, n: number, seed: number, shape: number[]): Tensor {
  return gpu.upload(testValues(n, seed), shape);
}

Deno.test("the reducing variants are deterministic: the same call, the same bits", async () => {
  await withGpu(async (gpu) => {
    const [rows, C] = [1300, 36]; // several blocks of every column-sum design
    const x = up(gpu, rows * C, 1, [rows, C]);
    const dy = up(gpu, rows * C, 2, [rows, C]);
    const w = up(gpu, C, 3, [C]);
    const shape = { rows, cols: C };
    for (const v of runnableVariants(gpu, COLUMN_SUMS, shape)) {
      await sameBitsTwice(`column_sums ${v}`, async () => {
        const dst = up(gpu, C, 4, [C]);
        await accumulateRowSums(gpu, x, dst, { rows, count: C }, [], { variant: v });
        return [dst];
      });
      await sameBitsTwice(`residual_backward ${v}`, async () => {
        const dGamma = up(gpu, C, 4, [C]);
        const df = await residualBackward(gpu, { dy, f: x, gamma: w, dGamma }, { variant: v });
        return [df, dGamma];
      });
    }
    for (const v of runnableVariants(gpu, LAYER_NORM, shape)) {
      await sameBitsTwice(`layer_norm ${v}`, async () => [
        await layerNorm(gpu, x, w, w, 1e-5, undefined, { variant: v }),
      ]);
    }
    for (const v of runnableVariants(gpu, LAYER_NORM_BACKWARD, shape)) {
      await sameBitsTwice(`layer_norm_backward ${v}`, async () => {
        const [dWeight, dBias] = [up(gpu, C, 5, [C]), up(gpu, C, 6, [C])];
        const dx = await layerNormBackward(gpu, { dy, x, weight: w, eps: 1e-5, dWeight, dBias }, {
          variant: v,
        });
        return [dx, dWeight, dBias];
      });
    }
    const targets = Array.from({ length: rows }, (_, r) => r % 7 === 0 ? -1 : (r * 5) % C);
    for (const v of runnableVariants(gpu, CROSS_ENTROPY_FORWARD_BACKWARD, shape)) {
      await sameBitsTwice(`cross_entropy_forward_backward ${v}`, async () => {
        const r = await crossEntropyForwardBackward(gpu, { logits: x, targets }, { variant: v });
        return [r.loss, r.dlogits];
      });
    }
  });
});
