import assert from "node:assert/strict";
import {
  parseSafetensors,
  readSafetensors,
  SafetensorsWriter,
  serializeSafetensors,
  type StTensor,
  writeSafetensors,
} from "../../src/io/safetensors.ts";

/** A file made of `header` (JSON text, unpadded) and `dataBytes` zero bytes. */
function rawFile(header: string, dataBytes = 0, lengthOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

function entry(dtype: string, shape: unknown[], begin: number, end: number): string {
  return JSON.stringify({ dtype, shape, data_offsets: [begin, end] });
}

const sample: [string, StTensor][] = [
  ["b", {
    dtype: "F32",
    shape: [2, 3],
    data: new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer),
  }],
  ["a", {
    dtype: "I64",
    shape: [2],
    data: new Uint8Array(new BigInt64Array([-5n, 1n << 40n]).buffer),
  }],
  ["scalar", { dtype: "F16", shape: [], data: new Uint8Array([0x00, 0x3c]) }],
  ["empty", { dtype: "BF16", shape: [0, 4], data: new Uint8Array(0) }],
  ["flag", { dtype: "BOOL", shape: [3], data: new Uint8Array([1, 0, 1]) }],
];

Deno.test("round trip keeps names, order, dtypes, shapes, bytes and metadata", () => {
  const bytes = serializeSafetensors(sample, { config: '{"x":1}', source: "unit" });
  assert.equal(bytes.length % 8, (6 * 4 + 2 * 8 + 2 + 3) % 8, "header padded to a multiple of 8");
  const file = parseSafetensors(bytes, "mem");
  assert.deepEqual(file.names, ["b", "a", "scalar", "empty", "flag"]);
  assert.deepEqual(file.metadata, { config: '{"x":1}', source: "unit" });
  for (const [name, t] of sample) {
    const got = file.get(name);
    assert.equal(got.dtype, t.dtype);
    assert.deepEqual(got.shape, t.shape);
    assert.deepEqual([...got.data], [...t.data]);
  }
  assert.deepEqual([...file.f32("b")], [1, 2, 3, 4, 5, 6]);
  assert.deepEqual([...file.f32("scalar")], [1]);
  assert.deepEqual([...file.i64("a")], [-5n, 1n << 40n]);
  assert.deepEqual(file.shape("b"), [2, 3]);
  assert.ok(file.has("flag") && !file.has("nope"));
});

Deno.test("data is laid out contiguously in insertion order", () => {
  const bytes = serializeSafetensors(sample);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal((8 + n) % 8, 0);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assert.deepEqual(header.b.data_offsets, [0, 24]);
  assert.deepEqual(header.a.data_offsets, [24, 40]);
  assert.deepEqual(header.scalar.data_offsets, [40, 42]);
  assert.deepEqual(header.empty.data_offsets, [42, 42]);
  assert.deepEqual(header.flag.data_offsets, [42, 45]);
  assert.equal(header.__metadata__, undefined);
});

Deno.test("accessors reject missing tensors and wrong dtypes", () => {
  const file = parseSafetensors(serializeSafetensors(sample), "m.safetensors");
  assert.throws(
    () => file.get("missing"),
    (e) => e instanceof RangeError && /"missing".*m\.safetensors/.test(e.message),
  );
  assert.throws(() => file.f32("a"), (e) => e instanceof TypeError && /"a".*I64/.test(e.message));
  assert.throws(() => file.f32("flag"), TypeError);
  assert.throws(
    () => file.i64("b"),
    (e) => e instanceof TypeError && /F32, not I64/.test(e.message),
  );
});

Deno.test("serializer rejects bad tensors", () => {
  const t = (dtype: string, shape: number[], n: number) =>
    [["x", { dtype, shape, data: new Uint8Array(n) } as StTensor]] as [string, StTensor][];
  assert.throws(() => serializeSafetensors(t("F32", [2], 7)), /7 bytes.*needs 8/);
  assert.throws(() => serializeSafetensors(t("F8", [2], 2)), TypeError);
  assert.throws(() => serializeSafetensors(t("F32", [-1], 0)), RangeError);
  assert.throws(() => serializeSafetensors(t("F32", [1.5], 0)), RangeError);
  assert.throws(
    () => serializeSafetensors([...t("U8", [1], 1), ...t("U8", [1], 1)]),
    /Duplicate tensor name "x"/,
  );
  assert.throws(() => serializeSafetensors([["__metadata__", sample[0][1]]]), TypeError);
  assert.throws(
    () => serializeSafetensors([], { k: 3 as unknown as string }),
    /Metadata "k" must be a string/,
  );
});

