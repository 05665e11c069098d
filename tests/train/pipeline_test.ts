/**
 * Training without a host wait per step: steps recorded back to back give
 * the same statistics and parameters as steps read one by one; training
 * makes at most one blocking wait per log interval (counted by wrapping
 * `mapAsync` and `onSubmittedWorkDone`); a non-finite step is caught on the
 * GPU (nothing updated from it on) and stops the run; device errors still
 * stop it with a clear message.
 */

import assert from "node:assert/strict";
import { countHostWaits, withGpu } from "../_util.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { f32 } from "../../src/gpu/runtime.ts";
import { tokenizeText } from "../../src/train/data.ts";
import type { TextDataset } from "../../src/train/data.ts";
import { train, TrainingError } from "../../src/train/loop.ts";
import { applySettings, modelConfig, presetSettings } from "../../src/train/presets.ts";
import type { TrainSettings } from "../../src/train/presets.ts";
import { createLanguageTask } from "../../src/train/language_task.ts";
import { initialParameters } from "../../src/model/init.ts";
import { StepPipeline } from "../../src/train/step.ts";
import type { StepStats } from "../../src/train/step.ts";
import type { TrainTask } from "../../src/train/task.ts";

let dataset: TextDataset | undefined;
async function data(): Promise<TextDataset> {
  const words = ["alpha", "beta", "gamma", "delta", "and", "the", "of", "union"];
  let x = 7;
  const out: string[] = [];
  for (let i = 0; i < 4000; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out.push(words[(x >>> 20) % words.length]);
    if (i % 11 === 10) out.push(".\n");
  }
  dataset ??= await tokenizeText(out.join(" "), "pipeline corpus", "char");
  return dataset;
}

function settings(overrides: Partial<TrainSettings> = {}): TrainSettings {
  return applySettings(presetSettings("tiny"), {
    max_iters: 10,
    eval_interval: 1000,
    log_interval: 5,
    eval_tokens: 128,
    batch_size: 4,
    block_size: 16,
    gradient_accumulation_steps: 2,
    sample_tokens: 0,
    data: "pipeline corpus",
    ...overrides,
  });
}

async function languageTask(gpu: Gpu, s: TrainSettings): Promise<TrainTask> {
  const d = await data();
  const cfg = modelConfig(s, d.vocabSize);
  return createLanguageTask(gpu, cfg, s, d, {
    tensors: initialParameters(cfg, s.seed),
    sampler: { seed: s.seed, position: 0 },
  });
}

/** Run `n` steps reading the statistics every `every` steps; the stats and final state. */
async function runSteps(gpu: Gpu, s: TrainSettings, n: number, every: number) {
  const task = await languageTask(gpu, s);
  const steps = new StepPipeline(gpu, { flat: task.flat, settings: s, capacity: every });
  try {
    const stats: StepStats[] = [];
    for (let step = 1; step <= n; step++) {
      await steps.record({
        lr: s.learning_rate,
        step,
        arena: task.arena,
        micro: () => task.micro(),
      });
      if (step % every === 0 || step === n) stats.push(...await steps.read());
    }
    const state = await gpu.readMany(task.optimized.flatMap((p) => [p.param, p.m, p.v]));
    return { stats, state };
  } finally {
    steps.destroy();
    task.destroy();
  }
}

Deno.test("steps recorded back to back match steps read one by one, bit for bit", async () => {
  await withGpu(async (gpu) => {
    const s = settings();
    const one = await runSteps(gpu, s, 6, 1);
    const piped = await countHostWaits(() => runSteps(gpu, s, 6, 3));
    assert.deepEqual(piped.result.stats, one.stats);
    assert.equal(one.stats.length, 6);
    assert.ok(one.stats.every((st) => st.finite && st.loss > 0 && st.gradNorm > 0));
    assert.deepEqual(one.stats.map((st) => st.step), [1, 2, 3, 4, 5, 6]);
    for (const [i, t] of piped.result.state.entries()) assert.deepEqual(t, one.state[i]);
    // Two reads of the statistics and one of the final state.
    assert.equal(piped.waits, 3);
  });
});

