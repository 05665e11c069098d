import assert from "node:assert/strict";
import { crossEntropyForwardBackward } from "../../src/ops/cross_entropy_backward.ts";
import { checkTargets, meanLoss } from "../../src/ops/cross_entropy.ts";
import {
  crossEntropyBackwardReference,
  crossEntropyRowsReference,
} from "../../src/ops/cross_entropy_reference.ts";
import { assertClose, assertCloseScaled, randomArray, seededRandom, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";

function randomTargets(rows: number, V: number, seed: number, ignoreEvery = 0): number[] {
  const r = seededRandom(seed);
  return Array.from(
    { length: rows },
    (_, i) => (ignoreEvery > 0 && i % ignoreEvery === 1 ? -1 : Math.floor(r(0, V))),
  );
}

Deno.test("crossEntropyBackwardReference matches finite differences (with ignored rows)", () => {
  const [R, V] = [5, 4];
  const z = Float64Array.from(randomArray(R * V, 1, -3, 3));
  const t = [2, -1, 0, 3, 3];
  const { dlogits } = crossEntropyBackwardReference(z, t, V, 0.5);
  const f = () => 0.5 * crossEntropyBackwardReference(z, t, V).loss;
  assertClose(dlogits, numericGradient(z, f), { atol: 1e-9, rtol: 1e-6 });
  // ignored rows get no gradient
  for (let v = 0; v < V; v++) assert.equal(dlogits[V + v], 0);
});

Deno.test("crossEntropyBackwardReference's loss is the forward's mean loss", () => {
  const [R, V] = [9, 7];
  const z = randomArray(R * V, 2, -4, 4);
  const t = randomTargets(R, V, 3, 4);
  const ref = meanLoss(crossEntropyRowsReference(z, t, V), t);
  assert.ok(Math.abs(crossEntropyBackwardReference(z, t, V).loss - ref) < 1e-12);
});

async function checkGpu(
  R: number,
  V: number,
  seed: number,
  options: { ignoreEvery?: number; scale?: number; spread?: number; maxBindingBytes?: number } = {},
): Promise<void> {
  const spread = options.spread ?? 4;
  const z = randomArray(R * V, seed, -spread, spread);
  const t = randomTargets(R, V, seed + 1, options.ignoreEvery);
  const ref = crossEntropyBackwardReference(z, t, V, options.scale);
  await withGpu(async (gpu) => {
    const { loss, dlogits } = await crossEntropyForwardBackward(
      gpu,
      { logits: gpu.upload(z, [1, R, V]), targets: t, scale: options.scale },
      { maxBindingBytes: options.maxBindingBytes },
    );
    assert.deepEqual(loss.shape, [1]);
    assert.deepEqual(dlogits.shape, [1, R, V]);
    const [l] = await loss.read();
    assert.ok(
      Math.abs(l - ref.loss) <= 1e-5 * Math.max(1, Math.abs(ref.loss)),
      `loss ${l} vs ${ref.loss}`,
    );
    // dlogits are O(1/R): compare relative to their own scale
    let maxRef = 0;
    for (const v of ref.dlogits) maxRef = Math.max(maxRef, Math.abs(v));
    assertClose(await dlogits.read(), ref.dlogits, { atol: 1e-5 * maxRef, rtol: 0 }, "dlogits");
  });
}

for (const [R, V] of [[1, 1], [1, 5], [7, 65], [63, 300], [700, 97], [7, 3000]] as const) {
  Deno.test(`crossEntropyForwardBackward matches the reference (${R} rows × ${V})`, async () => {
    await checkGpu(R, V, R * 13 + V, { ignoreEvery: R > 1 ? 5 : 0 });
  });
}

Deno.test("crossEntropyForwardBackward: upstream scale, extreme logits stay finite", async () => {
  await checkGpu(33, 50, 4, { scale: 0.25, spread: 80 });
});

Deno.test("crossEntropyForwardBackward: logits over a small binding limit, in pieces", async () => {
  await checkGpu(100, 37, 5, { ignoreEvery: 3, maxBindingBytes: 2048 });
});

Deno.test("crossEntropyForwardBackward: over 65535 rows (folded grid)", async () => {
  await checkGpu(70_000, 3, 6, { ignoreEvery: 7 });
});

Deno.test("crossEntropyForwardBackward: every row ignored gives loss 0 and zero gradient", async () => {
  await withGpu(async (gpu) => {
    const { loss, dlogits } = await crossEntropyForwardBackward(gpu, {
      logits: gpu.upload(randomArray(12, 1), [3, 4]),
      targets: [-1, -1, -1],
    });
    assert.deepEqual([...await loss.read()], [0]);
    assert.deepEqual([...await dlogits.read()], new Array(12).fill(0));
  });
});

Deno.test("crossEntropyForwardBackward: targets as an i32 tensor; bad targets", async () => {
  const [R, V] = [6, 9];
  const z = randomArray(R * V, 7);
  const t = randomTargets(R, V, 8, 4);
  const ref = crossEntropyBackwardReference(z, t, V);
  await withGpu(async (gpu) => {
    const logits = gpu.upload(z, [R, V]);
    const { loss, dlogits } = await crossEntropyForwardBackward(gpu, {
      logits,
      targets: gpu.upload(checkTargets(t, V), [R]),
    });
    assert.ok(Math.abs((await loss.read())[0] - ref.loss) < 1e-5);
    assertCloseScaled(await dlogits.read(), ref.dlogits, 1e-6);
    await assert.rejects(
      crossEntropyForwardBackward(gpu, { logits, targets: [0, 9, 0, 0, 0, 0] }),
      RangeError,
    );
    await assert.rejects(crossEntropyForwardBackward(gpu, { logits, targets: [0, 1] }), TypeError);
    await assert.rejects(
      crossEntropyForwardBackward(gpu, { logits, targets: gpu.upload(new Float32Array(R), [R]) }),
      TypeError,
    );
  });
});
