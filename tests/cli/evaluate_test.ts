/**
 * `tost evaluate` end to end, as a subprocess: --inputs/--save-outputs on
 * both fixtures (checkpoints converted on the fly, and a converted file),
 * MNIST top-1 on a subset, loss on a text file checked against the CPU
 * reference, the bundled corpus, and user mistakes (exit code 2).
 */

import assert from "node:assert/strict";
import { assertSnapshot, runTost } from "./_run.ts";
import { assertCloseScaled } from "../_util.ts";
import { readSafetensors, writeSafetensors } from "../../src/io/safetensors.ts";
import type { StTensor } from "../../src/io/safetensors.ts";
import type { LanguageConfig } from "../../src/model/config.ts";
import { languageForwardReference } from "../../src/model/reference/language.ts";
import { weightsFromTensors } from "../../src/model/reference/layers.ts";
import { crossEntropyReference } from "../../src/ops/cross_entropy_reference.ts";
import { charVocab, encodeChars, evalBatches, splitTrainVal } from "../../src/data/text.ts";
import { randomStateDict } from "../model/_weights.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const ENV = { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" };

async function checkOutputs(refPath: string, outPath: string): Promise<void> {
  const ref = await readSafetensors(refPath);
  const out = await readSafetensors(outPath);
  assert.deepEqual(out.names.sort(), ["case0.logits", "case1.logits"]);
  for (const name of out.names) {
    assert.deepEqual(out.shape(name), ref.shape(name), name);
    assertCloseScaled(out.f32(name), ref.f32(name), 1e-4, name);
  }
}

