import { readSafetensors } from "../../src/io/safetensors.ts";
import type { SafetensorsFile } from "../../src/io/safetensors.ts";
import {
  destroyAttentionSaves,
  tssaAttentionBackward,
  tssaAttentionBackwardReference,
  tssaAttentionForwardReference,
  tssaAttentionForwardWithSaves,
} from "../../src/nn/tssa_attention_backward.ts";
import type {
  TssaAttentionDims,
  TssaAttentionGrads,
  TssaAttentionGradsReference,
  TssaAttentionParams,
  TssaAttentionParamsReference,
} from "../../src/nn/tssa_attention_backward.ts";
import { linearBackward, linearBackwardReference } from "../../src/ops/linear_backward.ts";
import type { Gpu, Tensor } from "../../src/gpu/runtime.ts";
import { assertCloseScaled, randomArray, withGpu } from "../_util.ts";

const FIXTURE = new URL("../fixtures/ops.ref.safetensors", import.meta.url).pathname;

/** One module of the fixture: its prefix, PyTorch parameter names and sizes. */
interface ModuleCase {
  prefix: string;
  names: { inWeight: string; inBias?: string; outWeight: string; outBias: string };
  dims: TssaAttentionDims;
}

const CASES: ModuleCase[] = [
  {
    prefix: "tssa",
    names: { inWeight: "qkv.weight", outWeight: "to_out.0.weight", outBias: "to_out.0.bias" },
    dims: { batches: 2, tokens: 50, heads: 4, headDim: 16 },
  },
  {
    prefix: "causal",
    names: {
      inWeight: "c_attn.weight",
      inBias: "c_attn.bias",
      outWeight: "c_proj.weight",
      outBias: "c_proj.bias",
    },
    dims: { batches: 2, tokens: 57, heads: 4, headDim: 16, blockSize: 64 },
  },
];

function loadParams(f: SafetensorsFile, c: ModuleCase): TssaAttentionParamsReference {
  const p = (name: string) => f.f32(`${c.prefix}.param.${name}`);
  return {
    inWeight: p(c.names.inWeight),
    inBias: c.names.inBias ? p(c.names.inBias) : null,
    temp: p("temp"),
    outWeight: p(c.names.outWeight),
    outBias: p(c.names.outBias),
    ...(c.dims.blockSize ? { denomBias: p("denom_bias") } : {}),
  };
}

/** Pairs of (our gradient, fixture name) for every parameter of the module. */
function gradPairs(g: TssaAttentionGradsReference, c: ModuleCase): [Float64Array, string][] {
  const pairs: [Float64Array, string][] = [
    [g.inWeight, c.names.inWeight],
    [g.temp, "temp"],
    [g.outWeight, c.names.outWeight],
    [g.outBias!, c.names.outBias],
  ];
  if (c.names.inBias) pairs.push([g.inBias!, c.names.inBias]);
  if (c.dims.blockSize) pairs.push([g.denomBias!, "denom_bias"]);
  return pairs;
}

for (const c of CASES) {
  Deno.test(`${c.prefix} module: float64 reference backward matches PyTorch's gradients`, async () => {
    const f = await readSafetensors(FIXTURE);
    const D = c.dims.heads * c.dims.headDim;
    const params = loadParams(f, c);
    const x = f.f32(`${c.prefix}.x`);
    const saved = tssaAttentionForwardReference(x, params, c.dims);
    assertCloseScaled(saved.out, f.f32(`${c.prefix}.y`), 1e-6, "y");
    const grads: TssaAttentionGradsReference = {
      inWeight: new Float64Array(D * D),
      inBias: c.names.inBias ? new Float64Array(D) : null,
      temp: new Float64Array(c.dims.heads),
      outWeight: new Float64Array(D * D),
      outBias: new Float64Array(D),
      ...(c.dims.blockSize ? { denomBias: new Float64Array(c.dims.heads * c.dims.blockSize) } : {}),
    };
    const dy = f.f32(`${c.prefix}.dy`);
    const dx = tssaAttentionBackwardReference({ dy, x, params, saved, grads }, c.dims);
    // The fixtures are float64 results rounded to float32: ~1e-7 relative.
    assertCloseScaled(dx, f.f32(`${c.prefix}.dx`), 1e-6, "dx");
    for (const [ours, name] of gradPairs(grads, c)) {
      assertCloseScaled(ours, f.f32(`${c.prefix}.grad.${name}`), 1e-6, name);
    }
  });
}

