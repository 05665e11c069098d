/**
 * The GPU vision models against the PyTorch fixture (logits and every stored
 * activation, layer by layer) and against the float64 CPU reference on other
 * configs: patch 16, the ViT twin, no qkv bias, tokens_norm off, odd sizes.
 */

import assert from "node:assert/strict";
import { assertClose, assertCloseScaled, randomArray, withGpu } from "../_util.ts";
import { classAttentionWeightsReference } from "../../src/ops/attention_reference.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { destroyModel, loadModel } from "../../src/model/load.ts";
import { visionForward, visionGrid } from "../../src/model/vision/model.ts";
import { ParamStore } from "../../src/model/params.ts";
import type { VisionConfig } from "../../src/model/config.ts";
import { visionForwardReference } from "../../src/model/reference/vision.ts";
import { weightsFromTensors } from "../../src/model/reference/layers.ts";
import { randomStateDict } from "./_weights.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const TOL = 1e-4;
/** Π and the class-attention weights lie in [0, 1]: absolute tolerance. */
const PI_TOL = 1e-5;

Deno.test("vision fixture: logits and every activation of both cases match PyTorch", async () => {
  const ref = await readSafetensors(`${FIXTURES}tost_vision_small.ref.safetensors`);
  await withGpu(async (gpu) => {
    const model = await loadModel(gpu, `${FIXTURES}tost_vision_small.pth`);
    assert.equal(model.family, "vision");
    if (model.family !== "vision") return;
    try {
      for (const c of ["case0", "case1"]) {
        const shape = ref.shape(`${c}.input`) as [number, number, number, number];
        const out = await visionForward(gpu, model.params, ref.f32(`${c}.input`), shape, {
          activations: true,
        });
        assertCloseScaled(out.logits, ref.f32(`${c}.logits`), TOL, `${c}.logits`);
        const stored = ref.names.filter((n) => n.startsWith(`${c}.act.`));
        assert.equal(stored.length, 5);
        for (const name of stored) {
          const act = out.activations.get(name.slice(`${c}.act.`.length));
          assert.ok(act, `no activation for ${name}`);
          assert.deepEqual(act.shape, ref.shape(name), name);
          assertCloseScaled(act.data, ref.f32(name), TOL, name);
        }
      }
    } finally {
      destroyModel(model);
    }
  });
});

function config(overrides: Partial<VisionConfig>): VisionConfig {
  return {
    family: "vision",
    attention: "tssa",
    img_size: 32,
    patch_size: 8,
    in_chans: 3,
    num_classes: 10,
    embed_dim: 32,
    depth: 2,
    num_heads: 4,
    mlp_ratio: 4,
    qkv_bias: true,
    eta: 1,
    tokens_norm: true,
    cls_attn_layers: 2,
    pos_hidden_dim: 32,
    norm_eps: 1e-6,
    ...overrides,
  };
}

const VARIANTS: [string, Partial<VisionConfig>, [number, number, number]][] = [
  ["ToST patch 16, 3 images 50×35", { patch_size: 16 }, [3, 50, 35]],
  ["ViT twin, patch 8, 1 image 23×41", { attention: "softmax", num_heads: 2 }, [1, 23, 41]],
  ["ViT twin, patch 16", { attention: "softmax", patch_size: 16 }, [2, 64, 48]],
  [
    "ToST, no qkv bias, tokens_norm off, mlp_ratio 3, 1 class-attention block",
    {
      qkv_bias: false,
      tokens_norm: false,
      mlp_ratio: 3,
      cls_attn_layers: 1,
      embed_dim: 48,
      num_heads: 3,
    },
    [2, 17, 9],
  ],
];

