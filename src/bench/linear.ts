/**
 * GEMM throughput of the linear layer (`tost bench --ops linear`) and the
 * products `tost tune` measures: the forward `y = x·Wᵀ + b` and, with
 * `backward`, its two backward products ∂x = ∂y·W and ∂W += ∂yᵀ·x, at the
 * models' shapes. Every (product, variant) is checked against the float64
 * reference at a small size before anything is timed.
 *
 * Shapes are written as the layer's `m × k → n`: m rows (tokens), k input
 * features, n output features.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { gemm, type GemmKind, gemmKind, type GemmProduct, type GemmVariant } from "../ops/gemm.ts";
import { chooseGemmVariant, gemmTestValues as values } from "../ops/gemm_tune.ts";
import { linearBackwardReference, linearForwardReference } from "../ops/linear_reference.ts";
import { median } from "./stats.ts";

/** `[m, k, n]` of the linear layers the models and presets run, largest first. */
export const LINEAR_SHAPES: readonly (readonly [number, number, number])[] = [
  [4096, 384, 1152], // ToST-S qkv over 4096 tokens
  [4096, 1536, 384], // ToST-S MLP fc2
  [4096, 384, 384], // ToST-S attention output
  [1024, 1024, 1024],
  [768, 128, 384], // nanoGPT's CPU configuration: c_attn, batch 12 × 64 tokens
  [512, 64, 192], // the `small` preset's c_attn, batch 8 × 64 tokens
  [1, 384, 1152], // one token at a time (sampling)
];

/** Which product of the layer. */
export type LinearPass = "fwd" | "dx" | "dw";

/** The GEMM a linear-layer pass runs, on operands in fresh tensors. */
export interface LinearProduct {
  pass: LinearPass;
  kind: GemmKind;
  prod: GemmProduct;
  destroy(): void;
}

/** Host data of a layer of `[m, k, n]`: x, W, b, ∂y. */
function layerData(m: number, k: number, n: number) {
  return { x: values(m * k, 1), w: values(n * k, 2), b: values(n, 3), dy: values(m * n, 4) };
}

/**
 * Upload a layer's operands and describe one pass as a GEMM (the same
 * products `linear` and `linearBackward` record).
 */
export function linearProduct(
  gpu: Gpu,
  pass: LinearPass,
  [m, k, n]: readonly [number, number, number],
): LinearProduct {
  const d = layerData(m, k, n);
  const owned: Tensor[] = [];
  const up = (a: Float32Array<ArrayBuffer>, shape: number[], label: string) => {
    const t = gpu.upload(a, shape, label);
    owned.push(t);
    return t;
  };
  let prod: GemmProduct;
  if (pass === "fwd") {
    prod = {
      a: { tensor: up(d.x, [m, k], "x"), layout: "depth", ld: k },
      b: { tensor: up(d.w, [n, k], "w"), layout: "depth", ld: k },
      c: up(new Float32Array(m * n), [m, n], "y"),
      m,
      n,
      k,
      epilogue: { bias: up(d.b, [n], "b") },
    };
  } else if (pass === "dx") {
    prod = {
      a: { tensor: up(d.dy, [m, n], "dy"), layout: "depth", ld: n },
      b: { tensor: up(d.w, [n, k], "w"), layout: "rows", ld: k },
      c: up(new Float32Array(m * k), [m, k], "dx"),
      m,
      n: k,
      k: n,
    };
  } else {
    prod = {
      a: { tensor: up(d.dy, [m, n], "dy"), layout: "rows", ld: n },
      b: { tensor: up(d.x, [m, k], "x"), layout: "rows", ld: k },
      c: up(new Float32Array(n * k), [n, k], "dw"),
      m: n,
      n: k,
      k: m,
      epilogue: { accumulate: true },
    };
  }
  return {
    pass,
    kind: gemmKind(prod),
    prod,
    destroy: () => owned.forEach((t) => t.destroy()),
  };
}

/** The float64 result of a pass on the layer data of `[m, k, n]` (∂W from zero). */
export function linearPassReference(
  pass: LinearPass,
  [m, k, n]: readonly [number, number, number],
): Float64Array {
  const d = layerData(m, k, n);
  const dims = { rows: m, inFeatures: k, outFeatures: n };
  if (pass === "fwd") return linearForwardReference(d.x, d.w, d.b, dims);
  const dWeight = new Float64Array(n * k);
  const dx = linearBackwardReference({ dy: d.dy, x: d.x, weight: d.w, dWeight, dBias: null }, dims);
  return pass === "dx" ? dx : dWeight;
}