interface Bad {
  what: string;
  bytes: Uint8Array;
  kind: typeof SyntaxError | typeof RangeError;
  msg: RegExp;
}

const bad: Bad[] = [
  { what: "too short", bytes: new Uint8Array(5), kind: SyntaxError, msg: /too short/ },
  {
    what: "header over 100 MB",
    bytes: rawFile("{}", 0, 100_000_001n),
    kind: RangeError,
    msg: /100 MB/,
  },
  {
    what: "header past the end",
    bytes: rawFile("{}", 0, 50n),
    kind: RangeError,
    msg: /past the end/,
  },
  { what: "not JSON", bytes: rawFile("{nope}"), kind: SyntaxError, msg: /not valid JSON/ },
  { what: "not an object", bytes: rawFile("[1,2]"), kind: SyntaxError, msg: /start with/ },
  {
    what: "trailing garbage",
    bytes: rawFile("{} x"),
    kind: SyntaxError,
    msg: /padded with spaces/,
  },
  {
    what: "bad UTF-8",
    bytes: (() => {
      const b = rawFile('{"xx":1}');
      b[10] = 0xff;
      return b;
    })(),
    kind: SyntaxError,
    msg: /not valid UTF-8/,
  },
  {
    what: "unknown dtype",
    bytes: rawFile(`{"t":${entry("F8_E4M3", [2], 0, 2)}}`, 2),
    kind: SyntaxError,
    msg: /tensor "t".*unsupported dtype "F8_E4M3"/,
  },
  {
    what: "negative dimension",
    bytes: rawFile(`{"t":${entry("U8", [-2], 0, 0)}}`),
    kind: RangeError,
    msg: /tensor "t".*dimension -2/,
  },
  {
    what: "fractional dimension",
    bytes: rawFile(`{"t":${entry("U8", [1.5], 0, 0)}}`),
    kind: RangeError,
    msg: /dimension 1.5/,
  },
  {
    what: "string dimension",
    bytes: rawFile(`{"t":${entry("U8", ["2"], 0, 2)}}`, 2),
    kind: RangeError,
    msg: /dimension "2"/,
  },
  {
    what: "size/shape mismatch",
    bytes: rawFile(`{"t":${entry("F32", [3], 0, 8)}}`, 8),
    kind: RangeError,
    msg: /tensor "t".*8 bytes.*needs 12/,
  },
  {
    what: "offset past the data",
    bytes: rawFile(`{"t":${entry("U8", [4], 0, 4)}}`, 2),
    kind: RangeError,
    msg: /tensor "t".*run past/,
  },
  {
    what: "overlap",
    bytes: rawFile(`{"a":${entry("U8", [4], 0, 4)},"b":${entry("U8", [4], 2, 6)}}`, 6),
    kind: RangeError,
    msg: /tensor "b".*overlaps/,
  },
  {
    what: "gap",
    bytes: rawFile(`{"a":${entry("U8", [2], 0, 2)},"b":${entry("U8", [2], 3, 5)}}`, 5),
    kind: RangeError,
    msg: /tensor "b".*gap of 1 bytes/,
  },
  {
    what: "trailing data",
    bytes: rawFile(`{"a":${entry("U8", [2], 0, 2)}}`, 3),
    kind: RangeError,
    msg: /1 bytes after the last/,
  },
  {
    what: "end before begin",
    bytes: rawFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[2,1]}}`, 2),
    kind: RangeError,
    msg: /end before/,
  },
  {
    what: "offsets not integers",
    bytes: rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,"1"]}}`, 1),
    kind: SyntaxError,
    msg: /data_offsets/,
  },
  {
    what: "unknown field",
    bytes: rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}`, 1),
    kind: SyntaxError,
    msg: /unknown field "x"/,
  },
  {
    what: "metadata not strings",
    bytes: rawFile(`{"__metadata__":{"epoch":3}}`),
    kind: SyntaxError,
    msg: /metadata "epoch"/,
  },
  {
    what: "duplicate key",
    bytes: rawFile(`{"a":${entry("U8", [1], 0, 1)},"a":${entry("U8", [1], 0, 1)}}`, 1),
    kind: SyntaxError,
    msg: /duplicate entry "a"/,
  },
  {
    what: "numel overflow",
    bytes: rawFile(`{"a":${entry("F64", [4294967296, 4294967296], 0, 8)}}`, 8),
    kind: RangeError,
    msg: /2\^53/,
  },
];

for (const b of bad) {
  Deno.test(`parser rejects: ${b.what}`, () => {
    assert.throws(
      () => parseSafetensors(b.bytes, "bad.safetensors"),
      (e: unknown) => {
        assert.ok(e instanceof b.kind, `${b.what}: got ${e}`);
        assert.match((e as Error).message, /"bad\.safetensors"/);
        assert.match((e as Error).message, b.msg);
        return true;
      },
    );
  });
}

Deno.test("parser accepts zero-size tensors sharing an offset and unpadded headers", () => {
  const file = parseSafetensors(
    rawFile(
      `{"e1":${entry("F32", [0], 2, 2)},"a":${entry("U8", [2], 0, 2)},"e2":${
        entry("I64", [3, 0], 2, 2)
      }}`,
      2,
    ),
  );
  assert.deepEqual(file.names, ["a", "e1", "e2"]);
  assert.equal(file.get("e2").data.length, 0);
});

Deno.test("writeSafetensors is atomic and readSafetensors reads it back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/m.safetensors`;
    await writeSafetensors(path, sample, { a: "b" });
    const file = await readSafetensors(path);
    assert.deepEqual(file.names, sample.map(([n]) => n));
    assert.deepEqual(file.metadata, { a: "b" });
    // A failing write leaves the old file and no temporary file.
    await assert.rejects(
      writeSafetensors(path, [["x", { dtype: "F32", shape: [1], data: new Uint8Array(3) }]]),
      RangeError,
    );
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(names, ["m.safetensors"]);
    await assert.rejects(readSafetensors(`${dir}/missing.safetensors`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SafetensorsWriter streams chunks and matches serializeSafetensors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/s.safetensors`;
    const specs = sample.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
    const w = await SafetensorsWriter.create(path, specs, { m: "1" });
    assert.equal(w.next, "b");
    await w.writeTensor("b", sample[0][1].data);
    // The I64 and the F16 scalar in odd-sized chunks spanning the boundary.
    const rest = new Uint8Array([...sample[1][1].data, ...sample[2][1].data]);
    await w.write(rest.subarray(0, 5));
    await w.write(rest.subarray(5, 17));
    await w.write(rest.subarray(17));
    assert.equal(w.next, "flag", "empty tensors are skipped");
    await assert.rejects(w.writeTensor("b", new Uint8Array(24)), /out of order.*"flag"/);
    await w.writeTensor("flag", sample[4][1].data);
    await assert.rejects(w.write(new Uint8Array(1)), /more than the tensors' total/);
    await w.commit();
    const got = await Deno.readFile(path);
    assert.deepEqual(got, serializeSafetensors(sample, { m: "1" }));
    assert.equal(w.totalBytes, got.length);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["s.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SafetensorsWriter refuses to commit an incomplete file and abort cleans up", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/s.safetensors`;
    const w = await SafetensorsWriter.create(path, [{ name: "a", dtype: "F32", shape: [4] }]);
    await w.write(new Uint8Array(8));
    await assert.rejects(w.commit(), /tensor "a" is incomplete/);
    await w.abort();
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    await assert.rejects(w.write(new Uint8Array(1)), /already closed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reads the shared reference fixtures", async () => {
  const file = await readSafetensors("tests/fixtures/tost_lang_small.ref.safetensors");
  assert.equal(file.get("case0.idx").dtype, "I64");
  assert.deepEqual(file.shape("case0.idx"), [2, 64]);
  assert.ok(JSON.parse(file.metadata.config).n_layer === 2);
  const logits = file.f32("case0.logits");
  assert.equal(logits.length, 2 * 64 * 65);
  assert.ok(logits.every(Number.isFinite));
});
