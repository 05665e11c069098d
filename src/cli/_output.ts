/**
 * Output helpers that honour terminals: colour only on a TTY without
 * `NO_COLOR`, progress bars only on a TTY.
 *
 * @module
 */

/** Whether stderr is an interactive terminal (progress bars go there). */
export function stderrIsTerminal(): boolean {
  return Deno.stderr.isTerminal();
}

/** Whether colour may be used on stdout. */
export function useColor(): boolean {
  return Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
}

/** Print a JSON value on stdout, pretty and newline-terminated. */
export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}
