/**
 * The GPU runtime every op runs on: one device, a pipeline cache, counted
 * buffer allocations, batched submission and timestamp timing.
 *
 * Conventions shared by every kernel in `kernels/`:
 * - binding 0 of group 0 is a uniform struct of runtime sizes (`params`),
 *   bindings 1… are the storage buffers in the order the op passes them;
 * - a 1-D grid is given as a workgroup count; the runtime folds counts over
 *   65535 into y (and z), so kernels compute the flat workgroup index as
 *   `wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y` and return when past the end;
 * - dispatches are recorded into one command encoder and one compute pass and
 *   submitted together when something needs the results (`read`, `flush`).
 *   Each submit-and-wait costs ~10 ms, so ops never wait on their own.
 *
 * @module
 */

import { describeAdapter, requestAdapter, requestDevice } from "./device.ts";
import type { AdapterDescription } from "./device.ts";
import { renderKernel } from "./render.ts";
import type { RenderedKernel, SlotValue } from "./render.ts";
import { BindGroupCache } from "./bind_groups.ts";
import type { BindGroupStats, CachedEntry } from "./bind_groups.ts";

/** Element types a {@linkcode Tensor} can hold on the GPU. */
export type DType = "f32" | "u32" | "i32";

/** A typed array of the kind a dtype maps to. */
export type HostArray =
  | Float32Array<ArrayBuffer>
  | Uint32Array<ArrayBuffer>
  | Int32Array<ArrayBuffer>;

/** A float uniform parameter; bare numbers in `params` are u32. */
export class F32 {
  constructor(readonly value: number) {}
}

/** Mark a uniform parameter as f32 (bare numbers are written as u32). */
export function f32(value: number): F32 {
  return new F32(value);
}

/** A signed integer uniform parameter. */
export class I32 {
  constructor(readonly value: number) {}
}

/** Mark a uniform parameter as i32. */
export function i32(value: number): I32 {
  return new I32(value);
}

/** A value in a kernel's uniform struct, 4 bytes each, in declaration order. */
export type Param = number | F32 | I32;

/** A compiled kernel: its pipeline, the name errors should cite and its cache key. */
export interface Kernel {
  readonly name: string;
  readonly pipeline: GPUComputePipeline;
  /** The pipeline-cache key: name, entry point and slot values (one per specialisation). */
  readonly key: string;
}

/** GPU time of one kernel over a {@linkcode Gpu.startKernelProfile} run. */
export interface KernelTime {
  kernel: string;
  dispatches: number;
  ms: number;
}

/** Timestamp pairs of profiled dispatches, resolved and read in chunks. */
class KernelProfiler {
  static readonly CHUNK = 2048; // dispatches per query set
  #set: GPUQuerySet | null = null;
  #labels: string[] = [];
  #pending: Promise<[string[], BigUint64Array]>[] = [];

  constructor(readonly device: GPUDevice) {}

