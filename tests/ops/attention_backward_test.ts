import assert from "node:assert/strict";
import { softmaxAttentionBackward } from "../../src/ops/attention_backward.ts";
import { softmaxAttention } from "../../src/ops/attention.ts";
import {
  attentionReference,
  softmaxAttentionBackwardReference,
} from "../../src/ops/attention_reference.ts";
import { assertClose, assertCloseScaled, randomArray, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";

for (const causal of [false, true]) {
  for (const [B, N, H, d] of [[1, 1, 1, 1], [2, 5, 2, 3], [1, 7, 3, 2]] as const) {
    Deno.test(
      `softmaxAttentionBackwardReference matches finite differences (B ${B}, N ${N}, H ${H}, d ${d}, causal ${causal})`,
      () => {
        const C = H * d;
        const qkv = Float64Array.from(randomArray(B * N * 3 * C, B + N + H + d, -1.5, 1.5));
        const dout = Float64Array.from(randomArray(B * N * C, 2));
        const f = () =>
          attentionReference(qkv, B, N, H, d, { causal }).reduce((s, v, i) => s + v * dout[i], 0);
        const g = softmaxAttentionBackwardReference(qkv, dout, B, N, H, d, { causal });
        assertClose(g, numericGradient(qkv, f), { atol: 1e-8, rtol: 1e-6 });
      },
    );
  }
}

interface Case {
  B: number;
  N: number;
  H: number;
  d: number;
  causal: boolean;
  maxBindingBytes?: number;
}

async function checkGpu({ B, N, H, d, causal, maxBindingBytes }: Case, seed: number) {
  const C = H * d;
  const qkv = randomArray(B * N * 3 * C, seed, -1.5, 1.5);
  const dout = randomArray(B * N * C, seed + 1);
  const outRef = attentionReference(qkv, B, N, H, d, { causal });
  const dqkvRef = softmaxAttentionBackwardReference(qkv, dout, B, N, H, d, { causal });
  await withGpu(async (gpu) => {
    const qkvT = gpu.upload(qkv, [B, N, 3 * C]);
    const { out, saves } = await softmaxAttention(gpu, qkvT, H, {
      causal,
      maxBindingBytes,
      saves: true,
    });
    assert.deepEqual(saves.probs.shape, [B, H, N, N]);
    assertCloseScaled(await out.read(), outRef, 1e-5, "out");
    const dqkv = await softmaxAttentionBackward(
      gpu,
      { dout: gpu.upload(dout, [B, N, C]), qkv: qkvT, out, saves, heads: H, causal },
      { maxBindingBytes },
    );
    assert.deepEqual(dqkv.shape, [B, N, 3 * C]);
    assertCloseScaled(await dqkv.read(), dqkvRef, 1e-4, "dqkv");
  });
}

const cases: Case[] = [
  { B: 1, N: 1, H: 1, d: 1, causal: false },
  { B: 1, N: 1, H: 1, d: 1, causal: true },
  { B: 2, N: 7, H: 2, d: 5, causal: false },
  { B: 2, N: 7, H: 2, d: 5, causal: true },
  { B: 1, N: 63, H: 3, d: 16, causal: true },
  { B: 2, N: 70, H: 2, d: 33, causal: false }, // several key tiles and column tiles
  { B: 2, N: 70, H: 2, d: 33, causal: true },
  { B: 1, N: 700, H: 1, d: 8, causal: true },
];
for (const c of cases) {
  Deno.test(`softmaxAttentionBackward matches the reference (${JSON.stringify(c)})`, async () => {
    await checkGpu(c, c.B * 100 + c.N + c.H + c.d);
  });
}

Deno.test("softmaxAttentionBackward: batches and heads in pieces (small binding limit)", async () => {
  // one head's probabilities 40·40·4 = 6400 B, one batch of qkv 40·3·12·4 = 5760 B:
  // a 16 KiB limit forces pieces of batches and, inside them, of heads
  await checkGpu({ B: 3, N: 40, H: 4, d: 3, causal: true, maxBindingBytes: 16384 }, 9);
});

Deno.test("softmaxAttentionBackward: shape errors are TypeErrors", async () => {
  await withGpu(async (gpu) => {
    const qkv = gpu.empty([1, 4, 6]);
    const out = gpu.empty([1, 4, 2]);
    const saves = { probs: gpu.empty([1, 1, 4, 4]) };
    await assert.rejects(
      softmaxAttentionBackward(gpu, {
        dout: gpu.empty([1, 4, 3]),
        qkv,
        out,
        saves,
        heads: 1,
        causal: true,
      }),
      TypeError,
    );
    await assert.rejects(
      softmaxAttentionBackward(gpu, { dout: out, qkv, out, saves, heads: 2, causal: true }),
      TypeError,
    );
  });
});
