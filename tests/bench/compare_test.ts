import assert from "node:assert/strict";
import {
  type AnyRecord,
  compareRecords,
  formatComparison,
  parseRecords,
  recordProblem,
} from "../../src/bench/compare.ts";

const where = { device: "d", backend: "b", software: false };

function attention(op: string, n: number, wall_ms: number, extra: Record<string, unknown> = {}) {
  return {
    op,
    n,
    pass: "fwd",
    batch: 1,
    dim: 32,
    heads: 4,
    gpu_ms: null,
    wall_ms,
    status: "ok",
    ...where,
    ...extra,
  } as AnyRecord;
}

function linear(m: number, wall_ms: number, gflops: number, extra: Record<string, unknown> = {}) {
  return {
    op: "linear",
    m,
    k: 64,
    n: 96,
    gflops,
    gpu_ms: null,
    wall_ms,
    status: "ok",
    ...where,
    ...extra,
  } as AnyRecord;
}

Deno.test("compareRecords pairs by workload and gives tost ÷ peer for time and throughput", () => {
  const tost = [attention("tssa", 64, 10, { gpu_ms: 2 }), attention("tssa", 128, 12)];
  const peer = [attention("tssa", 128, 3), attention("tssa", 64, 0.5)];
  const { pairs, unmatched } = compareRecords(tost, peer);
  assert.deepEqual(unmatched, []);
  assert.equal(pairs.length, 2);
  const [a, b] = pairs; // tost's order
  assert.equal(a.key.n, 64);
  assert.equal(a.time_ratio, 20);
  assert.equal(a.gpu_time_ratio, 4);
  assert.equal(a.throughput_ratio, 1 / 20);
  assert.equal(a.tost.throughput, 64 * 1000 / 10); // tokens/s
  assert.equal(a.unit, "tokens/s");
  assert.equal(b.key.n, 128);
  assert.equal(b.time_ratio, 4);
  assert.equal(b.gpu_time_ratio, null); // tost without timestamp queries
});

Deno.test("compareRecords keeps every size in the key: other batch, width, pass or operator-only do not pair", () => {
  const tost = [
    attention("tssa", 64, 10),
    attention("tssa", 64, 10, { batch: 2 }),
    attention("tssa", 64, 10, { dim: 64 }),
    attention("tssa", 64, 10, { pass: "fwd+bwd" }),
    attention("tssa", 64, 10, { projections: false }),
  ];
  // A record without `projections` is a module record (tost before the field existed).
  const peer = [attention("tssa", 64, 1, { projections: true }), attention("causal-tssa", 64, 1)];
  const { pairs, unmatched } = compareRecords(tost, peer);
  assert.equal(pairs.length, 1);
  assert.equal(pairs[0].key.projections, true);
  assert.equal(unmatched.filter((u) => u.side === "tost").length, 4);
  assert.ok(unmatched.some((u) => u.side === "tost" && /operator alone/.test(u.workload)));
  assert.deepEqual(
    unmatched.filter((u) => u.side === "peer").map((u) => u.reason),
    ["no tost record of this workload"],
  );
});

Deno.test("compareRecords takes medians over repeated runs and counts failures", () => {
  const tost = [linear(64, 4, 1), linear(64, 8, 3), linear(64, 100, 2)];
  const peer = [
    linear(64, 2, 10),
    linear(64, 0, 0, { status: "failed", error: "boom", wall_ms: null, gflops: null }),
  ];
  const [p] = compareRecords(tost, peer).pairs;
  assert.deepEqual([p.tost.runs, p.tost.ok, p.tost.time_ms, p.tost.throughput], [3, 3, 8, 2]);
  assert.deepEqual([p.peer.runs, p.peer.ok, p.peer.time_ms], [2, 1, 2]);
  assert.equal(p.throughput_ratio, 0.2);
  assert.equal(p.unit, "GFLOP/s");
  const failed = compareRecords(
    [linear(64, 0, 0, { status: "failed", error: "out of memory", wall_ms: null, gflops: null })],
    [linear(64, 2, 10)],
  ).pairs[0];
  assert.equal(failed.tost.ok, 0);
  assert.equal(failed.tost.error, "out of memory");
  assert.equal(failed.time_ratio, null);
  assert.match(formatComparison({ pairs: [failed], unmatched: [] }), /failed: out of memory/);
});

Deno.test("compareRecords: several kernel variants of one GEMM stand as the fastest", () => {
  const tost = [
    linear(64, 10, 5, { variant: "slow" }),
    linear(64, 2, 25, { variant: "fast" }),
    linear(64, 3, 20, { variant: "fast" }),
  ];
  const [p] = compareRecords(tost, [linear(64, 1, 50, { variant: "openblas" })]).pairs;
  assert.equal(p.tost.variant, "fast");
  assert.equal(p.tost.throughput, 22.5);
  assert.equal(p.tost.time_ms, 2.5);
  assert.equal(p.peer.variant, "openblas");
  assert.equal(p.throughput_ratio, 22.5 / 50);
});

