/**
 * The convolutional patch stem's building block: a 3×3 convolution with
 * stride 2 and padding 1, plus bias, with eval-mode BatchNorm folded into the
 * weights on the GPU from the live parameters ({@linkcode foldBatchNorm},
 * `kernels/batch_norm_fold.wgsl`; float64 reference
 * {@linkcode foldBatchNormReference}).
 *
 * GPU kernel: `kernels/conv2d.wgsl`, one thread per output pixel and 4
 * output channels (weights padded to a multiple of 4 channels). The
 * input is NCHW (images) or NHWC (a previous stage); the output is NHWC,
 * which for the stem's last stage is the token layout `[B, Ho·Wo, C]`.
 * Float64 references (NCHW): `conv2dReference` in `conv2d_reference.ts`, and
 * `batchNormReference` in `batch_norm_reference.ts` for the folded BatchNorm.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import conv2dWgsl from "../../kernels/conv2d.wgsl" with { type: "text" };
import foldWgsl from "../../kernels/batch_norm_fold.wgsl" with { type: "text" };
import {
  assertF32,
  assertShape,
  bindingLimit,
  bindRows,
  rowPieces,
  storageAlignment,
} from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";
import { bucket, testValues, type Tunable } from "../gpu/tune.ts";
import { mismatch, resolveVariant, tunableOp } from "./_tuned.ts";
import { type ConvDims, convGemm, type ConvLayout } from "./conv2d_gemm.ts";
import { conv2dReference } from "./conv2d_reference.ts";
import { gelu as geluOp } from "./gelu.ts";

const WORKGROUP_SIZE = 64;

/** Output side of a 3×3, stride 2, padding 1 convolution. */
export function convOutSize(n: number): number {
  return Math.floor((n - 1) / 2) + 1;
}

/** Output channels rounded up to a multiple of 4: the kernel's weight columns. */
export function paddedChannels(cout: number): number {
  return Math.ceil(cout / 4) * 4;
}

/** A stem convolution with BatchNorm folded in, laid out for the kernel (float64 reference). */
export interface FoldedConv {
  /** `[Cin·9, Cout4]`: PyTorch's `[Cout, Cin, 3, 3]` transposed, Cout4 = Cout rounded up to a multiple of 4 (zero columns). */
  weight: Float32Array<ArrayBuffer>;
  /** `[Cout]` */
  bias: Float32Array<ArrayBuffer>;
  cin: number;
  cout: number;
}

/**
 * Fold eval-mode BatchNorm into a bias-free 3×3 convolution, in float64:
 * `w' = w·γ/√(var + eps)`, `b' = β − mean·γ/√(var + eps)`, and transpose the
 * weights to `[Cin·9, Cout4]` ({@linkcode paddedChannels}).
 *
 * @param weight `[Cout, Cin, 3, 3]` values
 * @param bn BatchNorm weight (γ), bias (β), running mean and variance, `[Cout]` each
 * @example
 * ```ts
 * import { foldBatchNormReference } from "./conv2d.ts";
 * const one = new Float32Array([1]);
 * const f = foldBatchNormReference(new Float32Array(9).fill(2), 1, 1, {
 *   weight: one, bias: new Float32Array([0.5]), mean: one, variance: new Float32Array([3]),
 * }, 1);
 * if (f.weight[0] !== 1 || f.bias[0] !== 0) throw new Error("fold");
 * ```
 */
export function foldBatchNormReference(
  weight: Float32Array,
  cout: number,
  cin: number,
  bn: { weight: Float32Array; bias: Float32Array; mean: Float32Array; variance: Float32Array },
  eps = 1e-5,
): FoldedConv {
  if (weight.length !== cout * cin * 9) {
    throw new TypeError(
      `foldBatchNormReference: ${weight.length} weights for [${cout}, ${cin}, 3, 3]`,
    );
  }
  for (const [k, v] of Object.entries(bn)) {
    if (v.length !== cout) {
      throw new TypeError(
        `foldBatchNormReference: BatchNorm ${k} has ${v.length} values, expected ${cout}`,
      );
    }
  }
  const cout4 = paddedChannels(cout);
  const w = new Float32Array(cin * 9 * cout4);
  const b = new Float32Array(cout);
  for (let co = 0; co < cout; co++) {
    const s = bn.weight[co] / Math.sqrt(bn.variance[co] + eps);
    b[co] = bn.bias[co] - bn.mean[co] * s;
    for (let k = 0; k < cin * 9; k++) w[k * cout4 + co] = weight[co * cin * 9 + k] * s;
  }
  return { weight: w, bias: b, cin, cout };
}

