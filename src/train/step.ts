/**
 * Optimizer steps without host waits, shared by the training loop and
 * `tost bench --train`.
 *
 * One step records `gradient_accumulation_steps` micro-batches back to back,
 * the global gradient norm, the finiteness check and AdamW with clipping,
 * and submits them; nothing waits for the GPU. Each step's micro-batch
 * losses and squared gradient norm are copied into a slot of a small GPU
 * stats buffer (`kernels/train_stats.wgsl`), checked there, and read back
 * for many steps at once ({@linkcode StepPipeline.read}: one host wait, which
 * the loop issues once per log interval). A step whose loss or gradient norm
 * is not finite raises the stats' halt word: its AdamW dispatches, and those
 * of every later step, leave the parameters and moments alone, so when the
 * host learns of it (at the next read) the model is still the last good one.
 *
 * Device errors (out of memory, validation) are caught per step by error
 * scopes around its recording (`Gpu.captureErrors`, no wait). Every
 * temporary of a step comes from the task's arena, reset at the start of
 * each step: after the first step the same buffers serve every step, so
 * nothing is allocated and every bind group comes from the runtime's cache.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { Arena } from "../gpu/arena.ts";
import { adamwStep } from "./adamw.ts";
import type { FlatOptimizerState } from "./adamw.ts";
import { gradNormSquared } from "./clip.ts";
import type { TrainSettings } from "./presets.ts";
import trainStatsWgsl from "../../kernels/train_stats.wgsl" with { type: "text" };

/** What one step measured, read back after it ran. */
export interface StepStats {
  /** 1-based step number. */
  step: number;
  /** Learning rate of the step. */
  lr: number;
  /** Mean loss over the micro-batches. */
  loss: number;
  /** Global norm of the averaged gradient (before clipping). */
  gradNorm: number;
  /** False when the loss or the gradient norm was not finite: nothing was updated. */
  finite: boolean;
}

/** A step whose loss or gradients are not finite; nothing was updated from it on. */
export class NonFiniteError extends Error {
  override name = "NonFiniteError";
  constructor(readonly stats: StepStats) {
    super(
      `the loss or the gradients are not finite (loss ${stats.loss}, gradient norm ` +
        `${stats.gradNorm}); try a lower learning rate (now ${stats.lr.toPrecision(3)})`,
    );
  }
}

/** What {@linkcode StepPipeline.record} needs for one step. */
export interface StepArgs {
  lr: number;
  /** 1-based number of this step. */
  step: number;
  /** The step's temporaries (reset here, at the start of the step). */
  arena: Arena;
  /** Record one micro-batch's forward and backward (adding into the gradients); its `[1]` loss. */
  micro: () => Promise<Tensor>;
}

/** Options of a {@linkcode StepPipeline}. */
export interface StepPipelineOptions {
  /** The flat parameter, gradient and moment buffers (`TrainTask.flat`). */
  flat: FlatOptimizerState;
  settings: TrainSettings;
  /** Most steps recorded between two reads (the stats buffer's slots): the log interval. */
  capacity: number;
}

const HEADER_WORDS = 4;

/**
 * Records optimizer steps back to back and reads their statistics back in
 * batches.
 *
 * @example
 * ```ts ignore
 * const steps = new StepPipeline(gpu, { flat: task.flat, settings, capacity: 10 });
 * for (let step = 1; step <= 10; step++) {
 *   await steps.record({ lr, step, arena: task.arena, micro: () => task.micro() });
 * }
 * for (const s of await steps.read()) console.log(s.step, s.loss); // one wait
 * steps.destroy();
 * ```
 */
export class StepPipeline {
  readonly #gpu: Gpu;
  readonly #flat: FlatOptimizerState;
  readonly #settings: TrainSettings;
  readonly capacity: number;
  readonly #slotWords: number;
  /** u32 words, see `kernels/train_stats.wgsl`. */
  readonly #stats: Tensor;
  readonly #normSq: Tensor;
  #unread: { step: number; lr: number }[] = [];
  #halted: StepStats | null = null;

