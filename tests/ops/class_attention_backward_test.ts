/**
 * Class attention backward against the float64 reference (itself checked by
 * finite differences in tests/model/vision_backward_reference_test.ts) at
 * awkward sizes, head size 128, and grids over 65535 workgroups in both kernels.
 */

import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { classAttentionBackward } from "../../src/ops/class_attention_backward.ts";
import {
  attentionReference,
  softmaxAttentionBackwardReference,
} from "../../src/ops/attention_reference.ts";
import { assertClose, randomArray, seededRandom, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";

async function check(gpu: Gpu, B: number, M: number, H: number, d: number, seed: number) {
  const C = H * d;
  const qkvHost = randomArray(B * M * 3 * C, seed, -1.5, 1.5);
  const dOutHost = randomArray(B * C, seed + 1);
  const want = softmaxAttentionBackwardReference(qkvHost, dOutHost, B, M, H, d, {
    classToken: true,
  });
  const qkv = gpu.upload(qkvHost, [B, M, 3 * C]);
  const dOut = gpu.upload(dOutHost, [B, 1, C]);
  const dqkv = await classAttentionBackward(gpu, { dOut, qkv, heads: H });
  assert.deepEqual(dqkv.shape, [B, M, 3 * C]);
  assertClose(await dqkv.read(), want, { atol: 2e-5, rtol: 1e-4 }, `B${B} M${M} H${H} d${d}`);
  for (const t of [qkv, dOut, dqkv]) t.destroy();
}

Deno.test("class attention backward matches float64 at awkward sizes", async () => {
  await withGpu(async (gpu) => {
    await check(gpu, 1, 1, 1, 1, 1);
    await check(gpu, 2, 7, 3, 5, 2);
    await check(gpu, 3, 65, 4, 16, 3); // the vision model's 64 patch tokens + class token
    await check(gpu, 1, 300, 1, 128, 4);
  });
});

Deno.test("class attention backward: over 65535 workgroups in each kernel", async () => {
  await withGpu(async (gpu) => {
    await check(gpu, 16400, 2, 4, 1, 5); // 65600 (batch, head) workgroups
    await check(gpu, 2, 2000, 6, 64, 6); // 2·2000·1152 elements: 72000 workgroups
  });
});

Deno.test("class attention backward: shape errors are TypeErrors", async () => {
  await withGpu(async (gpu) => {
    const qkv = gpu.upload(new Float32Array(2 * 3 * 12), [2, 3, 12]);
    const dOut = gpu.upload(new Float32Array(3), [1, 1, 3]);
    await assert.rejects(classAttentionBackward(gpu, { dOut, qkv, heads: 2 }), TypeError);
    await assert.rejects(classAttentionBackward(gpu, { dOut: qkv, qkv, heads: 5 }), TypeError);
    qkv.destroy();
    dOut.destroy();
  });
});

Deno.test("class attention's backward reference agrees with finite differences", () => {
  const rand = seededRandom(5);
  const fill = (n: number) => Float64Array.from({ length: n }, () => rand(-1, 1));
  const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);
  // qkv [2, 7, 3·2·3]: class attention of 7 tokens, 2 heads of 3.
  const qkv = fill(2 * 7 * 18);
  const cdy = fill(2 * 6);
  const cls = { classToken: true };
  const cdq = softmaxAttentionBackwardReference(qkv, cdy, 2, 7, 2, 3, cls);
  const caLoss = () => dot(attentionReference(qkv, 2, 7, 2, 3, cls), cdy);
  assertClose(cdq, numericGradient(qkv, caLoss), { atol: 1e-8, rtol: 1e-6 }, "class attention");
});