Deno.test("compareRecords pairs training and evaluation records by model and batch", () => {
  const train = (model: string, batch_size: number, step_ms: number) => ({
    op: "train",
    model,
    preset: "x",
    n_layer: 2,
    n_head: 2,
    n_embd: 32,
    block_size: 32,
    batch_size,
    gradient_accumulation_steps: 1,
    vocab_size: 98,
    unit: "tokens",
    step_ms,
    tokens_per_s: batch_size * 32 * 1000 / step_ms,
    wall_ms: step_ms,
    gpu_ms: null,
    status: "ok",
    ...where,
  });
  const evalRec = (images_per_s: number) => ({
    op: "eval",
    model: "vision-tost",
    embed_dim: 64,
    depth: 2,
    num_heads: 4,
    patch_size: 8,
    image: 28,
    batch_size: 128,
    batch_ms: 128_000 / images_per_s,
    images_per_s,
    wall_ms: 128_000 / images_per_s,
    gpu_ms: null,
    status: "ok",
    ...where,
  });
  const { pairs, unmatched } = compareRecords(
    [train("causal-tost", 8, 100), train("gpt", 8, 50), evalRec(500)],
    [train("causal-tost", 8, 5), train("causal-tost", 12, 5), evalRec(5000)],
  );
  assert.equal(pairs.length, 2);
  assert.equal(pairs[0].kind, "train");
  assert.equal(pairs[0].time_ratio, 20);
  assert.equal(pairs[0].throughput_ratio, 0.05);
  assert.equal(pairs[0].unit, "tokens/s");
  assert.equal(pairs[1].kind, "eval");
  assert.equal(pairs[1].throughput_ratio, 0.1);
  assert.deepEqual(unmatched.map((u) => [u.side, u.workload]), [
    ["tost", "train gpt 2×32 2 heads, ctx 32, batch 8"],
    ["peer", "train causal-tost 2×32 2 heads, ctx 32, batch 12"],
  ]);
});

Deno.test("records of an unknown kind or with a missing field are listed, not dropped", () => {
  const bad = attention("tssa", 64, 1);
  delete bad.heads;
  const { pairs, unmatched } = compareRecords(
    [{ op: "mystery", status: "ok" }, bad],
    [attention("tssa", 64, 1), linear(8, 1, 1, { m: "8" })],
  );
  assert.equal(pairs.length, 0);
  assert.deepEqual(unmatched.map((u) => u.reason), [
    'no pairing rule for op "mystery"',
    'attention record field "heads" must be a number, got nothing',
    'linear record field "m" must be a number, got "8"',
    "no tost record of this workload",
  ]);
  const text = formatComparison({ pairs, unmatched });
  assert.match(text, /no workload measured on both sides/);
  assert.match(text, /unmatched tost record: mystery: no pairing rule/);
  assert.equal(
    recordProblem(attention("tssa", 1, 1, { status: "done" })),
    'status must be "ok" or "failed", got "done"',
  );
});

Deno.test("parseRecords reads tost and peer documents and names the file on errors", () => {
  assert.equal(parseRecords('{"device": {}, "results": [{"op": "tssa"}]}', "a.json").length, 1);
  assert.equal(parseRecords('[{"op": "linear"}]', "b.json").length, 1);
  assert.throws(() => parseRecords("{", "c.json"), /c\.json is not valid JSON/);
  assert.throws(() => parseRecords('{"records": []}', "d.json"), /d\.json holds no "results"/);
  assert.throws(() => parseRecords('{"results": [{"n": 1}]}', "e.json"), /e\.json: results\[0\]/);
});

Deno.test("formatComparison shows both sides, the ratios and the run counts", () => {
  const c = compareRecords(
    [attention("softmax", 256, 30, { gpu_ms: 6 }), attention("softmax", 256, 40, { gpu_ms: 6 })],
    [attention("softmax", 256, 3)],
  );
  const text = formatComparison(c);
  assert.match(text, /softmax n=256 \(B1 D32 H4\)/);
  // Medians of each quantity: time (30, 40) → 35 ms, throughput (8533, 6400) → 7467 tokens/s.
  assert.match(text, /35\.0 ms, 7467 tokens\/s \(2 runs\)/);
  assert.match(text, /11\.67×/);
  assert.match(text, /0\.088×/);
  assert.match(text, /2\.00×/); // GPU time ÷ peer
});