  constructor(gpu: Gpu, options: StepPipelineOptions) {
    const { capacity, settings } = options;
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`StepPipeline: capacity must be a positive integer, got ${capacity}`);
    }
    this.#gpu = gpu;
    this.#flat = options.flat;
    this.#settings = settings;
    this.capacity = capacity;
    this.#slotWords = 2 + settings.gradient_accumulation_steps;
    const words = HEADER_WORDS + capacity * this.#slotWords;
    [this.#stats, this.#normSq] = gpu.outsideArena(() => [
      gpu.empty([words], "u32", "train.stats"),
      gpu.empty([1], "f32", "train.normSq"),
    ]);
  }

  /** Steps recorded whose statistics no {@linkcode read} has covered yet. */
  get unread(): number {
    return this.#unread.length;
  }

  /**
   * Record and submit one optimizer step (no wait).
   *
   * @throws {RangeError} "GPU out of memory: …" or {Error} "WebGPU error: …"
   *   when the device refuses the step's work
   * @throws {Error} when `capacity` steps are unread, or after a read found a
   *   non-finite step
   */
  async record(args: StepArgs): Promise<void> {
    if (this.#halted) {
      throw new Error(`StepPipeline: step ${this.#halted.step} was not finite; nothing more runs`);
    }
    if (this.#unread.length >= this.capacity) {
      throw new Error(`StepPipeline: ${this.capacity} steps are unread; read() before recording`);
    }
    const gpu = this.#gpu;
    const s = this.#settings;
    const K = s.gradient_accumulation_steps;
    const base = HEADER_WORDS + this.#unread.length * this.#slotWords;
    const finish = await gpu.kernel("train_stats", trainStatsWgsl, {}, "finish");
    args.arena.reset();
    await gpu.captureErrors(() =>
      args.arena.use(async () => {
        for (let k = 0; k < K; k++) {
          const loss = await args.micro();
          gpu.copy(loss, this.#stats, 4, 0, (base + 2 + k) * 4);
        }
        await gradNormSquared(gpu, this.#flat.grad.map((g) => g.tensor), this.#normSq);
        gpu.copy(this.#normSq, this.#stats, 4, 0, base * 4);
        gpu.dispatch(finish, {
          bindings: [this.#stats],
          params: [base, K, args.step],
          workgroups: 1,
        });
        await adamwStep(gpu, this.#flat, {
          lr: args.lr,
          step: args.step,
          beta1: s.beta1,
          beta2: s.beta2,
          eps: s.eps,
          weightDecay: s.weight_decay,
          gradScale: 1 / K,
          maxNorm: s.grad_clip,
          normSq: this.#normSq,
          halt: this.#stats,
        });
      })
    );
    this.#unread.push({ step: args.step, lr: args.lr });
  }

  /**
   * Read the statistics of every step recorded since the last read, in
   * order, up to and including the first non-finite one (the steps after it
   * updated nothing and are not reported). One host wait; it starts now
   * (Deno blocks in this call until the queued work is done), so the caller
   * may record the next step before awaiting the result and the GPU runs it
   * meanwhile.
   */
  read(): Promise<StepStats[]> {
    const steps = this.#unread;
    this.#unread = [];
    if (steps.length === 0) return Promise.resolve([]);
    const pending = this.#gpu.readMany([this.#stats]);
    return pending.then(([words]) => this.#decode(words as Uint32Array, steps));
  }

  #decode(words: Uint32Array, steps: readonly { step: number; lr: number }[]): StepStats[] {
    const floats = new Float32Array(words.buffer, words.byteOffset, words.length);
    const K = this.#settings.gradient_accumulation_steps;
    const out: StepStats[] = [];
    for (const [i, { step, lr }] of steps.entries()) {
      const base = HEADER_WORDS + i * this.#slotWords;
      let loss = 0;
      for (let k = 0; k < K; k++) loss += floats[base + 2 + k];
      const stats: StepStats = {
        step,
        lr,
        loss: loss / K,
        gradNorm: Math.sqrt(floats[base]) / K,
        finite: words[base + 1] === 0,
      };
      out.push(stats);
      if (!stats.finite) {
        this.#halted = stats;
        break;
      }
    }
    return out;
  }

  /** Free the stats buffers. */
  destroy(): void {
    this.#stats.destroy();
    this.#normSq.destroy();
  }
}