  /** The timestamp writes of the next dispatch, named `kernel`. */
  next(kernel: string, gpu: Gpu): GPUComputePassTimestampWrites {
    if (this.#labels.length === KernelProfiler.CHUNK) this.collect(gpu);
    this.#set ??= this.device.createQuerySet({
      type: "timestamp",
      count: 2 * KernelProfiler.CHUNK,
    });
    const i = this.#labels.length;
    this.#labels.push(kernel);
    return {
      querySet: this.#set,
      beginningOfPassWriteIndex: 2 * i,
      endOfPassWriteIndex: 2 * i + 1,
    };
  }

  /** Resolve the current chunk into a buffer read later (submits the batch). */
  collect(gpu: Gpu): void {
    const set = this.#set;
    const labels = this.#labels;
    this.#set = null;
    this.#labels = [];
    if (!set || labels.length === 0) {
      set?.destroy();
      return;
    }
    const bytes = labels.length * 16;
    const resolve = this.device.createBuffer({
      label: "tost.kernelProfile.resolve",
      size: bytes,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const staging = this.device.createBuffer({
      label: "tost.kernelProfile.read",
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = gpu._encoderForProfile();
    encoder.resolveQuerySet(set, 0, 2 * labels.length, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, staging, 0, bytes);
    gpu.flush();
    this.#pending.push(
      staging.mapAsync(GPUMapMode.READ).then((): [string[], BigUint64Array] => {
        const ts = new BigUint64Array(staging.getMappedRange().slice(0));
        staging.unmap();
        return [labels, ts];
      }).finally(() => {
        staging.destroy();
        resolve.destroy();
        set.destroy();
      }),
    );
  }

  /** Per-kernel totals of every collected chunk, slowest first. */
  async results(): Promise<KernelTime[]> {
    const totals = new Map<string, KernelTime>();
    for (const [labels, ts] of await Promise.all(this.#pending)) {
      labels.forEach((kernel, i) => {
        const t = totals.get(kernel) ?? { kernel, dispatches: 0, ms: 0 };
        t.dispatches++;
        t.ms += Number(ts[2 * i + 1] - ts[2 * i]) / 1e6;
        totals.set(kernel, t);
      });
    }
    return [...totals.values()].sort((a, b) => b.ms - a.ms);
  }
}

/** Called with the kernel of every recorded dispatch (see {@linkcode Gpu.onDispatch}). */
export type DispatchListener = (kernel: Kernel) => void;

/**
 * Where a tensor's storage goes back when it is destroyed: the runtime
 * (the buffer is freed) or an arena (the buffer is handed out again).
 * @internal
 */
export interface TensorOwner {
  _release(t: Tensor): void;
}

/** Owner of views: destroying a view releases nothing. */
const VIEW_OWNER: TensorOwner = { _release() {} };

/** A byte range of a tensor to bind (for tensors over one binding's limit). */
export interface BufferRange {
  readonly tensor: Tensor;
  /** Byte offset from the tensor's start; a multiple of `minStorageBufferOffsetAlignment`. */
  readonly offset: number;
  /** Byte size. */
  readonly size: number;
}

/** What one {@linkcode Gpu.dispatch} needs. */
export interface DispatchOptions {
  /** Storage bindings 1…n, in order: buffers, buffer ranges or storage textures. */
  readonly bindings: readonly (Tensor | BufferRange | Texture)[];
  /** Uniform values at binding 0 (omit when the kernel declares none). */
  readonly params?: readonly Param[];
  /** Workgroup count: a total (folded over 65535 by the runtime) or an explicit grid. */
  readonly workgroups: number | readonly [number, number, number];
}

/** Live and peak bytes of tensor (and texture) storage this runtime has allocated. */
export interface MemoryStats {
  /** Bytes of live tensors and textures. */
  liveBytes: number;
  peakBytes: number;
  liveBuffers: number;
  liveTextures: number;
}

/** Host round trips and bind-group reuse of one runtime (see {@linkcode Gpu.counters}). */
export interface GpuCounters {
  /**
   * Blocking host waits: every `mapAsync` (reads, timings) and
   * `onSubmittedWorkDone` (syncs) this runtime started. Each costs ≥ 10 ms
   * in Deno and drains the queue (see PERF.md, "Host round trips").
   */
  waits: number;
  /**
   * Milliseconds the host spent inside `queue.submit`. With Deno on
   * lavapipe a submit blocks until the GPU is (nearly) through the work
   * submitted before it, so one submission runs while the next is recorded;
   * this is that blocked time, not recording.
   */
  submitMs: number;
  /** Bind groups reused, made, and held ({@linkcode BindGroupCache}). */
  bindGroups: BindGroupStats;
}

/** One timed region, measured with timestamp queries. */
export interface Timing {
  label: string;
  ms: number;
}

const UNIFORM_SLOT = 256;
const UNIFORM_SLOTS = 1024;
const MAX_TIMED_REGIONS = 256;

/**
 * A tensor on the GPU: a storage buffer with a shape, row-major. Tensors
 * come from {@linkcode Gpu.empty} / {@linkcode Gpu.upload} (a counted buffer
 * of their own, or one of the active {@linkcode Arena}'s buffers) or are
 * {@linkcode Tensor.view}s of another tensor's buffer.
 */
export class Tensor {
  #destroyed = false;
  readonly #owner: TensorOwner;
  readonly #parent: Tensor | null;
  constructor(
    readonly gpu: Gpu,
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    owner: TensorOwner = gpu,
    parent: Tensor | null = null,
    /** Byte offset of element 0 in `buffer` (0 but for {@linkcode Tensor.slice}s). */
    readonly offset = 0,
  ) {
    this.#owner = owner;
    this.#parent = parent;
  }

  /** Number of elements. */
  get numel(): number {
    return numel(this.shape);
  }

  /** Bytes of data (the buffer itself may be padded to 4). */
  get byteSize(): number {
    return this.numel * 4;
  }

  /** Whether {@linkcode destroy} has been called (on this tensor or, for a view, on its source). */
  get destroyed(): boolean {
    return this.#destroyed || (this.#parent?.destroyed ?? false);
  }

  /**
   * The same values with another shape of the same size: shares the buffer,
   * owns nothing (destroying the view frees nothing), and counts as
   * destroyed once the source is.
   *
   * @throws {TypeError} when the sizes differ
   */
  view(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.numel) {
      throw new TypeError(`Cannot view [${this.shape}] as [${shape}]`);
    }
    return new Tensor(this.gpu, this.buffer, [...shape], this.dtype, VIEW_OWNER, this, this.offset);
  }

  /**
   * A view of `numel(shape)` elements from element `start`: shares the
   * buffer and owns nothing, like {@linkcode view}. Bound, copied, read and
   * cleared as a tensor of its own, so `start · 4` must be a multiple of the
   * device's `minStorageBufferOffsetAlignment`. (WebGPU tracks usage per
   * buffer: two slices of one buffer cannot be bound read-only and writable
   * in one dispatch.)
   *
   * @throws {RangeError} for a range outside the tensor or a misaligned start
   */
  slice(start: number, shape: readonly number[]): Tensor {
    const n = numel(shape);
    if (!Number.isInteger(start) || start < 0 || start + n > this.numel) {
      throw new RangeError(`Cannot slice [${shape}] at ${start} of [${this.shape}]`);
    }
    const align = this.gpu.limits.minStorageBufferOffsetAlignment;
    if ((start * 4) % align !== 0) {
      throw new RangeError(
        `Cannot slice at element ${start}: byte offset ${start * 4} is not a multiple of ${align}`,
      );
    }
    return new Tensor(
      this.gpu,
      this.buffer,
      [...shape],
      this.dtype,
      VIEW_OWNER,
      this,
      this.offset + start * 4,
    );
  }

  /** Read the tensor back (submits pending work). */
  read(): Promise<HostArray> {
    return this.gpu.read(this);
  }

  /**
   * Give the storage back (freed, or returned to its arena for a later
   * allocation). Safe to call twice.
   */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#owner._release(this);
  }
}

/**
 * A 2-D `rgba32float` storage texture: `width` texels of 4 f32 each per row,
 * `height` rows. Counted in {@linkcode Gpu.memory} like tensors. Kernels
 * bind it as `texture_storage_2d<rgba32float, read | write>`.
 */
export class Texture {
  #destroyed = false;
  #view: GPUTextureView | null = null;
  constructor(
    readonly gpu: Gpu,
    readonly texture: GPUTexture,
    readonly width: number,
    readonly height: number,
  ) {}

  /** Bytes of texel storage (16 per texel). */
  get byteSize(): number {
    return this.width * this.height * 16;
  }

  /** The view bound in dispatches. */
  get view(): GPUTextureView {
    this.#view ??= this.texture.createView();
    return this.#view;
  }

  /** Whether {@linkcode destroy} has been called. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** Free the texture (after pending work that uses it is submitted). Safe to call twice. */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.gpu._releaseTexture(this);
  }
}

