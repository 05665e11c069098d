import assert from "node:assert/strict";
import { gelu } from "../../src/ops/gelu.ts";
import { erf, erfc, geluReference } from "../../src/ops/gelu_reference.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

// Values from mpmath at 30 digits.
const ERFC = [
  [1e-5, 0.99998871620832942],
  [0.5, 0.47950012218695346],
  [1, 0.15729920705028513],
  [2.9, 4.1097878099458858e-5],
  [3, 2.2090496998585441e-5],
  [3.1, 1.1648657367199589e-5],
  [5, 1.5374597944280349e-12],
  [10, 2.0884875837625448e-45],
  [26, 5.6631924088561428e-296],
];

// GELU error budget: the kernel's erfc is 1.2e-7 relative, plus f32 rounding.
const TOL = { atol: 1e-7, rtol: 4e-7 };

Deno.test("erfc matches mpmath on both sides of the series/fraction switch", () => {
  for (const [z, want] of ERFC) {
    assert.ok(Math.abs(erfc(z) / want - 1) < 1e-14, `erfc(${z}) = ${erfc(z)}`);
    assert.ok(Math.abs(erfc(-z) - (2 - want)) < 1e-15, `erfc(${-z})`);
  }
  assert.ok(Number.isNaN(erfc(NaN)));
});

Deno.test("erf, erfc and GELU match Python's math.erf to double precision", () => {
  // [x, math.erf(x), math.erfc(x)] from CPython 3 (its own erf implementation).
  const table: [number, number, number][] = [
    [-3.5, -0.9999992569016276, 1.9999992569016276],
    [-1, -0.8427007929497149, 1.842700792949715],
    [-0.001, -0.0011283787909692365, 1.0011283787909693],
    [0, 0, 1],
    [0.3, 0.3286267594591274, 0.6713732405408726],
    [1.4, 0.9522851197626487, 0.04771488023735121],
    [1.5, 0.9661051464753108, 0.033894853524689274],
    [1.6, 0.976348383344644, 0.023651616655355985],
    [2.5, 0.999593047982555, 0.0004069520174449589],
    [3, 0.9999779095030014, 2.2090496998585438e-05],
    [5, 0.9999999999984626, 1.5374597944280351e-12],
    [6, 1, 2.1519736712498916e-17],
    [10, 1, 2.088487583762545e-45],
  ];
  for (const [x, e, c] of table) {
    assert.ok(Math.abs(erf(x) - e) <= 1e-15, `erf(${x}) = ${erf(x)}, expected ${e}`);
    assert.ok(Math.abs(erfc(x) - c) <= 1e-14 * c, `erfc(${x}) = ${erfc(x)}, expected ${c}`);
  }
  assert.ok(Number.isNaN(erf(NaN)) && Number.isNaN(erfc(NaN)));
  // 0.5·x·erfc(−x/√2) from CPython and x·Φ(x) from mpmath; the left tail keeps
  // its relative accuracy.
  const gelu: [number, number][] = [
    [-8, -4.9767684594174555e-15],
    [-3, -0.004049694094890287],
    [-1, -0.15865525393145705],
    [-0.1, -0.0460172162722971],
    [0, 0],
    [1, 0.8413447460685429],
    [3, 2.99595030590511],
    [10, 10],
  ];
  const y = geluReference(gelu.map(([x]) => x));
  gelu.forEach(([x, want], i) => {
    assert.ok(Math.abs(y[i] - want) <= 1e-14 * Math.abs(want), `gelu(${x}) = ${y[i]}`);
  });
});

Deno.test("gelu matches the reference at awkward sizes and shapes", async () => {
  await withGpu(async (gpu) => {
    for (const shape of [[1], [7], [63], [700], [3, 5, 7], [2, 1, 700]]) {
      const n = shape.reduce((a, b) => a * b, 1);
      const data = randomArray(n, n, -8, 8);
      const y = await gelu(gpu, gpu.upload(data, shape, "x"));
      assert.deepEqual(y.shape, shape);
      assertClose(await y.read(), geluReference(data), TOL, `gelu [${shape}]`);
    }
  });
});

