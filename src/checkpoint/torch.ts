/**
 * PyTorch checkpoints (`torch.save` output) as an object tree with lazy
 * tensors: the zip format (PyTorch ≥ 1.6: `<prefix>/data.pkl` plus one
 * stored entry per storage) and the legacy format (PyTorch < 1.6: a sequence
 * of pickles followed by each storage as an 8-byte element count and its
 * bytes).
 *
 * Only these callables are interpreted: `torch._utils._rebuild_tensor_v2`,
 * `_rebuild_tensor`, `_rebuild_parameter`, `_rebuild_parameter_with_state`,
 * `torch._tensor._rebuild_from_type_v2` (for plain tensors and Parameters)
 * and `torch.Size`; storages come only through persistent ids naming one of
 * the ten supported storage types. Every tensor's size, offset and strides
 * are checked against its storage, and every storage against its bytes in
 * the file, before anything is read.
 *
 * @module
 */

import { DTYPE_BYTES } from "../io/dtype.ts";
import type { StDType } from "../io/dtype.ts";
import { describeKind, sniffBytes } from "../io/sniff.ts";
import { CheckpointError, CheckpointFormatError } from "./errors.ts";
import { aType, PickleExtension, PickleTruncatedError, PyGlobal, unpickle } from "./pickle.ts";
import type { PickleValue } from "./pickle.ts";
import { FileSource } from "./source.ts";
import type { ByteSource } from "./source.ts";
import { looksLikeZip, ZipArchive } from "./zip.ts";
import type { ZipEntry } from "./zip.ts";

/** Storage classes and the dtype of their elements. */
export const STORAGE_DTYPES: Readonly<Record<string, StDType>> = Object.freeze({
  FloatStorage: "F32",
  DoubleStorage: "F64",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  LongStorage: "I64",
  IntStorage: "I32",
  ShortStorage: "I16",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
});

/** Largest object pickle accepted (checkpoints' pickles are a few MB). */
export const MAX_PICKLE_BYTES = 512 * 1024 * 1024;

/**
 * Most bytes one tensor may expand to beyond its storage's own size (only
 * tensors with overlapping or zero strides do; real state_dicts have none).
 */
export const MAX_EXPANSION_BYTES = 256 * 1024 * 1024;

/** A storage a checkpoint refers to: its key, element type and size. */
export class StorageRef extends PickleExtension {
  constructor(
    /** Key of the storage's bytes (zip record `data/<key>`, or legacy root key). */
    readonly key: string,
    readonly dtype: StDType,
    /** Elements in this storage (a legacy view's own size). */
    readonly numel: number,
    /** Device it was saved from ("cpu", "cuda:0", …); informational. */
    readonly location: string,
    /** Element offset into the root storage (legacy storage views; else 0). */
    readonly baseOffset = 0,
  ) {
    super();
  }
  describe(): string {
    return `storage ${this.dtype}[${this.numel}]`;
  }
}

/** A tensor: a strided view of a storage. Bytes are read on demand. */
export class TensorRef extends PickleExtension {
  constructor(
    readonly storage: StorageRef,
    /** Offset in elements. */
    readonly offset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {
    super();
  }
  /** Element type. */
  get dtype(): StDType {
    return this.storage.dtype;
  }
  /** Number of elements. */
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  /** Bytes once materialised. */
  get nbytes(): number {
    return this.numel * DTYPE_BYTES[this.dtype];
  }
  /** Whether the elements are laid out row-major without gaps. */
  get contiguous(): boolean {
    let expect = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.stride[i] !== expect) return this.numel === 0;
      expect *= this.shape[i];
    }
    return true;
  }
  describe(): string {
    return `tensor ${this.dtype} [${this.shape.join(", ")}]`;
  }
}

/** A checkpoint opened for reading. */
export interface OpenCheckpoint {
  /** The path as given. */
  readonly path: string;
  readonly format: "zip" | "legacy";
  /** The unpickled object (tensors are {@linkcode TensorRef}s). */
  readonly root: PickleValue;
  /** File size in bytes. */
  readonly size: number;
  /** A tensor's bytes, row-major and little-endian (views materialised). */
  tensorBytes(t: TensorRef): Promise<Uint8Array>;
  /** The same bytes in chunks of at most about `chunkBytes` (views come whole). */
  tensorChunks(t: TensorRef, chunkBytes?: number): AsyncGenerator<Uint8Array>;
  /** Close the file. */
  close(): void;
}

