/**
 * Training data: the character vocabulary and the deterministic 90/10 split
 * (the one `tost evaluate` measures on), GPT-2 BPE through js-tiktoken
 * (offline), and the batch sampler's resumable state.
 */

import assert from "node:assert/strict";
import { BatchSampler, GPT2_VOCAB_SIZE, sampleIndex, tokenizeText } from "../../src/train/data.ts";
import { charVocab, encodeChars, splitTrainVal } from "../../src/data/text.ts";

const TEXT = "The State of the Union is strong.\nWe the People, in order to form a more perfect " +
  "Union, establish Justice, insure domestic Tranquility.\n".repeat(20);

Deno.test("char data: sorted vocabulary, evaluate's 90/10 split, round trip", async () => {
  const d = await tokenizeText(TEXT, "inline", "char");
  assert.deepEqual(d.vocab, charVocab(TEXT));
  const { train, val } = splitTrainVal(encodeChars(TEXT, d.vocab!));
  assert.deepEqual(d.train, train);
  assert.deepEqual(d.val, val);
  assert.equal(d.train.length + d.val.length, [...TEXT].length);
  assert.equal(d.decode(d.encode("Union")), "Union");
  assert.throws(() => d.encode("Ω"), RangeError);
});

Deno.test("GPT-2 BPE: known ids offline, round trip", async () => {
  const d = await tokenizeText(TEXT, "inline", "gpt2");
  assert.equal(d.vocabSize, GPT2_VOCAB_SIZE);
  assert.equal(d.vocab, null);
  assert.deepEqual(Array.from(d.encode("Hello world")), [15496, 995]);
  assert.equal(d.decode(d.encode(TEXT.slice(0, 80))), TEXT.slice(0, 80));
  assert.ok(d.train.length > 9 * d.val.length - 10);
});

Deno.test("batch sampler: windows and targets, state resumes the same sequence", () => {
  const tokens = Int32Array.from({ length: 500 }, (_, i) => i);
  const a = new BatchSampler(tokens, 3, 10, { seed: 9, position: 0 });
  const first = a.next();
  for (let i = 0; i < 30; i++) {
    assert.equal(first.y[i], first.x[i] + 1, "targets are the next tokens");
    assert.ok(first.x[i] >= 0 && first.y[i] < 500);
  }
  a.next();
  const b = new BatchSampler(tokens, 3, 10, a.state);
  assert.deepEqual(a.state, { seed: 9, position: 2 });
  assert.deepEqual(a.next(), b.next());
  const other = new BatchSampler(tokens, 3, 10, { seed: 10, position: 0 });
  assert.notDeepEqual(other.next().x, first.x);
  // Indices cover their range.
  const seen = new Set<number>();
  for (let k = 0; k < 2000; k++) seen.add(sampleIndex(1, k, 0, 7));
  assert.equal(seen.size, 7);
  assert.throws(() => new BatchSampler(tokens.subarray(0, 5), 1, 10, a.state), RangeError);
});
