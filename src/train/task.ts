/**
 * What the training loop needs from a model family: a {@linkcode TrainTask}
 * records micro-batches, evaluates, and lists its trained tensors; the loop
 * (`loop.ts`) does the rest (schedule, steps, checkpoints, logs, stops)
 * the same way for language and vision models.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { Arena } from "../gpu/arena.ts";
import { ParamStore } from "../model/params.ts";
import type { NamedTensors } from "../model/params.ts";
import type { ModelConfig } from "../model/config.ts";
import { decays } from "./adamw.ts";
import type { FlatOptimizerState, OptimizedParam } from "./adamw.ts";
import type { ExtraTensors } from "./checkpoint.ts";
import type { SamplerState, Tokenizer } from "./data.ts";

/** Results of one evaluation. */
export interface EvalResult {
  /** Mean cross-entropy. */
  loss: number;
  /** Top-1 accuracy (classification), else null. */
  accuracy: number | null;
}

/** One model family's side of a training run. */
export interface TrainTask {
  config: ModelConfig;
  /** Every trained tensor with its gradient and AdamW moments. */
  optimized: OptimizedParam[];
  /** The same as flat buffers (what the optimizer steps run on). */
  flat: FlatOptimizerState;
  /** What one micro-batch holds, and how many. */
  unit: "tokens" | "images";
  itemsPerMicro: number;
  /** Training and validation set sizes in `unit`s. */
  trainItems: number;
  valItems: number;
  /** Character vocabulary (saved in checkpoints), tokenizer (language only). */
  vocab: string[] | null;
  tokenizer: Tokenizer | null;
  /** The arena of a step's temporaries (`StepPipeline.record` resets it every step). */
  arena: Arena;
  /** Record one micro-batch's forward and backward in `arena`; returns its `[1]` loss. */
  micro(): Promise<Tensor>;
  /** The batch sampler's position, for checkpoints. */
  sampler(): SamplerState;
  /** Validation loss (and accuracy) on the trained parameters, where they are (no copy). */
  evaluate(): Promise<EvalResult>;
  /** Model tensors to save besides the trained ones. */
  extraTensors(): ExtraTensors;
  /** A sample of the model's output to show at the end (null: none). */
  sample(tokens: number, seed: number): Promise<string | null>;
  destroy(): void;
}

/** AdamW moments from a checkpoint, by parameter name. */
export interface Moments {
  m: Map<string, Float32Array<ArrayBuffer>>;
  v: Map<string, Float32Array<ArrayBuffer>>;
}

/** The optimizer's view of a model: every trained tensor with its gradient and moments. */
export interface OptimizerState {
  optimized: OptimizedParam[];
  flat: FlatOptimizerState;
  /** First and second AdamW moments, stores with the trained names. */
  m: ParamStore;
  v: ParamStore;
}

/**
 * Pair every trained parameter of `store` with its gradient (from `grads`,
 * whose names are the trained ones) and AdamW moments: zero, or a
 * checkpoint's. The moments are two more stores with the same names.
 *
 * @throws {TypeError} when a checkpoint lacks a parameter's moments
 */
export function optimizerState(
  gpu: Gpu,
  store: ParamStore,
  grads: ParamStore,
  moments: Moments | undefined,
): OptimizerState {
  const names = grads.entries().map(([name]) => name);
  const m = ParamStore.zeros(gpu, store.config, names);
  const v = ParamStore.zeros(gpu, store.config, names);
  try {
    for (const name of names) {
      for (const [which, target] of [["m", m], ["v", v]] as const) {
        if (!moments) continue;
        const host = moments[which].get(name);
        if (!host) throw new TypeError(`The checkpoint lacks the optimizer state of "${name}"`);
        gpu.write(target.get(name), host);
      }
    }
  } catch (err) {
    m.destroy();
    v.destroy();
    throw err;
  }
  const optimized = names.map((name): OptimizedParam => {
    const param = store.get(name);
    return {
      name,
      param,
      grad: grads.get(name),
      m: m.get(name),
      v: v.get(name),
      decay: decays(name, param.shape),
    };
  });
  const flat = {
    param: store.segments(),
    grad: grads.segments(),
    m: m.segments(),
    v: v.segments(),
  };
  return { optimized, flat, m, v };
}

/** What every task owns on the GPU: the model, its gradients and optimizer state, two arenas. */
export interface TaskState {
  store: ParamStore;
  grads: ParamStore;
  optimized: OptimizedParam[];
  flat: FlatOptimizerState;
  /** A step's temporaries (reset by `StepPipeline.record`). */
  arena: Arena;
  /** An evaluation batch's temporaries. */
  evalArena: Arena;
  destroy(): void;
}

/**
 * Upload a model's tensors and make its gradients, optimizer state and
 * arenas (everything freed by `destroy`, or on failure).
 */
export function createTaskState(
  gpu: Gpu,
  cfg: ModelConfig,
  init: { tensors: NamedTensors; moments?: Moments },
): TaskState {
  const store = ParamStore.upload(gpu, cfg, init.tensors);
  const grads = ParamStore.zeros(gpu, cfg);
  const arena = new Arena(gpu, "train");
  const evalArena = new Arena(gpu, "eval");
  let optimizer: OptimizerState | null = null;
  const destroy = () => {
    optimizer?.m.destroy();
    optimizer?.v.destroy();
    arena.destroy();
    evalArena.destroy();
    store.destroy();
    grads.destroy();
  };
  try {
    optimizer = optimizerState(gpu, store, grads, init.moments);
  } catch (err) {
    destroy();
    throw err;
  }
  const { optimized, flat } = optimizer;
  return { store, grads, optimized, flat, arena, evalArena, destroy };
}
