/**
 * tost as a library: run Token Statistics Self-Attention (TSSA) and the rest
 * of tost's WebGPU kernels on your own tensors from another Deno program.
 *
 * @example
 * ```ts ignore
 * import { Gpu } from "./mod.ts";
 *
 * const gpu = await Gpu.create();
 * const x = gpu.upload(new Float32Array([1, 2, 3, 4]), [2, 2], "x");
 * console.log(await x.read()); // Float32Array [1, 2, 3, 4]
 * gpu.destroy();
 * ```
 *
 * @module
 */

export { f32, Gpu, i32, Tensor } from "./src/gpu/runtime.ts";
export type {
  BufferRange,
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
export type { LanguageConfig, ModelConfig, VisionConfig } from "./src/model/config.ts";
