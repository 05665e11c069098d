import assert from "node:assert/strict";
import { f32, foldWorkgroups, formatBytes, Gpu, numel } from "../../src/gpu/runtime.ts";
import { renderKernel, renderWgsl } from "../../src/gpu/render.ts";
import { WGSL_LIBRARY } from "../../src/gpu/wgsl_library.ts";
import { rowChunks } from "../../src/gpu/chunks.ts";
import { withGpu } from "../_util.ts";

// A test kernel: y[i] = x[i] * scale + i, over a folded 1-D grid.
const AXPI = `
struct Params { n: u32, scale: f32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size({{wg}})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let group = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
  let i = group * {{wg}}u + lid;
  if (i >= params.n) { return; }
  y[i] = x[i] * params.scale + f32(i);
}`;

Deno.test("renderWgsl fills slots and rejects leftovers and unknown names", () => {
  assert.equal(renderWgsl("k", "a {{x}} b {{ y }}", { x: 1, y: "z" }), "a 1 b z");
  assert.throws(() => renderWgsl("k", "a {{x}} {{w}}", { x: 1 }), /no value for slot\(s\) w/);
  assert.throws(() => renderWgsl("k", "a {{x}}", { x: 1, q: 2 }), /unknown slot\(s\) q/);
  assert.throws(() => renderWgsl("k", "a {{x} }", {}), /malformed slot/);
  assert.throws(() => renderWgsl("k", "{{x}}", { x: NaN }), RangeError);
});

Deno.test("includes pull snippets from kernels/lib once, with a line map", () => {
  const lib = {
    a: "fn a() {}",
    b: "{{include a}}\nfn b() { a(); }",
    bad: "  {{include nowhere}}",
  };
  const r = renderKernel("k", "x {{n}}\n{{include b}}\n  {{ include a }}  \ny", { n: 3 }, lib);
  assert.equal(r.code, "x 3\nfn a() {}\nfn b() { a(); }\ny");
  assert.deepEqual(r.origins, [
    { file: "kernels/k.wgsl", line: 1 },
    { file: "kernels/lib/a.wgsl", line: 1 },
    { file: "kernels/lib/b.wgsl", line: 2 },
    { file: "kernels/k.wgsl", line: 4 },
  ]);
  assert.throws(
    () => renderKernel("k", "{{include c}}", {}, lib),
    /kernels\/k\.wgsl:1 includes unknown snippet "c" \(known: a, b, bad\)/,
  );
  assert.throws(
    () => renderKernel("k", "{{include bad}}", {}, lib),
    /kernels\/lib\/bad\.wgsl:1 includes unknown snippet "nowhere"/,
  );
  assert.throws(() => renderKernel("k", "let x = 1; {{include a}}", {}, lib), /alone on its line/);
  // A slot of several lines maps each of them to the line holding the slot.
  const multi = renderKernel("k", "x\n  {{body}}\ny", { body: "a;\nb;" }, lib);
  assert.equal(multi.code, "x\n  a;\nb;\ny");
  assert.deepEqual(multi.origins.map((o) => o.line), [1, 2, 2, 3]);
});

Deno.test("the WGSL library table lists exactly the files in kernels/lib", () => {
  const dir = new URL("../../kernels/lib/", import.meta.url);
  const files = [...Deno.readDirSync(dir)]
    .filter((e) => e.isFile && e.name.endsWith(".wgsl"))
    .map((e) => e.name.slice(0, -5))
    .sort();
  assert.deepEqual(Object.keys(WGSL_LIBRARY).sort(), files);
  for (const name of files) {
    assert.equal(WGSL_LIBRARY[name], Deno.readTextFileSync(new URL(`${name}.wgsl`, dir)));
  }
});

Deno.test("foldWorkgroups splits counts over 65535 into y and z", () => {
  assert.deepEqual(foldWorkgroups(7, 65535), [7, 1, 1]);
  assert.deepEqual(foldWorkgroups(65535, 65535), [65535, 1, 1]);
  assert.deepEqual(foldWorkgroups(65536, 65535), [65535, 2, 1]);
  assert.deepEqual(foldWorkgroups(10, 4), [4, 3, 1]);
  assert.deepEqual(foldWorkgroups(17, 4), [4, 4, 2]);
  assert.throws(() => foldWorkgroups(65, 4), RangeError);
  assert.throws(() => foldWorkgroups(-1, 4), RangeError);
});

