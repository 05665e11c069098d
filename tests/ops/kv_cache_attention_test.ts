/**
 * Causal softmax attention with a KV cache, fed in pieces, against the
 * float64 whole-sequence reference at every position.
 */

import assert from "node:assert/strict";
import { attentionReference } from "../../src/ops/attention_reference.ts";
import {
  createKvCache,
  destroyKvCache,
  kvCacheAttention,
} from "../../src/ops/kv_cache_attention.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

const CASES = [
  { B: 1, N: 1, H: 1, d: 1, P: 1, pieces: [1] },
  { B: 2, N: 19, H: 3, d: 5, P: 19, pieces: [1] },
  { B: 1, N: 150, H: 2, d: 64, P: 160, pieces: [70, 1, 2] }, // more keys than threads
  { B: 3, N: 9, H: 4, d: 16, P: 64, pieces: [4, 5] },
];

Deno.test("kvCacheAttention fed in pieces reproduces causal attention of the whole sequence", async () => {
  await withGpu(async (gpu) => {
    for (const [i, c] of CASES.entries()) {
      const C = c.H * c.d;
      const qkv = randomArray(c.B * c.N * 3 * C, 50 + i, -2, 2);
      const expected = attentionReference(qkv, c.B, c.N, c.H, c.d, { causal: true });
      const cache = createKvCache(gpu, c.B, c.H, c.d, c.P);
      const out = gpu.empty([c.B, c.N, C], "f32", "y.all");
      try {
        let t0 = 0;
        for (let s = 0; t0 < c.N; s++) {
          const T = Math.min(c.pieces[s % c.pieces.length], c.N - t0);
          const piece = new Float32Array(c.B * T * 3 * C);
          for (let b = 0; b < c.B; b++) {
            const from = (b * c.N + t0) * 3 * C;
            piece.set(qkv.subarray(from, from + T * 3 * C), b * T * 3 * C);
          }
          const x = gpu.upload(piece, [c.B, T, 3 * C], "qkv");
          const y = await kvCacheAttention(gpu, x, cache);
          for (let b = 0; b < c.B; b++) {
            gpu.copy(y, out, T * C * 4, b * T * C * 4, (b * c.N + t0) * C * 4);
          }
          x.destroy();
          y.destroy();
          t0 += T;
        }
        assert.equal(cache.position, c.N);
        assertClose(await out.read(), expected, { atol: 1e-5, rtol: 1e-5 }, JSON.stringify(c));
      } finally {
        destroyKvCache(cache);
        out.destroy();
      }
    }
  });
});

Deno.test("kvCacheAttention refuses tokens past the cache and a mismatched qkv", async () => {
  await withGpu(async (gpu) => {
    const cache = createKvCache(gpu, 1, 2, 3, 4);
    const x3 = gpu.upload(new Float32Array(3 * 18), [1, 3, 18], "x3");
    const x2 = gpu.upload(new Float32Array(2 * 18), [1, 2, 18], "x2");
    const bad = gpu.upload(new Float32Array(12), [1, 1, 12], "bad");
    try {
      (await kvCacheAttention(gpu, x3, cache)).destroy();
      await assert.rejects(
        () => kvCacheAttention(gpu, x2, cache),
        /positions 3…4 pass the cache's 4/,
      );
      await assert.rejects(() => kvCacheAttention(gpu, bad, cache), TypeError);
      assert.throws(() => createKvCache(gpu, 1, 1, 1, 1 << 20), /workgroup memory/);
    } finally {
      destroyKvCache(cache);
      for (const t of [x3, x2, bad]) t.destroy();
    }
  });
});
