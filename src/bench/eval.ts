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
import { loadMnistTest } from "../data/mnist.ts";
import { destroyModel, readModelFile, uploadModel } from "../model/load.ts";
import { scoreMnist } from "../model/vision/score_mnist.ts";
import { Arena } from "../gpu/arena.ts";

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
  /** Wall time per batch: the timed batches, recorded back to back as `tost evaluate` does, over their number. */
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
  /** Timed batches, recorded back to back (their mean time is reported). */
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
    // What `tost evaluate` does (the same scorer): batches recorded back to
    // back, logits collected on the GPU and read back once per call, so the
    // time per batch is the timed calls' wall time over their batches.
    const arena = new Arena(gpu, "bench.eval");
    const fit = Math.floor(set.count / o.batch); // batches of distinct digits per call
    const run = async (batches: number) => {
      let correct = 0;
      for (let done = 0; done < batches; done += fit) {
        const n = Math.min(fit, batches - done);
        correct += (await scoreMnist(gpu, model.params, set, {
          count: n * o.batch,
          batchSize: o.batch,
          inChans: cfg.in_chans,
          numClasses: cfg.num_classes,
          arena,
        })).correct;
      }
      return correct;
    };
    try {
      await run(o.warmup);
      await gpu.sync();
      o.onTimed?.();
      const t0 = performance.now();
      const correct = await run(o.repeats);
      record.batch_ms = record.wall_ms = (performance.now() - t0) / o.repeats;
      record.images_per_s = (o.batch * 1000) / record.batch_ms;
      record.accuracy = correct / (o.batch * o.repeats);
    } finally {
      arena.destroy();
    }
  } catch (err) {
    record.status = "failed";
    record.error = err instanceof Error ? err.message : String(err);
  } finally {
    destroyModel(model);
  }
  return record;
}
