/**
 * `tost bench --train`: steady-state training throughput of a preset's (or a
 * config's) model through the training code itself — a fresh
 * {@linkcode TrainTask} (`createLanguageTask` / `createVisionTask`) and a
 * {@linkcode StepPipeline}, as the training loop runs them (steps recorded
 * back to back, their statistics read once per `log_interval` steps) —
 * giving the `op: "train"` records the PyTorch peer
 * (`bench/peer/peer.py --train`) writes for the same model and batch.
 *
 * The timed region starts on an idle GPU and ends with the read of the last
 * step's statistics, which returns only once every step's work is done, so
 * no work is left outside it. The learning rate stays at the peak
 * `learning_rate` (the schedule does not change the cost of a step); no
 * evaluation, checkpoint or log is written.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { initialParameters } from "../model/init.ts";
import { loadTextDataset } from "../train/data.ts";
import type { TextDataset } from "../train/data.ts";
import { createLanguageTask } from "../train/language_task.ts";
import { isVision } from "../train/loop.ts";
import { modelConfig, visionModelConfig } from "../train/presets.ts";
import type { TrainSettings } from "../train/presets.ts";
import { NonFiniteError, StepPipeline } from "../train/step.ts";
import type { StepStats } from "../train/step.ts";
import type { TrainTask } from "../train/task.ts";
import { createVisionTask } from "../train/vision_task.ts";

/** One training-throughput measurement, as `tost bench --train --json` prints it. */
export interface TrainRecord {
  op: "train";
  preset: string;
  /** `causal-tost`, `gpt` (language), `vision-tost` or `vit`. */
  model: "causal-tost" | "gpt" | "vision-tost" | "vit";
  attention: "tssa" | "softmax";
  n_layer: number;
  n_head: number;
  n_embd: number;
  /** Context length (language); image side (vision). */
  block_size: number;
  batch_size: number;
  gradient_accumulation_steps: number;
  /** Vocabulary of the language model; null for vision. */
  vocab_size: number | null;
  unit: "tokens" | "images";
  /** Timed optimizer steps, after `warmup` untimed ones. */
  steps: number;
  warmup: number;
  /** Mean wall time of one optimizer step over the timed steps. */
  step_ms: number | null;
  /** Same as `step_ms` (every record kind has a `wall_ms`). */
  wall_ms: number | null;
  gpu_ms: null;
  /** Training tokens per second (language). */
  tokens_per_s?: number | null;
  /** Training images per second (vision). */
  images_per_s?: number | null;
  /** Loss of the last step (a sanity check: about ln(vocabulary) at the start). */
  loss: number | null;
  /** Blocking host waits per timed step (reads of the step statistics: 1 / log_interval). */
  waits_per_step: number | null;
  /**
   * Host time to record one step (its dispatches and uploads), not counting
   * the time blocked in `queue.submit` behind the previous step's work; mean
   * over the timed steps.
   */
  record_ms: number | null;
  /** Share of the timed steps' dispatches whose bind group came from the cache. */
  bind_group_hit_rate: number | null;
  optimizer: {
    learning_rate: number;
    weight_decay: number;
    beta1: number;
    beta2: number;
    eps: number;
    grad_clip: number;
  };
  status: "ok" | "failed";
  error?: string;
  device: string;
  backend: string;
  software: boolean;
}

/** Options of {@linkcode runTrainBench}. */
export interface TrainBenchOptions {
  steps: number;
  warmup: number;
  /** The text data already loaded (tests); must match the settings' data and tokenizer. */
  dataset?: TextDataset;
  /** Called once the warm-up steps are done, before the timed ones (e.g. to start a kernel profile). */
  onTimed?: () => void;
}

async function freshTask(gpu: Gpu, s: TrainSettings, dataset?: TextDataset): Promise<TrainTask> {
  const sampler = { seed: s.seed, position: 0 };
  if (isVision(s)) {
    const cfg = visionModelConfig(s);
    const tensors = initialParameters(cfg, s.seed);
    return await createVisionTask(gpu, cfg, s, { tensors, sampler, batchesTracked: 0 });
  }
  const data = dataset ?? await loadTextDataset(s.data, s.tokenizer);
  const cfg = modelConfig(s, data.vocabSize);
  return createLanguageTask(gpu, cfg, s, data, {
    tensors: initialParameters(cfg, s.seed),
    sampler,
  });
}

