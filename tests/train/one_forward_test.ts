/**
 * What issue 9 promises, checked on the running code:
 *
 * - a training step records the same pipelines for its forward as inference
 *   does (the pipeline-cache keys of every dispatch, in order, through the
 *   runtime's dispatch listener): language ToST and GPT entirely; vision from
 *   the patch tokens on (its stem's BatchNorm uses batch statistics in
 *   training and the running ones in eval mode, as PyTorch's does). The one
 *   difference allowed: a GEMM of the training forward also writes what the
 *   backward keeps (the `aux` output of its epilogue: the MLP's
 *   pre-activation, the attention and MLP outputs whose sum into the
 *   residual stream is fused into the product), so GEMM keys are compared
 *   by kernel with `+aux` dropped;
 * - evaluation during training reads no parameter back to the host (every
 *   `read` of the evaluation is recorded);
 * - steady-state training allocates no GPU buffer: the step arena hands the
 *   same buffers out again.
 */

import assert from "node:assert/strict";
import { withGpu } from "../_util.ts";
import { Tensor } from "../../src/gpu/runtime.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { Arena } from "../../src/gpu/arena.ts";
import type { LanguageConfig, VisionConfig } from "../../src/model/config.ts";
import { ParamStore } from "../../src/model/params.ts";
import { initialParameters } from "../../src/model/init.ts";
import {
  encodeLanguage,
  languageForwardBackward,
  uploadTokenIds,
} from "../../src/model/language/model.ts";
import { encodeVision, visionForwardBackward } from "../../src/model/vision/model.ts";
import { tokenizeText } from "../../src/train/data.ts";
import { applySettings, presetSettings, visionModelConfig } from "../../src/train/presets.ts";
import { createLanguageTask } from "../../src/train/language_task.ts";
import { createVisionTask } from "../../src/train/vision_task.ts";
import { StepPipeline } from "../../src/train/step.ts";
import type { TrainTask } from "../../src/train/task.ts";

/**
 * A pipeline key as the comparison sees it: a GEMM by its kernel, without
 * the `aux` output a training forward adds to its epilogue.
 */
function comparable(key: string): string {
  return key.startsWith("gemm") ? key.split("#")[0].replace("+aux", "") : key;
}

/** The pipeline keys of the dispatches `fn` records, in order. */
async function pipelines(gpu: Gpu, fn: () => Promise<unknown>): Promise<string[]> {
  const keys: string[] = [];
  gpu.onDispatch = (k) => keys.push(comparable(k.key));
  try {
    await fn();
  } finally {
    gpu.onDispatch = null;
  }
  await gpu.sync();
  return keys;
}

/** The keys before the first cross-entropy kernel: a training pass's forward. */
function forwardPart(keys: string[]): string[] {
  const end = keys.findIndex((k) => k.startsWith("cross_entropy"));
  assert.ok(end > 0, "the training pass has a loss");
  return keys.slice(0, end);
}

function language(attention: "tssa" | "softmax"): LanguageConfig {
  return {
    family: "language",
    attention,
    block_size: 16,
    vocab_size: 19,
    n_layer: 2,
    n_head: 2,
    n_embd: 16,
    bias: true,
    dropout: 0,
    norm_eps: 1e-5,
  };
}

for (const attention of ["tssa", "softmax"] as const) {
  Deno.test(`language ${attention}: the training step's forward runs inference's pipelines`, async () => {
    const cfg = language(attention);
    const [B, T] = [2, 16];
    const x = Array.from({ length: B * T }, (_, i) => (i * 5 + 1) % cfg.vocab_size);
    const y = x.map((v) => (v + 3) % cfg.vocab_size);
    await withGpu(async (gpu) => {
      const store = ParamStore.upload(gpu, cfg, initialParameters(cfg, 1));
      const grads = ParamStore.zeros(gpu, cfg);
      const arena = new Arena(gpu);
      try {
        const infer = await pipelines(
          gpu,
          () => arena.use(() => encodeLanguage(gpu, store, uploadTokenIds(gpu, cfg, x, B, T))),
        );
        arena.reset();
        const train = await pipelines(
          gpu,
          () => arena.use(() => languageForwardBackward(gpu, store, grads, { B, T, x, y })),
        );
        assert.ok(infer.length > 10);
        assert.deepEqual(forwardPart(train), infer);
      } finally {
        arena.destroy();
        store.destroy();
        grads.destroy();
      }
    });
  });
}

