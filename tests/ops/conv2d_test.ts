import assert from "node:assert/strict";
import {
  CONV2D_VARIANTS,
  conv3x3s2,
  convOutSize,
  foldBatchNorm,
  foldBatchNormReference,
} from "../../src/ops/conv2d.ts";
import { conv2dReference } from "../../src/ops/conv2d_reference.ts";
import type { FeatureMap } from "../../src/ops/conv2d_reference.ts";
import { batchNormReference } from "../../src/ops/batch_norm_reference.ts";
import { geluReference } from "../../src/ops/gelu_reference.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

/** NHWC → NCHW. */
function toNchw(y: Float32Array, B: number, H: number, W: number, C: number): Float32Array {
  const out = new Float32Array(y.length);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < H * W; i++) {
      for (let c = 0; c < C; c++) out[(b * C + c) * H * W + i] = y[(b * H * W + i) * C + c];
    }
  }
  return out;
}

function nhwc(
  x: Float32Array,
  B: number,
  C: number,
  H: number,
  W: number,
): Float32Array<ArrayBuffer> {
  const out = new Float32Array(x.length);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < H * W; i++) out[(b * H * W + i) * C + c] = x[(b * C + c) * H * W + i];
    }
  }
  return out;
}

Deno.test("convOutSize is PyTorch's ⌊(n + 2 − 3)/2⌋ + 1", () => {
  assert.deepEqual([1, 2, 3, 7, 28, 40, 224].map(convOutSize), [1, 1, 2, 4, 14, 20, 112]);
});

Deno.test("conv3x3s2 with folded BatchNorm matches the reference at awkward sizes, every variant, NCHW and NHWC, in pieces of images, with and without GELU", async () => {
  await withGpu(async (gpu) => {
    for (
      const [B, cin, H, W, cout] of [
        [1, 3, 1, 1, 1],
        [3, 1, 5, 7, 3],
        [2, 3, 7, 9, 5],
        [3, 5, 7, 5, 7],
        [3, 6, 13, 8, 12],
        [1, 7, 28, 28, 16],
      ]
    ) {
      const x = randomArray(B * cin * H * W, 1);
      const weight = randomArray(cout * cin * 9, 2);
      const bn = {
        weight: randomArray(cout, 3, 0.5, 1.5),
        bias: randomArray(cout, 4),
        mean: randomArray(cout, 5),
        variance: randomArray(cout, 6, 0.5, 2),
      };
      const folded = foldBatchNormReference(weight, cout, cin, bn, 1e-5);
      // The reference convolution with eval-mode BatchNorm after it, in float64.
      const conv = conv2dReference({ data: Float64Array.from(x), B, C: cin, H, W }, weight, cout, {
        kernel: 3,
        stride: 2,
        padding: 1,
      });
      const want = batchNormReference(conv, {
        weight: bn.weight,
        bias: bn.bias,
        runningMean: bn.mean,
        runningVar: bn.variance,
        eps: 1e-5,
      }).data;
      const [ho, wo] = [convOutSize(H), convOutSize(W)];
      const w = gpu.upload(folded.weight, [cin * 9, Math.ceil(cout / 4) * 4]);
      const b = gpu.upload(folded.bias, [cout]);
      for (const layout of ["nchw", "nhwc"] as const) {
        const input = layout === "nchw"
          ? gpu.upload(x, [B, cin, H, W])
          : gpu.upload(nhwc(x, B, cin, H, W), [B, H, W, cin]);
        // Whole batch in one binding, and one image per binding (a tiny
        // limit; the GEMM variant's patch matrix has Cin·9 values per pixel).
        const perImage = 4 * Math.max(cin * H * W, ho * wo * cout, ho * wo * cin * 9) + 256;
        for (const variant of CONV2D_VARIANTS) {
          for (const maxBindingBytes of [undefined, perImage]) {
            const y = await conv3x3s2(gpu, input, w, b, layout, { maxBindingBytes, variant });
            assert.deepEqual(y.shape, [B, ho, wo, cout]);
            const got = toNchw((await y.read()) as Float32Array, B, ho, wo, cout);
            const what = `${variant} ${layout} ${[B, cin, H, W, cout]} limit ${maxBindingBytes}`;
            assertClose(got, want, { atol: 2e-6, rtol: 2e-6 }, what);
            y.destroy();
          }
          const g = await conv3x3s2(gpu, input, w, b, layout, { variant, gelu: true });
          const got = toNchw((await g.read()) as Float32Array, B, ho, wo, cout);
          const what = `${variant} ${layout} ${[B, cin, H, W, cout]} + GELU`;
          assertClose(got, geluReference(want), { atol: 2e-6, rtol: 2e-6 }, what);
          g.destroy();
        }
      }
    }
  });
});