Deno.test("gelu is accurate in both tails and at zero", async () => {
  await withGpu(async (gpu) => {
    const data = new Float32Array([
      0,
      -0,
      1e-30,
      -1e-30,
      1e-7,
      -1e-7,
      0.5,
      -0.5,
      2,
      -2,
      4,
      -4,
      6,
      -6,
      8,
      -8,
      12,
      -12,
      20,
      -20,
      1e30,
      -1e30,
    ]);
    const y = await (await gelu(gpu, gpu.upload(data, [data.length]))).read();
    const ref = geluReference(data);
    // Relative accuracy everywhere, including the tiny negative tail (gelu(-8) ≈ -5e-15).
    // There it is bounded by f32's exp(−x²/2): its argument carries an error of
    // ~1e-7·x²/2, which becomes relative error of the result (4e-6 at x = −8).
    for (let i = 0; i < data.length; i++) {
      const rtol = 2e-7 * (1 + data[i] * data[i] / 2);
      const ok = Math.abs(y[i] - ref[i]) <= 1e-38 + rtol * Math.abs(ref[i]);
      assert.ok(ok, `gelu(${data[i]}) = ${y[i]}, expected ${ref[i]}`);
    }
  });
});

Deno.test("gelu writes into out and rejects bad arguments", async () => {
  await withGpu(async (gpu) => {
    const data = randomArray(100, 1, -3, 3);
    const x = gpu.upload(data, [10, 10], "x");
    const out = gpu.empty([10, 10], "f32", "out");
    assert.equal(await gelu(gpu, x, out), out);
    assertClose(await out.read(), geluReference(data), TOL);
    await assert.rejects(gelu(gpu, x, x), TypeError);
    await assert.rejects(gelu(gpu, x, gpu.empty([100])), /shape \[10,10\]/);
    await assert.rejects(gelu(gpu, gpu.upload(new Int32Array(4), [4])), /must be f32/);
    assert.equal((await gelu(gpu, gpu.empty([0, 3]))).numel, 0);
  });
});

Deno.test("gelu splits tensors over the binding limit into pieces", async () => {
  await withGpu(async (gpu) => {
    const n = 10_007;
    const data = randomArray(n, 7, -5, 5);
    const x = gpu.upload(data, [n], "x");
    // 1000-byte bindings: 41 pieces, most starting off the offset alignment.
    const y = await gelu(gpu, x, undefined, { maxBindingBytes: 1000 });
    assertClose(await y.read(), geluReference(data), TOL, "chunked gelu");
    await assert.rejects(gelu(gpu, x, undefined, { maxBindingBytes: 0 }), RangeError);
  });
});

Deno.test("gelu on 34M values (136 MB, over a 128 MiB binding, > 65535 workgroups)", async () => {
  await withGpu(async (gpu) => {
    const n = 2 ** 25 + 500_000; // 136 MB
    // Over software WebGPU's 128 MiB binding limit (devices with larger bindings run it whole).
    // A cheap pattern of 20011 distinct values in [-10, 10]: check every element.
    const period = 20011;
    const values = new Float32Array(period).map((_, j) => (j - 10005) / 1000.5);
    const ref = geluReference(values);
    const data = new Float32Array(n);
    for (let i = 0, j = 0; i < n; i++) {
      data[i] = values[j];
      j = j + 7919 >= period ? j + 7919 - period : j + 7919;
    }
    const x = gpu.upload(data, [n], "x");
    const y = await (await gelu(gpu, x)).read();
    let bad = -1;
    for (let i = 0, j = 0; i < n; i++) {
      const want = ref[j];
      if (!(Math.abs(y[i] - want) <= TOL.atol + TOL.rtol * Math.abs(want))) {
        bad = i;
        break;
      }
      j = j + 7919 >= period ? j + 7919 - period : j + 7919;
    }
    assert.equal(bad, -1, `first mismatch at ${bad}: got ${y[bad]}, x ${data[bad]}`);
  });
});
