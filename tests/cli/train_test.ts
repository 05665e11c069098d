/**
 * `tost train` as a program: a short run on a text file writes checkpoints,
 * log and plots and prints clean lines when piped; its checkpoints load in
 * `tost sample` (no --vocab needed) and `tost evaluate`; Ctrl-C stops
 * cleanly with a checkpoint, exits 130 and the same command with `--resume`
 * continues; a second run in the same directory is refused (lock); an
 * existing run is refused without --resume/--force; bad data is refused
 * before anything is written; user mistakes exit 2.
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

Deno.test("tost train: Ctrl-C exits 130 with the train loss; a second run is locked out; the same command with --resume continues", async () => {
  const data = await textFile();
  const out = `${await Deno.makeTempDir()}/run`;
  const command = [
    "train",
    "--preset",
    "tiny",
    "--data",
    data,
    "--max-iters",
    "500",
    "--eval-interval",
    "1000",
    "--seed",
    "7",
    "--out",
    out,
  ];
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, ...command],
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
    // A second run into the same directory while the first works is refused, even with --force.
    const second = await runTost([...command, "--force"]);
    assert.equal(second.code, 2, second.stderr);
    assert.match(second.stderr, /error: ".*run" is in use by another tost train \(process \d+ on /);
    const lock = JSON.parse(await Deno.readTextFile(`${out}/.tost-lock`));
    assert.equal(typeof lock.pid, "number");
    assert.equal(typeof lock.started, "string");
    child.kill("SIGINT");
    for (let r = await reader.read(); !r.done; r = await reader.read()) stderr += r.value;
    const status = await child.status;
    const stdout = new TextDecoder().decode(
      new Uint8Array(await new Response(child.stdout).arrayBuffer()),
    );
    assert.equal(status.code, 130, stderr);
    assert.match(stderr, /interrupted: stopping after this step/);
    assert.match(stderr, /error: interrupted at step \d+ of 500; the run is saved/);
    const stopped = /interrupted at step (\d+)\/500/.exec(stdout);
    assert.ok(stopped, stdout);
    const step = Number(stopped[1]);
    assert.ok(step >= 5 && step < 500);
    // The result is the last measured training loss, not the untrained step-0 evaluation.
    assert.match(
      stdout,
      new RegExp(`train loss: +\\d+\\.\\d+ \\(step ${step}, the last measured\\)`),
    );
    assert.match(stdout, /validation loss: not measured after training began/);
    assert.match(stdout, /resume with: +tost train --resume --out /);
    // No evaluation after training began: no best.safetensors holding untrained weights.
    await assert.rejects(Deno.stat(`${out}/best.safetensors`), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(`${out}/.tost-lock`), Deno.errors.NotFound);

    // The same command again, with --resume and a new --max-iters: the repeated flags are fine.
    const again = command.map((a, i) => command[i - 1] === "--max-iters" ? String(step + 2) : a);
    const r = await runTost([...again, "--resume"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`resuming causal ToST.*steps ${step}→${step + 2}`));
    assert.match(r.stdout, new RegExp(`finished at step ${step + 2}/${step + 2}`));
    // Nothing left to do: no new log line, exit 0.
    const log = await Deno.readTextFile(`${out}/log.jsonl`);
    const done = await runTost([...again, "--resume"]);
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stderr, /nothing to do: the run in .* is already at step/);
    assert.equal(await Deno.readTextFile(`${out}/log.jsonl`), log);
    const evals = log.trim().split("\n").map((l) => JSON.parse(l)).filter((l) => "val_loss" in l);
    assert.deepEqual(evals.map((l) => l.step), [0, step + 2]);
  } finally {
    await Deno.remove(out.replace(/\/run$/, ""), { recursive: true });
    await Deno.remove(data);
  }
});

Deno.test("tost train: user mistakes exit 2 with an error line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cases: [string[], RegExp][] = [
      [["--preset", "huge"], /error: Unknown preset "huge" \(known: tiny, tiny-gpt/],
      [["--resume", "--out", dir], /Cannot resume: ".*last\.safetensors" does not exist/],
      [["--resume", "--force", "--out", dir], /--resume continues .* --force replaces it/],
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

async function snapshotDir(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for await (const e of Deno.readDir(dir)) {
    if (!e.isFile) continue;
    const bytes = await Deno.readFile(`${dir}/${e.name}`);
    const hash = await crypto.subtle.digest("SHA-256", bytes);
    files.set(e.name, Array.from(new Uint8Array(hash), (b) => b.toString(16)).join(""));
  }
  return files;
}

Deno.test("tost train: an existing run is refused untouched, --force replaces it, resume refuses changes", async () => {
  const data = await textFile();
  const out = await Deno.makeTempDir();
  const base = ["train", "--preset", "tiny", "--data", data, "--eval-interval", "1", "--out", out];
  try {
    const first = await runTost([...base, "--max-iters", "1"]);
    assert.equal(first.code, 0, first.stderr);
    const before = await snapshotDir(out);
    // Again without --resume: refused, every file as it was.
    const again = await runTost([...base, "--max-iters", "1"]);
    assert.equal(again.code, 2, again.stderr);
    assert.match(again.stderr, /already holds a run \(last\.safetensors.*--resume.*--force/);
    assert.deepEqual(await snapshotDir(out), before);
    // --resume with what would change the run: refused, naming each change.
    const cases: [string[], RegExp][] = [
      [
        ["--preset", "mnist"],
        /--preset mnist \(a vision preset for a language run\): the run uses preset tiny/,
      ],
      [["--lr", "1"], /--lr 1: the run has 0\.003.*Only --max-iters may change/],
      [["--seed", "9"], /--seed 9: the run has 1337/],
      [["--max-iters", "0"], /is at step 1, past --max-iters 0/],
    ];
    for (const [args, message] of cases) {
      const r = await runTost([...base, "--resume", ...args]);
      assert.equal(r.code, 2, `${args}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    assert.deepEqual(await snapshotDir(out), before);
    // --force starts afresh: a new run with its own log.
    const forced = await runTost([...base, "--max-iters", "2", "--seed", "3", "--force", "--json"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(JSON.parse(forced.stdout).settings.seed, 3);
    const log = (await Deno.readTextFile(`${out}/log.jsonl`)).trim().split("\n");
    assert.deepEqual(log.map((l) => JSON.parse(l).step), [0, 1, 2, 2]);
  } finally {
    await Deno.remove(out, { recursive: true });
    await Deno.remove(data);
  }
});

Deno.test("tost train: a lock left by a dead run is taken over with a note", async () => {
  const data = await textFile();
  const out = await Deno.makeTempDir();
  try {
    // A process that has ended: its pid is free (reuse within the test is vanishingly rare).
    const gone = new Deno.Command("true").spawn();
    const { pid } = gone;
    await gone.status;
    const lock = { pid, hostname: Deno.hostname(), started: "2026-01-01T00:00:00.000Z" };
    await Deno.writeTextFile(`${out}/.tost-lock`, JSON.stringify(lock));
    const r = await runTost([
      "train",
      "--preset",
      "tiny",
      "--data",
      data,
      "--max-iters",
      "1",
      "--out",
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`note: taking over the lock of .* \\(process ${pid} on `));
    await assert.rejects(Deno.stat(`${out}/.tost-lock`), Deno.errors.NotFound);
    // A live holder (this test's own process) is respected.
    await Deno.writeTextFile(
      `${out}/.tost-lock`,
      JSON.stringify({ ...lock, pid: Deno.pid }),
    );
    const held = await runTost([
      "train",
      "--preset",
      "tiny",
      "--data",
      data,
      "--out",
      out,
      "--force",
    ]);
    assert.equal(held.code, 2, held.stderr);
    assert.match(held.stderr, new RegExp(`in use by another tost train \\(process ${Deno.pid} `));
    assert.ok((await Deno.stat(`${out}/last.safetensors`)).isFile, "--force deleted nothing");
  } finally {
    await Deno.remove(out, { recursive: true });
    await Deno.remove(data);
  }
});

Deno.test("tost train: bad --data is refused before any work and leaves nothing behind", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/empty.txt`, new Uint8Array());
    await Deno.copyFile(
      new URL("../fixtures/tost_lang_small.pt", import.meta.url).pathname,
      `${dir}/model.txt`,
    );
    await Deno.writeFile(`${dir}/latin1.txt`, new Uint8Array([0x63, 0x61, 0x66, 0xe9, 0x0a]));
    await Deno.writeTextFile(`${dir}/short.txt`, "just a few words\n");
    await Deno.copyFile(await textFile(), `${dir}/long.txt`);
    const cases: [string[], RegExp][] = [
      [["--data", `${dir}/empty.txt`], /empty\.txt" is empty/],
      [
        ["--data", `${dir}/model.txt`],
        /model\.txt" is a PyTorch checkpoint \(zip format\), not a UTF-8 text file/,
      ],
      [["--data", `${dir}/latin1.txt`], /latin1\.txt" is not UTF-8 text/],
      [["--data", `${dir}/short.txt`], /short\.txt" is too short: .*block_size \+ 1 = 33/],
      [["--data", `${dir}/missing.txt`], /missing\.txt": no such file; --data takes sotu/],
      [["--data", "sotuu"], /"sotuu": no such file.*\(did you mean sotu\?\)/],
      [
        ["--preset", "mnist", "--data", "sotu"],
        /preset mnist trains the vision model on MNIST, but --data is "sotu"/,
      ],
      [["--preset", "tiny", "--data", "mnist"], /--data mnist is for the vision presets/],
      [
        ["--data", `${dir}/long.txt`, "--out", `${dir}/long.txt`],
        /--out ".*long\.txt" is the same file as --data/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await runTost(["train", "--preset", "tiny", "--out", `${dir}/run`, ...args]);
      assert.equal(r.code, 2, `${args}: ${r.stderr}`);
      assert.match(r.stderr, message);
      await assert.rejects(Deno.stat(`${dir}/run`), Deno.errors.NotFound, `${args}: dir left`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tost train: a diverging run is a failure of the work (exit 1), the checkpoint kept", async () => {
  const data = await textFile();
  const out = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${out}/c.json`, JSON.stringify({ min_lr: 1e30, grad_clip: 0 }));
    const r = await runTost([
      "train",
      "--preset",
      "tiny",
      "--data",
      data,
      "--lr",
      "1e30",
      "--config",
      `${out}/c.json`,
      "--out",
      `${out}/run`,
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /error: Training stopped at step \d+: .*not finite/);
    assert.ok((await Deno.stat(`${out}/run/last.safetensors`)).isFile);
  } finally {
    await Deno.remove(out, { recursive: true });
    await Deno.remove(data);
  }
});

Deno.test("tost train with tuning on pins its kernel choices in the run; --resume keeps them", async () => {
  const data = await textFile();
  const out = await Deno.makeTempDir();
  try {
    const env = { TOST_TUNE: "on", TOST_TUNE_CACHE: `${out}/cache/tune.json` };
    const base = ["train", "--preset", "tiny", "--data", data, "--eval-interval", "2"];
    const first = await runTost([...base, "--max-iters", "2", "--out", `${out}/run`], env);
    assert.equal(first.code, 0, first.stderr);
    const pinned = JSON.parse(await Deno.readTextFile(`${out}/run/tune.json`));
    const [adapter] = Object.keys(pinned.adapters);
    const classes = pinned.adapters[adapter];
    assert.ok(Object.keys(classes).some((k) => k.startsWith("layer_norm ")), "row ops tuned");
    // Someone retunes the cache in between: every choice becomes another variant.
    const cache = JSON.parse(await Deno.readTextFile(env.TOST_TUNE_CACHE));
    for (const c of Object.values(cache.adapters[adapter]) as { variant: string }[]) {
      c.variant = c.variant === "row" ? "workgroup" : c.variant;
    }
    await Deno.writeTextFile(env.TOST_TUNE_CACHE, JSON.stringify(cache));
    const resumed = await runTost(
      ["train", "--resume", "--out", `${out}/run`, "--max-iters", "4"],
      env,
    );
    assert.equal(resumed.code, 0, resumed.stderr);
    const after = JSON.parse(await Deno.readTextFile(`${out}/run/tune.json`)).adapters[adapter];
    for (const [cls, c] of Object.entries(classes) as [string, { variant: string }][]) {
      assert.equal(after[cls].variant, c.variant, `${cls} stays pinned`);
    }
  } finally {
    await Deno.remove(out, { recursive: true });
    await Deno.remove(data);
  }
});
