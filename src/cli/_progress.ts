/**
 * A one-line progress bar on a terminal's stderr that log lines can be
 * printed above without leaving old bars on screen: every draw erases the
 * line first (`\r` + erase-line), a log line replaces the bar and the bar is
 * drawn again under it, the final state is drawn once, and an interrupt
 * erases the line so the shell prompt starts clean. The cursor is never
 * hidden, so nothing needs restoring if the process dies.
 *
 * Written here rather than taken from cli-progress, which cannot print above
 * itself (stopping and restarting it leaves every old bar on screen) and
 * draws its last state a second time on stop.
 *
 * Not on a terminal (piped, redirected), every method does nothing: callers
 * print plain progress lines instead.
 *
 * @module
 */

const ERASE_LINE = "\r\x1b[2K";
const encoder = new TextEncoder();

/** The bar currently on screen, erased on interrupt (see {@linkcode eraseActiveBar}). */
let active: ProgressBar | null = null;

function write(text: string): void {
  const bytes = encoder.encode(text);
  for (let done = 0; done < bytes.length;) done += Deno.stderr.writeSync(bytes.subarray(done));
}

function columns(): number {
  try {
    const { columns } = Deno.consoleSize();
    return columns >= 20 ? columns : 80; // a pseudo-terminal may report 0
  } catch {
    return 80;
  }
}

/** Options of a {@linkcode ProgressBar}. */
export interface ProgressBarOptions {
  /** Word before the bar: "training", "evaluating". */
  label: string;
  total: number;
  /** Show `45%` instead of `value/total`. */
  percent?: boolean;
  /** Draw even when stderr is not a terminal (tests). */
  force?: boolean;
}

/** A progress bar on stderr (see the module doc). */
export class ProgressBar {
  readonly enabled: boolean;
  #value = 0;
  #suffix = "";
  #lastDraw = 0;
  #drawn = false;
  #closed = false;

  constructor(readonly options: ProgressBarOptions) {
    this.enabled = options.force === true || Deno.stderr.isTerminal();
  }

  /** Show the bar at `value` (the first call draws it). */
  start(value: number, suffix = ""): void {
    if (!this.enabled) return;
    this.#value = value;
    this.#suffix = suffix;
    active = this;
    this.#draw();
  }

  /** Move to `value` with a new suffix; redrawn at most 10 times a second. */
  update(value: number, suffix = this.#suffix): void {
    if (!this.enabled || this.#closed) return;
    this.#value = value;
    this.#suffix = suffix;
    const now = performance.now();
    if (now - this.#lastDraw >= 100 || value >= this.options.total) this.#draw();
  }

  /** Print a line above the bar: the bar is erased, the line printed, the bar drawn again. */
  log(line: string): void {
    if (!this.enabled || this.#closed) {
      console.error(line);
      return;
    }
    write(`${ERASE_LINE}${line}\n`);
    this.#draw();
  }

  /** Leave the bar's final state on screen once, and end its line. */
  finish(): void {
    if (!this.enabled || this.#closed) return;
    this.#draw();
    write("\n");
    this.#close();
  }

  /** Erase the bar (errors, interrupts): the line is left empty for what follows. */
  erase(): void {
    if (!this.enabled || this.#closed) return;
    if (this.#drawn) write(ERASE_LINE);
    this.#close();
  }

  #close(): void {
    this.#closed = true;
    if (active === this) active = null;
  }

  /** The bar's text (without escapes), fitted to `width` columns. */
  text(width = columns()): string {
    const { label, total } = this.options;
    const value = Math.min(this.#value, total);
    const counts = this.options.percent
      ? `${total > 0 ? Math.floor((100 * value) / total) : 100}%`
      : `${value}/${total}`;
    const fixed = `${label} [] ${counts}${this.#suffix}`;
    const room = Math.max(0, Math.min(30, width - [...fixed].length - 1));
    const filled = total > 0 ? Math.round((room * value) / total) : room;
    const line = `${label} [${"█".repeat(filled)}${
      "░".repeat(room - filled)
    }] ${counts}${this.#suffix}`;
    const chars = [...line];
    return chars.length < width ? line : chars.slice(0, Math.max(0, width - 1)).join("");
  }

  #draw(): void {
    this.#lastDraw = performance.now();
    this.#drawn = true;
    write(`${ERASE_LINE}${this.text()}`);
  }
}

/** Erase the bar on screen, if any (before an interrupt or error message). */
export function eraseActiveBar(): void {
  active?.erase();
}

/**
 * Seconds as `1m05s` or `12.3s`; `-` before anything was measured (no
 * "ETA 0s" at the first step).
 *
 * @example
 * ```ts
 * import { formatSeconds } from "./_progress.ts";
 * if (formatSeconds(65) !== "1m05s" || formatSeconds(NaN) !== "-") throw new Error("format");
 * ```
 */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "-";
  if (s < 59.95) return `${s.toFixed(1)}s`;
  const r = Math.round(s);
  return `${Math.floor(r / 60)}m${String(r % 60).padStart(2, "0")}s`;
}