/** One `tost bench --ops linear` record. */
export interface LinearRecord {
  op: "linear";
  pass: LinearPass;
  /** The GEMM's layout in BLAS terms (fwd "nt", dx "nn", dw "tn"). */
  kind: GemmKind;
  m: number;
  k: number;
  n: number;
  variant: string;
  /** Whether `variant` is what the tuner (or the default) picks for this product. */
  chosen: boolean;
  /** GFLOP/s from the median GPU time (wall time without timestamps). */
  gflops: number | null;
  gpu_ms: number | null;
  /** Fastest GPU time of the repeats (other work on the machine only slows a run down). */
  gpu_ms_min: number | null;
  /** Median wall time of one product including submit and wait (~10 ms floor). */
  wall_ms: number | null;
  repeats: number;
  status: "ok" | "failed";
  error?: string;
  device: string;
  backend: string;
  software: boolean;
}

/** Options of {@linkcode runLinearBench}. */
export interface LinearBenchOptions {
  shapes: readonly (readonly [number, number, number])[];
  passes: readonly LinearPass[];
  /** Variants to time per product; "chosen" (the default) is the tuner's choice. */
  variants: readonly (GemmVariant | "chosen")[];
  warmup: number;
  repeats: number;
  onRecord?: (r: LinearRecord) => void;
}

/** Largest |got − ref| / max(1, max|ref|). */
function scaledError(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let maxRef = 1;
  for (let i = 0; i < ref.length; i++) maxRef = Math.max(maxRef, Math.abs(ref[i]));
  let err = 0;
  for (let i = 0; i < ref.length; i++) {
    const e = Math.abs(got[i] - ref[i]);
    err = Math.max(err, Number.isNaN(e) ? Infinity : e);
  }
  return err / maxRef;
}

/** Size of the pre-timing correctness check (small, awkward). */
const CHECK: readonly [number, number, number] = [45, 37, 29];

/**
 * Check then time every (shape, pass, variant): medians of `repeats`
 * timestamp-timed products after `warmup` untimed ones, and wall time.
 */
export async function runLinearBench(
  gpu: Gpu,
  options: LinearBenchOptions,
): Promise<LinearRecord[]> {
  const records: LinearRecord[] = [];
  for (const shape of options.shapes) {
    const [m, k, n] = shape;
    for (const pass of options.passes) {
      const p = linearProduct(gpu, pass, shape);
      const chosen = await chooseGemmVariant(gpu, p.kind, p.prod.m, p.prod.n, p.prod.k);
      const variants = [
        ...new Set(options.variants.map((v) => (v === "chosen" ? chosen : v))),
      ];
      for (const variant of variants) {
        const rec: LinearRecord = {
          op: "linear",
          pass,
          kind: p.kind,
          m,
          k,
          n,
          variant: variant.name,
          chosen: variant === chosen,
          gflops: null,
          gpu_ms: null,
          gpu_ms_min: null,
          wall_ms: null,
          repeats: options.repeats,
          status: "ok",
          device: gpu.info.name,
          backend: gpu.info.backend,
          software: gpu.info.software,
        };
        try {
          await checkPass(gpu, pass, variant);
          const once = () => gemm(gpu, p.prod, variant);
          for (let i = 0; i < options.warmup; i++) await gpu.scoped(once);
          const walls: number[] = [];
          for (let i = 0; i < options.repeats; i++) {
            const t0 = performance.now();
            await gpu.scoped(once);
            walls.push(performance.now() - t0);
          }
          rec.wall_ms = median(walls);
          if (gpu.hasTimestamps) {
            const [times] = await gpu.profile([once], options.repeats);
            rec.gpu_ms = median(times);
            rec.gpu_ms_min = Math.min(...times);
          }
          const ms = rec.gpu_ms ?? rec.wall_ms;
          rec.gflops = (2 * m * k * n) / (ms * 1e6);
        } catch (err) {
          rec.status = "failed";
          rec.error = err instanceof Error ? err.message : String(err);
        }
        records.push(rec);
        options.onRecord?.(rec);
      }
      p.destroy();
    }
  }
  return records;
}

/** Run `pass` with `variant` at a small size and compare with the reference. */
async function checkPass(gpu: Gpu, pass: LinearPass, variant: GemmVariant): Promise<void> {
  const p = linearProduct(gpu, pass, CHECK);
  try {
    await gpu.scoped(() => gemm(gpu, p.prod, variant));
    const err = scaledError(await p.prod.c.read(), linearPassReference(pass, CHECK));
    if (!(err <= 1e-5)) {
      throw new Error(
        `${variant.name} ${pass} is wrong at ${CHECK.join("×")} (error ${
          err.toExponential(2)
        }): not timed`,
      );
    }
  } finally {
    p.destroy();
  }
}
