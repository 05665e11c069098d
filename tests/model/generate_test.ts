/**
 * Incremental decoding against the whole forward: the logits after every
 * token (causal ToST with running statistics, GPT with a KV cache) equal the
 * full forward's at that position; greedy generation from the incremental
 * decoder equals greedy generation by recomputation, token for token; the
 * block_size rules and sampling.
 */

import assert from "node:assert/strict";
import { assertCloseScaled, withGpu } from "../_util.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { destroyModel, loadModel } from "../../src/model/load.ts";
import { languageForward } from "../../src/model/language/model.ts";
import { ParamStore } from "../../src/model/params.ts";
import type { LanguageConfig } from "../../src/model/config.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { generate, sampleToken, seededRandom } from "../../src/model/generate.ts";
import { IncrementalDecoder, RecomputeDecoder } from "../../src/model/language/decode.ts";
import { randomStateDict } from "./_weights.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;

async function withFixtureModel(fn: (gpu: Gpu, params: ParamStore) => Promise<void>) {
  await withGpu(async (gpu) => {
    const model = await loadModel(gpu, `${FIXTURES}tost_lang_small.pt`);
    try {
      assert.equal(model.family, "language");
      if (model.family === "language") await fn(gpu, model.params);
    } finally {
      destroyModel(model);
    }
  });
}

/** Feed [B, T] ids token by token; returns the logits after each, [B, T, V]. */
async function stepByStep(
  gpu: Gpu,
  params: ParamStore,
  ids: readonly number[],
  B: number,
  T: number,
): Promise<Float32Array> {
  const V = (params.config as LanguageConfig).vocab_size;
  const out = new Float32Array(B * T * V);
  const dec = new IncrementalDecoder(gpu, params, B);
  try {
    for (let t = 0; t < T; t++) {
      const logits = await dec.feed(Array.from({ length: B }, (_, b) => ids[b * T + t]));
      assert.equal(logits.length, B * V);
      assert.equal(dec.position, t + 1);
      for (let b = 0; b < B; b++) out.set(logits.subarray(b * V, (b + 1) * V), (b * T + t) * V);
    }
  } finally {
    dec.destroy();
  }
  return out;
}

