import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/runtime.ts";
import {
  adapterKey,
  chooseVariant,
  measureVariants,
  memoryTuneStore,
  retune,
  savedChoices,
  setTuneMode,
  setTuneStore,
  type Tunable,
  TUNE_FORMAT,
  type TuneChoice,
  tuneMode,
  type TuneTable,
} from "../../src/gpu/tune.ts";
import { fileTuneStore, pinnedTuneStore, tuneCachePath } from "../../src/cli/_tune_file.ts";
import { withGpu } from "../_util.ts";
import { countingStore } from "./_tune_store.ts";

/** Run `fn` with console.warn captured; returns what was warned. */
async function capturingWarnings(fn: () => Promise<void>): Promise<string[]> {
  const warned: string[] = [];
  const original = console.warn;
  console.warn = (...args: unknown[]) => warned.push(args.join(" "));
  try {
    await fn();
  } finally {
    console.warn = original;
  }
  return warned;
}

const choice = (variant: string, version = 1): TuneChoice => ({
  variant,
  version,
  shape: [1],
  ms: {},
  screen: null,
  rejected: {},
  spent_ms: 0,
  clock: "timestamps",
});

/**
 * A fake op with variants "a" (cannot run odd sizes), "b" and "bad" (fails
 * validation): measuring it records what ran and picks "b" unless told.
 */
function fakeOp(log: string[], version = 1): Tunable<number> {
  return {
    op: "fake",
    version,
    variants: ["a", "b", "bad"],
    unsupported: (_gpu, v, n) => v === "a" && n % 2 === 1 ? "needs an even size" : null,
    shapeClass: (_gpu, n) => n < 4 ? null : `n${n}`,
    fallback: () => "a",
    measure(gpu, n) {
      log.push(`measure ${n}`);
      return measureVariants(gpu, {
        op: "fake",
        version,
        candidates: ["a", "b", "bad"],
        unsupported: n % 2 === 1 ? { a: "cannot run here: needs an even size" } : {},
        validate: (v) => Promise.resolve(v === "bad" ? "wrong result" : null),
        workload: () => ({
          shape: [n],
          run: (v) => {
            log.push(`run ${v}`);
            return Promise.resolve();
          },
          destroy: () => log.push("destroy"),
        }),
        repeats: 2,
        callsPerRound: 1,
      });
    },
  };
}

Deno.test("TOST_TUNE selects tuning; anything but on/off is refused", () => {
  const before = Deno.env.get("TOST_TUNE");
  try {
    setTuneMode(null);
    Deno.env.set("TOST_TUNE", "off");
    assert.equal(tuneMode(), "off");
    Deno.env.set("TOST_TUNE", "on");
    assert.equal(tuneMode(), "on");
    Deno.env.delete("TOST_TUNE");
    assert.equal(tuneMode(), "on");
    Deno.env.set("TOST_TUNE", "fast");
    assert.throws(() => tuneMode(), /TOST_TUNE must be "on" or "off", got "fast"/);
    setTuneMode("off");
    assert.equal(tuneMode(), "off");
  } finally {
    setTuneMode(null);
    if (before === undefined) Deno.env.delete("TOST_TUNE");
    else Deno.env.set("TOST_TUNE", before);
  }
});

Deno.test("measuring validates first, skips what cannot run, times the rest interleaved", async () => {
  await withGpu(async (gpu) => {
    const log: string[] = [];
    const c = await fakeOp(log).measure(gpu, 5);
    assert.equal(c.rejected.a, "cannot run here: needs an even size");
    assert.equal(c.rejected.bad, "wrong result");
    assert.equal(c.variant, "b", "the only valid variant");
    assert.deepEqual(c.ms, {}, "one valid variant: nothing to time");
    assert.deepEqual(log, ["measure 5", "destroy"]);
    log.length = 0;
    const even = await fakeOp(log).measure(gpu, 6);
    assert.ok(["a", "b"].includes(even.variant));
    assert.deepEqual(Object.keys(even.ms).sort(), ["a", "b"]);
    // One untimed round, then A B A B.
    assert.deepEqual(log, [
      "measure 6",
      "run a",
      "run b",
      "run a",
      "run b",
      "run a",
      "run b",
      "destroy",
    ]);
    await assert.rejects(
      measureVariants(gpu, {
        op: "fake",
        version: 1,
        candidates: ["bad"],
        unsupported: {},
        validate: () => Promise.resolve("wrong"),
        workload: () => ({ shape: [], run: () => Promise.resolve(), destroy() {} }),
      }),
      /No fake variant passed validation/,
    );
  });
});

