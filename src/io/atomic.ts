/**
 * Helpers for writing files atomically: write a temporary file in the
 * destination's directory (same filesystem), then rename it into place.
 *
 * @module
 */

/**
 * A fresh temporary path beside `path`: same directory, hidden, ending in
 * `.tmp` (so `.gitignore` and a rename within one filesystem both work).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { atomicTempPath } from "./atomic.ts";
 * assert.ok(atomicTempPath("out/model.safetensors").startsWith("out/.model.safetensors."));
 * ```
 */
export function atomicTempPath(path: string): string {
  const slash = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  const dir = path.slice(0, slash + 1);
  const base = path.slice(slash + 1);
  const rand = crypto.getRandomValues(new Uint32Array(2));
  return `${dir}.${base}.${rand[0].toString(36)}${rand[1].toString(36)}.tmp`;
}
