/**
 * Float64 references of 2-D convolution (`conv2d.ts`, `kernels/conv2d.wgsl`)
 * and of its backward (`conv2d_backward.ts`, `kernels/conv2d_backward_*.wgsl`),
 * as `nn.Conv2d` computes them (groups 1, dilation 1), on NCHW feature maps
 * with PyTorch's `[Cout, Cin, k, k]` weights. Plain TypeScript with no GPU
 * import: the reference models build on it too.
 *
 * @module
 */

/** A `B × C × H × W` feature map (NCHW, as PyTorch). */
export interface FeatureMap {
  data: Float64Array;
  B: number;
  C: number;
  H: number;
  W: number;
}

/** Geometry of a square convolution. */
export interface ConvGeometry {
  /** Square kernel size. */
  kernel: number;
  stride: number;
  /** Zero padding on every side. */
  padding: number;
}

/** Geometry and optional bias of {@linkcode conv2dReference}. */
export interface Conv2dOptions extends ConvGeometry {
  /** `Cout`, or undefined for none. */
  bias?: ArrayLike<number>;
}

/** The output size `⌊(size + 2p − k)/s⌋ + 1` of one dimension. */
function outSize(size: number, { kernel: k, stride: s, padding: p }: ConvGeometry): number {
  return Math.floor((size + 2 * p - k) / s) + 1;
}

/**
 * Visit every (output pixel, input tap) pair of `y = conv2d(x, weight)`:
 * `visit(yAt, xAt, wAt)` with the flat indices of `y[b,o,i,j]`,
 * `x[b,c,i·s+u−p, j·s+v−p]` (inside the image only) and `weight[o,c,u,v]`.
 * The forward and the backward are both this one walk.
 */
function forEachTap(
  x: FeatureMap,
  Cout: number,
  g: ConvGeometry,
  visit: (yAt: number, xAt: number, wAt: number) => void,
): void {
  const { B, C: Cin, H, W } = x;
  const { kernel: k, stride: s, padding: p } = g;
  const Ho = outSize(H, g);
  const Wo = outSize(W, g);
  for (let b = 0; b < B; b++) {
    for (let o = 0; o < Cout; o++) {
      for (let i = 0; i < Ho; i++) {
        for (let j = 0; j < Wo; j++) {
          const yAt = ((b * Cout + o) * Ho + i) * Wo + j;
          for (let c = 0; c < Cin; c++) {
            const xc = (b * Cin + c) * H * W;
            const wc = (o * Cin + c) * k * k;
            for (let u = 0; u < k; u++) {
              const row = i * s + u - p;
              if (row < 0 || row >= H) continue;
              for (let v = 0; v < k; v++) {
                const col = j * s + v - p;
                if (col < 0 || col >= W) continue;
                visit(yAt, xc + row * W + col, wc + u * k + v);
              }
            }
          }
        }
      }
    }
  }
}

/**
 * 2-D cross-correlation as `nn.Conv2d`:
 * `y[b,o,i,j] = bias[o] + Σ_{c,u,v} x[b,c,i·s+u−p,j·s+v−p]·weight[o,c,u,v]`,
 * zero outside the image; output size `⌊(H + 2p − k)/s⌋ + 1`.
 *
 * @param weight `Cout × Cin × k × k`
 * @throws {RangeError} when the kernel does not fit the padded input
 * @throws {TypeError} when the weight or bias has the wrong length
 * @example
 * ```ts
 * import { conv2dReference } from "./conv2d_reference.ts";
 * const x = { data: new Float64Array([1, 2, 3, 4]), B: 1, C: 1, H: 2, W: 2 };
 * const y = conv2dReference(x, new Float64Array([1]), 1, { kernel: 1, stride: 2, padding: 0 });
 * if (y.data.join() !== "1") throw new Error("conv2d");
 * ```
 */
export function conv2dReference(
  x: FeatureMap,
  weight: ArrayLike<number>,
  Cout: number,
  options: Conv2dOptions,
): FeatureMap {
  const { B, C: Cin, H, W } = x;
  const { kernel: k, padding: p, bias } = options;
  const Ho = outSize(H, options);
  const Wo = outSize(W, options);
  if (Ho < 1 || Wo < 1) {
    throw new RangeError(
      `conv2dReference: a ${k}×${k} kernel does not fit a ${H}×${W} input (padding ${p})`,
    );
  }
  if (weight.length !== Cout * Cin * k * k || (bias && bias.length !== Cout)) {
    throw new TypeError(
      `conv2dReference: weight has ${weight.length} values and bias ${bias?.length ?? "none"}, ` +
        `expected ${Cout}×${Cin}×${k}×${k} and ${Cout}`,
    );
  }
  const y = new Float64Array(B * Cout * Ho * Wo);
  if (bias) {
    for (let i = 0; i < y.length; i++) y[i] = bias[Math.floor(i / (Ho * Wo)) % Cout];
  }
  forEachTap(x, Cout, options, (yAt, xAt, wAt) => {
    y[yAt] += x.data[xAt] * weight[wAt];
  });
  return { data: y, B, C: Cout, H: Ho, W: Wo };
}

/**
 * Backward of `y = conv2dReference(x, weight)` (no bias): `∂x` (assigned)
 * and `∂weight` (added to `dWeight`, `Cout × Cin × k × k`).
 *
 * @param dy `B × Cout × Ho × Wo`, the output size the forward gives for `x`
 * @throws {TypeError} when the sizes disagree
 * @example
 * ```ts
 * import { conv2dBackwardReference } from "./conv2d_reference.ts";
 * const x = { data: new Float64Array([1, 2, 3, 4]), B: 1, C: 1, H: 2, W: 2 };
 * const dWeight = new Float64Array(1);
 * const dx = conv2dBackwardReference(new Float64Array([1]), x, new Float64Array([5]), dWeight, {
 *   kernel: 1, stride: 2, padding: 0,
 * });
 * if (dx.join() !== "5,0,0,0" || dWeight[0] !== 1) throw new Error("conv backward");
 * ```
 */
export function conv2dBackwardReference(
  dy: ArrayLike<number>,
  x: FeatureMap,
  weight: ArrayLike<number>,
  dWeight: Float64Array,
  geometry: ConvGeometry,
): Float64Array {
  const { B, C: Cin, H, W } = x;
  const k = geometry.kernel;
  const Ho = outSize(H, geometry);
  const Wo = outSize(W, geometry);
  const Cout = weight.length / (Cin * k * k);
  if (!Number.isInteger(Cout) || dy.length !== B * Cout * Ho * Wo) {
    throw new TypeError(
      `conv2dBackwardReference: dy has ${dy.length} values and weight ${weight.length}, ` +
        `expected ${B}×Cout×${Ho}×${Wo} and Cout×${Cin}×${k}×${k}`,
    );
  }
  if (dWeight.length !== weight.length) {
    throw new TypeError(`conv2dBackwardReference: dWeight has ${dWeight.length} values`);
  }
  const dx = new Float64Array(x.data.length);
  forEachTap(x, Cout, geometry, (yAt, xAt, wAt) => {
    dx[xAt] += dy[yAt] * weight[wAt];
    dWeight[wAt] += dy[yAt] * x.data[xAt];
  });
  return dx;
}
