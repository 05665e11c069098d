/**
 * Safetensors reading and writing, strictly.
 *
 * Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__"?: {string: string}}`
 * (padded with spaces), then the data: every tensor's bytes, row-major,
 * little-endian, contiguous. The parser rejects anything else — unknown
 * dtypes or fields, bad dimensions, offsets that overlap, leave gaps or run
 * past the file, a size that does not match the shape, duplicate names,
 * headers over 100 MB — with a SyntaxError or RangeError that names the
 * file and the tensor.
 *
 * Writers keep the tensors' insertion order for the data, and write through a
 * temporary file in the destination's directory renamed into place at the
 * end, so a failed write never leaves a partial file behind.
 *
 * @module
 */

import { DTYPE_BYTES, isStDType, numelOf, toF32 } from "./dtype.ts";
import type { StDType } from "./dtype.ts";
import { atomicTempPath, writeError } from "./atomic.ts";

export type { StDType } from "./dtype.ts";

/** One tensor: dtype, shape and its raw little-endian bytes. */
export interface StTensor {
  dtype: StDType;
  shape: number[];
  /** Raw little-endian bytes, row-major (`numel * bytes per element` long). */
  data: Uint8Array;
}

/** What a tensor will be, before its bytes exist (for {@linkcode SafetensorsWriter}). */
export interface StTensorSpec {
  name: string;
  dtype: StDType;
  shape: number[];
}

/** Largest header tost accepts (100 MB), as safetensors itself does. */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = "__metadata__";

/** A parsed safetensors file; tensor data are views into the file's bytes. */
export class SafetensorsFile {
  /** Tensor names, in the order of their data in the file. */
  readonly names: string[];
  /** The `__metadata__` entries (empty when there are none). */
  readonly metadata: Record<string, string>;
  /** Where the bytes came from, for error messages. */
  readonly source: string;
  readonly #tensors: Map<string, StTensor>;

  /** Build from already validated tensors (use {@linkcode parseSafetensors}). */
  constructor(
    tensors: Map<string, StTensor>,
    metadata: Record<string, string>,
    source = "<bytes>",
  ) {
    this.#tensors = tensors;
    this.names = [...tensors.keys()];
    this.metadata = metadata;
    this.source = source;
  }

  /** Whether a tensor called `name` exists. */
  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  /** The tensor called `name`; throws a RangeError naming it when missing. */
  get(name: string): StTensor {
    const t = this.#tensors.get(name);
    if (!t) {
      throw new RangeError(`No tensor "${name}" in safetensors file "${this.source}"`);
    }
    return t;
  }

  /**
   * The tensor's values as a new Float32Array, converting F16/BF16/F64.
   * Integer and bool tensors throw a TypeError.
   */
  f32(name: string): Float32Array<ArrayBuffer> {
    const t = this.get(name);
    try {
      return toF32(t.dtype, t.data);
    } catch (err) {
      throw new TypeError(
        `Tensor "${name}" in "${this.source}" is ${t.dtype}, not a float tensor`,
        { cause: err },
      );
    }
  }

  /** The values of an I64 tensor; other dtypes throw a TypeError. */
  i64(name: string): BigInt64Array<ArrayBuffer> {
    const t = this.get(name);
    if (t.dtype !== "I64") {
      throw new TypeError(`Tensor "${name}" in "${this.source}" is ${t.dtype}, not I64`);
    }
    const copy = t.data.slice();
    return new BigInt64Array(copy.buffer, 0, copy.length / 8);
  }

  /** The shape of tensor `name` (a copy). */
  shape(name: string): number[] {
    return [...this.get(name).shape];
  }

  /** Iterate `[name, tensor]` in file order. */
  *entries(): IterableIterator<[string, StTensor]> {
    yield* this.#tensors.entries();
  }
}

