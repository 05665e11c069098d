/**
 * Causal softmax attention for decoding (GPT): the keys and values of every
 * token seen so far are kept in a cache, so each new token costs one pass
 * over the cache (O(n·C)) instead of a forward over the whole context
 * (O(n²·C) for attention, O(n·C²) for the projections).
 *
 * GPU kernel: `kernels/kv_cache_attention.wgsl` (`append` writes the new
 * keys and values into the cache, `attend` runs one workgroup per new token
 * and head with its scores in workgroup memory).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import kvWgsl from "../../kernels/kv_cache_attention.wgsl" with { type: "text" };
import { assertF32 } from "./_shapes.ts";

const WORKGROUP_SIZE = 64;

/**
 * Keys and values of B sequences that have all consumed `position` tokens,
 * `[B, H, capacity, d]` each. Create with {@linkcode createKvCache}.
 */
export interface KvCache {
  readonly batches: number;
  readonly heads: number;
  readonly headDim: number;
  /** Positions the cache holds (the model's block_size). */
  readonly capacity: number;
  readonly k: Tensor;
  readonly v: Tensor;
  /** Tokens consumed so far: the position of the next token. */
  position: number;
}

/** An empty cache for B sequences of H heads of d features, up to `capacity` tokens. */
export function createKvCache(
  gpu: Gpu,
  batches: number,
  heads: number,
  headDim: number,
  capacity: number,
): KvCache {
  for (const [key, v] of Object.entries({ batches, heads, headDim, capacity })) {
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(`createKvCache: ${key} must be a positive integer, got ${v}`);
    }
  }
  const shared = (capacity + WORKGROUP_SIZE + headDim) * 4;
  const maxShared = gpu.limits.maxComputeWorkgroupStorageSize;
  if (shared > maxShared) {
    throw new RangeError(
      `createKvCache: ${capacity} cached positions need ${shared} bytes of workgroup memory, ` +
        `the device allows ${maxShared}`,
    );
  }
  const shape = [batches, heads, capacity, headDim];
  for (const what of ["keys", "values"]) {
    gpu.assertBindable(`KV cache ${what}`, shape.reduce((a, b) => a * b, 4));
  }
  const k = gpu.empty(shape, "f32", "kvCache.k");
  const v = gpu.empty(shape, "f32", "kvCache.v");
  return { batches, heads, headDim, capacity, k, v, position: 0 };
}

/** Free a cache's tensors. */
export function destroyKvCache(cache: KvCache): void {
  cache.k.destroy();
  cache.v.destroy();
}

/**
 * Append T new tokens of each of B sequences to the cache and attend:
 * `qkv` `[B, T, 3·C]` (the `c_attn` projection of the new tokens, last
 * dimension `(3, H, d)`) → `y` `[B, T, C]`, equal to rows
 * `position … position+T−1` of causal {@linkcode softmaxAttention} over the
 * whole sequence. Advances `cache.position` by T. Records two dispatches.
 *
 * @throws {RangeError} when the tokens would pass the cache's capacity
 * @throws {TypeError} when `qkv` does not match the cache
 * @example
 * ```ts ignore
 * const cache = createKvCache(gpu, 1, 4, 16, 64);
 * const y = await kvCacheAttention(gpu, qkv, cache); // qkv [1, 1, 192] → y [1, 1, 64]
 * ```
 */
export async function kvCacheAttention(gpu: Gpu, qkv: Tensor, cache: KvCache): Promise<Tensor> {
  const op = "kvCacheAttention";
  assertF32(op, "qkv", qkv);
  const { batches: B, heads: H, headDim: d, capacity } = cache;
  const C = H * d;
  if (qkv.shape.length !== 3 || qkv.shape[0] !== B || qkv.shape[2] !== 3 * C) {
    throw new TypeError(`${op}: qkv must have shape [${B}, T, ${3 * C}], got [${qkv.shape}]`);
  }
  assertF32(op, "cache", cache.k);
  assertF32(op, "cache", cache.v);
  const T = qkv.shape[1];
  if (cache.position + T > capacity) {
    throw new RangeError(
      `${op}: tokens at positions ${cache.position}…${cache.position + T - 1} pass ` +
        `the cache's ${capacity} positions`,
    );
  }
  gpu.assertBindable(`${op}: qkv`, qkv.byteSize);
  const y = gpu.empty([B, T, C], "f32", "kvCacheAttention.y");
  if (B * T === 0) return y;
  try {
    const slots = { heads: H, headDim: d, capacity, workgroupSize: WORKGROUP_SIZE };
    const [append, attend] = await Promise.all([
      gpu.kernel("kv_cache_attention", kvWgsl, slots, "append"),
      gpu.kernel("kv_cache_attention", kvWgsl, slots, "attend"),
    ]);
    const params = [T, cache.position, B, f32(1 / Math.sqrt(d))];
    gpu.dispatch(append, {
      bindings: [qkv, cache.k, cache.v],
      params,
      workgroups: Math.ceil((B * T * C) / WORKGROUP_SIZE),
    });
    gpu.dispatch(attend, {
      bindings: [qkv, cache.k, cache.v, y],
      params,
      workgroups: B * H * T,
    });
  } catch (err) {
    y.destroy();
    throw err;
  }
  cache.position += T;
  return y;
}
