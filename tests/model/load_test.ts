/**
 * Reading model files: tost safetensors with and without a config, name
 * checks in both directions, unsupported architectures, vocabularies.
 */

import assert from "node:assert/strict";
import { writeSafetensors } from "../../src/io/safetensors.ts";
import type { StTensor } from "../../src/io/safetensors.ts";
import type { LanguageConfig } from "../../src/model/config.ts";
import {
  parseModelConfig,
  parseVocab,
  readModelFile,
  readVocabFile,
} from "../../src/model/load.ts";
import { randomStateDict } from "./_weights.ts";

const CFG: LanguageConfig = {
  family: "language",
  attention: "tssa",
  block_size: 8,
  vocab_size: 3,
  n_layer: 1,
  n_head: 2,
  n_embd: 4,
  bias: true,
  dropout: 0,
  norm_eps: 1e-5,
};

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a tost safetensors file: config and vocabulary from its metadata, names checked both ways", async () => {
  await withTemp(async (dir) => {
    const path = `${dir}/m.safetensors`;
    const tensors = randomStateDict(CFG, 1);
    await writeSafetensors(path, tensors, {
      config: JSON.stringify(CFG),
      vocab: JSON.stringify("abc"),
    });
    const file = await readModelFile(path);
    assert.equal(file.format, "safetensors");
    assert.deepEqual(file.config, CFG);
    assert.deepEqual(file.vocab, ["a", "b", "c"]);

    const extra = new Map(tensors);
    extra.set("transformer.h.0.attn.extra", { dtype: "F32", shape: [1], data: new Uint8Array(4) });
    extra.delete("transformer.h.0.gamma2");
    await writeSafetensors(path, extra, { config: JSON.stringify(CFG) });
    await assert.rejects(
      readModelFile(path),
      /missing transformer\.h\.0\.gamma2; unexpected transformer\.h\.0\.attn\.extra/,
    );
  });
});

Deno.test("a safetensors state dict without config is inferred; an unknown architecture is a clear error", async () => {
  await withTemp(async (dir) => {
    const path = `${dir}/plain.safetensors`;
    await writeSafetensors(path, randomStateDict(CFG, 2));
    const file = await readModelFile(path);
    assert.equal(file.config.family, "language");
    assert.equal(file.vocab, null);
    // XCiT-style names (temperature, local patch interaction): not a model tost runs.
    const xcit = new Map<string, StTensor>([
      ["blocks.0.attn.temperature", { dtype: "F32", shape: [4, 1, 1], data: new Uint8Array(16) }],
      ["blocks.0.local_mp.conv1.weight", {
        dtype: "F32",
        shape: [8, 1, 3, 3],
        data: new Uint8Array(288),
      }],
    ]);
    await writeSafetensors(path, xcit);
    await assert.rejects(
      readModelFile(path),
      /has no tost config in its metadata and is not a model tost knows/,
    );
  });
});

Deno.test("configs and vocabularies are validated", async () => {
  assert.throws(() => parseModelConfig("{"), SyntaxError);
  assert.throws(
    () => parseModelConfig(JSON.stringify({ ...CFG, family: "xcit" })),
    /family must be/,
  );
  assert.throws(
    () => parseModelConfig(JSON.stringify({ ...CFG, n_head: "2" })),
    /"n_head" must be a number/,
  );
  assert.deepEqual(parseVocab('["ab", "c"]'), ["ab", "c"]);
  assert.throws(() => parseVocab('"aba"'), /"a" appears twice/);
  await withTemp(async (dir) => {
    // Exactly the characters, newline included; an editor's final newline is dropped.
    await Deno.writeTextFile(`${dir}/v.txt`, "\n ab\n");
    assert.deepEqual(await readVocabFile(`${dir}/v.txt`), ["\n", " ", "a", "b"]);
    await Deno.writeTextFile(`${dir}/w.txt`, "xyz\n");
    assert.deepEqual(await readVocabFile(`${dir}/w.txt`), ["x", "y", "z", "\n"]);
  });
});