/** BatchNorm's parameters and running statistics, `[Cout]` each. */
export interface BatchNormParams {
  weight: Tensor;
  bias: Tensor;
  runningMean: Tensor;
  runningVar: Tensor;
}

/**
 * Fold eval-mode BatchNorm into a bias-free 3×3 convolution on the GPU:
 * `w' = w·γ/√(var + eps)` packed to `[Cin·9, Cout4]`, `b' = β − mean·γ/√(var + eps)`,
 * the inputs of {@linkcode conv3x3s2}. Records one dispatch.
 *
 * @param weight f32 `[Cout, Cin, 3, 3]`
 * @returns new tensors `weight` `[Cin·9, Cout4]` and `bias` `[Cout]`
 * @throws {TypeError} for mismatched shapes
 * @example
 * ```ts ignore
 * const folded = await foldBatchNorm(gpu, convWeight, bn, 1e-5);
 * const y = await conv3x3s2(gpu, x, folded.weight, folded.bias, "nhwc");
 * ```
 */
export async function foldBatchNorm(
  gpu: Gpu,
  weight: Tensor,
  bn: BatchNormParams,
  eps: number,
): Promise<{ weight: Tensor; bias: Tensor }> {
  const op = "foldBatchNorm";
  assertF32(op, "weight", weight);
  if (weight.shape.length !== 4 || weight.shape[2] !== 3 || weight.shape[3] !== 3) {
    throw new TypeError(`${op}: weight must be [Cout, Cin, 3, 3], got [${weight.shape}]`);
  }
  const [cout, cin] = weight.shape;
  for (const [name, t] of Object.entries(bn)) {
    assertF32(op, name, t);
    assertShape(op, name, t, [cout]);
  }
  const packed = gpu.empty([cin * 9, paddedChannels(cout)], "f32", `${op}.weight`);
  const bias = gpu.empty([cout], "f32", `${op}.bias`);
  const n = packed.numel;
  if (n === 0) return { weight: packed, bias };
  const kernel = await gpu.kernel("batch_norm_fold", foldWgsl);
  gpu.dispatch(kernel, {
    bindings: [weight, bn.weight, bn.bias, bn.runningMean, bn.runningVar, packed, bias],
    params: [n, cin, cout, f32(eps)],
    workgroups: Math.ceil(n / WORKGROUP_SIZE),
  });
  return { weight: packed, bias };
}

/** A stem convolution call, as the `conv2d` tunable classes it. */
export interface ConvShape {
  /** Output pixels B·Ho·Wo (the GEMM's rows). */
  m: number;
  cin: number;
  cout: number;
}

/** The designs of a stem convolution ({@linkcode CONV2D}). */
export const CONV2D_VARIANTS = ["gemm", "direct"] as const;

/** Calls with fewer output pixels than this are not measured. */
const TUNE_MIN_PIXELS = 256;

/**
 * The shape class of a stem convolution (forward or backward): output
 * pixels rounded up to a power of 4, input and output channels; null below
 * 256 pixels (not measured).
 */
export function convClass(s: ConvShape): string | null {
  return s.m < TUNE_MIN_PIXELS ? null : `m${bucket(s.m)} ci${s.cin} co${s.cout}`;
}

/** Options of {@linkcode conv3x3s2}. */
export interface Conv3x3s2Options extends ChunkOptions {
  /** Apply exact (erf) GELU to the result (fused into the GEMM variant's epilogue). */
  gelu?: boolean;
  /** Use this variant ({@linkcode CONV2D_VARIANTS}) instead of the tuned one (tests, benches). */
  variant?: string;
}

