// The one scan (src/ops/_scan.ts, kernels/scan_block.wgsl and scan_add.wgsl)
// and the block sums, against plain loops at awkward sizes, both directions.
import assert from "node:assert/strict";
import { blockScan, blockSums, SCAN_ROWS, scanRows, serialScan } from "../../src/ops/_scan.ts";
import { blockLayout, blockPieces } from "../../src/ops/_tssa_blocks.ts";
import type { Tensor } from "../../src/gpu/runtime.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

/** Exclusive prefix sums (forward) or inclusive suffix sums (reverse) of [B, L, C], in float64. */
function scanReference(x: ArrayLike<number>, B: number, L: number, C: number, reverse: boolean) {
  const out = new Float64Array(B * L * C);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      let run = 0;
      for (let j = 0; j < L; j++) {
        const l = reverse ? L - 1 - j : j;
        const i = (b * L + l) * C + c;
        if (reverse) run += x[i];
        out[i] = run;
        if (!reverse) run += x[i];
      }
    }
  }
  return out;
}

const SIZES = [[1, 1, 1], [2, 7, 3], [3, 63, 70], [1, 64, 65], [1, 700, 5], [2, 4200, 2]];

Deno.test("scanRows: prefix and suffix sums at awkward sizes", async () => {
  await withGpu(async (gpu) => {
    for (const [B, L, C] of SIZES) {
      for (const reverse of [false, true]) {
        const x = randomArray(B * L * C, L + C);
        const t = gpu.upload(x, [B, L, C]);
        const scratch: Tensor[] = [];
        await scanRows(gpu, t, { batches: B, rows: L, cols: C }, { reverse }, scratch);
        assertClose(
          await t.read(),
          scanReference(x, B, L, C, reverse),
          { atol: 1e-4, rtol: 1e-5 },
          `${reverse ? "suffix" : "prefix"} [${B}, ${L}, ${C}]`,
        );
        for (const s of [...scratch, t]) s.destroy();
      }
    }
  });
});

Deno.test("serialScan: the whole scan in one dispatch, zero carries, at awkward sizes", async () => {
  await withGpu(async (gpu) => {
    for (const [B, L, C] of [...SIZES, [40, 65, 3]]) {
      for (const reverse of [false, true]) {
        const x = randomArray(B * L * C, L + C);
        const t = gpu.upload(x, [B, L, C]);
        const scratch: Tensor[] = [];
        const dims = { batches: B, rows: L, cols: C };
        // Folded at 2 workgroups per dimension: 120 columns need 2 of 64 invocations.
        const carries = await serialScan(
          gpu,
          t,
          dims,
          { reverse },
          { foldWorkgroupsAt: 2 },
          scratch,
        );
        assert.deepEqual(carries.shape, [B, Math.ceil(L / SCAN_ROWS), C]);
        assert.ok((await carries.read()).every((v) => v === 0));
        assertClose(
          await t.read(),
          scanReference(x, B, L, C, reverse),
          { atol: 1e-4, rtol: 1e-5 },
          `serial ${reverse ? "suffix" : "prefix"} [${B}, ${L}, ${C}]`,
        );
        for (const s of [...scratch, t]) s.destroy();
      }
    }
  });
});

Deno.test("serialScan is exact on integers over 4500 rows, both directions", async () => {
  const B = 2, L = 4500, C = 3;
  const x = new Float32Array(B * L * C);
  for (let i = 0; i < x.length; i++) x[i] = (i * 7919) % 13;
  await withGpu(async (gpu) => {
    for (const reverse of [false, true]) {
      const t = gpu.upload(x, [B, L, C]);
      const scratch: Tensor[] = [];
      await serialScan(gpu, t, { batches: B, rows: L, cols: C }, { reverse }, {}, scratch);
      assert.deepEqual([...await t.read()], [...scanReference(x, B, L, C, reverse)]);
      for (const s of [...scratch, t]) s.destroy();
    }
  });
});

