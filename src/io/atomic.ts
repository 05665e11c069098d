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

/**
 * The error to report when writing `path` through its temporary file failed:
 * it names `path` (never the temporary name) and says why in words.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writeError } from "./atomic.ts";
 * const e = writeError("nodir/out.st", new Deno.errors.NotFound("open 'nodir/.out.st.x.tmp'"));
 * assert.equal(e.message, 'Cannot write "nodir/out.st": its directory does not exist');
 * ```
 */
export function writeError(path: string, err: unknown): Error {
  const why = err instanceof Deno.errors.NotFound
    ? "its directory does not exist"
    : err instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : err instanceof Deno.errors.IsADirectory
    ? "it is a directory"
    : (err instanceof Error ? err.message : String(err)).replace(/'[^']*\.tmp'/g, `"${path}"`);
  return new Error(`Cannot write "${path}": ${why}`, { cause: err });
}
