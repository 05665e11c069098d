import assert from "node:assert/strict";
import { logLogSlope, median } from "../../src/bench/stats.ts";

Deno.test("median of odd and even lists", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.throws(() => median([]), RangeError);
});

Deno.test("log-log slope recovers power laws and skips unusable points", () => {
  const n = [256, 1024, 4096, 16384];
  assert.ok(Math.abs(logLogSlope(n, n.map((x) => 3 * x))! - 1) < 1e-12);
  assert.ok(Math.abs(logLogSlope(n, n.map((x) => 0.5 * x * x))! - 2) < 1e-12);
  assert.equal(logLogSlope([1], [1]), null);
  assert.equal(logLogSlope([1, 2], [0, 0]), null);
  assert.ok(Math.abs(logLogSlope([1, 2, 4, 8], [0, 2, 4, 8])! - 1) < 1e-12);
});
