/**
 * The GPU language models against the PyTorch fixture (logits, loss and
 * every stored activation, layer by layer) and against the float64 CPU
 * reference on other configs: the GPT twin, no biases, a full block, one token.
 */

import assert from "node:assert/strict";
import { assertCloseScaled, withGpu } from "../_util.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { destroyModel, loadModel } from "../../src/model/load.ts";
import { languageForward, languageLoss } from "../../src/model/language/model.ts";
import { ParamStore } from "../../src/model/params.ts";
import { meanLoss } from "../../src/ops/cross_entropy.ts";
import type { LanguageConfig } from "../../src/model/config.ts";
import { languageForwardReference } from "../../src/model/reference/language.ts";
import { weightsFromTensors } from "../../src/model/reference/layers.ts";
import { crossEntropyReference } from "../../src/ops/cross_entropy_reference.ts";
import { randomStateDict } from "./_weights.ts";
import { fromF32, toF32 } from "../../src/io/dtype.ts";
import type { StTensor } from "../../src/io/safetensors.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const TOL = 1e-4;

Deno.test("language fixture: logits, loss and every activation of both cases match PyTorch", async () => {
  const ref = await readSafetensors(`${FIXTURES}tost_lang_small.ref.safetensors`);
  await withGpu(async (gpu) => {
    const model = await loadModel(gpu, `${FIXTURES}tost_lang_small.pt`);
    assert.equal(model.family, "language");
    if (model.family !== "language") return;
    try {
      for (const c of ["case0", "case1"]) {
        const [B, T] = ref.shape(`${c}.idx`);
        const idx = ref.i64(`${c}.idx`);
        const out = await languageForward(gpu, model.params, idx, B, T, { activations: true });
        assertCloseScaled(out.logits, ref.f32(`${c}.logits`), TOL, `${c}.logits`);
        const stored = ref.names.filter((n) => n.startsWith(`${c}.act.`));
        assert.equal(stored.length, 4);
        for (const name of stored) {
          const act = out.activations.get(name.slice(`${c}.act.`.length));
          assert.ok(act, `no activation for ${name}`);
          assert.deepEqual(act.shape, ref.shape(name), name);
          assertCloseScaled(act.data, ref.f32(name), TOL, name);
        }
        const targets = ref.i64(`${c}.targets`);
        const losses = await languageLoss(gpu, model.params, { x: idx, y: targets, B, T });
        assertCloseScaled([meanLoss(losses, targets)], ref.f32(`${c}.loss`), TOL, `${c}.loss`);
      }
    } finally {
      destroyModel(model);
    }
  });
});

function config(overrides: Partial<LanguageConfig>): LanguageConfig {
  return {
    family: "language",
    attention: "tssa",
    block_size: 40,
    vocab_size: 37,
    n_layer: 2,
    n_head: 4,
    n_embd: 32,
    bias: true,
    dropout: 0,
    norm_eps: 1e-5,
    ...overrides,
  };
}

const VARIANTS: [string, Partial<LanguageConfig>, [number, number]][] = [
  ["causal ToST without biases, a full block", { bias: false }, [2, 40]],
  ["causal ToST, one token", { n_head: 2 }, [3, 1]],
  ["GPT twin with biases", { attention: "softmax" }, [2, 33]],
  ["GPT twin without biases, 3 layers", { attention: "softmax", bias: false, n_layer: 3 }, [1, 40]],
];