for (
  const [model, ref] of [
    ["tost_vision_small.pth", "tost_vision_small.ref.safetensors"],
    ["tost_lang_small.pt", "tost_lang_small.ref.safetensors"],
  ]
) {
  Deno.test(`evaluate --inputs/--save-outputs on ${model} reproduces PyTorch's logits`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const out = `${dir}/out.safetensors`;
      const r = await runTost(
        ["evaluate", FIXTURES + model, "--inputs", FIXTURES + ref, "--save-outputs", out],
        ENV,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /wrote 2 case\(s\)/);
      await checkOutputs(FIXTURES + ref, out);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("evaluate runs a file written by tost convert the same way (--json)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const converted = `${dir}/lang.safetensors`;
    const c = await runTost(["convert", FIXTURES + "tost_lang_small.pt", "-o", converted], ENV);
    assert.equal(c.code, 0, c.stderr);
    const out = `${dir}/out.safetensors`;
    const ref = FIXTURES + "tost_lang_small.ref.safetensors";
    const r = await runTost(
      ["evaluate", converted, "--inputs", ref, "--save-outputs", out, "--json"],
      ENV,
    );
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.deepEqual(report.cases.map((c: { logits: number[] }) => c.logits), [[2, 64, 65], [
      1,
      23,
      65,
    ]]);
    await checkOutputs(ref, out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evaluate --data mnist reports top-1 accuracy and images/s on a subset", async () => {
  const r = await runTost(
    [
      "evaluate",
      FIXTURES + "tost_vision_small.pth",
      "--data",
      "mnist",
      "--limit",
      "96",
      "--batch-size",
      "48",
      "--json",
    ],
    ENV,
  );
  assert.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  assert.equal(res.data, "mnist");
  assert.equal(res.images, 96);
  assert.ok(Number.isInteger(res.correct) && res.correct >= 0 && res.correct <= 96);
  assert.equal(res.accuracy, res.correct / 96);
  assert.ok(res.images_per_second > 0);
  // Piped stderr gets plain progress lines, never a bar's control characters.
  assert.ok(!r.stderr.includes("\u001b["), "no terminal control sequences");
});

async function writeLanguageModel(
  path: string,
  cfg: LanguageConfig,
  vocab: string[],
): Promise<Map<string, StTensor>> {
  const tensors = randomStateDict(cfg, 21);
  await writeSafetensors(path, tensors, {
    config: JSON.stringify(cfg),
    vocab: JSON.stringify(vocab),
  });
  return tensors;
}

Deno.test("evaluate --data <text file>: loss and perplexity equal the CPU reference's", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const text = "the quick brown fox jumps over the lazy dog; ".repeat(8) +
      "pack my box with five dozen jugs.";
    const vocab = charVocab(text);
    const cfg: LanguageConfig = {
      family: "language",
      attention: "tssa",
      block_size: 16,
      vocab_size: vocab.length,
      n_layer: 2,
      n_head: 2,
      n_embd: 16,
      bias: true,
      dropout: 0,
      norm_eps: 1e-5,
    };
    const model = `${dir}/model.safetensors`;
    const tensors = await writeLanguageModel(model, cfg, vocab);
    await Deno.writeTextFile(`${dir}/text.txt`, text);
    const r = await runTost([
      "evaluate",
      model,
      "--data",
      `${dir}/text.txt`,
      "--batch-size",
      "2",
      "--json",
    ], ENV);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    // Expected: the reference over the same windows of the validation split.
    const { val } = splitTrainVal(encodeChars(text, vocab));
    const weights = weightsFromTensors(tensors);
    let sum = 0;
    let n = 0;
    for (const b of evalBatches(val, cfg.block_size, 2)) {
      const logits = languageForwardReference(cfg, weights, b.x, b.B, b.T);
      sum += crossEntropyReference(logits, b.y, b.B * b.T, cfg.vocab_size) * b.B * b.T;
      n += b.B * b.T;
    }
    assert.equal(res.tokens, val.length - 1);
    assert.equal(res.tokens, n);
    assertCloseScaled([res.loss], [sum / n], 1e-5, "loss");
    assertCloseScaled([res.perplexity], [Math.exp(sum / n)], 1e-4, "perplexity");
    assert.ok(res.tokens_per_second > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evaluate a converted nanoGPT checkpoint on a text file with --vocab", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const text =
      "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
        .repeat(5);
    await Deno.writeTextFile(`${dir}/play.txt`, text);
    const vocabFile = FIXTURES + "shakespeare_char_vocab.txt";
    const r = await runTost(
      [
        "evaluate",
        FIXTURES + "tost_lang_small.pt",
        "--data",
        `${dir}/play.txt`,
        "--vocab",
        vocabFile,
        "--json",
      ],
      ENV,
    );
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    const { loadCheckpoint } = await import("../../src/checkpoint/mod.ts");
    const { readVocabFile } = await import("../../src/model/load.ts");
    const ck = await loadCheckpoint(FIXTURES + "tost_lang_small.pt");
    assert.equal(ck.config.family, "language");
    if (ck.config.family !== "language") return;
    const vocab = await readVocabFile(vocabFile);
    assert.equal(vocab.length, 65);
    const { val } = splitTrainVal(encodeChars(text, vocab));
    const weights = weightsFromTensors(ck.tensors);
    let sum = 0;
    let n = 0;
    for (const b of evalBatches(val, ck.config.block_size, 32)) {
      const logits = languageForwardReference(ck.config, weights, b.x, b.B, b.T);
      sum += crossEntropyReference(logits, b.y, b.B * b.T, ck.config.vocab_size) * b.B * b.T;
      n += b.B * b.T;
    }
    assert.equal(res.tokens, n);
    assertCloseScaled([res.loss], [sum / n], 1e-5, "loss");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evaluate on the bundled corpus (default for language models) with --limit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The corpus' own 97 characters; a tiny random GPT twin.
    const { loadSotu } = await import("../../src/data/text.ts");
    const vocab = charVocab(await loadSotu());
    const cfg: LanguageConfig = {
      family: "language",
      attention: "softmax",
      block_size: 32,
      vocab_size: vocab.length,
      n_layer: 1,
      n_head: 2,
      n_embd: 16,
      bias: false,
      dropout: 0,
      norm_eps: 1e-5,
    };
    const model = `${dir}/gpt.safetensors`;
    await writeLanguageModel(model, cfg, vocab);
    const r = await runTost(["evaluate", model, "--limit", "100"], ENV);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /State of the Union corpus \(bundled\), validation split \(last 10%\), 100 tokens/,
    );
    assert.match(r.stdout, /perplexity: \d+\.\d{3}/);
    assert.match(r.stdout, /tokens\/s/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evaluate: user mistakes exit 2 with an error line", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["evaluate", "/nonexistent/model.pt"],
      /error: Cannot read model "\/nonexistent\/model\.pt": no such file/,
    ],
    [
      [
        "evaluate",
        FIXTURES + "tost_vision_small.pth",
        "--inputs",
        FIXTURES + "tost_vision_small.ref.safetensors",
      ],
      /error: --inputs and --save-outputs go together/,
    ],
    [
      ["evaluate", FIXTURES + "tost_vision_small.pth", "--data", "sotu"],
      /error: vision models evaluate on --data mnist/,
    ],
    [
      ["evaluate", FIXTURES + "tost_lang_small.pt", "--limit", "10"],
      /error: .* carries no vocabulary: pass --vocab/,
    ],
    [
      [
        "evaluate",
        FIXTURES + "tost_lang_small.pt",
        "--inputs",
        FIXTURES + "tost_vision_small.ref.safetensors",
        "--save-outputs",
        "/tmp/x.safetensors",
      ],
      /error: "case0\.input" holds images, but the model is a language model/,
    ],
  ];
  for (const [args, message] of cases) {
    const r = await runTost(args, ENV);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
});

Deno.test("evaluate --help is stable", async () => {
  const r = await runTost(["evaluate", "--help"], ENV);
  assert.equal(r.code, 0, r.stderr);
  await assertSnapshot("help_evaluate.txt", r.stdout);
});
