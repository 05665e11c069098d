/**
 * The float64 reference models against the PyTorch fixtures, layer by layer,
 * plus the name tables and the building blocks the fixtures do not isolate.
 */

import assert from "node:assert/strict";
import { loadCheckpoint } from "../../src/checkpoint/mod.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import type { SafetensorsFile, StTensor } from "../../src/io/safetensors.ts";
import type { LanguageConfig, VisionConfig } from "../../src/model/config.ts";
import { fourierEncoding, fourierFeatures } from "../../src/model/fourier.ts";
import {
  assertStateDict,
  compareStateDict,
  languageParamSpecs,
  paramSpecs,
  stemWidths,
  visionParamSpecs,
} from "../../src/model/names.ts";
import {
  causalSelfAttention,
  causalSelfAttentionTssa,
  languageForwardReference,
} from "../../src/model/reference/language.ts";
import { linear, weightsFromTensors } from "../../src/model/reference/layers.ts";
import type { Weights } from "../../src/model/reference/layers.ts";
import { crossEntropyReference } from "../../src/ops/cross_entropy_reference.ts";
import {
  attentionSoftmax,
  attentionTssa,
  visionForwardReference,
} from "../../src/model/reference/vision.ts";
import { assertCloseScaled, seededRandom } from "../_util.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url);
const fixture = (name: string) => new URL(name, FIXTURES).pathname;

/** The fixtures' bar for float32 kernels; the float64 reference must also meet a far tighter one. */
const FIXTURE_TOL = 1e-4;
/** What float64 achieves against float32-stored float64 outputs (measured: < 1e-7 relative). */
const TIGHT_TOL = 1e-6;

function f64(file: SafetensorsFile, name: string): Float64Array {
  const t = file.get(name);
  assert.equal(t.dtype, "F32", `${name} dtype`);
  return weightsFromTensors(new Map([[name, t]])).get(name)!.data;
}

function ints(file: SafetensorsFile, name: string): number[] {
  const t = file.get(name);
  assert.equal(t.dtype, "I64", `${name} dtype`);
  return Array.from(weightsFromTensors(new Map([[name, t]])).get(name)!.data);
}

function checkAct(actual: Float64Array, file: SafetensorsFile, name: string): void {
  const expected = f64(file, name);
  assertCloseScaled(actual, expected, FIXTURE_TOL, name);
  assertCloseScaled(actual, expected, TIGHT_TOL, name);
}

async function loadVision() {
  const { config, tensors } = await loadCheckpoint(fixture("tost_vision_small.pth"));
  if (config.family !== "vision") {
    throw new TypeError(`Expected a vision config, got ${config.family}`);
  }
  return { cfg: config, tensors, w: weightsFromTensors(tensors) };
}

async function loadLanguage() {
  const { config, tensors } = await loadCheckpoint(fixture("tost_lang_small.pt"));
  if (config.family !== "language") {
    throw new TypeError(`Expected a language config, got ${config.family}`);
  }
  return { cfg: config, tensors, w: weightsFromTensors(tensors) };
}

