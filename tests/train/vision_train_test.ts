/**
 * Vision training on MNIST through the same loop: a stopped and resumed run
 * equals an uninterrupted one bit for bit (parameters, AdamW moments,
 * BatchNorm running statistics and counters), and the checkpoint loads as a
 * vision model file.
 */

import assert from "node:assert/strict";
import { withGpu } from "../_util.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { readModelFile } from "../../src/model/load.ts";
import { train } from "../../src/train/loop.ts";
import { applySettings, presetSettings } from "../../src/train/presets.ts";

const settings = applySettings(presetSettings("mnist"), {
  n_layer: 1,
  n_embd: 32,
  n_head: 2,
  batch_size: 4,
  max_iters: 4,
  warmup_iters: 1,
  eval_interval: 2,
  eval_tokens: 8,
  gradient_accumulation_steps: 2,
});

Deno.test("vision training: 2 steps, stop, 2 resumed steps == 4 steps, bit for bit", async () => {
  const a = await Deno.makeTempDir();
  const b = await Deno.makeTempDir();
  try {
    await withGpu(async (gpu) => {
      const first = await train(gpu, settings, { out: a, stopAfter: 2 });
      assert.equal(first.status, "interrupted");
      const resumed = await train(gpu, settings, { out: a, resume: true });
      const whole = await train(gpu, settings, { out: b });
      assert.equal(resumed.step, 4);
      assert.equal(whole.step, 4);
      assert.equal(resumed.finalAccuracy, whole.finalAccuracy);
      assert.ok(whole.finalAccuracy !== null && whole.finalAccuracy >= 0);
    });
    const x = await readSafetensors(`${a}/last.safetensors`);
    const y = await readSafetensors(`${b}/last.safetensors`);
    assert.deepEqual(x.names, y.names);
    for (const name of ["blocks.0.attn.temp", "patch_embed.proj.0.1.running_var"]) {
      assert.ok(x.names.includes(name), name);
    }
    for (const name of x.names) assert.deepEqual(x.get(name).data, y.get(name).data, name);
    // 4 steps × 2 micro-batches of BatchNorm updates.
    assert.equal(x.i64("patch_embed.proj.0.1.num_batches_tracked")[0], 8n);
    const model = await readModelFile(`${a}/best.safetensors`);
    assert.equal(model.config.family, "vision");
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});
