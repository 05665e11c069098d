/**
 * Element types of safetensors files and conversions between them: byte sizes
 * per dtype, f16/bf16/f64 ↔ f32 (round to nearest, ties to even, NaN kept as
 * NaN), and whole-buffer conversions between float dtypes.
 *
 * All raw buffers are little-endian, as safetensors and PyTorch's zip format
 * store them.
 *
 * @module
 */

/** Element types tost reads and writes, with safetensors' spelling. */
export type StDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<StDType, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
});

/** Every dtype, in a fixed order. */
export const ST_DTYPES: readonly StDType[] = Object.freeze(
  Object.keys(DTYPE_BYTES) as StDType[],
);

/** Float dtypes (the ones {@linkcode toF32} accepts). */
export const FLOAT_DTYPES: readonly StDType[] = Object.freeze(["F64", "F32", "F16", "BF16"]);

/**
 * Whether `s` names a dtype tost knows.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isStDType } from "./dtype.ts";
 * assert.ok(isStDType("BF16") && !isStDType("F8_E4M3"));
 * ```
 */
export function isStDType(s: unknown): s is StDType {
  return typeof s === "string" && Object.hasOwn(DTYPE_BYTES, s);
}

/** Whether `dtype` is a floating-point dtype. */
export function isFloatDType(dtype: StDType): boolean {
  return dtype === "F64" || dtype === "F32" || dtype === "F16" || dtype === "BF16";
}

/** Bytes per element of `dtype`; throws TypeError for an unknown one. */
export function dtypeSize(dtype: StDType): number {
  if (!isStDType(dtype)) throw new TypeError(`Unknown dtype ${JSON.stringify(dtype)}`);
  return DTYPE_BYTES[dtype];
}

/**
 * Number of elements of a tensor of `shape` (1 for a 0-dim tensor).
 * Throws RangeError when a dimension is not a non-negative integer or the
 * product exceeds 2^53.
 */
export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new RangeError(`Invalid dimension ${d} in shape [${shape.join(", ")}]`);
    }
    n *= d;
    if (!Number.isSafeInteger(n)) {
      throw new RangeError(`Shape [${shape.join(", ")}] has more than 2^53 elements`);
    }
  }
  return n;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * The f32 value of IEEE half-precision bits `h` (exact).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { f16BitsToF32 } from "./dtype.ts";
 * assert.ok(f16BitsToF32(0x3c00) === 1 && f16BitsToF32(0xc000) === -2);
 * ```
 */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/**
 * The IEEE half-precision bits nearest to `x` (ties to even; overflow to
 * ±Infinity; NaN becomes a quiet NaN).
 */
export function f32ToF16Bits(x: number): number {
  // Round the f64 input to f32 first, as a cast from an f32 tensor would.
  f32Scratch[0] = x;
  const bits = u32Scratch[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): shift the full mantissa with its hidden bit.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    const up = rem > mid || (rem === mid && (half & 1) === 1) ? 1 : 0;
    return sign | (half + up);
  }
  const half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  const up = rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1) ? 1 : 0;
  // A carry out of the mantissa correctly bumps the exponent (up to Infinity).
  return sign | (half + up);
}

/** The f32 value of bfloat16 bits `b` (exact). */
export function bf16BitsToF32(b: number): number {
  u32Scratch[0] = (b & 0xffff) << 16;
  return f32Scratch[0];
}

/** The bfloat16 bits nearest to `x` (ties to even; NaN stays a quiet NaN). */
export function f32ToBf16Bits(x: number): number {
  f32Scratch[0] = x;
  const bits = u32Scratch[0];
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) {
    return ((bits >>> 16) | 0x40) & 0xffff;
  }
  const lsb = (bits >>> 16) & 1;
  return ((bits + 0x7fff + lsb) >>> 16) & 0xffff;
}

/** A view of `bytes` as `T`, copying only when the offset is misaligned. */
function aligned(bytes: Uint8Array, align: number): Uint8Array<ArrayBuffer> {
  if (bytes.byteOffset % align === 0 && bytes.buffer instanceof ArrayBuffer) {
    return bytes as Uint8Array<ArrayBuffer>;
  }
  return bytes.slice();
}

function checkLength(bytes: Uint8Array, dtype: StDType, count?: number): number {
  const size = DTYPE_BYTES[dtype];
  if (bytes.length % size !== 0) {
    throw new RangeError(`${bytes.length} bytes is not a whole number of ${dtype} elements`);
  }
  const n = bytes.length / size;
  if (count !== undefined && count !== n) {
    throw new RangeError(`Expected ${count} ${dtype} elements, got ${n}`);
  }
  return n;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
if (!LITTLE_ENDIAN) throw new Error("tost needs a little-endian host");

/**
 * Decode little-endian float bytes of `dtype` (F64, F32, F16, BF16) into a new
 * Float32Array. F64 values are rounded to nearest f32. Integer and bool
 * dtypes are rejected with a TypeError: they are not silently reinterpreted.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toF32 } from "./dtype.ts";
 * const v = toF32("F16", new Uint8Array([0x00, 0x3c, 0x00, 0xc0]));
 * assert.ok(v[0] === 1 && v[1] === -2);
 * ```
 */
