/**
 * GPU `linear` against its plain-TypeScript reference (the baseline) at a few
 * sizes. Every GPU iteration waits for completion (`gpu.sync()`), so each
 * sample includes one submit-and-wait (~10 ms on any device): compare the
 * larger sizes, where that latency is small against the work.
 *
 *     deno bench -A src/bench/linear_bench.ts
 *
 * @module
 */

import { Gpu } from "../gpu/runtime.ts";
import { linear, linearReference } from "../ops/linear.ts";
import { assertWithin, randomFill } from "./_data.ts";

const gpu = await Gpu.create();
globalThis.addEventListener("unload", () => gpu.destroy());

/** [rows M, in K, out N]: a square matmul, and a ToST-S qkv projection of 1024 tokens. */
const SIZES: [number, number, number][] = [[128, 128, 128], [512, 512, 512], [1024, 384, 1152]];

for (const [M, K, N] of SIZES) {
  const xd = randomFill(M * K, 1, 1);
  const wd = randomFill(N * K, 2, 1);
  const bd = randomFill(N, 3, 1);
  const x = gpu.upload(xd, [M, K], "x");
  const w = gpu.upload(wd, [N, K], "w");
  const b = gpu.upload(bd, [N], "b");
  const y = gpu.empty([M, N], "f32", "y");
  // Validate before timing.
  await linear(gpu, x, w, b, y);
  assertWithin("linear", await y.read(), linearReference(xd, wd, bd, M, K, N), 1e-4, 1e-4);

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
  Deno.bench({
    name: `gpu linear (${gpu.info.name})`,
    group,
    n,
    warmup: 1,
    fn: async () => {
      await linear(gpu, x, w, b, y);
      await gpu.sync();
    },
  });
}
