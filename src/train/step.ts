/**
 * One optimizer step, shared by the language and vision loops:
 * `gradient_accumulation_steps` micro-batches recorded back to back, the
 * global gradient norm, one read-back of the losses and the norm (inside
 * `gpu.scoped`, so out-of-memory and validation errors surface here), a
 * finiteness check *before* the update, then AdamW with clipping (recorded
 * into the next submission). Every temporary of the step comes from the
 * task's arena, reset at the start of each step: after the first step the
 * same buffers serve every step and nothing is allocated.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { Arena } from "../gpu/arena.ts";
import { adamwStep } from "./adamw.ts";
import type { OptimizedParam } from "./adamw.ts";
import { gradNormSquared } from "./clip.ts";
import type { TrainSettings } from "./presets.ts";

/** What one step measured. */
export interface StepStats {
  /** Mean loss over the micro-batches. */
  loss: number;
  /** Global norm of the averaged gradient (before clipping). */
  gradNorm: number;
}

/** A step whose loss or gradients are not finite; nothing was updated. */
export class NonFiniteError extends Error {
  override name = "NonFiniteError";
}

/**
 * Run one optimizer step. `micro` records one micro-batch's forward and
 * backward (adding into the gradients) and returns its `[1]` loss tensor.
 *
 * @throws {NonFiniteError} when the loss or gradient norm is NaN or infinite
 *   (the parameters are left as they were)
 */
export async function optimizerStep(
  gpu: Gpu,
  args: {
    optimized: readonly OptimizedParam[];
    normSq: Tensor;
    settings: TrainSettings;
    lr: number;
    /** 1-based number of this step. */
    step: number;
    /** The step's temporaries (reset here, at the start of the step). */
    arena: Arena;
    micro: () => Promise<Tensor>;
  },
): Promise<StepStats> {
  const { optimized, normSq, settings: s, lr } = args;
  const K = s.gradient_accumulation_steps;
  let loss = 0;
  let gradNorm = 0;
  args.arena.reset();
  await gpu.scoped(() =>
    args.arena.use(async () => {
      const losses: Tensor[] = [];
      for (let k = 0; k < K; k++) losses.push(await args.micro());
      await gradNormSquared(gpu, optimized.map((p) => p.grad), normSq);
      const values = await Promise.all([...losses, normSq].map((t) => gpu.read(t)));
      loss = values.slice(0, -1).reduce((a, v) => a + v[0], 0) / K;
      gradNorm = Math.sqrt(values[values.length - 1][0]) / K;
    })
  );
  if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
    throw new NonFiniteError(
      `the loss or the gradients are not finite (loss ${loss}, gradient norm ${gradNorm}); ` +
        `try a lower learning rate (now ${lr.toPrecision(3)})`,
    );
  }
  await adamwStep(gpu, optimized, {
    lr,
    step: args.step,
    beta1: s.beta1,
    beta2: s.beta2,
    eps: s.eps,
    weightDecay: s.weight_decay,
    gradScale: 1 / K,
    maxNorm: s.grad_clip,
    normSq,
  });
  return { loss, gradNorm };
}
