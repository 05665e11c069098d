/**
 * The vision side of a training run ({@linkcode TrainTask}): ToST
 * (`tost_cab`) or its ViT twin on MNIST (grey channel fed to the three input
 * channels, as the reference stem expects), the training pass of
 * `vision_backward.ts` (BatchNorm in training mode, running statistics
 * updated with PyTorch's momentum), and evaluation in eval mode on the first
 * `eval_tokens` test digits (loss and top-1 accuracy).

 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { VisionConfig } from "../model/config.ts";
import type { NamedTensors } from "../model/_params.ts";
import type { StTensor } from "../io/safetensors.ts";
import { paramSpecs } from "../model/names.ts";
import { destroyVisionParams, uploadVisionParams, visionForward } from "../model/vision.ts";
import { loadMnistTest, mnistBatch } from "../data/mnist.ts";
import {
  createVisionGrads,
  uploadVisionTrainParams,
  visionForwardBackward,
  visionTrainableNames,
} from "./vision_backward.ts";
import { ImageSampler, loadMnistTrain } from "./mnist.ts";
import type { SamplerState } from "./data.ts";
import type { TrainSettings } from "./presets.ts";
import { optimizedParams } from "./task.ts";
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
  const params = uploadVisionTrainParams(gpu, cfg, init.tensors);
  const grads = createVisionGrads(gpu, cfg);
  const owned: Tensor[] = [];
  const destroyAll = () => {
    for (const t of owned) t.destroy();
    for (const t of params.values()) t.destroy();
    for (const t of grads.values()) t.destroy();
  };
  try {
    const trainable = visionTrainableNames(cfg);
    const optimized = optimizedParams(
      gpu,
      trainable.map((n) => [n, params.get(n)!]),
      grads,
      init.moments,
      owned,
    );
    const trainableSet = new Set(trainable);
    const running = [...params].filter(([n]) => !trainableSet.has(n));
    const counters = paramSpecs(cfg).filter((p) => p.kind === "int").map((p) => p.name);
    let batchesTracked = init.batchesTracked;
    const sampler = new ImageSampler(train, s.batch_size, cfg.in_chans, init.sampler);
    const hostState = async (): Promise<Map<string, StTensor>> => {
      const entries = [...params];
      const values = await Promise.all(entries.map(([, t]) => gpu.read(t)));
      const out = new Map<string, StTensor>();
      entries.forEach(([n, t], i) => {
        const v = values[i] as Float32Array;
        out.set(n, { dtype: "F32", shape: [...t.shape], data: new Uint8Array(v.buffer) });
      });
      for (const c of counters) out.set(c, i64(batchesTracked));
      return out;
    };
    return {
      config: cfg,
      optimized,
      unit: "images",
      itemsPerMicro: s.batch_size,
      trainItems: train.count,
      valItems: test.count,
      vocab: null,
      tokenizer: null,
      async micro() {
        const b = sampler.next();
        const images = gpu.upload(b.images, b.shape, "train.images");
        try {
          const loss = await visionForwardBackward(gpu, cfg, {
            params,
            grads,
            images,
            labels: b.labels,
          });
          batchesTracked++;
          return loss;
        } finally {
          images.destroy();
        }
      },
      sampler: () => sampler.state,
      async evaluate() {
        const eval_ = uploadVisionParams(gpu, cfg, await hostState());
        try {
          const total = Math.min(test.count, s.eval_tokens);
          let loss = 0;
          let correct = 0;
          const K = cfg.num_classes;
          for (let at = 0; at < total; at += s.batch_size) {
            const B = Math.min(s.batch_size, total - at);
            const { logits } = await visionForward(
              gpu,
              eval_,
              mnistBatch(test, at, B, cfg.in_chans),
              [B, cfg.in_chans, test.rows, test.cols],
            );
            for (let b = 0; b < B; b++) {
              const row = logits.subarray(b * K, (b + 1) * K);
              const label = test.labels[at + b];
              let best = 0;
              let max = -Infinity;
              for (let k = 0; k < K; k++) {
                if (row[k] > row[best]) best = k;
                max = Math.max(max, row[k]);
              }
              let sum = 0;
              for (let k = 0; k < K; k++) sum += Math.exp(row[k] - max);
              loss += Math.log(sum) + max - row[label];
              if (best === label) correct++;
            }
          }
          return { loss: loss / total, accuracy: correct / total };
        } finally {
          destroyVisionParams(eval_);
        }
      },
      extraTensors: () => ({
        gpu: running,
        host: counters.map((c): [string, StTensor] => [c, i64(batchesTracked)]),
      }),
      sample: () => Promise.resolve(null),
      destroy: destroyAll,
    };
  } catch (err) {
    destroyAll();
    throw err;
  }
}