for (const [what, overrides, [B, H, W]] of VARIANTS) {
  Deno.test(`vision vs CPU reference: ${what}`, async () => {
    const cfg = config(overrides);
    const tensors = randomStateDict(cfg, 7);
    const images = randomArray(B * 3 * H * W, 11);
    const acts = new Map<string, Float64Array>();
    const expected = visionForwardReference(
      cfg,
      weightsFromTensors(tensors),
      Float64Array.from(images),
      B,
      H,
      W,
      { capture: (name, _shape, data) => acts.set(name, data) },
    );
    await withGpu(async (gpu) => {
      const params = ParamStore.upload(gpu, cfg, tensors);
      try {
        const out = await visionForward(gpu, params, images, [B, 3, H, W], { activations: true });
        assertCloseScaled(out.logits, expected, TOL, "logits");
        // The reference's class-attention weights are read from the GPU forward's qkv.
        const gpuNames = [...out.activations.keys()].map((n) => n.replace(/qkv$/, "weights"));
        assert.deepEqual(gpuNames.toSorted(), [...acts.keys()].toSorted());
        const [Hp, Wp] = visionGrid(cfg, H, W);
        const M = Hp * Wp + 1;
        assert.deepEqual(out.activations.get("patch_embed")?.shape, [B, Hp * Wp, cfg.embed_dim]);
        for (const [name, data] of acts) {
          if (name.endsWith(".attn.weights")) {
            const qkv = out.activations.get(name.replace(/weights$/, "qkv"))!;
            assert.deepEqual(qkv.shape, [B, M, 3 * cfg.embed_dim]);
            const d = cfg.embed_dim / cfg.num_heads;
            const weights = classAttentionWeightsReference(qkv.data, B, M, cfg.num_heads, d);
            assertClose(weights, data, { atol: PI_TOL, rtol: 0 }, name);
          } else if (name.endsWith(".attn.pi")) {
            assert.deepEqual(out.activations.get(name)!.shape, [B, Hp * Wp, cfg.num_heads]);
            assertClose(out.activations.get(name)!.data, data, { atol: PI_TOL, rtol: 0 }, name);
          } else {
            assertCloseScaled(out.activations.get(name)!.data, data, TOL, name);
          }
        }
      } finally {
        params.destroy();
      }
    });
  });
}

Deno.test("vision: the same model gives the same logits for each image alone and in a batch", async () => {
  const cfg = config({});
  const tensors = randomStateDict(cfg, 3);
  const B = 3;
  const images = randomArray(B * 3 * 24 * 24, 5);
  await withGpu(async (gpu) => {
    const params = ParamStore.upload(gpu, cfg, tensors);
    try {
      const batch = await visionForward(gpu, params, images, [B, 3, 24, 24]);
      const per = 3 * 24 * 24;
      for (let b = 0; b < B; b++) {
        const one = await visionForward(gpu, params, images.slice(b * per, (b + 1) * per), [
          1,
          3,
          24,
          24,
        ]);
        assertCloseScaled(
          one.logits,
          batch.logits.subarray(b * 10, (b + 1) * 10),
          1e-5,
          `image ${b}`,
        );
      }
    } finally {
      params.destroy();
    }
  });
});

Deno.test("vision: missing or misshapen weights and wrong image channels are clear errors", async () => {
  const cfg = config({});
  await withGpu(async (gpu) => {
    const missing = randomStateDict(cfg, 1);
    missing.delete("blocks.1.attn.temp");
    assert.throws(
      () => ParamStore.upload(gpu, cfg, missing),
      /Missing parameter "blocks\.1\.attn\.temp"/,
    );
    const wrong = randomStateDict(cfg, 1);
    wrong.set("head.bias", { dtype: "F32", shape: [11], data: new Uint8Array(44) });
    assert.throws(
      () => ParamStore.upload(gpu, cfg, wrong),
      /"head\.bias" has shape \[11\], expected \[10\]/,
    );
    assert.equal(gpu.memory().liveBuffers, 0, "a failed upload frees what it uploaded");
    const params = ParamStore.upload(gpu, cfg, randomStateDict(cfg, 1));
    try {
      await assert.rejects(
        visionForward(gpu, params, new Float32Array(16), [1, 1, 4, 4]),
        /images \[B, 3, H, W\]/,
      );
    } finally {
      params.destroy();
    }
  });
});

Deno.test("vision: a whole forward is one GPU submission", async () => {
  const cfg = config({ depth: 3 });
  await withGpu(async (gpu) => {
    const params = ParamStore.upload(gpu, cfg, randomStateDict(cfg, 2));
    const queue = gpu.device.queue;
    const submit = queue.submit.bind(queue);
    let submits = 0;
    queue.submit = (buffers: GPUCommandBuffer[]) => {
      submits++;
      submit(buffers);
    };
    try {
      // A new grid size (its positional encoding is uploaded first), then a cached one.
      for (const size of [24, 24, 40]) {
        submits = 0;
        await visionForward(gpu, params, randomArray(2 * 3 * size * size, 1), [2, 3, size, size]);
        assert.equal(submits, 1, `${size}×${size}`);
      }
    } finally {
      queue.submit = submit;
      params.destroy();
    }
  });
});
