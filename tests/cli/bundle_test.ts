// The offline stand-in for `deno compile` (which needs a runtime download):
// bundle the program into one file, kernels included, and run it from a
// directory where no project file can be read.
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("the single-file bundle runs `tost info` away from the source tree", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tost-bundle-" });
  try {
    const out = `${dir}/tost.js`;
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
