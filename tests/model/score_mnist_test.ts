/**
 * scoreMnist, the evaluation loop of `tost evaluate`, training validation and
 * `tost bench --eval`: pipelined batches give the counts that batch-by-batch
 * forwards, scored in float64 here, give.
 */

import assert from "node:assert/strict";
import { withGpu } from "../_util.ts";
import { loadMnistTest, mnistBatch } from "../../src/data/mnist.ts";
import { Arena } from "../../src/gpu/arena.ts";
import { destroyModel, readModelFile, uploadModel } from "../../src/model/load.ts";
import { visionForward } from "../../src/model/vision/model.ts";
import { scoreLogits, scoreMnist } from "../../src/model/vision/score_mnist.ts";

const MODEL = new URL("../fixtures/tost_vision_small.pth", import.meta.url).pathname;

Deno.test("scoreLogits: summed cross-entropy in float64, ties to the lower class", () => {
  const logits = new Float32Array([1, 1, 0, /* */ 0, 2, 5]);
  const r = scoreLogits(logits, [0, 1], 3);
  const lse = (xs: number[]) => Math.log(xs.reduce((s, x) => s + Math.exp(x), 0));
  assert.ok(Math.abs(r.loss - ((lse([1, 1, 0]) - 1) + (lse([0, 2, 5]) - 2))) < 1e-12);
  assert.equal(r.correct, 1); // row 0: tie of classes 0 and 1 → 0, correct; row 1: 2 ≠ 1
});

Deno.test("scoreMnist: pipelined batches (awkward last batch) score as batch-by-batch forwards", async () => {
  const set = await loadMnistTest();
  const file = await readModelFile(MODEL);
  if (file.config.family !== "vision") throw new Error("fixture is a vision model");
  const cfg = file.config;
  await withGpu(async (gpu) => {
    const model = uploadModel(gpu, file);
    const arena = new Arena(gpu, "test");
    try {
      const start = 5, count = 37, batch = 8; // batches of 8, 8, 8, 8, 5
      const reads: number[] = [];
      const got = await scoreMnist(gpu, model.params, set, {
        start,
        count,
        batchSize: batch,
        inChans: cfg.in_chans,
        numClasses: cfg.num_classes,
        arena,
        readEvery: 2,
        onRead: (done) => reads.push(done),
      });
      let loss = 0, correct = 0;
      for (let at = start; at < start + count; at += batch) {
        const B = Math.min(batch, start + count - at);
        const shape = [B, cfg.in_chans, set.rows, set.cols] as const;
        const { logits } = await visionForward(
          gpu,
          model.params,
          mnistBatch(set, at, B, cfg.in_chans),
          shape,
        );
        const r = scoreLogits(logits, set.labels.subarray(at, at + B), cfg.num_classes);
        loss += r.loss;
        correct += r.correct;
      }
      assert.equal(got.images, count);
      assert.equal(got.correct, correct);
      assert.ok(
        Math.abs(got.loss - loss) <= 1e-4 * Math.max(1, Math.abs(loss)),
        `${got.loss} vs ${loss}`,
      );
      assert.deepEqual(reads, [16, 32, 37], "a read every 2 batches and one at the end");
      await assert.rejects(
        scoreMnist(gpu, model.params, set, {
          start: set.count - 3,
          count: 4,
          batchSize: 2,
          inChans: cfg.in_chans,
          numClasses: cfg.num_classes,
          arena,
        }),
        /MNIST digits 9997\.\.10001 outside 0\.\.10000/,
      );
    } finally {
      arena.destroy();
      destroyModel(model);
    }
  });
});
