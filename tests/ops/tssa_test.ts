import assert from "node:assert/strict";
import { TSSA, tssa, TSSA_VARIANTS } from "../../src/ops/tssa.ts";
import { tssaReference } from "../../src/ops/tssa_reference.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import type { TssaOptions } from "../../src/ops/_tssa_blocks.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";
import { runnableVariants } from "./_variants.ts";

interface Case {
  B: number;
  N: number;
  H: number;
  d: number;
  lo?: number;
}

async function runTssa(
  gpu: Gpu,
  w: Float32Array<ArrayBuffer>,
  temp: Float32Array<ArrayBuffer>,
  c: Case,
  options: TssaOptions & { variant?: string } = {},
): Promise<Float32Array> {
  const D = c.H * c.d;
  const wt = gpu.upload(w, [c.B, c.N, D], "w");
  const tt = gpu.upload(temp, [c.H, 1], "temp");
  const y = await tssa(gpu, wt, tt, c.H, options);
  assert.deepEqual(y.shape, [c.B, c.N, D]);
  const out = (await y.read()) as Float32Array;
  for (const t of [wt, tt, y]) t.destroy();
  return out;
}

function shapeOf(c: Case) {
  return { batches: c.B, tokens: c.N, dim: c.H * c.d, heads: c.H, headDim: c.d };
}

function inputs(c: Case, seed: number) {
  const w = randomArray(c.B * c.N * c.H * c.d, seed, c.lo ?? -1, 1.5);
  const temp = randomArray(c.H, seed + 1, 0.5, 1.5);
  return { w, temp };
}

Deno.test("tssa matches the float64 reference at awkward sizes", async () => {
  const cases: Case[] = [
    { B: 1, N: 1, H: 1, d: 1 },
    { B: 2, N: 7, H: 4, d: 5 },
    { B: 3, N: 63, H: 1, d: 64 },
    { B: 1, N: 700, H: 4, d: 16 },
    { B: 2, N: 700, H: 2, d: 2 }, // 700 tokens within the serial design's loop budget
    { B: 2, N: 100, H: 6, d: 24 }, // 59788 loop iterations: just under the serial budget
    { B: 2, N: 129, H: 6, d: 64 }, // D = 384: six column chunks, two token blocks
    { B: 1, N: 300, H: 8, d: 48 }, // heads straddle 64-column chunks
    { B: 1, N: 40, H: 12, d: 5 }, // 384 (token, head) pairs: > 256 per workgroup
  ];
  await withGpu(async (gpu) => {
    for (const [i, c] of cases.entries()) {
      const { w, temp } = inputs(c, 10 + i);
      const ref = tssaReference(w, temp, { batches: c.B, tokens: c.N, heads: c.H, headDim: c.d }).y;
      for (const variant of runnableVariants(gpu, TSSA, shapeOf(c))) {
        const got = await runTssa(gpu, w, temp, c, { variant });
        assertClose(got, ref, { atol: 1e-6, rtol: 1e-5 }, `tssa ${variant} ${JSON.stringify(c)}`);
      }
    }
  });
});

Deno.test("tssa at 100 000 tokens matches the float64 reference", async () => {
  // Non-zero-mean values make the token sums large relative to each term.
  const c: Case = { B: 1, N: 100_000, H: 4, d: 5, lo: 0.5 };
  await withGpu(async (gpu) => {
    const { w, temp } = inputs(c, 3);
    const ref = tssaReference(w, temp, { batches: c.B, tokens: c.N, heads: c.H, headDim: c.d }).y;
    assert.deepEqual(runnableVariants(gpu, TSSA, shapeOf(c)), ["blocks"]);
    const got = await runTssa(gpu, w, temp, c);
    assertClose(got, ref, { atol: 1e-7, rtol: 1e-5 }, "tssa N=100000");
    await assert.rejects(
      () => runTssa(gpu, w, temp, c, { variant: "serial" }),
      /serial takes at most 60000 loop iterations per invocation/,
    );
  });
});

Deno.test("tssa in binding-sized pieces equals the one-piece result", async () => {
  // 2 × 1000 tokens × 20 features = 160 KB; 12 KB bindings hold one 128-token block each.
  const c: Case = { B: 2, N: 1000, H: 4, d: 5 };
  await withGpu(async (gpu) => {
    const { w, temp } = inputs(c, 5);
    const ref = tssaReference(w, temp, { batches: c.B, tokens: c.N, heads: c.H, headDim: c.d }).y;
    const whole = await runTssa(gpu, w, temp, c, { variant: "blocks" });
    const pieces = await runTssa(gpu, w, temp, c, {
      maxBindingBytes: 12 * 1024,
      variant: "blocks",
    });
    assert.deepEqual(pieces, whole);
    assertClose(pieces, ref, { atol: 1e-6, rtol: 1e-5 });
    await assert.rejects(
      () => runTssa(gpu, w, temp, c, { maxBindingBytes: 4096, variant: "blocks" }),
      RangeError,
    );
    // The serial design binds whole batch elements: 24 KB each here, so one per piece.
    const s: Case = { B: 3, N: 300, H: 4, d: 5 };
    const si = inputs(s, 6);
    const sref = tssaReference(si.w, si.temp, {
      batches: s.B,
      tokens: s.N,
      heads: s.H,
      headDim: s.d,
    });
    const serial = await runTssa(gpu, si.w, si.temp, s, { variant: "serial" });
    const serialPieces = await runTssa(gpu, si.w, si.temp, s, {
      maxBindingBytes: 30 * 1024,
      variant: "serial",
    });
    assert.deepEqual(serialPieces, serial);
    assertClose(serial, sref.y, { atol: 1e-6, rtol: 1e-5 });
    await assert.rejects(
      () => runTssa(gpu, si.w, si.temp, s, { maxBindingBytes: 12 * 1024, variant: "serial" }),
      /does not fit/,
    );
  });
});

