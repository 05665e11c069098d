import assert from "node:assert/strict";
import {
  gemm,
  GEMM_VARIANTS,
  type GemmEpilogue,
  type GemmKind,
  type GemmOperand,
  type GemmOptions,
  gemmVariant,
  releaseGemmTextures,
} from "../../src/ops/gemm.ts";
import { linearForwardReference } from "../../src/ops/linear_reference.ts";
import { erfc } from "../../src/ops/gelu_reference.ts";
import type { Gpu, HostArray } from "../../src/gpu/runtime.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

// f32 sums of up to 700 products of values in [-1, 1] against float64.
const TOL = { atol: 3e-5, rtol: 1e-5 };
const KINDS: GemmKind[] = ["nt", "nn", "tn"];

/**
 * Awkward sizes [m, n, k]: 1, 3, 7, 63, 65, 700 in every position, k not a
 * multiple of 4; and n a multiple of 4 (the register-block kernels then
 * store 4 outputs at a time) with partial blocks and workgroups of 8 to 64.
 */
const SIZES: [number, number, number][] = [
  [1, 1, 1],
  [1, 7, 3],
  [3, 1, 7],
  [7, 3, 65],
  [63, 65, 7],
  [65, 63, 63],
  [700, 7, 63],
  [7, 700, 3],
  [3, 63, 700],
  [9, 4, 5],
  [13, 68, 33],
  [130, 200, 64],
  [70, 1032, 9],
];

function exactGelu(v: number): number {
  const tail = 0.5 * erfc(Math.abs(v) / Math.SQRT2);
  return v >= 0 ? v * (1 - tail) : v * tail;
}

/** Host operands of a `kind` product and their float64 product `[m, n]`. */
function problem(kind: GemmKind, m: number, n: number, k: number, seed: number) {
  const ha = randomArray(m * k, seed);
  const hb = randomArray(n * k, seed + 1);
  const aDepth = kind[0] === "n";
  const bDepth = kind[1] === "t";
  // The reference takes rows × k row-major operands: transpose the "rows" layouts.
  const depthMajor = (d: Float32Array, rows: number, depth: boolean) => {
    if (depth) return d;
    const out = new Float32Array(rows * k);
    for (let r = 0; r < k; r++) for (let i = 0; i < rows; i++) out[i * k + r] = d[r * rows + i];
    return out;
  };
  const ref = linearForwardReference(depthMajor(ha, m, aDepth), depthMajor(hb, n, bDepth), null, {
    rows: m,
    inFeatures: k,
    outFeatures: n,
  });
  return { ha, hb, ref, aDepth, bDepth };
}

function upload(
  gpu: Gpu,
  m: number,
  n: number,
  k: number,
  p: ReturnType<typeof problem>,
) {
  const a: GemmOperand = {
    tensor: gpu.upload(p.ha, [m * k], "a"),
    layout: p.aDepth ? "depth" : "rows",
    ld: p.aDepth ? k : m,
  };
  const b: GemmOperand = {
    tensor: gpu.upload(p.hb, [n * k], "b"),
    layout: p.bDepth ? "depth" : "rows",
    ld: p.bDepth ? k : n,
  };
  return { a, b };
}

Deno.test("every GEMM variant matches the float64 reference for every layout at awkward sizes, bit-identically", async () => {
  await withGpu(async (gpu) => {
    for (const kind of KINDS) {
      for (const [m, n, k] of SIZES) {
        const p = problem(kind, m, n, k, m * 7 + n * 3 + k);
        const { a, b } = upload(gpu, m, n, k, p);
        const outs = [];
        for (const v of GEMM_VARIANTS.values()) {
          const c = gpu.empty([m, n]);
          await gemm(gpu, { a, b, c, m, n, k }, v);
          outs.push(c);
        }
        const got = await Promise.all(outs.map((c) => c.read()));
        const names = [...GEMM_VARIANTS.keys()];
        got.forEach((g, i) => {
          const what = `${names[i]} ${kind} ${m}×${n}×${k}`;
          assertClose(g, p.ref, TOL, what);
          // Every variant sums in the same order: tuning never changes a bit.
          assert.deepEqual(g, got[0], `${what} differs from ${names[0]}`);
        });
        for (const t of [a.tensor, b.tensor, ...outs]) t.destroy();
      }
    }
  });
});

