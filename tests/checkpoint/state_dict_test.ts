import assert from "node:assert/strict";
import { CheckpointFormatError } from "../../src/checkpoint/errors.ts";
import { PyFloat, PyGlobal, PyObject } from "../../src/checkpoint/pickle.ts";
import type { PickleValue } from "../../src/checkpoint/pickle.ts";
import { chooseStateDict, cleanName, plainRecord } from "../../src/checkpoint/state_dict.ts";
import { StorageRef, TensorRef } from "../../src/checkpoint/torch.ts";

const storage = new StorageRef("0", "F32", 4, "cpu");
const t = (n = 4) => new TensorRef(storage, 0, [n], [1]);
const dict = (entries: [PickleValue, PickleValue][]) => new Map<PickleValue, PickleValue>(entries);

Deno.test("cleanName strips torch.compile and DDP prefixes in any order", () => {
  assert.equal(cleanName("_orig_mod.transformer.wte.weight"), "transformer.wte.weight");
  assert.equal(cleanName("module._orig_mod.blocks.0.gamma1"), "blocks.0.gamma1");
  assert.equal(cleanName("_orig_mod.module.head.bias"), "head.bias");
  assert.equal(cleanName("head.module.weight"), "head.module.weight", "only prefixes");
  assert.equal(cleanName("module."), "module.", "never to an empty name");
});

Deno.test("chooseStateDict: bare state_dict, default keys in order, --key", () => {
  const bare = chooseStateDict(dict([["a", t()], ["module.b", t(2)]]));
  assert.equal(bare.key, null);
  assert.deepEqual([...bare.tensors.keys()], ["a", "b"]);
  assert.equal(bare.originalNames.get("b"), "module.b");
  const ck = dict([
    ["model_ema", dict([["x", t()]])],
    ["model", dict([["y", t()]])],
    ["epoch", 3],
  ]);
  assert.equal(chooseStateDict(ck).key, "model");
  assert.deepEqual([...chooseStateDict(ck, "model_ema").tensors.keys()], ["x"]);
  const sd = chooseStateDict(dict([["state_dict", dict([["z", t()]])], ["opt", dict([])]]));
  assert.equal(sd.key, "state_dict");
});

function refuses(root: PickleValue, key: string | undefined, pattern: RegExp): void {
  assert.throws(
    () => chooseStateDict(root, key),
    (e) => e instanceof CheckpointFormatError && pattern.test(e.message),
  );
}

Deno.test("chooseStateDict: clear refusals", () => {
  const ck = dict([["model", dict([["w", t()], ["n", 5]])], ["epoch", 1]]);
  refuses(ck, undefined, /entry "n" of "model" is an int, where a tensor is expected/);
  refuses(ck, "nope", /no top-level key "nope"; the keys are "model", "epoch"/);
  refuses(ck, "epoch", /"epoch" is an int, not a state_dict/);
  refuses(dict([["opt", dict([["lr", 1]])]]), undefined, /no model state_dict found.*--key/);
  const linear = new PyObject(new PyGlobal("torch.nn.modules.linear", "Linear"), []);
  refuses(linear, undefined, /whole torch\.nn\.modules\.linear\.Linear object/);
  refuses(dict([["model", linear]]), undefined, /"model" pickles a whole .*Linear object/);
  refuses(
    dict([["a", t()], ["module.a", t()]]),
    undefined,
    /"module\.a" and "a" .* both become "a"/,
  );
  refuses(dict([[1, t()]]), undefined, /has an int key; tensor names are strings/);
  refuses(dict([["model", dict([])]]), undefined, /"model" is empty/);
  refuses([1, 2] as PickleValue, undefined, /holds a list, not a dict/);
});

Deno.test("plainRecord: dicts and Namespace attributes as plain values", () => {
  const ns = new PyObject(new PyGlobal("argparse", "Namespace"), []);
  ns.state = dict([["model", "tost_cab_tiny_12_p16"], ["lr", new PyFloat(0.5)], ["x", [1]]]);
  assert.deepEqual(plainRecord(ns), { model: "tost_cab_tiny_12_p16", lr: 0.5 });
  assert.deepEqual(plainRecord(dict([["n_head", 4], [3, "skip"]])), { n_head: 4 });
  assert.equal(plainRecord(5), undefined);
});