Deno.test("tssa with grids folded over x, y and z equals the unfolded result", async () => {
  // Folding at 5 workgroups per dimension sends the 3 × 9 blocks of every pass
  // through the kernels' (x, y, z) workgroup index, as 65536+ workgroups would.
  const c: Case = { B: 3, N: 1100, H: 4, d: 16 };
  await withGpu(async (gpu) => {
    const { w, temp } = inputs(c, 7);
    const whole = await runTssa(gpu, w, temp, c);
    const folded = await runTssa(gpu, w, temp, c, { foldWorkgroupsAt: 5 });
    assert.deepEqual(folded, whole);
    // 40 batch elements: 5 workgroups of 8 invocations, folded at 2 per dimension.
    const many: Case = { B: 40, N: 9, H: 4, d: 4 };
    const m = inputs(many, 8);
    const serial = await runTssa(gpu, m.w, m.temp, many, { variant: "serial" });
    const serialFolded = await runTssa(gpu, m.w, m.temp, many, {
      variant: "serial",
      foldWorkgroupsAt: 2,
    });
    assert.deepEqual(serialFolded, serial);
  });
});

Deno.test("tssa: an all-zero feature gives zeros, not NaN (F.normalize's clamp)", async () => {
  const c: Case = { B: 2, N: 9, H: 2, d: 3 };
  const { w, temp } = inputs(c, 9);
  for (let i = 4; i < w.length; i += 6) w[i] = 0; // feature 4 of every token
  await withGpu(async (gpu) => {
    const ref = tssaReference(w, temp, { batches: c.B, tokens: c.N, heads: c.H, headDim: c.d }).y;
    assert.ok(ref.every(Number.isFinite));
    for (const variant of TSSA_VARIANTS) {
      const got = await runTssa(gpu, w, temp, c, { variant });
      assertClose(got, ref, { atol: 1e-6, rtol: 1e-5 }, variant);
    }
  });
});

Deno.test("tssa rejects wrong shapes", async () => {
  await withGpu(async (gpu) => {
    const w = gpu.upload(new Float32Array(2 * 3 * 8), [2, 3, 8]);
    const temp = gpu.upload(new Float32Array(2), [2, 1]);
    await assert.rejects(() => tssa(gpu, w, temp, 3), TypeError); // 8 % 3 != 0
    await assert.rejects(() => tssa(gpu, w, temp, 4), TypeError); // temp has 2 values
    await assert.rejects(() => tssa(gpu, w, temp, 0), RangeError);
    await assert.rejects(
      () => tssa(gpu, w, temp, 2, { variant: "nope" }),
      /variant nope is unknown/,
    );
    const flat = gpu.upload(new Float32Array(8), [8]);
    await assert.rejects(() => tssa(gpu, flat, temp, 2), TypeError);
    const empty = await tssa(gpu, gpu.empty([2, 0, 8]), temp, 2);
    assert.deepEqual(empty.shape, [2, 0, 8]);
  });
});

Deno.test("tssaReference: one head and one token give y = -w / (1 + w²)", () => {
  const { y } = tssaReference(new Float64Array([2, -3]), [1.7], {
    batches: 2,
    tokens: 1,
    heads: 1,
    headDim: 1,
  });
  assertClose(y, [-2 / (1 + 4 / (1 + 1e-8)), 3 / (1 + 9 / (1 + 1e-8))], { atol: 1e-15, rtol: 0 });
  assert.throws(
    () =>
      tssaReference(new Float64Array(3), [1], { batches: 1, tokens: 2, heads: 1, headDim: 1 }).y,
    TypeError,
  );
});

Deno.test("tssa with saves: the same output, and Pi and the statistics of the reference", async () => {
  const c: Case = { B: 2, N: 300, H: 3, d: 5 };
  const dims = { batches: c.B, tokens: c.N, heads: c.H, headDim: c.d };
  const D = c.H * c.d;
  const { w, temp } = inputs(c, 71);
  const ref = tssaReference(w, temp, dims);
  await withGpu(async (gpu) => {
    const wt = gpu.upload(w, [c.B, c.N, D]);
    const tt = gpu.upload(temp, [c.H]);
    for (const variant of TSSA_VARIANTS) {
      const plain = await tssa(gpu, wt, tt, c.H, { variant });
      const { y, saves } = await tssa(gpu, wt, tt, c.H, { saves: true, variant });
      assert.deepEqual([...(await y.read())], [...(await plain.read())], "bit-identical y");
      assertClose(await saves.pi.read(), ref.pi, { atol: 1e-6, rtol: 1e-5 }, "pi");
      assertClose(await saves.sq.read(), ref.sq, { atol: 1e-5, rtol: 1e-5 }, "sq");
      const stats = await saves.stats.read();
      for (let b = 0; b < c.B; b++) {
        const row = stats.subarray(b * 2 * D, (b + 1) * 2 * D);
        const num = ref.num.subarray(b * D, (b + 1) * D);
        const den = Array.from({ length: D }, (_, k) => ref.den[b * c.H + Math.floor(k / c.d)]);
        assertClose(row.subarray(0, D), num, { atol: 1e-5, rtol: 1e-5 }, "Σ Pi·w²");
        assertClose(row.subarray(D), den, { atol: 1e-5, rtol: 1e-5 }, "Σ Pi");
      }
      for (const t of [plain, y, saves.pi, saves.sq, saves.stats]) t.destroy();
    }
    wt.destroy();
    tt.destroy();
  });
});