Deno.test("Fourier features: interleaved sin/cos, y then x, float32 and float64 agree", () => {
  const Hp = 3, Wp = 5, hidden = 32;
  const f = fourierFeatures(Hp, Wp, { hidden, float32: false });
  const f32 = fourierFeatures(Hp, Wp, { hidden });
  assert.equal(f.length, Hp * Wp * 2 * hidden);
  assertCloseScaled(f32, f, 1e-6, "float32 vs float64 features");
  for (let i = 0; i < Hp; i++) {
    for (let j = 0; j < Wp; j++) {
      const row = f.subarray((i * Wp + j) * 2 * hidden, (i * Wp + j + 1) * 2 * hidden);
      const y = ((i + 1) / (Hp + 1e-6)) * 2 * Math.PI;
      const x = ((j + 1) / (Wp + 1e-6)) * 2 * Math.PI;
      for (let m = 0; m < hidden; m += 2) {
        const tau = 10000 ** (m / hidden);
        assert.ok(Math.abs(row[m] - Math.sin(y / tau)) < 1e-15);
        assert.ok(Math.abs(row[m + 1] - Math.cos(y / tau)) < 1e-15);
        assert.ok(Math.abs(row[hidden + m] - Math.sin(x / tau)) < 1e-15);
        assert.ok(Math.abs(row[hidden + m + 1] - Math.cos(x / tau)) < 1e-15);
      }
    }
  }
  // The projection is a per-token linear map of the features.
  const rand = seededRandom(3);
  const D = 6;
  const weight = Float64Array.from({ length: D * 2 * hidden }, () => rand());
  const bias = Float64Array.from({ length: D }, () => rand());
  const pe = fourierEncoding(Hp, Wp, weight, bias, { hidden });
  assertCloseScaled(pe, linear(f32, Hp * Wp, weight, 2 * hidden, D, bias), 1e-15, "projection");
  assert.throws(() => fourierFeatures(0, 2), RangeError);
  assert.throws(() => fourierFeatures(2, 2, { hidden: 3 }), RangeError);
  assert.throws(() => fourierEncoding(2, 2, new Float64Array(5), bias), TypeError);
});

/** What the references also capture for `tost inspect`, which PyTorch's fixtures lack. */
const INSPECTED = /\.attn\.(pi|weights)$/;

Deno.test("vision reference matches the PyTorch fixture: every activation, logits, train loss", async () => {
  const { cfg, w } = await loadVision();
  const ref = await readSafetensors(fixture("tost_vision_small.ref.safetensors"));
  for (const k of ["case0", "case1"]) {
    const [B, C, H, W] = ref.get(`${k}.input`).shape;
    assert.equal(C, cfg.in_chans);
    const seen: string[] = [];
    const logits = visionForwardReference(cfg, w, f64(ref, `${k}.input`), B, H, W, {
      capture: (name, shape, data) => {
        if (INSPECTED.test(name)) return; // Π and attention weights: not in the fixtures
        assert.deepEqual(shape, ref.get(`${k}.act.${name}`).shape, `${k}.${name} shape`);
        checkAct(data, ref, `${k}.act.${name}`);
        seen.push(name);
      },
    });
    checkAct(logits, ref, `${k}.logits`);
    const expected = ref.names.filter((n) => n.startsWith(`${k}.act.`)).map((n) =>
      n.slice(`${k}.act.`.length)
    );
    assert.deepEqual(seen.toSorted(), expected.toSorted(), `${k} captured activations`);
  }
  // Training-mode forward (BatchNorm on batch statistics) gives the fixture's train.loss.
  const [B, , H, W] = ref.get("case0.input").shape;
  const logits = visionForwardReference(cfg, w, f64(ref, "case0.input"), B, H, W, {
    batchNorm: "batch",
  });
  const loss = crossEntropyReference(logits, ints(ref, "train.labels"), B, cfg.num_classes);
  assertCloseScaled([loss], f64(ref, "train.loss"), TIGHT_TOL, "train.loss");
});

Deno.test("language reference matches the PyTorch fixture: every activation, logits, loss", async () => {
  const { cfg, w } = await loadLanguage();
  const ref = await readSafetensors(fixture("tost_lang_small.ref.safetensors"));
  for (const k of ["case0", "case1"]) {
    const [B, T] = ref.get(`${k}.idx`).shape;
    const seen: string[] = [];
    const logits = languageForwardReference(cfg, w, ints(ref, `${k}.idx`), B, T, {
      capture: (name, shape, data) => {
        if (INSPECTED.test(name)) return; // Π and attention weights: not in the fixtures
        assert.deepEqual(shape, ref.get(`${k}.act.${name}`).shape, `${k}.${name} shape`);
        checkAct(data, ref, `${k}.act.${name}`);
        seen.push(name);
      },
    });
    checkAct(logits, ref, `${k}.logits`);
    const expected = ref.names.filter((n) => n.startsWith(`${k}.act.`)).map((n) =>
      n.slice(`${k}.act.`.length)
    );
    assert.deepEqual(seen.toSorted(), expected.toSorted(), `${k} captured activations`);
    const loss = crossEntropyReference(logits, ints(ref, `${k}.targets`), B * T, cfg.vocab_size);
    assertCloseScaled([loss], f64(ref, `${k}.loss`), TIGHT_TOL, `${k}.loss`);
  }
  assert.throws(() => languageForwardReference(cfg, w, new Array(65).fill(0), 1, 65), RangeError);
  assert.throws(() => languageForwardReference(cfg, w, [cfg.vocab_size], 1, 1), RangeError);
});