Deno.test("conv3x3s2 rejects mismatched weights", async () => {
  await withGpu(async (gpu) => {
    const x = gpu.upload(new Float32Array(2 * 4 * 4), [1, 2, 4, 4]);
    const b = gpu.upload(new Float32Array(3), [3]);
    await assert.rejects(
      conv3x3s2(gpu, x, gpu.upload(new Float32Array(18 * 3), [18, 3]), b, "nchw"),
      /weight must have shape \[18,4\]/,
    );
  });
});

Deno.test("foldBatchNorm on the GPU matches the float64 fold at awkward channel counts", async () => {
  await withGpu(async (gpu) => {
    for (const [cin, cout] of [[1, 1], [3, 7], [5, 16], [24, 13]]) {
      const weight = randomArray(cout * cin * 9, cin + cout);
      const bn = {
        weight: randomArray(cout, 3, 0.5, 1.5),
        bias: randomArray(cout, 4),
        mean: randomArray(cout, 5),
        variance: randomArray(cout, 6, 0.01, 2),
      };
      const want = foldBatchNormReference(weight, cout, cin, bn, 1e-5);
      const got = await foldBatchNorm(gpu, gpu.upload(weight, [cout, cin, 3, 3]), {
        weight: gpu.upload(bn.weight, [cout]),
        bias: gpu.upload(bn.bias, [cout]),
        runningMean: gpu.upload(bn.mean, [cout]),
        runningVar: gpu.upload(bn.variance, [cout]),
      }, 1e-5);
      assert.deepEqual(got.weight.shape, [cin * 9, Math.ceil(cout / 4) * 4]);
      assertClose(await got.weight.read(), want.weight, { atol: 1e-6, rtol: 1e-6 }, "weight");
      assertClose(await got.bias.read(), want.bias, { atol: 1e-6, rtol: 1e-6 }, "bias");
    }
  });
});

Deno.test("conv2dReference: geometry, padding and a hand-computed 3×3 stride-2 case", () => {
  // 1 image, 1 channel, 3×3 input 1..9; kernel all ones; stride 2, padding 1 → 2×2 of corner sums.
  const x = { data: Float64Array.from({ length: 9 }, (_, i) => i + 1), B: 1, C: 1, H: 3, W: 3 };
  const y = conv2dReference(x, new Float64Array(9).fill(1), 1, {
    kernel: 3,
    stride: 2,
    padding: 1,
  });
  assert.deepEqual([y.H, y.W], [2, 2]);
  assert.deepEqual(Array.from(y.data), [
    1 + 2 + 4 + 5,
    2 + 3 + 5 + 6,
    4 + 5 + 7 + 8,
    5 + 6 + 8 + 9,
  ]);
  // Two output channels, bias, two input channels.
  const x2 = { data: new Float64Array([1, 2, 3, 4, 10, 20, 30, 40]), B: 1, C: 2, H: 2, W: 2 };
  const y2 = conv2dReference(x2, new Float64Array([1, 0, 0, 1]), 2, {
    kernel: 1,
    stride: 1,
    padding: 0,
    bias: new Float64Array([0.5, -0.5]),
  });
  assert.deepEqual(Array.from(y2.data), [1.5, 2.5, 3.5, 4.5, 9.5, 19.5, 29.5, 39.5]);
  // Stem geometry: 48×40 halves three times to 6×5.
  let m: FeatureMap = { data: new Float64Array(48 * 40), B: 1, C: 1, H: 48, W: 40 };
  for (let s = 0; s < 3; s++) {
    m = conv2dReference(m, new Float64Array(9), 1, { kernel: 3, stride: 2, padding: 1 });
  }
  assert.deepEqual([m.H, m.W], [6, 5]);
  assert.throws(
    () => conv2dReference(m, new Float64Array(49), 1, { kernel: 7, stride: 1, padding: 0 }),
    RangeError,
  );
});