Deno.test("rowChunks keeps chunks within the limit and aligned", () => {
  for (
    const [rows, rowBytes, max, align] of [[1000, 12, 1000, 256], [7, 4, 8, 4], [5, 256, 256, 256]]
  ) {
    const chunks = rowChunks(rows, rowBytes, max, align);
    let next = 0;
    for (const c of chunks) {
      assert.equal(c.start, next);
      assert.ok(c.count * rowBytes <= max);
      assert.equal((c.start * rowBytes) % align, 0);
      next += c.count;
    }
    assert.equal(next, rows);
  }
  assert.deepEqual(rowChunks(0, 4, 8, 4), []);
  assert.throws(() => rowChunks(10, 3, 8, 256), RangeError);
});

Deno.test("numel and formatBytes", () => {
  assert.equal(numel([]), 1);
  assert.equal(numel([2, 3, 0]), 0);
  assert.throws(() => numel([2, -1]), TypeError);
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(128 * 1024 * 1024), "128.0 MiB");
});

Deno.test("a dispatch of more than 65535 workgroups covers every element", async () => {
  await withGpu(async (gpu) => {
    const wg = 64;
    const n = 65535 * wg + 1000; // 65551 workgroups: folds into y
    const x = new Float32Array(n).fill(2);
    const tx = gpu.upload(x, [n], "x");
    const ty = gpu.empty([n], "f32", "y");
    const k = await gpu.kernel("test_axpi", AXPI, { wg });
    gpu.dispatch(k, { bindings: [tx, ty], params: [n, f32(0.5)], workgroups: Math.ceil(n / wg) });
    const y = await ty.read();
    for (const i of [0, 1, 65535 * wg - 1, 65535 * wg, n - 1]) assert.equal(y[i], 1 + i);
    let bad = 0;
    for (let i = 0; i < n; i++) if (y[i] !== 1 + Math.fround(i)) bad++;
    assert.equal(bad, 0);
  });
});

Deno.test("binding ranges address pieces of one buffer", async () => {
  await withGpu(async (gpu) => {
    const align = gpu.limits.minStorageBufferOffsetAlignment;
    const per = align / 4; // floats per aligned piece
    const n = per * 3;
    const tx = gpu.upload(new Float32Array(n).map((_, i) => i), [n], "x");
    const ty = gpu.empty([n], "f32", "y");
    const k = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    // Only the middle piece: y[per..2per) = x[per..2per) * 1 + local index.
    gpu.dispatch(k, {
      bindings: [{ tensor: tx, offset: align, size: align }, {
        tensor: ty,
        offset: align,
        size: align,
      }],
      params: [per, f32(1)],
      workgroups: Math.ceil(per / 64),
    });
    const y = await ty.read();
    assert.equal(y[0], 0);
    assert.equal(y[per], per + 0);
    assert.equal(y[2 * per - 1], 2 * per - 1 + per - 1);
    assert.equal(y[2 * per], 0);
  });
});

Deno.test("slices are bound, written, read, copied and cleared as tensors of their own", async () => {
  await withGpu(async (gpu) => {
    const per = gpu.limits.minStorageBufferOffsetAlignment / 4;
    const whole = gpu.upload(new Float32Array(4 * per).fill(9), [4 * per], "whole");
    assert.throws(() => whole.slice(1, [3]), /not a multiple/);
    assert.throws(() => whole.slice(3 * per, [per + 1]), /Cannot slice/);
    const a = whole.slice(per, [7]); // 7 values: the binding rounds up past them
    const b = whole.slice(2 * per, [7]);
    // WebGPU forbids one buffer read-only and writable in a dispatch: y is another one.
    const other = gpu.empty([2 * per], "f32", "other");
    const y = other.slice(per, [7]);
    assert.equal(a.view([7, 1]).offset, a.offset);
    gpu.write(a, new Float32Array(7).map((_, i) => i));
    assert.deepEqual([...await a.read()], [0, 1, 2, 3, 4, 5, 6]);
    const k = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    gpu.dispatch(k, { bindings: [a, y], params: [7, f32(2)], workgroups: 1 });
    assert.deepEqual([...await y.read()], [0, 3, 6, 9, 12, 15, 18]);
    assert.equal((await other.read())[per - 1], 0, "bytes before the bound slice untouched");
    gpu.copy(y, b);
    const [viaRange] = await gpu.readMany([{ tensor: b, offset: 4, size: 8 }]);
    assert.deepEqual([...viaRange], [3, 6]);
    gpu.copy(y, a, 8, 4, 0);
    assert.deepEqual([...await gpu.read(a, 0, 12)], [3, 6, 2]);
    gpu.clear(a);
    const all = await whole.read();
    assert.deepEqual([...all.slice(per, per + 7)], new Array(7).fill(0));
    assert.equal(all[per - 1], 9, "bytes before the slice untouched");
    assert.equal(all[per + 16], 9, "bytes past the slice's binding untouched");
    assert.equal(all[2 * per + 1], 3, "the other slice untouched");
    whole.destroy();
    other.destroy();
    assert.ok(a.destroyed, "a slice dies with its source");
  });
});

