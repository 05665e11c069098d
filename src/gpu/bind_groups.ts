/**
 * Reuse of bind groups across dispatches.
 *
 * Creating a bind group costs ~9–14 µs of host time on lavapipe, about as
 * much as the GPU spends on a small dispatch, and a training step records
 * hundreds of dispatches. The buffers a step binds are the same every step
 * (parameters, gradients, and the arena's buffers handed out in the same
 * order), and so are the uniform slots (the runtime fills its uniform buffer
 * from slot 0 after every submit), so the bind groups of one step fit the
 * next: this cache hands them out again.
 *
 * A bind group is found by its pipeline and every entry's binding, buffer,
 * offset and size (or texture view). Buffers and views are named by an
 * identity number that is never reused, and {@linkcode BindGroupCache.forget}
 * drops every group that binds a buffer (or a texture's view) when the
 * runtime destroys it, so a destroyed resource is never bound from the
 * cache. The cache holds at most `capacity` groups (the oldest go
 * first), so passes of ever-changing sizes cannot grow it without bound.
 *
 * @module
 */

/** A storage or uniform binding of a whole or partial buffer. */
export interface BufferEntry {
  binding: number;
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** A storage-texture binding (forget its view when the texture is destroyed). */
export interface TextureEntry {
  binding: number;
  view: GPUTextureView;
}

/** One entry of a cached bind group. */
export type CachedEntry = BufferEntry | TextureEntry;

/** Hits, misses and size of a {@linkcode BindGroupCache}. */
export interface BindGroupStats {
  /** Lookups served from the cache. */
  hits: number;
  /** Lookups that created a bind group. */
  misses: number;
  /** Bind groups held now. */
  cached: number;
}

interface Cached {
  group: GPUBindGroup;
  /** The buffers and texture views it binds. */
  resources: readonly object[];
}

/** Bind groups by pipeline and bound buffer ranges (see the module notes). */
export class BindGroupCache {
  readonly #device: GPUDevice;
  readonly #groups = new Map<string, Cached>();
  readonly #byResource = new Map<object, Set<string>>();
  readonly #ids = new WeakMap<object, number>();
  #nextId = 1;
  #hits = 0;
  #misses = 0;

  /** @param capacity most bind groups held at once */
  constructor(device: GPUDevice, readonly capacity = 8192) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`BindGroupCache: capacity must be a positive integer, got ${capacity}`);
    }
    this.#device = device;
  }

  #id(o: object): number {
    let id = this.#ids.get(o);
    if (id === undefined) {
      id = this.#nextId++;
      this.#ids.set(o, id);
    }
    return id;
  }

  /** The bind group of `entries` for group 0 of `pipeline`: cached, or made now and cached. */
  get(pipeline: GPUComputePipeline, label: string, entries: readonly CachedEntry[]): GPUBindGroup {
    let key = `${this.#id(pipeline)}`;
    for (const e of entries) {
      key += "view" in e
        ? `|${e.binding}:${this.#id(e.view)}`
        : `|${e.binding}:${this.#id(e.buffer)}:${e.offset}:${e.size}`;
    }
    const found = this.#groups.get(key);
    if (found) {
      this.#hits++;
      return found.group;
    }
    this.#misses++;
    const group = this.#device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: entries.map((e) => ({
        binding: e.binding,
        resource: "view" in e ? e.view : { buffer: e.buffer, offset: e.offset, size: e.size },
      })),
    });
    if (this.#groups.size >= this.capacity) this.#evict(this.#groups.keys().next().value!);
    const resources = [...new Set(entries.map((e) => "view" in e ? e.view : e.buffer))];
    this.#groups.set(key, { group, resources });
    for (const r of resources) {
      let keys = this.#byResource.get(r);
      if (!keys) this.#byResource.set(r, keys = new Set());
      keys.add(key);
    }
    return group;
  }

  #evict(key: string): void {
    const cached = this.#groups.get(key);
    if (!cached) return;
    this.#groups.delete(key);
    for (const r of cached.resources) {
      const keys = this.#byResource.get(r);
      keys?.delete(key);
      if (keys?.size === 0) this.#byResource.delete(r);
    }
  }

  /**
   * Drop every bind group that binds `resource`, a buffer or a texture view
   * (call it when the buffer or texture is destroyed).
   */
  forget(resource: GPUBuffer | GPUTextureView): void {
    const keys = this.#byResource.get(resource);
    if (!keys) return;
    for (const key of [...keys]) this.#evict(key);
    this.#byResource.delete(resource);
  }

  /** Whether any cached bind group binds `resource` (for tests). */
  binds(resource: GPUBuffer | GPUTextureView): boolean {
    return this.#byResource.has(resource);
  }

  /** Drop everything. */
  clear(): void {
    this.#groups.clear();
    this.#byResource.clear();
  }

  /** Hits, misses and groups held. */
  get stats(): BindGroupStats {
    return { hits: this.#hits, misses: this.#misses, cached: this.#groups.size };
  }
}