function isInt(v: PickleValue): v is number {
  return typeof v === "number" && Number.isSafeInteger(v);
}

function intTuple(v: PickleValue, what: string): number[] {
  // torch.Size(...) arrives already unwrapped by the call hook.
  if (!Array.isArray(v)) throw new CheckpointFormatError(`${what} is not a tuple`);
  return v.map((x, i) => {
    if (!isInt(x) || x < 0) {
      throw new CheckpointFormatError(`${what}[${i}] is ${String(x)}, not a non-negative integer`);
    }
    return x;
  });
}

/**
 * Validate and build a tensor reference from `_rebuild_tensor(_v2)` arguments.
 */
export function makeTensor(
  storage: PickleValue,
  offset: PickleValue,
  size: PickleValue,
  stride: PickleValue,
): TensorRef {
  if (!(storage instanceof StorageRef)) {
    throw new CheckpointFormatError("tensor rebuilt from something that is not a storage");
  }
  if (!isInt(offset) || offset < 0) {
    throw new CheckpointFormatError(`tensor storage offset ${String(offset)} is invalid`);
  }
  const shape = intTuple(size, "tensor size");
  const strides = intTuple(stride, "tensor stride");
  if (shape.length !== strides.length) {
    throw new CheckpointFormatError(
      `tensor size [${shape}] and stride [${strides}] differ in length`,
    );
  }
  let numel = 1n;
  let last = BigInt(offset);
  for (let i = 0; i < shape.length; i++) {
    numel *= BigInt(shape[i]);
    if (shape[i] > 0) last += BigInt(shape[i] - 1) * BigInt(strides[i]);
  }
  const where = `tensor of size [${shape.join(", ")}], stride [${
    strides.join(", ")
  }] at offset ${offset}`;
  if (numel > 0n && last >= BigInt(storage.numel)) {
    throw new CheckpointFormatError(
      `${where} reaches element ${last}, beyond its storage "${storage.key}" of ${storage.numel} elements`,
    );
  }
  if (numel === 0n && offset > storage.numel) {
    throw new CheckpointFormatError(
      `${where} starts beyond its storage "${storage.key}" of ${storage.numel} elements`,
    );
  }
  const bytes = numel * BigInt(DTYPE_BYTES[storage.dtype]);
  if (numel > BigInt(storage.numel) && bytes > BigInt(MAX_EXPANSION_BYTES)) {
    throw new CheckpointFormatError(
      `${where} would expand ${storage.numel} stored elements into ${numel} (over ${
        MAX_EXPANSION_BYTES >> 20
      } MiB)`,
    );
  }
  return new TensorRef(storage, offset, shape, strides);
}

const TENSOR_TYPES = new Set([
  "torch.Tensor",
  "torch.nn.parameter.Parameter",
  "torch.nn.Parameter",
]);

/** The call hook of the unpickler: interprets only tensor rebuilds. */
export function torchCall(fn: PyGlobal, args: readonly PickleValue[]): PickleValue | undefined {
  const q = fn.qualname;
  switch (q) {
    case "torch._utils._rebuild_tensor_v2":
      if (args.length < 4 || args.length > 7) break;
      return makeTensor(args[0], args[1], args[2], args[3]);
    case "torch._utils._rebuild_tensor":
      if (args.length !== 4) break;
      return makeTensor(args[0], args[1], args[2], args[3]);
    case "torch._utils._rebuild_parameter":
    case "torch._utils._rebuild_parameter_with_state":
      if (!(args[0] instanceof TensorRef)) {
        throw new CheckpointFormatError(`${q} of something that is not a tensor`);
      }
      return args[0];
    case "torch._tensor._rebuild_from_type_v2": {
      const [func, type, inner] = args;
      if (!(func instanceof PyGlobal) || !(type instanceof PyGlobal) || !Array.isArray(inner)) {
        break;
      }
      if (!TENSOR_TYPES.has(type.qualname)) {
        throw new CheckpointFormatError(`unsupported tensor subclass ${type.qualname}`);
      }
      const t = torchCall(func, inner);
      if (!(t instanceof TensorRef)) {
        throw new CheckpointFormatError(`${q} with ${func.qualname}, which builds no tensor`);
      }
      return t;
    }
    case "torch.Size":
      if (args.length === 0) return Object.freeze([]) as unknown as PickleValue[];
      if (args.length === 1 && Array.isArray(args[0])) {
        return Object.freeze([...args[0]]) as unknown as PickleValue[];
      }
      break;
    default:
      if (q.startsWith("torch._utils._rebuild_") || q.startsWith("torch._tensor._rebuild_")) {
        throw new CheckpointFormatError(`unsupported kind of tensor (${q})`);
      }
      return undefined;
  }
  throw new CheckpointFormatError(`${q} called with unexpected arguments`);
}

