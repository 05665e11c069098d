import assert from "node:assert/strict";
import { Arena, withArena } from "../../src/gpu/arena.ts";
import { withGpu } from "../_util.ts";

Deno.test("an arena hands the same buffers out again, in the same order, after a reset", async () => {
  await withGpu(async (gpu) => {
    const arena = new Arena(gpu, "test");
    const pass = () =>
      arena.use(() => {
        const a = gpu.empty([7], "f32", "a");
        const b = gpu.empty([3, 5], "f32", "b");
        const c = gpu.upload(new Float32Array([1, 2, 3, 4, 5, 6, 7]), [7], "c");
        return Promise.resolve([a, b, c]);
      });
    const first = await pass();
    const created = arena.stats.created;
    assert.equal(created, 3);
    assert.equal(arena.stats.live, 3);
    arena.reset();
    assert.ok(first.every((t) => t.destroyed), "the last pass's tensors are destroyed");
    const second = await pass();
    assert.equal(arena.stats.created, created, "steady state creates no buffer");
    assert.deepEqual(second.map((t) => t.buffer), first.map((t) => t.buffer));
    assert.deepEqual(second[1].shape, [3, 5]);
    arena.destroy();
    assert.equal(gpu.memory().liveBuffers, 0);
  });
});

Deno.test("arena buffers given back mid-pass are reused by a later allocation, cleared", async () => {
  await withGpu(async (gpu) => {
    const arena = new Arena(gpu);
    await arena.use(async () => {
      const a = gpu.upload(new Float32Array([5, 6, 7, 8]), [4]);
      const buffer = a.buffer;
      a.destroy();
      const b = gpu.empty([2, 2]);
      assert.equal(b.buffer, buffer, "same size: the freed buffer");
      assert.deepEqual([...(await b.read())], [0, 0, 0, 0], "handed out zeroed");
      const c = gpu.empty([4]);
      assert.notEqual(c.buffer, buffer, "busy buffers are not shared");
      const e = gpu.upload(new Float32Array(12).fill(3), [12]);
      const eBuffer = e.buffer;
      e.destroy();
      const d = gpu.empty([8]);
      assert.equal(d.buffer, eBuffer, "a free buffer up to twice the size serves a smaller tensor");
      assert.deepEqual([...(await d.read())], new Array(8).fill(0));
      const big = gpu.empty([64]);
      big.destroy();
      const small = gpu.empty([5]);
      assert.notEqual(small.buffer, big.buffer, "a small tensor does not pin a large buffer");
    });
    assert.equal(arena.stats.buffers, 5);
    arena.destroy();
  });
});

Deno.test("outsideArena allocations and views outlive the arena's passes", async () => {
  await withGpu(async (gpu) => {
    const arena = new Arena(gpu);
    const kept = await arena.use(() => {
      const t = gpu.outsideArena(() => gpu.upload(new Float32Array([1, 2]), [2]));
      const temp = gpu.empty([2]);
      return Promise.resolve({ t, view: temp.view([1, 2]) });
    });
    arena.reset();
    assert.equal(kept.t.destroyed, false);
    assert.equal(kept.view.destroyed, true, "a view dies with its source");
    assert.deepEqual([...(await kept.t.read())], [1, 2]);
    kept.t.destroy();
    arena.destroy();
  });
});

Deno.test("arena scopes nest, refuse interleaving and withArena cleans up after itself", async () => {
  await withGpu(async (gpu) => {
    const outer = new Arena(gpu, "outer");
    const inner = new Arena(gpu, "inner");
    await outer.use(async () => {
      await inner.use(() => Promise.resolve(gpu.empty([3])));
      gpu.empty([3]);
    });
    assert.equal(outer.stats.live, 1);
    assert.equal(inner.stats.live, 1);
    gpu._enterArena(outer);
    assert.throws(() => gpu._leaveArena(inner), /interleaved/);
    gpu._leaveArena(outer);
    const sum = await withArena(gpu, undefined, async () => {
      const t = gpu.upload(new Float32Array([1, 2, 3]), [3]);
      return [...(await t.read())].reduce((a, b) => a + b, 0);
    });
    assert.equal(sum, 6);
    outer.destroy();
    inner.destroy();
    await assert.rejects(() => outer.use(() => Promise.resolve()), /after destroy/);
    assert.equal(gpu.memory().liveBuffers, 0);
  });
});

Deno.test("a repeated pass replays the previous pass's buffers: the second pass creates none", async () => {
  await withGpu(async (gpu) => {
    const arena = new Arena(gpu, "t");
    // Best fit alone fails this pass: the second time, the first 24-float
    // tensor takes the buffer the first pass made for the second one, the
    // second takes the 32-float buffer, and the last 32-float tensor finds
    // none free.
    const pass = () =>
      arena.use(() => {
        gpu.empty([32]).destroy();
        const a = gpu.empty([24]);
        gpu.empty([24]);
        a.destroy();
        gpu.empty([32]);
        return Promise.resolve();
      });
    try {
      await pass();
      const first = arena.stats.created;
      assert.equal(first, 2);
      for (let k = 0; k < 3; k++) {
        arena.reset();
        await pass();
        assert.equal(arena.stats.created, first, `pass ${k + 2} creates no buffer`);
      }
    } finally {
      arena.destroy();
    }
  });
});