/**
 * Build a fresh model for the settings, run `warmup` optimizer steps, then
 * time `steps` more, pipelined as the training loop runs them, from an idle
 * GPU to the read of the last step's statistics (so all their work is
 * inside). A failure (non-finite loss, out of memory) gives a record with
 * `status: "failed"`.
 */
export async function runTrainBench(
  gpu: Gpu,
  s: TrainSettings,
  options: TrainBenchOptions,
): Promise<TrainRecord> {
  const vision = isVision(s);
  const record: TrainRecord = {
    op: "train",
    preset: s.preset,
    model: vision
      ? (s.attention === "tssa" ? "vision-tost" : "vit")
      : (s.attention === "tssa" ? "causal-tost" : "gpt"),
    attention: s.attention,
    n_layer: s.n_layer,
    n_head: s.n_head,
    n_embd: s.n_embd,
    block_size: s.block_size,
    batch_size: s.batch_size,
    gradient_accumulation_steps: s.gradient_accumulation_steps,
    vocab_size: null,
    unit: vision ? "images" : "tokens",
    steps: options.steps,
    warmup: options.warmup,
    step_ms: null,
    wall_ms: null,
    gpu_ms: null,
    [vision ? "images_per_s" : "tokens_per_s"]: null,
    loss: null,
    waits_per_step: null,
    record_ms: null,
    bind_group_hit_rate: null,
    optimizer: {
      learning_rate: s.learning_rate,
      weight_decay: s.weight_decay,
      beta1: s.beta1,
      beta2: s.beta2,
      eps: s.eps,
      grad_clip: s.grad_clip,
    },
    status: "ok",
    device: gpu.info.name,
    backend: gpu.info.backend,
    software: gpu.info.software,
  };
  const task = await freshTask(gpu, s, options.dataset);
  if (task.config.family === "language") record.vocab_size = task.config.vocab_size;
  const interval = Math.max(1, s.log_interval);
  const steps = new StepPipeline(gpu, {
    flat: task.flat,
    settings: s,
    capacity: interval,
  });
  try {
    let step = 0;
    let recordMs = 0;
    let inFlight: Promise<StepStats[]> | null = null;
    const take = async (pending: Promise<StepStats[]>) => {
      for (const st of await pending) {
        if (!st.finite) throw new NonFiniteError(st);
        record.loss = st.loss;
      }
    };
    // As the training loop runs: record a step, then take the read in flight
    // (issued after the step before), and issue a read every `interval` steps.
    const run = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        const blocked = gpu.counters().submitMs;
        await steps.record({
          lr: s.learning_rate,
          step: ++step,
          arena: task.arena,
          micro: () => task.micro(),
        });
        recordMs += performance.now() - t - (gpu.counters().submitMs - blocked);
        if (inFlight) {
          await take(inFlight);
          inFlight = null;
        }
        if ((i + 1) % interval === 0) inFlight = steps.read();
      }
      if (inFlight) await take(inFlight);
      inFlight = null;
      // The last step's statistics: done only once all of its work is.
      await take(steps.read());
    };
    await run(options.warmup);
    await gpu.sync();
    options.onTimed?.();
    const before = gpu.counters();
    recordMs = 0;
    const t0 = performance.now();
    await run(options.steps);
    const ms = (performance.now() - t0) / options.steps;
    const after = gpu.counters();
    const items = task.itemsPerMicro * s.gradient_accumulation_steps;
    record.step_ms = ms;
    record.wall_ms = ms;
    record[vision ? "images_per_s" : "tokens_per_s"] = (items * 1000) / ms;
    record.waits_per_step = (after.waits - before.waits) / options.steps;
    record.record_ms = recordMs / options.steps;
    const hits = after.bindGroups.hits - before.bindGroups.hits;
    const made = after.bindGroups.misses - before.bindGroups.misses;
    record.bind_group_hit_rate = hits + made > 0 ? hits / (hits + made) : null;
  } catch (err) {
    record.status = "failed";
    record.error = err instanceof Error ? err.message : String(err);
  } finally {
    steps.destroy();
    task.destroy();
  }
  return record;
}
