import assert from "node:assert/strict";
import {
  adapterKey,
  memoryTuneStore,
  savedChoices,
  setTuneMode,
  setTuneStore,
  TUNE_FORMAT,
  type TuneChoice,
} from "../../src/gpu/tune.ts";
import {
  chooseGemmVariant as chooseVariant,
  defaultVariant,
  GEMM_TUNE_VERSION,
  shapeClass,
  tuneShape,
  tuningShape,
} from "../../src/ops/gemm_tune.ts";
import { type GemmVariant, gemmVariant } from "../../src/ops/gemm.ts";
import { withGpu } from "../_util.ts";
import { countingStore } from "../gpu/_tune_store.ts";

const choice = (variant: string): TuneChoice => ({
  variant,
  version: GEMM_TUNE_VERSION,
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
      assert.match(key, new RegExp(`tune v${TUNE_FORMAT}$`));
      const v = await chooseVariant(gpu, "nt", 64, 64, 64);
      assert.equal(counts.saves, 1);
      const saved = await savedChoices(gpu.info);
      assert.equal(saved["gemm nt m64 n64 k64"].variant, v.name);
      assert.equal(saved["gemm nt m64 n64 k64"].version, GEMM_TUNE_VERSION);
      assert.equal(await chooseVariant(gpu, "nt", 60, 50, 40), v, "same class: no new tuning");
      assert.equal(counts.saves, 1);
    });
    // A fresh device (a later run) finds the saved choice.
    setTuneStore(store);
    await withGpu(async (gpu) => {
      const saved = (await store.load())!.adapters[key]["gemm nt m64 n64 k64"].variant;
      assert.equal((await chooseVariant(gpu, "nt", 64, 64, 64)).name, saved);
      assert.equal(counts.saves, 1, "read from the cache, not measured again");
    });
    // Choices of another adapter are not this adapter's.
    const other = { version: TUNE_FORMAT, adapters: { "Other GPU | x | y | z": {} } };
    other.adapters["Other GPU | x | y | z"] = { "gemm nt m64 n64 k64": choice("tile-128x64") };
    setTuneStore(countingStore(other).store);
    await withGpu(async (gpu) => {
      assert.deepEqual(await savedChoices(gpu.info), {});
    });
  } finally {
    setTuneMode(null);
    setTuneStore(memoryTuneStore());
  }
});
