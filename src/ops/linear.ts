/**
 * The linear layer `y = x·Wᵀ + b`, as PyTorch's `nn.Linear`: x `[..., K]`,
 * weight `[N, K]`, bias `[N]` or none, y `[..., N]` (batch dimensions are
 * flattened into M rows).
 *
 * GPU kernel: `kernels/linear.wgsl`, a register-blocked tiled matmul. When x,
 * y or the weight exceed one storage binding (128 MiB in software WebGPU; a
 * GPT-2 head of 50257×768 is 154 MB) the product is computed in pieces of rows
 * of x/y and of output features, each bound separately.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import linearWgsl from "../../kernels/linear.wgsl" with { type: "text" };
import {
  assertF32,
  assertShape,
  bindingLimit,
  bindRows,
  lastDimRows,
  outputTensor,
  rowPieces,
  storageAlignment,
} from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";

/** Compile-time tiling of the linear kernel (see `kernels/linear.wgsl`). */
export interface LinearTiling {
  /** Rows of y per workgroup. */
  bm: number;
  /** Columns of y per workgroup. */
  bn: number;
  /** Depth of the staged slabs. */
  bk: number;
  /** Rows per thread. */
  tm: number;
  /** Columns per thread. */
  tn: number;
}

/** The tiling {@linkcode linear} uses by default: 256 threads, 4×4 outputs each. */
export const LINEAR_TILING: Readonly<LinearTiling> = { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 };

/**
 * The tiling for one or two rows (a token at a time, as when sampling): a
 * 64-row tile would spend 97% of its work on padding. On software WebGPU this
 * is ~10× faster than {@linkcode LINEAR_TILING} for a 1×768 → 16384 product.
 */
export const LINEAR_TILING_SKINNY: Readonly<LinearTiling> = {
  bm: 2,
  bn: 64,
  bk: 16,
  tm: 1,
  tn: 4,
};

/** The tiling {@linkcode linear} picks for `rows` rows of x. */
export function linearTiling(rows: number): Readonly<LinearTiling> {
  return rows <= LINEAR_TILING_SKINNY.bm ? LINEAR_TILING_SKINNY : LINEAR_TILING;
}

/** Options of {@linkcode linear}: the chunking limit and the tiling, for tests and benches. */
export interface LinearOptions extends ChunkOptions {
  tiling?: LinearTiling;
}

function checkTiling(gpu: Gpu, t: LinearTiling): void {
  const ok = [t.bm, t.bn, t.bk, t.tm, t.tn].every((v) => Number.isInteger(v) && v > 0) &&
    t.bm % t.tm === 0 && t.bn % t.tn === 0;
  if (!ok) throw new RangeError(`linear: invalid tiling ${JSON.stringify(t)}`);
  const threads = (t.bm / t.tm) * (t.bn / t.tn);
  const maxThreads = gpu.limits.maxComputeInvocationsPerWorkgroup;
  if (threads > maxThreads) {
    throw new RangeError(
      `linear: tiling needs ${threads} invocations per workgroup, the device allows ${maxThreads}`,
    );
  }
  const shared = t.bk * (t.bm + t.bn) * 4;
  const maxShared = gpu.limits.maxComputeWorkgroupStorageSize;
  if (shared > maxShared) {
    throw new RangeError(
      `linear: tiling needs ${shared} bytes of workgroup memory, the device allows ${maxShared}`,
    );
  }
}

/**
 * `y = x·Wᵀ + b` on the GPU. Records dispatches only.
 *
 * @param x f32 `[..., K]`
 * @param weight f32 `[N, K]` (PyTorch's layout: one row per output feature)
 * @param bias f32 `[N]`, or null
 * @param out optional f32 `[..., N]` to write into (not an input)
 * @param options test/bench-only: chunking limit and tiling
 * @returns `out` or a new tensor `[..., N]`
 * @example
 * ```ts ignore
 * const x = gpu.upload(new Float32Array([1, 2]), [1, 2]);
 * const w = gpu.upload(new Float32Array([1, 0, 0, 1, 1, 1]), [3, 2]);
 * const y = await linear(gpu, x, w, null); // [[1, 2, 3]]
 * ```
 */
