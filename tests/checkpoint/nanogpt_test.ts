/**
 * nanoGPT's own checkpoints, written by real `torch.save` (PyTorch 1.13,
 * `tools/gen_nanogpt_checkpoints.py`): no layer scale, the causal-mask
 * buffers `attn.bias`, `_orig_mod.` keys, `model_args`/`iter_num`/`optimizer`
 * entries, zip and legacy formats. Each loads as a GPT and its logits match
 * PyTorch's own forward (computed in float64 by the same script).
 */

import assert from "node:assert/strict";
import { assertCloseScaled, withGpu } from "../_util.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { destroyModel, readModelFile, uploadModel } from "../../src/model/load.ts";
import { languageForward } from "../../src/model/language/model.ts";

const DIR = new URL("../fixtures/nanogpt/", import.meta.url).pathname;

for (const name of ["nanogpt_char", "nanogpt_nobias"]) {
  Deno.test(`${name}.pt loads as a GPT and matches PyTorch's logits`, async () => {
    const file = await readModelFile(`${DIR}${name}.pt`);
    const cfg = file.config;
    assert.equal(cfg.family, "language");
    if (cfg.family !== "language") return;
    assert.equal(cfg.attention, "softmax");
    assert.deepEqual(
      [cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size, cfg.bias],
      [2, 2, 16, 16, 11, name === "nanogpt_char"],
    );
    // No layer scale in nanoGPT: the identity.
    const gamma = file.tensors.get("transformer.h.1.gamma2")!;
    assert.deepEqual([...new Float32Array(gamma.data.slice().buffer)], new Array(16).fill(1));
    const ref = await readSafetensors(`${DIR}${name}.ref.safetensors`);
    await withGpu(async (gpu) => {
      const model = uploadModel(gpu, file);
      try {
        if (model.family !== "language") throw new Error("not a language model");
        for (const c of ["case0", "case1"]) {
          const [B, T] = ref.shape(`${c}.idx`);
          const { logits } = await languageForward(gpu, model.params, ref.i64(`${c}.idx`), B, T);
          assertCloseScaled(logits, ref.f32(`${c}.logits`), 1e-4, `${name} ${c}`);
        }
      } finally {
        destroyModel(model);
      }
    });
  });
}

Deno.test("the mask buffers are present in the fixture and ignored", async () => {
  const { loadCheckpoint } = await import("../../src/checkpoint/mod.ts");
  const ck = await loadCheckpoint(`${DIR}nanogpt_char.pt`);
  assert.deepEqual(ck.tensors.get("transformer.h.0.attn.bias")?.shape, [1, 1, 16, 16]);
  assert.ok(!ck.tensors.has("transformer.h.0.gamma1"));
  const none = await loadCheckpoint(`${DIR}nanogpt_nobias.pt`);
  assert.ok(!none.tensors.has("transformer.h.0.attn.bias"));
});
