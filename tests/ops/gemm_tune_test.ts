import assert from "node:assert/strict";
import {
  adapterKey,
  chooseVariant,
  defaultVariant,
  memoryTuneStore,
  savedChoices,
  setTuneMode,
  setTuneStore,
  shapeClass,
  TUNE_VERSION,
  type TuneChoice,
  tuneMode,
  tuneShape,
  type TuneStore,
  type TuneTable,
  tuningShape,
} from "../../src/ops/gemm_tune.ts";
import { type GemmVariant, gemmVariant } from "../../src/ops/gemm.ts";
import { fileTuneStore, tuneCachePath } from "../../src/cli/_tune_file.ts";
import { withGpu } from "../_util.ts";

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

/** A store that counts its loads and saves. */
function countingStore(initial: TuneTable | null = null) {
  const inner = memoryTuneStore();
  const counts = { loads: 0, saves: 0 };
  if (initial) inner.save(initial);
  const store: TuneStore = {
    where: "test",
    load: () => {
      counts.loads++;
      return inner.load();
    },
    save: (t) => {
      counts.saves++;
      return inner.save(t);
    },
  };
  return { store, counts };
}

const choice = (variant: string): TuneChoice => ({
  variant,
  shape: [1, 1, 1],
  ms: {},
  screen: null,
  rejected: {},
  spent_ms: 0,
  clock: "timestamps",
});

Deno.test("shape classes round each side up to a power of 4; one or two rows are their own class", () => {
  assert.equal(shapeClass("nt", 4096, 1152, 384), "nt m4096 n4096 k1024");
  assert.equal(shapeClass("nn", 4096, 384, 1536), "nn m4096 n1024 k4096");
  assert.equal(shapeClass("nt", 1, 50257, 768), "nt m2 n65536 k1024");
  assert.equal(shapeClass("nt", 2, 3, 4), "nt m2 n4 k4");
  assert.notEqual(shapeClass("nt", 3, 3, 3), shapeClass("nt", 2, 3, 3));
});

Deno.test("the timing size keeps the shape's character within a budget", () => {
  assert.deepEqual(tuningShape(4096, 1152, 384, 1 << 26), [256, 1024, 192]);
  assert.deepEqual(tuningShape(7, 5, 3, 1 << 26), [7, 5, 3]);
  for (const s of [[4096, 1152, 384], [1024, 1024, 1024], [384, 1152, 4096]]) {
    const [m, n, k] = tuningShape(s[0], s[1], s[2], 1 << 22);
    assert.ok(m * n * k <= 1 << 22, `${s} → ${[m, n, k]}`);
    assert.ok(m >= 16 && n >= 64 && k >= 64);
  }
  assert.deepEqual(tuningShape(1, 50257, 768, 1 << 22), [1, 1024, 768]);
  assert.deepEqual(tuningShape(4096, 1152, 384, 1 << 22), [256, 256, 64]);
});

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

Deno.test("with tuning off the choice is a fixed default for the adapter kind", async () => {
  await withGpu(async (gpu) => {
    setTuneMode("off");
    try {
      const { store, counts } = countingStore();
      setTuneStore(store);
      const big = await chooseVariant(gpu, "nt", 4096, 1152, 384);
      assert.equal(big, defaultVariant(gpu, 4096, 1152, 384));
      assert.equal(big.family, gpu.info.software ? "texture" : "tile");
      assert.equal((await chooseVariant(gpu, "nt", 1, 1152, 384)).name, "simple-1x4");
      assert.equal(counts.loads + counts.saves, 0, "the cache is not touched");
    } finally {
      setTuneMode(null);
      setTuneStore(memoryTuneStore());
    }
  });
});

Deno.test("tuning excludes a variant that fails validation and picks the fastest valid one", async () => {
  await withGpu(async (gpu) => {
    const broken: GemmVariant = {
      name: "broken",
      family: "simple",
      unsupported: () => null,
      caps: () => ({ i: Infinity, j: Infinity, r: Infinity }),
      record: () => Promise.resolve(), // never writes C
    };
    const valid = ["simple-4x4", "texture-8x8"].map(gemmVariant);
    const c = await tuneShape(gpu, "tn", 300, 200, 100, [broken, ...valid]);
    assert.match(c.rejected.broken, /^wrong result at 37×29×19/);
    assert.ok(["simple-4x4", "texture-8x8"].includes(c.variant));
    assert.ok(c.screen, "two valid variants are screened");
    assert.deepEqual(Object.keys(c.screen.ms).sort(), ["simple-4x4", "texture-8x8"]);
    for (const t of Object.values(c.ms)) assert.ok(t > 0);
    assert.ok(c.ms[c.variant] <= Math.min(...Object.values(c.ms)));
    assert.equal(c.clock, gpu.hasTimestamps ? "timestamps" : "wall");
    await assert.rejects(
      tuneShape(gpu, "nt", 100, 100, 100, [broken]),
      /No GEMM variant passed validation for nt products/,
    );
  });
});

