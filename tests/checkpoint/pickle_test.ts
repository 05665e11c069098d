/**
 * The pickle decoder on pickles written by CPython's own `pickle.dumps`
 * (bytes pasted as hex, with the Python expression that made them), one test
 * per opcode family, plus the refusals and bounds.
 *
 * @module
 */

import assert from "node:assert/strict";
import { CheckpointFormatError } from "../../src/checkpoint/errors.ts";
import {
  MAX_NESTING,
  PickleTruncatedError,
  PyFloat,
  PyGlobal,
  PyObject,
  unpickle,
} from "../../src/checkpoint/pickle.ts";
import type { PickleValue } from "../../src/checkpoint/pickle.ts";

function hex(s: string): Uint8Array {
  return new Uint8Array(s.match(/../g)!.map((b) => parseInt(b, 16)));
}

function load(h: string | Uint8Array): PickleValue {
  return unpickle(typeof h === "string" ? hex(h) : h).value;
}

function dict(v: PickleValue): Map<PickleValue, PickleValue> {
  assert.ok(v instanceof Map, `expected a dict, got ${v}`);
  return v;
}

const enc = (s: string) => [...new TextEncoder().encode(s)];

// pickle.dumps({"i": 5, "neg": -7, "big": 2**70, "f": 1.5, "inf": float("inf"),
//   "s": "a\\b\nc'\"é", "t": (1, 2), "l": [None, True, False], "b": b"\x00\xffok"}, protocol=0)
const P0 =
  "286470300a56690a70310a49350a73566e65670a70320a492d370a73566269670a70330a4c31313830353931363230373137343131333033343234" +
  "4c0a7356660a70340a46312e350a7356696e660a70350a46696e660a7356730a70360a56615c7530303563625c7530303061632722e90a70370a" +
  "7356740a70380a2849310a49320a7470390a73566c0a7031300a286c7031310a4e614930310a614930300a617356620a7031320a635f636f6465" +
  "63730a656e636f64650a7031330a28565c7530303030ff6f6b0a7031340a566c6174696e310a7031350a747031360a527031370a732e";

Deno.test("protocol 0 text opcodes: INT LONG FLOAT UNICODE GET/PUT DICT LIST TUPLE", () => {
  const d = dict(load(P0));
  assert.equal(d.get("i"), 5);
  assert.equal(d.get("neg"), -7);
  assert.equal(d.get("big"), 2n ** 70n);
  assert.deepEqual(d.get("f"), new PyFloat(1.5));
  assert.equal((d.get("inf") as PyFloat).value, Infinity);
  assert.equal(d.get("s"), "a\\b\nc'\"é");
  assert.deepEqual(d.get("t"), [1, 2]);
  assert.ok(Object.isFrozen(d.get("t")), "tuples are frozen");
  assert.deepEqual(d.get("l"), [null, true, false]);
  assert.deepEqual(d.get("b"), new Uint8Array([0, 255, 0x6f, 0x6b]), "_codecs.encode latin1");
});

// pickle.dumps({"i": 5, "neg": -70000, "big": -(2**70), "f": -0.25, "s": "héllo", "t": (),
//   "l": [1, [2, 3]], "b": b"\x00\xffok"}, protocol=1)
const P1 =
  "7d71002858010000006971014b0558030000006e656771024a90eefeff580300000062696771034c2d313138303539313632303731373431313330" +
  "333432344c0a580100000066710447bfd00000000000005801000000737105580600000068c3a96c6c6f710658010000007471072958010000" +
  "006c71085d7109284b015d710a284b024b036565580100000062710b635f636f646563730a656e636f64650a710c28580500000000c3bf6f6b71" +
  "0d58060000006c6174696e31710e74710f527110752e";

Deno.test("protocol 1 binary opcodes: BININT BININT1 BINFLOAT BINUNICODE EMPTY_* APPENDS SETITEMS", () => {
  const d = dict(load(P1));
  assert.equal(d.get("i"), 5);
  assert.equal(d.get("neg"), -70000);
  assert.equal(d.get("big"), -(2n ** 70n));
  assert.equal((d.get("f") as PyFloat).value, -0.25);
  assert.equal(d.get("s"), "héllo");
  assert.deepEqual(d.get("t"), []);
  assert.deepEqual(d.get("l"), [1, [2, 3]]);
  assert.deepEqual(d.get("b"), new Uint8Array([0, 255, 0x6f, 0x6b]));
});

// pickle.dumps({"i": 300, "j": 70000, "big": 2**64, "f": 1.0, "s": "x" * 300, "t3": (1, 2, 3),
//   "b": b"\x00\xffok", "ns": argparse.Namespace(lr=0.5, model="m")}, protocol=2)
const P2 =
  "80027d71002858010000006971014d2c0158010000006a71024a70110100580300000062696771038a09000000000000" +
  "0000015801000000667104473ff00000000000005801000000737105582c010000" + "78".repeat(300) +
  "71065802000000743371074b014b024b038771085801000000627109635f636f646563730a656e636f64650a710a580500000000c3bf6f6b" +
  "710b58060000006c6174696e31710c86710d52710e58020000006e73710f6361726770617273650a4e616d6573706163650a7110298171117d" +
  "71122858020000006c727113473fe000000000000058050000006d6f64656c711458010000006d71157562752e";

