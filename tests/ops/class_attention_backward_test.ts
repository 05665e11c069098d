/**
 * Class attention backward against the float64 reference (itself checked by
 * finite differences in tests/model/vision_backward_reference_test.ts) at
 * awkward sizes, head size 128, and grids over 65535 workgroups in both kernels.
 */

import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { classAttentionBackward } from "../../src/ops/class_attention_backward.ts";
import {
  classAttentionBackwardReference,
  classAttentionForwardReference,
} from "../../src/model/reference/vision_backward.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

async function check(gpu: Gpu, B: number, M: number, H: number, d: number, seed: number) {
  const C = H * d;
  const dims = { batches: B, tokens: M, heads: H, headDim: d };
  const qkvHost = randomArray(B * M * 3 * C, seed, -1.5, 1.5);
  const dOutHost = randomArray(B * C, seed + 1);
  const { p } = classAttentionForwardReference(qkvHost, dims);
  const want = classAttentionBackwardReference(dOutHost, qkvHost, p, dims);
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