/**
 * Bytes to bind for a whole tensor: its values rounded up to 16 bytes, within
 * its buffer (an arena may hand out a buffer larger than the tensor).
 */
function wholeBinding(t: Tensor): number {
  return Math.min(t.buffer.size - t.offset, Math.max(16, Math.ceil(t.byteSize / 16) * 16));
}

/** Product of a shape's dimensions (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new TypeError(`Invalid dimension ${d} in [${shape}]`);
    n *= d;
  }
  return n;
}

/** Split a workgroup count over x (≤ maxPerDim), y and z. */
export function foldWorkgroups(count: number, maxPerDim: number): [number, number, number] {
  if (!Number.isInteger(count) || count < 0) {
    throw new RangeError(`Invalid workgroup count ${count}`);
  }
  if (count <= maxPerDim) return [count, 1, 1];
  const y = Math.ceil(count / maxPerDim);
  if (y <= maxPerDim) return [maxPerDim, y, 1];
  const z = Math.ceil(y / maxPerDim);
  if (z > maxPerDim) {
    throw new RangeError(`Dispatch of ${count} workgroups exceeds the device's grid`);
  }
  return [maxPerDim, maxPerDim, z];
}

/** Options for {@linkcode Gpu.create}. */
export interface GpuOptions {
  /** Adapter preference; defaults to high performance. */
  powerPreference?: GPUPowerPreference;
}

/**
 * One WebGPU device and everything needed to run tost's kernels on it.
 *
 * @example
 * ```ts ignore
 * const gpu = await Gpu.create();
 * const t = gpu.upload(new Float32Array([1, 2, 3]), [3]);
 * console.log(await t.read());
 * gpu.destroy();
 * ```
 */
export class Gpu implements TensorOwner {
  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly info: AdapterDescription;
  readonly hasTimestamps: boolean;

  #pipelines = new Map<string, Promise<Kernel>>();
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #timing = false;
  #uniforms: GPUBuffer;
  #uniformHost = new ArrayBuffer(UNIFORM_SLOT * UNIFORM_SLOTS);
  #uniformsUsed = 0;
  #live = new Set<Tensor>();
  #liveTextures = new Set<Texture>();
  #liveBytes = 0;
  #peakBytes = 0;
  #error: Error | null = null;
  #destroyed = false;
  #querySet: GPUQuerySet | null = null;
  #queryResolve: GPUBuffer | null = null;
  #timedLabels: string[] = [];
  #pendingTimings: Promise<Timing[]>[] = [];
  #pendingDestroy: (GPUBuffer | GPUTexture)[] = [];
  #bindGroups: BindGroupCache;
  #waits = 0;
  #submitMs = 0;
  /** Allocation scopes: the innermost non-null arena serves {@linkcode empty}. */
  #arenas: (Allocator | null)[] = [];

  /**
   * Called with the kernel of every dispatch as it is recorded (tests count
   * the pipelines a pass runs with it). One property check per dispatch
   * when unset.
   */
  onDispatch: DispatchListener | null = null;
  #kernelProfile: KernelProfiler | null = null;

  private constructor(adapter: GPUAdapter, device: GPUDevice) {
    this.adapter = adapter;
    this.device = device;
    this.info = describeAdapter(adapter);
    this.hasTimestamps = device.features.has("timestamp-query");
    this.#uniforms = device.createBuffer({
      label: "tost.uniforms",
      size: UNIFORM_SLOT * UNIFORM_SLOTS,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.#bindGroups = new BindGroupCache(device);
    device.addEventListener("uncapturederror", (event) => {
      const err = (event as GPUUncapturedErrorEvent).error;
      this.#fail(new Error(`WebGPU error: ${err.message.trim()}`));
    });
    device.lost.then((info) => {
      if (!this.#destroyed) {
        this.#fail(new Error(`GPU device lost (${info.reason}): ${info.message}`));
      }
    });
  }

  /** Open the default adapter's device with its full limits. */
  static async create(options: GpuOptions = {}): Promise<Gpu> {
    const adapter = await requestAdapter({
      powerPreference: options.powerPreference ?? "high-performance",
    });
    const device = await requestDevice(adapter);
    return new Gpu(adapter, device);
  }

