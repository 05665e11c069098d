/**
 * `tost train` in a real (pseudo-)terminal: the progress bar never leaves old
 * copies above the log lines, its final state shows once, the first draw says
 * "ETA -" rather than "ETA 0s", and Ctrl-C (typed as a user types it) leaves
 * a clean line, reports the last train loss and exits 130.
 */

import assert from "node:assert/strict";
import { screen, tostInPty } from "./_pty.ts";

async function workspace(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tost-pty-" });
  const lines: string[] = [];
  for (let i = 0; i < 400; i++) lines.push(`line ${i % 17}: the quick brown fox ${i % 5} jumps.`);
  await Deno.writeTextFile(`${dir}/d.txt`, lines.join("\n"));
  return dir;
}

const BAR = /^training \[/;

Deno.test("pty: log lines print above the bar, the final bar shows once, no ETA 0s at step 0", async () => {
  const dir = await workspace();
  try {
    const run = tostInPty(
      ["train", "--preset", "tiny", "--data", "d.txt", "--max-iters", "6", "--eval-interval", "2"],
      dir,
    );
    const { raw, code } = await run.done;
    assert.equal(code, 0, raw);
    const lines = screen(raw);
    const bars = lines.filter((l) => BAR.test(l));
    assert.equal(bars.length, 1, `one bar on screen:\n${lines.join("\n")}`);
    assert.match(bars[0], /\] 6\/6 \| loss \d/);
    // The bar sits after the last evaluation line and before the summary.
    const barAt = lines.findIndex((l) => BAR.test(l));
    const evals = lines.map((l, i) => [l, i] as const).filter(([l]) =>
      /^step \d: validation/.test(l)
    );
    assert.deepEqual(evals.map(([l]) => l.slice(0, 6)), ["step 0", "step 2", "step 4", "step 6"]);
    assert.ok(evals.every(([, i]) => i < barAt));
    assert.match(lines[barAt + 1], /^finished at step 6\/6/);
    // The first draw, before any step was timed, shows no ETA.
    assert.match(raw, /\] 0\/6 \| loss - \| - tokens\/s \| ETA -/);
    assert.doesNotMatch(raw, /0\/6 [^\n\r]*ETA 0/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pty: Ctrl-C erases the bar, says interrupted, reports the train loss, exits 130", async () => {
  const dir = await workspace();
  try {
    const run = tostInPty(
      ["train", "--preset", "tiny", "--data", "d.txt", "--max-iters", "50000", "--out", "r"],
      dir,
    );
    // Steps run ahead of the bar (it is fed once per log interval): wait for any
    // step drawn, with far more steps left than can run before the Ctrl-C lands.
    await run.waitFor(/\] [1-9]\d*\/50000/);
    await run.type("\x03");
    const { raw, code } = await run.done;
    assert.equal(code, 130, raw);
    const lines = screen(raw);
    assert.ok(!lines.some((l) => BAR.test(l)), `no bar left on screen:\n${lines.join("\n")}`);
    const at = lines.findIndex((l) => l.startsWith("interrupted: stopping after this step"));
    assert.ok(at >= 0, lines.join("\n"));
    assert.ok(!lines.some((l) => l.includes("^C")), "the echoed ^C is erased with the bar");
    assert.ok(lines.some((l) => /^interrupted at step \d+\/50000/.test(l)));
    assert.ok(lines.some((l) => /^train loss: +\d+\.\d+ \(step \d+/.test(l)));
    assert.match(lines.filter(Boolean).at(-1)!, /^error: interrupted at step \d+ of 50000/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
