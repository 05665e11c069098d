/**
 * The training loop of `tost train`: a fresh or resumed model (a
 * {@linkcode TrainTask}: language or vision), optimizer steps on the GPU
 * (`step.ts`), the learning-rate schedule, periodic evaluation, atomic
 * checkpoints, a metrics log, and clean stops (NaN, GPU failures, Ctrl-C)
 * that always leave the last good checkpoint and say how to resume.
 *
 * Steps are recorded back to back (`step.ts`): the host waits for the GPU
 * once per `log_interval` steps, to read that interval's losses and gradient
 * norms, issued right after the interval's last step and awaited after the
 * next step is submitted, so the GPU works through the wait. Events, the log
 * and the curve get each step's values when they arrive (up to an interval
 * late). Evaluations, checkpoints and the end of the run take every step's
 * values first; a non-finite step (caught and skipped on the GPU) stops the
 * run there.
 *
 * Determinism: every kernel sums in a fixed order and the batch sampler's
 * state is saved, so a resumed run reproduces an uninterrupted one bit for bit.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import type { ModelConfig } from "../model/config.ts";
import { learningRate } from "./schedule.ts";
import type { LrSchedule } from "./schedule.ts";
import { loadTextDataset } from "./data.ts";
import type { TextDataset } from "./data.ts";
import { appendLog, loadTrainingCheckpoint, saveTrainingCheckpoint } from "./checkpoint.ts";
import type { CheckpointInfo, LoadedCheckpoint, TrainProgress } from "./checkpoint.ts";
import { trimLog } from "./run_dir.ts";
import { initialParameters } from "../model/init.ts";
import { modelConfig, visionModelConfig } from "./presets.ts";
import type { TrainSettings } from "./presets.ts";
import { NonFiniteError, StepPipeline } from "./step.ts";
import type { StepStats } from "./step.ts";
import { createLanguageTask } from "./language_task.ts";
import { createVisionTask } from "./vision_task.ts";
import type { TrainTask } from "./task.ts";
import type { NamedTensors } from "../model/params.ts";
import type { Moments } from "./task.ts";

/** Something the loop reports as it goes. */
export type TrainEvent =
  | {
    kind: "start";
    settings: TrainSettings;
    config: ModelConfig;
    step: number;
    params: number;
    unit: "tokens" | "images";
    trainItems: number;
    valItems: number;
    resumed: boolean;
  }
  | {
    kind: "step";
    step: number;
    loss: number;
    lr: number;
    gradNorm: number;
    /** Training tokens (or images) per second so far in this run. */
    itemsPerSecond: number;
    elapsed: number;
    etaSeconds: number;
  }
  | {
    kind: "eval";
    step: number;
    valLoss: number;
    accuracy: number | null;
    best: boolean;
    seconds: number;
  }
  | { kind: "checkpoint"; step: number; path: string };

/** Options of {@linkcode train}. */
export interface TrainOptions {
  /** Output directory for checkpoints, the log and plots. */
  out: string;
  /** Continue from `out/last.safetensors` with its settings (`settings` is then ignored). */
  resume?: boolean;
  /** With `resume`: the checkpoint already read (else `out/last.safetensors` is read). */
  checkpoint?: LoadedCheckpoint<TrainSettings>;
  /** With `resume`: a new `max_iters` (default: the checkpoint's). */
  maxIters?: number;
  /** Receives progress events. */
  onEvent?: (event: TrainEvent) => void;
  /** Stops the run cleanly after the current step (Ctrl-C). */
  signal?: AbortSignal;
  /** Stop (as if interrupted) once this many steps are done (tests). */
  stopAfter?: number;
  /** A text dataset already loaded (tests; must match `settings.data`/`tokenizer`). */
  dataset?: TextDataset;
}

/** One point of the loss curves. */
export interface CurvePoint {
  step: number;
  loss: number;
  split: "train" | "val";
}