Deno.test("fixture ToST: logits token by token equal the full forward at every position of a full block", async () => {
  const ref = await readSafetensors(`${FIXTURES}tost_lang_small.ref.safetensors`);
  const [B, T] = ref.shape("case0.idx"); // 2 × 64 = block_size
  const ids = Array.from(ref.i64("case0.idx"), Number);
  await withFixtureModel(async (gpu, params) => {
    assert.equal(T, (params.config as LanguageConfig).block_size);
    const inc = await stepByStep(gpu, params, ids, B, T);
    const full = await languageForward(gpu, params, ids, B, T);
    assertCloseScaled(inc, full.logits, 1e-5, "incremental vs GPU full forward");
    assertCloseScaled(inc, ref.f32("case0.logits"), 1e-4, "incremental vs PyTorch");
    // One more token has no learned position.
    const dec = new IncrementalDecoder(gpu, params, 1);
    try {
      await dec.feed(ids.slice(0, T));
      await assert.rejects(() => dec.feed([0]), /after 64: the model's block_size is 64/);
    } finally {
      dec.destroy();
    }
  });
});

Deno.test("fixture ToST: a prompt fed in pieces gives the full forward's logits", async () => {
  const ref = await readSafetensors(`${FIXTURES}tost_lang_small.ref.safetensors`);
  const ids = Array.from(ref.i64("case1.idx"), Number); // 1 × 23
  const V = 65;
  await withFixtureModel(async (gpu, params) => {
    const expected = ref.f32("case1.logits");
    const dec = new IncrementalDecoder(gpu, params);
    try {
      let t0 = 0;
      for (const T of [10, 1, 12]) {
        const all = await dec.feed(ids.slice(t0, t0 + T), { all: true });
        assertCloseScaled(all, expected.subarray(t0 * V, (t0 + T) * V), 1e-4, `all at ${t0}`);
        t0 += T;
      }
      // Only the last token's logits by default; a reset starts over.
      dec.reset();
      const last = await dec.feed(ids);
      assertCloseScaled(last, expected.subarray(22 * V), 1e-4, "last");
      const rec = new RecomputeDecoder(gpu, params);
      assertCloseScaled(await rec.feed(ids), expected.subarray(22 * V), 1e-4, "recompute");
    } finally {
      dec.destroy();
    }
  });
});

Deno.test("fixture ToST: greedy and seeded sampling are the same incrementally and by recomputation", async () => {
  await withFixtureModel(async (gpu, params) => {
    const prompt = [18, 47, 56, 57, 58, 1, 15, 47];
    // This little random model's greedy continuation repeats one token, so
    // compare a seeded draw too: the same uniform numbers pick the same
    // tokens only if the two decoders' distributions agree at every step.
    for (const opts of [{ temperature: 0 }, { temperature: 1, seed: 3 }]) {
      const what = JSON.stringify(opts);
      const inc = await generate(gpu, params, prompt, { ...opts, tokens: 24 });
      const rec = await generate(gpu, params, prompt, { ...opts, tokens: 24, mode: "recompute" });
      assert.equal(inc.ids.length, 24, what);
      assert.deepEqual(inc.ids, rec.ids, what);
      assert.equal(inc.incrementalTokens, 24);
      assert.equal(rec.incrementalTokens, 0);
      if (opts.temperature > 0) assert.ok(new Set(inc.ids).size > 10, `varied tokens: ${inc.ids}`);
    }
  });
});

Deno.test("fixture ToST: at block_size generation stops, or slides the window by recomputing it", async () => {
  await withFixtureModel(async (gpu, params) => {
    const prompt = Array.from({ length: 60 }, (_, i) => (i * 7 + 3) % 65);
    const opts = { tokens: 9, temperature: 0 };
    const stop = await generate(gpu, params, prompt, opts);
    // Positions 60…63 take 4 more tokens; the logits at 63 give a 5th.
    assert.equal(stop.stopped, "block_size");
    assert.equal(stop.ids.length, 5);
    const slide = await generate(gpu, params, prompt, { ...opts, atBlockSize: "slide" });
    assert.equal(slide.stopped, "tokens");
    assert.equal(slide.ids.length, 9);
    assert.equal(slide.incrementalTokens, 5);
    assert.deepEqual(slide.ids.slice(0, 5), stop.ids);
    const rec = await generate(gpu, params, prompt, {
      ...opts,
      atBlockSize: "slide",
      mode: "recompute",
    });
    assert.deepEqual(slide.ids, rec.ids);
    await assert.rejects(
      () => generate(gpu, params, new Array(65).fill(1), opts),
      /65 tokens, more than the model's block_size 64/,
    );
    const cropped = await generate(gpu, params, new Array(65).fill(1), {
      ...opts,
      tokens: 1,
      atBlockSize: "slide",
    });
    assert.equal(cropped.promptTokens, 64);
  });
});

Deno.test("fixture ToST: sampling is deterministic for a seed", async () => {
  await withFixtureModel(async (gpu, params) => {
    const opts = { tokens: 8, temperature: 1.5, topK: 20 };
    const a = await generate(gpu, params, [0], { ...opts, seed: 42 });
    const b = await generate(gpu, params, [0], { ...opts, seed: 42 });
    const c = await generate(gpu, params, [0], { ...opts, seed: 43 });
    assert.deepEqual(a.ids, b.ids);
    assert.notDeepEqual(a.ids, c.ids);
  });
});

function config(overrides: Partial<LanguageConfig>): LanguageConfig {
  return {
    family: "language",
    attention: "tssa",
    block_size: 24,
    vocab_size: 29,
    n_layer: 2,
    n_head: 3,
    n_embd: 21,
    bias: true,
    dropout: 0,
    norm_eps: 1e-5,
    ...overrides,
  };
}

for (
  const [what, overrides] of [
    ["GPT twin (KV cache)", { attention: "softmax" }],
    ["GPT twin without biases, one head (KV cache)", {
      attention: "softmax",
      bias: false,
      n_head: 1,
    }],
    ["ToST without biases, 7 heads", { bias: false, n_head: 7 }],
  ] as [string, Partial<LanguageConfig>][]
) {
  Deno.test(`${what}: logits token by token equal the full forward`, async () => {
    const cfg = config(overrides);
    const [B, T] = [2, cfg.block_size];
    const ids = Array.from({ length: B * T }, (_, i) => (i * 11 + 4) % cfg.vocab_size);
    await withGpu(async (gpu) => {
      const params = ParamStore.upload(gpu, cfg, randomStateDict(cfg, 5));
      try {
        const inc = await stepByStep(gpu, params, ids, B, T);
        const full = await languageForward(gpu, params, ids, B, T);
        assertCloseScaled(inc, full.logits, 1e-5, what);
        const greedy = { tokens: 10, temperature: 0 };
        const a = await generate(gpu, params, [1, 2, 3], greedy);
        const b = await generate(gpu, params, [1, 2, 3], { ...greedy, mode: "recompute" });
        assert.deepEqual(a.ids, b.ids);
      } finally {
        params.destroy();
      }
    });
  });
}

Deno.test("sampleToken: greedy, top-k, temperature and the draw's distribution", () => {
  const logits = [1, 3, 3, 0, 2];
  assert.equal(sampleToken(logits, { temperature: 0 }, seededRandom(1)), 1);
  // top-2 keeps both tokens tied at the maximum only.
  const rand = seededRandom(9);
  const counts = new Array(5).fill(0);
  for (let i = 0; i < 4000; i++) counts[sampleToken(logits, { topK: 2 }, rand)]++;
  assert.equal(counts[0] + counts[3] + counts[4], 0);
  assert.ok(Math.abs(counts[1] - 2000) < 200, `${counts}`);
  // Temperature 1 over all five: frequencies follow the softmax.
  const z = logits.map(Math.exp);
  const total = z.reduce((a, b) => a + b);
  counts.fill(0);
  for (let i = 0; i < 20000; i++) counts[sampleToken(logits, {}, rand)]++;
  counts.forEach((n, i) => assert.ok(Math.abs(n / 20000 - z[i] / total) < 0.015, `${counts}`));
  assert.throws(() => sampleToken([0, NaN], {}, rand), /non-finite logit/);
  assert.throws(() => sampleToken(logits, { temperature: -1 }, rand), RangeError);
  assert.throws(() => sampleToken(logits, { topK: 0 }, rand), RangeError);
  assert.throws(() => seededRandom(-1), RangeError);
});
