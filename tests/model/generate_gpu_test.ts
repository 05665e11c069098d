/**
 * Generation draws its tokens on the GPU: the same tokens as the host
 * sampler on the decoder's logits with the same draws, one blocking host
 * wait for the first token and then one per `readEvery` tokens (counted by
 * wrapping `mapAsync` and `onSubmittedWorkDone`), tokens streamed as they
 * are read, and a non-finite logit reported with the tokens before it.
 */

import assert from "node:assert/strict";
import { countHostWaits, withGpu } from "../_util.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { destroyModel, loadModel } from "../../src/model/load.ts";
import { ParamStore } from "../../src/model/params.ts";
import type { LanguageConfig } from "../../src/model/config.ts";
import { generate, randomAt, sampleToken } from "../../src/model/generate.ts";
import { IncrementalDecoder } from "../../src/model/language/decode.ts";
import { randomStateDict } from "./_weights.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;

async function withFixtureModel(fn: (gpu: Gpu, params: ParamStore) => Promise<void>) {
  await withGpu(async (gpu) => {
    const model = await loadModel(gpu, `${FIXTURES}tost_lang_small.pt`);
    try {
      if (model.family !== "language") throw new Error("not a language model");
      await fn(gpu, model.params);
    } finally {
      destroyModel(model);
    }
  });
}

Deno.test("generation draws on the GPU the tokens the host sampler draws from the same logits", async () => {
  await withFixtureModel(async (gpu, params) => {
    const prompt = [18, 47, 56, 57, 58, 1, 15, 47];
    for (
      const opts of [
        { temperature: 0.8, topK: 10, seed: 5 },
        { temperature: 1.2, seed: 6 },
        { temperature: 0, seed: 7 },
        { temperature: 1, topK: 1, seed: 8 },
        { temperature: 1, seed: 9, vocabLimit: 40 },
      ]
    ) {
      const N = 20;
      const gen = await generate(gpu, params, prompt, { ...opts, tokens: N, readEvery: 7 });
      // The host loop: logits read back every token, sampled in float64 with the same draws.
      const dec = new IncrementalDecoder(gpu, params);
      const host: number[] = [];
      try {
        let logits = await dec.feed(prompt);
        for (let i = 0; i < N; i++) {
          const limited = logits.subarray(0, opts.vocabLimit ?? logits.length);
          host.push(sampleToken(limited, opts, () => randomAt(opts.seed, i)));
          if (i < N - 1) logits = await dec.feed([host[i]]);
        }
      } finally {
        dec.destroy();
      }
      assert.deepEqual(gen.ids, host, JSON.stringify(opts));
      if (opts.vocabLimit) assert.ok(gen.ids.every((t) => t < opts.vocabLimit));
      assert.equal(gen.reads, 1 + Math.ceil((N - 1) / 7));
    }
  });
});

Deno.test("generation: one wait for the first token, then one per readEvery tokens; tokens stream", async () => {
  await withFixtureModel(async (gpu, params) => {
    for (
      const [N, readEvery, slide] of [[50, 32, false], [100, 32, true], [9, 4, false]] as const
    ) {
      const seen: [number, number][] = [];
      const options = {
        tokens: N,
        temperature: 1,
        seed: 1,
        readEvery,
        atBlockSize: slide ? "slide" as const : "stop" as const,
      };
      // Once before counting: the first use of a kernel or a matrix shape may wait (compiles, tuning).
      await generate(gpu, params, [0, 1, 2], options);
      const { result, waits } = await countHostWaits((probe) =>
        generate(gpu, params, [0, 1, 2], {
          ...options,
          onToken: (_, i) => void seen.push([i, probe()]),
        })
      );
      // The fixture's block_size 64 stops (or slides past) 62 tokens after a 3-token prompt.
      const tokens = slide ? N : Math.min(N, 62);
      assert.equal(result.ids.length, tokens);
      const reads = 1 + Math.ceil((tokens - 1) / readEvery);
      assert.equal(result.reads, reads);
      assert.equal(waits, reads, `${tokens} tokens, a read per ${readEvery}`);
      assert.deepEqual(seen.map(([i]) => i), [...result.ids.keys()]);
      // The first token is on the host after one wait, while the rest is still being drawn.
      assert.equal(seen[0][1], 1);
      assert.equal(seen.at(-1)![1], reads);
    }
  });
});

Deno.test("generation: a non-finite logit stops it, after the tokens drawn before", async () => {
  const cfg: LanguageConfig = {
    family: "language",
    attention: "tssa",
    block_size: 16,
    vocab_size: 11,
    n_layer: 1,
    n_head: 1,
    n_embd: 8,
    bias: true,
    dropout: 0,
    norm_eps: 1e-5,
  };
  const tensors = randomStateDict(cfg, 3);
  // NaN in the position embedding of position 3: the logits there are NaN.
  const wpe = tensors.get("transformer.wpe.weight")!;
  const nan = new Float32Array(wpe.data.slice().buffer);
  nan[3 * 8 + 2] = NaN;
  tensors.set("transformer.wpe.weight", { ...wpe, data: new Uint8Array(nan.buffer) });
  await withGpu(async (gpu) => {
    const params = ParamStore.upload(gpu, cfg, tensors);
    try {
      const opts = { temperature: 1, seed: 4, readEvery: 2 };
      const good = await generate(gpu, params, [1], { ...opts, tokens: 3 });
      assert.equal(good.ids.length, 3);
      const streamed: number[] = [];
      const err = await generate(gpu, params, [1], {
        ...opts,
        tokens: 8,
        onToken: (id) => void streamed.push(id),
      }).then(() => null, (e) => e);
      assert.ok(err instanceof RangeError, String(err));
      assert.match(err.message, /^The model produced a non-finite logit \(NaN\) for token 0$/);
      // Tokens 0–2 come from positions 0–2; token 3 would come from position 3.
      assert.deepEqual(streamed, good.ids);
    } finally {
      params.destroy();
    }
  });
});
