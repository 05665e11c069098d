/**
 * Training runs end to end on a small in-memory text: 10 steps, a stop, and
 * a resumed 10 steps give bit-identical parameters and optimizer state to 20
 * uninterrupted steps; a diverging run stops with a clear error and keeps a
 * loadable checkpoint; checkpoints load as models.
 */

import assert from "node:assert/strict";
import { withGpu } from "../_util.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { readModelFile } from "../../src/model/load.ts";
import { tokenizeText } from "../../src/train/data.ts";
import type { TextDataset } from "../../src/train/data.ts";
import { train, TrainingError } from "../../src/train/loop.ts";
import { applySettings, presetSettings } from "../../src/train/presets.ts";
import type { TrainSettings } from "../../src/train/presets.ts";

function corpus(): string {
  const words = ["the", "union", "state", "of", "is", "strong", "we", "shall", "and", "people"];
  let s = 1;
  const out: string[] = [];
  for (let i = 0; i < 6000; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out.push(words[(s >>> 16) % words.length]);
    if (i % 13 === 12) out.push(".\n");
  }
  return out.join(" ");
}

let dataset: TextDataset | undefined;
async function data(): Promise<TextDataset> {
  dataset ??= await tokenizeText(corpus(), "test corpus", "char");
  return dataset;
}

function settings(overrides: Partial<TrainSettings> = {}): TrainSettings {
  return applySettings(presetSettings("tiny"), {
    max_iters: 20,
    eval_interval: 5,
    eval_tokens: 256,
    batch_size: 4,
    block_size: 16,
    gradient_accumulation_steps: 2,
    sample_tokens: 0,
    data: "test corpus",
    ...overrides,
  });
}

async function tensorsOf(path: string): Promise<Map<string, Uint8Array>> {
  const f = await readSafetensors(path);
  return new Map(f.names.map((n) => [n, f.get(n).data]));
}

Deno.test("resume: 10 steps, stop, 10 resumed steps == 20 steps, bit for bit", async () => {
  const a = await Deno.makeTempDir();
  const b = await Deno.makeTempDir();
  try {
    await withGpu(async (gpu) => {
      const dataset = await data();
      const first = await train(gpu, settings(), { out: a, stopAfter: 10, dataset });
      assert.equal(first.status, "interrupted");
      assert.equal(first.step, 10);
      const resumed = await train(gpu, settings(), { out: a, resume: true, dataset });
      assert.equal(resumed.status, "finished");
      assert.equal(resumed.step, 20);
      const whole = await train(gpu, settings(), { out: b, dataset });
      assert.equal(whole.step, 20);
      assert.equal(resumed.finalValLoss, whole.finalValLoss);
      // Loss fell.
      assert.ok(whole.curve[0].loss > whole.finalValLoss! + 0.3, JSON.stringify(whole.curve[0]));
    });
    const x = await tensorsOf(`${a}/last.safetensors`);
    const y = await tensorsOf(`${b}/last.safetensors`);
    assert.deepEqual([...x.keys()].sort(), [...y.keys()].sort());
    assert.ok([...x.keys()].some((n) => n.startsWith("optimizer.exp_avg_sq.")));
    for (const [name, bytes] of x) assert.deepEqual(bytes, y.get(name), name);
    const meta = (await readSafetensors(`${a}/last.safetensors`)).metadata;
    const training = JSON.parse(meta.training);
    assert.equal(training.step, 20);
    assert.deepEqual(training.sampler, { seed: 1337, position: 40 });
    // The checkpoint is a model file: config, vocabulary, the tied head.
    const model = await readModelFile(`${a}/best.safetensors`);
    assert.equal(model.config.family, "language");
    assert.deepEqual(model.vocab, (await data()).vocab);
    assert.ok(!model.tensors.has("optimizer.exp_avg.transformer.wte.weight"));
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});

Deno.test("a diverging run stops with a clear error and keeps the last good checkpoint", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await withGpu(async (gpu) => {
      const err = await train(gpu, settings({ learning_rate: 1e30, min_lr: 1e30, grad_clip: 0 }), {
        out: dir,
        dataset: await data(),
      }).then(() => null, (e) => e);
      assert.ok(err instanceof TrainingError, String(err));
      assert.match(err.message, /not finite/);
      assert.match(err.message, /last good checkpoint is .*last\.safetensors \(step \d+\)/);
      assert.match(err.message, /tost train --resume --out/);
      const saved = JSON.parse(
        (await readSafetensors(`${dir}/last.safetensors`)).metadata.training,
      );
      const good = await readModelFile(`${dir}/last.safetensors`);
      assert.equal(good.config.family, "language");
      for (const t of good.tensors.values()) {
        assert.ok(new Float32Array(t.data.slice().buffer).every(Number.isFinite));
      }
      assert.ok(saved.step >= 0);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resume after a crash logs every step once; the untrained model is never best", async () => {
  const a = await Deno.makeTempDir();
  const b = await Deno.makeTempDir();
  try {
    await withGpu(async (gpu) => {
      const dataset = await data();
      const s = settings({ log_interval: 1 });
      await train(gpu, s, { out: a, stopAfter: 10, dataset });
      // A crash after the checkpoint at step 10: the log already holds later steps, one cut.
      await Deno.writeTextFile(
        `${a}/log.jsonl`,
        '{"step":11,"loss":9}\n{"step":12,"val_loss":9,"best":true}\n{"step":13,"lo',
        { append: true },
      );
      await train(gpu, s, { out: a, resume: true, dataset });
      const whole = await train(gpu, s, { out: b, dataset });
      assert.equal(whole.bestValLoss !== null && whole.bestValLoss < whole.curve[0].loss, true);
    });
    const steps = async (dir: string) =>
      (await Deno.readTextFile(`${dir}/log.jsonl`)).trim().split("\n").map((l) => {
        const r = JSON.parse(l);
        return `${r.step}:${"val_loss" in r ? `val ${r.val_loss} ${r.best}` : `train ${r.loss}`}`;
      });
    assert.deepEqual(await steps(a), await steps(b));
    const first = (await steps(b))[0];
    assert.match(first, /^0:val .* false$/, "step 0 is a baseline, never the best");
    const best = JSON.parse((await readSafetensors(`${b}/best.safetensors`)).metadata.training);
    assert.ok(best.step > 0);
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});
