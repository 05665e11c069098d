/**
 * The trained tensors of a language model by `state_dict` name, and
 * gradient buffers shaped like the parameters. (Fresh weights come from
 * `src/model/init.ts`.)
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { LanguageBlockParams, LanguageParams } from "../model/language.ts";
import type { LinearParams, NormParams } from "../model/_params.ts";

/**
 * Every trained tensor of `params` with its `state_dict` name, in a fixed
 * order (the tied `lm_head.weight` is `transformer.wte.weight`, listed once).
 */
export function namedLanguageTensors(params: LanguageParams): [string, Tensor][] {
  const out: [string, Tensor][] = [
    ["transformer.wte.weight", params.wte],
    ["transformer.wpe.weight", params.wpe],
  ];
  const lin = (p: string, l: LinearParams) => {
    out.push([`${p}.weight`, l.weight]);
    if (l.bias) out.push([`${p}.bias`, l.bias]);
  };
  const norm = (p: string, n: NormParams) => {
    out.push([`${p}.weight`, n.weight]);
    if (n.bias) out.push([`${p}.bias`, n.bias]);
  };
  params.blocks.forEach((b, i) => {
    const p = `transformer.h.${i}`;
    norm(`${p}.ln_1`, b.ln1);
    lin(`${p}.attn.c_attn`, b.attn.cAttn);
    if (b.attn.kind === "tssa") {
      out.push([`${p}.attn.temp`, b.attn.temp], [`${p}.attn.denom_bias`, b.attn.denomBias]);
    }
    lin(`${p}.attn.c_proj`, b.attn.cProj);
    out.push([`${p}.gamma1`, b.gamma1]);
    norm(`${p}.ln_2`, b.ln2);
    lin(`${p}.mlp.c_fc`, b.cFc);
    lin(`${p}.mlp.c_proj`, b.mlpProj);
    out.push([`${p}.gamma2`, b.gamma2]);
  });
  norm("transformer.ln_f", params.lnF);
  return out;
}

/**
 * A structure like `params` whose every tensor is a new zeroed tensor of the
 * same shape: the gradient buffers of the backward.
 */
export function zerosLikeLanguage(gpu: Gpu, params: LanguageParams): LanguageParams {
  const tensors: Tensor[] = [];
  const z = (t: Tensor): Tensor => {
    const g = gpu.empty(t.shape, "f32", "grad");
    tensors.push(g);
    return g;
  };
  const zl = <T extends LinearParams | NormParams>(l: T): T =>
    ({ weight: z(l.weight), bias: l.bias ? z(l.bias) : null }) as T;
  try {
    const blocks: LanguageBlockParams[] = params.blocks.map((b) => ({
      ln1: zl(b.ln1),
      attn: b.attn.kind === "tssa"
        ? {
          kind: "tssa",
          cAttn: zl(b.attn.cAttn),
          temp: z(b.attn.temp),
          denomBias: z(b.attn.denomBias),
          cProj: zl(b.attn.cProj),
        }
        : { kind: "softmax", cAttn: zl(b.attn.cAttn), cProj: zl(b.attn.cProj) },
      gamma1: z(b.gamma1),
      ln2: zl(b.ln2),
      cFc: zl(b.cFc),
      mlpProj: zl(b.mlpProj),
      gamma2: z(b.gamma2),
    }));
    return {
      config: params.config,
      wte: z(params.wte),
      wpe: z(params.wpe),
      blocks,
      lnF: zl(params.lnF),
      tensors,
    };
  } catch (err) {
    for (const t of tensors) t.destroy();
    throw err;
  }
}