/** Run one epilogue with every family and compare with `expect(v, i, j, cOld)`. */
async function checkEpilogue(
  gpu: Gpu,
  [m, n, k]: [number, number, number],
  epilogue: (t: { bias: HostArray; gamma: HostArray }) => {
    e: (g: Gpu) => GemmEpilogue;
    c0: Float32Array<ArrayBuffer> | null;
    expect: (v: number, i: number, j: number, old: number) => number;
    aux?: boolean;
  },
  what: string,
): Promise<void> {
  const p = problem("nt", m, n, k, 11);
  const bias = randomArray(n, 12);
  const gamma = randomArray(n, 13);
  const spec = epilogue({ bias, gamma });
  let first: HostArray | undefined;
  for (const name of ["texture-16x16", "tile-64x64", "simple-4x4"]) {
    const { a, b } = upload(gpu, m, n, k, p);
    const c = spec.c0 ? gpu.upload(spec.c0, [m, n]) : gpu.empty([m, n]);
    const e = spec.e(gpu);
    await gemm(gpu, { a, b, c, m, n, k, epilogue: e }, gemmVariant(name));
    const want = new Float64Array(m * n);
    const wantAux = new Float64Array(m * n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        const at = i * n + j;
        const old = spec.c0 ? spec.c0[at] : 0;
        want[at] = spec.expect(p.ref[at], i, j, old);
        wantAux[at] = p.ref[at] + (e.bias ? bias[j] : 0) + (e.accumulate ? old : 0);
      }
    }
    const got = await c.read();
    assertClose(got, want, TOL, `${what} (${name})`);
    // Every family gives the same bits, whichever way it stores.
    first ??= got;
    assert.deepEqual(got, first, `${what} (${name}) differs from texture-16x16`);
    if (e.aux) assertClose(await e.aux.read(), wantAux, TOL, `${what} aux (${name})`);
  }
}

Deno.test("GEMM epilogues: bias, accumulate, GELU with the pre-activation, residual with and without gamma", async () => {
  await withGpu(async (gpu) => {
    // n = 44: the register-block kernels store 4 outputs at a time.
    for (const n of [45, 44]) await checkEpilogues(gpu, [37, n, 23]);
  });
});

async function checkEpilogues(gpu: Gpu, size: [number, number, number]): Promise<void> {
  const [m, n] = size;
  const c0 = randomArray(m * n, 14);
  await checkEpilogue(gpu, size, ({ bias }) => ({
    e: (g) => ({ bias: g.upload(bias, [n]) }),
    c0: null,
    expect: (v, _i, j) => v + bias[j],
  }), "bias");
  await checkEpilogue(gpu, size, () => ({
    e: () => ({ accumulate: true }),
    c0,
    expect: (v, _i, _j, old) => v + old,
  }), "accumulate");
  await checkEpilogue(gpu, size, ({ bias }) => ({
    e: (g) => ({ bias: g.upload(bias, [n]), gelu: true, aux: g.empty([m, n]) }),
    c0: null,
    expect: (v, _i, j) => exactGelu(v + bias[j]),
  }), "bias + gelu + pre-activation");
  await checkEpilogue(gpu, size, ({ bias, gamma }) => ({
    e: (g) => ({ bias: g.upload(bias, [n]), residual: true, gamma: g.upload(gamma, [n]) }),
    c0,
    expect: (v, _i, j, old) => old + gamma[j] * (v + bias[j]),
  }), "residual with gamma");
  await checkEpilogue(gpu, size, () => ({
    e: (g) => ({ residual: true, aux: g.empty([m, n]) }),
    c0,
    expect: (v, _i, _j, old) => old + v,
  }), "residual without gamma, product kept");
  await checkEpilogue(gpu, size, ({ gamma }) => ({
    e: (g) => ({ gelu: true, residual: true, gamma: g.upload(gamma, [n]) }),
    c0,
    expect: (v, _i, j, old) => old + gamma[j] * exactGelu(v),
  }), "gelu then residual");
}

