/**
 * Training checkpoints: `DIR/last.safetensors` (every evaluation) and
 * `DIR/best.safetensors` (lowest validation loss), each written atomically
 * (temporary file, then rename) so a kill at any moment leaves a loadable
 * file, and a metrics log `DIR/log.jsonl`.
 *
 * Layout of a checkpoint (a tost model file `tost evaluate` and `tost sample`
 * load as it is):
 *
 * - the model's tensors under the reference `state_dict` names, `lm_head.weight`
 *   included (equal to `transformer.wte.weight`, as the tied reference saves it);
 * - AdamW's moments under `optimizer.exp_avg.<name>` and
 *   `optimizer.exp_avg_sq.<name>` (PyTorch's state names), which model loaders skip;
 * - `__metadata__`: `config` (model config JSON), `vocab` (character
 *   vocabulary JSON, char-level data only), `tokenizer`, `format`
 *   (`tost-train/1`), `optimizer` (JSON: hyperparameters and step count),
 *   `training` (JSON: step, best validation loss, sampler position and seed,
 *   tokens seen, and the full training settings).
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import type { StTensor } from "../io/safetensors.ts";
import { parseModelConfig, parseVocab } from "../model/load.ts";
import { assertStateDict } from "../model/names.ts";
import type { ModelConfig } from "../model/config.ts";
import type { Tensor } from "../gpu/runtime.ts";
import type { OptimizedParam } from "./adamw.ts";
import type { SamplerState, Tokenizer } from "./data.ts";

/** Version tag of the checkpoint layout. */
export const CHECKPOINT_FORMAT = "tost-train/1";

/** Progress of a run, saved with every checkpoint. */
export interface TrainProgress {
  /** Optimizer steps taken. */
  step: number;
  /** Lowest validation loss so far (null before the first evaluation). */
  bestValLoss: number | null;
  /** Position of the training batch sampler. */
  sampler: SamplerState;
  /** Training tokens consumed. */
  tokensSeen: number;
}

/** Everything a checkpoint holds besides tensors. */
export interface CheckpointInfo<S> {
  config: ModelConfig;
  vocab: string[] | null;
  /** How text was tokenised; null for vision models. */
  tokenizer: Tokenizer | null;
  /** The run's settings (opaque here; JSON). */
  settings: S;
  progress: TrainProgress;
  optimizer: { beta1: number; beta2: number; eps: number; weightDecay: number };
}

/** A checkpoint read back for resuming. */
export interface LoadedCheckpoint<S> extends CheckpointInfo<S> {
  /** Model tensors by `state_dict` name (lm_head included). */
  model: Map<string, StTensor>;
  /** First and second moments by parameter name. */
  expAvg: Map<string, Float32Array<ArrayBuffer>>;
  expAvgSq: Map<string, Float32Array<ArrayBuffer>>;
}

