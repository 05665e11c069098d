import assert from "node:assert/strict";
import { CAUSAL_TSSA, CAUSAL_TSSA_VARIANTS, causalTssa } from "../../src/ops/causal_tssa.ts";
import { runnableVariants } from "./_variants.ts";
import { causalTssaReference } from "../../src/ops/causal_tssa_reference.ts";
import type { Gpu } from "../../src/gpu/runtime.ts";
import type { TssaOptions } from "../../src/ops/_tssa_blocks.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

interface Case {
  B: number;
  N: number;
  H: number;
  d: number;
  /** denom_bias positions (≥ N). */
  T: number;
  lo?: number;
}

function inputs(c: Case, seed: number) {
  return {
    w: randomArray(c.B * c.N * c.H * c.d, seed, c.lo ?? -1, 1.5),
    temp: randomArray(c.H, seed + 1, 0.5, 1.5),
    bias: randomArray(c.H * c.T, seed + 2, -0.2, 0.2),
  };
}

async function runCausal(
  gpu: Gpu,
  c: Case,
  data: ReturnType<typeof inputs>,
  options: TssaOptions & { variant?: string } = {},
): Promise<Float32Array> {
  const D = c.H * c.d;
  const w = gpu.upload(data.w, [c.B, c.N, D], "w");
  const temp = gpu.upload(data.temp, [c.H, 1], "temp");
  const bias = gpu.upload(data.bias, [c.H, c.T, 1], "denom_bias");
  const y = await causalTssa(gpu, w, temp, bias, c.H, options);
  assert.deepEqual(y.shape, [c.B, c.N, D]);
  const out = (await y.read()) as Float32Array;
  for (const t of [w, temp, bias, y]) t.destroy();
  return out;
}

function shapeOf(c: Case) {
  return { batches: c.B, tokens: c.N, dim: c.H * c.d, heads: c.H, headDim: c.d };
}

function reference(c: Case, data: ReturnType<typeof inputs>): Float64Array {
  const dims = { batches: c.B, tokens: c.N, heads: c.H, headDim: c.d, blockSize: c.T };
  return causalTssaReference(data.w, { temp: data.temp, denomBias: data.bias }, dims).y;
}

Deno.test("causalTssa matches the float64 reference at awkward sizes", async () => {
  const cases: Case[] = [
    { B: 1, N: 1, H: 1, d: 1, T: 1 },
    { B: 2, N: 7, H: 4, d: 5, T: 9 },
    { B: 3, N: 63, H: 1, d: 64, T: 64 },
    { B: 2, N: 65, H: 6, d: 64, T: 80 }, // D = 384, two blocks
    { B: 1, N: 700, H: 4, d: 16, T: 700 }, // 11 blocks: a two-level scan
    { B: 1, N: 300, H: 8, d: 48, T: 512 },
    { B: 1, N: 40, H: 12, d: 5, T: 40 },
    { B: 12, N: 64, H: 4, d: 32, T: 64 }, // nanoGPT's CPU configuration
    { B: 2, N: 256, H: 6, d: 64, T: 256 }, // 6 layers × 384, ctx 256
  ];
  await withGpu(async (gpu) => {
    for (const [i, c] of cases.entries()) {
      const data = inputs(c, 20 + i);
      const want = reference(c, data);
      for (const variant of runnableVariants(gpu, CAUSAL_TSSA, shapeOf(c))) {
        const got = await runCausal(gpu, c, data, { variant });
        assertClose(got, want, { atol: 1e-6, rtol: 1e-5 }, `${variant} ${JSON.stringify(c)}`);
      }
    }
  });
});

Deno.test("causalTssa at 100 000 tokens matches the float64 reference", async () => {
  // Values in [0.5, 1.5): the running sums grow to ~1e5 times each term, the
  // regime where a sequential f32 cumsum would lose digits.
  const c: Case = { B: 1, N: 100_000, H: 4, d: 5, T: 100_000, lo: 0.5 };
  await withGpu(async (gpu) => {
    const data = inputs(c, 3);
    const got = await runCausal(gpu, c, data);
    assertClose(got, reference(c, data), { atol: 1e-7, rtol: 1e-5 }, "N=100000");
    await assert.rejects(
      () => runCausal(gpu, c, data, { variant: "serial" }),
      /serial takes at most 60000 loop iterations per invocation/,
    );
  });
});

Deno.test("causalTssa serial at 50 000 tokens (near its loop budget) matches the float64 reference", async () => {
  // Running sums ~5e4 times each term: the carry + 64-token run keeps them accurate.
  const c: Case = { B: 2, N: 50_000, H: 2, d: 3, T: 50_000, lo: 0.5 };
  await withGpu(async (gpu) => {
    const data = inputs(c, 4);
    const got = await runCausal(gpu, c, data, { variant: "serial" });
    assertClose(got, reference(c, data), { atol: 1e-7, rtol: 1e-5 }, "serial N=50000");
  });
});

