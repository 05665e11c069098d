import assert from "node:assert/strict";
import { runTost } from "./_run.ts";

Deno.test("tost bench --json: checked, measured records for every operator and length", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tost-bench-" });
  try {
    const r = await runTost([
      "bench",
      "--seq",
      "32,64,128",
      "--ops",
      "tssa,causal-tssa,softmax,flash-softmax",
      "--dim",
      "32",
      "--heads",
      "4",
      "--repeats",
      "2",
      "--check-tokens",
      "33",
      "--json",
      "--plot",
      `${dir}/b.svg`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.checks.length, 4);
    for (const c of out.checks) assert.ok(c.ok && c.error <= 1e-4, JSON.stringify(c));
    assert.equal(out.results.length, 12);
    for (const rec of out.results) {
      assert.equal(rec.status, "ok", rec.error);
      assert.equal(rec.pass, "fwd");
      assert.ok(rec.wall_ms > 0);
      assert.ok(rec.gpu_ms === null || rec.gpu_ms >= 0);
      assert.ok(rec.peak_bytes >= rec.min_bytes * 0.5, JSON.stringify(rec));
      assert.equal(typeof rec.device, "string");
    }
    // Softmax materialises N×N scores: its memory grows faster than TSSA's.
    const mem = (op: string, n: number) =>
      out.results.find((x: { op: string; n: number }) => x.op === op && x.n === n).peak_bytes;
    assert.ok(mem("softmax", 128) / mem("softmax", 32) > mem("tssa", 128) / mem("tssa", 32));
    const svg = await Deno.readTextFile(`${dir}/b.svg`);
    assert.match(svg, /^<svg/);
    const png = await Deno.readFile(`${dir}/b.png`);
    assert.deepEqual([...png.slice(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tost bench prints a table and slopes; bad flags exit 2", async () => {
  const r = await runTost([
    "bench",
    "--seq",
    "16,48",
    "--ops",
    "tssa",
    "--dim",
    "16",
    "--heads",
    "2",
    "--repeats",
    "1",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /tssa/);
  assert.match(r.stdout, /time slope/);
  assert.match(r.stderr, /check tssa \(64 tokens\): ok/);
  const bad = await runTost(["bench", "--ops", "nope"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /error: unknown operator "nope"/);
  const bad2 = await runTost(["bench", "--dim", "10", "--heads", "3"]);
  assert.equal(bad2.code, 2);
  assert.match(bad2.stderr, /not divisible/);
});

Deno.test("tost bench --model: ToST-S and ViT-S records at each image size", async () => {
  const r = await runTost([
    "bench",
    "--model",
    "--images",
    "32",
    "--repeats",
    "1",
    "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.deepEqual(out.results.map((x: { op: string }) => x.op), ["tost-s", "vit-s"]);
  for (const rec of out.results) {
    assert.equal(rec.status, "ok", rec.error);
    assert.equal(rec.n, 4); // (32 / 16)² patch tokens
    assert.ok(rec.wall_ms > 0 && rec.peak_bytes > 0);
  }
});
