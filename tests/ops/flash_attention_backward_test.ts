import assert from "node:assert/strict";
import {
  flashAttentionBackward,
  flashBackwardTiles,
} from "../../src/ops/flash_attention_backward.ts";
import { softmaxAttentionBackwardReference } from "../../src/ops/attention_reference.ts";
import { flashAttention } from "../../src/ops/flash_attention.ts";
import { assertCloseScaled, randomArray, withGpu } from "../_util.ts";

interface Case {
  B: number;
  N: number;
  H: number;
  d: number;
  causal: boolean;
}

// Head sizes stay small: lavapipe takes seconds to compile these kernels for
// large heads (register arrays of ⌈d/4⌉ vec4s), ~30 s at d = 128.
const cases: Case[] = [
  { B: 1, N: 1, H: 1, d: 1, causal: false },
  { B: 1, N: 1, H: 1, d: 1, causal: true },
  { B: 2, N: 7, H: 2, d: 5, causal: false },
  { B: 2, N: 7, H: 2, d: 5, causal: true },
  { B: 1, N: 63, H: 3, d: 16, causal: true },
  { B: 2, N: 70, H: 2, d: 16, causal: false }, // several tiles of keys and of queries
  { B: 2, N: 40, H: 2, d: 33, causal: true }, // a head size that is not a multiple of 4
  { B: 1, N: 700, H: 1, d: 8, causal: true },
];

for (const c of cases) {
  Deno.test(`flashAttentionBackward matches the reference (${JSON.stringify(c)})`, async () => {
    const { B, N, H, d, causal } = c;
    const C = H * d;
    const seed = B * 100 + N + H + d;
    const qkv = randomArray(B * N * 3 * C, seed, -1.5, 1.5);
    const dout = randomArray(B * N * C, seed + 1);
    const ref = softmaxAttentionBackwardReference(qkv, dout, B, N, H, d, { causal });
    await withGpu(async (gpu) => {
      const qkvT = gpu.upload(qkv, [B, N, 3 * C]);
      const out = await flashAttention(gpu, qkvT, H, { causal });
      const dqkv = await flashAttentionBackward(gpu, {
        dout: gpu.upload(dout, [B, N, C]),
        qkv: qkvT,
        out,
        heads: H,
        causal,
      });
      assert.deepEqual(dqkv.shape, [B, N, 3 * C]);
      assertCloseScaled(await dqkv.read(), ref, 1e-4, "dqkv");
    });
  });
}

Deno.test("flashBackwardTiles keeps the staged tiles within 16 KiB", () => {
  for (const d of [1, 8, 33, 64, 128]) {
    const { tileRows, headVec4s, rows } = flashBackwardTiles(d, 4096);
    assert.ok(tileRows * (2 * 16 * headVec4s + 8) <= 16384, `d ${d}`);
    assert.ok(tileRows >= 4 && rows === 64);
  }
  assert.deepEqual(flashBackwardTiles(8, 3), { rows: 16, tileRows: 4, headVec4s: 2 });
});

Deno.test("flashAttentionBackward: shape errors are TypeErrors", async () => {
  await withGpu(async (gpu) => {
    const qkv = gpu.empty([1, 4, 6]);
    const out = gpu.empty([1, 4, 2]);
    await assert.rejects(
      flashAttentionBackward(gpu, { dout: gpu.empty([1, 4, 3]), qkv, out, heads: 1, causal: true }),
      TypeError,
    );
  });
});