/**
 * Names of the keys of the top-level JSON object in `text`, in order,
 * including duplicates (which `JSON.parse` silently merges). Assumes `text`
 * already parsed as JSON.
 */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(text.slice(i, j + 1)) as string);
        expectKey = false;
      }
      i = j;
    } else if (c === "{" || c === "[") {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (c === "}" || c === "]") {
      depth--;
    } else if (c === "," && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Parse and validate a whole safetensors file held in memory. Tensor data are
 * views into `bytes` (no copy). `source` names the file in error messages.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseSafetensors, serializeSafetensors } from "./safetensors.ts";
 * const bytes = serializeSafetensors([["w", { dtype: "U8", shape: [2], data: new Uint8Array([1, 2]) }]]);
 * const file = parseSafetensors(bytes, "w.safetensors");
 * assert.ok(file.get("w").data[1] === 2);
 * ```
 */
export function parseSafetensors(bytes: Uint8Array, source = "<bytes>"): SafetensorsFile {
  const where = `safetensors file "${source}"`;
  if (bytes.length < 8) {
    throw new SyntaxError(`Invalid ${where}: ${bytes.length} bytes, too short for a header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = view.getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    throw new RangeError(`Invalid ${where}: header of ${n64} bytes exceeds the 100 MB limit`);
  }
  const n = Number(n64);
  if (8 + n > bytes.length) {
    throw new RangeError(
      `Invalid ${where}: header of ${n} bytes runs past the end of the file (${bytes.length} bytes)`,
    );
  }
  const text = decodeHeaderText(bytes.subarray(8, 8 + n), where);
  const header = parseHeaderJson(text, where);
  const { specs, metadata } = validateHeader(header, text, where);
  const data = bytes.subarray(8 + n);
  const dataLength = data.length;
  checkLayout(specs, dataLength, where);
  const tensors = new Map<string, StTensor>();
  for (const s of [...specs].sort((a, b) => a.begin - b.begin || a.end - b.end)) {
    tensors.set(s.name, { dtype: s.dtype, shape: s.shape, data: data.subarray(s.begin, s.end) });
  }
  return new SafetensorsFile(tensors, metadata, source);
}

function decodeHeaderText(raw: Uint8Array, where: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch {
    throw new SyntaxError(`Invalid ${where}: header is not valid UTF-8`);
  }
}

function parseHeaderJson(text: string, where: string): unknown {
  if (!text.startsWith("{")) {
    throw new SyntaxError(`Invalid ${where}: header does not start with "{"`);
  }
  const end = text.replace(/ +$/, "");
  if (!end.endsWith("}")) {
    throw new SyntaxError(`Invalid ${where}: header must be a JSON object padded with spaces`);
  }
  try {
    return JSON.parse(end);
  } catch (err) {
    throw new SyntaxError(`Invalid ${where}: header is not valid JSON (${(err as Error).message})`);
  }
}

interface LaidOut {
  name: string;
  dtype: StDType;
  shape: number[];
  begin: number;
  end: number;
}

function validateHeader(
  header: unknown,
  text: string,
  where: string,
): { specs: LaidOut[]; metadata: Record<string, string> } {
  if (!isPlainObject(header)) throw new SyntaxError(`Invalid ${where}: header is not an object`);
  const seen = new Set<string>();
  for (const k of topLevelKeys(text)) {
    if (seen.has(k)) throw new SyntaxError(`Invalid ${where}: duplicate entry "${k}" in header`);
    seen.add(k);
  }
  const metadata: Record<string, string> = {};
  const specs: LaidOut[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      if (!isPlainObject(entry)) {
        throw new SyntaxError(`Invalid ${where}: "__metadata__" must be an object of strings`);
      }
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string") {
          throw new SyntaxError(
            `Invalid ${where}: metadata "${k}" is ${JSON.stringify(v)}, not a string`,
          );
        }
        metadata[k] = v;
      }
      continue;
    }
    const at = `${where}, tensor "${name}"`;
    if (!isPlainObject(entry)) throw new SyntaxError(`Invalid ${at}: entry is not an object`);
    for (const k of Object.keys(entry)) {
      if (k !== "dtype" && k !== "shape" && k !== "data_offsets") {
        throw new SyntaxError(`Invalid ${at}: unknown field "${k}"`);
      }
    }
    const { dtype, shape, data_offsets: offsets } = entry;
    if (!isStDType(dtype)) {
      throw new SyntaxError(`Invalid ${at}: unsupported dtype ${JSON.stringify(dtype)}`);
    }
    if (!Array.isArray(shape)) throw new SyntaxError(`Invalid ${at}: "shape" is not an array`);
    for (const d of shape) {
      if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
        throw new RangeError(
          `Invalid ${at}: dimension ${JSON.stringify(d)} is not a non-negative integer`,
        );
      }
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => typeof o === "number" && Number.isSafeInteger(o) && o >= 0)
    ) {
      throw new SyntaxError(
        `Invalid ${at}: "data_offsets" must be two non-negative integers, got ${
          JSON.stringify(offsets)
        }`,
      );
    }
    const [begin, end] = offsets as number[];
    if (end < begin) {
      throw new RangeError(`Invalid ${at}: data_offsets [${begin}, ${end}] end before they begin`);
    }
    let numel: number;
    try {
      numel = numelOf(shape as number[]);
    } catch (err) {
      throw new RangeError(`Invalid ${at}: ${(err as Error).message}`);
    }
    const expected = numel * DTYPE_BYTES[dtype];
    if (end - begin !== expected) {
      throw new RangeError(
        `Invalid ${at}: ${end - begin} bytes of data for ${dtype} shape [${
          (shape as number[]).join(", ")
        }], which needs ${expected}`,
      );
    }
    specs.push({ name, dtype, shape: [...(shape as number[])], begin, end });
  }
  return { specs, metadata };
}