export async function linear(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  out?: Tensor,
  options: LinearOptions = {},
): Promise<Tensor> {
  assertF32("linear", "x", x);
  assertF32("linear", "weight", weight);
  if (weight.shape.length !== 2) {
    throw new TypeError(`linear: weight must be [out, in], got [${weight.shape}]`);
  }
  const [N, K] = weight.shape;
  if (x.shape.length === 0 || x.shape[x.shape.length - 1] !== K) {
    throw new TypeError(`linear: x [${x.shape}] does not end in weight's ${K} input features`);
  }
  if (K === 0) throw new RangeError("linear: needs at least one input feature");
  if (bias) {
    assertF32("linear", "bias", bias);
    assertShape("linear", "bias", bias, [N]);
  }
  const { rows: M } = lastDimRows("linear", "x", x);
  const y = outputTensor(gpu, "linear", [...x.shape.slice(0, -1), N], [x, weight, bias], out);
  const tiling = options.tiling ?? linearTiling(M);
  checkTiling(gpu, tiling);
  const align = storageAlignment(gpu);
  const limit = bindingLimit(gpu, options);
  // Rows of x ([M, K]) and y ([M, N]) are cut together; output features of W
  // ([N, K]) and b separately. Each y piece is a band of full rows.
  const rowBytes = Math.max(K, N) * 4;
  const mPieces = rowPieces("linear", M, rowBytes, limit, align);
  const nPieces = rowPieces("linear", N, K * 4, limit, align);
  if (mPieces.length === 0 || nPieces.length === 0) return y;
  const kernel = await gpu.kernel(
    "linear",
    linearWgsl,
    { bm: tiling.bm, bn: tiling.bn, bk: tiling.bk, tm: tiling.tm, tn: tiling.tn },
    bias ? "main" : "main_no_bias",
  );
  for (const mp of mPieces) {
    const xs = bindRows(x, mp.start, mp.count, K, align);
    const ys = bindRows(y, mp.start, mp.count, N, align);
    for (const np of nPieces) {
      const ws = bindRows(weight, np.start, np.count, K, align);
      const bs = bias ? bindRows(bias, np.start, np.count, 1, align) : null;
      const tilesN = Math.ceil(np.count / tiling.bn);
      const tiles = Math.ceil(mp.count / tiling.bm) * tilesN;
      const bindings = [xs.range, ws.range, ys.range];
      if (bs) bindings.push(bs.range);
      gpu.dispatch(kernel, {
        bindings,
        params: [
          mp.count,
          np.count,
          K,
          xs.base,
          ws.base,
          ys.base + np.start,
          bs?.base ?? 0,
          N,
          tilesN,
          tiles,
        ],
        workgroups: tiles,
      });
    }
  }
  return y;
}

/**
 * `y = x·Wᵀ + b` on the CPU with float64 accumulation (rounded to f32 on return).
 *
 * @param x `rows × inFeatures`, row-major
 * @param weight `outFeatures × inFeatures`, row-major
 * @param bias `outFeatures` values, or null
 * @example
 * ```ts
 * import { linearReference } from "./linear.ts";
 * const w = new Float32Array([1, 0, 0, 1, 1, 1]);
 * const y = linearReference(new Float32Array([1, 2]), w, new Float32Array([0, 0, 1]), 1, 2, 3);
 * if (y.join() !== "1,2,4") throw new Error("linear");
 * ```
 */
export function linearReference(
  x: Float32Array,
  weight: Float32Array,
  bias: Float32Array | null,
  rows: number,
  inFeatures: number,
  outFeatures: number,
): Float32Array<ArrayBuffer> {
  if (
    x.length !== rows * inFeatures || weight.length !== outFeatures * inFeatures ||
    (bias && bias.length !== outFeatures)
  ) {
    throw new TypeError(
      `linearReference: x ${x.length}, weight ${weight.length}, bias ${
        bias?.length ?? "none"
      } values for ${rows}×${inFeatures} → ${outFeatures}`,
    );
  }
  const y = new Float32Array(rows * outFeatures);
  for (let m = 0; m < rows; m++) {
    const xo = m * inFeatures;
    for (let n = 0; n < outFeatures; n++) {
      const wo = n * inFeatures;
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < inFeatures; k++) s += x[xo + k] * weight[wo + k];
      y[m * outFeatures + n] = s;
    }
  }
  return y;
}
