/**
 * `tost train` as a program: a short run on a text file writes checkpoints,
 * log and plots and prints clean lines when piped; its checkpoints load in
 * `tost sample` (no --vocab needed) and `tost evaluate`; Ctrl-C stops
 * cleanly with a checkpoint and `--resume` continues; user mistakes exit 2.
 */

import assert from "node:assert/strict";
import { assertSnapshot, runTost } from "./_run.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

async function textFile(): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".txt" });
  const lines: string[] = [];
  for (let i = 0; i < 400; i++) lines.push(`line ${i % 17}: the quick brown fox ${i % 5} jumps.`);
  await Deno.writeTextFile(path, lines.join("\n"));
  return path;
}

Deno.test("tost train: a short run, then sample and evaluate its checkpoints", async () => {
  const data = await textFile();
  const out = await Deno.makeTempDir();
  try {
    const r = await runTost([
      "train",
      "--preset",
      "tiny",
      "--data",
      data,
      "--max-iters",
      "6",
      "--eval-interval",
      "3",
      "--out",
      out,
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.status, "finished");
    assert.equal(result.step, 6);
    assert.ok(result.val_loss > 0 && result.val_loss < 5, r.stdout);
    assert.ok(typeof result.sample === "string" && result.sample.length > 0);
    // Piped: plain lines, no progress-bar escapes.
    assert.ok(!r.stderr.includes("\u001b["), "no terminal escapes when piped");
    assert.match(r.stderr, /step 5\/6: loss \d/);
    assert.match(r.stderr, /step 6: validation loss/);
    for (const f of ["last.safetensors", "best.safetensors", "log.jsonl", "loss.svg", "loss.png"]) {
      assert.ok((await Deno.stat(`${out}/${f}`)).size > 0, f);
    }
    const log = (await Deno.readTextFile(`${out}/log.jsonl`)).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assert.deepEqual(log.filter((l) => "val_loss" in l).map((l) => l.step), [0, 3, 6]);
    assert.match(await Deno.readTextFile(`${out}/loss.svg`), /^<svg/);

    const s = await runTost([
      "sample",
      `${out}/last.safetensors`,
      "--prompt",
      "line",
      "--tokens",
      "8",
      "--json",
    ]);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(JSON.parse(s.stdout).tokens, 8);
    const e = await runTost([
      "evaluate",
      `${out}/best.safetensors`,
      "--data",
      data,
      "--limit",
      "200",
      "--json",
    ]);
    assert.equal(e.code, 0, e.stderr);
    assert.ok(Number.isFinite(JSON.parse(e.stdout).loss));
  } finally {
    await Deno.remove(out, { recursive: true });
    await Deno.remove(data);
  }
});

Deno.test("tost train: Ctrl-C stops after the step with a checkpoint; --resume continues", async () => {
  const data = await textFile();
  const out = await Deno.makeTempDir();
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "train",
        "--preset",
        "tiny",
        "--data",
        data,
        "--max-iters",
        "500",
        "--eval-interval",
        "1000",
        "--out",
        out,
      ],
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let stderr = "";
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    while (!/step 5\/500/.test(stderr)) {
      const { value, done } = await reader.read();
      if (done) break;
      stderr += value;
    }
    child.kill("SIGINT");
    for (let r = await reader.read(); !r.done; r = await reader.read()) stderr += r.value;
    const status = await child.status;
    const stdout = new TextDecoder().decode(
      new Uint8Array(await new Response(child.stdout).arrayBuffer()),
    );
    assert.equal(status.code, 0, stderr);
    assert.match(stderr, /interrupted: stopping after this step/);
    const stopped = /stopped at step (\d+)\/500/.exec(stdout);
    assert.ok(stopped, stdout);
    assert.match(stdout, /resume with: +tost train --resume --out /);
    const step = Number(stopped[1]);
    assert.ok(step >= 5 && step < 500);

    const r = await runTost(["train", "--resume", "--out", out, "--max-iters", String(step + 2)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`resuming causal ToST.*steps ${step}→${step + 2}`));
    assert.match(r.stdout, new RegExp(`finished at step ${step + 2}/${step + 2}`));
  } finally {
    await Deno.remove(out, { recursive: true });
    await Deno.remove(data);
  }
});

Deno.test("tost train: user mistakes exit 2 with an error line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cases: [string[], RegExp][] = [
      [["--preset", "huge"], /error: Unknown preset "huge" \(known: tiny, tiny-gpt/],
      [["--resume", "--out", dir], /Cannot resume: ".*last\.safetensors" does not exist/],
      [
        ["--resume", "--out", dir, "--lr", "1"],
        /only --max-iters may change \(got learning_rate\)/,
      ],
      [["--max-iters", "-3"], /--max-iters must be an integer ≥ 0/],
      [["--config", `${dir}/none.json`], /Cannot read config ".*none\.json": no such file/],
    ];
    await Deno.writeTextFile(`${dir}/bad.json`, JSON.stringify({ n_layers: 3 }));
    cases.push([["--config", `${dir}/bad.json`], /unknown setting "n_layers"/]);
    for (const [args, message] of cases) {
      const r = await runTost(["train", ...args]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tost train --help (snapshot)", async () => {
  const r = await runTost(["train", "--help"]);
  assert.equal(r.code, 0);
  await assertSnapshot("help_train.txt", r.stdout);
});