/** Check every family on one product under chunking options. */
async function checkPieces(
  gpu: Gpu,
  kind: GemmKind,
  [m, n, k]: [number, number, number],
  options: GemmOptions,
  epilogue: "plain" | "bias" | "accumulate",
): Promise<void> {
  const p = problem(kind, m, n, k, 5);
  const bias = randomArray(n, 6);
  const c0 = randomArray(m * n, 7);
  for (const name of ["texture-8x16", "tile-64x64-4x4", "simple-1x4"]) {
    const { a, b } = upload(gpu, m, n, k, p);
    const c = epilogue === "accumulate" ? gpu.upload(c0, [m, n]) : gpu.empty([m, n]);
    const e: GemmEpilogue = epilogue === "bias"
      ? { bias: gpu.upload(bias, [n]) }
      : { accumulate: epilogue === "accumulate" };
    await gemm(gpu, { a, b, c, m, n, k, epilogue: e }, gemmVariant(name), options);
    const want = p.ref.map((v, at) =>
      v + (epilogue === "bias" ? bias[at % n] : epilogue === "accumulate" ? c0[at] : 0)
    );
    assertClose(
      await c.read(),
      want,
      TOL,
      `${name} ${kind} ${m}×${n}×${k} ${JSON.stringify(options)}`,
    );
  }
}

Deno.test("GEMM pieces over small bindings: rows of C and A, rows of B, spans of the reduction", async () => {
  await withGpu(async (gpu) => {
    const small = { maxBindingBytes: 2000 };
    await checkPieces(gpu, "nt", [130, 63, 7], small, "bias"); // C and A in row pieces
    await checkPieces(gpu, "nt", [9, 70, 63], small, "bias"); // B in row pieces, C rows 280 B
    await checkPieces(gpu, "nn", [40, 33, 300], small, "plain"); // B down its columns: spans of r
    await checkPieces(gpu, "tn", [30, 20, 200], small, "accumulate"); // both: spans of r
    await checkPieces(gpu, "tn", [30, 20, 200], small, "bias"); // bias once, later spans add
    await assert.rejects(
      gemm(
        gpu,
        {
          a: { tensor: gpu.empty([600]), layout: "depth", ld: 600 },
          b: { tensor: gpu.empty([600]), layout: "depth", ld: 600 },
          c: gpu.empty([1]),
          m: 1,
          n: 1,
          k: 600,
        },
        gemmVariant("simple-1x4"),
        small,
      ),
      /does not fit a 2000-byte storage binding/,
    );
  });
});

Deno.test("GEMM texture pieces past maxTextureDimension2D, and what they cannot fuse", async () => {
  await withGpu(async (gpu) => {
    // Sides of 20 texels: at most 16 rows of A and B per texture, 76 terms of r.
    const side = { maxTextureSide: 20 };
    for (
      const [kind, [m, n, k]] of KINDS.flatMap((kind) =>
        [[40, 35, 200], [40, 36, 200]].map((s) => [kind, s] as const)
      )
    ) {
      const p = problem(kind, m, n, k, 9);
      const { a, b } = upload(gpu, m, n, k, p);
      const c = gpu.empty([m, n]);
      await gemm(gpu, { a, b, c, m, n, k }, gemmVariant("texture-8x16"), side);
      assertClose(await c.read(), p.ref, TOL, `texture pieces ${kind} ${m}×${n}×${k}`);
    }
    const { a, b } = upload(gpu, 3, 3, 200, problem("nt", 3, 3, 200, 1));
    await assert.rejects(
      gemm(
        gpu,
        {
          a,
          b,
          c: gpu.empty([3, 3]),
          m: 3,
          n: 3,
          k: 200,
          epilogue: { gelu: true },
        },
        gemmVariant("texture-8x8"),
        side,
      ),
      /split into 3 pieces .* which the GELU, aux and residual epilogues do not support/,
    );
  });
});

