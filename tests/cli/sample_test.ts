/**
 * `tost sample` run as a real program on the fixture language model (its
 * vocabulary is nanoGPT's shakespeare_char, committed as a fixture): the
 * streamed text, JSON output, determinism, incremental vs recomputed
 * decoding, the block_size rule, user mistakes and the help text.
 */

import assert from "node:assert/strict";
import { assertSnapshot, runTost } from "./_run.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const MODEL = `${FIXTURES}tost_lang_small.pt`;
const VOCAB = `${FIXTURES}shakespeare_char_vocab.txt`;
const CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

async function sampleJson(args: string[]) {
  const r = await runTost(["sample", MODEL, "--vocab", VOCAB, "--json", ...args]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

Deno.test("tost sample streams the prompt and its continuation; --json gives the same tokens", async () => {
  const args = ["--prompt", "ROMEO:", "--tokens", "20", "--seed", "7", "--temperature", "1.2"];
  const r = await runTost(["sample", MODEL, "--vocab", VOCAB, ...args]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.startsWith("ROMEO:"), r.stdout);
  assert.ok(r.stdout.endsWith("\n"));
  const text = r.stdout.slice("ROMEO:".length, -1);
  assert.equal([...text].length, 20);
  assert.ok([...text].every((c) => CHARS.includes(c)), text);
  assert.match(r.stderr, /^20 tokens in [\d.]+ s, [\d.]+ tokens\/s .*incremental causal TSSA/m);
  const j = await sampleJson(args);
  assert.equal(j.text, text);
  assert.equal(j.ids.length, 20);
  assert.deepEqual([...j.text].map((c: string) => CHARS.indexOf(c)), j.ids);
  assert.equal(j.stopped, "tokens");
  assert.equal(j.decoding, "incremental");
  assert.equal(j.seed, 7);
});

Deno.test("tost sample: recomputation gives the same text; at block_size it stops or slides", async () => {
  const prompt = "ROMEO:\nWhat light through yonder window breaks? It is";
  const args = ["--prompt", prompt, "--tokens", "20", "--seed", "3"];
  const inc = await sampleJson(args);
  // 53 prompt tokens: positions 53…63 take 11 tokens, the logits at 63 a 12th.
  assert.equal(inc.prompt_tokens, 53);
  assert.equal(inc.stopped, "block_size");
  assert.equal(inc.tokens, 12);
  const rec = await sampleJson([...args, "--recompute"]);
  assert.equal(rec.decoding, "recompute");
  assert.deepEqual(rec.ids, inc.ids);
  const slide = await sampleJson([...args, "--slide"]);
  assert.equal(slide.stopped, "tokens");
  assert.equal(slide.tokens, 20);
  assert.deepEqual(slide.ids.slice(0, 12), inc.ids);
});

Deno.test("tost sample: the stop at block_size is explained on stderr", async () => {
  const r = await runTost([
    "sample",
    MODEL,
    "--vocab",
    VOCAB,
    "--prompt",
    "A".repeat(62),
    "-n",
    "9",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stderr,
    /stopped after 3 of 9 tokens: the context reached the model's block_size 64/,
  );
  assert.match(r.stderr, /--slide/);
  assert.equal([...r.stdout].length, 62 + 3 + 1);
});

Deno.test("tost sample: user mistakes exit 2 with one error line", async () => {
  const cases: [string[], RegExp][] = [
    [["sample", MODEL], /carries no vocabulary: pass --vocab/],
    [
      ["sample", MODEL, "--vocab", VOCAB, "--prompt", "café"],
      /outside the model's vocabulary: "é"/,
    ],
    [
      ["sample", MODEL, "--vocab", VOCAB, "--prompt", "a".repeat(65)],
      /65 tokens, more than the model's block_size 64/,
    ],
    [
      ["sample", MODEL, "--vocab", VOCAB, "--temperature", "-1"],
      /--temperature must be a number ≥ 0/,
    ],
    [["sample", MODEL, "--vocab", VOCAB, "--tokens", "2.5"], /--tokens must be an integer ≥ 0/],
    [
      ["sample", `${FIXTURES}missing.pt`, "--vocab", VOCAB],
      /Cannot read model ".*missing.pt": no such file/,
    ],
    [["sample", MODEL, "--vocab", `${FIXTURES}missing.txt`], /Cannot read vocabulary/],
  ];
  for (const [args, message] of cases) {
    const r = await runTost(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /^error: /m);
    assert.equal(r.stdout, "");
  }
});

Deno.test("tost sample --help (snapshot)", async () => {
  const r = await runTost(["sample", "--help"]);
  assert.equal(r.code, 0);
  await assertSnapshot("help_sample.txt", r.stdout);
});
