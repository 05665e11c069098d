/**
 * Error kinds the CLI maps to exit codes: a {@linkcode UsageError} is the
 * user's mistake (bad flag, unreadable input file) and exits 2; anything else
 * is a failure and exits 1. Both print one `error: …` line.
 *
 * @module
 */

/** A user mistake: wrong flag, missing or unreadable file. Exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Exit code for an error thrown by a command. */
export function exitCodeOf(err: unknown): number {
  return err instanceof UsageError ? 2 : 1;
}

/** One-line message of an error, with its causes joined by ": ". */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e !== undefined && depth < 8; depth++) {
    const msg = e instanceof Error ? e.message : String(e);
    if (msg && !parts.includes(msg)) parts.push(msg);
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join(": ");
}
