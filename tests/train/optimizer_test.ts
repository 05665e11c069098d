/**
 * AdamW (with decay groups, clipping and the accumulation scale), the
 * gradient-norm reduction and the learning-rate schedule against float64
 * host implementations of the formulas; gradient accumulation of the
 * training pass against the sum of separate passes.
 */

import assert from "node:assert/strict";
import { assertClose, assertCloseScaled, randomArray, withGpu } from "../_util.ts";
import { adamwStep, adamwStepReference, decays } from "../../src/train/adamw.ts";
import type { AdamWStateReference } from "../../src/train/adamw.ts";
import { gradNormSquared, gradNormSquaredReference } from "../../src/train/clip.ts";
import { learningRate } from "../../src/train/schedule.ts";
import type { LanguageConfig } from "../../src/model/config.ts";
import { allocateFlat, ParamStore } from "../../src/model/params.ts";
import type { FlatTensors } from "../../src/model/params.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { languageForwardBackward } from "../../src/model/language/model.ts";
import { Arena } from "../../src/gpu/arena.ts";
import { randomStateDict } from "../model/_weights.ts";

const SHAPES: [string, number[]][] = [
  ["blocks.0.attn.c_attn.weight", [7, 5]],
  ["blocks.0.attn.c_attn.bias", [7]],
  ["blocks.0.attn.temp", [3, 1]],
  ["blocks.0.attn.denom_bias", [3, 9, 1]],
  ["blocks.0.gamma1", [5]],
];

Deno.test("decay groups: ≥2-D weights except temp and denom_bias", () => {
  assert.deepEqual(SHAPES.map(([n, s]) => decays(n, s)), [true, false, false, false, false]);
});

/** Awkward sizes (1, 7, 63, 700) with mixed decay, decayed and not interleaved. */
const FLAT_SHAPES: [string, number[]][] = [
  ["blocks.0.attn.temp", [1, 1]],
  ["blocks.0.attn.c_attn.weight", [7, 9]],
  ["blocks.0.attn.c_attn.bias", [7]],
  ["blocks.0.mlp.c_fc.weight", [28, 25]],
  ["blocks.0.gamma1", [700]],
  ["blocks.0.attn.denom_bias", [3, 9, 1]],
];

/** Counts the dispatches recorded on `gpu` until `stop`. */
function countDispatches(gpu: Gpu) {
  let n = 0;
  gpu.onDispatch = () => n++;
  return {
    reset: () => void (n = 0),
    count: () => n,
    stop: () => void (gpu.onDispatch = null),
  };
}

/** Four flat stores (param, grad, m, v) of FLAT_SHAPES; the params set to `init`. */
function flatState(gpu: Gpu, init: Float32Array<ArrayBuffer>[], maxBytes?: number) {
  const specs = FLAT_SHAPES.map(([name, shape]) => ({ name, shape, kind: "float" as const }));
  const [param, grad, m, v] = ["p.", "g.", "m.", "v."].map((l) =>
    allocateFlat(gpu, specs, l, maxBytes)
  );
  FLAT_SHAPES.forEach(([name], i) => gpu.write(param.tensors.get(name)!, init[i]));
  const flat = {
    param: param.segments,
    grad: grad.segments,
    m: m.segments,
    v: v.segments,
  };
  const get = (which: FlatTensors, i: number) => which.tensors.get(FLAT_SHAPES[i][0])!;
  return { param, grad, m, v, flat, get };
}

