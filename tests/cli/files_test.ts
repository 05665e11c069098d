/**
 * What every command does with the files it is given: an output that is an
 * input (same path, a symbolic or a hard link) is refused and the input left
 * intact; an output that cannot be written is refused before the work; files
 * are told apart by content (a checkpoint renamed .safetensors still loads, a
 * data file given as the model is named as such); NaN inputs warn; the
 * vocabulary must match the model; a BPE-trained model samples and evaluates
 * with its saved tokenizer; convert attaches a vocabulary.
 */

import assert from "node:assert/strict";
import { runTost } from "./_run.ts";
import { readSafetensors, writeSafetensors } from "../../src/io/safetensors.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const VISION = `${FIXTURES}tost_vision_small.pth`;
const LANG = `${FIXTURES}tost_lang_small.pt`;
const NANO = `${FIXTURES}nanogpt/nanogpt_char.pt`;
const NANO_VOCAB = `${FIXTURES}nanogpt/nanogpt_char_vocab.txt`;

async function sha(path: string): Promise<string> {
  const h = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(h), (b) => b.toString(16)).join("");
}

async function visionInputs(path: string, nan = false): Promise<void> {
  const x = new Float32Array(1 * 3 * 32 * 32).map((_, i) => Math.sin(i));
  if (nan) x[5] = NaN;
  await writeSafetensors(path, [["case0.input", {
    dtype: "F32",
    shape: [1, 3, 32, 32],
    data: new Uint8Array(x.buffer),
  }]]);
}

