/**
 * The attention modules of the ops fixture (`tests/fixtures/ops.ref.safetensors`):
 * `tssa` (AttentionTSSA, 4 heads, no qkv bias, x [2, 50, 64]) and `causal`
 * (CausalSelfAttention_TSSA, 4 heads, block_size 64, biases, x [2, 57, 64]),
 * with their PyTorch outputs and gradients.
 *
 * @module
 */

import { readSafetensors } from "../../src/io/safetensors.ts";
import type { SafetensorsFile } from "../../src/io/safetensors.ts";
import type { Gpu, Tensor } from "../../src/gpu/runtime.ts";

/** The fixture file, read once. */
export const OPS = await readSafetensors(
  new URL("../fixtures/ops.ref.safetensors", import.meta.url).pathname,
);

/** One module of the fixture: its prefix, PyTorch projection names and sizes. */
export interface ModuleCase {
  prefix: "tssa" | "causal";
  names: { inWeight: string; inBias?: string; outWeight: string; outBias: string };
  dims: { batches: number; tokens: number; heads: number; headDim: number };
}

export const TSSA_CASE: ModuleCase = {
  prefix: "tssa",
  names: { inWeight: "qkv.weight", outWeight: "to_out.0.weight", outBias: "to_out.0.bias" },
  dims: { batches: 2, tokens: 50, heads: 4, headDim: 16 },
};

export const CAUSAL_CASE: ModuleCase = {
  prefix: "causal",
  names: {
    inWeight: "c_attn.weight",
    inBias: "c_attn.bias",
    outWeight: "c_proj.weight",
    outBias: "c_proj.bias",
  },
  dims: { batches: 2, tokens: 57, heads: 4, headDim: 16 },
};

/** A fixture tensor of the case as f32. */
export function value(
  f: SafetensorsFile,
  c: ModuleCase,
  name: string,
): Float32Array<ArrayBuffer> {
  return f.f32(`${c.prefix}.${name}`);
}

/** The module's parameters as host arrays (the references' `params`). */
export function hostParams(c: ModuleCase) {
  const p = (name: string) => value(OPS, c, `param.${name}`);
  return {
    inWeight: p(c.names.inWeight),
    inBias: c.names.inBias ? p(c.names.inBias) : null,
    temp: p("temp"),
    outWeight: p(c.names.outWeight),
    outBias: p(c.names.outBias),
    denomBias: c.prefix === "causal" ? p("denom_bias") : new Float32Array(0),
  };
}

/** The module's parameters on the GPU, and zeroed gradients shaped alike. */
export function gpuParams(gpu: Gpu, c: ModuleCase, zeros = false) {
  const p = (name: string): Tensor => {
    const full = `${c.prefix}.param.${name}`;
    return zeros ? gpu.empty(OPS.shape(full)) : gpu.upload(OPS.f32(full), OPS.shape(full), full);
  };
  return {
    inWeight: p(c.names.inWeight),
    inBias: c.names.inBias ? p(c.names.inBias) : null,
    temp: p("temp"),
    outWeight: p(c.names.outWeight),
    outBias: p(c.names.outBias),
    denomBias: p(c.prefix === "causal" ? "denom_bias" : "temp"),
  };
}

/** Pairs of (a gradient of ours, its fixture name), for every parameter of the module. */
export function gradNames<T>(
  g: { inWeight: T; inBias: T | null; temp: T; outWeight: T; outBias: T | null; denomBias: T },
  c: ModuleCase,
): [T, string][] {
  const pairs: [T, string][] = [
    [g.inWeight, c.names.inWeight],
    [g.temp, "temp"],
    [g.outWeight, c.names.outWeight],
    [g.outBias!, c.names.outBias],
  ];
  if (c.names.inBias) pairs.push([g.inBias!, c.names.inBias]);
  if (c.prefix === "causal") pairs.push([g.denomBias, "denom_bias"]);
  return pairs;
}