function uploadParams(gpu: Gpu, f: SafetensorsFile, c: ModuleCase): TssaAttentionParams {
  const p = (name: string) => {
    const full = `${c.prefix}.param.${name}`;
    return gpu.upload(f.f32(full), f.shape(full), full);
  };
  return {
    inWeight: p(c.names.inWeight),
    inBias: c.names.inBias ? p(c.names.inBias) : null,
    temp: p("temp"),
    outWeight: p(c.names.outWeight),
    outBias: p(c.names.outBias),
    ...(c.dims.blockSize ? { denomBias: p("denom_bias") } : {}),
  };
}

function zerosLike(gpu: Gpu, t: Tensor): Tensor {
  return gpu.empty(t.shape, "f32", "grad");
}

for (const c of CASES) {
  Deno.test(`${c.prefix} module: GPU backward matches PyTorch's gradients`, async () => {
    const f = await readSafetensors(FIXTURE);
    await withGpu(async (gpu) => {
      const params = uploadParams(gpu, f, c);
      const grads: TssaAttentionGrads = {
        inWeight: zerosLike(gpu, params.inWeight),
        inBias: params.inBias ? zerosLike(gpu, params.inBias) : null,
        temp: zerosLike(gpu, params.temp),
        outWeight: zerosLike(gpu, params.outWeight),
        outBias: params.outBias ? zerosLike(gpu, params.outBias) : null,
        ...(params.denomBias ? { denomBias: zerosLike(gpu, params.denomBias) } : {}),
      };
      const x = gpu.upload(f.f32(`${c.prefix}.x`), f.shape(`${c.prefix}.x`));
      const dy = gpu.upload(f.f32(`${c.prefix}.dy`), f.shape(`${c.prefix}.dy`));
      const { out, saves } = await tssaAttentionForwardWithSaves(gpu, {
        x,
        params,
        heads: c.dims.heads,
      });
      const dx = await tssaAttentionBackward(gpu, {
        dy,
        saves,
        params,
        grads,
        heads: c.dims.heads,
      });
      assertCloseScaled(await out.read(), f.f32(`${c.prefix}.y`), 1e-4, "y");
      assertCloseScaled(await dx.read(), f.f32(`${c.prefix}.dx`), 1e-4, "dx");
      const ours: Record<string, Tensor | null | undefined> = {
        [c.names.inWeight]: grads.inWeight,
        temp: grads.temp,
        [c.names.outWeight]: grads.outWeight,
        [c.names.outBias]: grads.outBias,
        ...(c.names.inBias ? { [c.names.inBias]: grads.inBias } : {}),
        ...(c.dims.blockSize ? { denom_bias: grads.denomBias } : {}),
      };
      for (const [name, t] of Object.entries(ours)) {
        // Tighter than the fixtures' suggested 1e-3.
        assertCloseScaled(await t!.read(), f.f32(`${c.prefix}.grad.${name}`), 1e-4, name);
      }
      destroyAttentionSaves(saves);
    });
  });
}

Deno.test("linearBackward on the GPU matches the float64 reference and accumulates", async () => {
  await withGpu(async (gpu) => {
    for (
      const [M, K, N, bias] of [[1, 5, 3, true], [700, 17, 33, true], [63, 64, 7, false]] as const
    ) {
      const x = randomArray(M * K, M + 1);
      const w = randomArray(N * K, M + 2);
      const dy = randomArray(M * N, M + 3);
      const dW0 = randomArray(N * K, M + 4);
      const dB0 = randomArray(N, M + 5);
      const dWeight = gpu.upload(dW0, [N, K]);
      const dBias = bias ? gpu.upload(dB0, [N]) : null;
      const dx = await linearBackward(gpu, {
        dy: gpu.upload(dy, [M, N]),
        x: gpu.upload(x, [M, K]),
        weight: gpu.upload(w, [N, K]),
        dWeight,
        dBias,
      });
      const refW = Float64Array.from(dW0);
      const refB = Float64Array.from(dB0);
      const dims = { rows: M, inFeatures: K, outFeatures: N };
      const refX = linearBackwardReference(
        { dy, x, weight: w, dWeight: refW, dBias: bias ? refB : null },
        dims,
      );
      assertCloseScaled(await dx.read(), refX, 1e-5, `dx ${M}×${K}→${N}`);
      assertCloseScaled(await dWeight.read(), refW, 1e-5, `dW ${M}×${K}→${N}`);
      if (dBias) assertCloseScaled(await dBias.read(), refB, 1e-5, `db ${M}×${K}→${N}`);
    }
  });
});
