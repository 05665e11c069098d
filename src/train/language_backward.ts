/**
 * Training pass of the language models (causal ToST and its GPT twin): the
 * forward that keeps what the backward needs, then the backward walking the
 * layers in reverse, as llm.c does: no tape, each layer's backward called
 * explicitly with the tensors its forward saved.
 *
 *     x0 = wte[idx] + wpe                      embedding
 *     block: xMid = xIn + γ1·a,   a = attn(h1),  h1 = ln_1(xIn)
 *            xOut = xMid + γ2·m,  m = c_proj(gelu(f)), f = c_fc(h2), h2 = ln_2(xMid)
 *     logits = ln_f(xL)·wteᵀ;  loss = mean cross-entropy
 *
 * Gradient convention (as everywhere in tost): **parameter gradients
 * accumulate** (`+=`) into the gradient buffers (a structure like the
 * parameters, see `params.ts`), so micro-batches add up; activation
 * gradients are assigned. The tied head's and the embedding's gradients both
 * land in `grads.wte`. The optimizer zeroes the gradients after using them.
 *
 * Everything is recorded into the runtime's batch; nothing waits on the GPU.
 * Shapes: B sequences of T ≤ block_size tokens, C = n_embd, V = vocab_size.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { LanguageBlockParams, LanguageParams } from "../model/language.ts";
import { uploadTokenIds } from "../model/language.ts";
import { embedding } from "../ops/embedding.ts";
import { residual } from "../ops/elementwise.ts";
import { gelu } from "../ops/gelu.ts";
import { layerNorm } from "../ops/layer_norm.ts";
import { linear } from "../ops/linear.ts";
import { linearBackward } from "../ops/linear_backward.ts";
import { layerNormBackward } from "../ops/layer_norm_backward.ts";
import { geluBackward } from "../ops/gelu_backward.ts";
import { residualBackward } from "../ops/residual_backward.ts";
import { embeddingBackward } from "../ops/embedding_backward.ts";
import { crossEntropyForwardBackward } from "../ops/cross_entropy_backward.ts";
import { checkTargets } from "../ops/cross_entropy.ts";
import {
  destroyAttentionSaves,
  tssaAttentionBackward,
  tssaAttentionForwardWithSaves,
} from "../nn/tssa_attention_backward.ts";
import type { TssaAttentionSaves } from "../nn/tssa_attention_backward.ts";
import {
  softmaxAttentionBackward,
  softmaxAttentionForwardWithSaves,
} from "../nn/softmax_attention.ts";
import type { SoftmaxAttentionSaves } from "../nn/softmax_attention.ts";

/** What one block's forward keeps for its backward (all owned by the saves). */
interface BlockSaves {
  /** `[B, T, C]` stream entering the block (ln_1's input). */
  xIn: Tensor;
  /** `[B, T, C]` ln_1 output (the attention's input). */
  h1: Tensor;
  /** The attention module's own saves. */
  attn:
    | { kind: "tssa"; saves: TssaAttentionSaves }
    | { kind: "softmax"; saves: SoftmaxAttentionSaves };
  /** `[B, T, C]` attention output (before γ1). */
  a: Tensor;
  /** `[B, T, C]` stream after the attention residual (ln_2's input). */
  xMid: Tensor;
  /** `[B, T, C]` ln_2 output. */
  h2: Tensor;
  /** `[B, T, 4C]` c_fc output (GELU's input). */
  f: Tensor;
  /** `[B, T, 4C]` GELU output. */
  g: Tensor;
  /** `[B, T, C]` MLP output (before γ2). */
  m: Tensor;
}

/** A batch to train on: token ids and next-token targets (−1 = ignore), `[B, T]` each. */
export interface TrainBatch {
  B: number;
  T: number;
  x: ArrayLike<number | bigint>;
  y: ArrayLike<number | bigint>;
}

/** Options of {@linkcode languageForwardBackward}. */
export interface ForwardBackwardOptions {
  /** Upstream gradient of the loss (default 1). */
  lossScale?: number;
}

function copyOf(gpu: Gpu, t: Tensor, label: string): Tensor {
  const c = gpu.empty(t.shape, "f32", label);
  gpu.copy(t, c);
  return c;
}