Deno.test("attention operators alone match ops.ref (vision TSSA without qkv bias, causal TSSA)", async () => {
  const ops = await readSafetensors(fixture("ops.ref.safetensors"));
  const params = (prefix: string): Weights => {
    const w: Weights = new Map();
    for (const n of ops.names.filter((n) => n.startsWith(`${prefix}.param.`))) {
      w.set(n, { shape: ops.get(n).shape, data: f64(ops, n) });
    }
    return w;
  };
  {
    const [B, N, D] = ops.get("tssa.x").shape;
    const x = f64(ops, "tssa.x");
    const w = params("tssa");
    const y = new Float64Array(B * N * D);
    for (let b = 0; b < B; b++) {
      y.set(
        attentionTssa(x.subarray(b * N * D, (b + 1) * N * D), {
          tokens: N,
          dim: D,
          heads: 4,
          weights: w,
          prefix: "tssa.param",
          qkvBias: false,
        }),
        b * N * D,
      );
    }
    checkAct(y, ops, "tssa.y");
  }
  {
    const [B, T, C] = ops.get("causal.x").shape;
    const cfg: LanguageConfig = {
      family: "language",
      attention: "tssa",
      block_size: 64,
      vocab_size: 1,
      n_layer: 0,
      n_head: 4,
      n_embd: C,
      bias: true,
      dropout: 0,
      norm_eps: 1e-5,
    };
    const x = f64(ops, "causal.x");
    const w = params("causal");
    const y = new Float64Array(B * T * C);
    for (let b = 0; b < B; b++) {
      y.set(
        causalSelfAttentionTssa(x.subarray(b * T * C, (b + 1) * T * C), {
          cfg,
          tokens: T,
          weights: w,
          prefix: "causal.param",
        }),
        b * T * C,
      );
    }
    checkAct(y, ops, "causal.y");
  }
});

function randomWeights(specs: { name: string; shape: number[] }[], seed: number): Weights {
  const rand = seededRandom(seed);
  const w: Weights = new Map();
  for (const s of specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const positive = /running_var|norm.*weight|ln_.*weight|temp$/.test(s.name);
    w.set(s.name, {
      shape: s.shape,
      data: Float64Array.from({ length: n }, () => positive ? rand(0.5, 1.5) : rand(-0.5, 0.5)),
    });
  }
  return w;
}

/** Weights whose reads are recorded, to check the name table against what a forward uses. */
function recording(w: Weights): { w: Weights; used: Set<string> } {
  const used = new Set<string>();
  const proxy = new Map(w);
  proxy.get = (name: string) => {
    used.add(name);
    return w.get(name);
  };
  return { w: proxy, used };
}

const VISION_BASE: VisionConfig = {
  family: "vision",
  attention: "tssa",
  img_size: 32,
  patch_size: 8,
  in_chans: 3,
  num_classes: 5,
  embed_dim: 32,
  depth: 1,
  num_heads: 2,
  mlp_ratio: 2,
  qkv_bias: true,
  eta: 1,
  tokens_norm: true,
  cls_attn_layers: 2,
  pos_hidden_dim: 32,
  norm_eps: 1e-6,
};

const LANGUAGE_BASE: LanguageConfig = {
  family: "language",
  attention: "tssa",
  block_size: 16,
  vocab_size: 11,
  n_layer: 2,
  n_head: 2,
  n_embd: 16,
  bias: true,
  dropout: 0,
  norm_eps: 1e-5,
};

