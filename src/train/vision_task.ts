/**
 * The vision side of a training run ({@linkcode TrainTask}): ToST
 * (`tost_cab`) or its ViT twin on MNIST (grey channel fed to the three input
 * channels, as the reference stem expects), the training pass of
 * `model/vision/model.ts` (BatchNorm in training mode, running statistics
 * updated with PyTorch's momentum), and evaluation in eval mode on the first
 * `eval_tokens` test digits (loss and top-1 accuracy), run on the training
 * parameters where they are: nothing is read back but the logits, every
 * batch's collected on the GPU and read once.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import type { VisionConfig } from "../model/config.ts";
import { trainedNames } from "../model/params.ts";
import type { NamedTensors } from "../model/params.ts";
import type { StTensor } from "../io/safetensors.ts";
import { paramSpecs } from "../model/names.ts";
import { visionForwardBackward } from "../model/vision/model.ts";
import { scoreMnist } from "../model/vision/score_mnist.ts";
import { loadMnistTest } from "../data/mnist.ts";
import { ImageSampler, loadMnistTrain } from "./mnist.ts";
import type { SamplerState } from "./data.ts";
import type { TrainSettings } from "./presets.ts";
import { createTaskState } from "./task.ts";
import type { Moments, TrainTask } from "./task.ts";

function i64(value: number): StTensor {
  return {
    dtype: "I64",
    shape: [],
    data: new Uint8Array(new BigInt64Array([BigInt(value)]).buffer),
  };
}

/** Upload a vision model and build its training task on MNIST. */
export async function createVisionTask(
  gpu: Gpu,
  cfg: VisionConfig,
  s: TrainSettings,
  init: { tensors: NamedTensors; moments?: Moments; sampler: SamplerState; batchesTracked: number },
): Promise<TrainTask> {
  const [train, test] = await Promise.all([loadMnistTrain(), loadMnistTest()]);
  const state = createTaskState(gpu, cfg, init);
  const { store, grads, arena, evalArena } = state;
  try {
    const trainedSet = new Set(trainedNames(cfg));
    const running = store.entries().filter(([n]) => !trainedSet.has(n));
    const counters = paramSpecs(cfg).filter((p) => p.kind === "int").map((p) => p.name);
    let batchesTracked = init.batchesTracked;
    const sampler = new ImageSampler(train, s.batch_size, cfg.in_chans, init.sampler);
    return {
      config: cfg,
      optimized: state.optimized,
      flat: state.flat,
      unit: "images",
      itemsPerMicro: s.batch_size,
      trainItems: train.count,
      valItems: test.count,
      vocab: null,
      tokenizer: null,
      arena,
      async micro() {
        const b = sampler.next();
        const images = gpu.upload(b.images, b.shape, "train.images");
        const loss = await visionForwardBackward(gpu, store, grads, images, b.labels);
        batchesTracked++;
        return loss;
      },
      sampler: () => sampler.state,
      async evaluate() {
        // Every batch's logits collected on the GPU, read back once.
        const total = Math.min(test.count, s.eval_tokens);
        const r = await scoreMnist(gpu, store, test, {
          count: total,
          batchSize: s.batch_size,
          inChans: cfg.in_chans,
          numClasses: cfg.num_classes,
          arena: evalArena,
        });
        const { loss, correct } = r;
        return { loss: loss / total, accuracy: correct / total };
      },
      extraTensors: () => ({
        gpu: running,
        host: counters.map((c): [string, StTensor] => [c, i64(batchesTracked)]),
      }),
      sample: () => Promise.resolve(null),
      destroy: state.destroy,
    };
  } catch (err) {
    state.destroy();
    throw err;
  }
}
