/**
 * Stem convolution training kernels (PyTorch-layout weights) against the
 * float64 references, NCHW and NHWC inputs, awkward sizes, accumulation into
 * ∂W, and a weight gradient with more than 65535 workgroups.
 */

import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { conv3x3s2Backward, conv3x3s2Train } from "../../src/ops/conv2d_backward.ts";
import { CONV2D_VARIANTS } from "../../src/ops/conv2d.ts";
import { conv2dBackwardReference, conv2dReference } from "../../src/ops/conv2d_reference.ts";
import { assertClose, randomArray, seededRandom, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";

const GEOM = { kernel: 3, stride: 2, padding: 1 };

/** NCHW ↔ NHWC on the host. */
function toNhwc(a: ArrayLike<number>, B: number, C: number, H: number, W: number) {
  const out = new Float32Array(a.length);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < H * W; i++) out[(b * H * W + i) * C + c] = a[(b * C + c) * H * W + i];
    }
  }
  return out;
}

async function check(
  gpu: Gpu,
  seed: number,
  { B, cin, H, W, cout }: { B: number; cin: number; H: number; W: number; cout: number },
  layout: "nchw" | "nhwc",
  variant: string,
) {
  const x = randomArray(B * cin * H * W, seed);
  const weight = randomArray(cout * cin * 9, seed + 100);
  const ref = conv2dReference(
    { data: Float64Array.from(x), B, C: cin, H, W },
    Float64Array.from(weight),
    cout,
    GEOM,
  );
  const { H: ho, W: wo } = ref;
  const dyNchw = randomArray(B * cout * ho * wo, seed + 200);
  const dWeightRef = new Float64Array(weight.length).fill(1);
  const dxRef = conv2dBackwardReference(
    Float64Array.from(dyNchw),
    { data: Float64Array.from(x), B, C: cin, H, W },
    Float64Array.from(weight),
    dWeightRef,
    GEOM,
  );
  const xt = layout === "nchw"
    ? gpu.upload(x, [B, cin, H, W])
    : gpu.upload(toNhwc(x, B, cin, H, W), [B, H, W, cin]);
  const wt = gpu.upload(weight, [cout, cin, 3, 3]);
  const dy = gpu.upload(toNhwc(dyNchw, B, cout, ho, wo), [B, ho, wo, cout]);
  const dWeight = gpu.upload(new Float32Array(weight.length).fill(1), [cout, cin, 3, 3]);
  const y = await conv3x3s2Train(gpu, xt, wt, layout, { variant });
  const dx = await conv3x3s2Backward(gpu, { dy, x: xt, weight: wt, dWeight, layout, variant });
  assert.ok(dx);
  const what = `${variant} ${layout} B${B} ${cin}→${cout} ${H}×${W}`;
  assertClose(
    await y.read(),
    toNhwc(ref.data, B, cout, ho, wo),
    { atol: 1e-5, rtol: 1e-5 },
    `${what} y`,
  );
  const dxWant = layout === "nchw" ? dxRef : toNhwc(dxRef, B, cin, H, W);
  assertClose(await dx.read(), dxWant, { atol: 1e-5, rtol: 1e-5 }, `${what} dx`);
  assertClose(await dWeight.read(), dWeightRef, { atol: 1e-4, rtol: 1e-5 }, `${what} dW`);
  for (const t of [xt, wt, dy, dWeight, y, dx]) t.destroy();
}

Deno.test("conv3x3s2 training forward and backward match float64 at awkward sizes", async () => {
  await withGpu(async (gpu) => {
    for (const v of CONV2D_VARIANTS) {
      await check(gpu, 1, { B: 2, cin: 3, H: 7, W: 5, cout: 5 }, "nchw", v);
      await check(gpu, 2, { B: 3, cin: 6, H: 9, W: 4, cout: 3 }, "nhwc", v);
      await check(gpu, 3, { B: 1, cin: 1, H: 1, W: 1, cout: 1 }, "nhwc", v);
      await check(gpu, 6, { B: 3, cin: 5, H: 5, W: 7, cout: 7 }, "nchw", v);
      await check(gpu, 7, { B: 1, cin: 1, H: 7, W: 5, cout: 6 }, "nhwc", v);
      await check(gpu, 4, { B: 2, cin: 3, H: 32, W: 33, cout: 16 }, "nchw", v);
    }
  });
});

Deno.test("conv3x3s2 backward: a weight gradient over 65535 workgroups", async () => {
  await withGpu(async (gpu) => {
    // 96·80·9 = 69120 weight elements, one workgroup each.
    for (const v of CONV2D_VARIANTS) {
      await check(gpu, 5, { B: 2, cin: 80, H: 3, W: 4, cout: 96 }, "nhwc", v);
    }
  });
});

Deno.test("conv3x3s2 backward: first stage skips ∂x; shape errors are TypeErrors", async () => {
  await withGpu(async (gpu) => {
    const x = gpu.upload(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]);
    const w = gpu.upload(new Float32Array(2 * 3 * 9), [2, 3, 3, 3]);
    const dW = gpu.upload(new Float32Array(2 * 3 * 9), [2, 3, 3, 3]);
    const dy = gpu.upload(new Float32Array(2 * 2 * 2 * 2), [2, 2, 2, 2]);
    assert.equal(
      await conv3x3s2Backward(gpu, {
        dy,
        x,
        weight: w,
        dWeight: dW,
        layout: "nchw",
        inputGrad: false,
      }),
      null,
    );
    await assert.rejects(
      conv3x3s2Backward(gpu, { dy, x, weight: w, dWeight: dW, layout: "nhwc" }),
      TypeError,
    );
    for (const t of [x, w, dW, dy]) t.destroy();
  });
});

Deno.test("conv2dBackwardReference agrees with finite differences", () => {
  const rand = seededRandom(5);
  const fill = (n: number) => Float64Array.from({ length: n }, () => rand(-1, 1));
  const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);
  // conv 3×3 stride 2 pad 1 on a 5×7 map; loss = Σ dy·y.
  const x = { data: fill(2 * 3 * 5 * 7), B: 2, C: 3, H: 5, W: 7 };
  const kernel = fill(4 * 3 * 9);
  const geom = { kernel: 3, stride: 2, padding: 1 };
  const dy = fill(2 * 4 * 3 * 4);
  const dWeight = new Float64Array(kernel.length);
  const dx = conv2dBackwardReference(dy, x, kernel, dWeight, geom);
  const convLoss = () => dot(conv2dReference(x, kernel, 4, geom).data, dy);
  assertClose(dx, numericGradient(x.data, convLoss), { atol: 1e-8, rtol: 1e-7 }, "conv dx");
  assertClose(dWeight, numericGradient(kernel, convLoss), { atol: 1e-8, rtol: 1e-7 }, "conv dw");
});
