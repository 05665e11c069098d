/**
 * The page script of `tost serve`: `src/web/app.ts` and everything it
 * imports (tost's runtime, kernels, models and `src/inspect/`), bundled for
 * the browser by `deno bundle --platform browser`.
 *
 * Where it comes from (the choice, and why):
 * - Run from the source tree (`deno task tost serve`): bundled when the
 *   server starts (a few seconds), from the sources as they are — so the
 *   page always runs the same TypeScript and WGSL as the command line, and
 *   no generated file is kept in git to go stale with every kernel change.
 * - From `deno task bundle`'s `dist/tost.js` or `deno task compile`'s
 *   executable, where there are no sources to bundle: both tasks first
 *   write `dist/web_app.js` (`deno task web`), which the dynamic import
 *   below carries into their module graph (a dynamic import with a literal
 *   specifier is bundled and compiled in; when the file is missing it fails
 *   only if reached).
 *
 * @module
 */

const ENTRY = new URL("./app.ts", import.meta.url);
const ROOT = new URL("../../", import.meta.url);

async function isFile(url: URL): Promise<boolean> {
  try {
    return (await Deno.stat(url)).isFile;
  } catch {
    return false;
  }
}

/** Bundle `app.ts` for the browser now, with the project's own deno.json (its imports). */
async function bundleNow(): Promise<string> {
  const out = await Deno.makeTempFile({ prefix: "tost-web-", suffix: ".js" });
  try {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", "--platform", "browser", "--minify", ENTRY.pathname, "-o", out],
      cwd: ROOT.pathname,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!r.success) {
      throw new Error(
        `deno bundle of the page's script failed: ${new TextDecoder().decode(r.stderr).trim()}`,
      );
    }
    return await Deno.readTextFile(out);
  } finally {
    await Deno.remove(out).catch(() => {});
  }
}

/**
 * The page's script: bundled now from the sources when they are here,
 * else the copy built into this program (see the module doc).
 *
 * @throws {Error} when neither is available (a bundle made without `deno task bundle`)
 */
export async function pageScript(): Promise<string> {
  if (ENTRY.protocol === "file:" && await isFile(ENTRY)) return await bundleNow();
  try {
    const built = await import("../../dist/web_app.js", { with: { type: "text" } });
    return built.default;
  } catch (err) {
    throw new Error(
      "this tost was built without the page's script: build it with deno task bundle or " +
        "deno task compile (they run deno task web first)",
      { cause: err },
    );
  }
}
