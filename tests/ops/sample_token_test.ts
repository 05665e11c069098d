/**
 * The GPU sampler against the float64 host sampler (`sampleToken`) given the
 * same random numbers: greedy = argmax (first among ties), top-k = 1, top-k
 * over a GPT-2-sized vocabulary (50257) by radix select, temperatures from
 * tiny to huge, a vocabulary limit, awkward sizes, and non-finite logits.
 */

import assert from "node:assert/strict";
import { withGpu } from "../_util.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import { randomAt, recordSampleToken, samplingError } from "../../src/ops/sample_token.ts";
import { sampleToken, seededRandom } from "../../src/ops/sample_token_reference.ts";
import type { SamplingOptions } from "../../src/ops/sample_token_reference.ts";

/** Rows of logits, a draw from each on the GPU: the tokens and the status. */
async function gpuDraws(
  gpu: Gpu,
  rows: Float32Array[],
  options: SamplingOptions & { limit?: number; seed: number },
): Promise<{ tokens: number[]; status: Uint32Array }> {
  const V = rows[0].length;
  const all = new Float32Array(rows.length * V);
  rows.forEach((r, i) => all.set(r, i * V));
  const logits = gpu.upload(all, [rows.length, V]);
  const tokens = gpu.upload(new Uint32Array(rows.length + 1).fill(0xdead), [rows.length + 1], "t");
  const status = gpu.empty([4], "u32");
  try {
    for (let r = 0; r < rows.length; r++) {
      await recordSampleToken(gpu, logits, {
        ...options,
        row: r,
        draw: r,
        tokens,
        at: r + 1,
        status,
      });
    }
    const [t, s] = await gpu.readMany([tokens, status]);
    assert.equal(t[0], 0xdead, "nothing written outside `at`");
    return { tokens: [...t.subarray(1)], status: s as Uint32Array };
  } finally {
    for (const x of [logits, tokens, status]) x.destroy();
  }
}

/** The host sampler on the same rows with the same draws. */
function hostDraws(
  rows: Float32Array[],
  options: SamplingOptions & { limit?: number; seed: number },
): number[] {
  return rows.map((r, i) =>
    sampleToken(r.subarray(0, options.limit ?? r.length), options, () => randomAt(options.seed, i))
  );
}

function randomRows(n: number, V: number, seed: number, scale = 3): Float32Array[] {
  const rand = seededRandom(seed);
  return Array.from(
    { length: n },
    () => Float32Array.from({ length: V }, () => scale * (2 * rand() - 1)),
  );
}

Deno.test("randomAt is the seeded sequence, to 24 bits", () => {
  const r = seededRandom(1337);
  for (let i = 0; i < 100; i++) {
    const x = r();
    const y = randomAt(1337, i);
    assert.ok(y <= x && x - y < 2 ** -24 && y < 1, `${i}: ${x} ${y}`);
  }
  assert.throws(() => randomAt(1, -1), RangeError);
  assert.throws(() => randomAt(2 ** 32, 0), RangeError);
});

for (const V of [1, 7, 63, 700, 50257]) {
  Deno.test(`GPU sampling equals the host sampler, V = ${V}`, async () => {
    await withGpu(async (gpu) => {
      const rows = randomRows(V > 1000 ? 6 : 24, V, V);
      const cases: (SamplingOptions & { limit?: number; seed: number })[] = [
        { temperature: 0, seed: 1 },
        { temperature: 1, seed: 2 },
        { temperature: 0.8, topK: 200, seed: 3 },
        { temperature: 1.3, topK: 1, seed: 4 },
        { temperature: 0.7, topK: 5, seed: 5 },
        { temperature: 2, topK: V + 3, seed: 6 },
        { temperature: 1, seed: 7, limit: Math.max(1, V - 5) },
        { temperature: 0.9, topK: 3, seed: 8, limit: Math.max(1, Math.ceil(V / 2)) },
      ];
      for (const c of cases) {
        const { tokens, status } = await gpuDraws(gpu, rows, c);
        assert.equal(status[0], 0);
        assert.deepEqual(tokens, hostDraws(rows, c), JSON.stringify(c));
        for (const t of tokens) assert.ok(t < (c.limit ?? V));
      }
    });
  });
}