/**
 * Run one stem convolution on the GPU, as the tuned variant: `gemm`
 * (im2col into a temporary `[B·Ho·Wo, Cin·9]` and the GEMM engine with the
 * bias and GELU epilogues, `conv2d_gemm.ts`) or `direct`
 * (`kernels/conv2d.wgsl`, one dispatch per piece of images, then GELU's).
 *
 * @param x f32 `[B, Cin, H, W]` (layout "nchw") or `[B, H, W, Cin]` (layout "nhwc")
 * @param weight f32 `[Cin·9, Cout4]` from {@linkcode foldBatchNorm} (or `packConvWeight`)
 * @param bias f32 `[Cout]`, which gives Cout
 * @param options fused GELU, a forced variant, a test-only binding limit
 *   (batches over one binding run in pieces of images)
 * @returns f32 `[B, Ho, Wo, Cout]`, Ho = ⌊(H − 1)/2⌋ + 1
 */
export async function conv3x3s2(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  layout: ConvLayout,
  options: Conv3x3s2Options = {},
): Promise<Tensor> {
  const op = "conv3x3s2";
  assertF32(op, "x", x);
  assertF32(op, "weight", weight);
  assertF32(op, "bias", bias);
  if (x.shape.length !== 4) throw new TypeError(`${op}: x must be 4-D, got [${x.shape}]`);
  const [B, d1, d2, d3] = x.shape;
  const [cin, H, W] = layout === "nchw" ? [d1, d2, d3] : [d3, d1, d2];
  if (bias.shape.length !== 1) {
    throw new TypeError(`${op}: bias must be [Cout], got [${bias.shape}]`);
  }
  const cout = bias.shape[0];
  assertShape(op, "weight", weight, [cin * 9, paddedChannels(cout)]);
  if (H < 1 || W < 1) throw new RangeError(`${op}: empty image ${H}×${W}`);
  const d: ConvDims = { B, cin, H, W, cout, ho: convOutSize(H), wo: convOutSize(W) };
  const shape = { m: B * d.ho * d.wo, cin, cout };
  const variant = await resolveVariant(gpu, op, CONV2D, shape, options.variant);
  const gelu = options.gelu ?? false;
  if (variant === "gemm") {
    const w = { tensor: weight, layout: "rows" as const, ld: paddedChannels(cout) };
    const chunks = { maxBindingBytes: options.maxBindingBytes };
    return await convGemm(gpu, x, d, layout, w, { bias, gelu }, chunks);
  }
  const y = await convDirect(gpu, x, weight, bias, d, layout, options);
  if (!gelu) return y;
  const out = await geluOp(gpu, y);
  y.destroy();
  return out;
}

/** The direct kernel: one thread per output pixel and 4 output channels. */
async function convDirect(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  d: ConvDims,
  layout: ConvLayout,
  options: ChunkOptions,
): Promise<Tensor> {
  const op = "conv3x3s2";
  const { B, cin, H, W, cout, ho, wo } = d;
  const y = gpu.empty([B, ho, wo, cout], "f32", op);
  const threadsPerImage = ho * wo * (paddedChannels(cout) / 4);
  if (B * threadsPerImage === 0) return y;
  gpu.assertBindable(`${op} weight`, weight.byteSize);
  // Pieces of whole images, each image's input and output within one binding.
  const inImage = cin * H * W;
  const outImage = ho * wo * cout;
  const align = storageAlignment(gpu);
  const pieces = rowPieces(
    op,
    B,
    Math.max(inImage, outImage) * 4,
    bindingLimit(gpu, options),
    align,
  );
  const kernel = await gpu.kernel("conv2d", conv2dWgsl, { workgroupSize: WORKGROUP_SIZE });
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, inImage, align);
    const ys = bindRows(y, start, count, outImage, align);
    const n = count * threadsPerImage;
    gpu.dispatch(kernel, {
      bindings: [xs.range, weight, bias, ys.range],
      params: [n, cin, H, W, cout, ho, wo, layout === "nchw" ? 1 : 0, xs.base, ys.base],
      workgroups: Math.ceil(n / WORKGROUP_SIZE),
    });
  }
  return y;
}

