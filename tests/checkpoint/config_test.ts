import assert from "node:assert/strict";
import { crossCheckConfig, inferConfig } from "../../src/checkpoint/config.ts";
import type { ShapeMap } from "../../src/checkpoint/config.ts";
import type { LanguageConfig, VisionConfig } from "../../src/model/config.ts";

/** The state_dict shapes of a language model, as the reference GPT names them. */
function langShapes(
  { C = 16, V = 11, T = 8, L = 2, H = 4, bias = true, tssa = true, gamma = true } = {},
): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const ln = (p: string) => {
    m.set(`${p}.weight`, [C]);
    if (bias) m.set(`${p}.bias`, [C]);
  };
  const lin = (p: string, o: number, i: number) => {
    m.set(`${p}.weight`, [o, i]);
    if (bias) m.set(`${p}.bias`, [o]);
  };
  m.set("transformer.wte.weight", [V, C]);
  m.set("transformer.wpe.weight", [T, C]);
  for (let i = 0; i < L; i++) {
    const p = `transformer.h.${i}`;
    if (gamma) {
      m.set(`${p}.gamma1`, [C]);
      m.set(`${p}.gamma2`, [C]);
    }
    ln(`${p}.ln_1`);
    if (tssa) {
      m.set(`${p}.attn.temp`, [H, 1]);
      m.set(`${p}.attn.denom_bias`, [H, T, 1]);
      lin(`${p}.attn.c_attn`, C, C);
    } else {
      lin(`${p}.attn.c_attn`, 3 * C, C);
    }
    lin(`${p}.attn.c_proj`, C, C);
    ln(`${p}.ln_2`);
    lin(`${p}.mlp.c_fc`, 4 * C, C);
    lin(`${p}.mlp.c_proj`, C, 4 * C);
  }
  ln("transformer.ln_f");
  m.set("lm_head.weight", [V, C]);
  return m;
}

/** The state_dict shapes of a vision model (ToST or ViT attention). */
function visionShapes(
  {
    C = 32,
    depth = 3,
    H = 4,
    K = 7,
    patch = 16,
    qkvBias = true,
    tssa = true,
    cls = 2,
    hidden = 64,
  } = {},
): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const lin = (p: string, o: number, i: number, b = true) => {
    m.set(`${p}.weight`, [o, i]);
    if (b) m.set(`${p}.bias`, [o]);
  };
  const norm = (p: string) => {
    m.set(`${p}.weight`, [C]);
    m.set(`${p}.bias`, [C]);
  };
  m.set("cls_token", [1, 1, C]);
  const widths = patch === 8 ? [C / 4, C / 2, C] : [C / 8, C / 4, C / 2, C];
  let prev = 3;
  widths.forEach((w, i) => {
    m.set(`patch_embed.proj.${2 * i}.0.weight`, [w, prev, 3, 3]);
    for (const b of ["weight", "bias", "running_mean", "running_var"]) {
      m.set(`patch_embed.proj.${2 * i}.1.${b}`, [w]);
    }
    m.set(`patch_embed.proj.${2 * i}.1.num_batches_tracked`, []);
    prev = w;
  });
  m.set("pos_embeder.token_projection.weight", [C, 64, 1, 1]);
  m.set("pos_embeder.token_projection.bias", [C]);
  for (let i = 0; i < depth; i++) {
    const p = `blocks.${i}`;
    m.set(`${p}.gamma1`, [C]);
    m.set(`${p}.gamma2`, [C]);
    norm(`${p}.norm1`);
    if (tssa) {
      m.set(`${p}.attn.temp`, [H, 1]);
      lin(`${p}.attn.qkv`, C, C, qkvBias);
      lin(`${p}.attn.to_out.0`, C, C);
    } else {
      lin(`${p}.attn.qkv`, 3 * C, C, qkvBias);
      lin(`${p}.attn.proj`, C, C);
    }
    norm(`${p}.norm2`);
    lin(`${p}.mlp.fc1`, hidden, C);
    lin(`${p}.mlp.fc2`, C, hidden);
  }
  for (let i = 0; i < cls; i++) {
    const p = `cls_attn_blocks.${i}`;
    m.set(`${p}.gamma1`, [C]);
    m.set(`${p}.gamma2`, [C]);
    norm(`${p}.norm1`);
    lin(`${p}.attn.qkv`, 3 * C, C, qkvBias);
    lin(`${p}.attn.proj`, C, C);
    norm(`${p}.norm2`);
    lin(`${p}.mlp.fc1`, hidden, C);
    lin(`${p}.mlp.fc2`, C, hidden);
  }
  norm("norm");
  lin("head", K, C);
  return m;
}

