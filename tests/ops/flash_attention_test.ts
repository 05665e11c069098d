import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { softmaxAttention } from "../../src/ops/attention.ts";
import { attentionReference } from "../../src/ops/attention_reference.ts";
import { flashAttention, flashTiles } from "../../src/ops/flash_attention.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

const TOL = { atol: 2e-5, rtol: 1e-4 };

/** Run flash attention on `qkv [B, N, 3·H·d]` and read the result. */
async function flash(
  gpu: Gpu,
  x: Float32Array<ArrayBuffer>,
  [B, N, H, d]: readonly number[],
  options: Parameters<typeof flashAttention>[3] = {},
): Promise<Float32Array> {
  const qkv = gpu.upload(x, [B, N, 3 * H * d], "qkv");
  const y = await flashAttention(gpu, qkv, H, options);
  assert.deepEqual(y.shape, [B, N, H * d]);
  const out = (await y.read()) as Float32Array;
  qkv.destroy();
  y.destroy();
  return out;
}

Deno.test("flashAttention matches the float64 reference at awkward sizes", async () => {
  await withGpu(async (gpu) => {
    const cases = [[1, 1, 1, 5], [3, 7, 6, 16], [2, 63, 1, 64], [1, 700, 6, 5], [1, 130, 2, 128]];
    for (const [seed, [B, N, H, d]] of cases.entries()) {
      const x = randomArray(B * N * 3 * H * d, seed + 1);
      for (const causal of [false, true]) {
        const got = await flash(gpu, x, [B, N, H, d], { causal });
        const ref = attentionReference(x, B, N, H, d, { causal });
        assertClose(got, ref, TOL, `B=${B} N=${N} H=${H} d=${d} causal=${causal}`);
      }
    }
  });
});

Deno.test("flashAttention agrees with softmaxAttention", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [2, 150, 3, 24];
    const x = randomArray(B * N * 3 * H * d, 42);
    const qkv = gpu.upload(x, [B, N, 3 * H * d], "qkv");
    for (const causal of [false, true]) {
      const a = await (await softmaxAttention(gpu, qkv, H, { causal })).read();
      const b = await (await flashAttention(gpu, qkv, H, { causal })).read();
      assertClose(b, a, { atol: 1e-5, rtol: 1e-5 }, `causal=${causal}`);
    }
  });
});

Deno.test("flashAttention stays finite and accurate for large scores", async () => {
  await withGpu(async (gpu) => {
    // Scores up to ~±200: exp without the running maximum would overflow.
    const [B, N, H, d] = [1, 90, 2, 16];
    const x = randomArray(B * N * 3 * H * d, 7, -7, 7);
    for (const causal of [false, true]) {
      const got = await flash(gpu, x, [B, N, H, d], { causal });
      const ref = attentionReference(x, B, N, H, d, { causal });
      assertClose(got, ref, { atol: 1e-4, rtol: 1e-4 }, `causal=${causal}`);
    }
  });
});

Deno.test("flashAttention splits keys over several bindings, carrying the softmax state", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [2, 300, 2, 5];
    const x = randomArray(B * N * 3 * H * d, 11);
    // 40 rows of qkv per binding: 8 query ranges × up to 8 key ranges per batch.
    const maxBindingBytes = 40 * 3 * H * d * 4;
    for (const causal of [false, true]) {
      const got = await flash(gpu, x, [B, N, H, d], { causal, maxBindingBytes });
      const ref = attentionReference(x, B, N, H, d, { causal });
      assertClose(got, ref, TOL, `causal=${causal}`);
    }
  });
});

Deno.test("flashAttention binds batches in pieces under a small binding limit", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [9, 20, 3, 8];
    const x = randomArray(B * N * 3 * H * d, 12);
    const maxBindingBytes = 2 * N * 3 * H * d * 4 + 64; // two batches per piece
    const got = await flash(gpu, x, [B, N, H, d], { causal: true, maxBindingBytes });
    assertClose(got, attentionReference(x, B, N, H, d, { causal: true }), TOL);
  });
});

/** `n` pseudo-random values in [-1, 1) from an integer hash: fast for large tensors. */
function hashedArray(n: number, seed: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let h = Math.imul(i ^ seed, 0x9e3779b1);
    h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
    out[i] = ((h ^ (h >>> 13)) >>> 0) / 2 ** 31 - 1;
  }
  return out;
}

Deno.test("flashAttention handles qkv over one storage binding (128 MiB)", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [11_000, 32, 1, 32]; // qkv: 135 MB
    const bytes = B * N * 3 * H * d * 4;
    assert.ok(bytes > gpu.limits.maxStorageBufferBindingSize, "qkv must exceed one binding");
    const x = hashedArray(B * N * 3 * H * d, 13);
    const got = await flash(gpu, x, [B, N, H, d], { causal: true });
    assertClose(got, attentionReference(x, B, N, H, d, { causal: true }), TOL);
  });
});

Deno.test("flashAttention covers grids of more than 65535 workgroups", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [33_000, 2, 2, 4]; // 66000 workgroups
    const x = hashedArray(B * N * 3 * H * d, 14);
    const got = await flash(gpu, x, [B, N, H, d]);
    assertClose(got, attentionReference(x, B, N, H, d), TOL);
  });
});

Deno.test("flashAttention keeps memory linear in N", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [1, 512, 2, 8];
    const qkv = gpu.upload(randomArray(B * N * 3 * H * d, 3), [B, N, 3 * H * d]);
    gpu.resetPeak();
    const before = gpu.memory().liveBytes;
    const y = await flashAttention(gpu, qkv, H);
    await y.read();
    const extra = gpu.memory().peakBytes - before;
    assert.ok(extra < 2 * y.byteSize, `flash attention allocated ${extra} bytes`);
  });
});

Deno.test("flashAttention rejects malformed inputs", async () => {
  await withGpu(async (gpu) => {
    const qkv = gpu.upload(new Float32Array(2 * 3 * 12), [2, 3, 12]);
    await assert.rejects(flashAttention(gpu, qkv, 5), TypeError); // 12 is not a multiple of 15
    await assert.rejects(flashAttention(gpu, qkv, 0), TypeError);
    const flat = gpu.upload(new Float32Array(12), [12]);
    await assert.rejects(flashAttention(gpu, flat, 1), TypeError);
    const wide = gpu.empty([1, 2, 3 * 129], "f32");
    await assert.rejects(flashAttention(gpu, wide, 1), RangeError); // d = 129
    const ints = gpu.upload(new Int32Array(36), [1, 3, 12]);
    await assert.rejects(flashAttention(gpu, ints, 1), TypeError);
  });
});

Deno.test("flashTiles keeps key/value tiles within 16 KiB of workgroup memory", () => {
  for (const d of [1, 5, 16, 64, 100, 128]) {
    const { blockKeys, headVec4s, blockQueries } = flashTiles(d, 1000);
    assert.ok(2 * blockKeys * headVec4s * 16 <= 16384);
    assert.ok(blockKeys >= 16 && blockQueries === 64);
  }
  assert.equal(flashTiles(16, 7).blockQueries, 16);
});
