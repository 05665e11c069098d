/**
 * `tost serve`: show a model to anyone with a browser. Serves one static
 * page (`src/web/page.html`), its script (`src/web/app.ts` bundled for the
 * browser, see `src/web/script.ts`) and the model as a safetensors file; the
 * page runs the model on the browser's WebGPU with tost's own TypeScript and
 * WGSL.
 *
 * Security: a fixed route table of three paths (`/`, `/app.js`,
 * `/model.safetensors`); nothing from a URL ever reaches the file system
 * (the model is read once at start), there is no directory listing, only
 * GET and HEAD are answered. The server binds 127.0.0.1 unless `--host`
 * says otherwise, and then also refuses requests whose `Host` header is not
 * a loopback name (DNS rebinding).
 *
 * @module
 */

import { Command } from "commander";
import { readModelFile } from "../model/load.ts";
import type { ModelFile } from "../model/load.ts";
import { serializeSafetensors } from "../io/safetensors.ts";
import { pageScript } from "../web/script.ts";
import page from "../web/page.html" with { type: "text" };
import { InterruptedError, UsageError } from "./_errors.ts";
import { onInterrupt } from "./_interrupt.ts";
import { warnNonFiniteWeights } from "./_output.ts";
import { readVocabFor } from "./_codec.ts";
import { userFile } from "./_files.ts";

/** The default port. */
export const DEFAULT_PORT = 8080;

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

/** What the server hands out, by path; nothing else exists. */
export interface Routes {
  page: string;
  script: string;
  model: Uint8Array<ArrayBuffer>;
}

const HEADERS = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; " +
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; form-action 'none'",
};

/**
 * Answer one request from the fixed route table: `/` (the page), `/app.js`
 * (its script), `/model.safetensors` (the model); 404 for every other path,
 * 405 for methods other than GET and HEAD, 421 for a foreign `Host` when
 * `loopbackOnly`.
 *
 * @example
 * ```ts
 * import { answer } from "./serve.ts";
 * const routes = { page: "<p>hi</p>", script: "", model: new Uint8Array(8) };
 * const r = answer(new Request("http://127.0.0.1:8080/../etc/passwd"), routes, true);
 * if (r.status !== 404) throw new Error("no path reaches the file system");
 * ```
 */
export function answer(req: Request, routes: Routes, loopbackOnly: boolean): Response {
  const url = new URL(req.url);
  if (loopbackOnly) {
    const host = (req.headers.get("host") ?? url.host).replace(/:\d+$/, "");
    if (!LOOPBACK.has(host.toLowerCase())) {
      return new Response("this server answers loopback names only\n", {
        status: 421,
        headers: { ...HEADERS, "content-type": "text/plain; charset=utf-8" },
      });
    }
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    return new Response("method not allowed\n", {
      status: 405,
      headers: { ...HEADERS, allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" },
    });
  }
  const found = url.pathname === "/"
    ? { body: routes.page, type: "text/html; charset=utf-8" }
    : url.pathname === "/app.js"
    ? { body: routes.script, type: "text/javascript; charset=utf-8" }
    : url.pathname === "/model.safetensors"
    ? { body: routes.model, type: "application/octet-stream" }
    : null;
  if (!found) {
    return new Response("not found\n", {
      status: 404,
      headers: { ...HEADERS, "content-type": "text/plain; charset=utf-8" },
    });
  }
  return new Response(req.method === "HEAD" ? null : found.body, {
    headers: { ...HEADERS, "content-type": found.type },
  });
}

/**
 * The model as the page loads it: its tensors (no optimizer state) and the
 * metadata the page needs — config, vocabulary, the training record (for
 * the vision normalisation) — in one safetensors file.
 */
export function servedModel(
  file: ModelFile,
  vocab: readonly string[] | null,
): Uint8Array<ArrayBuffer> {
  const metadata: Record<string, string> = { config: JSON.stringify(file.config) };
  if (vocab) metadata.vocab = JSON.stringify(vocab);
  if (file.metadata.training !== undefined) metadata.training = file.metadata.training;
  return serializeSafetensors(file.tensors, metadata);
}

function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new UsageError(
      `--port must be a port number 0..65535 (0: any free port), got "${value}"`,
    );
  }
  return n;
}