function storageDType(type: PickleValue): StDType {
  if (!(type instanceof PyGlobal)) {
    throw new CheckpointFormatError(`storage type is ${aType(type)}, not a global`);
  }
  const dtype = (type.module === "torch" || type.module === "torch.cuda")
    ? STORAGE_DTYPES[type.name]
    : undefined;
  if (!dtype || !Object.hasOwn(STORAGE_DTYPES, type.name)) {
    throw new CheckpointFormatError(`unsupported storage type "${type.qualname}"`);
  }
  return dtype;
}

function describePid(pid: PickleValue): string {
  if (Array.isArray(pid)) return `a ${pid.length}-tuple`;
  return typeof pid === "string" ? `"${pid.slice(0, 40)}"` : aType(pid);
}

/** Where a root storage's bytes are. */
interface StorageBytes {
  /** zip entry, or absolute file offset for legacy files */
  entry?: ZipEntry;
  fileOffset?: number;
  dtype: StDType;
  numel: number;
}

/**
 * Open a checkpoint: detect the format, decode the object pickle and check
 * every storage reference against the file. Errors carry the file name as a
 * {@linkcode CheckpointError}; a missing file throws `Deno.errors.NotFound`.
 */
export async function openCheckpoint(path: string): Promise<OpenCheckpoint> {
  const src = await FileSource.open(path).catch((err) => {
    if (err instanceof Deno.errors.NotFound) throw err;
    if (err instanceof CheckpointFormatError) throw new CheckpointError(path, err.message);
    throw new CheckpointError(path, (err as Error).message, { cause: err });
  });
  try {
    return await openSource(path, src);
  } catch (err) {
    src.close();
    throw wrapError(path, err);
  }
}

/** Turn an internal error into a {@linkcode CheckpointError} for `path`. */
export function wrapError(path: string, err: unknown): unknown {
  if (err instanceof CheckpointError) return err;
  if (err instanceof CheckpointFormatError) return new CheckpointError(path, err.message);
  if (
    err instanceof RangeError &&
    /allocation|Array buffer|Invalid typed array length/i.test(err.message)
  ) {
    return new CheckpointError(path, `out of memory (${err.message})`, { cause: err });
  }
  return err;
}

/** Open a checkpoint from any byte source (the file name is for messages). */
export async function openSource(path: string, src: ByteSource): Promise<OpenCheckpoint> {
  if (src.size === 0) throw new CheckpointFormatError("the file is empty");
  const head = await src.read(0, Math.min(src.size, 512));
  if (looksLikeZip(head)) return await openZip(path, src);
  if (
    head.length >= 262 && new TextDecoder().decode(head.subarray(257, 262)) === "ustar"
  ) {
    throw new CheckpointFormatError(
      "tar-format checkpoints (PyTorch before 0.4) are not supported; re-save with a newer PyTorch",
    );
  }
  if (head[0] !== 0x80) {
    const kind = sniffBytes(head, src.size);
    const what = kind === "binary"
      ? "neither a zip archive nor a pickle"
      : `it is ${describeKind(kind)}`;
    throw new CheckpointFormatError(
      `not a PyTorch checkpoint: ${what} (first byte 0x${head[0].toString(16).padStart(2, "0")})`,
    );
  }
  return await openLegacy(path, src);
}

