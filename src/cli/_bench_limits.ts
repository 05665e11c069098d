/**
 * Sizes `tost bench` can never run on an adapter, told before any work: the
 * largest tensor a module must allocate at a length (tokens `[B, N, D]`,
 * softmax's packed `[B, N, 3D]`, standard softmax's scores `[B, H, N, N]`;
 * for `--model` the stem's first feature map and the MLP's hidden layer)
 * against the adapter's `maxBufferSize`. These are lower bounds of what a run
 * needs, so a size refused here could not have run.
 *
 * @module
 */

import { formatBytes } from "../gpu/runtime.ts";
import type { OperatorName } from "../bench/operators.ts";

/** Sizes of an operator run. */
export interface BenchShape {
  batch: number;
  dim: number;
  heads: number;
}

/** The largest tensor an operator's module allocates at length `n`. */
export function largestOperatorTensor(
  op: OperatorName,
  s: BenchShape,
  n: number,
): { bytes: number; shape: number[]; what: string } {
  const candidates = [
    { shape: [s.batch, n, s.dim], what: "token" },
    ...(op.includes("softmax") ? [{ shape: [s.batch, n, 3 * s.dim], what: "packed q/k/v" }] : []),
    ...(op === "softmax" || op === "causal-softmax"
      ? [{ shape: [s.batch, s.heads, n, n], what: "N×N score" }]
      : []),
  ].map((c) => ({ ...c, bytes: c.shape.reduce((a, b) => a * b, 4) }));
  return candidates.reduce((a, b) => (b.bytes > a.bytes ? b : a));
}

/**
 * Why `op` cannot run at `n` on an adapter allowing `maxBuffer` bytes per
 * buffer, or null when it may.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { operatorLimit } from "./_bench_limits.ts";
 * const s = { batch: 1, dim: 384, heads: 8 };
 * assert.equal(operatorLimit("tssa", s, 1024, 2 ** 31), null);
 * assert.match(operatorLimit("softmax", s, 65536, 2 ** 31)!, /^needs a 128\.0 GiB N×N score/);
 * ```
 */
export function operatorLimit(
  op: OperatorName,
  s: BenchShape,
  n: number,
  maxBuffer: number,
): string | null {
  const t = largestOperatorTensor(op, s, n);
  if (t.bytes <= maxBuffer) return null;
  return `needs a ${formatBytes(t.bytes)} ${t.what} tensor [${t.shape.join(", ")}]; this ` +
    `adapter allows ${formatBytes(maxBuffer)} per buffer (maxBufferSize)`;
}

/** Why whole-model benchmarks cannot run at an image side, or null. */
export function imageLimit(side: number, batch: number, maxBuffer: number): string | null {
  const stem = batch * 48 * Math.ceil(side / 2) ** 2 * 4; // ToST-S/ViT-S stem: 48 channels at ½
  const hidden = batch * Math.ceil(side / 16) ** 2 * 1536 * 4; // MLP hidden, 4 × 384
  const bytes = Math.max(stem, hidden);
  if (bytes <= maxBuffer) return null;
  return `${side}px images need a ${formatBytes(bytes)} feature map; this adapter allows ` +
    `${formatBytes(maxBuffer)} per buffer (maxBufferSize)`;
}