Deno.test("causalTssa in binding-sized pieces equals the one-piece result", async () => {
  // 2 × 1000 tokens × 20 features; 6 KiB bindings hold one 64-token block (5 KiB).
  const c: Case = { B: 2, N: 1000, H: 4, d: 5, T: 1000 };
  await withGpu(async (gpu) => {
    const data = inputs(c, 5);
    const whole = await runCausal(gpu, c, data, { variant: "blocks" });
    const pieces = await runCausal(gpu, c, data, { maxBindingBytes: 6 * 1024, variant: "blocks" });
    assert.deepEqual(pieces, whole);
    const want = reference(c, data);
    assertClose(pieces, want, { atol: 1e-6, rtol: 1e-5 });
    await assert.rejects(
      () => runCausal(gpu, c, data, { maxBindingBytes: 4096, variant: "blocks" }),
      RangeError,
    );
    // The serial design binds whole batch elements (80 KB each here): one per piece.
    const serial = await runCausal(gpu, c, data, { variant: "serial" });
    const serialPieces = await runCausal(gpu, c, data, {
      maxBindingBytes: 100 * 1024,
      variant: "serial",
    });
    assert.deepEqual(serialPieces, serial);
    assertClose(serial, want, { atol: 1e-6, rtol: 1e-5 });
    await assert.rejects(
      () => runCausal(gpu, c, data, { maxBindingBytes: 6 * 1024, variant: "serial" }),
      /does not fit/,
    );
  });
});

Deno.test("causalTssa with grids folded over x, y and z equals the unfolded result", async () => {
  // 79 blocks: every kernel, scan_add included, runs on a folded 3-D grid.
  const c: Case = { B: 1, N: 5000, H: 4, d: 5, T: 5000 };
  await withGpu(async (gpu) => {
    const data = inputs(c, 7);
    const whole = await runCausal(gpu, c, data, { variant: "blocks" });
    const folded = await runCausal(gpu, c, data, { foldWorkgroupsAt: 5, variant: "blocks" });
    assert.deepEqual(folded, whole);
    // The serial design: 20 columns and 5000 tokens in workgroups of 64, folded at 5.
    const serial = await runCausal(gpu, c, data, { variant: "serial" });
    const serialFolded = await runCausal(gpu, c, data, { foldWorkgroupsAt: 5, variant: "serial" });
    assert.deepEqual(serialFolded, serial);
  });
});

Deno.test("causalTssa rejects too many tokens and wrong shapes", async () => {
  await withGpu(async (gpu) => {
    const w = gpu.upload(new Float32Array(2 * 5 * 8), [2, 5, 8]);
    const temp = gpu.upload(new Float32Array(2), [2, 1]);
    const short = gpu.upload(new Float32Array(2 * 4), [2, 4, 1]);
    await assert.rejects(() => causalTssa(gpu, w, temp, short, 2), RangeError);
    const bias = gpu.upload(new Float32Array(2 * 8), [2, 8, 1]);
    await assert.rejects(() => causalTssa(gpu, w, temp, bias, 4), TypeError);
    const odd = gpu.upload(new Float32Array(15), [3, 5]);
    await assert.rejects(() => causalTssa(gpu, w, temp, odd, 2), TypeError);
    await assert.rejects(
      () => causalTssa(gpu, w, temp, bias, 2, { variant: "nope" }),
      /variant nope is unknown/,
    );
  });
  assert.throws(
    () =>
      causalTssaReference(new Float64Array(3), { temp: [1], denomBias: [0, 0] }, {
        batches: 1,
        tokens: 3,
        heads: 1,
        headDim: 1,
        blockSize: 2,
      }),
    RangeError,
  );
});

Deno.test("causalTssa with saves: the same output, and the reference's Pi", async () => {
  const c: Case = { B: 2, N: 150, H: 3, d: 5, T: 160 };
  const data = inputs(c, 77);
  const D = c.H * c.d;
  const dims = { batches: c.B, tokens: c.N, heads: c.H, headDim: c.d, blockSize: c.T };
  const ref = causalTssaReference(data.w, { temp: data.temp, denomBias: data.bias }, dims);
  await withGpu(async (gpu) => {
    const w = gpu.upload(data.w, [c.B, c.N, D]);
    const temp = gpu.upload(data.temp, [c.H, 1]);
    const bias = gpu.upload(data.bias, [c.H, c.T, 1]);
    for (const variant of CAUSAL_TSSA_VARIANTS) {
      const plain = await causalTssa(gpu, w, temp, bias, c.H, { variant });
      const { y, saves } = await causalTssa(gpu, w, temp, bias, c.H, { saves: true, variant });
      assert.deepEqual([...(await y.read())], [...(await plain.read())], "bit-identical y");
      assertClose(await saves.pi.read(), ref.pi, { atol: 1e-6, rtol: 1e-5 }, `${variant} pi`);
      for (const t of [plain, y, saves.pi]) t.destroy();
    }
    for (const t of [w, temp, bias]) t.destroy();
  });
});