async function openZip(path: string, src: ByteSource): Promise<OpenCheckpoint> {
  const zip = await ZipArchive.open(src);
  const pkls = [...zip.entries.keys()].filter((n) => /^([^/]+\/)?data\.pkl$/.test(n));
  if (pkls.length !== 1) {
    throw new CheckpointFormatError(
      pkls.length === 0
        ? "zip archive has no data.pkl: not a torch.save checkpoint"
        : `zip archive has ${pkls.length} data.pkl entries`,
    );
  }
  const pklEntry = zip.get(pkls[0])!;
  const prefix = pkls[0].slice(0, -"data.pkl".length);
  if (zip.get(`${prefix}constants.pkl`)) {
    throw new CheckpointFormatError(
      "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; save the " +
        "model's state_dict() with torch.save instead",
    );
  }
  if (pklEntry.size > MAX_PICKLE_BYTES) {
    throw new CheckpointFormatError(`${pkls[0]} is ${pklEntry.size} bytes, too large`);
  }
  let littleEndian = true;
  const bo = zip.get(`${prefix}byteorder`);
  if (bo) {
    if (bo.size > 16) throw new CheckpointFormatError(`${bo.name} is not "little" or "big"`);
    const s = new TextDecoder().decode(await zip.readAll(bo)).trim();
    if (s !== "little" && s !== "big") {
      throw new CheckpointFormatError(`${bo.name} is "${s}", not "little" or "big"`);
    }
    littleEndian = s === "little";
  }
  const pkl = await zip.readAll(pklEntry);
  const storages = new Map<string, StorageRef>();
  const bytesOf = new Map<string, StorageBytes>();
  const persistentLoad = (pid: PickleValue): PickleValue => {
    if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length !== 5) {
      throw new CheckpointFormatError(
        `persistent id ${describePid(pid)} is not ('storage', type, key, location, numel)`,
      );
    }
    const [, type, key, location, numel] = pid;
    const dtype = storageDType(type);
    if (typeof key !== "string" || !/^[\w.-]+$/.test(key)) {
      throw new CheckpointFormatError(`storage key ${String(key)} is invalid`);
    }
    if (!isInt(numel) || numel < 0) {
      throw new CheckpointFormatError(`storage "${key}" has invalid size ${String(numel)}`);
    }
    const known = storages.get(key);
    if (known) {
      if (known.dtype !== dtype || known.numel !== numel) {
        throw new CheckpointFormatError(
          `storage "${key}" is declared twice, as ${known.dtype}[${known.numel}] and ${dtype}[${numel}]`,
        );
      }
      return known;
    }
    const entry = zip.get(`${prefix}data/${key}`);
    if (!entry) {
      throw new CheckpointFormatError(`storage "${key}" has no entry ${prefix}data/${key}`);
    }
    const nbytes = numel * DTYPE_BYTES[dtype];
    if (entry.size !== nbytes) {
      throw new CheckpointFormatError(
        `storage "${key}" declares ${numel} ${dtype} elements (${nbytes} bytes) but its entry ` +
          `${entry.name} holds ${entry.size} bytes`,
      );
    }
    const ref = new StorageRef(key, dtype, numel, typeof location === "string" ? location : "");
    storages.set(key, ref);
    bytesOf.set(key, { entry, dtype, numel });
    return ref;
  };
  const { value, end } = unpickle(pkl, {
    persistentLoad,
    call: torchCall,
    where: pkls[0],
  });
  if (end !== pkl.length) {
    throw new CheckpointFormatError(
      `${pkls[0]} has ${pkl.length - end} bytes after its STOP opcode`,
    );
  }
  return new Reader(path, "zip", value, src, zip, bytesOf, littleEndian);
}

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

async function openLegacy(path: string, src: ByteSource): Promise<OpenCheckpoint> {
  let len = Math.min(src.size, 1 << 20);
  for (;;) {
    const bytes = await src.read(0, len);
    try {
      return await parseLegacy(path, src, bytes);
    } catch (err) {
      if (!(err instanceof PickleTruncatedError) || len >= src.size) throw err;
      if (len >= MAX_PICKLE_BYTES) {
        throw new CheckpointFormatError("legacy checkpoint's pickles exceed 512 MiB");
      }
      len = Math.min(src.size, len * 4);
    }
  }
}