function checkLayout(specs: LaidOut[], dataLength: number, where: string): void {
  const sorted = [...specs].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const s of sorted) {
    if (s.end > dataLength) {
      throw new RangeError(
        `Invalid ${where}, tensor "${s.name}": data_offsets [${s.begin}, ${s.end}] run past the ` +
          `${dataLength} bytes of data`,
      );
    }
    if (s.begin < pos) {
      throw new RangeError(
        `Invalid ${where}, tensor "${s.name}": data [${s.begin}, ${s.end}) overlaps the ` +
          `previous tensor, which ends at ${pos}`,
      );
    }
    if (s.begin > pos) {
      throw new RangeError(
        `Invalid ${where}, tensor "${s.name}": gap of ${s.begin - pos} bytes before its data ` +
          `at ${s.begin}`,
      );
    }
    pos = s.end;
  }
  if (pos !== dataLength) {
    throw new RangeError(
      `Invalid ${where}: ${dataLength - pos} bytes after the last tensor's data`,
    );
  }
}

/**
 * Read and parse a safetensors file (the whole file is read into memory,
 * into one buffer of exactly its size). A missing file throws
 * `Deno.errors.NotFound`.
 */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  return parseSafetensors(await readWholeFile(path), path);
}

/**
 * A file's bytes in one allocation. (`Deno.readFile` grows its buffer while
 * reading, which for a multi-gigabyte file costs twice the memory and much
 * longer.)
 */
async function readWholeFile(path: string): Promise<Uint8Array<ArrayBuffer>> {
  using file = await Deno.open(path, { read: true });
  const size = (await file.stat()).size;
  const out = new Uint8Array(size);
  let got = 0;
  while (got < size) {
    const n = await file.read(out.subarray(got, Math.min(size, got + (64 << 20))));
    if (n === null) break;
    got += n;
  }
  if (got !== size) throw new RangeError(`"${path}" changed size while being read`);
  return out;
}

/** Validate a tensor about to be written; returns its byte length. */
function checkTensor(name: string, t: { dtype: StDType; shape: number[] }): number {
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError(`Tensor name must be a non-empty string, got ${JSON.stringify(name)}`);
  }
  if (name === METADATA_KEY) throw new TypeError(`"${METADATA_KEY}" cannot name a tensor`);
  if (!isStDType(t.dtype)) {
    throw new TypeError(`Tensor "${name}": unsupported dtype ${JSON.stringify(t.dtype)}`);
  }
  try {
    return numelOf(t.shape) * DTYPE_BYTES[t.dtype];
  } catch (err) {
    throw new RangeError(`Tensor "${name}": ${(err as Error).message}`);
  }
}

function checkMetadata(metadata: Record<string, string>): void {
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== "string") {
      throw new TypeError(`Metadata "${k}" must be a string, got ${typeof v}`);
    }
  }
}

