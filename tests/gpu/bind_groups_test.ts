/**
 * The runtime's bind-group cache: repeated dispatches on the same buffers
 * and uniform slots reuse their bind group, results stay right, and a
 * destroyed buffer is never bound from the cache. Also the wait counter and
 * `readMany` (one wait for several tensors).
 */

import assert from "node:assert/strict";
import { f32, Gpu } from "../../src/gpu/runtime.ts";
import { Arena } from "../../src/gpu/arena.ts";
import { BindGroupCache } from "../../src/gpu/bind_groups.ts";
import { withGpu } from "../_util.ts";
import { AXPI } from "./_axpi.ts";

Deno.test("bind groups are reused across submits for the same buffers and uniform slots", async () => {
  await withGpu(async (gpu) => {
    const k = await gpu.kernel("test_axpi", AXPI);
    const x = gpu.upload(new Float32Array([1, 2, 3, 4, 5, 6, 7]), [7]);
    const y = gpu.empty([7]);
    const start = gpu.counters().bindGroups;
    const pass = (scale: number) => {
      // Two dispatches per submit: two uniform slots, two bind groups.
      gpu.dispatch(k, { bindings: [x, y], params: [7, f32(scale)], workgroups: 1 });
      gpu.dispatch(k, { bindings: [x, y], params: [7, f32(scale + 1)], workgroups: 1 });
      gpu.flush();
    };
    pass(1);
    let s = gpu.counters().bindGroups;
    assert.equal(s.misses - start.misses, 2);
    assert.equal(s.hits - start.hits, 0);
    for (let i = 0; i < 3; i++) pass(10 * i);
    s = gpu.counters().bindGroups;
    assert.equal(s.misses - start.misses, 2, "steady state creates no bind group");
    assert.equal(s.hits - start.hits, 6);
    // The uniform values differ per pass although the bind group is the same.
    const expected = Array.from({ length: 7 }, (_, i) => (i + 1) * 21 + i);
    assert.deepEqual([...(await y.read())], expected);
  });
});

Deno.test("a destroyed buffer is never bound from the cache", async () => {
  await withGpu(async (gpu) => {
    const k = await gpu.kernel("test_axpi", AXPI);
    const y = gpu.empty([7]);
    let x = gpu.upload(new Float32Array(7).fill(1), [7]);
    gpu.dispatch(k, { bindings: [x, y], params: [7, f32(1)], workgroups: 1 });
    gpu.flush();
    assert.ok(gpu._bindGroupCached(x));
    const old = x;
    x.destroy();
    assert.ok(!gpu._bindGroupCached(old), "its bind groups are dropped with it");
    assert.throws(
      () => gpu.dispatch(k, { bindings: [old, y], params: [7, f32(1)], workgroups: 1 }),
      /destroyed tensor/,
    );
    // A new buffer of the same size in the same uniform slot makes a new bind group.
    const before = gpu.counters().bindGroups;
    x = gpu.upload(new Float32Array(7).fill(2), [7]);
    gpu.dispatch(k, { bindings: [x, y], params: [7, f32(1)], workgroups: 1 });
    const after = gpu.counters().bindGroups;
    assert.equal(after.misses - before.misses, 1);
    assert.deepEqual([...(await y.read())], [2, 3, 4, 5, 6, 7, 8]);
    assert.ok(gpu._bindGroupCached(x));
    assert.ok(gpu._bindGroupCached(y));
  });
});

Deno.test("an arena's buffers hit the cache pass after pass, and leave it with the arena", async () => {
  await withGpu(async (gpu) => {
    const k = await gpu.kernel("test_axpi", AXPI);
    const arena = new Arena(gpu, "test");
    const x = gpu.upload(new Float32Array(63).fill(3), [63]);
    let kept = x;
    const pass = () =>
      arena.use(() => {
        const a = gpu.empty([63]);
        const b = gpu.empty([63]);
        gpu.dispatch(k, { bindings: [x, a], params: [63, f32(2)], workgroups: 1 });
        gpu.dispatch(k, { bindings: [a, b], params: [63, f32(1)], workgroups: 1 });
        kept = b;
        return Promise.resolve();
      });
    arena.reset();
    await pass();
    gpu.flush();
    const before = gpu.counters().bindGroups;
    for (let i = 0; i < 4; i++) {
      arena.reset();
      await pass();
      gpu.flush();
    }
    const after = gpu.counters().bindGroups;
    assert.equal(after.misses, before.misses);
    assert.equal(after.hits - before.hits, 8);
    const values = await gpu.read(kept);
    assert.equal(values[5], 6 + 5 + 5);
    const cached = after.cached;
    arena.destroy();
    assert.equal(gpu.counters().bindGroups.cached, cached - 2);
  });
});