async function parseLegacy(
  path: string,
  src: ByteSource,
  bytes: Uint8Array,
): Promise<OpenCheckpoint> {
  const where = (what: string) => `legacy checkpoint ${what}`;
  let magic;
  try {
    magic = unpickle(bytes, { where: where("magic number") });
  } catch (err) {
    if (err instanceof PickleTruncatedError || !(err instanceof CheckpointFormatError)) throw err;
    if (err.message.startsWith("refusing")) throw err;
    throw new CheckpointFormatError(
      `not a PyTorch checkpoint: a pickle, but not one torch.save wrote (${err.message})`,
    );
  }
  if (magic.value !== LEGACY_MAGIC) {
    throw new CheckpointFormatError(
      "not a PyTorch checkpoint: a pickle without the legacy magic number",
    );
  }
  const proto = unpickle(bytes, { start: magic.end, where: where("protocol version") });
  if (proto.value !== 1001) {
    throw new CheckpointFormatError(`unsupported legacy protocol version ${String(proto.value)}`);
  }
  const sys = unpickle(bytes, { start: proto.end, where: where("system info") });
  let littleEndian = true;
  if (sys.value instanceof Map) {
    const le = sys.value.get("little_endian");
    if (typeof le === "boolean") littleEndian = le;
  }
  const roots = new Map<string, { dtype: StDType; numel: number; location: string }>();
  const persistentLoad = (pid: PickleValue): PickleValue => {
    if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length !== 6) {
      throw new CheckpointFormatError(
        `persistent id ${describePid(pid)} is not ('storage', type, key, location, size, view)`,
      );
    }
    const [, type, key, location, numel, view] = pid;
    const dtype = storageDType(type);
    if (typeof key !== "string" || key.length === 0 || key.length > 256) {
      throw new CheckpointFormatError(`storage key ${String(key)} is invalid`);
    }
    if (!isInt(numel) || numel < 0) {
      throw new CheckpointFormatError(`storage "${key}" has invalid size ${String(numel)}`);
    }
    const known = roots.get(key);
    if (known && (known.dtype !== dtype || known.numel !== numel)) {
      throw new CheckpointFormatError(
        `storage "${key}" is declared twice, as ${known.dtype}[${known.numel}] and ${dtype}[${numel}]`,
      );
    }
    const loc = typeof location === "string" ? location : "";
    roots.set(key, { dtype, numel, location: loc });
    if (view === null) return new StorageRef(key, dtype, numel, loc);
    if (!Array.isArray(view) || view.length !== 3) {
      throw new CheckpointFormatError(`storage "${key}" has an invalid view description`);
    }
    const [, vOffset, vSize] = view;
    if (!isInt(vOffset) || !isInt(vSize) || vOffset < 0 || vSize < 0 || vOffset + vSize > numel) {
      throw new CheckpointFormatError(
        `storage view [${String(vOffset)}, +${
          String(vSize)
        }) lies outside storage "${key}" of ${numel} elements`,
      );
    }
    return new StorageRef(key, dtype, vSize, loc, vOffset);
  };
  const obj = unpickle(bytes, {
    start: sys.end,
    persistentLoad,
    call: torchCall,
    where: where("object pickle"),
  });
  const keys = unpickle(bytes, { start: obj.end, where: where("storage key list") });
  if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === "string")) {
    throw new CheckpointFormatError(
      "legacy checkpoint's storage key list is not a list of strings",
    );
  }
  const keyList = keys.value as string[];
  const listed = new Set(keyList);
  if (listed.size !== keyList.length) {
    throw new CheckpointFormatError("legacy checkpoint lists a storage twice");
  }
  for (const k of roots.keys()) {
    if (!listed.has(k)) {
      throw new CheckpointFormatError(`storage "${k}" is used but missing from the storage list`);
    }
  }
  const bytesOf = new Map<string, StorageBytes>();
  let p = keys.end;
  for (const k of keyList) {
    const info = roots.get(k);
    if (!info) throw new CheckpointFormatError(`storage list names unknown storage "${k}"`);
    if (p + 8 > src.size) {
      throw new CheckpointFormatError(
        `file ends at byte ${src.size} before storage "${k}" (truncated?)`,
      );
    }
    const hdr = new DataView((await src.read(p, 8)).buffer);
    const count = hdr.getBigUint64(0, littleEndian);
    if (count !== BigInt(info.numel)) {
      throw new CheckpointFormatError(
        `storage "${k}" declares ${info.numel} elements but its data at byte ${p} holds ${count}`,
      );
    }
    const nbytes = info.numel * DTYPE_BYTES[info.dtype];
    if (p + 8 + nbytes > src.size) {
      throw new CheckpointFormatError(
        `storage "${k}" (${nbytes} bytes at byte ${p + 8}) runs past the end of the file ` +
          `(${src.size} bytes; truncated?)`,
      );
    }
    bytesOf.set(k, { fileOffset: p + 8, dtype: info.dtype, numel: info.numel });
    p += 8 + nbytes;
  }
  if (p !== src.size) {
    throw new CheckpointFormatError(`${src.size - p} unexpected bytes after the last storage`);
  }
  return new Reader(path, "legacy", obj.value, src, undefined, bytesOf, littleEndian);
}

/** Default chunk size for streaming tensor bytes. */
export const DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024;

class Reader implements OpenCheckpoint {
  constructor(
    readonly path: string,
    readonly format: "zip" | "legacy",
    readonly root: PickleValue,
    readonly src: ByteSource,
    readonly zip: ZipArchive | undefined,
    readonly storages: Map<string, StorageBytes>,
    readonly littleEndian: boolean,
  ) {}