/**
 * The header bytes (length prefix + JSON padded with spaces to a multiple of
 * 8) for tensors laid out contiguously in `specs` order.
 */
export function encodeHeader(
  specs: Iterable<StTensorSpec>,
  metadata: Record<string, string> = {},
): { header: Uint8Array<ArrayBuffer>; dataBytes: number } {
  checkMetadata(metadata);
  const obj: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) obj[METADATA_KEY] = { ...metadata };
  let offset = 0;
  const names = new Set<string>();
  for (const s of specs) {
    const size = checkTensor(s.name, s);
    if (names.has(s.name)) throw new TypeError(`Duplicate tensor name "${s.name}"`);
    names.add(s.name);
    obj[s.name] = { dtype: s.dtype, shape: [...s.shape], data_offsets: [offset, offset + size] };
    offset += size;
  }
  const json = new TextEncoder().encode(JSON.stringify(obj));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded > MAX_HEADER_BYTES) {
    throw new RangeError(`Header of ${padded} bytes exceeds the 100 MB limit`);
  }
  const header = new Uint8Array(8 + padded).fill(0x20);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(json, 8);
  return { header, dataBytes: offset };
}

/**
 * Serialize tensors into safetensors bytes; data in iteration order.
 * Throws TypeError/RangeError for a duplicate name, unknown dtype, or data
 * whose length does not match its shape.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serializeSafetensors } from "./safetensors.ts";
 * const bytes = serializeSafetensors([["x", { dtype: "F32", shape: [], data: new Uint8Array(4) }]]);
 * assert.ok(bytes.length % 8 === 4);
 * ```
 */
export function serializeSafetensors(
  tensors: Iterable<[string, StTensor]>,
  metadata: Record<string, string> = {},
): Uint8Array<ArrayBuffer> {
  const list = [...tensors];
  for (const [name, t] of list) {
    const size = checkTensor(name, t);
    if (!(t.data instanceof Uint8Array) || t.data.length !== size) {
      throw new RangeError(
        `Tensor "${name}": ${t.data?.length} bytes of data for ${t.dtype} shape ` +
          `[${t.shape.join(", ")}], which needs ${size}`,
      );
    }
  }
  const { header, dataBytes } = encodeHeader(
    list.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })),
    metadata,
  );
  const out = new Uint8Array(header.length + dataBytes);
  out.set(header);
  let pos = header.length;
  for (const [, t] of list) {
    out.set(t.data, pos);
    pos += t.data.length;
  }
  return out;
}

/**
 * Write tensors to `path` as safetensors, atomically: the bytes go to a
 * temporary file in the same directory, renamed over `path` at the end; the
 * temporary file is removed if anything fails.
 */
export async function writeSafetensors(
  path: string,
  tensors: Iterable<[string, StTensor]>,
  metadata: Record<string, string> = {},
): Promise<void> {
  const bytes = serializeSafetensors(tensors, metadata);
  const tmp = atomicTempPath(path);
  try {
    await Deno.writeFile(tmp, bytes, { createNew: true });
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw writeError(path, err);
  }
}

/**
 * A safetensors file written tensor by tensor: the header is written first
 * from the specs, then each tensor's bytes in spec order (whole, with
 * {@linkcode SafetensorsWriter.writeTensor}, or in chunks with
 * {@linkcode SafetensorsWriter.write}), and {@linkcode SafetensorsWriter.commit}
 * renames the temporary file into place once every byte has arrived.
 * {@linkcode SafetensorsWriter.abort} removes the temporary file.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SafetensorsWriter, readSafetensors } from "./safetensors.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * const w = await SafetensorsWriter.create(path, [{ name: "a", dtype: "U8", shape: [3] }]);
 * try {
 *   await w.writeTensor("a", new Uint8Array([1, 2, 3]));
 *   await w.commit();
 * } finally {
 *   await w.abort();
 * }
 * assert.ok((await readSafetensors(path)).get("a").data[2] === 3);
 * await Deno.remove(path);
 * ```
 */