Deno.test("GEMM rejects bad products with clear errors", async () => {
  await withGpu(async (gpu) => {
    const a: GemmOperand = { tensor: gpu.empty([12]), layout: "depth", ld: 4 };
    const b: GemmOperand = { tensor: gpu.empty([8]), layout: "depth", ld: 4 };
    const v = gemmVariant("simple-4x4");
    await assert.rejects(
      gemm(gpu, { a, b, c: gpu.empty([5]), m: 3, n: 2, k: 4 }, v),
      /C has 5 values, the product needs 6/,
    );
    await assert.rejects(
      gemm(gpu, { a, b, c: gpu.empty([6]), m: 3, n: 2, k: 5 }, v),
      /row length 4 is too short/,
    );
    await assert.rejects(
      gemm(gpu, { a, b, c: a.tensor, m: 3, n: 2, k: 4 }, v),
      /must not be one of the inputs/,
    );
    await assert.rejects(
      gemm(gpu, { a, b, c: gpu.empty([6]), m: 3, n: 2, k: 0 }, v),
      /k = 0/,
    );
    assert.throws(() => gemmVariant("texture-99x99"), /Unknown GEMM variant "texture-99x99"/);
    await assert.rejects(
      gemm(
        gpu,
        { a, b, c: gpu.empty([6]), m: 3, n: 2, k: 4, epilogue: { gamma: gpu.empty([2]) } },
        v,
      ),
      /gamma is given without residual/,
    );
  });
});

Deno.test("GEMM operand textures are pooled, counted and released", async () => {
  await withGpu(async (gpu) => {
    const kind = "nt";
    const p = problem(kind, 20, 20, 20, 3);
    const { a, b } = upload(gpu, 20, 20, 20, p);
    const c = gpu.empty([20, 20]);
    const v = gemmVariant("texture-16x16");
    await gemm(gpu, { a, b, c, m: 20, n: 20, k: 20 }, v);
    const after = gpu.memory();
    assert.equal(after.liveTextures, 2, "one texture per operand");
    await gemm(gpu, { a, b, c, m: 20, n: 20, k: 20 }, v);
    assert.equal(gpu.memory().liveTextures, 2, "reused, not reallocated");
    assert.equal(gpu.memory().liveBytes, after.liveBytes);
    releaseGemmTextures(gpu);
    assert.equal(gpu.memory().liveTextures, 0);
    assertClose(await c.read(), p.ref, TOL, "pooled product");
  });
});

Deno.test("GEMM texture operands whose rows are whole texels 256 bytes apart are copied, not packed (both texel forms)", async () => {
  await withGpu(async (gpu) => {
    for (const kind of KINDS) {
      // k 64 and 256: depth-layout rows 256 B apart; m, n 64 and 128: rows-layout rows too.
      for (
        const [m, n, k] of [[70, 33, 64], [65, 130, 256], [64, 128, 36], [128, 64, 100]] as [
          number,
          number,
          number,
        ][]
      ) {
        for (const options of [{}, { maxBindingBytes: 4096 }, { maxTextureSide: 40 }]) {
          const p = problem(kind, m, n, k, m + n);
          const { a, b } = upload(gpu, m, n, k, p);
          const c = gpu.empty([m, n]);
          await gemm(gpu, { a, b, c, m, n, k }, gemmVariant("texture-16x16"), options);
          assertClose(
            await c.read(),
            p.ref,
            TOL,
            `${kind} ${m}×${n}×${k} ${JSON.stringify(options)}`,
          );
        }
      }
    }
  });
});
