/**
 * `tost convert` as users run it: the real program in a subprocess, checking
 * stdout, stderr, the exit code and the files left behind.
 *
 * @module
 */

import assert from "node:assert/strict";
import { readSafetensors } from "../src/io/safetensors.ts";
import { assertSnapshot } from "./cli/_run.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const FIX = new URL("./fixtures/", import.meta.url).pathname;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function tost(...args: string[]): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tost_cli_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** `pickle.dumps(os.system("echo pwned"))` done by hand: GLOBAL os.system, REDUCE. */
const HOSTILE = new Uint8Array([
  0x80,
  0x02,
  ...new TextEncoder().encode("cos\nsystem\n"),
  0x58,
  10,
  0,
  0,
  0,
  ...new TextEncoder().encode("echo pwned"),
  0x85,
  0x52,
  0x2e,
]);

Deno.test("tost convert -o writes the safetensors file and says so", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/lang.safetensors`;
    const r = await tost("convert", `${FIX}tost_lang_small.pt`, "-o", out);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^wrote .*lang\.safetensors: 37 tensors, .*tost_lang from "model"/);
    assert.match(r.stdout, /config: \{"family":"language","attention":"tssa","block_size":64/);
    assert.equal(r.stderr, "", "no progress bar when stderr is not a terminal");
    const st = await readSafetensors(out);
    assert.equal(JSON.parse(st.metadata.config).n_head, 4);
  });
});

Deno.test("tost convert --key --dtype --json", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/ema.safetensors`;
    const r = await tost(
      "convert",
      `${FIX}tost_vision_small.pth`,
      "--key",
      "model_ema",
      "--dtype",
      "bf16",
      "--json",
      "-o",
      out,
    );
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    assert.equal(res.key, "model_ema");
    assert.equal(res.tensors, 83);
    assert.equal(res.metadata.dtype, "bf16");
    const st = await readSafetensors(out);
    assert.equal(st.get("head.weight").dtype, "BF16");
    assert.equal(st.get("patch_embed.proj.0.1.num_batches_tracked").dtype, "I64");
  });
});

Deno.test("tost convert --inspect: keys, tensors, architecture; --json too", async () => {
  const human = await tost("convert", `${FIX}tost_lang_small.pt`, "--inspect");
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /top-level keys:\n\s+model\s+dict: 37 entries/);
  assert.match(human.stdout, /best_val_loss\s+tensor F32 \[\]/);
  assert.match(human.stdout, /architecture:\s+tost_lang/);
  assert.match(
    human.stdout,
    /transformer\.h\.0\.attn\.denom_bias\s+F32\s+\[4, 64, 1\]\s+\(was _orig_mod\.transformer/,
  );
  const json = await tost("convert", `${FIX}tost_vision_small.pth`, "--inspect", "--json");
  assert.equal(json.code, 0, json.stderr);
  const info = JSON.parse(json.stdout);
  assert.equal(info.architecture, "tost_vision");
  assert.equal(info.key, "model");
  assert.equal(info.tensors.length, 83);
  assert.deepEqual(
    info.topLevel.map((e: { key: string }) => e.key),
    ["model", "optimizer", "epoch", "args", "lr_scheduler", "model_ema", "scaler"],
  );
  assert.equal(info.topLevel[3].type, "argparse.Namespace object");
  assert.equal(info.config.num_heads, 4);
});

Deno.test("tost convert: user mistakes exit 2 with one error line", async () => {
  await withTempDir(async (dir) => {
    const missing = await tost("convert", `${dir}/nope.pt`, "-o", `${dir}/x.safetensors`);
    assert.equal(missing.code, 2);
    assert.equal(missing.stderr, `error: Cannot read checkpoint "${dir}/nope.pt": no such file\n`);
    const noOut = await tost("convert", `${FIX}tost_lang_small.pt`);
    assert.equal(noOut.code, 2);
    assert.match(noOut.stderr, /^error: say where to write the result with -o <file>/);
    const badDtype = await tost("convert", `${FIX}tost_lang_small.pt`, "-o", "x", "--dtype", "f8");
    assert.equal(badDtype.code, 2);
    assert.match(badDtype.stderr, /error: option '--dtype <dtype>' argument 'f8' is invalid/);
    const noDir = await tost("convert", `${FIX}tost_lang_small.pt`, "-o", `${dir}/no/x.st`);
    assert.equal(noDir.code, 2);
    assert.match(noDir.stderr, /directory ".*\/no" does not exist/);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("tost convert: a hostile pickle fails cleanly, exit 2 (a bad input file), nothing written", async () => {
  await withTempDir(async (dir) => {
    const evil = `${dir}/evil.pt`;
    await Deno.writeFile(evil, HOSTILE);
    const out = `${dir}/out.safetensors`;
    const r = await tost("convert", evil, "-o", out);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /^error: Cannot read checkpoint ".*evil\.pt": refusing global os\.system/,
    );
    assert.equal(r.stderr.trim().split("\n").length, 1, "one line, no stack trace");
    assert.equal(r.stdout, "");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["evil.pt"]);
    const verbose = await tost("convert", evil, "-o", out, "--verbose");
    assert.equal(verbose.code, 2);
    assert.match(verbose.stderr, /CheckpointError: Cannot read checkpoint[\s\S]*\n\s+at /);
  });
});

Deno.test("tost convert --help lists every option", async () => {
  const r = await tost("convert", "--help");
  assert.equal(r.code, 0);
  for (const opt of ["-o, --out <file>", "--inspect", "--json", "--key <key>", "--dtype <dtype>"]) {
    assert.ok(r.stdout.includes(opt), opt);
  }
  assert.match(
    r.stdout.replace(/\s+/g, " "),
    /choices: "keep", "f32", "f16", "bf16", default: "keep"/,
  );
});

Deno.test("tost convert --help (snapshot)", async () => {
  const r = await tost("convert", "--help");
  assert.equal(r.code, 0);
  await assertSnapshot("help_convert.txt", r.stdout);
});