Deno.test("protocol 2: PROTO BININT2 LONG1 TUPLE3 TUPLE2 NEWOBJ BUILD (argparse.Namespace)", () => {
  const d = dict(load(P2));
  assert.equal(d.get("i"), 300);
  assert.equal(d.get("j"), 70000);
  assert.equal(d.get("big"), 2n ** 64n);
  assert.equal(String(d.get("f")), "1.0", "a float stays a float");
  assert.equal(d.get("s"), "x".repeat(300));
  assert.deepEqual(d.get("t3"), [1, 2, 3]);
  const ns = d.get("ns");
  assert.ok(ns instanceof PyObject);
  assert.equal(ns.callable.qualname, "argparse.Namespace");
  assert.deepEqual(Object.fromEntries(ns.attributes()!), { lr: new PyFloat(0.5), model: "m" });
});

// pickle.dumps(argparse.Namespace(lr=0.5, model="m"), protocol=0) and protocol=1
const NS0 =
  "63636f70795f7265670a5f7265636f6e7374727563746f720a70300a286361726770617273650a4e616d6573706163650a70310a635f5f62" +
  "75696c74696e5f5f0a6f626a6563740a70320a4e7470330a5270340a286470350a566c720a70360a46302e350a73566d6f64656c0a70370a" +
  "566d0a70380a73622e";
const NS1 =
  "63636f70795f7265670a5f7265636f6e7374727563746f720a7100286361726770617273650a4e616d6573706163650a7101635f5f6275696c" +
  "74696e5f5f0a6f626a6563740a71024e7471035271047d71052858020000006c727106473fe000000000000058050000006d6f64656c7107" +
  "58010000006d710875622e";

Deno.test("GLOBAL + REDUCE of copy_reg._reconstructor gives an inert object (protocols 0, 1)", () => {
  for (const h of [NS0, NS1]) {
    const ns = load(h);
    assert.ok(ns instanceof PyObject);
    assert.equal(ns.callable.qualname, "argparse.Namespace");
    assert.equal(ns.attributes()!.get("model"), "m");
  }
});

// pickle.dumps({"set": {1, 2}, "fs": frozenset({"a"}), "od": OrderedDict([("k", 1)]),
//   "s": "ü", "b": b"xy", "shared": None}, protocol=4)
const P4 =
  "80049568000000000000007d94288c03736574948f94284b014b02908c02667394288c01619491948c026f64948c0b636f6c6c656374696f6e73" +
  "948c0b4f726465726564446963749493942952948c016b944b01738c0173948c02c3bc948c01629443027879948c06736861726564944e752e";

Deno.test("protocol 4: FRAME SHORT_BINUNICODE MEMOIZE STACK_GLOBAL EMPTY_SET ADDITEMS FROZENSET", () => {
  const d = dict(load(P4));
  assert.deepEqual(d.get("set"), new Set([1, 2]));
  assert.deepEqual([...(d.get("fs") as Set<PickleValue>)], ["a"]);
  assert.deepEqual(d.get("od"), new Map([["k", 1]]), "collections.OrderedDict is interpreted");
  assert.equal(d.get("s"), "ü");
  assert.deepEqual(d.get("b"), new Uint8Array([0x78, 0x79]), "SHORT_BINBYTES");
  assert.equal(d.get("shared"), null);
});

// pickle.dumps({"ba": bytearray(b"abc"), "ns": argparse.Namespace(x=1)}, protocol=5)
const P5 =
  "80059542000000000000007d94288c02626194960300000000000000616263948c026e73948c086172677061727365948c094e616d6573706163" +
  "659493942981947d948c0178944b017362752e";

Deno.test("protocol 5: BYTEARRAY8, NEWOBJ via STACK_GLOBAL", () => {
  const d = dict(load(P5));
  assert.deepEqual(d.get("ba"), new Uint8Array([0x61, 0x62, 0x63]));
  assert.equal((d.get("ns") as PyObject).attributes()!.get("x"), 1);
});

Deno.test("memo: BINGET returns the same object (shared references)", () => {
  // l = [1, 2]; pickle.dumps({"a": l, "b": l}, protocol=2) and protocol=4
  for (
    const h of [
      "80027d71002858010000006171015d7102284b014b026558010000006271036802752e",
      "80049517000000000000007d94288c0161945d94284b014b02658c0162946802752e",
    ]
  ) {
    const d = dict(load(h));
    assert.deepEqual(d.get("a"), [1, 2]);
    assert.equal(d.get("a"), d.get("b"));
  }
});

