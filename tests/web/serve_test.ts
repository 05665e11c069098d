/**
 * `tost serve` without a browser: the fixed route table (three paths, no
 * file system behind any URL, GET/HEAD only, loopback Host names when bound
 * to loopback), the served model (its tensors and config, no optimizer
 * state), the real program on a port, its user mistakes (exit 2), the page
 * script carried by the single-file bundle, and the browser bundle of the
 * core, which must not use Deno.
 */

import assert from "node:assert/strict";
import { buildWebApp } from "../_web_bundle.ts";
import { answer, servedModel } from "../../src/cli/serve.ts";
import { parseSafetensors } from "../../src/io/safetensors.ts";
import { readModelFile } from "../../src/model/load.ts";
import { assertSnapshot, runTost } from "../cli/_run.ts";
import { serve } from "./_serve.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const FIXTURES = `${ROOT}tests/fixtures/`;
const routes = { page: "<p>page</p>", script: "js()", model: new Uint8Array([1, 2, 3]) };

Deno.test("serve: three routes, nothing else, no path reaches the file system", async () => {
  const get = (path: string, init: RequestInit = {}, host = "127.0.0.1:8080") =>
    answer(
      new Request(`http://${host}${path}`, { ...init, headers: { host, ...init.headers } }),
      routes,
      true,
    );
  const page = get("/");
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(await page.text(), routes.page);
  assert.match(page.headers.get("content-security-policy")!, /default-src 'self'/);
  assert.equal(page.headers.get("x-content-type-options"), "nosniff");
  assert.equal(await get("/app.js").text(), "js()");
  assert.deepEqual(new Uint8Array(await get("/model.safetensors").arrayBuffer()), routes.model);
  for (
    const path of [
      "/index.html",
      "/app.ts",
      "/../main.ts",
      "/%2e%2e/%2e%2e/etc/passwd",
      "/src/web/app.ts",
      "/tests/fixtures/tost_vision_small.pth",
      "/model.safetensors/",
      "//model.safetensors",
      "/favicon.ico",
    ]
  ) {
    const r = get(path);
    assert.equal(r.status, 404, path);
    assert.equal(await r.text(), "not found\n");
  }
  const head = get("/model.safetensors", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");
  const post = get("/", { method: "POST", body: "x" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  // DNS rebinding: a foreign Host is refused while bound to loopback, served otherwise.
  assert.equal(get("/", {}, "evil.example:8080").status, 421);
  assert.equal(get("/", {}, "localhost:8080").status, 200);
  assert.equal(get("/", {}, "[::1]:8080").status, 200);
  const wide = answer(new Request("http://evil.example/"), routes, false);
  assert.equal(wide.status, 200);
});

Deno.test("serve: the served model holds the weights, config and vocabulary, no optimizer state", async () => {
  const file = await readModelFile(`${FIXTURES}tost_lang_small.pt`);
  const vocab = [...(await Deno.readTextFile(`${FIXTURES}shakespeare_char_vocab.txt`))];
  const st = parseSafetensors(servedModel(file, vocab));
  assert.deepEqual(JSON.parse(st.metadata.config), file.config);
  assert.deepEqual(JSON.parse(st.metadata.vocab), vocab);
  assert.deepEqual(st.names.toSorted(), [...file.tensors.keys()].toSorted());
  assert.ok(!st.names.some((n) => n.startsWith("optimizer.")));
});

Deno.test("serve: the real program answers on its port; user mistakes exit 2 before serving", async () => {
  const served = await serve([`${FIXTURES}tost_vision_small.pth`]);
  try {
    assert.match(served.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await fetch(served.url);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<script type="module" src="\/app\.js">/);
    const script = await (await fetch(`${served.url}app.js`)).text();
    assert.ok(script.length > 100_000, "the bundled page script");
    assert.ok(!/\bDeno\.\w/.test(script), "no Deno API in the page script");
    const model = parseSafetensors(
      new Uint8Array(await (await fetch(`${served.url}model.safetensors`)).arrayBuffer()),
    );
    assert.equal(JSON.parse(model.metadata.config).family, "vision");
    const missing = await fetch(`${served.url}etc/passwd`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    // The same port again: in use.
    const port = new URL(served.url).port;
    const again = await runTost(["serve", `${FIXTURES}tost_vision_small.pth`, "--port", port]);
    assert.equal(again.code, 2, again.stderr);
    assert.match(again.stderr, new RegExp(`error: port ${port} on 127\\.0\\.0\\.1 is in use`));
  } finally {
    const { code } = await served.stop();
    assert.equal(code, 130);
  }
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/notes.txt`, "hello\n");
    const cases: [string[], RegExp][] = [
      [["serve", `${dir}/missing.safetensors`], /Cannot read model .*no such file/],
      [["serve", `${dir}/notes.txt`], /not a model|model/],
      [["serve", `${FIXTURES}tost_lang_small.pt`], /carries no vocabulary/],
      [
        ["serve", `${FIXTURES}tost_vision_small.pth`, "--vocab", `${dir}/notes.txt`],
        /--vocab applies to language/,
      ],
      [["serve", `${FIXTURES}tost_vision_small.pth`, "--port", "70000"], /--port must be/],
      [
        ["serve", `${FIXTURES}tost_vision_small.pth`, "--host", "203.0.113.7", "--port", "0"],
        /cannot bind --host/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await runTost(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(" "));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serve: the browser bundle of the page holds no Deno API, and the single-file bundle carries it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tost-web-" });
  try {
    // The page script unminified: every remaining mention of Deno must be a guarded one.
    const bundle = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--platform",
        "browser",
        `${ROOT}src/web/app.ts`,
        "-o",
        `${dir}/app.js`,
      ],
      cwd: ROOT,
      stderr: "piped",
    }).output();
    assert.equal(bundle.code, 0, new TextDecoder().decode(bundle.stderr));
    const app = await Deno.readTextFile(`${dir}/app.js`);
    // Allowed: reads through globalThis (`globalThis.Deno`, then `?.`), `"Deno" in globalThis`,
    // and comments. Anything else would throw in a browser when it runs.
    const unguarded = app.split("\n").flatMap((line, i) =>
      [...line.matchAll(/\bDeno\b/g)].filter((m) => {
        const before = line.slice(0, m.index);
        const after = line.slice(m.index! + 4);
        return !(/^\s*(\/\/|\*|\/\*)/.test(line) || before.endsWith("globalThis.") ||
          (before.endsWith('"') && after.startsWith('" in globalThis')));
      }).map(() => `${i + 1}: ${line.trim().slice(0, 120)}`)
    );
    assert.deepEqual(unguarded, [], "Deno used outside a guard in the page script");
    assert.ok(!/^import .* from "node:/m.test(app), "no node: imports in the page script");
    // `deno task bundle`: the web script first, then one file that serves it from anywhere.
    await buildWebApp();
    const main = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", `${ROOT}main.ts`, "-o", `${dir}/tost.js`],
      cwd: ROOT,
      stderr: "piped",
    }).output();
    assert.equal(main.code, 0, new TextDecoder().decode(main.stderr));
    await Deno.copyFile(`${FIXTURES}tost_vision_small.pth`, `${dir}/model.pth`);
    const server = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${dir}/tost.js`, "serve", "model.pth", "--port", "0"],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    while (!/http:\/\/\S+\//.test(seen)) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    try {
      const url = /http:\/\/\S+\//.exec(seen)?.[0];
      assert.ok(url, `the bundle serves: ${seen}`);
      const script = await (await fetch(`${url}app.js`)).text();
      assert.equal(script, await Deno.readTextFile(`${ROOT}dist/web_app.js`));
    } finally {
      server.kill("SIGTERM");
      await server.status;
      reader.releaseLock();
      await server.stdout.cancel().catch(() => {});
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tost serve --help matches its snapshot", async () => {
  const r = await runTost(["serve", "--help"]);
  assert.equal(r.code, 0);
  await assertSnapshot("help_serve.txt", r.stdout);
});