Deno.test("compile errors name the kernel and line:col", async () => {
  await withGpu(async (gpu) => {
    await assert.rejects(
      gpu.kernel("broken", "fn main( {}\n"),
      (err: Error) => {
        assert.ok(err instanceof SyntaxError);
        assert.match(err.message, /Kernel "broken" failed to compile: kernels\/broken\.wgsl:1:10/);
        return true;
      },
    );
    // A failed compile is not cached as a success.
    await assert.rejects(gpu.kernel("broken", "fn main( {}\n"), SyntaxError);
    // Lines after an include still point at the kernel's own file and line.
    await assert.rejects(
      gpu.kernel("broken2", "// one\n{{include grid}}\nfn main( {}\n"),
      /kernels\/broken2\.wgsl:3:10/,
    );
  });
});

Deno.test("pipelines are cached by name and slots", async () => {
  await withGpu(async (gpu) => {
    const a = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    const b = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    const c = await gpu.kernel("test_axpi", AXPI, { wg: 32 });
    assert.equal(a, b);
    assert.notEqual(a, c);
    assert.notEqual(a.key, c.key);
  });
});

Deno.test("the dispatch listener sees every recorded dispatch's kernel", async () => {
  await withGpu(async (gpu) => {
    const k32 = await gpu.kernel("test_axpi", AXPI, { wg: 32 });
    const k64 = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    const x = gpu.upload(new Float32Array(8), [8]);
    const y = gpu.empty([8]);
    const seen: string[] = [];
    gpu.onDispatch = (k) => seen.push(k.key);
    for (const k of [k32, k64, k32]) {
      gpu.dispatch(k, { bindings: [x, y], params: [8, f32(1)], workgroups: 1 });
    }
    gpu.onDispatch = null;
    gpu.dispatch(k64, { bindings: [x, y], params: [8, f32(1)], workgroups: 1 });
    assert.deepEqual(seen, [k32.key, k64.key, k32.key]);
    await gpu.sync();
  });
});

Deno.test("allocation counter tracks live and peak bytes", async () => {
  await withGpu((gpu) => {
    const before = gpu.memory();
    const a = gpu.empty([1024], "f32", "a");
    const b = gpu.empty([256], "f32", "b");
    assert.equal(gpu.memory().liveBytes - before.liveBytes, 5120);
    a.destroy();
    a.destroy(); // idempotent
    assert.equal(gpu.memory().liveBytes - before.liveBytes, 1024);
    assert.equal(gpu.memory().peakBytes - before.liveBytes, 5120);
    gpu.resetPeak();
    assert.equal(gpu.memory().peakBytes, gpu.memory().liveBytes);
    b.destroy();
    assert.throws(() => gpu.empty([gpu.limits.maxBufferSize], "f32", "huge"), /needs .* allows/);
    return Promise.resolve();
  });
});

Deno.test("a binding over the device limit is refused with both sizes named", async () => {
  await withGpu(async (gpu) => {
    const k = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    const tooBig = gpu.limits.maxStorageBufferBindingSize / 4 + 64;
    const t = gpu.empty([tooBig], "f32", "big");
    assert.throws(
      () => gpu.dispatch(k, { bindings: [t, t], params: [1, f32(1)], workgroups: 1 }),
      /binding 1 is .* the device allows/,
    );
  });
});

Deno.test("timestamp timing returns one duration per region", async () => {
  await withGpu(async (gpu) => {
    if (!gpu.hasTimestamps) return; // feature absent: timed() still runs the work (checked below)
    const n = 1 << 16;
    const tx = gpu.upload(new Float32Array(n).fill(1), [n], "x");
    const ty = gpu.empty([n], "f32", "y");
    const k = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    for (let r = 0; r < 3; r++) {
      await gpu.timed(`r${r}`, () => {
        gpu.dispatch(k, { bindings: [tx, ty], params: [n, f32(3)], workgroups: n / 64 });
      });
    }
    const t = await gpu.timings();
    assert.deepEqual(t.map((x) => x.label), ["r0", "r1", "r2"]);
    for (const x of t) assert.ok(x.ms >= 0 && x.ms < 10_000, `${x.ms}`);
    assert.equal((await ty.read())[5], 8);
    assert.deepEqual(await gpu.timings(), []);
  });
});

