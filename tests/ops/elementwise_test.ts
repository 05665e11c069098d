import assert from "node:assert/strict";
import { addRows, ELEMENTWISE, residual, scaleChannels } from "../../src/ops/elementwise.ts";
import { copyRows } from "../../src/ops/copy_rows.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";
import { runnableVariants } from "./_variants.ts";

Deno.test("residual x += γ⊙y and x += y, including over pieces of a small binding limit", async () => {
  await withGpu(async (gpu) => {
    const sizes: [number, number, number | undefined][] = [[1, 1, undefined], [7, 63, undefined], [
      700,
      5,
      4096,
    ]];
    for (const [rows, C, limit] of sizes) {
      const x = randomArray(rows * C, 1);
      const y = randomArray(rows * C, 2);
      const g = randomArray(C, 3);
      const tx = gpu.upload(x, [rows, C]);
      await residual(gpu, tx, gpu.upload(y, [rows, C]), gpu.upload(g, [C]), {
        maxBindingBytes: limit,
      });
      // A GPU may fuse the multiply-add (one rounding instead of two).
      const want = x.map((v, i) => v + g[i % C] * y[i]);
      assertClose(
        (await tx.read()) as Float32Array,
        want,
        { atol: 1e-7, rtol: 1e-7 },
        `γ ${rows}×${C}`,
      );
      const tz = gpu.upload(x, [rows, C]);
      await residual(gpu, tz, gpu.upload(y, [rows, C]), null, { maxBindingBytes: limit });
      assert.deepEqual(
        await tz.read(),
        x.map((v, i) => Math.fround(v + y[i])),
        `plain ${rows}×${C}`,
      );
    }
  });
});

Deno.test("addRows broadcasts [P, C] over blocks of P rows; scaleChannels scales per channel", async () => {
  await withGpu(async (gpu) => {
    const [B, P, C] = [3, 7, 5];
    const x = randomArray(B * P * C, 1);
    const pe = randomArray(P * C, 2);
    for (const limit of [undefined, 256]) {
      const t = gpu.upload(x, [B, P, C]);
      await addRows(gpu, t, gpu.upload(pe, [P, C]), { maxBindingBytes: limit });
      assert.deepEqual(await t.read(), x.map((v, i) => Math.fround(v + pe[i % (P * C)])));
    }
    const g = randomArray(C, 3);
    const t = gpu.upload(x, [B, P, C]);
    await scaleChannels(gpu, t, gpu.upload(g, [C]));
    assert.deepEqual(await t.read(), x.map((v, i) => Math.fround(v * g[i % C])));
    await assert.rejects(
      addRows(gpu, t, gpu.upload(new Float32Array(4 * C), [4, C])),
      /P dividing x's 21 rows/,
    );
  });
});

Deno.test("copyRows: prepend a broadcast row, concatenate, pick a row; bounds are checked", async () => {
  await withGpu(async (gpu) => {
    const [B, N, C] = [2, 3, 4];
    const cls = randomArray(C, 1);
    const x = randomArray(B * N * C, 2);
    const t = gpu.empty([B, N + 1, C]);
    await copyRows(gpu, gpu.upload(cls, [C]), t, {
      batches: B,
      rows: 1,
      cols: C,
      srcBatchRows: 0,
      dstBatchRows: N + 1,
    });
    await copyRows(gpu, gpu.upload(x, [B, N, C]), t, {
      batches: B,
      rows: N,
      cols: C,
      srcBatchRows: N,
      dstBatchRows: N + 1,
      dstRow0: 1,
    });
    const want = new Float32Array(B * (N + 1) * C);
    for (let b = 0; b < B; b++) {
      want.set(cls, b * (N + 1) * C);
      want.set(x.subarray(b * N * C, (b + 1) * N * C), (b * (N + 1) + 1) * C);
    }
    assert.deepEqual(await t.read(), want);
    const last = gpu.empty([B, C]);
    await copyRows(gpu, t, last, {
      batches: B,
      rows: 1,
      cols: C,
      srcBatchRows: N + 1,
      srcRow0: N,
      dstBatchRows: 1,
    });
    const got = (await last.read()) as Float32Array;
    for (let b = 0; b < B; b++) {
      assert.deepEqual(
        got.subarray(b * C, (b + 1) * C),
        x.subarray((b * N + N - 1) * C, (b * N + N) * C),
      );
    }
    await assert.rejects(
      copyRows(gpu, t, last, {
        batches: B,
        rows: 1,
        cols: C,
        srcBatchRows: N + 1,
        srcRow0: N + 1,
        dstBatchRows: 1,
      }),
      /reads up to element 36 of src \[2,4,4\]/,
    );
  });
});

Deno.test("every elementwise variant: addRows over pieces, scaleChannels, plain residual", async () => {
  await withGpu(async (gpu) => {
    for (const [B, P, C] of [[3, 7, 5], [5, 3, 8], [2, 700, 12]]) {
      const x = randomArray(B * P * C, 1);
      const y = randomArray(B * P * C, 2);
      const pe = randomArray(P * C, 3);
      const g = randomArray(C, 4);
      for (
        const variant of runnableVariants(gpu, ELEMENTWISE, { n: x.length, vec4: C % 4 === 0 })
      ) {
        const what = `${variant} ${B}×${P}×${C}`;
        const t = gpu.upload(x, [B, P, C]);
        await addRows(gpu, t, gpu.upload(pe, [P, C]), { maxBindingBytes: 1024, variant });
        const added = x.map((v, i) => Math.fround(v + pe[i % (P * C)]));
        assert.deepEqual(await t.read(), added, `addRows ${what}`);
        await scaleChannels(gpu, t, gpu.upload(g, [C]), { variant });
        const scaled = added.map((v, i) => Math.fround(v * g[i % C]));
        assert.deepEqual(await t.read(), scaled, `scaleChannels ${what}`);
        await residual(gpu, t, gpu.upload(y, [B, P, C]), null, { variant });
        assert.deepEqual(await t.read(), scaled.map((v, i) => Math.fround(v + y[i])), what);
      }
    }
    await assert.rejects(
      residual(gpu, gpu.empty([2, 5]), gpu.empty([2, 5]), null, { variant: "vec4x4" }),
      /residual: variant vec4x4 needs sizes and rows of a multiple of 4 values/,
    );
  });
});
