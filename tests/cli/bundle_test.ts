// The offline stand-in for `deno compile` (which needs a runtime download):
// bundle the program into one file, kernels and data included, and run it
// from an empty directory where no project file can be read: `info`, and the
// main job's first steps (`train` on the bundled corpus), then `evaluate` on
// the corpus. `deno task compile` says what it needs when it cannot fetch denort.
import assert from "node:assert/strict";
import { explainCompileFailure } from "../../tools/compile.ts";
import { buildWebApp } from "../_web_bundle.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("the single-file bundle runs `tost info` and trains on the bundled corpus away from the source tree", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tost-bundle-" });
  try {
    const out = `${dir}/tost.js`;
    await buildWebApp(); // as `deno task bundle` does first
    const bundle = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", `${ROOT}main.ts`, "-o", out],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(bundle.code, 0, new TextDecoder().decode(bundle.stderr));
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", out, "info", "--json"],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(run.stdout);
    assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
    assert.equal(typeof JSON.parse(stdout).name, "string");
    // The main job's first steps, on the bundled corpus (no file outside the bundle is read).
    const work = `${dir}/empty`;
    await Deno.mkdir(work);
    const train = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", out, "train", "--preset", "tiny", "--max-iters", "2", "--json"],
      cwd: work,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(train.code, 0, new TextDecoder().decode(train.stderr));
    const result = JSON.parse(new TextDecoder().decode(train.stdout));
    assert.equal(result.step, 2);
    assert.equal(result.settings.data, "sotu");
    assert.ok(Number.isFinite(result.val_loss));
    const evaluate = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", out, "evaluate", "runs/tiny/last.safetensors", "--limit", "64", "--json"],
      cwd: work,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(evaluate.code, 0, new TextDecoder().decode(evaluate.stderr));
    assert.equal(JSON.parse(new TextDecoder().decode(evaluate.stdout)).data, "sotu");
    // Every kernel is inside the bundle (no file reads at run time).
    const text = await Deno.readTextFile(out);
    for await (const entry of Deno.readDir(`${ROOT}kernels`)) {
      if (!entry.name.endsWith(".wgsl")) continue;
      const first = (await Deno.readTextFile(`${ROOT}kernels/${entry.name}`))
        .split("\n").find((l) => l.trim().length > 0 && !l.trim().startsWith("//"));
      if (first && imported(entry.name)) {
        assert.ok(text.includes(first.trim()), `kernel ${entry.name} missing from the bundle`);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Whether some source file imports this kernel (unused kernels are not bundled). */
function imported(kernel: string): boolean {
  const out = new Deno.Command("grep", {
    args: ["-rl", `kernels/${kernel}"`, `${ROOT}src`],
    stdout: "null",
    stderr: "null",
  }).outputSync();
  return out.code === 0;
}

Deno.test("deno task compile says what it needs when denort cannot be had", async () => {
  const dns =
    "error: Writing deno compile executable\nCaused by:\n    0: Setting up base binary.\n" +
    "    1: error sending request for url: client error (Connect): dns error";
  assert.match(
    explainCompileFailure(dns, undefined)!,
    /needs denort, Deno's runtime binary .*DENORT_BIN/,
  );
  assert.equal(explainCompileFailure("error: main.ts:1:1 syntax error", undefined), null);
  // Offline or not, a DENORT_BIN that names no file is explained without a download.
  const dir = await Deno.makeTempDir({ prefix: "tost-compile-" });
  try {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}tools/compile.ts`, `${dir}/tost`],
      env: { DENORT_BIN: `${dir}/no-denort`, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(r.code, 1);
    assert.match(
      new TextDecoder().decode(r.stderr),
      /error: DENORT_BIN is ".*no-denort", but no denort binary is there/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