Deno.test("validation errors outside scopes surface at the next wait", async () => {
  const gpu = await Gpu.create();
  const errors: unknown[] = [];
  const origError = console.error;
  console.error = (...a: unknown[]) => errors.push(a);
  try {
    // Dispatch a pipeline with a bind group missing a binding: a validation error.
    const k = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    const t = gpu.empty([64], "f32", "t");
    gpu.dispatch(k, { bindings: [t], params: [1, f32(1)], workgroups: 1 });
    await assert.rejects(gpu.sync(), /WebGPU error/);
  } finally {
    console.error = origError;
    gpu.destroy();
  }
  assert.equal(errors.length, 1); // printed once, loudly
});

Deno.test("scoped() turns device errors into a rejection and leaves the runtime usable", async () => {
  await withGpu(async (gpu) => {
    const k = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    const t = gpu.empty([64], "f32", "t");
    await assert.rejects(
      gpu.scoped(() => {
        gpu.dispatch(k, { bindings: [t], params: [1, f32(1)], workgroups: 1 });
        return Promise.resolve();
      }),
      /WebGPU error/,
    );
    // Still usable afterwards.
    const y = gpu.empty([64], "f32", "y");
    const value = await gpu.scoped(async () => {
      gpu.dispatch(k, { bindings: [t, y], params: [64, f32(1)], workgroups: 1 });
      return (await y.read())[3];
    });
    assert.equal(value, 3);
  });
});

Deno.test("timed regions may contain copies and flushes, and cannot nest", async () => {
  await withGpu(async (gpu) => {
    if (!gpu.hasTimestamps) return;
    const n = 1 << 18;
    const tx = gpu.upload(new Float32Array(n).fill(1), [n], "x");
    const ty = gpu.empty([n], "f32", "y");
    const k = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    await gpu.timed("mixed", () => {
      gpu.dispatch(k, { bindings: [tx, ty], params: [n, f32(2)], workgroups: n / 64 });
      gpu.copy(ty, tx);
      gpu.flush();
      gpu.dispatch(k, { bindings: [tx, ty], params: [n, f32(2)], workgroups: n / 64 });
    });
    await assert.rejects(gpu.timed("outer", () => gpu.timed("inner", () => {})), /cannot nest/);
    const [t] = await gpu.timings();
    assert.equal(t.label, "mixed");
    assert.ok(t.ms > 0, `${t.ms}`);
    assert.equal((await ty.read())[10], 2 * (2 + 10) + 10);
  });
});

// Texture round trip: `fill` writes texel (t, r) = (r, t, r·t, 1), `gather` reads them back.
const TEXTURES = `
@group(0) @binding(1) var dst: texture_storage_2d<rgba32float, write>;
@compute @workgroup_size(1)
fn fill(@builtin(workgroup_id) wid: vec3u) {
  textureStore(dst, wid.xy, vec4f(f32(wid.y), f32(wid.x), f32(wid.x * wid.y), 1.0));
}`;
const GATHER = `
struct Params { w: u32, h: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4f>;
@compute @workgroup_size(1)
fn main(@builtin(workgroup_id) wid: vec3u) {
  out[wid.y * p.w + wid.x] = textureLoad(src, wid.xy);
}`;

Deno.test("storage textures: counted, bound in dispatches, size-checked, freed", async () => {
  await withGpu(async (gpu) => {
    const before = gpu.memory();
    const [w, h] = [5, 3];
    const tex = gpu.texture(w, h, "t");
    assert.equal(tex.byteSize, w * h * 16);
    assert.equal(gpu.memory().liveTextures, before.liveTextures + 1);
    assert.equal(gpu.memory().liveBytes - before.liveBytes, w * h * 16);
    assert.equal(gpu.memory().liveBuffers, before.liveBuffers, "textures are not buffers");
    const fill = await gpu.kernel("test_fill", TEXTURES, {}, "fill");
    const gather = await gpu.kernel("test_gather", GATHER);
    const out = gpu.empty([w * h * 4]);
    gpu.dispatch(fill, { bindings: [tex], workgroups: [w, h, 1] });
    gpu.dispatch(gather, { bindings: [tex, out], params: [w, h], workgroups: [w, h, 1] });
    const got = await out.read();
    for (let r = 0; r < h; r++) {
      for (let t = 0; t < w; t++) {
        assert.deepEqual([...got.slice((r * w + t) * 4, (r * w + t + 1) * 4)], [r, t, r * t, 1]);
      }
    }
    tex.destroy();
    tex.destroy(); // idempotent
    assert.equal(gpu.memory().liveBytes, before.liveBytes + out.buffer.size);
    assert.equal(gpu.memory().liveTextures, before.liveTextures);
    assert.throws(
      () => gpu.dispatch(gather, { bindings: [tex, out], params: [w, h], workgroups: 1 }),
      /binding 1 uses a destroyed texture/,
    );
    const max = gpu.limits.maxTextureDimension2D;
    assert.throws(() => gpu.texture(max + 1, 1, "wide"), /"wide" width .* allows 1 to/);
    assert.throws(() => gpu.texture(1, 0, "flat"), /"flat" height 0 is out of range/);
  });
});