/** What a run did. */
export interface TrainResult {
  settings: TrainSettings;
  config: ModelConfig;
  /** Steps done when the run ended. */
  step: number;
  status: "finished" | "interrupted";
  /** Validation loss of the last evaluation (null if none ran in this run). */
  finalValLoss: number | null;
  /** Step of that evaluation. */
  finalValStep: number | null;
  /** Lowest validation loss after training began (step 0 never counts: untrained). */
  bestValLoss: number | null;
  /** Training loss of the last step this run took (null if it took none). */
  trainLoss: number | null;
  /** Top-1 accuracy of the last evaluation (vision), else null. */
  finalAccuracy: number | null;
  unit: "tokens" | "images";
  /** Training tokens (or images) per second over this run's steps. */
  itemsPerSecond: number;
  seconds: number;
  sample: string | null;
  curve: CurvePoint[];
  lastCheckpoint: string;
  /** `best.safetensors`, once an evaluation after training wrote it. */
  bestCheckpoint: string | null;
}

/** A run that stopped on a failure, keeping its last good checkpoint. */
export class TrainingError extends Error {
  override name = "TrainingError";
}

/** Paths inside a run directory. */
export function runPaths(out: string): { last: string; best: string; log: string } {
  const dir = out.replace(/\/+$/, "") || ".";
  return {
    last: `${dir}/last.safetensors`,
    best: `${dir}/best.safetensors`,
    log: `${dir}/log.jsonl`,
  };
}

function schedule(s: TrainSettings): LrSchedule {
  return {
    lr: s.learning_rate,
    minLr: s.min_lr,
    warmupIters: s.warmup_iters,
    decayIters: Math.max(s.lr_decay_iters ?? s.max_iters, s.warmup_iters),
  };
}

function resumeHint(out: string, step: number | null): string {
  return step === null
    ? "no checkpoint was written yet"
    : `the last good checkpoint is ${runPaths(out).last} (step ${step}); continue with: ` +
      `tost train --resume --out ${out}`;
}

/** Whether settings train the vision model (on MNIST). */
export function isVision(s: TrainSettings): boolean {
  return s.data === "mnist";
}

async function createTask(
  gpu: Gpu,
  s: TrainSettings,
  options: TrainOptions,
  init: {
    config?: ModelConfig;
    tensors?: NamedTensors;
    moments?: Moments;
    progress: TrainProgress;
  },
): Promise<TrainTask> {
  if (isVision(s)) {
    const cfg = init.config ?? visionModelConfig(s);
    if (cfg.family !== "vision") throw new TypeError("The checkpoint is not a vision model");
    return await createVisionTask(gpu, cfg, s, {
      tensors: init.tensors ?? initialParameters(cfg, s.seed),
      moments: init.moments,
      sampler: init.progress.sampler,
      batchesTracked: init.progress.step * s.gradient_accumulation_steps,
    });
  }
  const data = options.dataset ?? await loadTextDataset(s.data, s.tokenizer);
  const cfg = init.config ?? modelConfig(s, data.vocabSize);
  if (cfg.family !== "language") throw new TypeError("The checkpoint is not a language model");
  if (data.vocabSize !== cfg.vocab_size) {
    throw new TypeError(
      `The data has ${data.vocabSize} tokens in its vocabulary, the checkpoint's model ` +
        `${cfg.vocab_size}: resume with the data the run started with (${s.data})`,
    );
  }
  return createLanguageTask(gpu, cfg, s, data, {
    tensors: init.tensors ?? initialParameters(cfg, s.seed),
    moments: init.moments,
    sampler: init.progress.sampler,
  });
}

/**
 * Train a model as `settings` say (or resume the run in `out`).
 *
 * @throws {TrainingError} when a step fails (non-finite loss or gradients,
 *   GPU out of memory, device lost), after keeping the last good checkpoint
 * @example
 * ```ts ignore
 * const result = await train(gpu, presetSettings("tiny"), { out: "runs/tiny" });
 * console.log(result.finalValLoss);
 * ```
 */
