/**
 * `deno task compile`: build the standalone executable `dist/tost` with
 * `deno compile`, and when that fails for want of Deno's runtime binary
 * (`denort`), say plainly what it needs instead of Deno's DNS error.
 *
 * `deno compile` joins the program to `denort`, the Deno runtime for the
 * target platform, which it downloads from Deno's release server on first use
 * and caches. Offline it needs that file given through `DENORT_BIN`.
 *
 * Exit codes: 0 built; 1 `deno compile` failed (with the explanation).
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url).pathname;
const OUT = Deno.args[0] ?? "dist/tost";

/** What to tell the user when `deno compile` failed with `stderr`, or null if not about denort. */
export function explainCompileFailure(
  stderr: string,
  denortBin: string | undefined,
): string | null {
  const target = `denort-${Deno.build.target}.zip`;
  if (denortBin !== undefined && /Could not find denort/i.test(stderr)) {
    return `DENORT_BIN is "${denortBin}", but no denort binary is there: point it at the ` +
      `unpacked denort of Deno ${Deno.version.deno} for ${Deno.build.target} (from ${target})`;
  }
  if (/dns error|error sending request|denort|Setting up base binary/i.test(stderr)) {
    return `deno compile needs denort, Deno's runtime binary for ${Deno.build.target} ` +
      `(Deno ${Deno.version.deno}), and could not download it (no network). Either run ` +
      `deno task compile once where Deno's release server is reachable (denort is then cached), ` +
      `or fetch ${target} for Deno ${Deno.version.deno} on another machine, unpack it here and ` +
      `set DENORT_BIN=/path/to/denort. Offline, deno task bundle gives dist/tost.js, one file ` +
      `that deno run -A dist/tost.js runs with everything inside.`;
  }
  return null;
}

if (import.meta.main) {
  // The page of `tost serve` is part of the program: build its script first (src/web/script.ts).
  const web = await new Deno.Command(Deno.execPath(), {
    args: ["task", "web"],
    cwd: ROOT,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!web.success) Deno.exit(1);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["compile", "-A", "-o", OUT, "main.ts"],
    cwd: ROOT,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (out.success) {
    await Deno.stderr.write(out.stderr);
    Deno.exit(0);
  }
  const why = explainCompileFailure(stderr, Deno.env.get("DENORT_BIN"));
  if (why) {
    console.error(`error: ${why}`);
    if (Deno.env.get("TOST_VERBOSE")) console.error(stderr);
  } else {
    await Deno.stderr.write(out.stderr);
  }
  Deno.exit(1);
}