Deno.test("every variant reads exactly its name table: vision tssa/softmax × patch 8/16 × qkv bias", () => {
  let seed = 1;
  for (const attention of ["tssa", "softmax"] as const) {
    for (const patch_size of [8, 16]) {
      for (const qkv_bias of [true, false]) {
        for (const tokens_norm of [true, false]) {
          const cfg = { ...VISION_BASE, attention, patch_size, qkv_bias, tokens_norm };
          const specs = visionParamSpecs(cfg);
          const { w, used } = recording(randomWeights(specs, seed++));
          const H = 2 * patch_size, W = 3 * patch_size;
          const images = Float64Array.from({ length: 2 * 3 * H * W }, (_, i) => Math.sin(i));
          let tokens = 0;
          const logits = visionForwardReference(cfg, w, images, 2, H, W, {
            capture: (name, shape) => {
              if (name === "patch_embed") tokens = shape[1];
            },
          });
          const what = `${attention} p${patch_size} bias ${qkv_bias} tokens_norm ${tokens_norm}`;
          assert.equal(tokens, 6, `${what}: tokens`);
          assert.equal(logits.length, 2 * cfg.num_classes);
          assert.ok(logits.every(Number.isFinite), `${what}: finite logits`);
          // Everything but BatchNorm's step counter is read, and nothing else.
          const expected = specs.map((s) => s.name).filter((n) =>
            !n.endsWith("num_batches_tracked")
          );
          assert.deepEqual([...used].toSorted(), expected.toSorted(), `${what}: names read`);
        }
      }
    }
  }
});

Deno.test("every variant reads exactly its name table: language tssa/softmax × bias", () => {
  let seed = 100;
  for (const attention of ["tssa", "softmax"] as const) {
    for (const bias of [true, false]) {
      const cfg = { ...LANGUAGE_BASE, attention, bias };
      const specs = languageParamSpecs(cfg);
      const { w, used } = recording(randomWeights(specs.filter((s) => !s.optional), seed++));
      const logits = languageForwardReference(cfg, w, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 2, 5);
      assert.equal(logits.length, 2 * 5 * cfg.vocab_size);
      assert.ok(logits.every(Number.isFinite));
      const expected = specs.filter((s) => !s.optional).map((s) => s.name);
      assert.deepEqual([...used].toSorted(), expected.toSorted(), `${attention} bias ${bias}`);
    }
  }
});

Deno.test("language models are causal: logits up to t ignore tokens after t", () => {
  for (const attention of ["tssa", "softmax"] as const) {
    const cfg = { ...LANGUAGE_BASE, attention };
    const w = randomWeights(languageParamSpecs(cfg).filter((s) => !s.optional), 7);
    const a = languageForwardReference(cfg, w, [3, 1, 4, 1, 5, 9, 2, 6], 1, 8);
    const b = languageForwardReference(cfg, w, [3, 1, 4, 1, 5, 0, 0, 10], 1, 8);
    const V = cfg.vocab_size;
    assertCloseScaled(a.subarray(0, 5 * V), b.subarray(0, 5 * V), 1e-15, `${attention} prefix`);
    assert.ok(
      Math.abs(a[5 * V] - b[5 * V]) > 1e-9,
      `${attention}: position 5 depends on its token`,
    );
  }
});

