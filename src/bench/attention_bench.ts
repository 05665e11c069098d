/**
 * Softmax attention, standard (scores materialised) against flash (tiled
 * online softmax) and class attention, each against its float64 CPU
 * reference as the baseline. Every GPU variant is validated against the
 * reference before any case is timed, and every timed call waits for the GPU
 * to finish.
 *
 *     deno bench -A src/bench/attention_bench.ts
 *
 * @module
 */

import { Gpu } from "../gpu/runtime.ts";
import type { Tensor } from "../gpu/runtime.ts";
import { softmaxAttention } from "../ops/attention.ts";
import { attentionReference } from "../ops/attention_reference.ts";
import type { AttentionOptions } from "../ops/attention.ts";
import { flashAttention } from "../ops/flash_attention.ts";
import { classAttention } from "../ops/class_attention.ts";
import { assertWithin, randomFill } from "./_data.ts";

const HEADS = 8;
const WIDTH = 384; // C, as ViT-S and the DESIGN anchors
const d = WIDTH / HEADS;

const gpu = await Gpu.create();
globalThis.addEventListener("unload", () => gpu.destroy());

/** Throw unless the GPU result is within `5e-5 + 1e-4·|ref|` of the reference. */
function validate(what: string, got: ArrayLike<number>, ref: ArrayLike<number>): void {
  assertWithin(what, got, ref, 5e-5, 1e-4);
}

async function timedOp(op: () => Promise<Tensor>): Promise<void> {
  const y = await op();
  await gpu.sync(); // the GPU has finished
  y.destroy();
}

for (const N of [64, 256]) {
  const x = randomFill(N * 3 * WIDTH, N, 1);
  const qkv = gpu.upload(x, [1, N, 3 * WIDTH], "qkv");
  for (const causal of [false, true]) {
    const options: AttentionOptions = { causal };
    const ref = attentionReference(x, 1, N, HEADS, d, options);
    const ops = {
      softmax: () => softmaxAttention(gpu, qkv, HEADS, options),
      "flash-softmax": () => flashAttention(gpu, qkv, HEADS, options),
    };
    const group = `attention N=${N}${causal ? " causal" : ""}`;
    Deno.bench({
      name: `cpu reference, ${group}`,
      group,
      baseline: true,
      fn: () => {
        attentionReference(x, 1, N, HEADS, d, options);
      },
    });
    for (const [name, op] of Object.entries(ops)) {
      const y = await op();
      validate(`${name}, ${group}`, await y.read(), ref);
      y.destroy();
      // An async function, so that Deno.bench awaits it.
      Deno.bench({
        name: `${name}, ${group}`,
        group,
        fn: async () => await timedOp(op),
      });
    }
  }
}

{
  const N = 1024;
  const x = randomFill(N * 3 * WIDTH, 7, 1);
  const qkv = gpu.upload(x, [1, N, 3 * WIDTH], "qkv");
  const group = `class attention N=${N}`;
  const y = await classAttention(gpu, qkv, HEADS);
  validate(group, await y.read(), attentionReference(x, 1, N, HEADS, d, { classToken: true }));
  y.destroy();
  Deno.bench({
    name: `cpu reference, ${group}`,
    group,
    baseline: true,
    fn: () => {
      attentionReference(x, 1, N, HEADS, d, { classToken: true });
    },
  });
  Deno.bench({
    name: `class attention, ${group}`,
    group,
    fn: async () => await timedOp(() => classAttention(gpu, qkv, HEADS)),
  });
}
