import assert from "node:assert/strict";
import { assertSnapshot, runTost } from "./_run.ts";

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

Deno.test("tost bench --backward: checked fwd then fwd+bwd records for every operator", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tost-bench-bwd-" });
  try {
    const r = await runTost([
      "bench",
      "--backward",
      "--seq",
      "32,64",
      "--dim",
      "32",
      "--heads",
      "4",
      "--repeats",
      "1",
      "--json",
      "--plot",
      `${dir}/b.svg`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    const ops = ["tssa", "causal-tssa", "softmax", "flash-softmax"];
    const key = (x: { op: string; pass: string }) => `${x.op}/${x.pass}`;
    assert.deepEqual(out.checks.map(key), [
      ...ops.map((op) => `${op}/fwd`),
      ...ops.map((op) => `${op}/fwd+bwd`),
    ]);
    for (const c of out.checks) {
      assert.ok(c.ok && c.error <= (c.pass === "fwd" ? 1e-4 : 1e-3), JSON.stringify(c));
    }
    // All forward records first, then the forward+backward ones.
    assert.deepEqual(
      out.results.map((x: { op: string; pass: string; n: number }) => `${key(x)}@${x.n}`),
      ["fwd", "fwd+bwd"].flatMap((pass) =>
        ops.flatMap((op) => [32, 64].map((n) => `${op}/${pass}@${n}`))
      ),
    );
    type Rec = { op: string; pass: string; n: number; peak_bytes: number; min_bytes: number };
    const find = (op: string, pass: string, n: number): Rec =>
      out.results.find((x: Rec) => x.op === op && x.pass === pass && x.n === n);
    for (const rec of out.results) {
      assert.equal(rec.status, "ok", rec.error);
      assert.ok(rec.wall_ms > 0 && rec.peak_bytes > 0);
      if (rec.pass === "fwd+bwd") {
        // The minimum is a lower bound of what a step must hold at once.
        assert.ok(rec.peak_bytes >= rec.min_bytes, JSON.stringify(rec));
        const fwd = find(rec.op, "fwd", rec.n);
        assert.ok(rec.peak_bytes > fwd.peak_bytes && rec.min_bytes > fwd.min_bytes);
      }
    }
    // The step of standard softmax keeps its N×N probabilities: faster memory growth.
    const growth = (op: string) =>
      find(op, "fwd+bwd", 64).peak_bytes / find(op, "fwd+bwd", 32).peak_bytes;
    assert.ok(growth("softmax") > growth("tssa") && growth("softmax") > growth("flash-softmax"));
    assert.equal(out.slopes.length, 8);
    assert.ok(out.slopes.some((s: { op: string; pass: string }) => s.pass === "fwd+bwd"));
    const svg = await Deno.readTextFile(`${dir}/b.svg`);
    assert.match(svg, />fwd\+bwd</); // the pass legend
    assert.match(svg, /stroke-dasharray="6,3"/); // dashed fwd+bwd lines
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tost bench --backward prints both passes; --backward with --model exits 2", async () => {
  const r = await runTost([
    "bench",
    "--backward",
    "--seq",
    "16,48",
    "--ops",
    "causal-tssa",
    "--dim",
    "16",
    "--heads",
    "2",
    "--repeats",
    "1",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /check causal-tssa fwd\+bwd \(64 tokens\): ok/);
  assert.match(r.stdout, /causal-tssa +│ fwd\+bwd +│ +48 │/);
  assert.match(r.stdout, /causal-tssa \(fwd\+bwd\) +time slope/);
  const bad = await runTost(["bench", "--model", "--backward"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /error: --backward .*--model/);
});

Deno.test("tost bench --no-projections times the operators alone, checked first", async () => {
  const r = await runTost([
    "bench",
    "--no-projections",
    "--seq",
    "16,32",
    "--ops",
    "tssa,softmax",
    "--dim",
    "16",
    "--heads",
    "2",
    "--repeats",
    "1",
    "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  for (const c of out.checks) assert.ok(c.ok, JSON.stringify(c));
  assert.equal(out.results.length, 4);
  for (const rec of out.results) {
    assert.equal(rec.status, "ok", rec.error);
    assert.equal(rec.projections, false);
  }
  // Without projections the operator's input is the projected tokens: softmax's is packed qkv.
  const tssa = out.results.find((x: { op: string; n: number }) => x.op === "tssa" && x.n === 32);
  const soft = out.results.find((x: { op: string; n: number }) => x.op === "softmax" && x.n === 32);
  assert.equal(tssa.min_bytes, 2 * 32 * 16 * 4);
  assert.equal(soft.min_bytes, (3 + 1) * 32 * 16 * 4 + 2 * 32 * 32 * 4);
  const bad = await runTost(["bench", "--no-projections", "--backward"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /error: --no-projections applies/);
});

Deno.test("tost bench: flags that do not apply are refused, not ignored", async () => {
  const cases: [string[], RegExp][] = [
    [["--model", "--seq", "256"], /--seq applies to the operator benchmark, not to --model/],
    [["--model", "--ops", "tssa", "--dim", "64"], /--ops, --dim apply to the operator benchmark/],
    [["--images", "224"], /--images applies to --model/],
    [["--ops", ""], /--ops needs at least one operator/],
    [["--ops", ","], /--ops needs at least one operator/],
    [["--seq", ""], /--seq needs a list like/],
    [["--plot", "b.txt"], /--plot "b\.txt" must end in \.svg or \.png/],
    [["--warmup", "-1"], /--warmup must be an integer ≥ 0/],
  ];
  for (const [args, message] of cases) {
    const r = await runTost(["bench", ...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
});

Deno.test("tost bench: sizes the adapter cannot hold are refused up front or not tried", async () => {
  for (const seq of ["100000000", "4000000000"]) {
    const t0 = performance.now();
    const r = await runTost(["bench", "--seq", seq, "--ops", "tssa,softmax"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `--seq ${seq} cannot run on .* with --batch 1: tssa needs a .* token tensor .* per buffer \\(maxBufferSize\\)`,
      ),
    );
    assert.ok(performance.now() - t0 < 60_000, "refused before any work");
  }
  const big = await runTost(["bench", "--model", "--images", "100000"]);
  assert.equal(big.code, 2);
  assert.match(big.stderr, /--images 100000 cannot run on .*maxBufferSize/);
  // Where one operator fits and another cannot, the other is recorded as not tried, with why;
  // --warmup 0 is allowed; the memory columns are explained under the table.
  const dir = await Deno.makeTempDir();
  try {
    const r = await runTost([
      "bench",
      "--seq",
      "16,65536",
      "--ops",
      "tssa,softmax",
      "--dim",
      "16",
      "--heads",
      "2",
      "--repeats",
      "1",
      "--warmup",
      "0",
      "--plot",
      `${dir}/b.png`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /softmax +│ fwd +│ 65536 │.*failed: needs a 32\.0 GiB N×N score tensor/);
    assert.match(
      r.stdout,
      /peak memory: the most bytes tost held .* lower bound: what any implementation must hold/,
    );
    assert.match(r.stdout, /│ lower bound │/);
    // --plot b.png writes both formats, by extension.
    assert.match(await Deno.readTextFile(`${dir}/b.svg`), /^<svg/);
    assert.deepEqual([...(await Deno.readFile(`${dir}/b.png`)).slice(1, 4)], [0x50, 0x4e, 0x47]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tost bench --plot: the axes span the data, every operator has its own point shape", async () => {
  const { renderSvg } = await import("../../src/bench/plot.ts");
  const records = [32, 64, 128].flatMap((n) =>
    ["tssa", "softmax", "causal-softmax"].map((op) => ({
      op,
      pass: "fwd",
      n,
      batch: 1,
      gpu_ms: n / 100,
      wall_ms: 1,
      peak_bytes: op === "tssa" ? n * 1000 : n * n * 100, // the two softmax series coincide
      status: "ok" as const,
    }))
  );
  const svg = await renderSvg(records, "t");
  const ticks = [...svg.matchAll(/<text[^>]*>([\d.,]+)<\/text>/g)].map((m) =>
    Number(m[1].replaceAll(",", ""))
  );
  const xTicks = ticks.filter((v) => v >= 10);
  assert.ok(xTicks.length > 0);
  assert.ok(Math.max(...xTicks) <= 128 && Math.min(...xTicks) >= 32, `x ticks ${xTicks}`);
  // Point shapes differ per operator (vega's "circle", "square", "cross" symbols).
  const symbols = new Set(
    [...svg.matchAll(/role-legend-symbol[\s\S]*?<path[^>]* d="([^"]+)"/g)].map((m) =>
      m[1].slice(0, 12)
    ),
  );
  assert.ok(symbols.size >= 3, `legend symbols ${[...symbols]}`);
});

Deno.test("tost bench: a run where every measurement failed is a failure (exit 1)", async () => {
  // A real all-failed run needs a device fault; the rule itself is checked here, and the
  // refusals above show that sizes no operator can hold exit 2 before any work.
  const { failIfNothingRan } = await import("../../src/cli/bench.ts");
  const { exitCodeOf } = await import("../../src/cli/_errors.ts");
  assert.throws(() => failIfNothingRan([{ status: "failed" }, { status: "failed" }]), (e) => {
    assert.match((e as Error).message, /no measurement succeeded: all 2 failed/);
    assert.equal(exitCodeOf(e), 1);
    return true;
  });
  failIfNothingRan([{ status: "failed" }, { status: "ok" }]);
  const batch = await runTost(["bench", "--batch", "100000000", "--seq", "16"]);
  assert.equal(batch.code, 2, batch.stderr);
  assert.match(
    batch.stderr,
    /cannot run on .* with --batch 100000000: tssa needs a .* token tensor/,
  );
});

Deno.test("tost bench --help (snapshot)", async () => {
  const r = await runTost(["bench", "--help"]);
  assert.equal(r.code, 0);
  await assertSnapshot("help_bench.txt", r.stdout);
});