export class SafetensorsWriter {
  /** Total bytes of the file once complete (header included). */
  readonly totalBytes: number;
  readonly #path: string;
  readonly #tmp: string;
  readonly #specs: { name: string; size: number }[];
  #file: Deno.FsFile | undefined;
  #index = 0;
  #written = 0; // bytes of the current tensor written so far
  #done = false;

  private constructor(
    path: string,
    tmp: string,
    file: Deno.FsFile,
    specs: { name: string; size: number }[],
    totalBytes: number,
  ) {
    this.#path = path;
    this.#tmp = tmp;
    this.#file = file;
    this.#specs = specs;
    this.totalBytes = totalBytes;
  }

  /** Open a temporary file next to `path` and write the header for `specs`. */
  static async create(
    path: string,
    specs: readonly StTensorSpec[],
    metadata: Record<string, string> = {},
  ): Promise<SafetensorsWriter> {
    const { header, dataBytes } = encodeHeader(specs, metadata);
    const sizes = specs.map((s) => ({ name: s.name, size: checkTensor(s.name, s) }));
    const tmp = atomicTempPath(path);
    let file: Deno.FsFile;
    try {
      file = await Deno.open(tmp, { write: true, createNew: true });
    } catch (err) {
      throw writeError(path, err);
    }
    const w = new SafetensorsWriter(path, tmp, file, sizes, header.length + dataBytes);
    try {
      await writeAll(file, header);
    } catch (err) {
      await w.abort();
      throw err;
    }
    return w;
  }

  /** Name of the tensor whose bytes come next (undefined when all are written). */
  get next(): string | undefined {
    this.#skipEmpty();
    return this.#specs[this.#index]?.name;
  }

  #skipEmpty(): void {
    while (this.#index < this.#specs.length && this.#specs[this.#index].size === 0) this.#index++;
  }

  /** Append `chunk` to the data, filling tensors in spec order. */
  async write(chunk: Uint8Array): Promise<void> {
    const file = this.#file;
    if (!file || this.#done) throw new TypeError("SafetensorsWriter is already closed");
    let rest = chunk.length;
    let at = 0;
    while (rest > 0) {
      this.#skipEmpty();
      const spec = this.#specs[this.#index];
      if (!spec) {
        throw new RangeError(`${rest} bytes more than the tensors' total size were written`);
      }
      const take = Math.min(rest, spec.size - this.#written);
      await writeAll(file, chunk.subarray(at, at + take));
      at += take;
      rest -= take;
      this.#written += take;
      if (this.#written === spec.size) {
        this.#index++;
        this.#written = 0;
      }
    }
  }

  /** Write all bytes of tensor `name`, which must be the next one in spec order. */
  async writeTensor(name: string, data: Uint8Array): Promise<void> {
    this.#skipEmpty();
    const spec = this.#specs[this.#index];
    // Empty tensors are skipped automatically; allow naming one explicitly.
    const empty = this.#specs.find((s) => s.name === name && s.size === 0);
    if (empty && data.length === 0) return;
    if (!spec || spec.name !== name || this.#written !== 0) {
      throw new RangeError(
        `Tensor "${name}" written out of order: expected ${
          spec ? `"${spec.name}"` : "no more tensors"
        }`,
      );
    }
    if (data.length !== spec.size) {
      throw new RangeError(`Tensor "${name}": ${data.length} bytes, expected ${spec.size}`);
    }
    await this.write(data);
  }

  /** Check that every byte was written, then move the file into place. */
  async commit(): Promise<void> {
    const file = this.#file;
    if (!file || this.#done) throw new TypeError("SafetensorsWriter is already closed");
    this.#skipEmpty();
    if (this.#index < this.#specs.length) {
      throw new RangeError(
        `Cannot finish "${this.#path}": tensor "${this.#specs[this.#index].name}" is incomplete`,
      );
    }
    this.#file = undefined;
    file.close();
    await Deno.rename(this.#tmp, this.#path);
    this.#done = true;
  }

  /** Discard the temporary file (no-op after a successful commit). */
  async abort(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    if (this.#file) {
      try {
        this.#file.close();
      } catch { /* already closed */ }
      this.#file = undefined;
    }
    await Deno.remove(this.#tmp).catch(() => {});
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await file.write(bytes.subarray(off));
}