export async function train(
  gpu: Gpu,
  requested: TrainSettings,
  options: TrainOptions,
): Promise<TrainResult> {
  const paths = runPaths(options.out);
  await Deno.mkdir(options.out, { recursive: true });
  let s: TrainSettings;
  let progress: TrainProgress;
  let task: TrainTask;
  const resumed = !!options.resume;
  let loggedAtStart = false;
  if (options.resume) {
    const ck = options.checkpoint ?? await loadTrainingCheckpoint<TrainSettings>(paths.last);
    s = { ...ck.settings, max_iters: options.maxIters ?? ck.settings.max_iters };
    progress = ck.progress;
    task = await createTask(gpu, s, options, {
      config: ck.config,
      tensors: ck.model,
      moments: { m: ck.expAvg, v: ck.expAvgSq },
      progress,
    });
    // Steps a crashed run logged after its checkpoint are taken again: drop them.
    const kept = await trimLog(paths.log, progress.step);
    loggedAtStart = kept.some((r) => r.step === progress.step && "val_loss" in r);
  } else {
    s = requested;
    progress = {
      step: 0,
      bestValLoss: null,
      sampler: { seed: s.seed, position: 0 },
      tokensSeen: 0,
    };
    task = await createTask(gpu, s, options, { progress });
    await Deno.remove(paths.log).catch(() => {});
  }
  const emit = options.onEvent ?? (() => {});
  const info = (): CheckpointInfo<TrainSettings> => ({
    config: task.config,
    vocab: task.vocab,
    tokenizer: task.tokenizer,
    settings: s,
    progress: { ...progress, sampler: task.sampler() },
    optimizer: { beta1: s.beta1, beta2: s.beta2, eps: s.eps, weightDecay: s.weight_decay },
  });
  const sched = schedule(s);
  const curve: CurvePoint[] = [];
  let savedStep: number | null = resumed ? progress.step : null;
  let finalValLoss: number | null = null;
  let finalValStep: number | null = null;
  let trainLoss: number | null = null;
  let finalAccuracy: number | null = null;
  let steps: StepPipeline;
  try {
    steps = new StepPipeline(gpu, {
      flat: task.flat,
      settings: s,
      capacity: s.log_interval,
    });
  } catch (err) {
    task.destroy();
    throw err;
  }
  const startedAt = performance.now();
  const startStep = progress.step;
  /** Wall seconds spent on evaluations and checkpoints (not training). */
  let asideSeconds = 0;
  const trainSeconds = () => (performance.now() - startedAt) / 1000 - asideSeconds;
  const itemsPerStep = task.itemsPerMicro * s.gradient_accumulation_steps;
  const stopped = (step: number, err: unknown) => {
    // The message carries the cause's; --verbose shows this stack.
    const why = err instanceof Error ? err.message : String(err);
    return new TrainingError(
      `Training stopped at step ${step}: ${why}; ${resumeHint(options.out, savedStep)}`,
    );
  };
  /** The read of step statistics in flight (at most one: one wait per log interval). */
  let inFlight: Promise<StepStats[]> | null = null;
  /** Report the steps of the read in flight, or stop at a non-finite one. */
  const take = async () => {
    const pending = inFlight!;
    inFlight = null;
    let stats: StepStats[];
    try {
      stats = await pending;
    } catch (err) {
      throw stopped(progress.step, err);
    }
    if (stats.length === 0) return;
    const seconds = trainSeconds();
    const done = stats[stats.length - 1].step - startStep;
    const rate = (done * itemsPerStep) / seconds;
    for (const st of stats) {
      if (!st.finite) throw stopped(st.step, new NonFiniteError(st));
      trainLoss = st.loss;
      curve.push({ step: st.step, loss: st.loss, split: "train" });
      emit({
        kind: "step",
        step: st.step,
        loss: st.loss,
        lr: st.lr,
        gradNorm: st.gradNorm,
        itemsPerSecond: rate,
        elapsed: (performance.now() - startedAt) / 1000,
        etaSeconds: ((s.max_iters - st.step) * seconds) / done,
      });
      if (st.step % s.log_interval === 0 || st.step === s.max_iters) {
        await appendLog(paths.log, {
          step: st.step,
          loss: st.loss,
          lr: st.lr,
          grad_norm: st.gradNorm,
          [`${task.unit}_per_second`]: rate,
          [`${task.unit}_seen`]: progress.tokensSeen - (progress.step - st.step) * itemsPerStep,
        });
      }
    }
  };
  /** Every recorded step's statistics on the host: before evaluations, checkpoints and the end. */
  const settle = async () => {
    if (inFlight) await take();
    if (steps.unread > 0) {
      inFlight = steps.read();
      await take();
    }
  };
  const save = async (best: boolean) => {
    await saveTrainingCheckpoint(gpu, paths.last, task.optimized, info(), task.extraTensors());
    savedStep = progress.step;
    emit({ kind: "checkpoint", step: progress.step, path: paths.last });
    if (best) {
      const tmp = `${paths.best}.tmp`;
      await Deno.copyFile(paths.last, tmp);
      await Deno.rename(tmp, paths.best);
    }
  };
  const evalAndSave = async () => {
    const t0 = performance.now();
    await settle();
    const { loss: valLoss, accuracy } = await task.evaluate();
    // The untrained model (step 0) is a baseline, never the best result.
    const best = progress.step > 0 &&
      (progress.bestValLoss === null || valLoss < progress.bestValLoss);
    if (best) progress.bestValLoss = valLoss;
    finalValLoss = valLoss;
    finalValStep = progress.step;
    finalAccuracy = accuracy;
    curve.push({ step: progress.step, loss: valLoss, split: "val" });
    emit({
      kind: "eval",
      step: progress.step,
      valLoss,
      accuracy,
      best,
      seconds: (performance.now() - t0) / 1000,
    });
    await appendLog(paths.log, {
      step: progress.step,
      val_loss: valLoss,
      ...(accuracy === null ? {} : { accuracy }),
      best,
    });
    await save(best);
    asideSeconds += (performance.now() - t0) / 1000;
  };
  try {
    emit({
      kind: "start",
      settings: s,
      config: task.config,
      step: progress.step,
      params: task.optimized.reduce((a, p) => a + p.param.numel, 0),
      unit: task.unit,
      trainItems: task.trainItems,
      valItems: task.valItems,
      resumed,
    });
    let status: TrainResult["status"] = "finished";
    while (true) {
      // A stop request first: Ctrl-C does not wait for an evaluation.
      if (
        progress.step < s.max_iters && (options.signal?.aborted ||
          (options.stopAfter !== undefined && progress.step >= options.stopAfter))
      ) {
        status = "interrupted";
        break;
      }
      const evalDue = progress.step % s.eval_interval === 0 || progress.step === s.max_iters;
      // A resumed run does not evaluate again where its log already has the evaluation.
      if (evalDue && !(loggedAtStart && progress.step === startStep)) await evalAndSave();
      if (progress.step >= s.max_iters) break;
      const lr = learningRate(progress.step, sched);
      try {
        await steps.record({
          lr,
          step: progress.step + 1,
          arena: task.arena,
          micro: () => task.micro(),
        });
      } catch (err) {
        throw stopped(progress.step + 1, err);
      }
      progress.step++;
      progress.tokensSeen += itemsPerStep;
      // The statistics of the interval before: read while this step runs.
      if (inFlight) await take();
      if (progress.step % s.log_interval === 0 || progress.step === s.max_iters) {
        inFlight = steps.read(); // the one wait of this interval starts here
      }
    }
    await settle();
    const trainedSeconds = trainSeconds();
    if (status === "interrupted" && savedStep !== progress.step) await save(false);
    await gpu.sync();
    const sample = status === "finished" && s.sample_tokens > 0
      ? await task.sample(s.sample_tokens, s.seed)
      : null;
    const done = progress.step - startStep;
    return {
      settings: s,
      config: task.config,
      step: progress.step,
      status,
      finalValLoss,
      finalValStep,
      bestValLoss: progress.bestValLoss,
      trainLoss,
      finalAccuracy,
      unit: task.unit,
      itemsPerSecond: done > 0 ? (done * itemsPerStep) / trainedSeconds : 0,
      seconds: (performance.now() - startedAt) / 1000,
      sample,
      curve,
      lastCheckpoint: paths.last,
      bestCheckpoint: progress.bestValLoss === null ? null : paths.best,
    };
  } finally {
    steps.destroy();
    task.destroy();
  }
}
