/**
 * Score a vision model on consecutive MNIST digits: the one evaluation loop
 * that `tost evaluate`, the validation of a training run and `tost bench
 * --eval` share. Batches are recorded back to back and their logits
 * collected on the GPU (`collectBatches`), so the host waits a few times per
 * call, not once per batch.
 *
 * @module
 */

import type { Arena } from "../../gpu/arena.ts";
import { collectBatches } from "../../gpu/collect.ts";
import type { Gpu } from "../../gpu/runtime.ts";
import { mnistBatch, type MnistSet } from "../../data/mnist.ts";
import type { ParamStore } from "../params.ts";
import { encodeVision } from "./model.ts";

/** What {@linkcode scoreMnist} counts. */
export interface MnistScore {
  /** Images scored. */
  images: number;
  /** Top-1 predictions equal to the label. */
  correct: number;
  /** Summed cross-entropy (natural log) over the images. */
  loss: number;
}

/** Options of {@linkcode scoreMnist}. */
export interface ScoreMnistOptions {
  /** First digit (default 0). */
  start?: number;
  /** Digits to score, from `start`. */
  count: number;
  batchSize: number;
  /** Input channels of the model (the grey digit is repeated). */
  inChans: number;
  numClasses: number;
  /** Each batch's temporaries (reset before every batch). */
  arena: Arena;
  /** Batches per host read (default: as few reads as the collection buffer allows). */
  readEvery?: number;
  /** After each read: the digits scored so far. */
  onRead?: (done: number) => void;
}

/**
 * Run the model on digits `[start, start + count)` of `set` in batches and
 * count correct top-1 predictions and the summed cross-entropy.
 *
 * @throws {RangeError} for a range outside the set
 */
export async function scoreMnist(
  gpu: Gpu,
  store: ParamStore,
  set: MnistSet,
  o: ScoreMnistOptions,
): Promise<MnistScore> {
  const start = o.start ?? 0;
  if (!(Number.isInteger(o.count) && o.count >= 0 && start >= 0 && start + o.count <= set.count)) {
    throw new RangeError(`MNIST digits ${start}..${start + o.count} outside 0..${set.count}`);
  }
  const batches: { at: number; B: number }[] = [];
  for (let at = start; at < start + o.count; at += o.batchSize) {
    batches.push({ at, B: Math.min(o.batchSize, start + o.count - at) });
  }
  const score: MnistScore = { images: 0, correct: 0, loss: 0 };
  await collectBatches(gpu, batches, {
    arena: o.arena,
    readEvery: o.readEvery,
    record: ({ at, B }) => {
      const shape = [B, o.inChans, set.rows, set.cols];
      const images = gpu.upload(mnistBatch(set, at, B, o.inChans), shape, "mnist.images");
      return encodeVision(gpu, store, images);
    },
    consume: ({ at, B }, logits) => {
      const r = scoreLogits(logits, set.labels.subarray(at, at + B), o.numClasses);
      score.images += B;
      score.loss += r.loss;
      score.correct += r.correct;
    },
    onRead: o.onRead && (() => o.onRead!(score.images)),
  });
  return score;
}

/**
 * Summed cross-entropy and correct top-1 predictions of logits `[B, K]`
 * (ties go to the lower class, as `argmax` does).
 */
export function scoreLogits(
  logits: Float32Array,
  labels: ArrayLike<number>,
  K: number,
): { loss: number; correct: number } {
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
