/**
 * tost as a library: run Token Statistics Self-Attention (TSSA), its causal
 * form, the softmax baselines and whole ToST models on WebGPU from another
 * Deno program, on your own tensors.
 *
 * Every GPU op takes the {@linkcode Gpu} runtime and {@linkcode Tensor}s,
 * records its dispatches without waiting, and returns a new tensor; read a
 * result with `await tensor.read()`. Each op has a float64 `…Reference` twin in
 * plain TypeScript. Asked for its saves (`{ saves: true }`), a forward also
 * returns what its backward (`tssaBackward`, `causalTssaBackward`) reads.
 * Inside `arena.use(…)` every tensor made comes from an {@linkcode Arena}'s
 * reused buffers, freed together.
 *
 * Layout: `src/ops/` one op per file (its backward in `*_backward.ts`, its
 * WGSL in `kernels/`, its float64 reference beside it); `src/nn/` the
 * attention modules, the MLP and the transformer block (forward with saves,
 * backward; float64 references in `*_reference.ts`); `src/model/` the
 * models by family (`language/`, `vision/`) on one {@linkcode ParamStore}
 * each, and their float64 references (`reference/`).
 *
 * @example
 * ```ts ignore
 * import { Gpu, tssa, tssaReference } from "./mod.ts";
 *
 * const gpu = await Gpu.create();
 * const [B, N, H, d] = [1, 1000, 4, 16];
 * const values = new Float32Array(B * N * H * d).map(() => Math.random() - 0.5);
 * const w = gpu.upload(values, [B, N, H * d], "w");
 * const temp = gpu.upload(new Float32Array(H).fill(1), [H], "temp");
 * const y = await tssa(gpu, w, temp, H); // [B, N, H·d]
 * const ref = tssaReference(values, [1, 1, 1, 1], { batches: B, tokens: N, heads: H, headDim: d }).y;
 * console.log((await y.read())[0], ref[0]);
 * gpu.destroy();
 * ```
 *
 * @module
 */

// Runtime
export { f32, Gpu, i32, Tensor } from "./src/gpu/runtime.ts";
export { Arena } from "./src/gpu/arena.ts";
export type {
  BufferRange,
  DispatchListener,
  DispatchOptions,
  DType,
  GpuOptions,
  HostArray,
  Kernel,
  MemoryStats,
  Param,
  Timing,
} from "./src/gpu/runtime.ts";
export { describeAdapter, NoAdapterError } from "./src/gpu/device.ts";
export type { AdapterDescription } from "./src/gpu/device.ts";

// The paper's operators and their attention modules
export { tssa } from "./src/ops/tssa.ts";
export { tssaReference } from "./src/ops/tssa_reference.ts";
export { causalTssa } from "./src/ops/causal_tssa.ts";
export { causalTssaReference } from "./src/ops/causal_tssa_reference.ts";
export { tssaAttention } from "./src/nn/tssa_attention.ts";
export { tssaAttentionReference } from "./src/nn/tssa_attention_reference.ts";
export type { TssaAttentionParams } from "./src/nn/tssa_attention.ts";
export { causalTssaAttention } from "./src/nn/causal_tssa_attention.ts";
export { causalTssaAttentionReference } from "./src/nn/causal_tssa_attention_reference.ts";
export type { CausalTssaAttentionParams } from "./src/nn/causal_tssa_attention.ts";
export type { TssaSaves } from "./src/ops/tssa.ts";
export type { CausalTssaSaves } from "./src/ops/causal_tssa.ts";
export { tssaBackward } from "./src/ops/tssa_backward.ts";
export { causalTssaBackward } from "./src/ops/causal_tssa_backward.ts";
export { causalTssaStep, createCausalTssaState } from "./src/ops/causal_tssa_step.ts";

// Softmax baselines
export { softmaxAttention } from "./src/ops/attention.ts";
export { attentionReference } from "./src/ops/attention_reference.ts";
export { flashAttention } from "./src/ops/flash_attention.ts";
export { classAttention } from "./src/ops/class_attention.ts";

// Layers
export { linear } from "./src/ops/linear.ts";
export { linearReference } from "./src/ops/linear_reference.ts";
export { layerNorm } from "./src/ops/layer_norm.ts";
export { layerNormReference } from "./src/ops/layer_norm_reference.ts";
export { gelu } from "./src/ops/gelu.ts";
export { geluReference } from "./src/ops/gelu_reference.ts";
export { softmax } from "./src/ops/softmax.ts";
export { softmaxReference } from "./src/ops/softmax_reference.ts";

// Models, checkpoints and files
export type { LanguageConfig, ModelConfig, VisionConfig } from "./src/model/config.ts";
export { destroyModel, loadModel, readModelFile } from "./src/model/load.ts";
export { ParamStore } from "./src/model/params.ts";
export { languageForward } from "./src/model/language/model.ts";
export { visionForward } from "./src/model/vision/model.ts";
export { initialParameters } from "./src/model/init.ts";
export { languageMaps, visionMaps } from "./src/inspect/maps.ts";
export type { LanguageMaps, VisionMaps } from "./src/inspect/maps.ts";
export { convertCheckpoint, inspectCheckpoint, loadCheckpoint } from "./src/checkpoint/mod.ts";
export { readSafetensors, writeSafetensors } from "./src/io/safetensors.ts";
export type { SafetensorsFile, StDType, StTensor } from "./src/io/safetensors.ts";