  get size(): number {
    return this.src.size;
  }

  close(): void {
    this.src.close();
  }

  /** Elements [start, start + count) of a root storage, little-endian. */
  async #readElements(key: string, start: number, count: number): Promise<Uint8Array> {
    const s = this.storages.get(key);
    if (!s) throw new CheckpointFormatError(`storage "${key}" is unknown`);
    const es = DTYPE_BYTES[s.dtype];
    if (start < 0 || start + count > s.numel) {
      throw new CheckpointFormatError(
        `elements [${start}, ${start + count}) outside storage "${key}"`,
      );
    }
    const bytes = s.entry
      ? await this.zip!.readRange(s.entry, start * es, count * es)
      : await this.src.read(s.fileOffset! + start * es, count * es);
    if (!this.littleEndian) swapBytes(bytes, es);
    return bytes;
  }

  async tensorBytes(t: TensorRef): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    for await (const c of this.tensorChunks(t, Number.MAX_SAFE_INTEGER)) chunks.push(c);
    if (chunks.length === 1) return chunks[0];
    const out = new Uint8Array(t.nbytes);
    let p = 0;
    for (const c of chunks) {
      out.set(c, p);
      p += c.length;
    }
    return out;
  }

  async *tensorChunks(t: TensorRef, chunkBytes = DEFAULT_CHUNK_BYTES): AsyncGenerator<Uint8Array> {
    try {
      yield* this.#chunks(t, chunkBytes);
    } catch (err) {
      throw wrapError(this.path, err);
    }
  }

  async *#chunks(t: TensorRef, chunkBytes: number): AsyncGenerator<Uint8Array> {
    const s = t.storage;
    const es = DTYPE_BYTES[s.dtype];
    const numel = t.numel;
    if (numel === 0) {
      yield new Uint8Array(0);
      return;
    }
    const base = s.baseOffset + t.offset;
    if (t.contiguous) {
      const root = this.storages.get(s.key)!;
      if (
        root.entry && this.littleEndian && base === 0 && numel === root.numel &&
        chunkBytes < Number.MAX_SAFE_INTEGER
      ) {
        // The tensor is its whole zip entry: stream it with a CRC check.
        yield* this.zip!.chunks(root.entry, chunkBytes);
        return;
      }
      if (root.entry && this.littleEndian && base === 0 && numel === root.numel) {
        yield await this.zip!.readAll(root.entry);
        return;
      }
      const per = Math.max(1, Math.floor(chunkBytes / es));
      for (let i = 0; i < numel; i += per) {
        yield await this.#readElements(s.key, base + i, Math.min(per, numel - i));
      }
      return;
    }
    yield await this.#gather(t, base, es);
  }

  /** Materialise a non-contiguous view: read its span, copy element runs in row-major order. */
  async #gather(t: TensorRef, base: number, es: number): Promise<Uint8Array> {
    const shape = t.shape;
    const stride = t.stride;
    let last = base;
    for (let i = 0; i < shape.length; i++) last += (shape[i] - 1) * stride[i];
    const span = await this.#readElements(t.storage.key, base, last - base + 1);
    const out = new Uint8Array(t.nbytes);
    const nd = shape.length;
    const inner = shape[nd - 1];
    const innerStride = stride[nd - 1];
    const idx = new Array<number>(Math.max(0, nd - 1)).fill(0);
    let src = 0; // element offset within span of the current row start
    let dst = 0;
    const rows = t.numel / inner;
    for (let r = 0; r < rows; r++) {
      if (innerStride === 1) {
        out.set(span.subarray(src * es, (src + inner) * es), dst);
        dst += inner * es;
      } else {
        for (let j = 0; j < inner; j++) {
          const o = (src + j * innerStride) * es;
          for (let b = 0; b < es; b++) out[dst++] = span[o + b];
        }
      }
      // Advance the odometer over the outer dimensions.
      for (let d = nd - 2; d >= 0; d--) {
        idx[d]++;
        src += stride[d];
        if (idx[d] < shape[d]) break;
        src -= stride[d] * shape[d];
        idx[d] = 0;
      }
    }
    return out;
  }
}

function swapBytes(bytes: Uint8Array, es: number): void {
  if (es === 1) return;
  for (let i = 0; i < bytes.length; i += es) {
    for (let a = i, b = i + es - 1; a < b; a++, b--) {
      const x = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = x;
    }
  }
}
