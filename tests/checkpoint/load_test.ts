/**
 * The shared real fixtures through the public API: `convertCheckpoint`
 * writes every tensor bit-exactly (checked against the SHA-256 that an
 * independent Python stdlib reader computed, in
 * `fixtures/checkpoints/real_expected/`), with the right names, config and
 * metadata; `--dtype` casts round to nearest; `loadCheckpoint` agrees; and a
 * failed conversion leaves nothing behind.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { CheckpointError, convertCheckpoint, loadCheckpoint } from "../../src/checkpoint/mod.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { toF32 } from "../../src/io/dtype.ts";

const FIX = new URL("../fixtures/", import.meta.url).pathname;

interface Expected {
  dtype: string;
  shape: number[];
  sha256: string;
}

/** Expected tensors of `<key>/…` in a real fixture, under the cleaned names. */
async function expected(stem: string, key: string): Promise<Map<string, Expected>> {
  const json = JSON.parse(
    await Deno.readTextFile(`${FIX}checkpoints/real_expected/${stem}.json`),
  ) as { tensors: Record<string, Expected> };
  const out = new Map<string, Expected>();
  for (const [path, t] of Object.entries(json.tensors)) {
    if (path.startsWith(`${key}/`)) {
      out.set(path.slice(key.length + 1).replace(/^(_orig_mod\.|module\.)+/, ""), t);
    }
  }
  return out;
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function fileSha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "tost_convert_" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const cases = [
  { file: "tost_vision_small.pth", stem: "tost_vision_small", key: undefined, from: "model" },
  { file: "tost_vision_small.pth", stem: "tost_vision_small", key: "model_ema", from: "model_ema" },
  { file: "tost_lang_small.pt", stem: "tost_lang_small", key: undefined, from: "model" },
] as const;

for (const c of cases) {
  Deno.test(`convert ${c.file} [${c.from}]: every tensor bit-exact, names and metadata`, async () => {
    await withTempDir(async (dir) => {
      const out = `${dir}/out.safetensors`;
      const src = `${FIX}${c.file}`;
      const progress: number[] = [];
      const r = await convertCheckpoint(src, out, {
        key: c.key,
        onProgress: (done, total) => progress.push(done / total),
      });
      assert.equal(r.key, c.from);
      assert.equal(progress.at(-1), 1, "progress reaches 100%");
      assert.ok(progress.every((p, i) => i === 0 || p >= progress[i - 1]), "progress is monotonic");
      const st = await readSafetensors(out);
      const want = await expected(c.stem, c.from);
      assert.deepEqual([...st.names].sort(), [...want.keys()].sort(), "tensor names");
      for (const [name, e] of want) {
        const t = st.get(name);
        assert.equal(t.dtype, e.dtype, `dtype of ${name}`);
        assert.deepEqual(t.shape, e.shape, `shape of ${name}`);
        assert.equal(sha256(t.data), e.sha256, `bytes of ${name}`);
      }
      const md = st.metadata;
      assert.equal(md.format, "pt");
      assert.equal(md.source, c.file);
      assert.equal(md.source_format, "zip");
      assert.equal(md.source_key, c.from);
      assert.equal(md.source_sha256, await fileSha256(src));
      assert.deepEqual(JSON.parse(md.config), r.config);
      assert.equal(r.bytes, (await Deno.stat(out)).size);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["out.safetensors"]);
    });
  });
}

Deno.test("convert: vision config and architecture are inferred", async () => {
  await withTempDir(async (dir) => {
    const r = await convertCheckpoint(`${FIX}tost_vision_small.pth`, `${dir}/v.safetensors`);
    assert.equal(r.metadata.architecture, "tost_vision");
    assert.deepEqual(r.config, {
      family: "vision",
      attention: "tssa",
      img_size: 32, // args.input_size
      patch_size: 8,
      in_chans: 3,
      num_classes: 10,
      embed_dim: 64,
      depth: 2,
      num_heads: 4,
      mlp_ratio: 4,
      qkv_bias: true,
      eta: 1,
      tokens_norm: true,
      cls_attn_layers: 2,
      pos_hidden_dim: 32,
      norm_eps: 1e-6,
    });
    assert.deepEqual(JSON.parse(r.metadata.progress), { epoch: 3 });
  });
});