for (const attention of ["tssa", "softmax"] as const) {
  Deno.test(`vision ${attention}: the training step's forward runs inference's pipelines past the stem`, async () => {
    const cfg: VisionConfig = {
      ...visionModelConfig(applySettings(presetSettings("mnist"), { n_layer: 2, n_embd: 16 })),
      attention,
      num_heads: 2,
    };
    await withGpu(async (gpu) => {
      const store = ParamStore.upload(gpu, cfg, initialParameters(cfg, 2));
      const grads = ParamStore.zeros(gpu, cfg);
      const images = gpu.upload(new Float32Array(2 * 3 * 28 * 28).fill(0.5), [2, 3, 28, 28]);
      const arena = new Arena(gpu);
      try {
        const infer = await pipelines(gpu, () => arena.use(() => encodeVision(gpu, store, images)));
        arena.reset();
        const train = forwardPart(
          await pipelines(
            gpu,
            () => arena.use(() => visionForwardBackward(gpu, store, grads, images, [1, 7])),
          ),
        );
        // The tokens start where the positional encoding is added.
        const tokens = (keys: string[]) =>
          keys.slice(keys.findIndex((k) => k.includes("add_rows")));
        assert.ok(tokens(infer).length > 20);
        assert.deepEqual(tokens(train), tokens(infer));
        // Before it: the stem, BatchNorm folded (eval) or with batch statistics (training).
        const stem = (keys: string[]) => new Set(keys.slice(0, keys.length - tokens(keys).length));
        assert.ok([...stem(infer)].some((k) => k.startsWith("batch_norm_fold")));
        assert.ok([...stem(train)].some((k) => k.startsWith("batch_norm_stats")));
      } finally {
        arena.destroy();
        images.destroy();
        store.destroy();
        grads.destroy();
      }
    });
  });
}

/** Run `task.evaluate()` recording every tensor it reads back. */
async function evaluateReads(gpu: Gpu, task: TrainTask): Promise<Tensor[][]> {
  const read = gpu.read.bind(gpu);
  const readMany = gpu.readMany.bind(gpu);
  const seen: Tensor[][] = [];
  gpu.read = (t, ...rest) => {
    seen.push([t]);
    return read(t, ...rest);
  };
  gpu.readMany = (ts) => {
    seen.push(ts.map((t) => t instanceof Tensor ? t : t.tensor));
    return readMany(ts);
  };
  try {
    const r = await task.evaluate();
    assert.ok(Number.isFinite(r.loss));
  } finally {
    gpu.read = read;
    gpu.readMany = readMany;
  }
  return seen;
}

/** Buffers of the model's parameters and buffers (and their moments and gradients). */
function modelBuffers(task: TrainTask, extra: readonly Tensor[] = []): Set<GPUBuffer> {
  return new Set([
    ...task.optimized.flatMap((p) => [p.param, p.grad, p.m, p.v]).map((t) => t.buffer),
    ...extra.map((t) => t.buffer),
  ]);
}

/** Two optimizer steps; the arena's buffer count after the first and the second. */
async function twoSteps(gpu: Gpu, task: TrainTask, settings: { lr: number }) {
  const steps = new StepPipeline(gpu, {
    flat: task.flat,
    settings: presetSettings("tiny"),
    capacity: 2,
  });
  const counts: number[] = [];
  try {
    for (const step of [1, 2]) {
      await steps.record({ lr: settings.lr, step, arena: task.arena, micro: () => task.micro() });
      counts.push(task.arena.stats.created);
    }
    assert.ok((await steps.read()).every((st) => st.finite));
  } finally {
    steps.destroy();
  }
  return counts;
}

Deno.test("language evaluation reads no parameter back; steady-state steps allocate nothing", async () => {
  const s = applySettings(presetSettings("tiny"), { eval_tokens: 200, batch_size: 2 });
  const data = await tokenizeText("the quick brown fox jumps over the lazy dog. ".repeat(40), "t");
  const cfg: LanguageConfig = { ...language("tssa"), vocab_size: data.vocabSize, block_size: 32 };
  await withGpu(async (gpu) => {
    const task = createLanguageTask(gpu, cfg, s, data, {
      tensors: initialParameters(cfg, 3),
      sampler: { seed: 1, position: 0 },
    });
    try {
      const [after1, after2] = await twoSteps(gpu, task, { lr: 1e-3 });
      assert.ok(after1 > 0);
      assert.equal(after2, after1, "the second step takes the first step's buffers");
      const reads = await evaluateReads(gpu, task);
      assert.equal(reads.length, 1, "the evaluation reads its losses once");
      const params = modelBuffers(task);
      assert.deepEqual(reads.flat().filter((t) => params.has(t.buffer)), [], "no parameter read");
    } finally {
      task.destroy();
    }
  });
});

Deno.test("vision evaluation reads no parameter (or running statistic) back to the host", async () => {
  const s = applySettings(presetSettings("mnist"), {
    n_layer: 1,
    n_embd: 16,
    n_head: 2,
    batch_size: 4,
    eval_tokens: 8,
  });
  const cfg = visionModelConfig(s);
  await withGpu(async (gpu) => {
    const task = await createVisionTask(gpu, cfg, s, {
      tensors: initialParameters(cfg, 4),
      sampler: { seed: 1, position: 0 },
      batchesTracked: 0,
    });
    try {
      const [after1, after2] = await twoSteps(gpu, task, { lr: 1e-3 });
      assert.equal(after2, after1, "the second step takes the first step's buffers");
      const reads = await evaluateReads(gpu, task);
      assert.equal(reads.length, 1, "one read of the logits of both evaluation batches");
      const running = (task.extraTensors().gpu ?? []).map(([, t]) => t);
      assert.ok(running.length > 0);
      const params = modelBuffers(task, running);
      assert.deepEqual(reads.flat().filter((t) => params.has(t.buffer)), [], "no parameter read");
    } finally {
      task.destroy();
    }
  });
});
