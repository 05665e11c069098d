/**
 * `dist/web_app.js`, the page script `tost serve` carries when bundled or
 * compiled (`deno task web`; see src/web/script.ts): every test that
 * bundles main.ts needs it first, as `deno task bundle` does. Built into a
 * temporary file and renamed into place, so tests running in parallel never
 * read a half-written file (each build writes the same bytes).
 */

const ROOT = new URL("../", import.meta.url).pathname;

/** Build `dist/web_app.js` as `deno task web` does; returns its path. */
export async function buildWebApp(): Promise<string> {
  const target = `${ROOT}dist/web_app.js`;
  await Deno.mkdir(`${ROOT}dist`, { recursive: true });
  const tmp = `${target}.${Deno.pid}.${crypto.randomUUID()}.tmp`;
  try {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", "--platform", "browser", "--minify", "src/web/app.ts", "-o", tmp],
      cwd: ROOT,
      stderr: "piped",
    }).output();
    if (!r.success) {
      throw new Error(`deno task web failed: ${new TextDecoder().decode(r.stderr).trim()}`);
    }
    await Deno.rename(tmp, target);
    return target;
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}
