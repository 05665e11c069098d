import assert from "node:assert/strict";
import { checkTargets, crossEntropy, meanLoss } from "../../src/ops/cross_entropy.ts";
import {
  crossEntropyReference,
  crossEntropyRowsReference,
} from "../../src/ops/cross_entropy_reference.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

Deno.test("crossEntropy per row matches float64, ignores −1, over pieces and > 65535 rows", async () => {
  await withGpu(async (gpu) => {
    const sizes: [number, number, number | undefined][] = [
      [1, 1, undefined],
      [7, 65, undefined],
      [300, 7, 1024],
      [5, 3000, undefined],
      [70_000, 3, undefined], // over 65535 workgroups: the grid folds into y
    ];
    for (const [R, V, limit] of sizes) {
      const logits = randomArray(R * V, 1, -8, 8);
      const targets = Array.from({ length: R }, (_, i) => (i % 5 === 2 ? -1 : (i * 3) % V));
      const losses = await crossEntropy(
        gpu,
        gpu.upload(logits, [R, V]),
        gpu.upload(checkTargets(targets, V), [R]),
        { maxBindingBytes: limit },
      );
      const got = (await losses.read()) as Float32Array;
      const want = crossEntropyRowsReference(logits, targets, V);
      assertClose(got, want, { atol: 2e-6, rtol: 2e-6 }, `${R}×${V}`);
      const mean = meanLoss(got, targets);
      assertClose([mean], [meanLoss(want, targets)], { atol: 1e-6, rtol: 1e-6 });
    }
  });
});

Deno.test("targets outside the classes are errors; all ignored gives NaN", () => {
  assert.throws(
    () => checkTargets([0, 3], 3),
    /Target 3 at position 1 is outside \[0, 3\) and not -1/,
  );
  assert.throws(() => checkTargets([-2], 3), /Target -2/);
  assert.ok(Number.isNaN(meanLoss([0, 0], [-1, -1])));
});

Deno.test("crossEntropyReference: ignored targets, NaN when all are, bad targets and sizes", () => {
  // Targets of -1 are ignored, as F.cross_entropy(ignore_index=-1) does.
  const logits = [0, 0, 5, 1, 1, 1];
  assert.ok(Math.abs(crossEntropyReference(logits, [-1, 2], 2, 3) - Math.log(3)) < 1e-15);
  assert.ok(Math.abs(crossEntropyReference(logits, [0n, -1n], 2, 3) - 5.013385901721449) < 1e-14);
  assert.ok(Number.isNaN(crossEntropyReference(logits, [-1, -1], 2, 3)));
  assert.throws(() => crossEntropyReference(logits, [0, 3], 2, 3), RangeError);
  assert.throws(() => crossEntropyReference(logits, [0, 0.5], 2, 3), RangeError);
  assert.throws(() => crossEntropyReference(logits, [0], 2, 3), TypeError);
  assert.throws(() => crossEntropyRowsReference(logits, [0], 3), TypeError);
});
