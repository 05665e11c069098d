/**
 * GPU `linear` with each GEMM variant family against the plain-TypeScript
 * reference (the baseline) at a small preset shape and a ToST-S projection.
 * Every variant is checked against the reference before it is timed. Every
 * GPU iteration waits for completion (`gpu.sync()`), so each sample includes
 * one submit-and-wait (~10 ms on any device): `tost bench --ops linear`
 * reports GPU time (GFLOP/s) instead.
 *
 *     deno bench -A src/bench/linear_bench.ts
 *
 * @module
 */

import { Gpu } from "../gpu/runtime.ts";
import { linear } from "../ops/linear.ts";
import { linearReference } from "../ops/linear_reference.ts";
import { assertWithin, randomFill } from "./_data.ts";

const gpu = await Gpu.create();
globalThis.addEventListener("unload", () => gpu.destroy());

/** [rows M, in K, out N]: the `small` preset's c_attn, and a ToST-S qkv projection of 1024 tokens. */
const SIZES: [number, number, number][] = [[512, 64, 192], [1024, 384, 1152]];
const VARIANTS = ["texture-16x16", "tile-64x64", "simple-4x4"];

for (const [M, K, N] of SIZES) {
  const xd = randomFill(M * K, 1, 1);
  const wd = randomFill(N * K, 2, 1);
  const bd = randomFill(N, 3, 1);
  const x = gpu.upload(xd, [M, K], "x");
  const w = gpu.upload(wd, [N, K], "w");
  const b = gpu.upload(bd, [N], "b");
  const y = gpu.empty([M, N], "f32", "y");
  const ref = linearReference(xd, wd, bd, M, K, N);
  const group = `linear ${M}×${K}→${N} (${((2 * M * K * N) / 1e9).toFixed(3)} GFLOP)`;
  const n = M * K * N > 1e8 ? 5 : 50;
  Deno.bench({
    name: "reference (TypeScript, float64 accumulation)",
    group,
    baseline: true,
    n,
    warmup: 1,
    fn: () => {
      linearReference(xd, wd, bd, M, K, N);
    },
  });
  for (const variant of VARIANTS) {
    // Validate before timing.
    await linear(gpu, x, w, b, y, { variant });
    assertWithin(`linear ${variant}`, await y.read(), ref, 1e-4, 1e-4);
    Deno.bench({
      name: `gpu linear, ${variant} (${gpu.info.name})`,
      group,
      n,
      warmup: 1,
      fn: async () => {
        await linear(gpu, x, w, b, y, { variant });
        await gpu.sync();
      },
    });
  }
}
