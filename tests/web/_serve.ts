/**
 * Helpers for the `tost serve` tests: start the real program on a free port
 * (`--port 0`, the address read from its first line), and drive Debian's
 * Chromium headless with puppeteer-core, WebGPU through SwiftShader.
 *
 * @module
 */

import puppeteer from "puppeteer-core";
import type { Browser } from "puppeteer-core";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** Where the tests leave screenshots for people to look at (gitignored). */
export const OUTPUT_DIR = new URL("../../test-output/", import.meta.url).pathname;

/** Debian's Chromium; `.ci/run` installs it. */
export const CHROMIUM = "/usr/bin/chromium";

/** A running `tost serve`. */
export interface Served {
  url: string;
  process: Deno.ChildProcess;
  /** Everything it printed on stderr so far is in `stderr()` once stopped. */
  stop(): Promise<{ code: number; stderr: string }>;
}

/** Start `tost serve <args> --port 0` and wait for its address. */
export async function serve(args: string[]): Promise<Served> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "serve", ...args, "--port", "0"],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderrText = new Response(process.stderr).text();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = Date.now() + 120_000;
  while (!/http:\/\/\S+\//.test(seen)) {
    if (Date.now() > deadline) throw new Error(`tost serve did not start: ${seen}`);
    const { value, done } = await reader.read();
    if (done) {
      const status = await process.status;
      throw new Error(`tost serve exited ${status.code}: ${await stderrText}`);
    }
    seen += value;
  }
  const url = /http:\/\/\S+\//.exec(seen)![0];
  return {
    url,
    process,
    async stop() {
      try {
        process.kill("SIGTERM");
      } catch { /* already gone */ }
      const status = await process.status;
      reader.releaseLock();
      await process.stdout.cancel().catch(() => {});
      return { code: status.code, stderr: await stderrText };
    },
  };
}

/** Launch headless Chromium; with `webgpu`, WebGPU on SwiftShader (the flags this machine needs). */
export async function launchChromium(
  profile: string,
  options: { webgpu?: boolean } = {},
): Promise<Browser> {
  const webgpu = options.webgpu ?? true;
  return await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: [
      "--no-sandbox",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      ...(webgpu
        ? [
          "--enable-unsafe-webgpu",
          "--enable-features=Vulkan",
          "--use-vulkan=swiftshader",
          "--use-webgpu-adapter=swiftshader",
        ]
        : ["--disable-webgpu"]),
    ],
  });
}
