import assert from "node:assert/strict";
import {
  softmaxSelfAttention,
  softmaxSelfAttentionBackward,
} from "../../src/nn/softmax_self_attention.ts";
import {
  softmaxSelfAttentionBackwardReference,
  softmaxSelfAttentionReference,
} from "../../src/nn/softmax_self_attention_reference.ts";
import { createKvCache } from "../../src/ops/kv_cache_attention.ts";
import { assertCloseScaled, randomArray, withGpu } from "../_util.ts";
import { numericGradient } from "../ops/_gradcheck.ts";

const [B, N, H, d] = [2, 9, 3, 4];
const C = H * d;
const dims = { batches: B, tokens: N, heads: H, headDim: d };
const host = {
  inWeight: randomArray(3 * C * C, 1),
  inBias: randomArray(3 * C, 2),
  outWeight: randomArray(C * C, 3),
  outBias: randomArray(C, 4),
};
const x = randomArray(B * N * C, 5);
const dy = randomArray(B * N * C, 6);

function zeroGrads() {
  return {
    inWeight: new Float64Array(3 * C * C),
    inBias: new Float64Array(3 * C),
    outWeight: new Float64Array(C * C),
    outBias: new Float64Array(C),
  };
}

for (const causal of [false, true]) {
  Deno.test(`softmaxSelfAttention (causal ${causal}): forward with saves and backward match the references`, async () => {
    const ref = softmaxSelfAttentionReference(x, host, dims, { causal });
    const g = zeroGrads();
    const dxRef = softmaxSelfAttentionBackwardReference(
      { dy, x, params: host, saves: ref.saves, grads: g },
      dims,
      { causal },
    );
    await withGpu(async (gpu) => {
      const up = (a: Float32Array<ArrayBuffer>, shape: number[]) => gpu.upload(a, shape);
      const params = {
        inWeight: up(host.inWeight, [3 * C, C]),
        inBias: up(host.inBias, [3 * C]),
        outWeight: up(host.outWeight, [C, C]),
        outBias: up(host.outBias, [C]),
      };
      const grads = {
        inWeight: gpu.empty([3 * C, C]),
        inBias: gpu.empty([3 * C]),
        outWeight: gpu.empty([C, C]),
        outBias: gpu.empty([C]),
      };
      const xt = up(x, [B, N, C]);
      const plain = await softmaxSelfAttention(gpu, xt, params, H, { causal });
      const { out, saves } = await softmaxSelfAttention(gpu, xt, params, H, {
        causal,
        saves: true,
      });
      assert.ok(saves.op, "standard attention keeps its probabilities");
      assertCloseScaled(await plain.read(), ref.out, 1e-5, "out");
      assertCloseScaled(await out.read(), ref.out, 1e-5, "out with saves");
      const dx = await softmaxSelfAttentionBackward(gpu, {
        dy: up(dy, [B, N, C]),
        saves,
        params,
        grads,
        heads: H,
        causal,
      });
      assertCloseScaled(await dx.read(), dxRef, 1e-4, "dx");
      for (const k of ["inWeight", "inBias", "outWeight", "outBias"] as const) {
        assertCloseScaled(await grads[k].read(), g[k], 1e-4, k);
      }
      if (causal) {
        // Decoding: the first 5 tokens, then one at a time, on a KV cache.
        const cache = createKvCache(gpu, B, H, d, N);
        const rows = new Float32Array(B * N * C);
        for (const [t0, n] of [[0, 5], [5, 1], [6, 1], [7, 2]]) {
          const piece = x.filter((_, i) => {
            const t = Math.floor((i % (N * C)) / C);
            return t >= t0 && t < t0 + n;
          });
          const y = await softmaxSelfAttention(gpu, up(piece, [B, n, C]), params, H, {
            causal,
            cache,
          });
          const got = await y.read();
          for (let b = 0; b < B; b++) {
            rows.set(got.subarray(b * n * C, (b + 1) * n * C), (b * N + t0) * C);
          }
        }
        assertCloseScaled(rows, ref.out, 1e-5, "decoded");
      }
    });
  });
}

Deno.test("softmaxSelfAttentionBackwardReference matches finite differences", () => {
  const small = { batches: 1, tokens: 4, heads: 2, headDim: 2 };
  const c = 4;
  const p = {
    inWeight: Float64Array.from(randomArray(3 * c * c, 7)),
    inBias: Float64Array.from(randomArray(3 * c, 8)),
    outWeight: Float64Array.from(randomArray(c * c, 9)),
    outBias: Float64Array.from(randomArray(c, 10)),
  };
  const xs = Float64Array.from(randomArray(4 * c, 11));
  const g = Float64Array.from(randomArray(4 * c, 12));
  const f = () =>
    softmaxSelfAttentionReference(xs, p, small, { causal: true }).out
      .reduce((s, v, i) => s + v * g[i], 0);
  const grads = {
    inWeight: new Float64Array(3 * c * c),
    inBias: new Float64Array(3 * c),
    outWeight: new Float64Array(c * c),
    outBias: new Float64Array(c),
  };
  const { saves } = softmaxSelfAttentionReference(xs, p, small, { causal: true });
  const dx = softmaxSelfAttentionBackwardReference(
    { dy: g, x: xs, params: p, saves, grads },
    small,
    { causal: true },
  );
  assertCloseScaled(dx, numericGradient(xs, f), 1e-6, "dx");
  assertCloseScaled(grads.inWeight, numericGradient(p.inWeight, f), 1e-6, "inWeight");
});