Deno.test("choices: fallback when off or unclassed, saved per class, measured again for a new version", async () => {
  setTuneMode("on");
  try {
    const { store, counts } = countingStore();
    setTuneStore(store);
    await withGpu(async (gpu: Gpu) => {
      const log: string[] = [];
      const op = fakeOp(log);
      assert.equal(await chooseVariant(gpu, op, 2), "a", "too small to classify: the fallback");
      setTuneMode("off");
      assert.equal(await chooseVariant(gpu, op, 9), "a", "tuning off: the fallback");
      setTuneMode("on");
      assert.equal(counts.loads + log.length, 0, "neither measured nor loaded");
      assert.equal(await chooseVariant(gpu, op, 9), "b");
      assert.equal(await chooseVariant(gpu, op, 9), "b");
      assert.deepEqual(log.filter((l) => l.startsWith("measure")), ["measure 9"], "measured once");
      const saved = await savedChoices(gpu.info);
      assert.equal(saved["fake n9"].variant, "b");
      assert.equal(saved["fake n9"].version, 1);
      assert.match(adapterKey(gpu.info), new RegExp(`\\| tune v${TUNE_FORMAT}$`));
      // A retune overwrites the class's choice and what this process uses.
      const r = await retune(gpu, op, 8);
      assert.equal(r.shapeClass, "n8");
      assert.equal(await chooseVariant(gpu, op, 8), r.choice.variant);
    });
    // A later run (fresh device) with the op's variants changed: measured again.
    await withGpu(async (gpu: Gpu) => {
      const log: string[] = [];
      assert.equal(await chooseVariant(gpu, fakeOp(log), 9), "b");
      assert.equal(log.length, 0, "same version: the saved choice");
      assert.equal(await chooseVariant(gpu, fakeOp(log, 2), 9), "b");
      assert.deepEqual(log.filter((l) => l.startsWith("measure")), ["measure 9"]);
      assert.equal((await savedChoices(gpu.info))["fake n9"].version, 2);
    });
    // A saved choice that cannot run the call is not used.
    const key = await withGpu((gpu) => Promise.resolve(adapterKey(gpu.info)));
    setTuneStore(
      countingStore({
        version: TUNE_FORMAT,
        adapters: { [key]: { "fake n9": choice("a") } },
      }).store,
    );
    await withGpu(async (gpu: Gpu) => {
      const log: string[] = [];
      assert.equal(await chooseVariant(gpu, fakeOp(log), 9), "b");
      assert.equal(log[0], "measure 9");
    });
  } finally {
    setTuneMode(null);
    setTuneStore(memoryTuneStore());
  }
});

