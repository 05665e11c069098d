/**
 * Ctrl-C (SIGINT, and SIGTERM/SIGHUP where the platform has them) for every
 * command. `main.ts` installs {@linkcode watchInterrupts}; a command that can
 * stop cleanly (train saves a checkpoint, convert removes its partial file)
 * takes the first interrupt with {@linkcode onInterrupt}. Otherwise, and on a
 * second interrupt, the progress bar is erased, `error: interrupted` printed
 * and the process exits 130 through the callback `main.ts` gives.
 *
 * @module
 */

import { eraseActiveBar } from "./_progress.ts";

let handler: (() => void) | null = null;

/**
 * Take the next interrupt: `fn` runs instead of the default exit. Returns the
 * function that gives it back (call it in a `finally`).
 */
export function onInterrupt(fn: () => void): () => void {
  handler = fn;
  return () => {
    if (handler === fn) handler = null;
  };
}

/**
 * Listen for interrupts until the returned function is called. `exit` is
 * called with 130 when an interrupt is not taken by a command.
 */
export function watchInterrupts(exit: (code: number) => void): () => void {
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT"]
    : ["SIGINT", "SIGTERM", "SIGHUP"];
  const listen = () => {
    const take = handler;
    if (take) {
      handler = null; // a second interrupt exits at once
      take();
      return;
    }
    eraseActiveBar();
    console.error("error: interrupted");
    exit(130);
  };
  const added: Deno.Signal[] = [];
  for (const s of signals) {
    try {
      Deno.addSignalListener(s, listen);
      added.push(s);
    } catch { /* not available here */ }
  }
  return () => {
    for (const s of added) Deno.removeSignalListener(s, listen);
  };
}
