import assert from "node:assert/strict";
import { initialParameters, normalRandom } from "../../src/model/init.ts";
import { compareStateDict } from "../../src/model/names.ts";
import type { LanguageConfig, VisionConfig } from "../../src/model/config.ts";
import { toF32 } from "../../src/io/dtype.ts";
import type { StTensor } from "../../src/io/safetensors.ts";

const f32 = (t: StTensor) => toF32(t.dtype, t.data);

const LANG: LanguageConfig = {
  family: "language",
  attention: "tssa",
  block_size: 16,
  vocab_size: 13,
  n_layer: 2,
  n_head: 2,
  n_embd: 16,
  bias: true,
  dropout: 0,
  norm_eps: 1e-5,
};

const VISION: VisionConfig = {
  family: "vision",
  attention: "tssa",
  img_size: 32,
  patch_size: 8,
  in_chans: 3,
  num_classes: 10,
  embed_dim: 32,
  depth: 2,
  num_heads: 4,
  mlp_ratio: 4,
  qkv_bias: true,
  eta: 0.5,
  tokens_norm: true,
  cls_attn_layers: 2,
  pos_hidden_dim: 32,
  norm_eps: 1e-6,
};

Deno.test("initial parameters cover the name table exactly, for every family and attention", () => {
  for (
    const cfg of [LANG, { ...LANG, attention: "softmax" as const }, VISION, {
      ...VISION,
      attention: "softmax" as const,
      patch_size: 16,
    }]
  ) {
    const p = initialParameters(cfg, 3);
    const diff = compareStateDict(cfg, p);
    assert.deepEqual([diff.missing, diff.unexpected, diff.mismatched].map((x) => x.length), [
      0,
      0,
      0,
    ]);
  }
});

Deno.test("initial values follow the reference rules", () => {
  const p = initialParameters(LANG, 7);
  const get = (n: string) => f32(p.get(n)!);
  assert.ok(get("transformer.h.0.attn.temp").every((v) => v === 1));
  assert.ok(get("transformer.h.1.attn.denom_bias").every((v) => v === 0));
  assert.ok(get("transformer.h.0.ln_1.weight").every((v) => v === 1));
  assert.ok(get("transformer.h.0.ln_1.bias").every((v) => v === 0));
  assert.equal(p.get("lm_head.weight"), p.get("transformer.wte.weight"));
  const std = (a: Float32Array) => Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);
  const wte = get("transformer.wte.weight");
  assert.ok(Math.abs(std(wte) - 0.02) < 0.006, `${std(wte)}`);
  const proj = get("transformer.h.0.mlp.c_proj.weight");
  assert.ok(Math.abs(std(proj) - 0.02 / Math.sqrt(4)) < 0.002, `${std(proj)}`);
  const v = initialParameters(VISION, 7);
  assert.ok(f32(v.get("blocks.0.gamma1")!).every((x) => x === 0.5));
  assert.ok(f32(v.get("patch_embed.proj.0.1.running_var")!).every((x) => x === 1));
  assert.ok(f32(v.get("cls_token")!).every((x) => Math.abs(x) <= 0.04));
  // Same seed, same values; another seed, other values.
  assert.deepEqual(
    f32(initialParameters(LANG, 7).get("transformer.wpe.weight")!),
    get("transformer.wpe.weight"),
  );
  assert.notDeepEqual(
    f32(initialParameters(LANG, 8).get("transformer.wpe.weight")!),
    get("transformer.wpe.weight"),
  );
});

Deno.test("normalRandom has unit variance", () => {
  const r = normalRandom(1);
  let s = 0;
  let s2 = 0;
  const n = 20000;
  for (let i = 0; i < n; i++) {
    const x = r();
    s += x;
    s2 += x * x;
  }
  assert.ok(Math.abs(s / n) < 0.03);
  assert.ok(Math.abs(s2 / n - 1) < 0.05);
});
