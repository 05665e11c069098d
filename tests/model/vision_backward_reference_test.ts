/**
 * The float64 vision training step (BatchNorm in training mode) against the
 * PyTorch fixture's `train.loss` and every `train.grad.*`, and against
 * central finite differences of the independent forward reference
 * (`visionForwardReference` in batch mode + cross-entropy) on tiny random
 * models: ToST, its ViT twin, without `tokens_norm`, without qkv bias;
 * and the layer backwards of this module alone.
 */

import assert from "node:assert/strict";
import { loadCheckpoint } from "../../src/checkpoint/mod.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import type { VisionConfig } from "../../src/model/config.ts";
import { paramSpecs } from "../../src/model/names.ts";
import {
  conv2d,
  crossEntropyReference,
  weightsFromTensors,
} from "../../src/model/reference/layers.ts";
import type { Weights } from "../../src/model/reference/layers.ts";
import { visionForwardReference } from "../../src/model/reference/vision.ts";
import {
  batchNormTrainBackwardReference,
  batchNormTrainForwardReference,
  classAttentionBackwardReference,
  classAttentionForwardReference,
  conv2dBackwardReference,
  visionTrainStepReference,
} from "../../src/model/reference/vision_backward.ts";
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

Deno.test("BatchNorm training forward: batch statistics, running update with unbiased variance", () => {
  // Channel 0 holds 1, 2, 3, 4 (two images × 2 positions), channel 1 holds 0, 0, 2, 2.
  const x = { data: new Float64Array([1, 2, 0, 0, 3, 4, 2, 2]), B: 2, C: 2, H: 1, W: 2 };
  const s = batchNormTrainForwardReference(x, {
    weight: new Float64Array([2, 1]),
    bias: new Float64Array([0, 1]),
    runningMean: new Float64Array([1, -1]),
    runningVar: new Float64Array([1, 2]),
    eps: 0,
  });
  assertClose(s.mean, [2.5, 1], { atol: 1e-15, rtol: 0 });
  assertClose(s.invStd, [1 / Math.sqrt(1.25), 1], { atol: 1e-15, rtol: 0 });
  assertClose(s.runningMean, [0.9 + 0.25, -0.9 + 0.1], { atol: 1e-15, rtol: 0 });
  assertClose(s.runningVar, [0.9 + 0.1 * 5 / 3, 1.8 + 0.1 * 4 / 3], { atol: 1e-15, rtol: 0 });
  const z = 1 / Math.sqrt(1.25);
  assertClose(s.y, [-3 * z, -z, 0, 0, z, 3 * z, 2, 2], { atol: 1e-15, rtol: 0 });
});

Deno.test("layer backwards alone agree with finite differences: conv, BatchNorm, class attention", () => {
  const rand = seededRandom(5);
  const fill = (n: number) => Float64Array.from({ length: n }, () => rand(-1, 1));
  // conv 3×3 stride 2 pad 1 on a 5×7 map; loss = Σ dy·y.
  const x = { data: fill(2 * 3 * 5 * 7), B: 2, C: 3, H: 5, W: 7 };
  const kernel = fill(4 * 3 * 9);
  const geom = { kernel: 3, stride: 2, padding: 1 };
  const dy = fill(2 * 4 * 3 * 4);
  const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);
  const dWeight = new Float64Array(kernel.length);
  const dx = conv2dBackwardReference(dy, x, kernel, dWeight, geom);
  const convLoss = () => dot(conv2d(x, kernel, 4, geom).data, dy);
  assertClose(dx, numericGradient(x.data, convLoss), { atol: 1e-8, rtol: 1e-7 }, "conv dx");
  assertClose(dWeight, numericGradient(kernel, convLoss), { atol: 1e-8, rtol: 1e-7 }, "conv dw");

  // BatchNorm (training) on 2×3×2×3.
  const bx = { data: fill(36), B: 2, C: 3, H: 2, W: 3 };
  const bp = {
    weight: fill(3),
    bias: fill(3),
    runningMean: new Float64Array(3),
    runningVar: new Float64Array(3).fill(1),
  };
  const bdy = fill(36);
  const grads = { dWeight: new Float64Array(3), dBias: new Float64Array(3) };
  const bdx = batchNormTrainBackwardReference(
    bdy,
    batchNormTrainForwardReference(bx, bp),
    bp.weight,
    grads,
    bx,
  );
  const bnLoss = () => dot(batchNormTrainForwardReference(bx, bp).y, bdy);
  assertClose(bdx, numericGradient(bx.data, bnLoss), { atol: 1e-8, rtol: 1e-6 }, "bn dx");
  assertClose(
    grads.dWeight,
    numericGradient(bp.weight, bnLoss),
    { atol: 1e-8, rtol: 1e-6 },
    "bn dw",
  );
  assertClose(grads.dBias, numericGradient(bp.bias, bnLoss), { atol: 1e-8, rtol: 1e-6 }, "bn db");

  // Class attention and softmax attention on qkv [2, 7, 3·2·3].
  const dims = { batches: 2, tokens: 7, heads: 2, headDim: 3 };
  const qkv = fill(2 * 7 * 18);
  const cdy = fill(2 * 6);
  const ca = classAttentionForwardReference(qkv, dims);
  const cdq = classAttentionBackwardReference(cdy, qkv, ca.p, dims);
  const caLoss = () => dot(classAttentionForwardReference(qkv, dims).out, cdy);
  assertClose(cdq, numericGradient(qkv, caLoss), { atol: 1e-8, rtol: 1e-6 }, "class attention");
});