/** Convolution sizes the variants are validated at: odd and tiny images, Cout not a multiple of 4. */
export const CHECK_CONVS = [
  { B: 1, cin: 1, H: 1, W: 1, cout: 1, layout: "nchw" },
  { B: 3, cin: 3, H: 5, W: 7, cout: 6, layout: "nchw" },
  { B: 2, cin: 5, H: 7, W: 4, cout: 9, layout: "nhwc" },
] as const;

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  for (const c of CHECK_CONVS) {
    const { B, cin, H, W, cout } = c;
    const x = testValues(B * cin * H * W, 1);
    const weight = testValues(cout * cin * 9, 2);
    const bias = testValues(cout, 3);
    const conv = conv2dReference({ data: Float64Array.from(x), B, C: cin, H, W }, weight, cout, {
      kernel: 3,
      stride: 2,
      padding: 1,
      bias: Float64Array.from(bias),
    });
    const [ho, wo] = [conv.H, conv.W];
    const want = nchwToNhwc(conv.data, B, cout, ho * wo); // the kernel's output layout
    const packed = foldBatchNormReference(weight, cout, cin, {
      weight: new Float32Array(cout).fill(1),
      bias: new Float32Array(cout),
      mean: new Float32Array(cout),
      variance: new Float32Array(cout).fill(1),
    }, 0).weight;
    const input = c.layout === "nchw" ? x : Float32Array.from(nchwToNhwc(x, B, cin, H * W));
    const xs = gpu.upload(input, c.layout === "nchw" ? [B, cin, H, W] : [B, H, W, cin]);
    const ws = gpu.upload(packed, [cin * 9, paddedChannels(cout)]);
    const bs = gpu.upload(bias, [cout]);
    const y = await conv3x3s2(gpu, xs, ws, bs, c.layout, { variant });
    const bad = mismatch(
      `${B}×${cin}×${H}×${W}→${cout} ${c.layout}`,
      await y.read() as Float32Array,
      want,
      { atol: 1e-5, rtol: 1e-5 },
    );
    for (const t of [xs, ws, bs, y]) t.destroy();
    if (bad) return bad;
  }
  return null;
}

/** `[B, C, P]` → `[B, P, C]` (NCHW to NHWC, P = H·W): the variants' checks. */
export function nchwToNhwc(x: ArrayLike<number>, B: number, C: number, P: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let p = 0; p < P; p++) out[(b * P + p) * C + c] = x[(b * C + c) * P + p];
    }
  }
  return out;
}

/**
 * The stem convolution's tunable: `gemm` (im2col and the GEMM engine) or
 * `direct` (one kernel, no temporary), classed by output pixels
 * (rounded up to a power of 4), input and output channels.
 */
export const CONV2D: Tunable<ConvShape> = tunableOp<ConvShape>({
  op: "conv2d",
  version: 1,
  variants: CONV2D_VARIANTS,
  unsupported(gpu, variant, s) {
    if (!(CONV2D_VARIANTS as readonly string[]).includes(variant)) {
      return `is not one of ${CONV2D_VARIANTS.join(", ")}`;
    }
    const bytes = s.m * s.cin * 9 * 4;
    if (variant === "gemm" && bytes > gpu.limits.maxBufferSize) {
      return `needs a ${bytes}-byte patch matrix, over the device's ${gpu.limits.maxBufferSize}-byte buffers`;
    }
    return null;
  },
  shapeClass: convClass,
  // Without a measurement: the direct kernel for the first stage's few input
  // channels (a GEMM over Cin·9 < 36 terms lost to it 3× on lavapipe) and for
  // patch matrices over one buffer, the GEMM otherwise (2.5–6× faster).
  fallback: (gpu, s) =>
    s.cin < 4 || s.m * s.cin * 36 > gpu.limits.maxBufferSize ? "direct" : "gemm",
  validate,
  workload(gpu, { m, cin, cout }) {
    // One square NHWC image with about m output pixels.
    const side = Math.max(1, Math.ceil(Math.sqrt(m)));
    const x = gpu.upload(testValues(side * 2 * side * 2 * cin, 1), [1, 2 * side, 2 * side, cin]);
    const w = gpu.upload(testValues(cin * 9 * paddedChannels(cout), 2), [
      cin * 9,
      paddedChannels(cout),
    ]);
    const b = gpu.upload(testValues(cout, 3), [cout]);
    return {
      shape: [m, cin, cout],
      run: async (variant) => {
        (await conv3x3s2(gpu, x, w, b, "nhwc", { variant })).destroy();
      },
      destroy() {
        for (const t of [x, w, b]) t.destroy();
      },
    };
  },
  callsPerRound: 1,
});
