import assert from "node:assert/strict";
import { runTost } from "./_run.ts";

Deno.test("tost bench --ops linear --json: GFLOP/s records per pass and variant", async () => {
  const r = await runTost([
    "bench",
    "--ops",
    "linear",
    "--shapes",
    "33x17x9,1x7x5",
    "--backward",
    "--variants",
    "chosen,texture-8x8,simple-1x4",
    "--repeats",
    "1",
    "--warmup",
    "1",
    "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const { device, results } = JSON.parse(r.stdout);
  assert.equal(typeof device.name, "string");
  const seen = new Set<string>();
  for (const rec of results) {
    assert.equal(rec.op, "linear");
    assert.equal(rec.status, "ok", rec.error);
    assert.ok(rec.gflops > 0 && Number.isFinite(rec.gflops), JSON.stringify(rec));
    assert.ok(rec.wall_ms > 0);
    assert.ok(rec.gpu_ms === null || rec.gpu_ms > 0);
    assert.equal(typeof rec.variant, "string");
    assert.equal(rec.kind, { fwd: "nt", dx: "nn", dw: "tn" }[rec.pass as string]);
    seen.add(`${rec.m}x${rec.k}x${rec.n} ${rec.pass}`);
  }
  assert.deepEqual([...seen].sort(), [
    "1x7x5 dw",
    "1x7x5 dx",
    "1x7x5 fwd",
    "33x17x9 dw",
    "33x17x9 dx",
    "33x17x9 fwd",
  ]);
  assert.ok(results.some((rec: { chosen: boolean }) => rec.chosen));
  assert.ok(results.some((rec: { variant: string }) => rec.variant === "texture-8x8"));
});

Deno.test("tost bench --ops linear refuses flags of the attention bench and unknown variants", async () => {
  const mixed = await runTost(["bench", "--ops", "linear,tssa"]);
  assert.equal(mixed.code, 2);
  assert.match(mixed.stderr, /^error: --ops linear runs alone/m);
  const seq = await runTost(["bench", "--ops", "linear", "--seq", "256"]);
  assert.equal(seq.code, 2);
  assert.match(seq.stderr, /--ops linear runs alone/);
  const bad = await runTost(["bench", "--ops", "linear", "--variants", "tile-3x3"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^error: --variants: Unknown GEMM variant "tile-3x3"/m);
  const shapes = await runTost(["bench", "--ops", "linear", "--shapes", "4x4"]);
  assert.equal(shapes.code, 2);
  assert.match(shapes.stderr, /"4x4" is not m×k×n/);
  const stray = await runTost(["bench", "--ops", "tssa", "--variants", "all"]);
  assert.equal(stray.code, 2);
  assert.match(stray.stderr, /--shapes and --variants apply to --ops linear/);
});

Deno.test("tost tune measures, saves in TOST_TUNE_CACHE, and tost info shows the choices", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const env = { TOST_TUNE_CACHE: `${dir}/tune.json` };
    const r = await runTost(["tune", "--shapes", "64x64x64", "--json"], env);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.cache, `${dir}/tune.json`);
    assert.deepEqual(out.results.map((x: { op: string }) => x.op), ["gemm", "gemm", "gemm"]);
    assert.deepEqual(
      out.results.map((x: { shape: { pass: string } }) => x.shape.pass),
      ["fwd", "dx", "dw"],
    );
    const fwd = out.results[0];
    assert.equal(fwd.shape_class, "nt m64 n64 k64");
    assert.deepEqual(fwd.shape, { pass: "fwd", kind: "nt", m: 64, k: 64, n: 64 });
    assert.ok(fwd.variant in fwd.ms || Object.keys(fwd.ms).length === 0);
    const saved = JSON.parse(await Deno.readTextFile(`${dir}/tune.json`));
    const [adapter] = Object.keys(saved.adapters);
    assert.equal(saved.adapters[adapter]["gemm nt m64 n64 k64"].variant, fwd.variant);
    const info = await runTost(["info"], env);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, new RegExp(`gemm nt m64 n64 k64 +${fwd.variant}`));
    const json = JSON.parse((await runTost(["info", "--json"], env)).stdout);
    assert.equal(json.tuning.choices["gemm tn m64 n64 k64"].variant, out.results[2].variant);
    // Human output: a table and where it was saved.
    const human = await runTost(["tune", "--shapes", "64x64x64", "--forward-only"], env);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /nt m64 n64 k64/);
    assert.match(human.stdout, new RegExp(`saved in ${dir}/tune.json`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tost tune --ops tunes the row ops at the models' shapes, one measurement per class", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const env = { TOST_TUNE_CACHE: `${dir}/tune.json` };
    const r = await runTost(["tune", "--ops", "layer_norm", "--json"], env);
    assert.equal(r.code, 0, r.stderr);
    const { results } = JSON.parse(r.stdout);
    assert.ok(results.length > 0);
    const classes = results.map((x: { shape_class: string }) => x.shape_class);
    assert.equal(new Set(classes).size, classes.length, "each class measured once");
    for (const rec of results) {
      assert.equal(rec.op, "layer_norm");
      assert.ok(["row", "workgroup"].includes(rec.variant), rec.variant);
      assert.equal(typeof rec.shape.rows, "number");
    }
    const info = await runTost(["info"], env);
    assert.match(info.stdout, /layer_norm r1024 c64 v4 +(row|workgroup)/);
    const bad = await runTost(["tune", "--ops", "matmul"], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--ops: "matmul" is not a tuned op \(known: gemm, /);
    const mixed = await runTost(["tune", "--ops", "layer_norm", "--shapes", "4x4x4"], env);
    assert.equal(mixed.code, 2);
    assert.match(mixed.stderr, /--shapes and --forward-only apply to the GEMM/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tost info with a corrupt tuning cache warns and still describes the adapter", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/tune.json`, "[1, 2");
    const r = await runTost(["info"], { TOST_TUNE_CACHE: `${dir}/tune.json` });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^warning: cannot read the tuning cache/m);
    assert.match(r.stdout, /none cached yet/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
