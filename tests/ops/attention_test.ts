import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { softmaxAttention } from "../../src/ops/attention.ts";
import { attentionReference } from "../../src/ops/attention_reference.ts";
import type { AttentionOptions } from "../../src/ops/attention.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

const TOL = { atol: 2e-5, rtol: 1e-4 };

/** Run standard attention on `qkv [B, N, 3·H·d]` and read the result. */
async function standard(
  gpu: Gpu,
  x: Float32Array<ArrayBuffer>,
  [B, N, H, d]: readonly number[],
  options: AttentionOptions = {},
): Promise<Float32Array> {
  const qkv = gpu.upload(x, [B, N, 3 * H * d], "qkv");
  const y = await softmaxAttention(gpu, qkv, H, options);
  assert.deepEqual(y.shape, [B, N, H * d]);
  const out = (await y.read()) as Float32Array;
  qkv.destroy();
  y.destroy();
  return out;
}

Deno.test("attentionReference: causal masking and softmax by hand", () => {
  // B=1, N=2, H=1, d=1: q = [1, 2], k = [0, 1], v = [3, 5]
  const x = new Float64Array([1, 0, 3, 2, 1, 5]);
  const full = attentionReference(x, 1, 2, 1, 1);
  const causal = attentionReference(x, 1, 2, 1, 1, { causal: true });
  const w0 = 1 / (1 + Math.E); // query 0: scores 0 and 1
  const w1 = 1 / (1 + Math.exp(2)); // query 1: scores 0 and 2
  assertClose(full, [w0 * 3 + (1 - w0) * 5, w1 * 3 + (1 - w1) * 5], { atol: 1e-15, rtol: 0 });
  assertClose(causal, [3, w1 * 3 + (1 - w1) * 5], { atol: 1e-15, rtol: 0 });
  assert.throws(() => attentionReference(x, 1, 3, 1, 1), TypeError);
  assert.throws(() => attentionReference(x, 1, 2, 0, 1), TypeError);
});

Deno.test("softmaxAttention matches the float64 reference at awkward sizes", async () => {
  await withGpu(async (gpu) => {
    const cases = [[1, 1, 1, 5], [3, 7, 6, 16], [2, 63, 1, 64], [1, 700, 6, 5], [1, 45, 2, 128]];
    for (const [seed, [B, N, H, d]] of cases.entries()) {
      const x = randomArray(B * N * 3 * H * d, seed + 1);
      for (const causal of [false, true]) {
        const got = await standard(gpu, x, [B, N, H, d], { causal });
        const ref = attentionReference(x, B, N, H, d, { causal });
        assertClose(got, ref, TOL, `B=${B} N=${N} H=${H} d=${d} causal=${causal}`);
      }
    }
  });
});

Deno.test("softmaxAttention stays finite and accurate for large scores", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [1, 90, 2, 16]; // scores up to ~±200
    const x = randomArray(B * N * 3 * H * d, 7, -7, 7);
    for (const causal of [false, true]) {
      const got = await standard(gpu, x, [B, N, H, d], { causal });
      const ref = attentionReference(x, B, N, H, d, { causal });
      assertClose(got, ref, { atol: 1e-4, rtol: 1e-4 }, `causal=${causal}`);
    }
  });
});

Deno.test("softmaxAttention binds batches and heads in pieces under a small limit", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [5, 40, 3, 8];
    const x = randomArray(B * N * 3 * H * d, 21);
    // Two heads' scores (or two batches of qkv) per binding.
    const maxBindingBytes = 2 * N * 3 * H * d * 4 + 64;
    for (const causal of [false, true]) {
      const got = await standard(gpu, x, [B, N, H, d], { causal, maxBindingBytes });
      assertClose(got, attentionReference(x, B, N, H, d, { causal }), TOL, `causal=${causal}`);
    }
  });
});

Deno.test("softmaxAttention covers grids of more than 65535 workgroups", async () => {
  await withGpu(async (gpu) => {
    // 66000 score tiles, 132000 softmax rows and 66000 output tiles, one workgroup each.
    const [B, N, H, d] = [33_000, 2, 2, 4];
    const x = randomArray(B * N * 3 * H * d, 22);
    const got = await standard(gpu, x, [B, N, H, d], { causal: true });
    assertClose(got, attentionReference(x, B, N, H, d, { causal: true }), TOL);
  });
});

Deno.test("softmaxAttention materialises the [B, H, N, N] scores", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [2, 256, 3, 4];
    const qkv = gpu.upload(randomArray(B * N * 3 * H * d, 3), [B, N, 3 * H * d]);
    gpu.resetPeak();
    const before = gpu.memory().liveBytes;
    const y = await softmaxAttention(gpu, qkv, H);
    await y.read();
    const extra = gpu.memory().peakBytes - before;
    assert.ok(extra >= B * H * N * N * 4, `only ${extra} bytes allocated`);
    assert.equal(gpu.memory().liveBytes - before, y.buffer.size, "scores are freed");
  });
});

Deno.test("softmaxAttention says how much memory the scores need", async () => {
  await withGpu(async (gpu) => {
    // 30000² f32 scores (3.35 GiB) exceed any buffer the software device allows.
    const N = 30_000;
    const qkv = gpu.empty([1, N, 3], "f32");
    if (N * N * 4 > gpu.limits.maxBufferSize) {
      await assert.rejects(
        softmaxAttention(gpu, qkv, 1),
        (err: Error) =>
          err instanceof RangeError && /\[1, 1, 30000, 30000\] need 3\.35 GiB/.test(err.message) &&
          /device allows/.test(err.message),
      );
    }
    // One head's scores over the binding limit.
    const small = gpu.empty([2, 100, 6], "f32");
    await assert.rejects(
      softmaxAttention(gpu, small, 2, { maxBindingBytes: 20_000 }),
      (err: Error) =>
        err instanceof RangeError && /scores \[100, 100\] need a 39\.1 KiB/.test(err.message) &&
        /allows 19\.5 KiB/.test(err.message),
    );
  });
});

Deno.test("softmaxAttention rejects malformed inputs", async () => {
  await withGpu(async (gpu) => {
    const qkv = gpu.upload(new Float32Array(2 * 3 * 12), [2, 3, 12]);
    await assert.rejects(softmaxAttention(gpu, qkv, 3), TypeError); // 12 is not a multiple of 9
    await assert.rejects(softmaxAttention(gpu, qkv, 1.5), TypeError);
    const flat = gpu.upload(new Float32Array(12), [12]);
    await assert.rejects(softmaxAttention(gpu, flat, 1), TypeError);
    const wide = gpu.empty([1, 2, 3 * 2 * 130], "f32");
    await assert.rejects(softmaxAttention(gpu, wide, 2), RangeError); // d = 130
  });
});