Deno.test("a tuned choice is saved under the adapter's key and reused without measuring", async () => {
  setTuneMode("on");
  try {
    const { store, counts } = countingStore();
    setTuneStore(store);
    let key = "";
    await withGpu(async (gpu) => {
      key = adapterKey(gpu.info);
      assert.match(key, new RegExp(`gemm v${TUNE_VERSION}$`));
      const v = await chooseVariant(gpu, "nt", 64, 64, 64);
      assert.equal(counts.saves, 1);
      const saved = await savedChoices(gpu.info);
      assert.equal(saved["nt m64 n64 k64"].variant, v.name);
      assert.equal(await chooseVariant(gpu, "nt", 60, 50, 40), v, "same class: no new tuning");
      assert.equal(counts.saves, 1);
    });
    // A fresh device (a later run) finds the saved choice.
    setTuneStore(store);
    await withGpu(async (gpu) => {
      const saved = (await store.load())!.adapters[key]["nt m64 n64 k64"].variant;
      assert.equal((await chooseVariant(gpu, "nt", 64, 64, 64)).name, saved);
      assert.equal(counts.saves, 1, "read from the cache, not measured again");
    });
    // Choices of another adapter are not this adapter's.
    const other = { version: TUNE_VERSION, adapters: { "Other GPU | x | y | z": {} } };
    other.adapters["Other GPU | x | y | z"] = { "nt m64 n64 k64": choice("tile-128x64") };
    setTuneStore(countingStore(other).store);
    await withGpu(async (gpu) => {
      assert.deepEqual(await savedChoices(gpu.info), {});
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
      version: TUNE_VERSION,
      adapters: { A: { "nt m4 n4 k4": choice("simple-1x4") } },
    };
    await store.save(a);
    assert.deepEqual(await store.load(), a);
    // Another process saved adapter B meanwhile: both survive.
    const b: TuneTable = {
      version: TUNE_VERSION,
      adapters: { B: { "nn m4 n4 k4": choice("tile-64x64") } },
    };
    await fileTuneStore(path).save(b);
    await store.save({
      version: TUNE_VERSION,
      adapters: { A: { "tn m4 n4 k4": choice("texture-8x8") } },
    });
    const merged = (await store.load())!;
    assert.deepEqual(Object.keys(merged.adapters).sort(), ["A", "B"]);
    assert.deepEqual(Object.keys(merged.adapters.A).sort(), ["nt m4 n4 k4", "tn m4 n4 k4"]);
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
        await chooseVariant(gpu, "nt", 64, 64, 64);
        await chooseVariant(gpu, "nn", 64, 64, 64);
      });
    });
    assert.equal(warned.length, 1, warned.join("\n"));
    assert.match(
      warned[0],
      /^warning: cannot read the GEMM tuning cache .*corrupt.json.*tuning again/,
    );
    // A cache whose directory is a file cannot be written.
    await Deno.writeTextFile(`${dir}/file`, "");
    const blocked = fileTuneStore(`${dir}/file/tune.json`);
    await assert.rejects(blocked.save({ version: TUNE_VERSION, adapters: {} }));
    setTuneStore({ where: "read-only", load: () => Promise.resolve(null), save: blocked.save });
    const warnedWrite = await capturingWarnings(async () => {
      await withGpu(async (gpu) => {
        assert.ok(await chooseVariant(gpu, "nt", 64, 64, 64));
        assert.ok(await chooseVariant(gpu, "tn", 64, 64, 64));
        assert.equal((await savedChoices(gpu.info))["tn m64 n64 k64"].variant.length > 0, true);
      });
    });
    assert.equal(warnedWrite.length, 1, warnedWrite.join("\n"));
    assert.match(
      warnedWrite[0],
      /^warning: cannot write the GEMM tuning cache \(read-only\).*keeping choices in memory/,
    );
  } finally {
    setTuneMode(null);
    setTuneStore(memoryTuneStore());
    await Deno.remove(dir, { recursive: true });
  }
});