/** Build the `serve` subcommand. */
export function serveCommand() {
  return new Command("serve")
    .description("Serve a web page that runs the model in the browser on WebGPU.")
    .argument(
      "<model>",
      "tost .safetensors file or PyTorch checkpoint (.pt/.pth, converted on the fly)",
    )
    .option("--port <n>", "port to listen on (0: any free port)", parsePort, DEFAULT_PORT)
    .option("--host <name>", "address to bind (default 127.0.0.1: this machine only)")
    .option("--vocab <file>", "characters of a language model's vocabulary, in id order")
    .option("--key <name>", "PyTorch checkpoint entry holding the weights (e.g. model_ema)")
    .addHelpText(
      "after",
      `
The page loads the model into the browser and runs it there with tost's own kernels on the
browser's WebGPU: nothing is computed on the server. Vision models: draw a digit or drop an
image; the page shows the class probabilities and the Π maps of tost inspect. Language
models: type a prompt; the page streams sampled text, one incremental decoding step per
token. A browser without WebGPU is told so.

The server answers three paths (/, /app.js, /model.safetensors) and nothing else; no URL
reaches the file system. It binds 127.0.0.1 unless --host is given (e.g. --host 0.0.0.0 to
show the page to other machines: then anyone who can reach the port can load the model).
Ctrl-C stops it (exit 130).

Language models tokenize characters in the page: a model needs its character vocabulary
(saved by tost train, attached by tost convert --vocab, or --vocab here). GPT-2 BPE models
are not served.

Examples:
  tost serve runs/mnist/best.safetensors
  tost serve runs/small/best.safetensors --port 9000
  tost serve ckpt.pt --vocab chars.txt --host 0.0.0.0`,
    )
    .action(async (modelPath, options) => {
      const file = await userFile(
        "model",
        modelPath,
        () => readModelFile(modelPath, { key: options.key }),
      );
      warnNonFiniteWeights(modelPath, file.tensors);
      let vocab: string[] | null = null;
      if (file.config.family === "language") {
        if (file.tokenizer === "gpt2") {
          throw new UsageError(
            `"${modelPath}" uses GPT-2 BPE: the page tokenizes characters, so it cannot be served`,
          );
        }
        vocab = options.vocab !== undefined
          ? await readVocabFor(options.vocab, file.config.vocab_size)
          : file.vocab;
        if (!vocab) {
          throw new UsageError(
            `"${modelPath}" carries no vocabulary: pass --vocab <file> with its characters in ` +
              `id order, or attach one once with tost convert --vocab`,
          );
        }
      } else if (options.vocab !== undefined) {
        throw new UsageError("--vocab applies to language models only");
      }
      const hostname = options.host ?? "127.0.0.1";
      console.error("building the page's script…");
      const routes: Routes = {
        page,
        script: await pageScript(),
        model: servedModel(file, vocab),
      };
      const loopbackOnly = LOOPBACK.has(hostname);
      const stopped = new AbortController();
      let server: Deno.HttpServer;
      try {
        server = Deno.serve({
          hostname,
          port: options.port,
          signal: stopped.signal,
          onListen: ({ hostname: h, port }) => {
            const shown = h.includes(":") ? `[${h}]` : h;
            console.log(`serving ${modelPath} at http://${shown}:${port}/ (Ctrl-C stops)`);
          },
        }, (req) => answer(req, routes, loopbackOnly));
      } catch (err) {
        if (err instanceof Deno.errors.AddrInUse) {
          throw new UsageError(
            `port ${options.port} on ${hostname} is in use: choose another with --port (0: any)`,
          );
        }
        if (err instanceof Deno.errors.AddrNotAvailable || err instanceof Deno.errors.NotFound) {
          throw new UsageError(`cannot bind --host "${hostname}": no such local address`);
        }
        throw err;
      }
      let interrupted = false;
      const release = onInterrupt(() => {
        interrupted = true;
        stopped.abort();
      });
      try {
        await server.finished;
      } finally {
        release();
      }
      if (interrupted) throw new InterruptedError("stopped serving");
    });
}