for (
  const limits of [{}, { maxBytes: 4096, maxBindingBytes: 1024 }] as {
    maxBytes?: number;
    maxBindingBytes?: number;
  }[]
) {
  const label = limits.maxBytes ? " (several buffers and binding windows)" : " (one dispatch)";
  Deno.test(`AdamW with clipping and accumulation scale: 4 steps match float64${label}`, async () => {
    await withGpu(async (gpu) => {
      const inits = FLAT_SHAPES.map(([, shape], i) =>
        randomArray(shape.reduce((a, b) => a * b, 1), 10 + i)
      );
      const st = flatState(gpu, inits, limits.maxBytes);
      if (limits.maxBytes) assert.ok(st.flat.param.length > 1, "several segments");
      else assert.equal(st.flat.param.length, 1);
      const host: AdamWStateReference[] = FLAT_SHAPES.map(([name, shape], i) => ({
        param: Float64Array.from(inits[i]),
        grad: new Float32Array(inits[i].length),
        m: new Float64Array(inits[i].length),
        v: new Float64Array(inits[i].length),
        decay: decays(name, shape),
      }));
      const normSq = gpu.empty([1]);
      const halt = gpu.empty([1], "u32");
      const grads = () => st.flat.grad.map((g) => g.tensor);
      // maxNorm 3 clips the large-gradient steps (scale 2) but not the small ones.
      const steps = [
        { scale: 2, gradScale: 0.5, lr: 1e-2 },
        { scale: 0.1, gradScale: 1, lr: 5e-3 },
        { scale: 3, gradScale: 0.25, lr: 2e-2 },
        { scale: 0.05, gradScale: 1, lr: 1e-3 },
      ];
      let clipped = 0;
      const dispatches = countDispatches(gpu);
      for (const [k, s] of steps.entries()) {
        host.forEach((h, i) => {
          const g = randomArray(h.param.length, 100 * k + i, -s.scale, s.scale);
          gpu.write(st.get(st.grad, i), g);
          h.grad = g;
        });
        dispatches.reset();
        await gradNormSquared(gpu, grads(), normSq, limits.maxBindingBytes);
        if (!limits.maxBytes) assert.equal(dispatches.count(), 2, "norm: partials + total");
        const sq = gradNormSquaredReference(host.map((h) => h.grad));
        assertClose(await gpu.read(normSq), [sq], { atol: 0, rtol: 1e-5 }, "norm²");
        if (Math.sqrt(sq) * s.gradScale > 3) clipped++;
        const opts = {
          lr: s.lr,
          step: k + 1,
          beta1: 0.9,
          beta2: 0.95,
          eps: 1e-8,
          weightDecay: 0.1,
          gradScale: s.gradScale,
          maxNorm: 3,
        };
        dispatches.reset();
        await adamwStep(gpu, st.flat, { ...opts, normSq, halt }, limits.maxBindingBytes);
        if (!limits.maxBytes) assert.equal(dispatches.count(), 1, "AdamW: one dispatch");
        adamwStepReference(host, opts);
        for (const [i, h] of host.entries()) {
          const name = FLAT_SHAPES[i][0];
          const [p, m, v, g] = await gpu.readMany(
            [st.param, st.m, st.v, st.grad].map((w) => st.get(w, i)),
          );
          assertClose(p, h.param, { atol: 1e-6, rtol: 1e-5 }, name);
          assertClose(m, h.m, { atol: 1e-7, rtol: 1e-5 }, `${name} m`);
          assertClose(v, h.v, { atol: 1e-9, rtol: 1e-5 }, `${name} v`);
          assert.ok(g.every((x) => x === 0), `${name}: grad zeroed`);
        }
      }
      dispatches.stop();
      assert.ok(clipped >= 1 && clipped < steps.length, `clipping was exercised (${clipped})`);
      // The gaps between tensors stay zero (they never reach the norm).
      const slotted = host.reduce((a, h) => a + h.param.length, 0);
      const whole = await gpu.readMany(st.flat.param.map((s) => s.tensor));
      const nonzero = whole.reduce((a, w) => a + w.filter((x) => x !== 0).length, 0);
      assert.ok(nonzero <= slotted, "gaps untouched");
      // A halt word (a non-finite step) leaves parameters and moments alone, zeroes gradients.
      const all = (which: FlatTensors[]) =>
        gpu.readMany(which.flatMap((w) => host.map((_, i) => st.get(w, i))));
      const before = await all([st.param, st.m, st.v]);
      gpu.write(halt, new Uint32Array([5]));
      host.forEach((h, i) => gpu.write(st.get(st.grad, i), randomArray(h.param.length, 7)));
      await gradNormSquared(gpu, grads(), normSq, limits.maxBindingBytes);
      await adamwStep(gpu, st.flat, {
        lr: 1,
        step: 5,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weightDecay: 0.1,
        gradScale: 1,
        maxNorm: 0,
        normSq,
        halt,
      }, limits.maxBindingBytes);
      const after = await all([st.param, st.m, st.v]);
      for (const [i, a] of after.entries()) assert.deepEqual(a, before[i], `state ${i} untouched`);
      for (const g of await all([st.grad])) assert.ok(g.every((x) => x === 0));
    });
  });
}