Deno.test("GPU sampling: ties, greedy's first maximum, top-1 among ties, temperature extremes", async () => {
  await withGpu(async (gpu) => {
    // Ties at the maximum in different threads' chunks (V = 1000: chunks of 4).
    const V = 1000;
    const row = new Float32Array(V).fill(-1);
    for (const i of [3, 517, 998]) row[i] = 2;
    row[600] = 1.999;
    const rows = Array.from({ length: 16 }, () => row);
    const greedy = await gpuDraws(gpu, rows, { temperature: 0, seed: 1 });
    assert.deepEqual(new Set(greedy.tokens), new Set([3]));
    // Thread 128's maximum meets thread 1's first in the tree: the lower index still wins.
    const late = new Float32Array(V).fill(-1);
    late[512] = late[5] = 4;
    assert.deepEqual((await gpuDraws(gpu, [late], { temperature: 0, seed: 1 })).tokens, [5]);
    // top-1 keeps the three tied maxima and draws among them; so does a tiny temperature.
    for (const c of [{ topK: 1, temperature: 1, seed: 9 }, { temperature: 1e-30, seed: 9 }]) {
      const { tokens } = await gpuDraws(gpu, rows, c);
      assert.deepEqual(tokens, hostDraws(rows, c), JSON.stringify(c));
      assert.deepEqual(new Set(tokens), new Set([3, 517, 998]), JSON.stringify(c));
    }
    // A huge temperature: every token equally likely.
    const hot = { temperature: 1e30, seed: 11 };
    const many = Array.from({ length: 64 }, () => row);
    const { tokens } = await gpuDraws(gpu, many, hot);
    assert.deepEqual(tokens, hostDraws(many, hot));
    assert.ok(new Set(tokens).size > 50, `${new Set(tokens).size} distinct`);
    // top-k with ties at the k-th value keeps all of them (k = 2 keeps the three 2s).
    const k2 = { topK: 2, temperature: 1, seed: 12 };
    const r2 = await gpuDraws(gpu, many, k2);
    assert.deepEqual(r2.tokens, hostDraws(many, k2));
    assert.deepEqual(new Set(r2.tokens), new Set([3, 517, 998]));
    // Negative zero and zero tie; negative logits only.
    const z = Float32Array.from([-0, 0, -5, -0]);
    const zc = { topK: 2, temperature: 1, seed: 13 };
    const zr = Array.from({ length: 16 }, () => z);
    assert.deepEqual((await gpuDraws(gpu, zr, zc)).tokens, hostDraws(zr, zc));
  });
});

Deno.test("GPU sampling: top-k over a GPT-2 vocabulary keeps exactly the k largest", async () => {
  await withGpu(async (gpu) => {
    const V = 50257;
    const rand = seededRandom(77);
    const row = Float32Array.from({ length: V }, () => rand() * 10 - 20);
    const top = [50256, 0, 12345, 40000, 7];
    top.forEach((i, r) => row[i] = 30 - r * 1e-3); // the 5 largest, nearly equal
    const rows = Array.from({ length: 40 }, () => row);
    const c = { topK: 5, temperature: 100, seed: 21 };
    const { tokens } = await gpuDraws(gpu, rows, c);
    assert.deepEqual(tokens, hostDraws(rows, c));
    assert.deepEqual(new Set(tokens), new Set(top));
  });
});

Deno.test("GPU sampling: a non-finite logit is reported for its draw; later draws write 0", async () => {
  await withGpu(async (gpu) => {
    const rows = randomRows(5, 70, 3);
    rows[2][41] = NaN;
    rows[2][60] = Infinity;
    rows[3][1] = -Infinity;
    const { tokens, status } = await gpuDraws(gpu, rows, { temperature: 1, seed: 5 });
    const err = samplingError(status);
    assert.ok(err);
    assert.equal(err.draw, 2);
    assert.match(err.error.message, /non-finite logit \(NaN\) for token 41/);
    assert.throws(
      () => hostDraws(rows.slice(2, 3), { seed: 5 }),
      /non-finite logit \(NaN\) for token 41/,
    );
    assert.deepEqual(tokens.slice(0, 2), hostDraws(rows.slice(0, 2), { temperature: 1, seed: 5 }));
    assert.deepEqual(tokens.slice(2), [0, 0, 0]);
    // Outside the limit a non-finite logit does not matter.
    const ok = await gpuDraws(gpu, [rows[2]], { temperature: 0, seed: 1, limit: 40 });
    assert.equal(ok.status[0], 0);
    const inf = await gpuDraws(gpu, [rows[3]], { temperature: 0, seed: 1 });
    assert.match(samplingError(inf.status)!.error.message, /\(-Infinity\) for token 1/);
    assert.equal(samplingError(new Uint32Array(4)), null);
  });
});

Deno.test("GPU sampling refuses bad options", async () => {
  await withGpu(async (gpu) => {
    const logits = gpu.upload(new Float32Array(8), [2, 4]);
    const tokens = gpu.empty([2], "u32");
    const status = gpu.empty([4], "u32");
    const base = { seed: 1, draw: 0, tokens, at: 0, status };
    await assert.rejects(recordSampleToken(gpu, logits, { ...base, row: 2 }), /row 2 outside/);
    await assert.rejects(recordSampleToken(gpu, logits, { ...base, limit: 5 }), /limit/);
    await assert.rejects(recordSampleToken(gpu, logits, { ...base, at: 2 }), /position 2/);
    await assert.rejects(
      recordSampleToken(gpu, logits, { ...base, temperature: -1 }),
      /temperature/,
    );
    await assert.rejects(recordSampleToken(gpu, logits, { ...base, seed: -1 }), /seed/);
    await assert.rejects(
      recordSampleToken(gpu, logits, { ...base, status: gpu.empty([4]) }),
      /status must be u32/,
    );
  });
});