Deno.test("inferConfig: causal ToST language model", () => {
  const cfg = inferConfig(langShapes({ C: 24, V: 13, T: 9, L: 3, H: 6 })) as LanguageConfig;
  assert.deepEqual(cfg, {
    family: "language",
    attention: "tssa",
    block_size: 9,
    vocab_size: 13,
    n_layer: 3,
    n_head: 6,
    n_embd: 24,
    bias: true,
    dropout: 0,
    norm_eps: 1e-5,
  });
});

Deno.test("inferConfig: language bias off, dropout from model_args", () => {
  const cfg = inferConfig(langShapes({ bias: false }), { model_args: { dropout: 0.1 } });
  assert.equal(cfg.family, "language");
  assert.equal((cfg as LanguageConfig).bias, false);
  assert.equal((cfg as LanguageConfig).dropout, 0.1);
});

Deno.test("inferConfig: softmax GPT needs n_head from model_args", () => {
  const shapes = langShapes({ tssa: false, gamma: false, H: 4 });
  assert.throws(() => inferConfig(shapes), /head count cannot be inferred.*model_args\.n_head/);
  const cfg = inferConfig(shapes, { model_args: { n_head: 2 } }) as LanguageConfig;
  assert.equal(cfg.attention, "softmax");
  assert.equal(cfg.n_head, 2);
  // nanoGPT's causal-mask buffer is accepted.
  shapes.set("transformer.h.0.attn.bias", [1, 1, 8, 8]);
  assert.equal(inferConfig(shapes, { model_args: { n_head: 2 } }).family, "language");
});

Deno.test("inferConfig: vision ToST with a patch-16 stem", () => {
  const cfg = inferConfig(visionShapes(), { args: { input_size: 48 } }) as VisionConfig;
  assert.deepEqual(cfg, {
    family: "vision",
    attention: "tssa",
    img_size: 48,
    patch_size: 16,
    in_chans: 3,
    num_classes: 7,
    embed_dim: 32,
    depth: 3,
    num_heads: 4,
    mlp_ratio: 2,
    qkv_bias: true,
    eta: 1,
    tokens_norm: true,
    cls_attn_layers: 2,
    pos_hidden_dim: 32,
    norm_eps: 1e-6,
  });
});

