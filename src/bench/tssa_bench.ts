/**
 * The two TSSA operators on the GPU against their float64 CPU references
 * (the baseline of each group), at D = 384 and 8 heads as in the DESIGN
 * anchors. Each GPU variant is validated against the reference before it is
 * timed, and every timed call waits until the GPU has finished.
 *
 *     deno bench -A src/bench/tssa_bench.ts
 *
 * @module
 */

import { Gpu } from "../gpu/runtime.ts";
import type { Tensor } from "../gpu/runtime.ts";
import { tssa } from "../ops/tssa.ts";
import { tssaReference } from "../ops/tssa_reference.ts";
import { causalTssa } from "../ops/causal_tssa.ts";
import { causalTssaReference } from "../ops/causal_tssa_reference.ts";
import { assertWithin, randomFill } from "./_data.ts";

const HEADS = 8;
const DIM = 384;
const d = DIM / HEADS;

const gpu = await Gpu.create();
globalThis.addEventListener("unload", () => gpu.destroy());

/** Throw unless the GPU result is within `1e-5 + 1e-4·|ref|` of the reference. */
function validate(what: string, got: ArrayLike<number>, ref: ArrayLike<number>): void {
  assertWithin(what, got, ref, 1e-5, 1e-4);
}

async function timedOp(op: () => Promise<Tensor>): Promise<void> {
  const y = await op();
  // Reading back (4 bytes) waits until the GPU has finished writing y.
  await gpu.read(y, 0, 4);
  y.destroy();
}

for (const N of [1024, 4096]) {
  const x = randomFill(N * DIM, N, 1);
  const temp = randomFill(HEADS, 1, 0.5).map((v) => 1 + v);
  const bias = randomFill(HEADS * N, 2, 0.1);
  const dims = { batches: 1, tokens: N, heads: HEADS, headDim: d };
  const w = gpu.upload(x, [1, N, DIM], "w");
  const tempT = gpu.upload(temp, [HEADS], "temp");
  const biasT = gpu.upload(bias, [HEADS, N], "denom_bias");
  const cases = [
    {
      name: "tssa",
      gpu: () => tssa(gpu, w, tempT, HEADS),
      cpu: () => tssaReference(x, temp, dims).y,
    },
    {
      name: "causal tssa",
      gpu: () => causalTssa(gpu, w, tempT, biasT, HEADS),
      cpu: () => causalTssaReference(x, { temp, denomBias: bias }, { ...dims, blockSize: N }).y,
    },
  ];
  for (const c of cases) {
    const group = `${c.name} N=${N} D=${DIM} H=${HEADS}`;
    const y = await c.gpu();
    validate(group, await y.read(), c.cpu());
    y.destroy();
    // Fixed iteration counts keep the run short on software WebGPU.
    Deno.bench({
      name: `cpu reference, ${group}`,
      group,
      baseline: true,
      n: 10,
      warmup: 1,
      fn: () => void c.cpu(),
    });
    Deno.bench({
      name: `gpu, ${group}`,
      group,
      n: 20,
      warmup: 2,
      // deno bench awaits only functions declared async, not ones returning a promise.
      async fn() {
        await timedOp(c.gpu);
      },
    });
  }
}