Deno.test("tost train makes at most one blocking host wait per log interval", async () => {
  const dirs = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  try {
    await withGpu(async (gpu) => {
      const d = await data();
      // Same evaluations and checkpoints (steps 0 and the last); 10 more steps.
      const short = await countHostWaits(() =>
        train(gpu, settings({ max_iters: 5 }), { out: dirs[0], dataset: d })
      );
      const long = await countHostWaits(() =>
        train(gpu, settings({ max_iters: 15 }), { out: dirs[1], dataset: d })
      );
      assert.equal(long.result.step, 15);
      assert.ok(
        long.waits - short.waits <= 2,
        `10 more steps (2 log intervals) cost ${long.waits - short.waits} waits`,
      );
      assert.deepEqual(
        long.result.curve.filter((p) => p.split === "train").map((p) => p.step),
        Array.from({ length: 15 }, (_, i) => i + 1),
        "every step's loss arrives",
      );
    });
  } finally {
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("a non-finite step is caught on the GPU: it and the steps after it update nothing", async () => {
  await withGpu(async (gpu) => {
    const s = settings({ learning_rate: 1e30, min_lr: 1e30, grad_clip: 0 });
    const task = await languageTask(gpu, s);
    const steps = new StepPipeline(gpu, { flat: task.flat, settings: s, capacity: 4 });
    try {
      const record = (step: number) =>
        steps.record({ lr: s.learning_rate, step, arena: task.arena, micro: () => task.micro() });
      await record(1);
      const [first] = await steps.read();
      assert.ok(first.finite, "the first step is finite (it makes the parameters huge)");
      const good = await gpu.readMany(task.optimized.flatMap((p) => [p.param, p.m, p.v]));
      for (let step = 2; step <= 4; step++) await record(step);
      const stats = await steps.read();
      assert.deepEqual(stats.map((st) => [st.step, st.finite]), [[2, false]]);
      const after = await gpu.readMany(task.optimized.flatMap((p) => [p.param, p.m, p.v]));
      for (const [i, t] of after.entries()) assert.deepEqual(t, good[i], `state ${i} untouched`);
      await assert.rejects(record(5), /step 2 was not finite/);
    } finally {
      steps.destroy();
      task.destroy();
    }
  });
});

Deno.test("a device error in a step's work rejects that step without a wait", async () => {
  await withGpu(async (gpu) => {
    const s = settings();
    const task = await languageTask(gpu, s);
    const steps = new StepPipeline(gpu, { flat: task.flat, settings: s, capacity: 4 });
    const bad = await gpu.kernel(
      "test_bad_binding",
      `@group(0) @binding(0) var<uniform> p: vec4u;
       @group(0) @binding(1) var<storage, read_write> y: array<f32>;
       @compute @workgroup_size(1) fn main() { y[0] = f32(p.x); }`,
    );
    try {
      await assert.rejects(
        steps.record({
          lr: 1e-3,
          step: 1,
          arena: task.arena,
          micro: async () => {
            const loss = await task.micro();
            // No storage binding: a validation error.
            gpu.dispatch(bad, { bindings: [], params: [1, 2, 3, f32(4)], workgroups: 1 });
            return loss;
          },
        }),
        /WebGPU error/,
      );
      assert.equal(steps.unread, 0);
    } finally {
      steps.destroy();
      task.destroy();
    }
  });
});

Deno.test("an out-of-memory error stops the run at its step, keeping the last checkpoint", async () => {
  const dir = await Deno.makeTempDir();
  const push = GPUDevice.prototype.pushErrorScope;
  const pop = GPUDevice.prototype.popErrorScope;
  const scopes: GPUErrorFilter[] = [];
  let oomPops = 0;
  // The third out-of-memory scope (step 3's) reports what a failed allocation would.
  GPUDevice.prototype.pushErrorScope = function (filter: GPUErrorFilter) {
    scopes.push(filter);
    return push.call(this, filter);
  };
  GPUDevice.prototype.popErrorScope = async function () {
    const filter = scopes.pop();
    const real = await pop.call(this);
    if (filter === "out-of-memory" && ++oomPops === 3) {
      return new GPUOutOfMemoryError("Not enough memory left (test)");
    }
    return real;
  };
  try {
    await withGpu(async (gpu) => {
      const err = await train(gpu, settings(), { out: dir, dataset: await data() }).then(
        () => null,
        (e) => e,
      );
      assert.ok(err instanceof TrainingError, String(err));
      assert.match(
        err.message,
        /^Training stopped at step 3: GPU out of memory: Not enough memory/,
      );
      assert.match(err.message, /last good checkpoint is .*last\.safetensors \(step 0\)/);
      assert.match(err.message, /tost train --resume --out/);
    });
  } finally {
    GPUDevice.prototype.pushErrorScope = push;
    GPUDevice.prototype.popErrorScope = pop;
    await Deno.remove(dir, { recursive: true });
  }
});