Deno.test("persistent ids go to the caller; calls go to the hook or stay inert", () => {
  // \x80\x02 ( X'storage' K1 t Q  c'torch._utils\n_rebuild_x\n' ( K7 t R  tuple2 .
  const bytes = new Uint8Array([
    0x80,
    2,
    0x28,
    0x58,
    7,
    0,
    0,
    0,
    ...enc("storage"),
    0x4b,
    1,
    0x74,
    0x51,
    0x63,
    ...enc("mod.sub\nfn\n"),
    0x28,
    0x4b,
    7,
    0x74,
    0x52,
    0x86,
    0x2e,
  ]);
  const pids: PickleValue[] = [];
  const { value } = unpickle(bytes, {
    persistentLoad: (pid) => {
      pids.push(pid);
      return "STORAGE";
    },
    call: (fn, args) => fn.qualname === "mod.sub.fn" ? `called(${args.join(",")})` : undefined,
  });
  assert.deepEqual(pids, [["storage", 1]]);
  assert.deepEqual(value, ["STORAGE", "called(7)"]);
  const inert = unpickle(bytes, { persistentLoad: () => null }).value as PickleValue[];
  assert.ok(inert[1] instanceof PyObject);
  assert.deepEqual((inert[1] as PyObject).callable, new PyGlobal("mod.sub", "fn"));
  assert.throws(() => unpickle(bytes), /persistent id where none is expected/);
});

function refused(bytes: Uint8Array, pattern: RegExp): void {
  assert.throws(
    () => unpickle(bytes),
    (e) => e instanceof CheckpointFormatError && pattern.test(e.message),
  );
}

Deno.test("refusals: dangerous globals by GLOBAL, STACK_GLOBAL and INST", () => {
  refused(new Uint8Array([0x63, ...enc("os\nsystem\n"), 0x2e]), /refusing global os\.system/);
  refused(
    new Uint8Array([0x28, 0x69, ...enc("subprocess\nPopen\n"), 0x2e]),
    /refusing global subprocess\.Popen/,
  );
  refused(
    new Uint8Array([0x8c, 8, ...enc("builtins"), 0x8c, 4, ...enc("eval"), 0x93, 0x2e]),
    /refusing global builtins\.eval: builtin "eval" can run code/,
  );
  // builtins.set is a data constructor and is allowed.
  assert.deepEqual(
    load(new Uint8Array([0x63, ...enc("builtins\nset\n"), 0x5d, 0x4b, 3, 0x61, 0x85, 0x52, 0x2e])),
    new Set([3]),
  );
});

Deno.test("errors name the opcode and its offset", () => {
  refused(new Uint8Array([0x80, 2, 0xff]), /unknown opcode 0xff \(opcode at byte 2 of pickle\)/);
  refused(new Uint8Array([0x80, 6, 0x2e]), /unsupported pickle protocol 6/);
  refused(new Uint8Array([0x82, 1, 0x2e]), /EXT1\/2\/4/);
  refused(new Uint8Array([0x4b, 1, 0x4b, 2, 0x2e]), /STOP with 2 values on the stack/);
  refused(new Uint8Array([0x68, 3, 0x2e]), /memo entry 3 is not defined/);
  refused(new Uint8Array([0x4b, 1, 0x72, 0xff, 0xff, 0xff, 0x0f, 0x2e]), /implausibly large/);
  refused(new Uint8Array([0x4b, 1, 0x61, 0x2e]), /stack underflow/);
  refused(new Uint8Array([0x29, 0x4b, 1, 0x61, 0x2e]), /APPEND\(S\) on a tuple/);
  assert.throws(() => unpickle(new Uint8Array([0x80, 2, 0x58, 9, 0, 0])), PickleTruncatedError);
  assert.throws(
    () => unpickle(new Uint8Array([0x8e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x2e])),
    /BINBYTES8 of 9223372036854775807 bytes runs past the end/,
  );
});

Deno.test("bounds: cycles and nesting deeper than MAX_NESTING are refused; shared DAGs are fine", () => {
  // l = []; l.append(l): EMPTY_LIST BINPUT 0 BINGET 0 APPEND STOP
  refused(new Uint8Array([0x5d, 0x71, 0, 0x68, 0, 0x61, 0x2e]), /contains itself/);
  const deep = (n: number) =>
    new Uint8Array([...Array(n).fill(0x5d), ...Array(n - 1).fill(0x61), 0x2e]);
  assert.doesNotThrow(() => unpickle(deep(MAX_NESTING)));
  refused(deep(MAX_NESTING + 1), /nests containers more than 1000 levels deep/);
  // Billion laughs: level k is a list of ten references to level k-1, 40 levels (10^40 leaves).
  const laughs = [0x5d, 0x94, 0x30]; // EMPTY_LIST MEMOIZE POP
  for (let k = 1; k <= 40; k++) {
    laughs.push(0x28, ...Array(10).fill([0x68, k - 1]).flat(), 0x6c, 0x94, 0x30);
  }
  laughs.push(0x68, 40, 0x2e);
  const t0 = performance.now();
  assert.ok(Array.isArray(load(new Uint8Array(laughs))));
  assert.ok(performance.now() - t0 < 1000, "linear in the DAG, not the tree");
});
