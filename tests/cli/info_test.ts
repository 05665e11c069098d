import assert from "node:assert/strict";
import { assertSnapshot, runTost } from "./_run.ts";
import { VERSION } from "../../src/version.ts";

Deno.test("tost info describes the adapter", async () => {
  const r = await runTost(["info"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^adapter: {3}\S/m);
  assert.match(r.stdout, /maxStorageBufferBindingSize/);
  assert.match(r.stdout, /backend:/);
});

Deno.test("tost info --json is machine-readable", async () => {
  const r = await runTost(["info", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const d = JSON.parse(r.stdout);
  assert.equal(typeof d.name, "string");
  assert.equal(typeof d.software, "boolean");
  assert.ok(d.limits.maxBufferSize > 0);
  assert.ok(Array.isArray(d.features));
});

Deno.test("no adapter: a clear error, exit 1, no stack trace", async () => {
  const r = await runTost(["info"], { DENO_WEBGPU_BACKEND: "none" });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: No WebGPU adapter found\..*mesa-vulkan-drivers/m);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  assert.equal(r.stderr.trim().split("\n").length, 1);
});

Deno.test("unknown flags are a user mistake: exit 2", async () => {
  const r = await runTost(["info", "--bogus"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^error: unknown option '--bogus'/m);
});

Deno.test("--version prints the version", async () => {
  const r = await runTost(["--version"]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), VERSION);
});

Deno.test("help text (snapshot)", async () => {
  const root = await runTost(["--help"]);
  assert.equal(root.code, 0);
  await assertSnapshot("help.txt", root.stdout);
  const info = await runTost(["info", "--help"]);
  assert.equal(info.code, 0);
  await assertSnapshot("help_info.txt", info.stdout);
});
