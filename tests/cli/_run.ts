/**
 * Run the real `tost` program as a subprocess, for CLI tests.
 *
 * @module
 */

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** What a run of the CLI produced. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `deno run -A main.ts ...args` with optional extra environment. */
export async function runTost(
  args: string[],
  env: Record<string, string> = {},
): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * Compare `actual` with the snapshot file `tests/snapshots/<name>`; with
 * `UPDATE_SNAPSHOTS=1` rewrite it instead.
 */
export async function assertSnapshot(name: string, actual: string): Promise<void> {
  const path = new URL(`../snapshots/${name}`, import.meta.url).pathname;
  if (Deno.env.get("UPDATE_SNAPSHOTS") === "1") {
    await Deno.writeTextFile(path, actual);
    return;
  }
  let expected: string;
  try {
    expected = await Deno.readTextFile(path);
  } catch {
    throw new Error(`snapshot ${name} missing: run with UPDATE_SNAPSHOTS=1 to create it`);
  }
  if (expected !== actual) {
    throw new Error(
      `snapshot ${name} differs (UPDATE_SNAPSHOTS=1 to accept):\n--- expected\n${expected}\n+++ actual\n${actual}`,
    );
  }
}
