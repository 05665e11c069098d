import assert from "node:assert/strict";
import { recordProblem } from "../../src/bench/compare.ts";
import { runTost } from "./_run.ts";

const SAMPLES = new URL("../../bench/peer/samples/", import.meta.url).pathname;
const VISION = new URL("../fixtures/tost_vision_small.pth", import.meta.url).pathname;

Deno.test("tost bench --train --json: a training record of the tiny preset, paired with the peer's", async () => {
  const r = await runTost([
    "bench",
    "--train",
    "--preset",
    "tiny",
    "--steps",
    "2",
    "--json",
    "--compare",
    `${SAMPLES}train.json`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.results.length, 1);
  const rec = out.results[0];
  assert.equal(recordProblem(rec), null);
  assert.equal(rec.status, "ok", rec.error);
  assert.deepEqual(
    [rec.model, rec.n_layer, rec.n_embd, rec.block_size, rec.batch_size, rec.vocab_size],
    ["causal-tost", 2, 32, 32, 8, 98],
  );
  assert.ok(rec.step_ms > 0 && Math.abs(rec.tokens_per_s - 8 * 32 * 1000 / rec.step_ms) < 1e-6);
  assert.ok(rec.loss > 3 && rec.loss < 6, `loss ${rec.loss} near ln(98) = 4.6`);
  assert.deepEqual(out.comparison.unmatched, []);
  const [pair] = out.comparison.pairs;
  assert.equal(pair.kind, "train");
  assert.equal(pair.unit, "tokens/s");
  assert.ok(pair.time_ratio > 0 && Math.abs(pair.time_ratio * pair.throughput_ratio - 1) < 1e-9);
});

Deno.test("tost bench --compare: attention records pair with the peer's, the rest is listed", async () => {
  const r = await runTost([
    "bench",
    "--seq",
    "32",
    "--ops",
    "tssa,causal-tssa",
    "--dim",
    "32",
    "--heads",
    "4",
    "--repeats",
    "1",
    "--compare",
    `${SAMPLES}attention.json,${SAMPLES}operators.json`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /tost ÷ peer/);
  assert.match(r.stdout, /│ tssa n=32 \(B1 D32 H4\) +│/);
  assert.match(r.stdout, /│ causal-tssa n=32 \(B1 D32 H4\) +│/);
  // Peer workloads tost did not run are listed, operator-only ones apart from the modules.
  assert.match(r.stdout, /unmatched peer record: tssa n=64 \(B1 D32 H4\): no tost record/);
  assert.match(r.stdout, /unmatched peer record: tssa \(operator alone\) n=32/);
  assert.match(r.stdout, /unmatched peer record: linear 64×32×96/);
});

Deno.test("tost bench --eval: MNIST evaluation throughput of a vision checkpoint", async () => {
  const r = await runTost([
    "bench",
    "--eval",
    VISION,
    "--batch",
    "16",
    "--repeats",
    "2",
    "--json",
    "--compare",
    `${SAMPLES}eval.json`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  const rec = out.results[0];
  assert.equal(recordProblem(rec), null);
  assert.deepEqual(
    [rec.op, rec.model, rec.embed_dim, rec.depth, rec.image, rec.batch_size, rec.status],
    ["eval", "vision-tost", 64, 2, 28, 16, "ok"],
  );
  assert.ok(rec.images_per_s > 0 && rec.accuracy >= 0 && rec.accuracy <= 1);
  assert.equal(out.comparison.pairs.length, 1);
  assert.deepEqual(out.comparison.unmatched, []);
});

Deno.test("tost bench --from compares saved results without running anything", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tost-compare-" });
  try {
    const peer = JSON.parse(await Deno.readTextFile(`${SAMPLES}train.json`));
    const slower = peer.results.map((x: { step_ms: number; tokens_per_s: number }) => ({
      ...x,
      step_ms: x.step_ms * 4,
      tokens_per_s: x.tokens_per_s / 4,
    }));
    await Deno.writeTextFile(`${dir}/tost.json`, JSON.stringify({ results: slower }));
    const r = await runTost([
      "bench",
      "--from",
      `${dir}/tost.json`,
      "--compare",
      `${SAMPLES}train.json`,
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const { comparison } = JSON.parse(r.stdout);
    assert.equal(comparison.pairs.length, 1);
    assert.ok(Math.abs(comparison.pairs[0].time_ratio - 4) < 1e-9);
    assert.ok(Math.abs(comparison.pairs[0].throughput_ratio - 0.25) < 1e-9);
    const text = await runTost([
      "bench",
      "--from",
      `${dir}/tost.json`,
      "--compare",
      `${SAMPLES}train.json`,
    ]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /train causal-tost 2×32 2 heads, ctx 32, batch 8/);
    assert.match(text.stdout, /4\.00×/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tost bench: flags of the comparison modes are refused where they do not apply", async () => {
  const cases: [string[], RegExp][] = [
    [["--steps", "3"], /--steps applies to --train only/],
    [["--train", "--seq", "64"], /--seq does not apply to --train/],
    [["--train", "--no-projections"], /--no-projections does not apply to --train/],
    [["--eval", VISION, "--preset", "tiny"], /--preset does not apply to --eval/],
    [["--train", "--model"], /choose one of --train, --model/],
    [["--from", "x.json"], /--from .* needs --compare/],
    [
      ["--compare", "/nonexistent/peer.json"],
      /Cannot read peer results "\/nonexistent\/peer\.json"/,
    ],
    [["--train", "--preset", "nope"], /Unknown preset "nope"/],
    [["--train", "--config", "/nonexistent.json"], /Cannot read "\/nonexistent\.json"/],
  ];
  for (const [args, message] of cases) {
    const r = await runTost(["bench", ...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  const dir = await Deno.makeTempDir({ prefix: "tost-compare-" });
  try {
    await Deno.writeTextFile(`${dir}/bad.json`, '{"results": [{"n": 1}]}');
    const r = await runTost(["bench", "--train", "--compare", `${dir}/bad.json`]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /bad\.json": results\[0\] is not a record with a string "op"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tost bench --train --profile: GPU time per kernel and step; --profile alone exits 2", async () => {
  const r = await runTost(
    [
      "bench",
      "--train",
      "--preset",
      "tiny",
      "--steps",
      "1",
      "--warmup",
      "1",
      "--profile",
      "--json",
    ],
  );
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.results[0].profiled, true);
  const kernels = out.kernels as { kernel: string; dispatches: number; ms: number }[];
  assert.ok(kernels.length > 5, "several kernels");
  assert.ok(kernels.some((k) => k.kernel.startsWith("gemm")), "the GEMMs are there");
  assert.ok(kernels.every((k) => k.dispatches > 0 && k.ms >= 0));
  for (let i = 1; i < kernels.length; i++) assert.ok(kernels[i - 1].ms >= kernels[i].ms);
  const text = await runTost(["bench", "--train", "--preset", "tiny", "--steps", "1", "--profile"]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /GPU ms\/step/);
  const bad = await runTost(["bench", "--profile"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--profile applies to --train and --eval only/);
});
