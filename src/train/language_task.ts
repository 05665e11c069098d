/**
 * The language side of a training run ({@linkcode TrainTask}): random
 * windows of the training split, the training pass of `language_backward.ts`,
 * validation loss on the first `eval_tokens` tokens of the validation split,
 * and a text sample.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { LanguageConfig } from "../model/config.ts";
import type { NamedTensors } from "../model/_params.ts";
import { destroyLanguageParams, languageLoss, uploadLanguageParams } from "../model/language.ts";
import { evalBatches } from "../data/text.ts";
import { generate } from "../model/generate.ts";
import { BatchSampler } from "./data.ts";
import type { SamplerState, TextDataset } from "./data.ts";
import { languageForwardBackward } from "./language_backward.ts";
import { namedLanguageTensors, zerosLikeLanguage } from "./params.ts";
import type { TrainSettings } from "./presets.ts";
import { optimizedParams } from "./task.ts";
import type { Moments, TrainTask } from "./task.ts";

/** Upload a language model and build its training task. */
export function createLanguageTask(
  gpu: Gpu,
  cfg: LanguageConfig,
  s: TrainSettings,
  data: TextDataset,
  init: { tensors: NamedTensors; moments?: Moments; sampler: SamplerState },
): TrainTask {
  const params = uploadLanguageParams(gpu, cfg, init.tensors);
  const grads = zerosLikeLanguage(gpu, params);
  const owned: Tensor[] = [];
  try {
    const optimized = optimizedParams(
      gpu,
      namedLanguageTensors(params),
      new Map(namedLanguageTensors(grads)),
      init.moments,
      owned,
    );
    const sampler = new BatchSampler(data.train, s.batch_size, s.block_size, init.sampler);
    return {
      config: cfg,
      optimized,
      unit: "tokens",
      itemsPerMicro: s.batch_size * s.block_size,
      trainItems: data.train.length,
      valItems: data.val.length,
      vocab: data.vocab,
      tokenizer: data.tokenizer,
      micro: () => languageForwardBackward(gpu, params, grads, sampler.next()),
      sampler: () => sampler.state,
      async evaluate() {
        let sum = 0;
        let count = 0;
        for (const b of evalBatches(data.val, s.block_size, s.batch_size, s.eval_tokens)) {
          const losses = await languageLoss(gpu, params, b.x, b.y, b.B, b.T);
          for (const l of losses) sum += l;
          count += losses.length;
        }
        return { loss: sum / count, accuracy: null };
      },
      extraTensors: () => ({}),
      async sample(tokens, seed) {
        const newline = data.vocab?.indexOf("\n") ?? -1;
        const prompt = data.vocab ? [Math.max(newline, 0)] : Array.from(data.encode("\n"));
        const r = await generate(gpu, params, prompt, {
          tokens,
          temperature: 0.8,
          topK: 200,
          seed,
          atBlockSize: "slide",
        });
        return data.decode(r.ids);
      },
      destroy() {
        for (const t of owned) t.destroy();
        destroyLanguageParams(params);
        destroyLanguageParams(grads);
      },
    };
  } catch (err) {
    for (const t of owned) t.destroy();
    destroyLanguageParams(params);
    destroyLanguageParams(grads);
    throw err;
  }
}
