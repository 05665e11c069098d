/**
 * The PyTorch peer (`bench/peer/peer.py`) is not run here: its committed
 * sample outputs (`bench/peer/samples/`, real runs) are checked against
 * tost's side instead — record schemas, the data and weights the peer builds
 * (recomputed with tost's own generators and CPU references), the minimum
 * bytes it reports, and its preset table against `presets.ts`.
 */

import assert from "node:assert/strict";
import { type AnyRecord, parseRecords, recordProblem } from "../../src/bench/compare.ts";
import { chunkedValues, makeWeights, randomFill } from "../../src/bench/_data.ts";
import { minimumBytes, type OperatorName } from "../../src/bench/operators.ts";
import { minimumStepBytes } from "../../src/bench/operators_backward.ts";
import { linearReference } from "../../src/ops/linear_reference.ts";
import { tssaReference } from "../../src/ops/tssa_reference.ts";
import { causalTssaReference } from "../../src/ops/causal_tssa_reference.ts";
import { attentionReference } from "../../src/ops/attention_reference.ts";
import { applySettings, PRESET_NAMES, presetSettings } from "../../src/train/presets.ts";
import type { TrainSettings } from "../../src/train/presets.ts";

const PEER = new URL("../../bench/peer/", import.meta.url);
const SAMPLES = ["attention", "operators", "model", "train", "eval"] as const;

async function sample(name: string): Promise<Record<string, unknown> & { results: AnyRecord[] }> {
  const text = await Deno.readTextFile(new URL(`samples/${name}.json`, PEER));
  return { ...JSON.parse(text), results: parseRecords(text, name) };
}

Deno.test("peer samples: every record fits tost's record schema, every check passed", async () => {
  const ops = new Set<string>();
  for (const name of SAMPLES) {
    const doc = await sample(name);
    assert.ok(doc.results.length > 0, name);
    for (const r of doc.results) {
      assert.equal(recordProblem(r), null, `${name}: ${JSON.stringify(r)}`);
      assert.equal(r.status, "ok", `${name}: ${r.error}`);
      assert.equal(r.gpu_ms, null);
      assert.ok((r.wall_ms as number) > 0);
      ops.add(`${r.op}${r.pass ? ` ${r.pass}` : ""}${r.projections === false ? " alone" : ""}`);
    }
    const checks = doc.checks as { op: string; ok: boolean; error: number }[];
    assert.ok(checks.length >= 10 && checks.every((c) => c.ok && c.error < 1e-4), name);
    const peer = doc.peer as { blas: string[]; threads: number; omp_wait_policy: string };
    assert.ok(peer.blas.some((b) => b.includes("openblas")), "the sample used OpenBLAS");
    assert.equal(peer.threads, 2);
    assert.equal(peer.omp_wait_policy, "PASSIVE");
  }
  for (
    const op of [
      "tssa fwd",
      "causal-flash-softmax fwd+bwd",
      "softmax fwd alone",
      "tost-s fwd",
      "vit-s fwd",
      "linear",
      "train",
      "eval",
    ]
  ) {
    assert.ok(ops.has(op), `the samples cover ${op}`);
  }
});

Deno.test("peer samples: attention records report tost's minimum bytes", async () => {
  for (const name of ["attention", "operators"]) {
    for (const r of (await sample(name)).results.filter((r) => r.op !== "linear")) {
      const op = r.op as OperatorName;
      const shape = {
        batch: r.batch as number,
        dim: r.dim as number,
        heads: r.heads as number,
        projections: r.projections as boolean,
      };
      const n = r.n as number;
      const want = r.pass === "fwd" ? minimumBytes(op, shape, n) : minimumStepBytes(op, shape, n);
      assert.equal(r.min_bytes, want, `${op} ${r.pass} n=${n}`);
    }
  }
});

Deno.test("peer samples: the peer builds tost's data, weights and modules", async () => {
  const doc = await sample("attention");
  const probes = (doc.peer as {
    probes: {
      shape: { n: number; dim: number; heads: number; batch: number };
      random_fill: number[];
      chunk_edge: number[];
      modules: Record<string, number[]>;
    };
  }).probes;
  assert.deepEqual(probes.random_fill, [...randomFill(4, 7, 1)]);
  const edge = chunkedValues((1 << 20) + 2, 7).slice((1 << 20) - 2);
  assert.deepEqual(probes.chunk_edge, [...edge]);
  const { n, dim, heads, batch } = probes.shape;
  const d = dim / heads;
  const x = chunkedValues(batch * n * dim, 7);
  const ops = ["tssa", "causal-tssa", "softmax", "causal-softmax"] as const;
  assert.deepEqual(Object.keys(probes.modules).sort(), [...ops].sort());
  for (const op of ops) {
    const w = makeWeights(op, { batch, dim, heads }, n);
    const inF = op.includes("softmax") ? 3 * dim : dim;
    const proj = linearReference(x, w.inWeight, w.inBias, batch * n, dim, inF);
    const y = op === "tssa"
      ? tssaReference(proj, w.temp, { batches: batch, tokens: n, heads, headDim: d }).y
      : op === "causal-tssa"
      ? causalTssaReference(proj, { temp: w.temp, denomBias: w.denomBias }, {
        batches: batch,
        tokens: n,
        heads,
        headDim: d,
        blockSize: n,
      }).y
      : attentionReference(proj, batch, n, heads, d, { causal: op === "causal-softmax" });
    const ref = linearReference(Float32Array.from(y), w.outWeight, w.outBias, batch * n, dim, dim);
    const got = probes.modules[op];
    assert.equal(got.length, 16);
    got.forEach((v, i) =>
      assert.ok(Math.abs(v - ref[i]) <= 1e-5, `${op}[${i}]: ${v} vs ${ref[i]}`)
    );
  }
});

Deno.test("peer presets: bench/peer/presets.json holds tost's presets, its configs load in tost", async () => {
  const presets: Record<string, Record<string, unknown>> = JSON.parse(
    await Deno.readTextFile(new URL("presets.json", PEER)),
  );
  const bases = new Set(PRESET_NAMES.map((n) => n.replace(/-(gpt|vit)$/, "")));
  assert.deepEqual(Object.keys(presets).sort(), [...bases].sort());
  for (const [name, fields] of Object.entries(presets)) {
    const s = presetSettings(name);
    for (const [k, v] of Object.entries(fields)) {
      assert.deepEqual(v, s[k as keyof TrainSettings], `${name}.${k}`);
    }
  }
  for (const file of ["nanogpt_cpu.json", "gpt_6x384.json"]) {
    const cfg = JSON.parse(await Deno.readTextFile(new URL(`configs/${file}`, PEER)));
    const s = applySettings(presetSettings("small"), cfg, file);
    assert.equal(s.attention, "tssa");
  }
  const train = (await sample("train")).results[0];
  const tiny = presetSettings("tiny");
  assert.deepEqual(
    [train.n_layer, train.n_head, train.n_embd, train.block_size, train.batch_size],
    [tiny.n_layer, tiny.n_head, tiny.n_embd, tiny.block_size, tiny.batch_size],
  );
  assert.deepEqual(train.optimizer, {
    learning_rate: tiny.learning_rate,
    weight_decay: tiny.weight_decay,
    beta1: tiny.beta1,
    beta2: tiny.beta2,
    eps: tiny.eps,
    grad_clip: tiny.grad_clip,
  });
});