async function blockForward(
  gpu: Gpu,
  params: LanguageParams,
  p: LanguageBlockParams,
  xIn: Tensor,
  owned: Tensor[],
): Promise<BlockSaves> {
  const cfg = params.config;
  const eps = cfg.norm_eps;
  const keep = (t: Tensor) => {
    owned.push(t);
    return t;
  };
  const h1 = keep(await layerNorm(gpu, xIn, p.ln1.weight, p.ln1.bias, eps));
  let attn: BlockSaves["attn"];
  let a: Tensor;
  if (p.attn.kind === "tssa") {
    const r = await tssaAttentionForwardWithSaves(gpu, {
      x: h1,
      params: {
        inWeight: p.attn.cAttn.weight,
        inBias: p.attn.cAttn.bias,
        temp: p.attn.temp,
        denomBias: p.attn.denomBias,
        outWeight: p.attn.cProj.weight,
        outBias: p.attn.cProj.bias,
      },
      heads: cfg.n_head,
    });
    attn = { kind: "tssa", saves: r.saves };
    a = keep(r.out);
  } else {
    const r = await softmaxAttentionForwardWithSaves(gpu, {
      x: h1,
      cAttn: p.attn.cAttn,
      cProj: p.attn.cProj,
      heads: cfg.n_head,
    });
    attn = { kind: "softmax", saves: r.saves };
    a = keep(r.out);
  }
  const xMid = keep(copyOf(gpu, xIn, "train.xMid"));
  await residual(gpu, xMid, a, p.gamma1);
  const h2 = keep(await layerNorm(gpu, xMid, p.ln2.weight, p.ln2.bias, eps));
  const f = keep(await linear(gpu, h2, p.cFc.weight, p.cFc.bias));
  const g = keep(await gelu(gpu, f));
  const m = keep(await linear(gpu, g, p.mlpProj.weight, p.mlpProj.bias));
  return { xIn, h1, attn, a, xMid, h2, f, g, m };
}

function destroyBlockSaves(s: BlockSaves): void {
  if (s.attn.kind === "tssa") destroyAttentionSaves(s.attn.saves);
  else s.attn.saves.destroy();
}

async function blockBackward(
  gpu: Gpu,
  params: LanguageParams,
  p: LanguageBlockParams,
  gp: LanguageBlockParams,
  s: BlockSaves,
  dx: Tensor,
): Promise<void> {
  const cfg = params.config;
  const eps = cfg.norm_eps;
  const temps: Tensor[] = [];
  const tmp = (t: Tensor) => {
    temps.push(t);
    return t;
  };
  try {
    // xOut = xMid + γ2·m
    const dm = tmp(
      await residualBackward(gpu, { dy: dx, f: s.m, gamma: p.gamma2, dGamma: gp.gamma2 }),
    );
    const dg = tmp(
      await linearBackward(gpu, {
        dy: dm,
        x: s.g,
        weight: p.mlpProj.weight,
        dWeight: gp.mlpProj.weight,
        dBias: gp.mlpProj.bias,
      }),
    );
    const df = tmp(await geluBackward(gpu, { dy: dg, x: s.f }));
    const dh2 = tmp(
      await linearBackward(gpu, {
        dy: df,
        x: s.h2,
        weight: p.cFc.weight,
        dWeight: gp.cFc.weight,
        dBias: gp.cFc.bias,
      }),
    );
    const dMid = tmp(
      await layerNormBackward(gpu, {
        dy: dh2,
        x: s.xMid,
        weight: p.ln2.weight,
        eps,
        dWeight: gp.ln2.weight,
        dBias: gp.ln2.bias,
      }),
    );
    await residual(gpu, dx, dMid, null);
    // xMid = xIn + γ1·a
    const da = tmp(
      await residualBackward(gpu, { dy: dx, f: s.a, gamma: p.gamma1, dGamma: gp.gamma1 }),
    );
    let dh1: Tensor;
    if (s.attn.kind === "tssa") {
      if (p.attn.kind !== "tssa" || gp.attn.kind !== "tssa") {
        throw new TypeError("attention kinds differ");
      }
      dh1 = tmp(
        await tssaAttentionBackward(gpu, {
          dy: da,
          saves: s.attn.saves,
          params: {
            inWeight: p.attn.cAttn.weight,
            inBias: p.attn.cAttn.bias,
            temp: p.attn.temp,
            denomBias: p.attn.denomBias,
            outWeight: p.attn.cProj.weight,
            outBias: p.attn.cProj.bias,
          },
          grads: {
            inWeight: gp.attn.cAttn.weight,
            inBias: gp.attn.cAttn.bias,
            temp: gp.attn.temp,
            denomBias: gp.attn.denomBias,
            outWeight: gp.attn.cProj.weight,
            outBias: gp.attn.cProj.bias,
          },
          heads: cfg.n_head,
        }),
      );
    } else {
      if (p.attn.kind !== "softmax" || gp.attn.kind !== "softmax") {
        throw new TypeError("attention kinds differ");
      }
      dh1 = tmp(
        await softmaxAttentionBackward(gpu, {
          dy: da,
          saves: s.attn.saves,
          cAttn: p.attn.cAttn,
          cProj: p.attn.cProj,
          grads: { cAttn: gp.attn.cAttn, cProj: gp.attn.cProj },
          heads: cfg.n_head,
        }),
      );
    }
    const dIn = tmp(
      await layerNormBackward(gpu, {
        dy: dh1,
        x: s.xIn,
        weight: p.ln1.weight,
        eps,
        dWeight: gp.ln1.weight,
        dBias: gp.ln1.bias,
      }),
    );
    await residual(gpu, dx, dIn, null);
  } finally {
    for (const t of temps) t.destroy();
  }
}

