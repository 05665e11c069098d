/**
 * Finding a WebGPU adapter and opening a device with the limits tost needs.
 *
 * WebGPU hands out its small *default* limits (128 MiB bindings at most,
 * 16 KiB workgroup memory) unless `requiredLimits` asks for more, so the
 * device is always requested with the adapter's own limits.
 *
 * @module
 */

/**
 * The WebGPU backend Deno was asked for (`DENO_WEBGPU_BACKEND`), or
 * undefined. The runtime also runs in browsers (`tost serve`'s page), where
 * there is no `Deno`: every use of it goes through this guard.
 */
export function requestedBackend(): string | undefined {
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  try {
    return deno?.env.get("DENO_WEBGPU_BACKEND");
  } catch {
    return undefined; // no --allow-env
  }
}

/** Raised when no WebGPU adapter exists; tells the user what to install. */
export class NoAdapterError extends Error {
  override name = "NoAdapterError";
  constructor() {
    const inDeno = "Deno" in globalThis;
    super(
      inDeno
        ? "No WebGPU adapter found. On a machine without a GPU install Mesa's software Vulkan " +
          "driver (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers libvulkan1`) and run " +
          "with DENO_WEBGPU_BACKEND=vulkan; with a GPU, install its Vulkan (or Metal/DX12) " +
          `driver. DENO_WEBGPU_BACKEND is ${JSON.stringify(requestedBackend() ?? "unset")}.`
        : "No WebGPU adapter found: this browser has no WebGPU, or it is turned off. Use a " +
          "recent Chrome, Edge or Safari (Firefox: 141 or later on Windows), on a secure page " +
          "(https or localhost).",
    );
  }
}

/** The limits tost relies on, in the order `tost info` prints them. */
export const RELEVANT_LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
  "maxTextureDimension2D",
  "minStorageBufferOffsetAlignment",
  "minUniformBufferOffsetAlignment",
] as const;

/** Features tost uses when present. */
export const WANTED_FEATURES: readonly GPUFeatureName[] = ["timestamp-query", "shader-f16"];

/** What we know about an adapter, in plain data. */
export interface AdapterDescription {
  /** Human name, e.g. "NVIDIA H200" or "llvmpipe (LLVM 15.0.6, 256 bits)". */
  name: string;
  vendor: string;
  architecture: string;
  /** Backend requested through DENO_WEBGPU_BACKEND, or "auto". */
  backend: string;
  /** True for CPU renderers (llvmpipe, lavapipe, SwiftShader, WARP). */
  software: boolean;
  features: string[];
  limits: Record<string, number>;
}

/** Request an adapter, or throw {@linkcode NoAdapterError}. */
export async function requestAdapter(
  options: GPURequestAdapterOptions = { powerPreference: "high-performance" },
): Promise<GPUAdapter> {
  // deno-lint-ignore no-explicit-any
  const gpu = (navigator as any).gpu as GPU | undefined;
  if (!gpu) throw new NoAdapterError();
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await gpu.requestAdapter(options);
  } catch (err) {
    const e = new NoAdapterError();
    e.cause = err;
    throw e;
  }
  if (!adapter) throw new NoAdapterError();
  return adapter;
}

/** Describe an adapter as plain data (for `tost info` and bench records). */
export function describeAdapter(adapter: GPUAdapter): AdapterDescription {
  const info = adapter.info;
  // Browsers leave description empty: Chrome gives vendor "google", architecture "swiftshader".
  const name = info.description || info.device ||
    [info.vendor, info.architecture].filter(Boolean).join(" ") || "unknown";
  const software = Boolean(
    (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ||
      /llvmpipe|lavapipe|swiftshader|softpipe|warp|basic render/i.test(name),
  );
  const limits: Record<string, number> = {};
  for (const key of RELEVANT_LIMITS) limits[key] = adapter.limits[key];
  return {
    name,
    vendor: info.vendor,
    architecture: info.architecture,
    backend: requestedBackend() ?? "auto",
    software,
    features: [...adapter.features].sort(),
    limits,
  };
}

/** Open a device on `adapter` with all of its limits and the wanted features it has. */
export async function requestDevice(adapter: GPUAdapter): Promise<GPUDevice> {
  const requiredLimits: Record<string, number> = {};
  for (const key of RELEVANT_LIMITS) requiredLimits[key] = adapter.limits[key];
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  return await adapter.requestDevice({ requiredLimits, requiredFeatures });
}