Deno.test("profile() times each alternative, interleaved, without touching timed regions", async () => {
  await withGpu(async (gpu) => {
    const n = 1 << 16;
    const tx = gpu.upload(new Float32Array(n).fill(1), [n], "x");
    const ty = gpu.empty([n], "f32", "y");
    const k = await gpu.kernel("test_axpi", AXPI, { wg: 64 });
    const order: string[] = [];
    const run = (name: string, wg: number) => () => {
      order.push(name);
      gpu.dispatch(k, { bindings: [tx, ty], params: [n, f32(2)], workgroups: wg });
    };
    if (gpu.hasTimestamps) await gpu.timed("outside", run("t", n / 64));
    const times = await gpu.profile([run("a", n / 64), run("b", 1)], 3);
    assert.deepEqual(order.slice(-6), ["a", "b", "a", "b", "a", "b"]);
    assert.equal(times.length, 2);
    for (const t of times) {
      assert.equal(t.length, 3);
      for (const ms of t) assert.ok(ms >= 0 && ms < 10_000, `${ms}`);
    }
    if (gpu.hasTimestamps) {
      assert.deepEqual((await gpu.timings()).map((t) => t.label), ["outside"]);
    }
    assert.equal((await ty.read())[5], 7);
  });
});

Deno.test("copyToTexture copies rows of whole texels, in program order", async () => {
  await withGpu(async (gpu) => {
    // 3 rows of 64 floats (256 bytes apart); copy 2 rows of 16 texels from row 1.
    const src = gpu.upload(Float32Array.from({ length: 192 }, (_, i) => i), [3, 64]);
    const tex = gpu.texture(17, 2, "t");
    gpu.copyToTexture(src, tex, { byteOffset: 256, bytesPerRow: 256, width: 16, rows: 2 });
    const gather = await gpu.kernel("test_gather", GATHER);
    const out = gpu.empty([16 * 2 * 4]);
    gpu.dispatch(gather, { bindings: [tex, out], params: [16, 2], workgroups: [16, 2, 1] });
    assert.deepEqual([...await out.read()], Array.from({ length: 128 }, (_, i) => 64 + i));
    tex.destroy();
    assert.throws(
      () => gpu.copyToTexture(src, tex, { byteOffset: 0, bytesPerRow: 256, width: 1, rows: 1 }),
      /destroyed/,
    );
  });
});

Deno.test("kernel profiles time every dispatch by kernel name", async () => {
  await withGpu(async (gpu) => {
    if (!gpu.hasTimestamps) return; // lavapipe has them; the API refuses without
    const k = await gpu.kernel("axpi", AXPI, { wg: 64 });
    const j = await gpu.kernel("axpi2", AXPI, { wg: 32 });
    const x = gpu.upload(new Float32Array(4096).fill(1), [4096]);
    const y = gpu.empty([4096]);
    gpu.startKernelProfile();
    assert.throws(() => gpu.startKernelProfile(), /already running/);
    for (let i = 0; i < 3; i++) {
      gpu.dispatch(k, { bindings: [x, y], params: [4096, f32(2)], workgroups: 64 });
    }
    gpu.dispatch(j, { bindings: [x, y], params: [4096, f32(3)], workgroups: 128 });
    const times = await gpu.stopKernelProfile();
    assert.deepEqual(times.map((t) => t.kernel).sort(), ["axpi", "axpi2"]);
    assert.equal(times.find((t) => t.kernel === "axpi")!.dispatches, 3);
    assert.ok(times.every((t) => t.ms > 0 && Number.isFinite(t.ms)));
    // The work itself ran: the last dispatch wrote y = 3x + i.
    assert.equal((await y.read())[10], 3 + 10);
    await assert.rejects(gpu.stopKernelProfile(), /No kernel profile/);
  });
});
