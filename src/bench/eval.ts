/**
 * `tost bench --eval <model>`: evaluation throughput of a vision model on
 * MNIST test digits, end to end per batch (upload, forward, logits read back)
 * as `tost evaluate --data mnist` runs it, giving the `op: "eval"` records
 * the PyTorch peer (`bench/peer/peer.py --eval`) writes for the same model
 * and batch.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { loadMnistTest, mnistBatch } from "../data/mnist.ts";
import { destroyModel, readModelFile, uploadModel } from "../model/load.ts";
import { visionForward } from "../model/vision/model.ts";
import { median } from "./stats.ts";

/** One evaluation-throughput measurement, as `tost bench --eval --json` prints it. */
export interface EvalRecord {
  op: "eval";
  /** `vision-tost` or `vit`. */
  model: "vision-tost" | "vit";
  /** The model file's name (not part of the pairing). */
  file: string;
  embed_dim: number;
  depth: number;
  num_heads: number;
  patch_size: number;
  /** Image side in pixels (28: MNIST). */
  image: number;
  batch_size: number;
  /** Median wall time of one batch. */
  batch_ms: number | null;
  wall_ms: number | null;
  gpu_ms: null;
  images_per_s: number | null;
  /** Top-1 accuracy over the timed batches (a sanity check of the model and data). */
  accuracy: number | null;
  repeats: number;
  status: "ok" | "failed";
  error?: string;
  device: string;
  backend: string;
  software: boolean;
}

/** Options of {@linkcode runEvalBench}. */
export interface EvalBenchOptions {
  batch: number;
  warmup: number;
  /** Timed batches (the median is reported). */
  repeats: number;
  /** Top-level key of a PyTorch checkpoint's state_dict. */
  key?: string;
  /** Called once the warm-up passes are done, before the timed ones (e.g. to start a kernel profile). */
  onTimed?: () => void;
}

/**
 * Time `repeats` batches of consecutive MNIST test digits after `warmup`.
 *
 * @throws {TypeError} when the file is not a vision model; `Deno.errors.NotFound` without a file
 */
export async function runEvalBench(
  gpu: Gpu,
  path: string,
  o: EvalBenchOptions,
): Promise<EvalRecord> {
  const file = await readModelFile(path, { key: o.key });
  const cfg = file.config;
  if (cfg.family !== "vision") {
    throw new TypeError(`"${path}" is a language model; --eval times vision models on MNIST`);
  }
  const set = await loadMnistTest();
  if (o.batch > set.count) {
    throw new RangeError(`--batch ${o.batch} is larger than the ${set.count} MNIST test digits`);
  }
  const record: EvalRecord = {
    op: "eval",
    model: cfg.attention === "tssa" ? "vision-tost" : "vit",
    file: path.split(/[\\/]/).pop() ?? path,
    embed_dim: cfg.embed_dim,
    depth: cfg.depth,
    num_heads: cfg.num_heads,
    patch_size: cfg.patch_size,
    image: set.rows,
    batch_size: o.batch,
    batch_ms: null,
    wall_ms: null,
    gpu_ms: null,
    images_per_s: null,
    accuracy: null,
    repeats: o.repeats,
    status: "ok",
    device: gpu.info.name,
    backend: gpu.info.backend,
    software: gpu.info.software,
  };
  const model = uploadModel(gpu, file);
  if (model.family !== "vision") throw new TypeError("unreachable: not a vision model");
  try {
    const shape = [o.batch, cfg.in_chans, set.rows, set.cols] as const;
    let correct = 0;
    let batchNo = 0;
    const once = async (): Promise<number> => {
      const at = (batchNo++ * o.batch) % (set.count - o.batch + 1);
      const images = mnistBatch(set, at, o.batch, cfg.in_chans);
      const t0 = performance.now();
      const { logits } = await visionForward(gpu, model.params, images, shape);
      const ms = performance.now() - t0;
      const K = cfg.num_classes;
      for (let b = 0; b < o.batch; b++) {
        let best = 0;
        for (let k = 1; k < K; k++) if (logits[b * K + k] > logits[b * K + best]) best = k;
        if (best === set.labels[at + b]) correct++;
      }
      return ms;
    };
    for (let i = 0; i < o.warmup; i++) await once();
    await gpu.sync();
    o.onTimed?.();
    correct = 0;
    const walls: number[] = [];
    for (let i = 0; i < o.repeats; i++) walls.push(await once());
    record.batch_ms = record.wall_ms = median(walls);
    record.images_per_s = (o.batch * 1000) / record.batch_ms;
    record.accuracy = correct / (o.batch * o.repeats);
  } catch (err) {
    record.status = "failed";
    record.error = err instanceof Error ? err.message : String(err);
  } finally {
    destroyModel(model);
  }
  return record;
}