Deno.test("convert: language config, prefixes removed, tied weights under both names", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/l.safetensors`;
    const r = await convertCheckpoint(`${FIX}tost_lang_small.pt`, out);
    assert.equal(r.metadata.architecture, "tost_lang");
    assert.deepEqual(r.config, {
      family: "language",
      attention: "tssa",
      block_size: 64,
      vocab_size: 65,
      n_layer: 2,
      n_head: 4,
      n_embd: 64,
      bias: true,
      dropout: 0,
      norm_eps: 1e-5,
    });
    const st = await readSafetensors(out);
    assert.ok(st.names.every((n) => !n.startsWith("_orig_mod.")));
    assert.deepEqual(st.get("lm_head.weight").data, st.get("transformer.wte.weight").data);
    assert.equal(st.names.length, 37);
  });
});

for (const [dtype, st, halfUlp] of [["f16", "F16", 2 ** -11], ["bf16", "BF16", 2 ** -8]] as const) {
  Deno.test(`convert --dtype ${dtype}: floats rounded to nearest, integers kept`, async () => {
    await withTempDir(async (dir) => {
      const src = `${FIX}tost_vision_small.pth`;
      await convertCheckpoint(src, `${dir}/keep.safetensors`);
      await convertCheckpoint(src, `${dir}/cast.safetensors`, { dtype });
      const keep = await readSafetensors(`${dir}/keep.safetensors`);
      const cast = await readSafetensors(`${dir}/cast.safetensors`);
      assert.equal(cast.metadata.dtype, dtype);
      for (const name of keep.names) {
        const k = keep.get(name);
        const c = cast.get(name);
        assert.deepEqual(c.shape, k.shape);
        if (k.dtype !== "F32") {
          assert.equal(c.dtype, k.dtype, `${name} keeps its integer dtype`);
          assert.deepEqual(c.data, k.data);
          continue;
        }
        assert.equal(c.dtype, st, name);
        const ref = toF32("F32", k.data);
        const got = toF32(st, c.data);
        for (let i = 0; i < ref.length; i++) {
          const tol = Math.abs(ref[i]) * halfUlp + (st === "F16" ? 2 ** -25 : 0);
          assert.ok(
            Math.abs(got[i] - ref[i]) <= tol,
            `${name}[${i}]: ${got[i]} is not the nearest ${st} to ${ref[i]}`,
          );
        }
      }
    });
  });
}

Deno.test("loadCheckpoint: same bytes as the converter, f32 output, config", async () => {
  const want = await expected("tost_lang_small", "model");
  const loaded = await loadCheckpoint(`${FIX}tost_lang_small.pt`);
  assert.equal(loaded.key, "model");
  assert.equal(loaded.config.family, "language");
  assert.equal(loaded.metadata.architecture, "tost_lang");
  assert.equal(loaded.metadata.source_sha256, await fileSha256(`${FIX}tost_lang_small.pt`));
  for (const [name, e] of want) assert.equal(sha256(loaded.tensors.get(name)!.data), e.sha256);
  const ema = await loadCheckpoint(`${FIX}tost_vision_small.pth`, {
    key: "model_ema",
    dtype: "f32",
  });
  assert.equal(ema.key, "model_ema");
  assert.equal(ema.tensors.get("patch_embed.proj.0.1.num_batches_tracked")!.dtype, "I64");
});

Deno.test("convert: a failure leaves no file, not even a temporary one", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/x.safetensors`;
    await assert.rejects(
      convertCheckpoint(`${FIX}tost_lang_small.pt`, out, { key: "optimizer" }),
      (e) =>
        e instanceof CheckpointError &&
        /Cannot read checkpoint ".*tost_lang_small\.pt": .*"optimizer"/.test(e.message),
    );
    await assert.rejects(
      convertCheckpoint(`${FIX}tost_lang_small.pt`, out, { key: "nope" }),
      /no top-level key "nope"; the keys are "model", "optimizer"/,
    );
    // A truncated copy fails after nothing or part was read.
    const bytes = await Deno.readFile(`${FIX}tost_lang_small.pt`);
    await Deno.writeFile(`${dir}/cut.pt`, bytes.subarray(0, bytes.length - 100));
    await assert.rejects(convertCheckpoint(`${dir}/cut.pt`, out), CheckpointError);
    // A corrupted storage is found by its CRC while streaming, after the header was written.
    const bad = bytes.slice();
    bad[20_000] ^= 0xff; // inside data/0 (wte)
    await Deno.writeFile(`${dir}/bad.pt`, bad);
    await assert.rejects(convertCheckpoint(`${dir}/bad.pt`, out), /CRC-32 mismatch/);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["bad.pt", "cut.pt"]);
    await assert.rejects(convertCheckpoint(`${dir}/missing.pt`, out), Deno.errors.NotFound);
  });
});
