import assert from "node:assert/strict";
import { checkTokenIds, embedding, embeddingReference } from "../../src/ops/embedding.ts";
import { randomArray, withGpu } from "../_util.ts";

Deno.test("embedding gathers token rows and adds position rows, from any start position", async () => {
  await withGpu(async (gpu) => {
    for (
      const [B, T, V, C, P, pos0] of [[1, 1, 1, 1, 1, 0], [3, 7, 11, 5, 9, 2], [
        2,
        63,
        65,
        64,
        64,
        0,
      ]]
    ) {
      const ids = Array.from({ length: B * T }, (_, i) => (i * 7 + 3) % V);
      const wte = randomArray(V * C, 1);
      const wpe = randomArray(P * C, 2);
      const y = await embedding(
        gpu,
        gpu.upload(checkTokenIds(ids, V), [B, T]),
        gpu.upload(wte, [V, C]),
        gpu.upload(wpe, [P, C]),
        pos0,
      );
      assert.deepEqual(y.shape, [B, T, C]);
      assert.deepEqual(await y.read(), embeddingReference(ids, wte, wpe, B, T, C, pos0));
    }
  });
});

Deno.test("token ids outside the vocabulary and positions past block_size are errors", async () => {
  assert.throws(
    () => checkTokenIds([0, 5], 5),
    /Token id 5 at position 1 is outside the vocabulary \[0, 5\)/,
  );
  assert.throws(() => checkTokenIds([-1n], 5), /Token id -1 at position 0/);
  await withGpu(async (gpu) => {
    const wte = gpu.upload(new Float32Array(8), [4, 2]);
    const wpe = gpu.upload(new Float32Array(6), [3, 2]);
    const idx = gpu.upload(new Uint32Array([0, 1]), [1, 2]);
    await assert.rejects(
      embedding(gpu, idx, wte, wpe, 2),
      /positions 2\.\.3 exceed the 3 learned positions/,
    );
  });
});
