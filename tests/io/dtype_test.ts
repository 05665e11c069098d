import assert from "node:assert/strict";
import {
  bf16BitsToF32,
  convertFloatBytes,
  dtypeSize,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  f64ToBf16Bits,
  f64ToF16Bits,
  fromF32,
  isStDType,
  numelOf,
  ST_DTYPES,
  toF32,
} from "../../src/io/dtype.ts";

Deno.test("byte sizes per dtype", () => {
  assert.deepEqual(
    Object.fromEntries(ST_DTYPES.map((d) => [d, dtypeSize(d)])),
    { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 },
  );
  assert.ok(!isStDType("F8_E5M2") && !isStDType("toString") && !isStDType(4));
  assert.throws(() => dtypeSize("C64" as never), TypeError);
});

Deno.test("numelOf", () => {
  assert.equal(numelOf([]), 1);
  assert.equal(numelOf([3, 0, 5]), 0);
  assert.equal(numelOf([2, 3, 4]), 24);
  assert.throws(() => numelOf([-1]), RangeError);
  assert.throws(() => numelOf([2 ** 30, 2 ** 30, 2 ** 30]), RangeError);
});

Deno.test("f16 decoding of special and boundary values", () => {
  const cases: [number, number][] = [
    [0x0000, 0],
    [0x3c00, 1],
    [0xc000, -2],
    [0x7bff, 65504],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
    [0x3555, 0.333251953125],
  ];
  for (const [bits, v] of cases) assert.equal(f16BitsToF32(bits), v, bits.toString(16));
  assert.ok(Object.is(f16BitsToF32(0x8000), -0));
  assert.ok(Number.isNaN(f16BitsToF32(0x7e00)));
});

Deno.test("f16 encoding rounds to nearest even and round-trips every half", () => {
  for (let h = 0; h < 0x10000; h++) {
    const v = f16BitsToF32(h);
    if (Number.isNaN(v)) {
      assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(v))));
      continue;
    }
    assert.equal(f32ToF16Bits(v), h, `half 0x${h.toString(16)}`);
    assert.equal(f64ToF16Bits(v), h, `half 0x${h.toString(16)} via f64`);
  }
  // Ties: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 → even (1).
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00);
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(f32ToF16Bits(65520), 0x7c00, "halfway above max rounds to infinity");
  assert.equal(f32ToF16Bits(65519), 0x7bff);
  assert.equal(f32ToF16Bits(2 ** -25), 0, "halfway to the smallest subnormal rounds to even 0");
  assert.equal(f32ToF16Bits(3 * 2 ** -25), 2);
  assert.equal(f32ToF16Bits(1e-10), 0);
  assert.equal(f32ToF16Bits(-1e10), 0xfc00);
  assert.equal(f64ToF16Bits(65520), 0x7c00);
  assert.equal(f64ToF16Bits(2 ** -25 * 1.0000001), 1, "just over halfway rounds up");
});

Deno.test("bf16 conversions", () => {
  assert.equal(bf16BitsToF32(0x3f80), 1);
  assert.equal(bf16BitsToF32(0xc040), -3);
  assert.equal(bf16BitsToF32(0x7f80), Infinity);
  for (let h = 0; h < 0x10000; h += 7) {
    const v = bf16BitsToF32(h);
    if (Number.isNaN(v)) continue;
    assert.equal(f32ToBf16Bits(v), h);
    assert.equal(f64ToBf16Bits(v), h);
  }
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80, "tie to even");
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN))));
  assert.equal(f64ToBf16Bits(3.4e38), 0x7f80);
});

Deno.test("toF32 / fromF32 / convertFloatBytes", () => {
  const vals = [0, 1, -2.5, 1024, 0.1];
  const f64 = new Uint8Array(new Float64Array(vals).buffer);
  assert.deepEqual([...toF32("F64", f64)], vals.map(Math.fround));
  // Misaligned input is copied, not misread.
  const odd = new Uint8Array(f64.length + 1);
  odd.set(f64, 1);
  assert.deepEqual([...toF32("F64", odd.subarray(1))], vals.map(Math.fround));
  const f32 = fromF32("F32", vals);
  assert.deepEqual([...toF32("F32", f32)], vals.map(Math.fround));
  const h = convertFloatBytes(f32, "F32", "F16");
  assert.deepEqual([...toF32("F16", h)], [0, 1, -2.5, 1024, 0.0999755859375]);
  const b = convertFloatBytes(f64, "F64", "BF16");
  assert.deepEqual([...toF32("BF16", b)], [0, 1, -2.5, 1024, 0.10009765625]);
  assert.equal(convertFloatBytes(f32, "F32", "F32"), f32);
  assert.throws(() => convertFloatBytes(f32, "I32", "F32"), TypeError);
  assert.throws(() => toF32("I64", new Uint8Array(8)), TypeError);
  assert.throws(() => toF32("F32", new Uint8Array(6)), RangeError);
  assert.throws(() => fromF32("U8", [1]), TypeError);
});