Deno.test("an output that is an input is refused, the input left intact", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const inputs = `${dir}/in.safetensors`;
    await visionInputs(inputs);
    await Deno.copyFile(VISION, `${dir}/m.pth`);
    await Deno.link(inputs, `${dir}/hard.safetensors`);
    await Deno.symlink(`${dir}/m.pth`, `${dir}/soft.pth`);
    const before = [await sha(inputs), await sha(`${dir}/m.pth`)];
    const cases: [string[], RegExp][] = [
      [
        ["evaluate", `${dir}/m.pth`, "--inputs", inputs, "--save-outputs", inputs],
        /--save-outputs ".*in\.safetensors" is the same file as --inputs/,
      ],
      [
        ["evaluate", `${dir}/m.pth`, "--inputs", inputs, "--save-outputs", `${dir}/m.pth`],
        /--save-outputs ".*m\.pth" is the same file as the model/,
      ],
      [
        [
          "evaluate",
          `${dir}/m.pth`,
          "--inputs",
          inputs,
          "--save-outputs",
          `${dir}/hard.safetensors`,
        ],
        /is the same file as --inputs/,
      ],
      [
        ["convert", `${dir}/m.pth`, "-o", `${dir}/m.pth`],
        /-o ".*m\.pth" is the same file as the checkpoint/,
      ],
      [
        ["convert", `${dir}/soft.pth`, "-o", `${dir}/m.pth`],
        /is the same file as the checkpoint ".*soft\.pth"/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await runTost(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    assert.deepEqual([await sha(inputs), await sha(`${dir}/m.pth`)], before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("outputs are checked before the work: no inference, no internal temp name", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await visionInputs(`${dir}/in.safetensors`);
    const cases: string[][] = [
      ["evaluate", VISION, "--inputs", `${dir}/in.safetensors`, "--save-outputs", `${dir}/no/o.st`],
      ["convert", LANG, "-o", `${dir}/no/o.safetensors`],
      ["bench", "--seq", "16", "--plot", `${dir}/no/b.svg`],
    ];
    for (const args of cases) {
      const r = await runTost(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(
        r.stderr,
        /error: Cannot write .*"\S*no\/\S*": directory "\S*no" does not exist/,
      );
      assert.doesNotMatch(r.stderr + r.stdout, /\.tmp|→ logits|check tssa/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("files are told by content and named for what they are", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A .pth renamed .safetensors is still read as the PyTorch checkpoint it is.
    await Deno.copyFile(VISION, `${dir}/renamed.safetensors`);
    await visionInputs(`${dir}/in.safetensors`);
    const ok = await runTost([
      "evaluate",
      `${dir}/renamed.safetensors`,
      "--inputs",
      `${dir}/in.safetensors`,
      "--save-outputs",
      `${dir}/out.safetensors`,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    await Deno.writeTextFile(`${dir}/notes.txt`, "hello\n");
    const cases: [string[], RegExp][] = [
      [
        ["evaluate", `${FIXTURES}tost_lang_small.ref.safetensors`],
        /is a safetensors file of data, not a model: it holds no model weights \(its tensors: case0\.idx/,
      ],
      [["evaluate", `${dir}/notes.txt`], /"\S*notes\.txt" is a text file, not a model/],
      [["sample", `${dir}/in.safetensors`], /is a safetensors file of data, not a model/],
      [
        ["convert", `${dir}/out.safetensors`, "-o", `${dir}/x.safetensors`],
        /is a safetensors file already, not a PyTorch checkpoint: it needs no conversion/,
      ],
      [["convert", `${dir}/notes.txt`, "--inspect"], /is a text file, not a PyTorch checkpoint/],
      [
        ["evaluate", VISION, "--inputs", VISION, "--save-outputs", `${dir}/o.st`],
        /--inputs ".*\.pth" is a PyTorch checkpoint \(zip format\), not a safetensors file/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await runTost(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("NaN inputs and NaN weights warn", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await visionInputs(`${dir}/in.safetensors`, true);
    const r = await runTost([
      "evaluate",
      VISION,
      "--inputs",
      `${dir}/in.safetensors`,
      "--save-outputs",
      `${dir}/out.safetensors`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: "case0\.input" holds 1 NaN or infinite value/);
    assert.match(r.stderr, /warning: case0\.logits holds \d+ NaN or infinite value/);
    // A model whose weights hold NaN.
    const conv = await runTost(["convert", LANG, "-o", `${dir}/m.safetensors`]);
    assert.equal(conv.code, 0, conv.stderr);
    const f = await readSafetensors(`${dir}/m.safetensors`);
    const tensors = new Map(f.entries());
    const w = f.f32("transformer.ln_f.weight");
    w[0] = NaN;
    tensors.set("transformer.ln_f.weight", {
      dtype: "F32",
      shape: [w.length],
      data: new Uint8Array(w.buffer),
    });
    await writeSafetensors(`${dir}/nan.safetensors`, tensors, f.metadata);
    const s = await runTost([
      "sample",
      `${dir}/nan.safetensors`,
      "--vocab",
      `${FIXTURES}shakespeare_char_vocab.txt`,
      "--tokens",
      "2",
    ]);
    assert.match(
      s.stderr,
      /warning: ".*nan\.safetensors" holds NaN or infinite weights in transformer\.ln_f\.weight \(1\)/,
    );
    assert.equal(s.code, 1, "a non-finite logit fails the sampling");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--vocab must match vocab_size; convert --vocab attaches one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/short.txt`, "abc");
    const wrong: string[][] = [
      ["sample", NANO, "--vocab", `${dir}/short.txt`],
      ["evaluate", NANO, "--data", NANO_VOCAB, "--vocab", `${dir}/short.txt`],
      ["convert", NANO, "--vocab", `${dir}/short.txt`, "-o", `${dir}/x.safetensors`],
    ];
    for (const args of wrong) {
      const r = await runTost(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /--vocab .*has 3 tokens, the model's vocab_size is 11/);
    }
    await assert.rejects(Deno.stat(`${dir}/x.safetensors`), Deno.errors.NotFound);
    const vision = await runTost(["convert", VISION, "--vocab", NANO_VOCAB, "-o", `${dir}/v.st`]);
    assert.equal(vision.code, 2);
    assert.match(vision.stderr, /--vocab and --tokenizer apply to language models/);
    // nanoGPT checkpoint + its vocabulary → a file that samples with no --vocab.
    const c = await runTost([
      "convert",
      NANO,
      "--vocab",
      NANO_VOCAB,
      "-o",
      `${dir}/nano.safetensors`,
    ]);
    assert.equal(c.code, 0, c.stderr);
    const meta = (await readSafetensors(`${dir}/nano.safetensors`)).metadata;
    assert.equal(JSON.parse(meta.vocab).join(""), await Deno.readTextFile(NANO_VOCAB));
    const s = await runTost([
      "sample",
      `${dir}/nano.safetensors`,
      "--prompt",
      "hi",
      "--tokens",
      "5",
      "--json",
    ]);
    assert.equal(s.code, 0, s.stderr);
    const out = JSON.parse(s.stdout);
    assert.equal(out.tokens, 5);
    assert.ok(
      [...out.text].every((ch: string) => "\n !.abcdehi".includes(ch)),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a BPE-trained checkpoint samples and evaluates with its saved tokenizer", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const lines: string[] = [];
    for (let i = 0; i < 300; i++) {
      lines.push(`The state of the union is strong, said speaker ${i % 7}.`);
    }
    await Deno.writeTextFile(`${dir}/d.txt`, lines.join("\n"));
    await Deno.writeTextFile(
      `${dir}/c.json`,
      JSON.stringify({ eval_tokens: 64, sample_tokens: 0 }),
    );
    const t = await runTost([
      "train",
      "--preset",
      "tiny",
      "--tokenizer",
      "gpt2",
      "--data",
      `${dir}/d.txt`,
      "--config",
      `${dir}/c.json`,
      "--max-iters",
      "1",
      "--out",
      `${dir}/run`,
    ]);
    assert.equal(t.code, 0, t.stderr);
    const s = await runTost([
      "sample",
      `${dir}/run/last.safetensors`,
      "--prompt",
      "The state",
      "--tokens",
      "3",
      "--json",
    ]);
    assert.equal(s.code, 0, s.stderr);
    const out = JSON.parse(s.stdout);
    assert.equal(out.prompt_tokens, 2, "GPT-2 BPE: 'The', ' state'");
    assert.equal(out.tokens, 3);
    const e = await runTost([
      "evaluate",
      `${dir}/run/last.safetensors`,
      "--data",
      `${dir}/d.txt`,
      "--limit",
      "50",
      "--json",
    ]);
    assert.equal(e.code, 0, e.stderr);
    assert.equal(JSON.parse(e.stdout).tokens, 50);
    const v = await runTost(["sample", `${dir}/run/last.safetensors`, "--vocab", NANO_VOCAB]);
    assert.equal(v.code, 2);
    assert.match(
      v.stderr,
      /uses GPT-2 BPE \(saved with it\); --vocab is for character-level models/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