Deno.test("inferConfig: vision patch 8, no qkv bias, ViT attention", () => {
  const p8 = inferConfig(visionShapes({ patch: 8, qkvBias: false })) as VisionConfig;
  assert.equal(p8.patch_size, 8);
  assert.equal(p8.qkv_bias, false);
  assert.equal(p8.img_size, 224);
  const vit = visionShapes({ tssa: false });
  assert.throws(() => inferConfig(vit), /ViT's head count/);
  const cfg = inferConfig(vit, { args: { num_heads: 8 } }) as VisionConfig;
  assert.equal(cfg.attention, "softmax");
  assert.equal(cfg.num_heads, 8);
});

Deno.test("inferConfig: rejects missing, extra and misshapen tensors by name", () => {
  const missing = langShapes();
  missing.delete("transformer.h.1.mlp.c_fc.bias");
  assert.throws(() => inferConfig(missing), /"transformer\.h\.1\.mlp\.c_fc\.bias" is missing/);
  const extra = langShapes();
  extra.set("transformer.h.0.attn.extra", [3]);
  assert.throws(() => inferConfig(extra), /"transformer\.h\.0\.attn\.extra" is not part of/);
  const wrong = visionShapes();
  wrong.set("blocks.1.attn.temp", [5, 1]);
  assert.throws(
    () => inferConfig(wrong),
    /"blocks\.1\.attn\.temp" has shape \[5, 1\], expected \[4, 1\]/,
  );
  const hole = langShapes({ L: 3 });
  for (const k of [...hole.keys()]) if (k.startsWith("transformer.h.1.")) hole.delete(k);
  assert.throws(() => inferConfig(hole), /"transformer\.h\.1" is missing but higher indices exist/);
  assert.throws(() => inferConfig(new Map([["fc.weight", [2, 2]]])), /unrecognised architecture/);
  const xcit = visionShapes();
  xcit.set("blocks.0.attn.temperature", [4, 1, 1]);
  assert.throws(() => inferConfig(xcit), /XCiT/);
  const heads = langShapes({ C: 16, H: 4 });
  heads.set("transformer.h.0.attn.temp", [3, 1]);
  assert.throws(() => inferConfig(heads), /3 heads do not divide the width 16/);
});

Deno.test("crossCheckConfig: agreement passes, disagreement names both values", () => {
  const lang = inferConfig(langShapes({ H: 4, L: 2 }));
  crossCheckConfig(lang, {
    model_args: { n_layer: 2, n_head: 4, n_embd: 16, block_size: 8, vocab_size: 11, bias: true },
  });
  assert.throws(
    () => crossCheckConfig(lang, { model_args: { n_head: 8 } }),
    (e) =>
      e instanceof RangeError && /model_args\.n_head is 8 but the weights say 4/.test(e.message),
  );
  assert.throws(() => crossCheckConfig(lang, { model_args: { TSSA: false } }), /TSSA is false/);
  assert.throws(() => crossCheckConfig(lang, { model_args: { bias: false } }), /bias is false/);
  const vis = inferConfig(visionShapes({ C: 384, depth: 12, H: 8, hidden: 1536 }));
  crossCheckConfig(vis, { args: { model: "tost_cab_small_12_p16", nb_classes: 7 } });
  crossCheckConfig(vis, { args: { model: "tost_custom" } });
  assert.throws(
    () => crossCheckConfig(vis, { args: { model: "tost_cab_small_24_p16" } }),
    /depth is 24 but the weights say 12/,
  );
  assert.throws(
    () => crossCheckConfig(vis, { args: { model: "tost_cab_small_12_p8" } }),
    /patch size is 8 but the weights say 16/,
  );
  assert.throws(
    () => crossCheckConfig(vis, { args: { model: "tost_cab_medium_12_p16" } }),
    /width is 512 but the weights say 384/,
  );
  assert.throws(
    () => crossCheckConfig(vis, { args: { model: "vit_cab_small_12_p16" } }),
    /attention is "softmax" but the weights say "tssa"/,
  );
  assert.throws(() => crossCheckConfig(vis, { args: { nb_classes: 1000 } }), /nb_classes is 1000/);
});

Deno.test("inferConfig on the shared fixtures' shapes", async () => {
  const { openCheckpoint } = await import("../../src/checkpoint/torch.ts");
  const { chooseStateDict } = await import("../../src/checkpoint/state_dict.ts");
  const shapesOf = async (path: string): Promise<ShapeMap> => {
    const ck = await openCheckpoint(path);
    try {
      const sd = chooseStateDict(ck.root);
      return new Map([...sd.tensors].map(([n, t]) => [n, [...t.shape]]));
    } finally {
      ck.close();
    }
  };
  const v = inferConfig(await shapesOf("tests/fixtures/tost_vision_small.pth")) as VisionConfig;
  assert.deepEqual(
    [v.embed_dim, v.depth, v.num_heads, v.num_classes, v.patch_size, v.mlp_ratio, v.qkv_bias],
    [64, 2, 4, 10, 8, 4, true],
  );
  assert.equal(v.cls_attn_layers, 2);
  const l = inferConfig(await shapesOf("tests/fixtures/tost_lang_small.pt")) as LanguageConfig;
  assert.deepEqual(
    [l.block_size, l.vocab_size, l.n_layer, l.n_head, l.n_embd, l.bias, l.attention],
    [64, 65, 2, 4, 64, true, "tssa"],
  );
});
