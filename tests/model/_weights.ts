/**
 * Random but well-conditioned state dicts for any config, built from the
 * name tables: weights ~ U(±1/√fan_in), LayerNorm and BatchNorm scales and
 * `temp` around 1, BatchNorm variances positive, layer scales around 0.5,
 * so every part of the model affects the outputs.
 *
 * @module
 */

import type { ModelConfig } from "../../src/model/config.ts";
import { paramSpecs } from "../../src/model/names.ts";
import type { StTensor } from "../../src/io/safetensors.ts";
import { seededRandom } from "../_util.ts";

/** A random state dict matching `cfg`'s table exactly (optional buffers left out). */
export function randomStateDict(cfg: ModelConfig, seed: number): Map<string, StTensor> {
  const rand = seededRandom(seed);
  const out = new Map<string, StTensor>();
  const specs = paramSpecs(cfg);
  for (const spec of specs) {
    if (spec.optional) continue;
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (spec.kind === "int") {
      out.set(spec.name, {
        dtype: "I64",
        shape: spec.shape,
        data: new Uint8Array(new BigInt64Array([3n]).buffer),
      });
      continue;
    }
    const v = new Float32Array(n);
    const name = spec.name;
    const last = name.split(".").pop()!;
    const fanIn = spec.shape.length >= 2 ? spec.shape.slice(1).reduce((a, b) => a * b, 1) : 1;
    for (let i = 0; i < n; i++) {
      if (last === "running_var") v[i] = rand(0.5, 1.5);
      else if (last === "temp") v[i] = rand(0.5, 1.5);
      else if (last.startsWith("gamma")) v[i] = rand(0.2, 0.8);
      else if (last === "denom_bias") v[i] = rand(-0.1, 0.1);
      else if (last === "weight" && spec.shape.length === 1) v[i] = rand(0.7, 1.3);
      else if (last === "bias" || last === "running_mean") v[i] = rand(-0.2, 0.2);
      else if (name.endsWith("wte.weight") || name.endsWith("wpe.weight") || name === "cls_token") {
        v[i] = rand(-0.5, 0.5);
      } else v[i] = rand(-1, 1) / Math.sqrt(fanIn);
    }
    out.set(name, { dtype: "F32", shape: spec.shape, data: new Uint8Array(v.buffer) });
  }
  // The head is tied to the token embedding.
  const wte = out.get("transformer.wte.weight");
  if (wte) out.set("lm_head.weight", wte);
  return out;
}