Deno.test("scanRows: a three-level scan is exact on integers, both directions", async () => {
  // 2 batches × 4500 rows × 3 columns: three levels (4500 → 71 → 2 rows) and a
  // batch boundary; small integers keep every sum exact in f32.
  const B = 2, L = 4500, C = 3;
  const x = new Float32Array(B * L * C);
  for (let i = 0; i < x.length; i++) x[i] = (i * 7919) % 13;
  await withGpu(async (gpu) => {
    for (const reverse of [false, true]) {
      const t = gpu.upload(x, [B, L, C]);
      const scratch: Tensor[] = [];
      await scanRows(gpu, t, { batches: B, rows: L, cols: C }, { reverse }, scratch, {
        foldWorkgroupsAt: 7,
      });
      assert.deepEqual([...await t.read()], [...scanReference(x, B, L, C, reverse)]);
      for (const s of [...scratch, t]) s.destroy();
    }
  });
});

Deno.test("blockScan: block-local scans plus carries, over several binding pieces", async () => {
  await withGpu(async (gpu) => {
    for (const [B, L, C] of [[1, 1, 1], [2, 7, 3], [3, 130, 70], [2, 700, 5]]) {
      const x = randomArray(B * L * C, 3 * L + C);
      const layout = blockLayout(B, L, C, SCAN_ROWS);
      // A binding limit of about two blocks: many pieces, each bound from an
      // aligned offset (elem_base, row_base in the kernel).
      const options = { maxBindingBytes: 2 * SCAN_ROWS * C * 4 + 256, foldWorkgroupsAt: 3 };
      const pieces = blockPieces(gpu, "test", layout, options);
      if (layout.blocks > 2) assert.ok(pieces.length > 1, "several pieces");
      const NB = layout.blocksPerBatch;
      for (const reverse of [false, true]) {
        const t = gpu.upload(x, [B, L, C]);
        const scratch: Tensor[] = [];
        const carries = await blockScan(gpu, t, { layout, pieces }, { reverse }, options, scratch);
        assert.deepEqual(carries.shape, [B, NB, C]);
        const local = await t.read();
        const carry = await carries.read();
        const full = local.map((v, i) => {
          const row = Math.floor(i / C);
          const b = Math.floor(row / L);
          const k = Math.floor((row % L) / SCAN_ROWS) + (reverse ? 1 : 0);
          return k < NB ? v + carry[(b * NB + k) * C + (i % C)] : v;
        });
        assertClose(
          full,
          scanReference(x, B, L, C, reverse),
          { atol: 1e-4, rtol: 1e-5 },
          `${reverse ? "suffix" : "prefix"} [${B}, ${L}, ${C}]`,
        );
        for (const s of [...scratch, t]) s.destroy();
      }
    }
  });
});

Deno.test("blockScan refuses blocks that are not 64 rows", async () => {
  await withGpu(async (gpu) => {
    const t = gpu.empty([1, 10, 2]);
    const layout = blockLayout(1, 10, 2, 32);
    const pieces = blockPieces(gpu, "test", layout);
    await assert.rejects(
      () => blockScan(gpu, t, { layout, pieces }, { reverse: false }, {}, []),
      /blocks must hold 64 rows, got 32/,
    );
  });
});

Deno.test("blockSums over 66 000 workgroups (a real folded grid)", async () => {
  // One-row blocks of 64 columns: 66 000 workgroups of the barrier-free kernel.
  const rows = 66_000, cols = 64;
  const x = randomArray(rows * cols, 11);
  await withGpu(async (gpu) => {
    const t = gpu.upload(x, [1, rows, cols]);
    const layout = blockLayout(1, rows, cols, 1);
    const pieces = blockPieces(gpu, "test", layout);
    const scratch: Tensor[] = [];
    const sums = await blockSums(gpu, t, layout, pieces, true, scratch);
    assert.deepEqual(sums.shape, [1, rows, cols]);
    const got = await sums.read();
    assertClose(got, x.map((v) => v * v), { atol: 0, rtol: 1e-6 });
    for (const s of scratch) s.destroy();
  });
});
