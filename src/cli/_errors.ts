/**
 * Error kinds the CLI maps to exit codes, one rule for every command:
 *
 * | exit | when |
 * | ---- | ---- |
 * | 0    | the work was done |
 * | 1    | the work failed (a GPU error, a NaN loss, no benchmark succeeded) |
 * | 2    | a user mistake: a bad flag, a missing, unreadable or wrong kind of file, an output that would overwrite an input ({@linkcode UsageError}) |
 * | 130  | interrupted (Ctrl-C) ({@linkcode InterruptedError}) |
 *
 * Each prints one `error: …` line.
 *
 * @module
 */

/** Exit codes of `tost`. */
export const EXIT = { ok: 0, failure: 1, usage: 2, interrupted: 130 } as const;

/** A user mistake: wrong flag, missing or unreadable file. Exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The user interrupted the work (Ctrl-C). Exit code 130. */
export class InterruptedError extends Error {
  override name = "InterruptedError";
}

/** Exit code for an error thrown by a command. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof UsageError) return EXIT.usage;
  if (err instanceof InterruptedError) return EXIT.interrupted;
  return EXIT.failure;
}

/** One-line message of an error, with its causes joined by ": ". */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e !== undefined && depth < 8; depth++) {
    const msg = e instanceof Error ? e.message : String(e);
    if (msg && !parts.some((p) => p.includes(msg))) parts.push(msg);
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join(": ");
}