/**
 * Record a whole training pass on one batch: forward with saves, fused
 * cross-entropy, backward through every layer, adding every parameter's
 * gradient into `grads`. Returns the mean loss as a `[1]` GPU tensor (owned
 * by the caller; read it when convenient).
 *
 * @throws {RangeError} for ids or targets outside the vocabulary, or T > block_size
 * @example
 * ```ts ignore
 * const grads = zerosLikeLanguage(gpu, params);
 * const loss = await languageForwardBackward(gpu, params, grads, batch);
 * console.log((await gpu.read(loss))[0]);
 * ```
 */
export async function languageForwardBackward(
  gpu: Gpu,
  params: LanguageParams,
  grads: LanguageParams,
  batch: TrainBatch,
  options: ForwardBackwardOptions = {},
): Promise<Tensor> {
  const cfg = params.config;
  const { B, T } = batch;
  if (T > cfg.block_size) {
    throw new RangeError(`Cannot train on ${T} tokens at once: block_size is ${cfg.block_size}`);
  }
  const owned: Tensor[] = [];
  const saves: BlockSaves[] = [];
  const keep = (t: Tensor) => {
    owned.push(t);
    return t;
  };
  try {
    const idx = keep(uploadTokenIds(gpu, params, batch.x, B, T));
    const targets = keep(
      gpu.upload(checkTargets(batch.y, cfg.vocab_size), [B * T], "train.targets"),
    );
    let x = keep(await embedding(gpu, idx, params.wte, params.wpe));
    for (const p of params.blocks) {
      const s = await blockForward(gpu, params, p, x, owned);
      saves.push(s);
      x = keep(copyOf(gpu, s.xMid, "train.xOut"));
      await residual(gpu, x, s.m, p.gamma2);
    }
    const hf = keep(
      await layerNorm(gpu, x, params.lnF.weight, params.lnF.bias, cfg.norm_eps),
    );
    const logits = keep(await linear(gpu, hf, params.wte, null));
    const { loss, dlogits } = await crossEntropyForwardBackward(gpu, {
      logits,
      targets,
      scale: options.lossScale ?? 1,
    });
    keep(dlogits);
    try {
      const dhf = keep(
        await linearBackward(gpu, {
          dy: dlogits,
          x: hf,
          weight: params.wte,
          dWeight: grads.wte,
          dBias: null,
        }),
      );
      const dx = keep(
        await layerNormBackward(gpu, {
          dy: dhf,
          x,
          weight: params.lnF.weight,
          eps: cfg.norm_eps,
          dWeight: grads.lnF.weight,
          dBias: grads.lnF.bias,
        }),
      );
      for (let i = params.blocks.length - 1; i >= 0; i--) {
        await blockBackward(gpu, params, params.blocks[i], grads.blocks[i], saves[i], dx);
      }
      await embeddingBackward(gpu, {
        dy: dx,
        ids: batch.x,
        vocab: cfg.vocab_size,
        dWte: grads.wte,
        dWpe: grads.wpe,
      });
      return loss;
    } catch (err) {
      loss.destroy();
      throw err;
    }
  } finally {
    for (const s of saves) destroyBlockSaves(s);
    for (const t of owned) t.destroy();
  }
}
