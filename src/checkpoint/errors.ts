/**
 * The error every unreadable, corrupt, unsupported or hostile checkpoint
 * raises: `Cannot read checkpoint "<file>": <what and where>`.
 *
 * @module
 */

/**
 * A checkpoint tost refuses to read. `file` is the path as given, `detail`
 * says what is wrong and where (zip entry, byte offset, tensor name).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CheckpointError } from "./errors.ts";
 * const e = new CheckpointError("m.pt", "unsupported storage type \"torch.ComplexFloatStorage\"");
 * assert.ok(e.message === 'Cannot read checkpoint "m.pt": unsupported storage type "torch.ComplexFloatStorage"');
 * ```
 */
export class CheckpointError extends Error {
  override name = "CheckpointError";
  /** The checkpoint's path as given. */
  readonly file: string;
  /** What is wrong and where, without the file name. */
  readonly detail: string;

  constructor(file: string, detail: string, options?: ErrorOptions) {
    super(`Cannot read checkpoint "${file}": ${detail}`, options);
    this.file = file;
    this.detail = detail;
  }
}

/**
 * A problem found below the file level (in a pickle, a zip entry, a tensor),
 * before the file name is known; {@linkcode CheckpointError} wraps it.
 * Internal code throws this; public functions only let CheckpointError out.
 */
export class CheckpointFormatError extends Error {
  override name = "CheckpointFormatError";
}
