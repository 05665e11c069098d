/**
 * What the training loop needs from a model family: a {@linkcode TrainTask}
 * records micro-batches, evaluates, and lists its trained tensors; the loop
 * (`loop.ts`) does the rest (schedule, steps, checkpoints, logs, stops)
 * the same way for language and vision models.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { Arena } from "../gpu/arena.ts";
import type { ModelConfig } from "../model/config.ts";
import { decays } from "./adamw.ts";
import type { OptimizedParam } from "./adamw.ts";
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
  /** What one micro-batch holds, and how many. */
  unit: "tokens" | "images";
  itemsPerMicro: number;
  /** Training and validation set sizes in `unit`s. */
  trainItems: number;
  valItems: number;
  /** Character vocabulary (saved in checkpoints), tokenizer (language only). */
  vocab: string[] | null;
  tokenizer: Tokenizer | null;
  /** The arena of a step's temporaries (`optimizerStep` resets it every step). */
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

/**
 * Pair parameters with their gradients and fresh (or checkpointed) AdamW
 * moments. The moment tensors are pushed onto `owned`.
 *
 * @throws {TypeError} when a checkpoint lacks a parameter's moments
 */
export function optimizedParams(
  gpu: Gpu,
  params: readonly [string, Tensor][],
  grads: ReadonlyMap<string, Tensor>,
  moments: Moments | undefined,
  owned: Tensor[],
): OptimizedParam[] {
  return params.map(([name, param]) => {
    const state = (which: "m" | "v") => {
      const host = moments?.[which].get(name);
      if (moments && !host) {
        throw new TypeError(`The checkpoint lacks the optimizer state of "${name}"`);
      }
      const t = host
        ? gpu.upload(host, param.shape, `adamw.${which}`)
        : gpu.empty(param.shape, "f32", `adamw.${which}`);
      owned.push(t);
      return t;
    };
    const grad = grads.get(name);
    if (!grad) throw new TypeError(`No gradient buffer for "${name}"`);
    return { name, param, grad, m: state("m"), v: state("v"), decay: decays(name, param.shape) };
  });
}