for (const [what, overrides, [B, T]] of VARIANTS) {
  Deno.test(`language vs CPU reference: ${what}`, async () => {
    const cfg = config(overrides);
    const tensors = randomStateDict(cfg, 9);
    const ids = Array.from({ length: B * T }, (_, i) => (i * 13 + 5) % cfg.vocab_size);
    const targets = ids.map((v, i) => (i % 7 === 3 ? -1 : (v + 1) % cfg.vocab_size));
    const acts = new Map<string, Float64Array>();
    const expected = languageForwardReference(cfg, weightsFromTensors(tensors), ids, B, T, {
      capture: (name, _shape, data) => acts.set(name, data),
    });
    await withGpu(async (gpu) => {
      const params = ParamStore.upload(gpu, cfg, tensors);
      try {
        const out = await languageForward(gpu, params, ids, B, T, { activations: true });
        assertCloseScaled(out.logits, expected, TOL, "logits");
        // Block and attention outputs, and causal ToST's Π.
        const perLayer = cfg.attention === "tssa" ? 3 : 2;
        assert.equal(out.activations.size, perLayer * cfg.n_layer);
        assert.equal(acts.size, perLayer * cfg.n_layer);
        for (const [name, data] of acts) {
          const tol = name.endsWith(".attn.pi") ? 1e-5 : TOL;
          assertCloseScaled(out.activations.get(name)!.data, data, tol, name);
        }
        const losses = await languageLoss(gpu, params, { x: ids, y: targets, B, T });
        const loss = crossEntropyReference(expected, targets, B * T, cfg.vocab_size);
        assertCloseScaled([meanLoss(losses, targets)], [loss], TOL, "loss");
      } finally {
        params.destroy();
      }
    });
  });
}

Deno.test("language: too many tokens, bad ids and an untied head are clear errors", async () => {
  const cfg = config({});
  await withGpu(async (gpu) => {
    const untied = randomStateDict(cfg, 1);
    untied.set("lm_head.weight", {
      ...untied.get("lm_head.weight")!,
      data: new Uint8Array(37 * 32 * 4),
    });
    assert.throws(() => ParamStore.upload(gpu, cfg, untied), /tied/);
    const params = ParamStore.upload(gpu, cfg, randomStateDict(cfg, 1));
    try {
      await assert.rejects(
        languageForward(gpu, params, new Array(41).fill(0), 1, 41),
        /41 tokens.*block_size is 40/,
      );
      await assert.rejects(
        languageForward(gpu, params, [1, 37], 1, 2),
        /Token id 37 at position 1/,
      );
    } finally {
      params.destroy();
    }
  });
});

Deno.test("language: a whole forward, and a whole loss, is one GPU submission", async () => {
  const cfg = config({ n_layer: 3 });
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
      const ids = Array.from({ length: 2 * 30 }, (_, i) => i % cfg.vocab_size);
      await languageForward(gpu, params, ids, 2, 30);
      assert.equal(submits, 1, "forward");
      submits = 0;
      await languageLoss(gpu, params, { x: ids, y: ids, B: 2, T: 30 });
      assert.equal(submits, 1, "loss");
    } finally {
      queue.submit = submit;
      params.destroy();
    }
  });
});

Deno.test("language: F16 and BF16 weights run as their f32 values", async () => {
  const cfg = config({ n_layer: 1 });
  const f32 = randomStateDict(cfg, 4);
  const ids = [1, 5, 9, 2, 7];
  await withGpu(async (gpu) => {
    for (const dtype of ["F16", "BF16"] as const) {
      const half = new Map<string, StTensor>();
      const rounded = new Map<string, StTensor>();
      for (const [name, t] of f32) {
        const bytes = fromF32(dtype, toF32(t.dtype, t.data));
        half.set(name, { dtype, shape: t.shape, data: bytes });
        rounded.set(name, {
          dtype: "F32",
          shape: t.shape,
          data: new Uint8Array(toF32(dtype, bytes).buffer),
        });
      }
      const a = ParamStore.upload(gpu, cfg, half);
      const b = ParamStore.upload(gpu, cfg, rounded);
      try {
        const ya = await languageForward(gpu, a, ids, 1, 5);
        const yb = await languageForward(gpu, b, ids, 1, 5);
        assert.deepEqual(ya.logits, yb.logits, dtype);
      } finally {
        a.destroy();
        b.destroy();
      }
    }
  });
});
