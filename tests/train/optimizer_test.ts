/**
 * AdamW (with decay groups, clipping and the accumulation scale), the
 * gradient-norm reduction and the learning-rate schedule against float64
 * host implementations of the formulas; gradient accumulation of the
 * training pass against the sum of separate passes.
 */

import assert from "node:assert/strict";
import { assertClose, assertCloseScaled, randomArray, withGpu } from "../_util.ts";
import { adamwStep, adamwStepReference, decays } from "../../src/train/adamw.ts";
import type { AdamWStateReference, OptimizedParam } from "../../src/train/adamw.ts";
import { gradNormSquared, gradNormSquaredReference } from "../../src/train/clip.ts";
import { learningRate } from "../../src/train/schedule.ts";
import type { LanguageConfig } from "../../src/model/config.ts";
import { ParamStore } from "../../src/model/params.ts";
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

Deno.test("AdamW with clipping and accumulation scale: 4 steps match the float64 formulas", async () => {
  await withGpu(async (gpu) => {
    const params: OptimizedParam[] = [];
    const host: AdamWStateReference[] = [];
    SHAPES.forEach(([name, shape], i) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const init = randomArray(n, 10 + i);
      params.push({
        name,
        param: gpu.upload(init, shape),
        grad: gpu.empty(shape),
        m: gpu.empty(shape),
        v: gpu.empty(shape),
        decay: decays(name, shape),
      });
      host.push({
        param: Float64Array.from(init),
        grad: new Float32Array(n),
        m: new Float64Array(n),
        v: new Float64Array(n),
        decay: decays(name, shape),
      });
    });
    const normSq = gpu.empty([1]);
    // maxNorm 3 clips the large-gradient steps (scale 2) but not the small ones.
    const steps = [
      { scale: 2, gradScale: 0.5, lr: 1e-2 },
      { scale: 0.1, gradScale: 1, lr: 5e-3 },
      { scale: 3, gradScale: 0.25, lr: 2e-2 },
      { scale: 0.05, gradScale: 1, lr: 1e-3 },
    ];
    let clipped = 0;
    for (const [k, st] of steps.entries()) {
      params.forEach((p, i) => {
        const g = randomArray(p.param.numel, 100 * k + i, -st.scale, st.scale);
        gpu.write(p.grad, g);
        host[i].grad = g;
      });
      await gradNormSquared(gpu, params.map((p) => p.grad), normSq);
      const sq = gradNormSquaredReference(host.map((h) => h.grad));
      assertClose(await gpu.read(normSq), [sq], { atol: 0, rtol: 1e-5 }, "norm²");
      if (Math.sqrt(sq) * st.gradScale > 3) clipped++;
      const opts = {
        lr: st.lr,
        step: k + 1,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weightDecay: 0.1,
        gradScale: st.gradScale,
        maxNorm: 3,
      };
      await adamwStep(gpu, params, { ...opts, normSq });
      adamwStepReference(host, opts);
      for (const [i, p] of params.entries()) {
        assertClose(await gpu.read(p.param), host[i].param, { atol: 1e-6, rtol: 1e-5 }, p.name);
        assertClose(await gpu.read(p.m), host[i].m, { atol: 1e-7, rtol: 1e-5 }, `${p.name} m`);
        assertClose(await gpu.read(p.v), host[i].v, { atol: 1e-9, rtol: 1e-5 }, `${p.name} v`);
        assert.ok((await gpu.read(p.grad)).every((g) => g === 0), `${p.name}: grad zeroed`);
      }
    }
    assert.ok(clipped >= 1 && clipped < steps.length, `clipping was exercised (${clipped})`);
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