  /** The device's limits. */
  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  #fail(err: Error): void {
    // Fail loudly: print at once (the error may come from work nobody awaits)
    // and rethrow at the next point that waits on the GPU.
    if (!this.#error) {
      this.#error = err;
      console.error(`error: ${err.message}`);
    }
  }

  /** Throw the first asynchronous device error, if any. */
  checkError(): void {
    if (this.#error) throw this.#error;
  }

  // ---------------------------------------------------------------- buffers

  /**
   * A zero-filled tensor: a buffer of the active {@linkcode Arena} when one
   * is in use ({@linkcode Arena.use}), else a new counted buffer.
   */
  empty(shape: readonly number[], dtype: DType = "f32", label = "tensor"): Tensor {
    return this.#allocate(shape, dtype, label, true);
  }

  #allocate(shape: readonly number[], dtype: DType, label: string, zero: boolean): Tensor {
    const arena = this.#arenas.at(-1);
    if (arena) return arena._take(shape, dtype, label, zero);
    return this._fresh(shape, dtype, label);
  }

  /** A new counted buffer, whatever arena is active. @internal used by arenas */
  _fresh(shape: readonly number[], dtype: DType, label: string): Tensor {
    this.checkError();
    const bytes = numel(shape) * 4;
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    if (size > this.limits.maxBufferSize) {
      throw new RangeError(
        `Tensor "${label}" [${shape}] needs ${formatBytes(size)}, ` +
          `the device allows ${formatBytes(this.limits.maxBufferSize)} per buffer`,
      );
    }
    const buffer = this.device.createBuffer({
      label,
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    const t = new Tensor(this, buffer, [...shape], dtype);
    this.#live.add(t);
    this.#liveBytes += size;
    this.#peakBytes = Math.max(this.#peakBytes, this.#liveBytes);
    return t;
  }

  /** Allocate a tensor and copy host data into it. */
  upload(data: HostArray, shape: readonly number[], label = "tensor"): Tensor {
    if (data.length !== numel(shape)) {
      throw new TypeError(`Tensor "${label}": ${data.length} values for shape [${shape}]`);
    }
    const dtype: DType = data instanceof Float32Array
      ? "f32"
      : data instanceof Int32Array
      ? "i32"
      : "u32";
    const t = this.#allocate(shape, dtype, label, false);
    this.write(t, data);
    return t;
  }

  /** Record `t = 0` (a buffer clear, in program order with dispatches). */
  clear(t: Tensor): void {
    if (t.destroyed) throw new Error("clear of a destroyed tensor");
    this.#endPass();
    // The bytes a binding of `t` sees (a slice clears only its own range).
    this.#currentEncoder().clearBuffer(t.buffer, t.offset, wholeBinding(t));
  }

  /**
   * Run `fn` with the arena scopes suspended: what it allocates is a new
   * counted buffer that outlives any arena (caches, decoder state).
   */
  outsideArena<T>(fn: () => T): T {
    this.#arenas.push(null);
    try {
      return fn();
    } finally {
      this.#arenas.pop();
    }
  }

  /** Whether an arena serves allocations now (inside `Arena.use`, not suspended). */
  get inArena(): boolean {
    return !!this.#arenas.at(-1);
  }

  /** @internal {@linkcode Arena.use} */
  _enterArena(arena: Allocator): void {
    this.#arenas.push(arena);
  }

  /** @internal {@linkcode Arena.use} */
  _leaveArena(arena: Allocator): void {
    if (this.#arenas.at(-1) !== arena) {
      throw new Error("Arena scopes were interleaved: leave the inner one first");
    }
    this.#arenas.pop();
  }

  /** Overwrite a tensor's contents from the host (ordered with submitted work). */
  write(t: Tensor, data: HostArray, elementOffset = 0): void {
    if (elementOffset + data.length > t.numel) {
      throw new RangeError(`write of ${data.length} values at ${elementOffset} past [${t.shape}]`);
    }
    // Queue writes are ordered before later submits but after earlier ones,
    // so pending dispatches must be submitted first to keep program order.
    this.flush();
    this.device.queue.writeBuffer(t.buffer, t.offset + elementOffset * 4, data);
  }

  /** @internal called by Tensor.destroy. */
  _release(t: Tensor): void {
    if (!this.#live.delete(t)) return;
    this.#liveBytes -= t.buffer.size;
    // A destroyed buffer is never bound again, from the cache or otherwise.
    this.#bindGroups.forget(t.buffer);
    // Recorded but unsubmitted commands may still use the buffer: destroy it
    // right after the next submit (WebGPU then waits for that work itself).
    if (this.#encoder) this.#pendingDestroy.push(t.buffer);
    else t.buffer.destroy();
  }

  /**
   * Allocate a 2-D `rgba32float` storage texture of `width × height` texels
   * (contents undefined until written).
   *
   * @throws {RangeError} when a side exceeds the device's `maxTextureDimension2D`
   */
  texture(width: number, height: number, label = "texture"): Texture {
    this.checkError();
    const max = this.limits.maxTextureDimension2D;
    for (const [side, v] of [["width", width], ["height", height]] as const) {
      if (!Number.isInteger(v) || v < 1 || v > max) {
        throw new RangeError(
          `Texture "${label}" ${side} ${v} is out of range: the device allows 1 to ${max}`,
        );
      }
    }
    const texture = this.device.createTexture({
      label,
      size: [width, height],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST,
    });
    const t = new Texture(this, texture, width, height);
    this.#liveTextures.add(t);
    this.#liveBytes += t.byteSize;
    this.#peakBytes = Math.max(this.#peakBytes, this.#liveBytes);
    return t;
  }

  /** @internal called by Texture.destroy. */
  _releaseTexture(t: Texture): void {
    if (!this.#liveTextures.delete(t)) return;
    this.#liveBytes -= t.byteSize;
    // A destroyed texture is never bound again from the cache.
    this.#bindGroups.forget(t.view);
    if (this.#encoder) this.#pendingDestroy.push(t.texture);
    else t.texture.destroy();
  }

  /** Live and peak tensor and texture bytes allocated through this runtime. */
  memory(): MemoryStats {
    return {
      liveBytes: this.#liveBytes,
      peakBytes: this.#peakBytes,
      liveBuffers: this.#live.size,
      liveTextures: this.#liveTextures.size,
    };
  }

  /** Restart peak counting from the current live bytes. */
  resetPeak(): void {
    this.#peakBytes = this.#liveBytes;
  }

  /** Check that `bytes` may be bound as one storage binding. */
  assertBindable(label: string, bytes: number): void {
    const max = this.limits.maxStorageBufferBindingSize;
    if (bytes > max) {
      throw new RangeError(
        `${label} needs a ${formatBytes(bytes)} storage binding, the device allows ${
          formatBytes(max)
        }`,
      );
    }
  }

  // -------------------------------------------------------------- pipelines

  /**
   * Compile (once) a kernel from a WGSL template and its slot values.
   * Compile errors are reported with the kernel's name and line:col.
   */
  kernel(
    name: string,
    template: string,
    slots: Readonly<Record<string, SlotValue>> = {},
    entryPoint = "main",
  ): Promise<Kernel> {
    const key = `${name}#${entryPoint}#${JSON.stringify(Object.entries(slots).sort())}`;
    let k = this.#pipelines.get(key);
    if (!k) {
      k = this.#compile(name, renderKernel(name, template, slots), entryPoint, key);
      this.#pipelines.set(key, k);
      k.catch(() => this.#pipelines.delete(key));
    }
    return k;
  }

  async #compile(
    name: string,
    rendered: RenderedKernel,
    entryPoint: string,
    key: string,
  ): Promise<Kernel> {
    const device = this.device;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ label: name, code: rendered.code });
    const info = await module.getCompilationInfo();
    const scopeError = await device.popErrorScope();
    const errors = info.messages.filter((m) => m.type === "error");
    if (errors.length > 0 || scopeError) {
      const where = errors.map((m) => {
        // The line map points into the kernel's file or the included snippet.
        const at = rendered.origins[m.lineNum - 1];
        const file = at ? `${at.file}:${at.line}` : `kernels/${name}.wgsl:${m.lineNum}`;
        return `${file}:${m.linePos}: ${firstLine(m.message)}`;
      });
      throw new SyntaxError(
        `Kernel "${name}" failed to compile: ${
          where.join("; ") || firstLine(scopeError?.message ?? "")
        }`,
      );
    }
    device.pushErrorScope("validation");
    let pipeline: GPUComputePipeline;
    try {
      pipeline = await device.createComputePipelineAsync({
        label: name,
        layout: "auto",
        compute: { module, entryPoint },
      });
    } catch (err) {
      await device.popErrorScope();
      throw new SyntaxError(`Kernel "${name}" (${entryPoint}) is invalid: ${errMessage(err)}`);
    }
    const pipeError = await device.popErrorScope();
    if (pipeError) {
      throw new SyntaxError(`Kernel "${name}" (${entryPoint}) is invalid: ${pipeError.message}`);
    }
    return { name, pipeline, key };
  }

  // ------------------------------------------------------------- dispatches

  #currentEncoder(): GPUCommandEncoder {
    this.checkError();
    if (this.#destroyed) throw new Error("GPU runtime used after destroy()");
    this.#encoder ??= this.device.createCommandEncoder({ label: "tost.batch" });
    return this.#encoder;
  }

  #currentPass(): GPUComputePassEncoder {
    if (!this.#pass) this.#pass = this.#currentEncoder().beginComputePass({ label: "tost.pass" });
    return this.#pass;
  }

  #endPass(): void {
    this.#pass?.end();
    this.#pass = null;
  }

  /**
   * Record one dispatch into the current batch. Its bind group comes from
   * the runtime's cache when the same pipeline bound the same buffer ranges
   * and uniform slot before (a steady-state step reuses all of them).
   */
  dispatch(kernel: Kernel, options: DispatchOptions): void {
    if (this.#uniformsUsed >= UNIFORM_SLOTS) this.flush();
    const entries: CachedEntry[] = [];
    if (options.params && options.params.length > 0) {
      const slot = this.#uniformsUsed++;
      writeParams(this.#uniformHost, slot * UNIFORM_SLOT, options.params, kernel.name);
      entries.push({
        binding: 0,
        buffer: this.#uniforms,
        offset: slot * UNIFORM_SLOT,
        size: UNIFORM_SLOT,
      });
    }
    this.onDispatch?.(kernel);
    const maxBinding = this.limits.maxStorageBufferBindingSize;
    options.bindings.forEach((b, i) => {
      if (b instanceof Texture) {
        if (b.destroyed) {
          throw new Error(`Kernel "${kernel.name}": binding ${i + 1} uses a destroyed texture`);
        }
        entries.push({ binding: i + 1, view: b.view });
        return;
      }
      const range = b instanceof Tensor ? { tensor: b, offset: 0, size: wholeBinding(b) } : b;
      if (range.tensor.destroyed) {
        throw new Error(`Kernel "${kernel.name}": binding ${i + 1} uses a destroyed tensor`);
      }
      if (range.size > maxBinding) {
        throw new RangeError(
          `Kernel "${kernel.name}": binding ${i + 1} is ${formatBytes(range.size)}, ` +
            `the device allows ${formatBytes(maxBinding)} per binding`,
        );
      }
      entries.push({
        binding: i + 1,
        buffer: range.tensor.buffer,
        offset: range.tensor.offset + range.offset,
        size: range.size,
      });
    });
    const grid = typeof options.workgroups === "number"
      ? foldWorkgroups(options.workgroups, this.limits.maxComputeWorkgroupsPerDimension)
      : options.workgroups;
    if (grid[0] * grid[1] * grid[2] === 0) return;
    const bindGroup = this.#bindGroups.get(kernel.pipeline, kernel.name, entries);
    if (this.#kernelProfile) {
      // Profiling: every dispatch in a pass of its own, bracketed by timestamps.
      this.#endPass();
      const writes = this.#kernelProfile.next(kernel.name, this);
      const pass = this.#currentEncoder().beginComputePass({
        label: "tost.kernelProfile",
        timestampWrites: writes,
      });
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
      pass.end();
      return;
    }
    const pass = this.#currentPass();
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
  }

  /** Copy bytes between tensors, in program order with dispatches. */
  copy(src: Tensor, dst: Tensor, bytes = src.byteSize, srcOffset = 0, dstOffset = 0): void {
    this.#endPass();
    this.#currentEncoder().copyBufferToBuffer(
      src.buffer,
      src.offset + srcOffset,
      dst.buffer,
      dst.offset + dstOffset,
      bytes,
    );
  }

  /**
   * Copy rows of a tensor into a texture, in program order with dispatches:
   * `rows` rows of `width` texels from byte `byteOffset`, `bytesPerRow`
   * apart (WebGPU wants a multiple of 256, and an offset that is a multiple
   * of 16 for rgba32float), to the texture's top-left corner.
   */
  copyToTexture(
    src: Tensor,
    dst: Texture,
    layout: { byteOffset: number; bytesPerRow: number; width: number; rows: number },
  ): void {
    if (src.destroyed || dst.destroyed) throw new Error("copyToTexture of a destroyed resource");
    this.#endPass();
    this.#currentEncoder().copyBufferToTexture(
      {
        buffer: src.buffer,
        offset: src.offset + layout.byteOffset,
        bytesPerRow: layout.bytesPerRow,
      },
      { texture: dst.texture },
      [layout.width, layout.rows],
    );
  }

  /** Submit everything recorded so far (does not wait). */
  flush(): void {
    if (!this.#encoder) return;
    this.#endPass();
    if (this.#uniformsUsed > 0) {
      this.device.queue.writeBuffer(
        this.#uniforms,
        0,
        this.#uniformHost,
        0,
        this.#uniformsUsed * UNIFORM_SLOT,
      );
    }
    const commands = this.#encoder.finish();
    const t0 = performance.now();
    this.device.queue.submit([commands]);
    this.#submitMs += performance.now() - t0;
    this.#encoder = null;
    this.#uniformsUsed = 0;
    for (const b of this.#pendingDestroy) b.destroy();
    this.#pendingDestroy = [];
  }

  /**
   * Run `fn` (which records and may submit GPU work) inside validation and
   * out-of-memory error scopes, submit what it recorded, and reject with the
   * first error either scope caught. Nothing waits for the GPU: WebGPU
   * reports these errors when the work is recorded, so popping the scopes is
   * immediate. A failure (an allocation too large for the device, say)
   * rejects this call instead of poisoning the runtime.
   *
   * @throws {RangeError} "GPU out of memory: …" for an out-of-memory error
   * @throws {Error} "WebGPU error: …" for a validation error
   */
  async captureErrors<T>(fn: () => Promise<T>): Promise<T> {
    this.flush();
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("validation");
    let result: T | undefined;
    let thrown: unknown = undefined;
    let failed = false;
    try {
      result = await fn();
      this.flush();
    } catch (err) {
      failed = true;
      thrown = err;
    }
    const validation = await this.device.popErrorScope();
    const oom = await this.device.popErrorScope();
    if (oom) throw new RangeError(`GPU out of memory: ${firstLine(oom.message)}`);
    if (validation) throw new Error(`WebGPU error: ${firstLine(validation.message)}`);
    if (failed) throw thrown;
    return result as T;
  }

  /**
   * {@linkcode captureErrors}, then wait until the GPU has finished the
   * work (one host wait).
   */
  async scoped<T>(fn: () => Promise<T>): Promise<T> {
    const result = await this.captureErrors(fn);
    this.#waits++;
    await this.device.queue.onSubmittedWorkDone();
    return result;
  }

  /** Submit and wait until the GPU has finished all work. */
  async sync(): Promise<void> {
    this.flush();
    this.#waits++;
    await this.device.queue.onSubmittedWorkDone();
    await nextTask();
    this.checkError();
  }

  /** Read a tensor (or a byte range of it) back to the host. */
  async read(t: Tensor, byteOffset = 0, byteSize = t.byteSize - byteOffset): Promise<HostArray> {
    if (t.destroyed) throw new Error("read of a destroyed tensor");
    const size = Math.max(4, Math.ceil(byteSize / 4) * 4);
    const staging = this.device.createBuffer({
      label: "tost.readback",
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.#endPass();
    this.#currentEncoder().copyBufferToBuffer(t.buffer, t.offset + byteOffset, staging, 0, size);
    this.flush();
    try {
      this.#waits++;
      await staging.mapAsync(GPUMapMode.READ);
      await nextTask();
      this.checkError();
      const copy = staging.getMappedRange().slice(0, byteSize);
      staging.unmap();
      return hostArray(t.dtype, copy);
    } finally {
      staging.destroy();
    }
  }

  /**
   * Read several tensors (or byte ranges of them) back under one host wait:
   * their bytes are copied into one staging buffer (more when they exceed
   * the device's buffer size), mapped once. The map starts when this is called (Deno blocks
   * there until the queued work is done), so a caller may record and submit
   * more work before awaiting the result: the GPU then runs it during the
   * ≥ 10 ms the map takes to resolve.
   */
  readMany(items: readonly (Tensor | BufferRange)[]): Promise<HostArray[]> {
    const ranges = items.map((b) =>
      b instanceof Tensor ? { tensor: b, offset: 0, size: b.byteSize } : b
    );
    for (const r of ranges) {
      if (r.tensor.destroyed) throw new Error("read of a destroyed tensor");
      const at = r.tensor.offset + r.offset;
      if (r.offset % 4 !== 0 || r.size % 4 !== 0 || at + r.size > r.tensor.buffer.size) {
        throw new RangeError(
          `read of bytes [${r.offset}, ${r.offset + r.size}) of a ${r.tensor.buffer.size}-byte ` +
            `buffer: offsets and sizes must be multiples of 4 within it`,
        );
      }
    }
    if (ranges.length === 0) return Promise.resolve([]);
    // Group the ranges into staging buffers of at most maxBufferSize bytes.
    const groups: { ranges: BufferRange[]; offsets: number[]; size: number }[] = [];
    for (const r of ranges) {
      const bytes = Math.max(4, r.size);
      let g = groups.at(-1);
      if (!g || g.size + bytes > this.limits.maxBufferSize) {
        groups.push(g = { ranges: [], offsets: [], size: 0 });
      }
      g.ranges.push(r);
      g.offsets.push(g.size);
      g.size += bytes;
    }
    this.#endPass();
    const encoder = this.#currentEncoder();
    const staged = groups.map((g) => {
      const staging = this.device.createBuffer({
        label: "tost.readback",
        size: g.size,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      g.ranges.forEach((r, i) => {
        if (r.size > 0) {
          const at = r.tensor.offset + r.offset;
          encoder.copyBufferToBuffer(r.tensor.buffer, at, staging, g.offsets[i], r.size);
        }
      });
      return staging;
    });
    this.flush();
    const mapped = staged.map((staging) => {
      this.#waits++;
      return staging.mapAsync(GPUMapMode.READ);
    });
    return (async () => {
      try {
        await Promise.all(mapped);
        await nextTask();
        this.checkError();
        return groups.flatMap((g, j) => {
          const all = staged[j].getMappedRange();
          const out = g.ranges.map((r, i) =>
            hostArray(r.tensor.dtype, all.slice(g.offsets[i], g.offsets[i] + r.size))
          );
          staged[j].unmap();
          return out;
        });
      } finally {
        for (const staging of staged) staging.destroy();
      }
    })();
  }

  // ----------------------------------------------------------------- timing

  /**
   * Time the GPU work `fn` records, with timestamp queries written by two
   * empty marker passes around it (timestamps are written once all earlier
   * commands have finished, so the pair brackets exactly this work). Collect
   * the durations with {@linkcode timings}. Without the `timestamp-query`
   * feature the work still runs but is not timed. Regions cannot nest.
   */
  async timed(label: string, fn: () => void | Promise<void>): Promise<void> {
    if (!this.hasTimestamps) {
      await fn();
      return;
    }
    if (this.#timing) throw new Error("Gpu.timed() regions cannot nest");
    if (this.#timedLabels.length >= MAX_TIMED_REGIONS) this.#collectTimings();
    const index = this.#timedLabels.length;
    this.#timedLabels.push(label);
    this.#marker({ beginningOfPassWriteIndex: 2 * index });
    this.#timing = true;
    try {
      await fn();
    } finally {
      this.#timing = false;
      this.#marker({ endOfPassWriteIndex: 2 * index + 1 });
    }
  }

  #marker(
    writes: { beginningOfPassWriteIndex: number } | { endOfPassWriteIndex: number },
    querySet?: GPUQuerySet,
  ): void {
    this.#querySet ??= this.device.createQuerySet({
      type: "timestamp",
      count: 2 * MAX_TIMED_REGIONS,
    });
    this.#endPass();
    this.#currentEncoder()
      .beginComputePass({
        label: "tost.timestamp",
        timestampWrites: { querySet: querySet ?? this.#querySet, ...writes },
      })
      .end();
  }

  /**
   * Start timing every dispatch by kernel name, until
   * {@linkcode stopKernelProfile}: each dispatch then runs in a compute pass
   * of its own with timestamp queries around it (which costs some speed: use
   * it to see where time goes, not to measure totals).
   *
   * @throws {Error} without the `timestamp-query` feature, or when already profiling
   */
  startKernelProfile(): void {
    if (!this.hasTimestamps) {
      throw new Error("Kernel profiles need the timestamp-query feature, which this adapter lacks");
    }
    if (this.#kernelProfile) throw new Error("A kernel profile is already running");
    this.#endPass();
    this.#kernelProfile = new KernelProfiler(this.device);
  }

  /** Stop profiling; per kernel, the dispatches and their GPU time, slowest first. */
  async stopKernelProfile(): Promise<KernelTime[]> {
    const profiler = this.#kernelProfile;
    if (!profiler) throw new Error("No kernel profile is running");
    this.#kernelProfile = null;
    profiler.collect(this);
    const times = await profiler.results();
    this.checkError();
    return times;
  }

  /** @internal for the kernel profiler: the encoder of the current batch (its pass ended). */
  _encoderForProfile(): GPUCommandEncoder {
    this.#endPass();
    return this.#currentEncoder();
  }

  /**
   * Measure alternatives: record each of `runs` `repeats` times (interleaved:
   * run 0, run 1, …, then again) and return each run's durations in ms.
   * Timestamp queries of its own bracket every recording, so regions of
   * {@linkcode timed} are left alone (work profiled inside an open region
   * counts in it). Without `timestamp-query`, each recording is submitted
   * and awaited and wall time is returned (it includes the wait's floor).
   * Waits for the GPU: meant for tuning, not for the step path.
   */
  async profile(
    runs: readonly (() => void | Promise<void>)[],
    repeats = 1,
  ): Promise<number[][]> {
    const out = runs.map(() => [] as number[]);
    if (!this.hasTimestamps) {
      for (let r = 0; r < repeats; r++) {
        for (let i = 0; i < runs.length; i++) {
          await this.sync();
          const t0 = performance.now();
          await runs[i]();
          await this.sync();
          out[i].push(performance.now() - t0);
        }
      }
      return out;
    }
    const count = 2 * runs.length * repeats;
    const querySet = this.device.createQuerySet({ type: "timestamp", count });
    const resolve = this.device.createBuffer({
      label: "tost.profile",
      size: count * 8,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const staging = this.device.createBuffer({
      label: "tost.profile.read",
      size: count * 8,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    try {
      let q = 0;
      for (let r = 0; r < repeats; r++) {
        for (const run of runs) {
          this.#marker({ beginningOfPassWriteIndex: q++ }, querySet);
          await run();
          this.#marker({ endOfPassWriteIndex: q++ }, querySet);
        }
      }
      this.#endPass();
      const encoder = this.#currentEncoder();
      encoder.resolveQuerySet(querySet, 0, count, resolve, 0);
      encoder.copyBufferToBuffer(resolve, 0, staging, 0, count * 8);
      this.flush();
      this.#waits++;
      await staging.mapAsync(GPUMapMode.READ);
      await nextTask();
      this.checkError();
      const ts = new BigUint64Array(staging.getMappedRange().slice(0));
      staging.unmap();
      q = 0;
      for (let r = 0; r < repeats; r++) {
        for (let i = 0; i < runs.length; i++, q += 2) {
          out[i].push(Number(ts[q + 1] - ts[q]) / 1e6);
        }
      }
      return out;
    } finally {
      this.flush();
      querySet.destroy();
      resolve.destroy();
      staging.destroy();
    }
  }

  #collectTimings(): void {
    if (this.#timing) throw new Error("Gpu.timings() called inside a Gpu.timed() region");
    const labels = this.#timedLabels;
    if (labels.length === 0 || !this.#querySet) return;
    this.#timedLabels = [];
    const bytes = labels.length * 16;
    this.#queryResolve ??= this.device.createBuffer({
      label: "tost.timestamps",
      size: 2 * MAX_TIMED_REGIONS * 8,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const staging = this.device.createBuffer({
      label: "tost.timestamps.read",
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = this.#currentEncoder();
    this.#endPass();
    encoder.resolveQuerySet(this.#querySet, 0, 2 * labels.length, this.#queryResolve, 0);
    encoder.copyBufferToBuffer(this.#queryResolve, 0, staging, 0, bytes);
    this.flush();
    this.#waits++;
    this.#pendingTimings.push(
      staging.mapAsync(GPUMapMode.READ).then(() => {
        const ts = new BigUint64Array(staging.getMappedRange().slice(0));
        staging.unmap();
        staging.destroy();
        return labels.map((label, i) => ({
          label,
          ms: Number(ts[2 * i + 1] - ts[2 * i]) / 1e6,
        }));
      }),
    );
  }

  /** Durations of every {@linkcode timed} region since the last call. */
  async timings(): Promise<Timing[]> {
    this.#collectTimings();
    const pending = this.#pendingTimings;
    this.#pendingTimings = [];
    const out = (await Promise.all(pending)).flat();
    this.checkError();
    return out;
  }

  /** Host waits and bind-group reuse so far (for tests and benchmarks). */
  counters(): GpuCounters {
    return { waits: this.#waits, submitMs: this.#submitMs, bindGroups: this.#bindGroups.stats };
  }

  /** Whether a cached bind group binds `t`'s buffer (for tests). @internal */
  _bindGroupCached(t: Tensor): boolean {
    return this.#bindGroups.binds(t.buffer);
  }

  /** Free every tensor and the device. */
  destroy(): void {
    if (this.#destroyed) return;
    for (const t of [...this.#live]) t.destroy();
    for (const t of [...this.#liveTextures]) t.destroy();
    for (const b of this.#pendingDestroy) b.destroy();
    this.#pendingDestroy = [];
    this.#bindGroups.clear();
    this.#destroyed = true;
    this.#uniforms.destroy();
    this.#querySet?.destroy();
    this.#queryResolve?.destroy();
    this.device.destroy();
  }
}

/**
 * What serves {@linkcode Gpu.empty} inside an arena scope.
 * @internal implemented by `Arena` (`arena.ts`)
 */
export interface Allocator {
  _take(shape: readonly number[], dtype: DType, label: string, zero: boolean): Tensor;
}

function writeParams(
  host: ArrayBuffer,
  byteOffset: number,
  params: readonly Param[],
  name: string,
) {
  if (params.length * 4 > UNIFORM_SLOT) {
    throw new RangeError(`Kernel "${name}": more than ${UNIFORM_SLOT / 4} uniform values`);
  }
  const view = new DataView(host, byteOffset, UNIFORM_SLOT);
  params.forEach((p, i) => {
    if (p instanceof F32) view.setFloat32(i * 4, p.value, true);
    else if (p instanceof I32) view.setInt32(i * 4, p.value, true);
    else {
      if (!Number.isInteger(p) || p < 0 || p > 0xffffffff) {
        throw new RangeError(`Kernel "${name}": u32 parameter ${i} is ${p}`);
      }
      view.setUint32(i * 4, p, true);
    }
  });
}

/** The typed array of a dtype over `bytes`. */
function hostArray(dtype: DType, bytes: ArrayBuffer): HostArray {
  return dtype === "f32"
    ? new Float32Array(bytes)
    : dtype === "i32"
    ? new Int32Array(bytes)
    : new Uint32Array(bytes);
}

/** Yield one macrotask: Deno delivers `uncapturederror` events as tasks. */
function nextTask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function firstLine(s: string): string {
  return s.trim().split("\n")[0];
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Human-readable byte count (binary units). */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
