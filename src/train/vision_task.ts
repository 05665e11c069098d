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
import { encodeVision, visionForwardBackward } from "../model/vision/model.ts";
import { collectBatches } from "../gpu/collect.ts";
import { loadMnistTest, mnistBatch } from "../data/mnist.ts";
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

/** Summed cross-entropy and correct top-1 predictions of logits `[B, K]`. */
function scoreLogits(logits: Float32Array, labels: ArrayLike<number>, K: number) {
  let loss = 0;
  let correct = 0;
  for (let b = 0; b < labels.length; b++) {
    const row = logits.subarray(b * K, (b + 1) * K);
    let best = 0;
    let max = -Infinity;
    for (let k = 0; k < K; k++) {
      if (row[k] > row[best]) best = k;
      max = Math.max(max, row[k]);
    }
    let sum = 0;
    for (let k = 0; k < K; k++) sum += Math.exp(row[k] - max);
    loss += Math.log(sum) + max - row[labels[b]];
    if (best === labels[b]) correct++;
  }
  return { loss, correct };
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
        const batches: { at: number; B: number }[] = [];
        for (let at = 0; at < total; at += s.batch_size) {
          batches.push({ at, B: Math.min(s.batch_size, total - at) });
        }
        let loss = 0;
        let correct = 0;
        await collectBatches(gpu, batches, {
          arena: evalArena,
          record: ({ at, B }) => {
            const shape = [B, cfg.in_chans, test.rows, test.cols];
            const images = gpu.upload(mnistBatch(test, at, B, cfg.in_chans), shape, "eval.images");
            return encodeVision(gpu, store, images);
          },
          consume: ({ at, B }, logits) => {
            const r = scoreLogits(logits, test.labels.subarray(at, at + B), cfg.num_classes);
            loss += r.loss;
            correct += r.correct;
          },
        });
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
