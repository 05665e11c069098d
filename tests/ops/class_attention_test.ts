import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/runtime.ts";
import {
  CLASS_ATTENTION,
  CLASS_ATTENTION_VARIANTS,
  classAttention,
} from "../../src/ops/class_attention.ts";
import { runnableVariants } from "./_variants.ts";
import { attentionReference } from "../../src/ops/attention_reference.ts";
import { flashAttention } from "../../src/ops/flash_attention.ts";
import type { ChunkOptions } from "../../src/ops/_shapes.ts";
import { assertClose, randomArray, withGpu } from "../_util.ts";

const TOL = { atol: 2e-5, rtol: 1e-4 };

/** Run class attention on `qkv [B, N, 3·H·d]` and read the result. */
async function cls(
  gpu: Gpu,
  x: Float32Array<ArrayBuffer>,
  [B, N, H, d]: readonly number[],
  options: ChunkOptions & { variant?: string } = {},
): Promise<Float32Array> {
  const qkv = gpu.upload(x, [B, N, 3 * H * d], "qkv");
  const y = await classAttention(gpu, qkv, H, options);
  assert.deepEqual(y.shape, [B, 1, H * d]);
  const out = (await y.read()) as Float32Array;
  qkv.destroy();
  y.destroy();
  return out;
}

/** The float64 reference of class attention. */
function classAttentionReference(x: ArrayLike<number>, B: number, N: number, H: number, d: number) {
  return attentionReference(x, B, N, H, d, { classToken: true });
}

Deno.test("class attention's reference is row 0 of full attention", () => {
  const [B, N, H, d] = [2, 9, 3, 5];
  const x = randomArray(B * N * 3 * H * d, 5);
  const full = attentionReference(x, B, N, H, d);
  const c = classAttentionReference(x, B, N, H, d);
  const C = H * d;
  for (let b = 0; b < B; b++) {
    assertClose(c.subarray(b * C, (b + 1) * C), full.subarray(b * N * C, b * N * C + C), {
      atol: 1e-14,
      rtol: 1e-12,
    });
  }
  assert.throws(() => classAttentionReference(new Float64Array(0), 1, 0, 1, 1), TypeError);
  const causal = { classToken: true, causal: true };
  assert.throws(() => attentionReference(x, B, N, H, d, causal), /not causal/);
});

Deno.test("classAttention matches the float64 reference at awkward sizes", async () => {
  await withGpu(async (gpu) => {
    // The last: 58 692 loop iterations per invocation, just under the serial budget.
    const cases = [[1, 1, 1, 5], [3, 7, 6, 16], [2, 63, 1, 64], [2, 700, 6, 5], [1, 130, 2, 128], [
      1,
      900,
      2,
      128,
    ]];
    for (const [seed, [B, N, H, d]] of cases.entries()) {
      const x = randomArray(B * N * 3 * H * d, seed + 1);
      const want = classAttentionReference(x, B, N, H, d);
      for (const variant of runnableVariants(gpu, CLASS_ATTENTION, { B, N, H, d })) {
        const got = await cls(gpu, x, [B, N, H, d], { variant });
        assertClose(got, want, TOL, `${variant} B=${B} N=${N} H=${H} d=${d}`);
      }
    }
  });
});

Deno.test("classAttention agrees with token 0 of flashAttention", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [2, 257, 4, 12];
    const qkv = gpu.upload(randomArray(B * N * 3 * H * d, 31), [B, N, 3 * H * d]);
    const c = await (await classAttention(gpu, qkv, H)).read();
    const f = await (await flashAttention(gpu, qkv, H)).read();
    const C = H * d;
    for (let b = 0; b < B; b++) {
      assertClose(c.subarray(b * C, (b + 1) * C), f.subarray(b * N * C, b * N * C + C), {
        atol: 1e-6,
        rtol: 1e-5,
      });
    }
  });
});

Deno.test("classAttention stays finite and accurate for large scores", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [2, 300, 2, 16]; // scores up to ~±200
    const x = randomArray(B * N * 3 * H * d, 8, -7, 7);
    for (const variant of CLASS_ATTENTION_VARIANTS) {
      const got = await cls(gpu, x, [B, N, H, d], { variant });
      assertClose(got, classAttentionReference(x, B, N, H, d), { atol: 1e-4, rtol: 1e-4 }, variant);
    }
  });
});

Deno.test("classAttention splits keys over several bindings, carrying the softmax state", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [3, 500, 2, 20];
    const x = randomArray(B * N * 3 * H * d, 9);
    const maxBindingBytes = 70 * 3 * H * d * 4; // 8 key ranges per batch
    const want = classAttentionReference(x, B, N, H, d);
    for (const variant of CLASS_ATTENTION_VARIANTS) {
      const got = await cls(gpu, x, [B, N, H, d], { maxBindingBytes, variant });
      assertClose(got, want, TOL, variant);
      // and whole batches per binding
      const limit = 2 * N * 3 * H * d * 4 + 64;
      const two = await cls(gpu, x, [B, N, H, d], { maxBindingBytes: limit, variant });
      assertClose(two, want, TOL, variant);
    }
  });
});

Deno.test("classAttention covers grids of more than 65535 workgroups", async () => {
  await withGpu(async (gpu) => {
    const [B, N, H, d] = [16_500, 3, 4, 2]; // 66000 (batch, head) workgroups
    const x = randomArray(B * N * 3 * H * d, 10);
    const got = await cls(gpu, x, [B, N, H, d], { variant: "workgroup" });
    assertClose(got, classAttentionReference(x, B, N, H, d), TOL);
    // The serial design: 8 pairs per workgroup, so 528 000 pairs for 66 000 workgroups.
    const [Bs, Ns, Hs, ds] = [132_000, 1, 4, 1];
    const xs = randomArray(Bs * Ns * 3 * Hs * ds, 11);
    const serial = await cls(gpu, xs, [Bs, Ns, Hs, ds], { variant: "serial" });
    assertClose(serial, classAttentionReference(xs, Bs, Ns, Hs, ds), TOL);
  });
});

Deno.test("classAttention rejects malformed inputs", async () => {
  await withGpu(async (gpu) => {
    const qkv = gpu.upload(new Float32Array(2 * 3 * 12), [2, 3, 12]);
    await assert.rejects(classAttention(gpu, qkv, 3), TypeError);
    await assert.rejects(classAttention(gpu, gpu.empty([2, 0, 12], "f32"), 1), TypeError);
    await assert.rejects(classAttention(gpu, gpu.empty([1, 2, 3 * 132], "f32"), 1), RangeError);
    await assert.rejects(
      classAttention(gpu, qkv, 1, { variant: "nope" }),
      /variant nope is unknown/,
    );
    // 2000 keys of 128 values: over the serial design's loop budget.
    const long = gpu.empty([1, 2000, 3 * 128], "f32");
    await assert.rejects(
      classAttention(gpu, long, 1, { variant: "serial" }),
      /serial takes at most 60000 loop iterations/,
    );
  });
});
