import assert from "node:assert/strict";
import { softmax } from "../../src/ops/softmax.ts";
import { softmaxReference, softmaxRowsInPlace } from "../../src/ops/softmax_reference.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

// exp in f32 is accurate to ~1e-7·|argument| relative; arguments here reach ~20.
const TOL = { atol: 1e-7, rtol: 4e-6 };

Deno.test("softmaxReference sums to one and is shift-invariant", () => {
  const x = new Float32Array([1, 2, 3, 1001, 1002, 1003]);
  const p = softmaxReference(x, 2, 3);
  assertClose(p.subarray(0, 3), [0.09003057317038046, 0.24472847105479767, 0.6652409557748219], {
    atol: 0,
    rtol: 1e-15,
  });
  assertClose(p.subarray(3), p.subarray(0, 3), { atol: 0, rtol: 0 });
  assert.throws(() => softmaxReference(x, 2, 2), TypeError);
  // −Infinity masks a position; the input array is left alone, unlike in place.
  const masked = new Float64Array([0, -Infinity, 0]);
  assert.deepEqual([...softmaxReference(masked, 1, 3)], [0.5, 0, 0.5]);
  assert.equal(masked[0], 0);
  assert.equal(softmaxRowsInPlace(masked, 1, 3), masked);
  assert.deepEqual([...masked], [0.5, 0, 0.5]);
});

Deno.test("softmax matches the reference at awkward sizes", async () => {
  await withGpu(async (gpu) => {
    const cases = [[1], [7], [63], [700], [1, 1], [5, 1], [3, 7], [9, 63], [4, 700], [2, 3, 7], [
      2,
      2500,
    ]];
    for (const shape of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      const C = shape[shape.length - 1];
      const data = randomArray(n, n + C, -10, 10);
      const y = await softmax(gpu, gpu.upload(data, shape, "x"));
      assert.deepEqual(y.shape, shape);
      assertClose(await y.read(), softmaxReference(data, n / C, C), TOL, `softmax [${shape}]`);
    }
  });
});

Deno.test("softmax subtracts the row maximum (large logits do not overflow)", async () => {
  await withGpu(async (gpu) => {
    const data = randomArray(3 * 50, 3, -20, 20).map((v, i) => v + (i < 50 ? 1e4 : -1e4));
    const y = await (await softmax(gpu, gpu.upload(data, [3, 50]))).read();
    assert.ok(y.every(Number.isFinite));
    // Offsets of ±1e4 cost f32 input precision (ulp 1e-3) but not the result's consistency.
    assertClose(y, softmaxReference(data, 3, 50), TOL);
  });
});

Deno.test("softmax writes into out and rejects bad arguments", async () => {
  await withGpu(async (gpu) => {
    const data = randomArray(12, 5);
    const x = gpu.upload(data, [3, 4], "x");
    const out = gpu.empty([3, 4]);
    assert.equal(await softmax(gpu, x, out), out);
    assertClose(await out.read(), softmaxReference(data, 3, 4), TOL);
    await assert.rejects(softmax(gpu, x, x), /in-place/);
    await assert.rejects(softmax(gpu, x, gpu.empty([4, 3])), TypeError);
    await assert.rejects(softmax(gpu, gpu.upload(new Uint32Array(2), [2])), TypeError);
    await assert.rejects(softmax(gpu, gpu.upload(new Float32Array(1), [])), /one dimension/);
    assert.equal((await softmax(gpu, gpu.empty([3, 0]))).numel, 0);
  });
});

Deno.test("softmax splits tensors over the binding limit into pieces", async () => {
  await withGpu(async (gpu) => {
    for (const [rows, C] of [[300, 7], [41, 63], [3, 700]]) {
      const data = randomArray(rows * C, C, -5, 5);
      const x = gpu.upload(data, [rows, C], "x");
      const y = await softmax(gpu, x, undefined, { maxBindingBytes: 3000 });
      assertClose(await y.read(), softmaxReference(data, rows, C), TOL, `chunked ${rows}×${C}`);
    }
    // A single 4000-byte row cannot be split.
    const wide = gpu.empty([2, 1000]);
    await assert.rejects(softmax(gpu, wide, undefined, { maxBindingBytes: 3000 }), RangeError);
  });
});

Deno.test("softmax over more than 65535 rows (folded workgroup grid)", async () => {
  await withGpu(async (gpu) => {
    const rows = 65_600;
    const C = 3;
    const data = randomArray(rows * C, 11, -4, 4);
    const y = await softmax(gpu, gpu.upload(data, [rows, C], "x"));
    assertClose(await y.read(), softmaxReference(data, rows, C), TOL, "many rows");
  });
});