Deno.test("softmax attentions agree: causal GPT's last row equals ViT's full attention", () => {
  const rand = seededRandom(11);
  const C = 12, NH = 3, T = 7;
  const qkvW = Float64Array.from({ length: 3 * C * C }, () => rand());
  const qkvB = Float64Array.from({ length: 3 * C }, () => rand());
  const projW = Float64Array.from({ length: C * C }, () => rand());
  const projB = Float64Array.from({ length: C }, () => rand());
  const w: Weights = new Map([
    ["v.qkv.weight", { shape: [3 * C, C], data: qkvW }],
    ["v.qkv.bias", { shape: [3 * C], data: qkvB }],
    ["v.proj.weight", { shape: [C, C], data: projW }],
    ["v.proj.bias", { shape: [C], data: projB }],
    ["l.c_attn.weight", { shape: [3 * C, C], data: qkvW }],
    ["l.c_attn.bias", { shape: [3 * C], data: qkvB }],
    ["l.c_proj.weight", { shape: [C, C], data: projW }],
    ["l.c_proj.bias", { shape: [C], data: projB }],
  ]);
  const x = Float64Array.from({ length: T * C }, () => rand());
  const full = attentionSoftmax(x, {
    tokens: T,
    dim: C,
    heads: NH,
    weights: w,
    prefix: "v",
    qkvBias: true,
  });
  const cfg = { ...LANGUAGE_BASE, attention: "softmax" as const, n_embd: C, n_head: NH };
  const causal = causalSelfAttention(x, { cfg, tokens: T, weights: w, prefix: "l" });
  assertCloseScaled(causal.subarray((T - 1) * C), full.subarray((T - 1) * C), 1e-14, "last row");
  // The first position attends only to itself: c_proj(v_0).
  const v0 = linear(x.subarray(0, C), 1, qkvW.subarray(2 * C * C), C, C, qkvB.subarray(2 * C));
  assertCloseScaled(causal.subarray(0, C), linear(v0, 1, projW, C, C, projB), 1e-14, "first row");
});

Deno.test("name tables equal the fixture checkpoints' state dicts in both directions", async () => {
  for (const { cfg, tensors } of [await loadVision(), await loadLanguage()]) {
    const names = paramSpecs(cfg).map((s) => s.name);
    assert.deepEqual(names.toSorted(), [...tensors.keys()].toSorted(), `${cfg.family} names`);
    for (const s of paramSpecs(cfg)) {
      assert.deepEqual(tensors.get(s.name)!.shape, s.shape, s.name);
      assert.equal(tensors.get(s.name)!.dtype, s.kind === "int" ? "I64" : "F32", s.name);
    }
    assertStateDict(cfg, tensors);

    const broken = new Map<string, StTensor>(tensors);
    const [first, second] = names;
    broken.delete(first);
    broken.set("extra.weight", tensors.get(second)!);
    broken.set(second, { ...tensors.get(second)!, shape: [7] });
    assert.deepEqual(compareStateDict(cfg, broken), {
      missing: [first],
      unexpected: ["extra.weight"],
      mismatched: [{ name: second, expected: tensors.get(second)!.shape, actual: [7] }],
    });
    assert.throws(() => assertStateDict(cfg, broken), (e: unknown) => {
      assert.ok(e instanceof TypeError);
      assert.match(e.message, new RegExp(`missing ${first.replaceAll(".", "\\.")}`));
      assert.match(e.message, /unexpected extra\.weight/);
      assert.match(e.message, /wrong shape/);
      return true;
    });
  }
});

Deno.test("name tables: optional GPT mask buffer, patch 16 stem, bad sizes", () => {
  const gpt = { ...LANGUAGE_BASE, attention: "softmax" as const };
  const specs = languageParamSpecs(gpt);
  const required = new Map(specs.filter((s) => !s.optional).map((s) => [s.name, s]));
  assert.deepEqual(compareStateDict(gpt, required), {
    missing: [],
    unexpected: [],
    mismatched: [],
  });
  const withMask = new Map(specs.map((s) => [s.name, s]));
  assert.deepEqual(compareStateDict(gpt, withMask).unexpected, []);
  assert.deepEqual(stemWidths(16, 384), [48, 96, 192, 384]);
  assert.deepEqual(stemWidths(8, 192), [48, 96, 192]);
  assert.throws(() => stemWidths(4, 64), RangeError);
  assert.throws(() => stemWidths(16, 36), RangeError);
  const p16 = visionParamSpecs({ ...VISION_BASE, patch_size: 16 });
  assert.ok(p16.some((s) => s.name === "patch_embed.proj.6.0.weight"));
});