Deno.test("the file store round-trips, merges with other adapters and resolves its path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/sub/tune.json`;
    const store = fileTuneStore(path);
    assert.equal(store.where, path);
    assert.equal(await store.load(), null, "no file yet");
    const a: TuneTable = {
      version: TUNE_FORMAT,
      adapters: { A: { "gemm nt m4 n4 k4": choice("x") } },
    };
    await store.save(a);
    assert.deepEqual(await store.load(), a);
    // Another process saved adapter B meanwhile: both survive.
    await fileTuneStore(path).save({
      version: TUNE_FORMAT,
      adapters: { B: { "layer_norm r64 c64 v4": choice("row") } },
    });
    await store.save({
      version: TUNE_FORMAT,
      adapters: { A: { "gemm tn m4 n4 k4": choice("y") } },
    });
    const merged = (await store.load())!;
    assert.deepEqual(Object.keys(merged.adapters).sort(), ["A", "B"]);
    assert.deepEqual(Object.keys(merged.adapters.A).sort(), [
      "gemm nt m4 n4 k4",
      "gemm tn m4 n4 k4",
    ]);
    assert.deepEqual([...Deno.readDirSync(`${dir}/sub`)].map((e) => e.name), ["tune.json"]);
    // Path resolution: TOST_TUNE_CACHE, then XDG_CACHE_HOME, then HOME.
    const env = ["TOST_TUNE_CACHE", "XDG_CACHE_HOME", "HOME"].map((k) => [k, Deno.env.get(k)]);
    try {
      Deno.env.set("TOST_TUNE_CACHE", "/x/t.json");
      assert.equal(tuneCachePath(), "/x/t.json");
      Deno.env.delete("TOST_TUNE_CACHE");
      Deno.env.set("XDG_CACHE_HOME", "/xdg");
      assert.equal(tuneCachePath(), "/xdg/tost/tune.json");
      Deno.env.delete("XDG_CACHE_HOME");
      Deno.env.set("HOME", "/home/u");
      assert.equal(tuneCachePath(), "/home/u/.cache/tost/tune.json");
    } finally {
      for (const [k, v] of env) v === undefined ? Deno.env.delete(k!) : Deno.env.set(k!, v);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a run's pinned store keeps the choices it started with when the cache changes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const global = fileTuneStore(`${dir}/global.json`);
    await global.save({ version: TUNE_FORMAT, adapters: { A: { "layer_norm c": choice("row") } } });
    const run = pinnedTuneStore(`${dir}/run/tune.json`, global);
    assert.equal((await run.load())!.adapters.A["layer_norm c"].variant, "row");
    // The first load copied the cache into the run directory.
    const pinnedFile = JSON.parse(await Deno.readTextFile(`${dir}/run/tune.json`));
    assert.equal(pinnedFile.adapters.A["layer_norm c"].variant, "row");
    // Someone retunes the cache; the run's new choice for another class goes to both.
    await global.save({
      version: TUNE_FORMAT,
      adapters: { A: { "layer_norm c": choice("workgroup") } },
    });
    const t = (await run.load())!;
    assert.equal(t.adapters.A["layer_norm c"].variant, "row", "pinned wins on resume");
    t.adapters.A["gemm k"] = choice("texture-8x8");
    await run.save(t);
    assert.equal((await global.load())!.adapters.A["gemm k"].variant, "texture-8x8");
    assert.equal((await run.load())!.adapters.A["gemm k"].variant, "texture-8x8");
    assert.equal((await run.load())!.adapters.A["layer_norm c"].variant, "row");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a corrupt or unwritable cache warns once and tuning goes on in memory", async () => {
  const dir = await Deno.makeTempDir();
  setTuneMode("on");
  try {
    const corrupt = `${dir}/corrupt.json`;
    await Deno.writeTextFile(corrupt, "{ not json");
    await assert.rejects(fileTuneStore(corrupt).load(), /corrupt.json is not JSON/);
    await Deno.writeTextFile(`${dir}/wrong.json`, `{"adapters": []}`);
    await assert.rejects(fileTuneStore(`${dir}/wrong.json`).load(), /not a tost tuning cache/);
    setTuneStore(fileTuneStore(corrupt));
    const warned = await capturingWarnings(async () => {
      await withGpu(async (gpu) => {
        await chooseVariant(gpu, fakeOp([]), 8);
        await chooseVariant(gpu, fakeOp([]), 10);
      });
    });
    assert.equal(warned.length, 1, warned.join("\n"));
    assert.match(warned[0], /^warning: cannot read the tuning cache .*corrupt.json.*tuning again/);
    // A cache whose directory is a file cannot be written.
    await Deno.writeTextFile(`${dir}/file`, "");
    const blocked = fileTuneStore(`${dir}/file/tune.json`);
    await assert.rejects(blocked.save({ version: TUNE_FORMAT, adapters: {} }));
    setTuneStore({ where: "read-only", load: () => Promise.resolve(null), save: blocked.save });
    const warnedWrite = await capturingWarnings(async () => {
      await withGpu(async (gpu) => {
        assert.ok(["a", "b"].includes(await chooseVariant(gpu, fakeOp([]), 8)));
        assert.ok(await chooseVariant(gpu, fakeOp([]), 10));
        assert.equal((await savedChoices(gpu.info))["fake n10"].variant.length > 0, true);
      });
    });
    assert.equal(warnedWrite.length, 1, warnedWrite.join("\n"));
    assert.match(
      warnedWrite[0],
      /^warning: cannot write the tuning cache \(read-only\).*keeping choices in memory/,
    );
  } finally {
    setTuneMode(null);
    setTuneStore(memoryTuneStore());
    await Deno.remove(dir, { recursive: true });
  }
});
