/**
 * Fresh parameters for any config, as the reference implementations
 * initialise them, by `state_dict` name (so they feed the same loaders as a
 * checkpoint does):
 *
 * - linear and embedding weights: normal(0, 0.02) (nanoGPT; timm's
 *   trunc_normal(std=0.02) for vision), truncated at ±2σ for vision;
 *   nanoGPT scales `c_proj.weight` by 1/√(2·n_layer);
 * - convolutions: normal(0, √(2/fan_out)) (Kaiming, fan-out, as timm);
 * - biases 0; LayerNorm and BatchNorm weight 1, bias 0; running mean 0,
 *   running var 1, `num_batches_tracked` 0;
 * - TSSA `temp` 1 and `denom_bias` 0; layer scales `gamma*` = `eta` for vision,
 *   1 for language; the class token trunc_normal(0.02);
 * - nanoGPT's `lm_head.weight` is the same tensor as `transformer.wte.weight`.
 *
 * @module
 */

import type { StTensor } from "../io/safetensors.ts";
import type { ModelConfig } from "./config.ts";
import { paramSpecs } from "./names.ts";

/** A seeded standard normal generator (mulberry32 + Box–Muller). */
export function normalRandom(seed: number): () => number {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

function f32Tensor(shape: number[], values: Float32Array): StTensor {
  return { dtype: "F32", shape, data: new Uint8Array(values.buffer) };
}

/**
 * Initial parameters of a model, as f32 tensors by `state_dict` name.
 *
 * @example
 * ```ts
 * import { initialParameters } from "./init.ts";
 * const p = initialParameters({
 *   family: "language", attention: "tssa", block_size: 8, vocab_size: 11, n_layer: 1,
 *   n_head: 2, n_embd: 8, bias: true, dropout: 0, norm_eps: 1e-5,
 * }, 1);
 * if (p.get("transformer.h.0.attn.temp")?.shape.join() !== "2,1") throw new Error();
 * ```
 */
export function initialParameters(cfg: ModelConfig, seed: number): Map<string, StTensor> {
  const normal = normalRandom(seed);
  const out = new Map<string, StTensor>();
  const depth = cfg.family === "language" ? cfg.n_layer : cfg.depth;
  for (const spec of paramSpecs(cfg)) {
    if (spec.optional) continue;
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (spec.kind === "int") {
      out.set(spec.name, { dtype: "I64", shape: spec.shape, data: new Uint8Array(n * 8) });
      continue;
    }
    const v = new Float32Array(n);
    const leaf = spec.name.split(".").pop()!;
    const fill = (x: number) => v.fill(x);
    const gauss = (std: number, truncate: boolean) => {
      for (let i = 0; i < n; i++) {
        let z = normal();
        while (truncate && Math.abs(z) > 2) z = normal();
        v[i] = std * z;
      }
    };
    if (/^gamma\d$/.test(leaf)) fill(cfg.family === "vision" ? cfg.eta : 1);
    else if (leaf === "temp" || leaf === "running_var") fill(1);
    else if (leaf === "denom_bias" || leaf === "bias" || leaf === "running_mean") fill(0);
    else if (isNorm(spec.name)) fill(1);
    else if (spec.shape.length === 4 && !spec.name.startsWith("pos_embeder")) {
      gauss(Math.sqrt(2 / (spec.shape[0] * spec.shape[2] * spec.shape[3])), false);
    } else if (cfg.family === "language") {
      const proj = /\.(attn|mlp)\.c_proj\.weight$/.test(spec.name);
      gauss(proj ? 0.02 / Math.sqrt(2 * depth) : 0.02, false);
    } else gauss(0.02, true);
    out.set(spec.name, f32Tensor(spec.shape, v));
  }
  // The language head is tied to the token embedding: one tensor, two names.
  if (cfg.family === "language") out.set("lm_head.weight", out.get("transformer.wte.weight")!);
  return out;
}

/** Whether a parameter belongs to a LayerNorm or BatchNorm (weight 1). */
function isNorm(name: string): boolean {
  return /(^|\.)(ln_\d|ln_f|norm\d?|norm)\.weight$/.test(name) ||
    /patch_embed\.proj\.\d+\.1\.weight$/.test(name);
}