export function toF32(dtype: StDType, bytes: Uint8Array): Float32Array<ArrayBuffer> {
  const n = checkLength(bytes, dtype);
  switch (dtype) {
    case "F32": {
      const src = aligned(bytes, 4);
      return new Float32Array(src.buffer, src.byteOffset, n).slice();
    }
    case "F64": {
      const src = aligned(bytes, 8);
      return Float32Array.from(new Float64Array(src.buffer, src.byteOffset, n));
    }
    case "F16": {
      const src = aligned(bytes, 2);
      const h = new Uint16Array(src.buffer, src.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f16BitsToF32(h[i]);
      return out;
    }
    case "BF16": {
      const src = aligned(bytes, 2);
      const h = new Uint16Array(src.buffer, src.byteOffset, n);
      const out = new Float32Array(n);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = h[i] << 16;
      return out;
    }
    default:
      throw new TypeError(`Cannot read ${dtype} data as float32: it is not a float dtype`);
  }
}

/**
 * Encode `values` as little-endian bytes of float `dtype` (rounded to nearest,
 * ties to even). Throws TypeError for a non-float dtype.
 */
export function fromF32(dtype: StDType, values: ArrayLike<number>): Uint8Array<ArrayBuffer> {
  const n = values.length;
  switch (dtype) {
    case "F32":
      return new Uint8Array(Float32Array.from(values).buffer);
    case "F64":
      return new Uint8Array(Float64Array.from(values).buffer);
    case "F16": {
      const h = new Uint16Array(n);
      for (let i = 0; i < n; i++) h[i] = f32ToF16Bits(values[i]);
      return new Uint8Array(h.buffer);
    }
    case "BF16": {
      const h = new Uint16Array(n);
      for (let i = 0; i < n; i++) h[i] = f32ToBf16Bits(values[i]);
      return new Uint8Array(h.buffer);
    }
    default:
      throw new TypeError(`Cannot encode float values as ${dtype}: it is not a float dtype`);
  }
}

/**
 * Convert raw float bytes from one float dtype to another. Same dtype returns
 * `bytes` unchanged. Conversions to narrower types round to nearest even
 * (through f32, as PyTorch's `.to()` does for f16/bf16 from f32 data; an F64
 * source is first rounded to f32). Non-float dtypes throw a TypeError.
 */
export function convertFloatBytes(bytes: Uint8Array, from: StDType, to: StDType): Uint8Array {
  if (from === to) return bytes;
  if (!isFloatDType(from) || !isFloatDType(to)) {
    throw new TypeError(`Cannot convert ${from} data to ${to}: only float dtypes convert`);
  }
  if (from === "F64" && (to === "F16" || to === "BF16")) {
    // Round directly from f64 to avoid double rounding through f32.
    const src = aligned(bytes, 8);
    const v = new Float64Array(src.buffer, src.byteOffset, checkLength(bytes, from));
    const h = new Uint16Array(v.length);
    for (let i = 0; i < v.length; i++) {
      h[i] = to === "F16" ? f64ToF16Bits(v[i]) : f64ToBf16Bits(v[i]);
    }
    return new Uint8Array(h.buffer);
  }
  return fromF32(to, toF32(from, bytes));
}

/** Round an f64 to half bits without passing through f32 (no double rounding). */
export function f64ToF16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00; // rounds to Infinity
  if (a < 2 ** -14) {
    // Subnormal: units of 2^-24, round half to even.
    const q = a * 2 ** 24;
    return sign | roundHalfEven(q);
  }
  const e = Math.floor(Math.log2(a));
  let ex = e;
  // Guard log2 inaccuracy.
  if (2 ** ex > a) ex--;
  else if (2 ** (ex + 1) <= a) ex++;
  const m = roundHalfEven((a / 2 ** ex - 1) * 1024);
  return sign | (((ex + 15) << 10) + m);
}

/** Round an f64 to bfloat16 bits without passing through f32 (no double rounding). */
export function f64ToBf16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7fc0;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  // Largest bf16 is (2 - 2^-7) * 2^127; halfway to 2^128 rounds to Infinity.
  if (a >= (2 - 2 ** -8) * 2 ** 127) return sign | 0x7f80;
  if (a < 2 ** -126) {
    const q = a * 2 ** 133; // units of 2^-133
    return sign | roundHalfEven(q);
  }
  let ex = Math.floor(Math.log2(a));
  if (2 ** ex > a) ex--;
  else if (2 ** (ex + 1) <= a) ex++;
  const m = roundHalfEven((a / 2 ** ex - 1) * 128);
  return sign | (((ex + 127) << 7) + m);
}

function roundHalfEven(q: number): number {
  const f = Math.floor(q);
  const r = q - f;
  if (r > 0.5) return f + 1;
  if (r < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}
