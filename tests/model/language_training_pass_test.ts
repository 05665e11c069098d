/**
 * The language model's training pass against the PyTorch fixture (loss and
 * every parameter gradient of case0) and the GPT twin against central
 * finite differences of the float64 reference forward on a tiny model.
 */

import assert from "node:assert/strict";
import { assertClose, assertCloseScaled, withGpu } from "../_util.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { readModelFile } from "../../src/model/load.ts";
import { ParamStore } from "../../src/model/params.ts";
import { Arena } from "../../src/gpu/arena.ts";
import type { LanguageConfig } from "../../src/model/config.ts";
import { languageForwardReference } from "../../src/model/reference/language.ts";
import { weightsFromTensors } from "../../src/model/reference/layers.ts";
import { crossEntropyReference } from "../../src/ops/cross_entropy_reference.ts";
import { languageForwardBackward } from "../../src/model/language/model.ts";
import { randomStateDict } from "./_weights.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const TOL = 1e-3;

Deno.test("training pass: loss and every parameter gradient match the PyTorch fixture", async () => {
  const ref = await readSafetensors(`${FIXTURES}tost_lang_small.ref.safetensors`);
  const file = await readModelFile(`${FIXTURES}tost_lang_small.pt`);
  assert.equal(file.config.family, "language");
  if (file.config.family !== "language") return;
  const cfg = file.config;
  await withGpu(async (gpu) => {
    const params = ParamStore.upload(gpu, cfg, file.tensors);
    const grads = ParamStore.zeros(gpu, cfg);
    const arena = new Arena(gpu);
    try {
      const [B, T] = ref.shape("case0.idx");
      await arena.use(async () => {
        const loss = await languageForwardBackward(gpu, params, grads, {
          B,
          T,
          x: ref.i64("case0.idx"),
          y: ref.i64("case0.targets"),
        });
        assertCloseScaled(await gpu.read(loss), ref.f32("train.loss"), 1e-4, "train.loss");
      });
      const named = grads.entries();
      const refNames = ref.names.filter((n) => n.startsWith("train.grad."))
        .map((n) => n.slice("train.grad.".length)).filter((n) => n !== "lm_head.weight");
      assert.deepEqual(named.map(([n]) => n).sort(), refNames.sort());
      for (const [name, t] of named) {
        assertCloseScaled(await gpu.read(t), ref.f32(`train.grad.${name}`), TOL, name);
      }
    } finally {
      arena.destroy();
      params.destroy();
      grads.destroy();
    }
  });
});

Deno.test("training pass: GPT twin gradients match finite differences of the float64 reference", async () => {
  const cfg: LanguageConfig = {
    family: "language",
    attention: "softmax",
    block_size: 8,
    vocab_size: 11,
    n_layer: 2,
    n_head: 2,
    n_embd: 8,
    bias: true,
    dropout: 0,
    norm_eps: 1e-5,
  };
  const sd = randomStateDict(cfg, 5);
  const B = 2;
  const T = 7;
  const ids = Array.from({ length: B * T }, (_, i) => (i * 7 + 3) % cfg.vocab_size);
  const targets = ids.map((v, i) => (i % 5 === 4 ? -1 : (v * 3 + 1) % cfg.vocab_size));
  const weights = weightsFromTensors(sd);
  const lossAt = () => {
    // lm_head is tied: keep it equal to wte while perturbing.
    weights.set("lm_head.weight", weights.get("transformer.wte.weight")!);
    const logits = languageForwardReference(cfg, weights, ids, B, T);
    return crossEntropyReference(logits, targets, B * T, cfg.vocab_size);
  };
  await withGpu(async (gpu) => {
    const params = ParamStore.upload(gpu, cfg, sd);
    const grads = ParamStore.zeros(gpu, cfg);
    const arena = new Arena(gpu);
    try {
      await arena.use(async () => {
        const loss = await languageForwardBackward(gpu, params, grads, {
          B,
          T,
          x: ids,
          y: targets,
        });
        assertCloseScaled(await gpu.read(loss), [lossAt()], 1e-5, "loss");
      });
      const h = 1e-4;
      for (const [name, t] of grads.entries()) {
        const got = await gpu.read(t);
        const p = weights.get(name)!.data;
        // A few entries of every tensor (all of the small ones).
        const picks = p.length <= 8
          ? [...p.keys()]
          : [0, 1, p.length >> 1, p.length - 1, (p.length * 7) >> 3];
        const want: number[] = [];
        const have: number[] = [];
        for (const i of picks) {
          const v = p[i];
          p[i] = v + h;
          const up = lossAt();
          p[i] = v - h;
          const down = lossAt();
          p[i] = v;
          want.push((up - down) / (2 * h));
          have.push(got[i]);
        }
        assertClose(have, want, { atol: 1e-5, rtol: 2e-3 }, name);
      }
    } finally {
      arena.destroy();
      params.destroy();
      grads.destroy();
    }
  });
});
