/**
 * Π as `tost inspect` reads it from the model's one forward equals the
 * float64 reference model's Π at 1e-5, on the shared PyTorch fixtures (both
 * vision cases, including the non-square 48×40 image, and both language
 * cases); so do the class token's attention weights. A ViT or GPT has no Π.
 */

import assert from "node:assert/strict";
import { assertClose, withGpu } from "../_util.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { loadCheckpoint } from "../../src/checkpoint/mod.ts";
import { weightsFromTensors } from "../../src/model/reference/layers.ts";
import { visionForwardReference } from "../../src/model/reference/vision.ts";
import { languageForwardReference } from "../../src/model/reference/language.ts";
import { destroyModel, loadModel } from "../../src/model/load.ts";
import { ParamStore } from "../../src/model/params.ts";
import { languageMaps, topK, visionMaps } from "../../src/inspect/maps.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
/** Π and the attention weights lie in [0, 1]. */
const TOL = { atol: 1e-5, rtol: 0 };

Deno.test("inspect: vision Π and class attention from the forward match the float64 reference (fixture)", async () => {
  const ref = await readSafetensors(`${FIXTURES}tost_vision_small.ref.safetensors`);
  const ck = await loadCheckpoint(`${FIXTURES}tost_vision_small.pth`);
  if (ck.config.family !== "vision") throw new Error("vision fixture");
  const cfg = ck.config;
  const w = weightsFromTensors(ck.tensors);
  await withGpu(async (gpu) => {
    const model = await loadModel(gpu, `${FIXTURES}tost_vision_small.pth`);
    try {
      for (const [name, b] of [["case0", 0], ["case0", 1], ["case1", 0]] as const) {
        const [, C, H, W] = ref.shape(`${name}.input`);
        const image = ref.f32(`${name}.input`).slice(b * C * H * W, (b + 1) * C * H * W);
        const captured = new Map<string, Float64Array>();
        const logits = visionForwardReference(cfg, w, Float64Array.from(image), 1, H, W, {
          capture: (n, _shape, data) => captured.set(n, data),
        });
        const maps = await visionMaps(gpu, model.params, image, [C, H, W]);
        const what = `${name}[${b}] ${H}×${W}`;
        const [Hp, Wp] = maps.grid;
        assert.equal(maps.pi.length, cfg.depth);
        for (let i = 0; i < cfg.depth; i++) {
          assert.equal(maps.pi[i].length, Hp * Wp * cfg.num_heads);
          assertClose(maps.pi[i], captured.get(`blocks.${i}.attn.pi`)!, TOL, `${what} Π ${i}`);
        }
        assert.equal(maps.classAttention.length, cfg.cls_attn_layers);
        for (let i = 0; i < cfg.cls_attn_layers; i++) {
          const expected = captured.get(`cls_attn_blocks.${i}.attn.weights`)!;
          assertClose(maps.classAttention[i], expected, TOL, `${what} class attention ${i}`);
        }
        // Every token's Π sums to 1 over the heads.
        for (let n = 0; n < Hp * Wp; n++) {
          let s = 0;
          for (let h = 0; h < cfg.num_heads; h++) s += maps.pi[0][n * cfg.num_heads + h];
          assert.ok(Math.abs(s - 1) < 1e-5, `${what}: Π of token ${n} sums to ${s}`);
        }
        assertClose(maps.logits, logits, { atol: 1e-4, rtol: 0 }, `${what} logits`);
        let best = 0;
        for (let k = 1; k < logits.length; k++) if (logits[k] > logits[best]) best = k;
        assert.equal(maps.predicted, best);
        assert.ok(Math.abs(maps.probabilities.reduce((a, v) => a + v, 0) - 1) < 1e-12);
      }
    } finally {
      destroyModel(model);
    }
  });
});

Deno.test("inspect: language Π from the forward matches the float64 reference (fixture)", async () => {
  const ref = await readSafetensors(`${FIXTURES}tost_lang_small.ref.safetensors`);
  const ck = await loadCheckpoint(`${FIXTURES}tost_lang_small.pt`);
  if (ck.config.family !== "language") throw new Error("language fixture");
  const cfg = ck.config;
  const w = weightsFromTensors(ck.tensors);
  await withGpu(async (gpu) => {
    const model = await loadModel(gpu, `${FIXTURES}tost_lang_small.pt`);
    try {
      for (const [name, b] of [["case0", 1], ["case1", 0]] as const) {
        const [, T] = ref.shape(`${name}.idx`);
        const ids = Array.from(ref.i64(`${name}.idx`).slice(b * T, (b + 1) * T), Number);
        const captured = new Map<string, Float64Array>();
        const logits = languageForwardReference(cfg, w, ids, 1, T, {
          capture: (n, _shape, data) => captured.set(n, data),
        });
        const maps = await languageMaps(gpu, model.params, ids);
        assert.equal(maps.tokens, T);
        for (let i = 0; i < cfg.n_layer; i++) {
          const expected = captured.get(`transformer.h.${i}.attn.pi`)!;
          assert.equal(expected.length, T * cfg.n_head);
          assertClose(maps.pi[i], expected, TOL, `${name}[${b}] Π ${i}`);
        }
        const V = cfg.vocab_size;
        assertClose(maps.logits, logits.subarray((T - 1) * V), { atol: 1e-4, rtol: 0 }, "logits");
        const [first] = topK(maps.probabilities, 3);
        assert.equal(first.p, Math.max(...maps.probabilities));
      }
    } finally {
      destroyModel(model);
    }
  });
});

Deno.test("inspect: softmax models have no Π", async () => {
  const ck = await loadCheckpoint(`${FIXTURES}tost_vision_small.pth`);
  if (ck.config.family !== "vision") throw new Error("vision fixture");
  const vit = { ...ck.config, attention: "softmax" as const };
  await withGpu(async (gpu) => {
    const { randomStateDict } = await import("../model/_weights.ts");
    const params = ParamStore.upload(gpu, vit, randomStateDict(vit, 1));
    try {
      await assert.rejects(
        () => visionMaps(gpu, params, new Float32Array(3 * 16 * 16), [3, 16, 16]),
        /ViT .*no TSSA Π/,
      );
    } finally {
      params.destroy();
    }
  });
});