function st(shape: readonly number[], data: Float32Array): StTensor {
  return {
    dtype: "F32",
    shape: [...shape],
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}

/** Model tensors saved beside the trained ones (BatchNorm statistics and counters). */
export interface ExtraTensors {
  /** f32 GPU tensors (running statistics), read back and saved as F32. */
  gpu?: readonly [string, Tensor][];
  /** Host tensors saved as they are (e.g. I64 `num_batches_tracked`). */
  host?: readonly [string, StTensor][];
}

/**
 * Read the parameters and optimizer state off the GPU and write a
 * checkpoint atomically to `path`.
 */
export async function saveTrainingCheckpoint<S>(
  gpu: Gpu,
  path: string,
  params: readonly OptimizedParam[],
  info: CheckpointInfo<S>,
  extra: ExtraTensors = {},
): Promise<void> {
  // Start every read before awaiting any: one wait for all of them.
  const reads = params.flatMap((p) => [gpu.read(p.param), gpu.read(p.m), gpu.read(p.v)]);
  const extraReads = (extra.gpu ?? []).map(([, t]) => gpu.read(t));
  const values = (await Promise.all(reads)) as Float32Array[];
  const extraValues = (await Promise.all(extraReads)) as Float32Array[];
  const model: [string, StTensor][] = [];
  (extra.gpu ?? []).forEach(([name, t], i) => model.push([name, st(t.shape, extraValues[i])]));
  model.push(...(extra.host ?? []));
  const optim: [string, StTensor][] = [];
  params.forEach((p, i) => {
    const shape = p.param.shape;
    model.push([p.name, st(shape, values[3 * i])]);
    if (p.name === "transformer.wte.weight") {
      model.push(["lm_head.weight", st(shape, values[3 * i])]);
    }
    optim.push([`optimizer.exp_avg.${p.name}`, st(shape, values[3 * i + 1])]);
    optim.push([`optimizer.exp_avg_sq.${p.name}`, st(shape, values[3 * i + 2])]);
  });
  const metadata: Record<string, string> = {
    format: CHECKPOINT_FORMAT,
    config: JSON.stringify(info.config),
    ...(info.tokenizer ? { tokenizer: info.tokenizer } : {}),
    optimizer: JSON.stringify({
      type: "AdamW",
      step: info.progress.step,
      beta1: info.optimizer.beta1,
      beta2: info.optimizer.beta2,
      eps: info.optimizer.eps,
      weight_decay: info.optimizer.weightDecay,
    }),
    training: JSON.stringify({
      step: info.progress.step,
      best_val_loss: info.progress.bestValLoss,
      sampler: info.progress.sampler,
      tokens_seen: info.progress.tokensSeen,
      settings: info.settings,
    }),
  };
  if (info.vocab) metadata.vocab = JSON.stringify(info.vocab);
  await writeSafetensors(path, [...model, ...optim], metadata);
}

function field<T>(obj: Record<string, unknown>, key: string, what: string, source: string): T {
  if (!(key in obj)) throw new TypeError(`${source}: ${what} lacks "${key}"`);
  return obj[key] as T;
}

/**
 * Read a training checkpoint for `--resume`.
 *
 * @throws {TypeError} when the file is not a tost training checkpoint (no
 *   optimizer state or progress), or its tensors do not match its config
 */
export async function loadTrainingCheckpoint<S>(path: string): Promise<LoadedCheckpoint<S>> {
  const file = await readSafetensors(path);
  const meta = file.metadata;
  if (meta.format !== CHECKPOINT_FORMAT || meta.training === undefined) {
    throw new TypeError(
      `"${path}" is not a tost training checkpoint (no "${CHECKPOINT_FORMAT}" training state): ` +
        `only files written by tost train can be resumed`,
    );
  }
  const cfg = parseModelConfig(meta.config ?? "", `Config in "${path}"`);
  const model = new Map<string, StTensor>();
  const expAvg = new Map<string, Float32Array<ArrayBuffer>>();
  const expAvgSq = new Map<string, Float32Array<ArrayBuffer>>();
  for (const name of file.names) {
    if (name.startsWith("optimizer.exp_avg_sq.")) {
      expAvgSq.set(name.slice("optimizer.exp_avg_sq.".length), file.f32(name));
    } else if (name.startsWith("optimizer.exp_avg.")) {
      expAvg.set(name.slice("optimizer.exp_avg.".length), file.f32(name));
    } else model.set(name, file.get(name));
  }
  assertStateDict(cfg, model);
  const training = JSON.parse(meta.training) as Record<string, unknown>;
  const optimizer = JSON.parse(meta.optimizer ?? "{}") as Record<string, unknown>;
  const src = `"${path}"`;
  return {
    config: cfg,
    vocab: meta.vocab !== undefined ? parseVocab(meta.vocab, `Vocabulary in ${src}`) : null,
    tokenizer: cfg.family === "language" ? (meta.tokenizer ?? "char") as Tokenizer : null,
    settings: field<S>(training, "settings", "training state", src),
    progress: {
      step: field<number>(training, "step", "training state", src),
      bestValLoss: field<number | null>(training, "best_val_loss", "training state", src),
      sampler: field<SamplerState>(training, "sampler", "training state", src),
      tokensSeen: field<number>(training, "tokens_seen", "training state", src),
    },
    optimizer: {
      beta1: field<number>(optimizer, "beta1", "optimizer state", src),
      beta2: field<number>(optimizer, "beta2", "optimizer state", src),
      eps: field<number>(optimizer, "eps", "optimizer state", src),
      weightDecay: field<number>(optimizer, "weight_decay", "optimizer state", src),
    },
    model,
    expAvg,
    expAvgSq,
  };
}

/** Append one JSON object as a line to a metrics log. */
export async function appendLog(path: string, record: Record<string, unknown>): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(record) + "\n", { append: true });
}