Deno.test("AdamW refuses stores laid out differently", async () => {
  await withGpu(async (gpu) => {
    const st = flatState(
      gpu,
      FLAT_SHAPES.map(([, s]) => new Float32Array(s.reduce((a, b) => a * b))),
    );
    const other = allocateFlat(gpu, [{ name: "x", shape: [5], kind: "float" }], "x.");
    const normSq = gpu.empty([1]);
    const halt = gpu.empty([1], "u32");
    const opts = { lr: 1, step: 1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0 };
    await assert.rejects(
      adamwStep(gpu, { ...st.flat, m: other.segments }, {
        ...opts,
        gradScale: 1,
        maxNorm: 0,
        normSq,
        halt,
      }),
      /differ in layout/,
    );
  });
});

Deno.test("gradient norm: awkward sizes across many partial sums", async () => {
  await withGpu(async (gpu) => {
    const hosts = [1, 7, 4096, 4097, 70001].map((n, i) => randomArray(n, i));
    const ts = hosts.map((h) => gpu.upload(h, [h.length]));
    const out = gpu.empty([1]);
    await gradNormSquared(gpu, ts, out);
    assertClose(await gpu.read(out), [gradNormSquaredReference(hosts)], { atol: 0, rtol: 1e-5 });
  });
});

Deno.test("schedule: warmup, cosine and floor as the formulas", () => {
  const s = { lr: 6e-4, minLr: 6e-5, warmupIters: 7, decayIters: 50 };
  for (let it = 0; it < 60; it++) {
    let want: number;
    if (it < 7) want = (6e-4 * (it + 1)) / 8;
    else if (it > 50) want = 6e-5;
    else want = 6e-5 + 0.5 * (1 + Math.cos((Math.PI * (it - 7)) / 43)) * (6e-4 - 6e-5);
    assert.ok(Math.abs(learningRate(it, s) - want) < 1e-15, `step ${it}`);
  }
  assert.equal(learningRate(50, s), 6e-5);
  assert.ok(learningRate(7, s) === 6e-4);
});

Deno.test("accumulation: two micro-batches add up to the sum of separate passes", async () => {
  const cfg: LanguageConfig = {
    family: "language",
    attention: "tssa",
    block_size: 16,
    vocab_size: 13,
    n_layer: 1,
    n_head: 2,
    n_embd: 16,
    bias: true,
    dropout: 0,
    norm_eps: 1e-5,
  };
  const sd = randomStateDict(cfg, 3);
  const batch = (seed: number) => {
    const x = Array.from({ length: 2 * 16 }, (_, i) => (i * seed + 5) % 13);
    return { B: 2, T: 16, x, y: x.map((v) => (v + seed) % 13) };
  };
  await withGpu(async (gpu) => {
    const params = ParamStore.upload(gpu, cfg, sd);
    const both = ParamStore.zeros(gpu, cfg);
    const one = ParamStore.zeros(gpu, cfg);
    const two = ParamStore.zeros(gpu, cfg);
    const arena = new Arena(gpu);
    try {
      await arena.use(async () => {
        await languageForwardBackward(gpu, params, both, batch(3));
        await languageForwardBackward(gpu, params, both, batch(5));
        await languageForwardBackward(gpu, params, one, batch(3));
        await languageForwardBackward(gpu, params, two, batch(5));
      });
      const a = both.entries();
      const b = one.entries();
      const c = two.entries();
      for (let i = 0; i < a.length; i++) {
        const sum = await gpu.read(a[i][1]);
        const x = await gpu.read(b[i][1]);
        const y = await gpu.read(c[i][1]);
        assertCloseScaled(sum, x.map((v, j) => v + y[j]), 1e-5, a[i][0]);
      }
    } finally {
      arena.destroy();
      for (const p of [params, both, one, two]) p.destroy();
    }
  });
});
