/**
 * The language side of a training run ({@linkcode TrainTask}): random
 * windows of the training split, the training pass of
 * `model/language/model.ts`, validation loss on the first `eval_tokens`
 * tokens of the validation split (on the trained parameters where they are,
 * every batch's losses collected on the GPU and read back once),
 * and a text sample.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import type { LanguageConfig } from "../model/config.ts";
import type { NamedTensors } from "../model/params.ts";
import { languageForwardBackward, recordLanguageLosses } from "../model/language/model.ts";
import { collectBatches } from "../gpu/collect.ts";
import { evalBatches } from "../data/text.ts";
import { generate } from "../model/generate.ts";
import { BatchSampler } from "./data.ts";
import type { SamplerState, TextDataset } from "./data.ts";
import type { TrainSettings } from "./presets.ts";
import { createTaskState } from "./task.ts";
import type { Moments, TrainTask } from "./task.ts";

/** Upload a language model and build its training task. */
export function createLanguageTask(
  gpu: Gpu,
  cfg: LanguageConfig,
  s: TrainSettings,
  data: TextDataset,
  init: { tensors: NamedTensors; moments?: Moments; sampler: SamplerState },
): TrainTask {
  const state = createTaskState(gpu, cfg, init);
  const { store, grads, arena, evalArena } = state;
  try {
    const sampler = new BatchSampler(data.train, s.batch_size, s.block_size, init.sampler);
    return {
      config: cfg,
      optimized: state.optimized,
      flat: state.flat,
      unit: "tokens",
      itemsPerMicro: s.batch_size * s.block_size,
      trainItems: data.train.length,
      valItems: data.val.length,
      vocab: data.vocab,
      tokenizer: data.tokenizer,
      arena,
      micro: () => languageForwardBackward(gpu, store, grads, sampler.next()),
      sampler: () => sampler.state,
      async evaluate() {
        // Every batch's losses collected on the GPU, read back once.
        let sum = 0;
        let count = 0;
        await collectBatches(
          gpu,
          evalBatches(data.val, s.block_size, s.batch_size, s.eval_tokens),
          {
            arena: evalArena,
            record: (b) => recordLanguageLosses(gpu, store, b),
            consume: (_, losses) => {
              for (const l of losses) sum += l;
              count += losses.length;
            },
          },
        );
        return { loss: sum / count, accuracy: null };
      },
      extraTensors: () => ({}),
      async sample(tokens, seed) {
        const newline = data.vocab?.indexOf("\n") ?? -1;
        const prompt = data.vocab ? [Math.max(newline, 0)] : Array.from(data.encode("\n"));
        const r = await generate(gpu, store, prompt, {
          tokens,
          temperature: 0.8,
          topK: 200,
          seed,
          atBlockSize: "slide",
        });
        return data.decode(r.ids);
      },
      destroy: state.destroy,
    };
  } catch (err) {
    state.destroy();
    throw err;
  }
}
