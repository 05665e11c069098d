import assert from "node:assert/strict";
import { tssa } from "../../src/ops/tssa.ts";
import type { TssaSaves } from "../../src/ops/tssa.ts";
import { tssaBackward } from "../../src/ops/tssa_backward.ts";
import { tssaBackwardReference, tssaReference } from "../../src/ops/tssa_reference.ts";
import type { TssaDims } from "../../src/ops/tssa_reference.ts";
import type { Tensor } from "../../src/gpu/runtime.ts";
import { assertClose, assertCloseScaled, randomArray, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";

/** Σ dy·y of the float64 forward, the loss whose gradient is checked. */
function loss(w: Float64Array, temp: Float64Array, dy: Float64Array, dims: TssaDims): number {
  const { y } = tssaReference(w, temp, dims);
  let s = 0;
  for (let i = 0; i < y.length; i++) s += dy[i] * y[i];
  return s;
}

function destroySaves(saves: TssaSaves): void {
  for (const t of Object.values(saves) as Tensor[]) t.destroy();
}

function f64(a: Float32Array): Float64Array {
  return Float64Array.from(a);
}

for (
  const dims of [
    { batches: 1, tokens: 1, heads: 1, headDim: 1 },
    { batches: 2, tokens: 5, heads: 3, headDim: 2 },
    { batches: 1, tokens: 7, heads: 2, headDim: 5 },
  ]
) {
  Deno.test(`tssaBackwardReference matches finite differences (${JSON.stringify(dims)})`, () => {
    const D = dims.heads * dims.headDim;
    const n = dims.batches * dims.tokens * D;
    const w = f64(randomArray(n, 11, -1.5, 1.5));
    const dy = f64(randomArray(n, 12));
    const temp = f64(randomArray(dims.heads, 13, 0.5, 2));
    const saved = tssaReference(w, temp, dims);
    const dtemp = new Float64Array(dims.heads).fill(0.25);
    const dw = tssaBackwardReference({ dy, w, temp, saved, dtemp }, dims);
    const f = () => loss(w, temp, dy, dims);
    assertClose(dw, numericGradient(w, f), { atol: 1e-7, rtol: 1e-6 }, "dw");
    // dtemp was 0.25 before: the gradient is added, not assigned.
    const numTemp = numericGradient(temp, f).map((v) => v + 0.25);
    assertClose(dtemp, numTemp, { atol: 1e-7, rtol: 1e-6 }, "dtemp");
  });
}

Deno.test("tssaBackwardReference: a zero column takes the F.normalize clamp, no NaN", () => {
  const dims = { batches: 1, tokens: 4, heads: 2, headDim: 2 };
  const w = f64(randomArray(16, 31));
  for (let n = 0; n < 4; n++) w[n * 4 + 1] = 0; // column 1 is all zeros
  const dy = f64(randomArray(16, 32));
  const temp = new Float64Array([1.3, 0.7]);
  const saved = tssaReference(w, temp, dims);
  const dtemp = new Float64Array(2);
  const dw = tssaBackwardReference({ dy, w, temp, saved, dtemp }, dims);
  assert.ok(dw.every(Number.isFinite) && dtemp.every(Number.isFinite));
  // The loss is discontinuous across the clamped column (any nonzero entry
  // makes its normalised square 1), so finite differences hold only off it;
  // on it, as in PyTorch, the gradient is the direct term −g·Pi·a.
  const f = () => loss(w, temp, dy, dims);
  const num = numericGradient(w, f, 1e-6);
  for (let n = 0; n < 4; n++) {
    for (let c = 0; c < 4; c++) {
      const i = n * 4 + c;
      if (c === 1) {
        const h = 0;
        const a = 1 / (1 + saved.num[c] / (saved.den[h] + 1e-8));
        assertClose([dw[i]], [-dy[i] * saved.pi[n * 2 + h] * a], { atol: 1e-12, rtol: 1e-12 });
      } else {
        assertClose([dw[i]], [num[i]], { atol: 1e-6, rtol: 1e-5 }, `dw[${i}]`);
      }
    }
  }
});

Deno.test("tssaBackwardReference rejects mismatched sizes", () => {
  const dims = { batches: 1, tokens: 2, heads: 1, headDim: 2 };
  const saved = tssaReference([1, 2, 3, 4], [1], dims);
  assert.throws(
    () =>
      tssaBackwardReference({
        dy: [1, 2, 3],
        w: [1, 2, 3, 4],
        temp: [1],
        saved,
        dtemp: new Float64Array(1),
      }, dims),
    TypeError,
  );
});

const GPU_SIZES = [
  { batches: 1, tokens: 1, heads: 4, headDim: 16 },
  { batches: 2, tokens: 7, heads: 3, headDim: 5 },
  { batches: 3, tokens: 63, heads: 4, headDim: 16 },
  { batches: 2, tokens: 700, heads: 2, headDim: 5 },
  { batches: 1, tokens: 300, heads: 6, headDim: 16 },
];

Deno.test("tssaBackward on the GPU matches the float64 reference at awkward sizes", async (t) => {
  await withGpu(async (gpu) => {
    for (const dims of GPU_SIZES) {
      const { batches: B, tokens: N, heads: H, headDim: d } = dims;
      await t.step(`B ${B}, N ${N}, H ${H}, d ${d})`, async () => {
        const D = H * d;
        const w = randomArray(B * N * D, 1000 + N, -1.5, 1.5);
        const dy = randomArray(B * N * D, 2000 + N);
        const temp = randomArray(H, 3000 + N, 0.5, 2);
        const wT = gpu.upload(w, [B, N, D]);
        const tempT = gpu.upload(temp, [H, 1]);
        const dyT = gpu.upload(dy, [B, N, D]);
        const dtempT = gpu.upload(new Float32Array(H).fill(0.5), [H]);
        const { y, saves } = await tssa(gpu, wT, tempT, H, { saves: true });
        const dw = await tssaBackward(gpu, {
          dy: dyT,
          w: wT,
          temp: tempT,
          saves,
          dtemp: dtempT,
          heads: H,
        });
        const saved = tssaReference(w, temp, dims);
        const dtemp = new Float64Array(H).fill(0.5);
        const dwRef = tssaBackwardReference({ dy, w, temp, saved, dtemp }, dims);
        assertCloseScaled(await y.read(), saved.y, 1e-5, "y");
        assertCloseScaled(await saves.pi.read(), saved.pi, 1e-5, "pi");
        assertCloseScaled(await dw.read(), dwRef, 1e-4, "dw");
        assertCloseScaled(await dtempT.read(), dtemp, 1e-4, "dtemp");
        destroySaves(saves);
        for (const t of [wT, tempT, dyT, dtempT, y, dw]) t.destroy();
      });
    }
  });
});

Deno.test("tssaBackward: pieces over the binding limit and folded grids give the same result", async () => {
  // 701 tokens: the second batch element's pieces start off the storage
  // offset alignment, so the kernels' element base is exercised.
  const dims = { batches: 2, tokens: 701, heads: 2, headDim: 5 };
  const { batches: B, tokens: N, heads: H } = dims;
  const D = 10;
  await withGpu(async (gpu) => {
    const w = randomArray(B * N * D, 81, -1.5, 1.5);
    const dy = randomArray(B * N * D, 82);
    const temp = new Float32Array([0.7, 1.6]);
    const wT = gpu.upload(w, [B, N, D]);
    const dyT = gpu.upload(dy, [B, N, D]);
    const tempT = gpu.upload(temp, [H]);
    const saved = tssaReference(w, temp, dims);
    const dtemp = new Float64Array(H);
    const dwRef = tssaBackwardReference({ dy, w, temp, saved, dtemp }, dims);
    // 12 000 bytes hold two blocks of 128 tokens: 6 pieces. Folding grids
    // at 7 workgroups per dimension uses y and z (≤ 343 workgroups here).
    for (const options of [{ maxBindingBytes: 12_000 }, { foldWorkgroupsAt: 7 }]) {
      const dtempT = gpu.empty([H]);
      const { y, saves } = await tssa(gpu, wT, tempT, H, { ...options, saves: true });
      const dw = await tssaBackward(gpu, {
        dy: dyT,
        w: wT,
        temp: tempT,
        saves,
        dtemp: dtempT,
        heads: H,
      }, options);
      const what = JSON.stringify(options);
      assertCloseScaled(await y.read(), saved.y, 1e-5, `y ${what}`);
      assertCloseScaled(await dw.read(), dwRef, 1e-4, `dw ${what}`);
      assertCloseScaled(await dtempT.read(), dtemp, 1e-4, `dtemp ${what}`);
      destroySaves(saves);
      for (const t of [y, dw, dtempT]) t.destroy();
    }
  });
});

Deno.test("tssaBackward rejects a saved Pi of the wrong shape", async () => {
  await withGpu(async (gpu) => {
    const w = gpu.upload(randomArray(2 * 3 * 4, 91), [2, 3, 4]);
    const temp = gpu.upload(new Float32Array([1, 1]), [2]);
    const { saves } = await tssa(gpu, w, temp, 2, { saves: true });
    const wrong = { ...saves, pi: gpu.empty([5, 2]) };
    await assert.rejects(
      tssaBackward(gpu, { dy: w, w, temp, saves: wrong, dtemp: gpu.empty([2]), heads: 2 }),
      TypeError,
    );
  });
});

Deno.test("tssa with saves and tssaBackward: an all-zero feature takes the F.normalize clamp on the GPU", async () => {
  const dims = { batches: 2, tokens: 5, heads: 2, headDim: 3 };
  const { batches: B, tokens: N, heads: H } = dims;
  const D = 6;
  const w = randomArray(B * N * D, 41, -1.5, 1.5);
  for (let r = 0; r < B * N; r++) w[r * D + 4] = 0; // feature 4 is zero in every token
  const dy = randomArray(B * N * D, 42);
  const temp = new Float32Array([1.2, 0.8]);
  await withGpu(async (gpu) => {
    const wT = gpu.upload(w, [B, N, D]);
    const tempT = gpu.upload(temp, [H]);
    const dyT = gpu.upload(dy, [B, N, D]);
    const dtempT = gpu.empty([H]);
    const { y, saves } = await tssa(gpu, wT, tempT, H, { saves: true });
    const dw = await tssaBackward(gpu, {
      dy: dyT,
      w: wT,
      temp: tempT,
      saves,
      dtemp: dtempT,
      heads: H,
    });
    const saved = tssaReference(w, temp, dims);
    const dtemp = new Float64Array(H);
    const dwRef = tssaBackwardReference({ dy, w, temp, saved, dtemp }, dims);
    const got = { y: await y.read(), dw: await dw.read(), dtemp: await dtempT.read() };
    assert.ok([got.y, got.dw, got.dtemp].every((a) => a.every(Number.isFinite)), "no NaN");
    assertCloseScaled(got.y, saved.y, 1e-5, "y");
    assertCloseScaled(got.dw, dwRef, 1e-4, "dw");
    assertCloseScaled(got.dtemp, dtemp, 1e-4, "dtemp");
    destroySaves(saves);
    for (const t of [wT, tempT, dyT, dtempT, y, dw]) t.destroy();
  });
});
