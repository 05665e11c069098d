/**
 * Run `tost` in a pseudo-terminal (util-linux `script`), as a user's terminal
 * would, and rebuild the screen it leaves from the raw bytes.
 *
 * @module
 */

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

function quote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** A `tost` run in a pseudo-terminal: its raw output and a way to type into it. */
export interface PtyRun {
  /** Resolves with everything the terminal showed (raw bytes as text) and the exit code. */
  done: Promise<{ raw: string; code: number }>;
  /** Wait until the output so far matches `pattern` (or the run ends). */
  waitFor(pattern: RegExp): Promise<string>;
  /** Type bytes (e.g. "\x03" for Ctrl-C). */
  type(text: string): Promise<void>;
}

/** Start `tost …args` in a pseudo-terminal, in `cwd`. */
export function tostInPty(args: string[], cwd: string): PtyRun {
  const command = [Deno.execPath(), "run", "-A", MAIN, ...args].map(quote).join(" ");
  const child = new Deno.Command("script", {
    args: ["-qfec", command, "/dev/null"],
    cwd,
    env: { NO_COLOR: "1", COLUMNS: "120" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  let raw = "";
  const waiters: { pattern: RegExp; resolve: (s: string) => void }[] = [];
  const pump = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      raw += chunk;
      for (const w of [...waiters]) {
        if (w.pattern.test(raw)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(raw);
        }
      }
    }
    for (const w of waiters.splice(0)) w.resolve(raw);
  })();
  const done = (async () => {
    await pump;
    await child.stderr.cancel();
    await writer.close().catch(() => {});
    const status = await child.status;
    return { raw, code: status.code };
  })();
  return {
    done,
    waitFor: (pattern) =>
      pattern.test(raw) ? Promise.resolve(raw) : new Promise((resolve) => {
        waiters.push({ pattern, resolve });
      }),
    type: (text) => writer.write(new TextEncoder().encode(text)),
  };
}

/**
 * The lines a terminal shows after `raw`: `\r` returns to column 0, `\n`
 * moves down, `ESC[2K` / `ESC[K` erase, other escape sequences are ignored,
 * text overwrites what is under the cursor.
 */
export function screen(raw: string): string[] {
  const lines: string[][] = [[]];
  let row = 0;
  let col = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === "\r") col = 0;
    else if (c === "\n") {
      row++;
      if (!lines[row]) lines[row] = [];
    } else if (c === "\x1b") {
      // deno-lint-ignore no-control-regex
      const m = /^\x1b\[([?0-9;]*)([A-Za-z])/.exec(raw.slice(i));
      if (!m) continue;
      i += m[0].length - 1;
      if (m[2] === "K") {
        lines[row] = m[1] === "2" ? [] : lines[row].slice(0, col);
      }
    } else {
      lines[row][col++] = c;
    }
  }
  return lines.map((l) => Array.from(l, (ch) => ch ?? " ").join("").trimEnd());
}
