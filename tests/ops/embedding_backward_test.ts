import assert from "node:assert/strict";
import {
  embeddingBackward,
  embeddingBackwardReference,
  groupTokenRows,
} from "../../src/ops/embedding_backward.ts";
import { linearBackward } from "../../src/ops/linear_backward.ts";
import { linearBackwardReference } from "../../src/ops/linear_reference.ts";
import { assertClose, assertCloseScaled, randomArray, seededRandom, withGpu } from "../_util.ts";
import { numericGradient } from "./_gradcheck.ts";

const f64 = (a: Float32Array) => Float64Array.from(a);

function randomIds(n: number, vocab: number, seed: number): number[] {
  const r = seededRandom(seed);
  return Array.from({ length: n }, () => Math.floor(r(0, vocab)));
}

Deno.test("embeddingBackwardReference matches finite differences of wte[idx] + wpe[t]", () => {
  const [B, T, C, V, P] = [2, 3, 2, 4, 5];
  const ids = [3, 0, 3, 1, 3, 3];
  const wte = f64(randomArray(V * C, 1));
  const wpe = f64(randomArray(P * C, 2));
  const dy = f64(randomArray(B * T * C, 3));
  const loss = () => {
    let s = 0;
    for (let r = 0; r < B * T; r++) {
      for (let c = 0; c < C; c++) {
        s += dy[r * C + c] * (wte[ids[r] * C + c] + wpe[(r % T) * C + c]);
      }
    }
    return s;
  };
  const dWte = new Float64Array(V * C).fill(2);
  const dWpe = new Float64Array(P * C).fill(-1);
  embeddingBackwardReference({ dy, ids, dWte, dWpe }, { B, T, C });
  assertClose(dWte, numericGradient(wte, loss).map((v) => v + 2), { atol: 1e-8 }, "dWte");
  assertClose(dWpe, numericGradient(wpe, loss).map((v) => v - 1), { atol: 1e-8 }, "dWpe");
});

Deno.test("groupTokenRows: stable counting sort cut into segments", () => {
  const g = groupTokenRows([1, 0, 1, 1, 1, 3], 4, 2);
  assert.deepEqual([...g.order], [1, 0, 2, 3, 4, 5]);
  // token 0: one segment [1]; token 1: [0, 2], [3, 4]; token 2: none; token 3: [5]
  assert.deepEqual([...g.vocabSeg], [0, 1, 3, 3, 4]);
  assert.deepEqual([...g.segStart], [0, 1, 3, 5, 6]);
  assert.throws(() => groupTokenRows([0, 4], 4), RangeError);
});

async function checkGpu(
  dims: { B: number; T: number; C: number; V: number; P: number },
  ids: number[],
  seed: number,
  withWpe = true,
): Promise<void> {
  const { B, T, C, V, P } = dims;
  await withGpu(async (gpu) => {
    const dy = randomArray(B * T * C, seed);
    const wte0 = randomArray(V * C, seed + 1);
    const wpe0 = randomArray(P * C, seed + 2);
    const dWteRef = f64(wte0);
    const dWpeRef = withWpe ? f64(wpe0) : null;
    embeddingBackwardReference({ dy, ids, dWte: dWteRef, dWpe: dWpeRef }, { B, T, C });
    const dWte = gpu.upload(wte0, [V, C]);
    const dWpe = withWpe ? gpu.upload(wpe0, [P, C]) : null;
    await embeddingBackward(gpu, { dy: gpu.upload(dy, [B, T, C]), ids, vocab: V, dWte, dWpe });
    assertCloseScaled(await dWte.read(), dWteRef, 1e-5 * Math.max(1, (B * T) / 50), "dWte");
    if (dWpe && dWpeRef) assertCloseScaled(await dWpe.read(), dWpeRef, 1e-5 * B, "dWpe");
  });
}

for (
  const [B, T, C, V, P] of [
    [1, 1, 1, 1, 1],
    [2, 7, 5, 11, 9],
    [3, 63, 33, 65, 64],
    [1, 700, 70, 97, 700],
  ] as const
) {
  Deno.test(`embeddingBackward matches the reference (B ${B}, T ${T}, C ${C}, V ${V})`, async () => {
    const dims = { B, T, C, V, P };
    await checkGpu(dims, randomIds(B * T, V, B + T + C), B * T * C);
  });
}

Deno.test("embeddingBackward: one very frequent token (many segments) and no dWpe", async () => {
  const [B, T] = [4, 300];
  const ids = Array.from({ length: B * T }, (_, i) => (i % 97 === 0 ? 2 : 5));
  await checkGpu({ B, T, C: 19, V: 8, P: T }, ids, 5, false);
});

Deno.test("embeddingBackward: over 65535 workgroups (folded grid)", async () => {
  // V·C / 64 threads per workgroup > 65535
  const [B, T, C, V] = [2, 50, 900, 4700];
  await checkGpu({ B, T, C, V, P: T }, randomIds(B * T, V, 3), 7, false);
});

Deno.test("embeddingBackward + linearBackward into one dWte: the tied weight's gradient", async () => {
  const [B, T, C, V] = [2, 9, 6, 13];
  const rows = B * T;
  const ids = randomIds(rows, V, 1);
  const dx0 = randomArray(rows * C, 2); // gradient reaching the embedding output
  const h = randomArray(rows * C, 3); // lm_head input (ln_f output)
  const dLogits = randomArray(rows * V, 4);
  const wte = randomArray(V * C, 5);
  const dWteRef = new Float64Array(V * C);
  linearBackwardReference({ dy: dLogits, x: h, weight: wte, dWeight: dWteRef, dBias: null }, {
    rows,
    inFeatures: C,
    outFeatures: V,
  });
  embeddingBackwardReference({ dy: dx0, ids, dWte: dWteRef, dWpe: null }, { B, T, C });
  await withGpu(async (gpu) => {
    const dWte = gpu.empty([V, C]);
    const wteT = gpu.upload(wte, [V, C]);
    await linearBackward(gpu, {
      dy: gpu.upload(dLogits, [B, T, V]),
      x: gpu.upload(h, [B, T, C]),
      weight: wteT,
      dWeight: dWte,
      dBias: null,
    });
    await embeddingBackward(gpu, {
      dy: gpu.upload(dx0, [B, T, C]),
      ids,
      vocab: V,
      dWte,
      dWpe: null,
    });
    assertCloseScaled(await dWte.read(), dWteRef, 1e-5, "tied dWte");
  });
});

Deno.test("embeddingBackward: bad ids and shapes", async () => {
  await withGpu(async (gpu) => {
    const dy = gpu.empty([1, 2, 3]);
    const dWte = gpu.empty([4, 3]);
    await assert.rejects(
      embeddingBackward(gpu, { dy, ids: [0, 4], vocab: 4, dWte, dWpe: null }),
      RangeError,
    );
    await assert.rejects(
      embeddingBackward(gpu, { dy, ids: [0], vocab: 4, dWte, dWpe: null }),
      TypeError,
    );
    await assert.rejects(
      embeddingBackward(gpu, { dy, ids: [0, 1], vocab: 4, dWte, dWpe: gpu.empty([1, 3]) }),
      TypeError,
    );
  });
});
