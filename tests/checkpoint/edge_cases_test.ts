/**
 * Edge cases and opcode families of the PyTorch checkpoint reader, one test
 * per generated fixture (`tools/gen_checkpoints.py`): every dtype, views
 * (offset, strides, transposed, stride 0), tied storages, 0-dim and empty
 * tensors, `_rebuild_parameter`, training checkpoints with an
 * `argparse.Namespace` (NEWOBJ and `copyreg._reconstructor`), wrapper
 * prefixes, the legacy format, zip64, and pickles of protocols 0 to 5
 * spelling ints, strings, memo slots, containers and calls with every opcode.
 * Tensors are compared bit-exactly with bytes the generator computed from
 * its own source arrays. Also the two real fixtures against the SHA-256 of
 * every tensor as a Python stdlib unpickler materialised them.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { loadCheckpoint } from "../../src/checkpoint/convert.ts";
import {
  assertCleanError,
  assertTensorsEqual,
  casePath,
  FIXTURE_DIR,
  loadManifest,
  readStateDict,
} from "./_fixtures.ts";

const cases = (await loadManifest()).filter((c) => c.kind !== "hostile");

for (const c of cases) {
  Deno.test(`checkpoint ${c.kind}/${c.name}: ${c.what}`, async () => {
    const path = casePath(c);
    let got;
    try {
      got = await readStateDict(path, c.options?.key);
    } catch (err) {
      if (c.expect === "ok") throw err;
      assertCleanError(err, path, c.message);
      return;
    }
    assert.notEqual(c.expect, "error", `${c.name} should have been refused`);
    assertTensorsEqual(got, c.tensors!, c.name);
  });
}

Deno.test("checkpoint opcode families: the manifest covers protocols 0 to 5 and the refusals", () => {
  const names = new Set(cases.map((c) => c.name));
  for (let p = 0; p <= 5; p++) assert.ok(names.has(`protocol_${p}`), `protocol ${p}`);
  for (const n of ["refuse_EXT1", "refuse_NEXT_BUFFER", "refuse_READONLY_BUFFER", "NEWOBJ_EX"]) {
    assert.ok(names.has(n), n);
  }
  for (const dt of ["f64", "f32", "f16", "bf16", "i64", "i32", "i16", "i8", "u8", "bool"]) {
    assert.ok(names.has(`dtype_${dt}`), dt);
  }
});

interface RealExpected {
  file: string;
  tensors: Record<string, { dtype: string; shape: number[]; sha256: string }>;
}

async function realExpected(name: string): Promise<RealExpected> {
  return JSON.parse(await Deno.readTextFile(`${FIXTURE_DIR}real_expected/${name}.json`));
}

/** Expected tensors under `<key>/` of a real fixture, with wrapper prefixes removed. */
function underKey(
  exp: RealExpected,
  key: string,
): Map<string, { dtype: string; shape: number[]; sha256: string }> {
  const out = new Map();
  for (const [path, t] of Object.entries(exp.tensors)) {
    if (!path.startsWith(`${key}/`)) continue;
    out.set(path.slice(key.length + 1).replace(/^(_orig_mod\.|module\.)+/, ""), t);
  }
  return out;
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

for (
  const [file, stem, key] of [
    ["tost_vision_small.pth", "tost_vision_small", "model"],
    ["tost_vision_small.pth", "tost_vision_small", "model_ema"],
    ["tost_lang_small.pt", "tost_lang_small", "model"],
  ] as const
) {
  Deno.test(`checkpoint real fixture ${file} [${key}]: every tensor bit-exact (SHA-256)`, async () => {
    const exp = underKey(await realExpected(stem), key);
    assert.ok(exp.size > 10, "expected tensors present");
    const got = await readStateDict(`${FIXTURE_DIR}../${file}`, key);
    assert.deepEqual([...got.keys()].sort(), [...exp.keys()].sort());
    for (const [name, e] of exp) {
      const g = got.get(name)!;
      assert.equal(g.dtype, e.dtype, name);
      assert.deepEqual(g.shape, e.shape, name);
      assert.equal(sha256(g.data), e.sha256, `bytes of ${name}`);
    }
  });
}

Deno.test("checkpoint real fixture: loadCheckpoint gives the same bytes and the tied lm_head", async () => {
  const exp = underKey(await realExpected("tost_lang_small"), "model");
  const { tensors } = await loadCheckpoint(`${FIXTURE_DIR}../tost_lang_small.pt`);
  for (const [name, e] of exp) {
    assert.equal(sha256(tensors.get(name)!.data), e.sha256, name);
  }
  assert.equal(
    sha256(tensors.get("lm_head.weight")!.data),
    exp.get("transformer.wte.weight")!.sha256,
  );
});
