/**
 * The GPU training step of the vision models against PyTorch (the fixture's
 * `train.loss` and every `train.grad.*`) and against the float64 reference
 * (ViT twin without tokens_norm or qkv bias, running statistics, gradient
 * accumulation over two calls).
 */

import assert from "node:assert/strict";
import { loadCheckpoint } from "../../src/checkpoint/mod.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import type { VisionConfig } from "../../src/model/config.ts";
import { weightsFromTensors } from "../../src/model/reference/layers.ts";
import { visionTrainStepReference } from "../../src/model/reference/vision_backward.ts";
import { visionForwardBackward } from "../../src/model/vision/model.ts";
import { ParamStore, trainedNames } from "../../src/model/params.ts";
import { Arena } from "../../src/gpu/arena.ts";
import type { StTensor } from "../../src/io/safetensors.ts";
import { assertCloseScaled, randomArray, withGpu } from "../_util.ts";
import { randomStateDict } from "./_weights.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url);
const fixture = (name: string) => new URL(name, FIXTURES).pathname;

function destroyAll(...stores: ParamStore[]) {
  for (const s of stores) s.destroy();
}

/** Run one GPU step and the float64 reference; return both. */
function runBoth(
  gpu: Gpu,
  cfg: VisionConfig,
  tensors: Map<string, StTensor>,
  images: Float32Array<ArrayBuffer>,
  size: { B: number; H: number; W: number },
  labels: number[],
) {
  const params = ParamStore.upload(gpu, cfg, tensors);
  const grads = ParamStore.zeros(gpu, cfg);
  const img = gpu.upload(images, [size.B, cfg.in_chans, size.H, size.W]);
  const ref = visionTrainStepReference(
    cfg,
    weightsFromTensors(tensors),
    Float64Array.from(images),
    size,
    labels,
  );
  return { params, grads, img, ref };
}

Deno.test("GPU vision training step matches the PyTorch fixture: loss and every gradient", async () => {
  const { config, tensors } = await loadCheckpoint(fixture("tost_vision_small.pth"));
  assert.equal(config.family, "vision");
  const cfg = config as VisionConfig;
  const ref = await readSafetensors(fixture("tost_vision_small.ref.safetensors"));
  const labels = Array.from(ref.i64("train.labels"), Number);
  await withGpu(async (gpu) => {
    const r = runBoth(
      gpu,
      cfg,
      tensors,
      ref.f32("case0.input"),
      { B: 2, H: 32, W: 32 },
      labels,
    );
    const arena = new Arena(gpu);
    const got = await arena.use(async () => {
      const loss = await visionForwardBackward(gpu, r.params, r.grads, r.img, labels);
      return (await loss.read())[0];
    });
    arena.destroy();
    const want = ref.f32("train.loss")[0];
    assert.ok(Math.abs(got - want) <= 1e-4 * Math.max(1, Math.abs(want)), `loss ${got} vs ${want}`);
    const names = trainedNames(cfg);
    assert.equal(names.length, ref.names.filter((n) => n.startsWith("train.grad.")).length);
    for (const name of names) {
      const g = await r.grads.get(name)!.read();
      assertCloseScaled(g, ref.f32(`train.grad.${name}`), 1e-3, name);
    }
    // Running statistics advanced as PyTorch's (momentum 0.1, unbiased variance).
    for (const [name, value] of r.ref.buffers) {
      if (name.endsWith("num_batches_tracked")) continue;
      assertCloseScaled(await r.params.get(name)!.read(), value, 1e-5, name);
    }
    arena.destroy();
    r.img.destroy();
    destroyAll(r.params, r.grads);
  });
});

Deno.test("GPU vision training step: ViT twin without tokens_norm or qkv bias, accumulation", async () => {
  const cfg: VisionConfig = {
    family: "vision",
    attention: "softmax",
    img_size: 24,
    patch_size: 8,
    in_chans: 3,
    num_classes: 7,
    embed_dim: 24,
    depth: 2,
    num_heads: 3,
    mlp_ratio: 2,
    qkv_bias: false,
    eta: 1,
    tokens_norm: false,
    cls_attn_layers: 2,
    pos_hidden_dim: 8,
    norm_eps: 1e-6,
  };
  const tensors = randomStateDict(cfg, 21);
  const size = { B: 3, H: 24, W: 40 };
  const labels = [6, 0, 3];
  const images = randomArray(size.B * 3 * size.H * size.W, 22);
  await withGpu(async (gpu) => {
    const r = runBoth(gpu, cfg, tensors, images, size, labels);
    const arena = new Arena(gpu);
    const step = async () => {
      arena.reset();
      return await arena.use(async () => {
        const loss = await visionForwardBackward(gpu, r.params, r.grads, r.img, labels);
        return (await loss.read())[0];
      });
    };
    const loss = await step();
    assert.ok(Math.abs(loss - r.ref.loss) <= 1e-4 * Math.max(1, r.ref.loss));
    for (const name of trainedNames(cfg)) {
      assertCloseScaled(await r.grads.get(name)!.read(), r.ref.grads.get(name)!, 1e-3, name);
    }
    for (const [name, value] of r.ref.buffers) {
      if (name.endsWith("num_batches_tracked")) continue;
      assertCloseScaled(await r.params.get(name)!.read(), value, 1e-5, name);
    }
    // A second call adds the same gradients again (BatchNorm uses batch statistics,
    // so the updated running statistics do not change them).
    await step();
    for (const name of trainedNames(cfg)) {
      const twice = r.ref.grads.get(name)!.map((v) => 2 * v);
      assertCloseScaled(await r.grads.get(name)!.read(), twice, 1e-3, `${name} ×2`);
    }
    arena.destroy();
    r.img.destroy();
    destroyAll(r.params, r.grads);
  });
});
