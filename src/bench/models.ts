/**
 * `tost bench --model`: whole ToST-S against ViT-S (vision, fresh random
 * weights) at growing image sizes — the paper's speed and memory figure on
 * any device. Both run through tost's own vision model; ViT's attention is
 * the standard kernel while its N×N scores stay small and the flash kernel
 * beyond (as `tost evaluate` runs it).
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { Arena } from "../gpu/arena.ts";
import type { VisionConfig } from "../model/config.ts";
import { initialParameters } from "../model/init.ts";
import { ParamStore } from "../model/params.ts";
import { encodeVision } from "../model/vision/model.ts";
import { median } from "./stats.ts";

/** The two models compared, with the reference's `*_small_12_p16` sizes. */
export const MODEL_NAMES = ["tost-s", "vit-s"] as const;

/** One of {@linkcode MODEL_NAMES}. */
export type ModelName = typeof MODEL_NAMES[number];

/** The config of a compared model. */
export function benchModelConfig(name: ModelName): VisionConfig {
  return {
    family: "vision",
    attention: name === "tost-s" ? "tssa" : "softmax",
    img_size: 224,
    patch_size: 16,
    in_chans: 3,
    num_classes: 1000,
    embed_dim: 384,
    depth: 12,
    num_heads: 8,
    mlp_ratio: 4,
    qkv_bias: true,
    eta: 1,
    tokens_norm: true,
    cls_attn_layers: 2,
    pos_hidden_dim: 32,
    norm_eps: 1e-6,
  };
}

/** One whole-model measurement. */
export interface ModelRecord {
  op: ModelName;
  /** Image side in pixels. */
  image: number;
  /** Patch tokens per image. */
  n: number;
  pass: "fwd";
  batch: number;
  gpu_ms: number | null;
  wall_ms: number | null;
  /** Peak bytes allocated during the forward, parameters excluded. */
  peak_bytes: number | null;
  repeats: number;
  status: "ok" | "failed";
  error?: string;
  device: string;
  backend: string;
  software: boolean;
}

/** Options of {@linkcode runModelBench}. */
export interface ModelBenchOptions {
  models: readonly ModelName[];
  images: readonly number[];
  batch: number;
  warmup: number;
  repeats: number;
  onProgress?: (r: ModelRecord) => void;
}

/**
 * Time both models at every image size. Once a model fails at a size
 * (memory, binding limits) the larger sizes are recorded as failed too,
 * without trying.
 */
export async function runModelBench(gpu: Gpu, o: ModelBenchOptions): Promise<ModelRecord[]> {
  const records: ModelRecord[] = [];
  for (const name of o.models) {
    const cfg = benchModelConfig(name);
    const live0 = gpu.memory().liveBytes;
    const params = ParamStore.upload(gpu, cfg, initialParameters(cfg, 0));
    const paramBytes = gpu.memory().liveBytes - live0;
    let failedAt: string | null = null;
    try {
      for (const side of o.images) {
        const patches = Math.ceil(side / cfg.patch_size) ** 2;
        const rec: ModelRecord = {
          op: name,
          image: side,
          n: patches,
          pass: "fwd",
          batch: o.batch,
          gpu_ms: null,
          wall_ms: null,
          peak_bytes: null,
          repeats: o.repeats,
          status: "ok",
          device: gpu.info.name,
          backend: gpu.info.backend,
          software: gpu.info.software,
        };
        if (failedAt) {
          rec.status = "failed";
          rec.error = `not tried: failed at a smaller size (${failedAt})`;
        } else {
          try {
            await measure(gpu, params, side, o, rec, live0 + paramBytes);
          } catch (err) {
            rec.status = "failed";
            rec.error = err instanceof Error ? err.message : String(err);
            failedAt = `${side}px`;
            await gpu.timings().catch(() => []);
          }
        }
        records.push(rec);
        o.onProgress?.(rec);
      }
    } finally {
      params.destroy();
    }
  }
  return records;
}

async function measure(
  gpu: Gpu,
  params: ParamStore,
  side: number,
  o: ModelBenchOptions,
  rec: ModelRecord,
  baseline: number,
): Promise<void> {
  const shape = [o.batch, 3, side, side];
  const images = gpu.empty(shape, "f32", "bench.images");
  // One arena for every run: each repeat takes the same buffers again.
  const arena = new Arena(gpu, "bench");
  try {
    const values = new Float32Array(images.numel);
    for (let i = 0; i < values.length; i++) values[i] = Math.sin(i * 0.7);
    gpu.write(images, values);
    gpu.resetPeak();
    const run = async () => {
      arena.reset();
      await arena.use(() => encodeVision(gpu, params, images));
    };
    for (let i = 0; i < o.warmup; i++) await gpu.scoped(run);
    const walls: number[] = [];
    for (let i = 0; i < o.repeats; i++) {
      const t0 = performance.now();
      await gpu.scoped(() => gpu.timed(`${rec.op}@${side}#${i}`, run));
      walls.push(performance.now() - t0);
    }
    const timings = await gpu.timings();
    rec.wall_ms = median(walls);
    rec.gpu_ms = timings.length ? median(timings.map((t) => t.ms)) : null;
    rec.peak_bytes = gpu.memory().peakBytes - baseline;
  } finally {
    arena.destroy();
    images.destroy();
  }
}