Deno.test("the cache holds at most its capacity, dropping the oldest", async () => {
  await withGpu(async (gpu) => {
    const k = await gpu.kernel("test_axpi", AXPI);
    const cache = new BindGroupCache(gpu.device, 2);
    const bufs = [0, 1, 2].map(() =>
      gpu.device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE })
    );
    const uniform = gpu.device.createBuffer({ size: 256, usage: GPUBufferUsage.UNIFORM });
    const entries = (b: GPUBuffer) => [
      { binding: 0, buffer: uniform, offset: 0, size: 256 },
      { binding: 1, buffer: b, offset: 0, size: 64 },
      { binding: 2, buffer: bufs[0], offset: 0, size: 64 },
    ];
    for (const b of bufs) cache.get(k.pipeline, "t", entries(b));
    assert.deepEqual(cache.stats, { hits: 0, misses: 3, cached: 2 });
    cache.get(k.pipeline, "t", entries(bufs[2]));
    cache.get(k.pipeline, "t", entries(bufs[0])); // the oldest went: made again
    assert.deepEqual(cache.stats, { hits: 1, misses: 4, cached: 2 });
    assert.ok(!cache.binds(bufs[1]));
    cache.forget(bufs[0]); // bound by both groups
    assert.equal(cache.stats.cached, 0);
    // Storage textures: cached by view, dropped with it.
    const tk = await gpu.kernel(
      "test_texture",
      `@group(0) @binding(1) var t: texture_storage_2d<rgba32float, write>;
       @compute @workgroup_size(1) fn main() { textureStore(t, vec2u(0u, 0u), vec4f(1.0)); }`,
    );
    const texture = gpu.device.createTexture({
      size: [4, 4],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING,
    });
    const view = texture.createView();
    const a = cache.get(tk.pipeline, "t", [{ binding: 1, view }]);
    assert.equal(cache.get(tk.pipeline, "t", [{ binding: 1, view }]), a);
    assert.notEqual(cache.get(tk.pipeline, "t", [{ binding: 1, view: texture.createView() }]), a);
    assert.ok(cache.binds(view));
    cache.forget(view);
    assert.ok(!cache.binds(view));
    texture.destroy();
    for (const b of [...bufs, uniform]) b.destroy();
    assert.throws(() => new BindGroupCache(gpu.device, 0), /capacity/);
  });
});

Deno.test("readMany reads several tensors (or byte ranges) under one wait; waits are counted", async () => {
  await withGpu(async (gpu) => {
    const a = gpu.upload(new Float32Array([1.5, -2]), [2]);
    const b = gpu.upload(new Int32Array([-7, 8, 9]), [3]);
    const c = gpu.upload(new Uint32Array([42]), [1]);
    const w0 = gpu.counters().waits;
    const [ra, rb, rc] = await gpu.readMany([a, b, c]);
    assert.equal(gpu.counters().waits - w0, 1);
    assert.ok(ra instanceof Float32Array && rb instanceof Int32Array && rc instanceof Uint32Array);
    assert.deepEqual([...ra], [1.5, -2]);
    assert.deepEqual([...rb], [-7, 8, 9]);
    assert.deepEqual([...rc], [42]);
    await gpu.sync();
    await a.read();
    assert.equal(gpu.counters().waits - w0, 3);
    assert.deepEqual(await gpu.readMany([]), []);
    // Byte ranges, alone or with whole tensors.
    const [part, whole] = await gpu.readMany([{ tensor: b, offset: 4, size: 8 }, c]);
    assert.deepEqual([...part], [8, 9]);
    assert.deepEqual([...whole], [42]);
    assert.throws(() => gpu.readMany([{ tensor: b, offset: 2, size: 4 }]), /multiples of 4/);
    assert.throws(() => gpu.readMany([{ tensor: b, offset: 0, size: 64 }]), /multiples of 4/);
    a.destroy();
    assert.throws(() => gpu.readMany([a]), /destroyed/);
  });
});

Deno.test("captureErrors rejects a validation error without waiting for the GPU", async () => {
  const gpu = await Gpu.create();
  try {
    const k = await gpu.kernel("test_axpi", AXPI);
    const t = gpu.empty([64]);
    const w0 = gpu.counters().waits;
    await assert.rejects(
      gpu.captureErrors(() => {
        gpu.dispatch(k, { bindings: [t], params: [1, f32(1)], workgroups: 1 });
        return Promise.resolve();
      }),
      /WebGPU error/,
    );
    assert.equal(gpu.counters().waits, w0);
    assert.equal(await gpu.captureErrors(() => Promise.resolve(5)), 5);
  } finally {
    gpu.destroy();
  }
});
