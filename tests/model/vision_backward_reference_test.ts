/**
 * The float64 vision training step (BatchNorm in training mode) against the
 * PyTorch fixture's `train.loss` and every `train.grad.*`, and against
 * central finite differences of the independent forward reference
 * (`visionForwardReference` in batch mode + cross-entropy) on tiny random
 * models: ToST, its ViT twin, without `tokens_norm`, without qkv bias. The
 * layers' own references are checked beside their ops (tests/ops/).
 */

import assert from "node:assert/strict";
import { loadCheckpoint } from "../../src/checkpoint/mod.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import type { VisionConfig } from "../../src/model/config.ts";
import { paramSpecs } from "../../src/model/names.ts";
import { weightsFromTensors } from "../../src/model/reference/layers.ts";
import { crossEntropyReference } from "../../src/ops/cross_entropy_reference.ts";
import type { Weights } from "../../src/model/reference/layers.ts";
import { visionForwardReference } from "../../src/model/reference/vision.ts";
import { visionTrainStepReference } from "../../src/model/reference/vision_backward.ts";
import { assertClose, assertCloseScaled, seededRandom } from "../_util.ts";
import { numericGradient } from "../ops/_gradcheck.ts";
import { randomStateDict } from "./_weights.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url);
const fixture = (name: string) => new URL(name, FIXTURES).pathname;

Deno.test("vision train step matches the PyTorch fixture: loss and every parameter gradient", async () => {
  const { config, tensors } = await loadCheckpoint(fixture("tost_vision_small.pth"));
  assert.equal(config.family, "vision");
  const cfg = config as VisionConfig;
  const w = weightsFromTensors(tensors);
  const ref = await readSafetensors(fixture("tost_vision_small.ref.safetensors"));
  const images = Float64Array.from(ref.f32("case0.input"));
  const r = visionTrainStepReference(
    cfg,
    w,
    images,
    { B: 2, H: 32, W: 32 },
    ref.i64("train.labels"),
  );
  const loss = ref.f32("train.loss")[0];
  assert.ok(Math.abs(r.loss - loss) <= 1e-6 * Math.abs(loss), `loss ${r.loss} vs ${loss}`);

  // Every trainable parameter has a reference gradient, and nothing else does.
  const trainable = paramSpecs(cfg)
    .filter((s) => s.kind === "float" && !/running_(mean|var)$/.test(s.name))
    .map((s) => s.name).sort();
  const expectedNames = ref.names.filter((n) => n.startsWith("train.grad.")).map((n) =>
    n.slice(11)
  );
  assert.deepEqual([...r.grads.keys()].sort(), trainable);
  assert.deepEqual(expectedNames.sort(), trainable);
  for (const name of trainable) {
    const expected = ref.f32(`train.grad.${name}`);
    assertCloseScaled(r.grads.get(name)!, expected, 1e-3, name); // the fixture's bar
    assertCloseScaled(r.grads.get(name)!, expected, 1e-6, name); // measured: ≤ 4e-8
  }
  // BatchNorm buffers advance; they are returned, not written into the weights.
  for (const stage of [0, 2, 4]) {
    const p = `patch_embed.proj.${stage}.1`;
    assert.equal(
      r.buffers.get(`${p}.num_batches_tracked`)![0],
      w.get(`${p}.num_batches_tracked`)!.data[0] + 1,
    );
    assert.notDeepEqual(r.buffers.get(`${p}.running_mean`), w.get(`${p}.running_mean`)!.data);
  }
});

function tinyConfig(over: Partial<VisionConfig> = {}): VisionConfig {
  return {
    family: "vision",
    attention: "tssa",
    img_size: 16,
    patch_size: 8,
    in_chans: 3,
    num_classes: 5,
    embed_dim: 8,
    depth: 1,
    num_heads: 2,
    mlp_ratio: 2,
    qkv_bias: true,
    eta: 1,
    tokens_norm: true,
    cls_attn_layers: 2,
    pos_hidden_dim: 4,
    norm_eps: 1e-6,
    ...over,
  };
}

/** Loss of the independent forward reference, BatchNorm on batch statistics. */
function forwardLoss(
  cfg: VisionConfig,
  w: Weights,
  images: Float64Array,
  H: number,
  W: number,
  labels: number[],
) {
  const B = labels.length;
  const logits = visionForwardReference(cfg, w, images, B, H, W, { batchNorm: "batch" });
  return crossEntropyReference(logits, labels, B, cfg.num_classes);
}

function checkFiniteDifferences(cfg: VisionConfig, seed: number, H: number, W: number) {
  const w = weightsFromTensors(randomStateDict(cfg, seed));
  const rand = seededRandom(seed + 1);
  const B = 3;
  const images = Float64Array.from({ length: B * cfg.in_chans * H * W }, () => rand(-1, 1));
  const labels = [1, 4, 0];
  const r = visionTrainStepReference(cfg, w, images, { B, H, W }, labels);
  assert.ok(Math.abs(r.loss - forwardLoss(cfg, w, images, H, W, labels)) < 1e-12, "loss");
  const names = [...r.grads.keys()];
  assert.ok(names.length > 40, `${names.length} gradients`);
  for (const name of names) {
    const p = w.get(name)!;
    // Every entry of small tensors, a spread of entries of large ones.
    const n = p.data.length;
    const stride = n <= 24 ? 1 : Math.ceil(n / 24);
    const idx = Array.from({ length: Math.ceil(n / stride) }, (_, k) => (k * stride + seed) % n);
    const sub = Float64Array.from(idx, (i) => p.data[i]);
    const numeric = numericGradient(sub, () => {
      idx.forEach((i, k) => (p.data[i] = sub[k]));
      return forwardLoss(cfg, w, images, H, W, labels);
    });
    idx.forEach((i, k) => (p.data[i] = sub[k]));
    const analytic = Float64Array.from(idx, (i) => r.grads.get(name)![i]);
    assertClose(analytic, numeric, { atol: 2e-8, rtol: 1e-5 }, `${cfg.attention} ${name}`);
  }
}

Deno.test("vision train step: finite differences on a tiny ToST (non-square image, 3×2 tokens)", () => {
  checkFiniteDifferences(tinyConfig(), 11, 24, 16);
});

Deno.test("vision train step: finite differences on the ViT twin without qkv bias", () => {
  checkFiniteDifferences(tinyConfig({ attention: "softmax", qkv_bias: false }), 12, 16, 16);
});

Deno.test("vision train step: finite differences without tokens_norm, patch 16 stem", () => {
  checkFiniteDifferences(
    tinyConfig({ tokens_norm: false, patch_size: 16, embed_dim: 16, cls_attn_layers: 1 }),
    13,
    32,
    48,
  );
});
