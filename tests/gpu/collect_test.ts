/**
 * Pipelined evaluation (`collectBatches`): every batch's result reaches
 * `consume` in order and intact, whatever the read cadence and however the
 * collection buffer fills, with one host wait per read.
 */

import assert from "node:assert/strict";
import { f32 } from "../../src/gpu/runtime.ts";
import { Arena } from "../../src/gpu/arena.ts";
import { collectBatches } from "../../src/gpu/collect.ts";
import { withGpu } from "../_util.ts";
import { AXPI } from "./_axpi.ts";

/** Batches of awkward sizes (the last one short), each a ramp starting at its index. */
const SIZES = [7, 63, 1, 700, 63, 7, 5];

function expected(b: number): number[] {
  return Array.from({ length: SIZES[b] }, (_, i) => (b + i) * 2 + i);
}

for (
  const [readEvery, capacity, reads] of [
    [undefined, undefined, 1],
    [1, undefined, 7],
    [3, undefined, 3],
    [undefined, 710, 3], // full after batches 0–2 and 3, then the rest
  ] as const
) {
  Deno.test(`collectBatches: readEvery ${readEvery}, capacity ${capacity}: ${reads} reads`, async () => {
    await withGpu(async (gpu) => {
      const k = await gpu.kernel("test_axpi", AXPI);
      const arena = new Arena(gpu, "test");
      const got: [number, number[]][] = [];
      const progress: number[] = [];
      const w0 = gpu.counters().waits;
      try {
        await collectBatches(gpu, SIZES.keys(), {
          arena,
          readEvery,
          capacity,
          record: (b) => {
            const x = gpu.upload(Float32Array.from({ length: SIZES[b] }, (_, i) => b + i), [
              SIZES[b],
            ]);
            const y = gpu.empty([SIZES[b]]);
            gpu.dispatch(k, {
              bindings: [x, y],
              params: [SIZES[b], f32(2)],
              workgroups: Math.ceil(SIZES[b] / 64),
            });
            return Promise.resolve(y);
          },
          consume: (b, values) => void got.push([b, [...values]]),
          onRead: (n) => void progress.push(n),
        });
      } finally {
        arena.destroy();
      }
      assert.deepEqual(got, SIZES.map((_, b) => [b, expected(b)]));
      assert.equal(gpu.counters().waits - w0, reads);
      assert.equal(progress.length, reads);
      assert.equal(progress.at(-1), SIZES.length);
    });
  });
}

Deno.test("collectBatches refuses a batch larger than its capacity", async () => {
  await withGpu(async (gpu) => {
    const arena = new Arena(gpu, "test");
    try {
      await assert.rejects(
        collectBatches(gpu, [0], {
          arena,
          capacity: 4,
          record: () => Promise.resolve(gpu.empty([5])),
          consume: () => {},
        }),
        /5 values exceeds the collection's 4/,
      );
    } finally {
      arena.destroy();
    }
  });
});
