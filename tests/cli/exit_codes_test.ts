/**
 * One exit-code rule for every command: 0 done, 1 the work failed, 2 a user
 * mistake (bad flag, missing, unreadable or wrong kind of file), 130
 * interrupted; each error is one `error: …` line. User mistakes run through
 * `main()` in this process; the failure and interrupt cases run the program.
 * (Training's 1 and 130 are in train_test.ts; sampling's 1 in files_test.ts.)
 */

import assert from "node:assert/strict";
import { main } from "../../main.ts";
import { EXIT } from "../../src/cli/_errors.ts";
import { runTost } from "./_run.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;

/** Run `main(args)` with console output captured. */
async function quietMain(args: string[]): Promise<{ code: number; stderr: string }> {
  const lines: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    const code = await main(args, () => {
      throw new Error("exit called");
    });
    return { code, stderr: lines.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

Deno.test("exit 2 for user mistakes, in every command", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const truncated = (await Deno.readFile(`${FIXTURES}tost_lang_small.pt`)).slice(0, 5000);
    await Deno.writeFile(`${dir}/cut.pt`, truncated);
    await Deno.writeTextFile(`${dir}/notes.txt`, "hello\n");
    const cases: string[][] = [
      ["nope"],
      ["info", "--nope"],
      ["bench", "--ops", "nope"],
      ["bench", "--model", "--seq", "64"],
      ["convert", `${dir}/missing.pt`, "-o", `${dir}/x.safetensors`],
      ["convert", `${dir}/cut.pt`, "-o", `${dir}/x.safetensors`],
      ["convert", `${dir}/notes.txt`, "--inspect"],
      ["evaluate", `${dir}/missing.safetensors`],
      ["evaluate", `${dir}/cut.pt`],
      [
        "evaluate",
        `${FIXTURES}tost_lang_small.pt`,
        "--inputs",
        `${dir}/notes.txt`,
        "--save-outputs",
        `${dir}/o.st`,
      ],
      ["sample", `${dir}/notes.txt`],
      ["sample", `${FIXTURES}tost_vision_small.pth`],
      ["train", "--preset", "huge"],
      ["train", "--data", `${dir}/notes.txt`, "--out", `${dir}/run`],
    ];
    for (const args of cases) {
      const r = await quietMain(args);
      assert.equal(r.code, EXIT.usage, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /error: /, args.join(" "));
    }
    await assert.rejects(Deno.stat(`${dir}/x.safetensors`), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(`${dir}/run`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("exit 0 for --help and --version", async () => {
  for (const args of [["--help"], ["--version"], ["bench", "--help"]]) {
    const r = await runTost(args);
    assert.equal(r.code, EXIT.ok, r.stderr);
  }
});

Deno.test("exit 130 when a command without its own stop is interrupted", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "evaluate", `${FIXTURES}tost_vision_small.pth`, "--data", "mnist"],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await new Promise((r) => setTimeout(r, 4000));
  child.kill("SIGINT");
  const out = await child.output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, EXIT.interrupted, stderr);
  assert.match(stderr, /error: interrupted\n$/);
});
