/**
 * Shape checks shared by the softmax-attention ops (standard, flash, class).
 *
 * Their input is the packed projection output `qkv [B, N, 3·C]` whose last
 * dimension is `(3, H, d)`: q, k and v, each split into `H` heads of `d`
 * values (`C = H·d`), as nanoGPT's `c_attn` and timm's ViT `qkv` produce it.
 *
 * @module
 */

import type { Tensor } from "../gpu/runtime.ts";
import { assertF32 } from "./_shapes.ts";

/** Sizes of a packed `qkv` tensor. */
export interface AttentionShape {
  /** Batch size. */
  B: number;
  /** Tokens. */
  N: number;
  /** Heads. */
  H: number;
  /** Head size. */
  d: number;
  /** Width of q, k, v and of the output: `H·d`. */
  C: number;
}

/** Largest head size the GPU kernels are built for. */
export const MAX_HEAD_DIM = 128;

/**
 * Check a GPU `qkv` tensor `[B, N, 3·C]` and a head count.
 *
 * @throws {TypeError} for a wrong dtype or rank, or a last dimension that is
 *   not a multiple of `3·heads`.
 * @throws {RangeError} when the head size exceeds {@linkcode MAX_HEAD_DIM}.
 */
export function qkvShape(op: string, qkv: Tensor, heads: number): AttentionShape {
  assertF32(op, "qkv", qkv);
  if (qkv.shape.length !== 3) {
    throw new TypeError(`${op}: qkv must have shape [B, N, 3·C], got [${qkv.shape}]`);
  }
  if (!Number.isInteger(heads) || heads <= 0) {
    throw new TypeError(`${op}: heads must be a positive integer, got ${heads}`);
  }
  const [B, N, C3] = qkv.shape;
  if (C3 === 0 || C3 % (3 * heads) !== 0) {
    throw new TypeError(
      `${op}: the last dimension of qkv (${C3}) must be a positive multiple of 3·heads = ${
        3 * heads
      }`,
    );
  }
  const d = C3 / (3 * heads);
  if (d > MAX_HEAD_DIM) {
    throw new RangeError(`${op}: head size ${d} exceeds the supported maximum ${MAX_HEAD_DIM}`);
  }
  return { B, N, H: heads, d, C: C3 / 3 };
}
