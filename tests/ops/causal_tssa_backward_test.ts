import assert from "node:assert/strict";
import { causalTssa } from "../../src/ops/causal_tssa.ts";
import { CAUSAL_TSSA_BACKWARD, causalTssaBackward } from "../../src/ops/causal_tssa_backward.ts";
import { runnableVariants } from "./_variants.ts";
import {
  causalTssaBackwardReference,
  causalTssaReference,
} from "../../src/ops/causal_tssa_reference.ts";
import type { CausalTssaDims } from "../../src/ops/causal_tssa_reference.ts";
import { assertClose, assertCloseScaled, randomArray, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";

function f64(a: Float32Array): Float64Array {
  return Float64Array.from(a);
}

interface Problem {
  w: Float64Array;
  temp: Float64Array;
  denomBias: Float64Array;
  dy: Float64Array;
}

function problem(dims: CausalTssaDims, seed: number): Problem {
  const D = dims.heads * dims.headDim;
  const n = dims.batches * dims.tokens * D;
  return {
    w: f64(randomArray(n, seed, -1.5, 1.5)),
    temp: f64(randomArray(dims.heads, seed + 1, 0.5, 2)),
    denomBias: f64(randomArray(dims.heads * dims.blockSize, seed + 2, -0.3, 0.3)),
    dy: f64(randomArray(n, seed + 3)),
  };
}

function loss(p: Problem, dims: CausalTssaDims): number {
  const { y } = causalTssaReference(p.w, p, dims);
  let s = 0;
  for (let i = 0; i < y.length; i++) s += p.dy[i] * y[i];
  return s;
}

function backward(p: Problem, dims: CausalTssaDims) {
  const { pi } = causalTssaReference(p.w, p, dims);
  const dtemp = new Float64Array(dims.heads).fill(0.5);
  const dDenomBias = new Float64Array(dims.heads * dims.blockSize).fill(-0.25);
  const dw = causalTssaBackwardReference({ ...p, pi, dtemp, dDenomBias }, dims);
  return { dw, dtemp, dDenomBias };
}

for (
  const dims of [
    { batches: 1, tokens: 1, heads: 1, headDim: 1, blockSize: 1 },
    { batches: 2, tokens: 6, heads: 3, headDim: 2, blockSize: 8 },
    { batches: 1, tokens: 9, heads: 2, headDim: 5, blockSize: 9 },
  ]
) {
  Deno.test(`causalTssaBackwardReference matches finite differences (${dims.tokens} tokens)`, () => {
    const p = problem(dims, 100 + dims.tokens);
    const { dw, dtemp, dDenomBias } = backward(p, dims);
    const f = () => loss(p, dims);
    const tol = { atol: 1e-7, rtol: 1e-6 };
    assertClose(dw, numericGradient(p.w, f), tol, "dw");
    // Parameter gradients are added to what the buffers held (0.5, −0.25).
    assertClose(dtemp, numericGradient(p.temp, f).map((v) => v + 0.5), tol, "dtemp");
    const numBias = numericGradient(p.denomBias, f).map((v) => v - 0.25);
    assertClose(dDenomBias, numBias, tol, "dDenomBias");
  });
}

Deno.test("causalTssaBackwardReference: leading zero tokens take the clamp", () => {
  const dims = { batches: 1, tokens: 6, heads: 2, headDim: 2, blockSize: 6 };
  const p = problem(dims, 41);
  const D = 4;
  for (let n = 0; n < 3; n++) p.w[n * D + 2] = 0; // column 2 is 0 for tokens 0…2
  const { dw, dtemp, dDenomBias } = backward(p, dims);
  assert.ok([...dw, ...dtemp, ...dDenomBias].every(Number.isFinite));
  // Perturbing a clamped zero moves the loss discontinuously (its normalised
  // square jumps to 1), so finite differences hold everywhere else.
  const num = numericGradient(p.w, () => loss(p, dims), 1e-6);
  for (let i = 0; i < dw.length; i++) {
    if (i % D === 2 && i / D < 3) continue;
    assertClose([dw[i]], [num[i]], { atol: 1e-6, rtol: 1e-5 }, `dw[${i}]`);
  }
});

Deno.test("causalTssaBackwardReference rejects more tokens than blockSize", () => {
  const dims = { batches: 1, tokens: 3, heads: 1, headDim: 1, blockSize: 2 };
  assert.throws(
    () =>
      causalTssaBackwardReference({
        dy: [1, 2, 3],
        w: [1, 2, 3],
        temp: [1],
        denomBias: [0, 0],
        pi: [1, 1, 1],
        dtemp: new Float64Array(1),
        dDenomBias: new Float64Array(2),
      }, dims),
    RangeError,
  );
});

const GPU_SIZES = [
  { batches: 1, tokens: 1, heads: 4, headDim: 16, blockSize: 1 },
  { batches: 2, tokens: 7, heads: 3, headDim: 5, blockSize: 9 },
  { batches: 3, tokens: 63, heads: 4, headDim: 16, blockSize: 64 },
  { batches: 2, tokens: 700, heads: 2, headDim: 5, blockSize: 1024 },
  { batches: 1, tokens: 300, heads: 6, headDim: 16, blockSize: 300 },
  // 79 scan blocks: two levels of prefix and suffix scans.
  { batches: 1, tokens: 5000, heads: 2, headDim: 3, blockSize: 5000 },
  { batches: 12, tokens: 64, heads: 4, headDim: 32, blockSize: 64 }, // nanoGPT's CPU configuration
];

Deno.test("causalTssaBackward on the GPU matches the float64 reference at awkward sizes", async (t) => {
  await withGpu(async (gpu) => {
    for (const dims of GPU_SIZES) {
      const { batches: B, tokens: N, heads: H, headDim: d, blockSize } = dims;
      const shape = { batches: B, tokens: N, dim: H * d, heads: H, headDim: d };
      for (const variant of runnableVariants(gpu, CAUSAL_TSSA_BACKWARD, shape)) {
        await t.step(`${variant}: B ${B}, N ${N}, H ${H}, d ${d})`, async () => {
          const D = H * d;
          const p = problem(dims, 5000 + N);
          const w = new Float32Array(p.w);
          const dy = new Float32Array(p.dy);
          const temp = new Float32Array(p.temp);
          const denomBias = new Float32Array(p.denomBias);
          // Reference in float64 from the same float32 inputs.
          const q = { w: f64(w), dy: f64(dy), temp: f64(temp), denomBias: f64(denomBias) };
          const wT = gpu.upload(w, [B, N, D]);
          const dyT = gpu.upload(dy, [B, N, D]);
          const tempT = gpu.upload(temp, [H, 1]);
          const biasT = gpu.upload(denomBias, [H, blockSize, 1]);
          const dtempT = gpu.upload(new Float32Array(H).fill(0.5), [H, 1]);
          const dBiasT = gpu.upload(new Float32Array(H * blockSize).fill(-0.25), [H, blockSize, 1]);
          const { y, saves } = await causalTssa(gpu, wT, tempT, biasT, H, { saves: true });
          const pi = saves.pi;
          const dw = await causalTssaBackward(gpu, {
            dy: dyT,
            w: wT,
            temp: tempT,
            denomBias: biasT,
            saves,
            dtemp: dtempT,
            dDenomBias: dBiasT,
            heads: H,
          }, { variant });
          const saved = causalTssaReference(q.w, q, dims);
          const ref = backward(q, dims);
          assertCloseScaled(await y.read(), saved.y, 1e-5, "y");
          assertCloseScaled(await pi.read(), saved.pi, 1e-5, "pi");
          assertCloseScaled(await dw.read(), ref.dw, 1e-4, "dw");
          assertCloseScaled(await dtempT.read(), ref.dtemp, 1e-4, "dtemp");
          assertCloseScaled(await dBiasT.read(), ref.dDenomBias, 1e-4, "dDenomBias");
          for (const t of [wT, dyT, tempT, biasT, dtempT, dBiasT, y, pi, dw]) t.destroy();
        });
      }
    }
  });
});

Deno.test("causalTssaBackward: pieces over the binding limit and folded grids give the same result", async () => {
  // 130 tokens × 10 features: 64-token blocks of 2560 bytes, three per batch
  // element; 6 000 bytes hold two, so the tensors are bound in 4 pieces, the
  // second batch element's off the 32-byte offset alignment (130·40 bytes).
  const dims = { batches: 2, tokens: 130, heads: 2, headDim: 5, blockSize: 130 };
  const { batches: B, tokens: N, heads: H, blockSize } = dims;
  const D = 10;
  const prob = problem(dims, 91);
  const [w, dy, temp, denomBias] = [prob.w, prob.dy, prob.temp, prob.denomBias].map((a) =>
    new Float32Array(a)
  );
  const q = { w: f64(w), dy: f64(dy), temp: f64(temp), denomBias: f64(denomBias) };
  const ref = backward(q, dims);
  await withGpu(async (gpu) => {
    const wT = gpu.upload(w, [B, N, D]);
    const dyT = gpu.upload(dy, [B, N, D]);
    const tempT = gpu.upload(temp, [H, 1]);
    const biasT = gpu.upload(denomBias, [H, blockSize, 1]);
    const cases = [
      { maxBindingBytes: 6000 },
      { foldWorkgroupsAt: 3, variant: "blocks" },
      { foldWorkgroupsAt: 3, variant: "serial" },
    ];
    for (const options of cases) {
      const dtempT = gpu.upload(new Float32Array(H).fill(0.5), [H, 1]);
      const dBiasT = gpu.upload(new Float32Array(H * blockSize).fill(-0.25), [H, blockSize, 1]);
      const args = { w: wT, temp: tempT, denomBias: biasT, heads: H };
      const { y, saves } = await causalTssa(gpu, wT, tempT, biasT, H, { ...options, saves: true });
      const pi = saves.pi;
      const dw = await causalTssaBackward(gpu, {
        ...args,
        dy: dyT,
        saves,
        dtemp: dtempT,
        dDenomBias: dBiasT,
      }, options);
      const what = JSON.stringify(options);
      if (options.maxBindingBytes) {
        // The serial scans need each token tensor in one binding.
        await assert.rejects(
          () =>
            causalTssaBackward(gpu, {
              ...args,
              dy: dyT,
              saves,
              dtemp: dtempT,
              dDenomBias: dBiasT,
            }, { ...options, variant: "serial" }),
          /variant serial needs the token tensors in one storage binding/,
        );
      }
      assertCloseScaled(await pi.read(), causalTssaReference(q.w, q, dims).pi, 1e-5, what);
      assertCloseScaled(await dw.read(), ref.dw, 1e-4, `dw ${what}`);
      assertCloseScaled(await dtempT.read(), ref.dtemp, 1e-4, `dtemp ${what}`);
      assertCloseScaled(await dBiasT.read(), ref.dDenomBias, 1e-4, `dDenomBias ${what}`);
      for (const t of [y, pi, dw, dtempT, dBiasT]) t.destroy();
    }
  });
});
