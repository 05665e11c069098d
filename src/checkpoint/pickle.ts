/**
 * A pickle decoder that never executes anything.
 *
 * Every opcode of protocols 0 to 5 is decoded from a closed table; an unknown
 * opcode throws, naming the byte in hex. `GLOBAL`, `STACK_GLOBAL` and `INST`
 * record a {@linkcode PyGlobal} name and never resolve it. Calls (`REDUCE`,
 * `INST`, `OBJ`, `NEWOBJ`, `NEWOBJ_EX`) are interpreted for a short allowlist
 * of data constructors (`collections.OrderedDict`, `_codecs.encode`,
 * `builtins.set`/`frozenset`/`bytearray`, `copyreg._reconstructor`) and for
 * whatever the caller's `call` hook accepts (the torch rebuild functions);
 * every other call becomes an inert {@linkcode PyObject}. Globals from modules
 * that only an attack would name (`os`, `subprocess`, `builtins.eval`, …) are
 * refused outright.
 *
 * Python values map to: None → null, bool → boolean, int → number (bigint
 * beyond 2^53), float → {@linkcode PyFloat}, str → string, bytes/bytearray → Uint8Array,
 * list → array, tuple → frozen array, dict → Map, set/frozenset → Set.
 *
 * Bounds against hostile input: lengths are checked against the bytes left
 * before anything is allocated, memo indices must be plausible for the
 * pickle's size, the stack and mark depth are capped, and the finished
 * object graph may not nest deeper than {@linkcode MAX_NESTING} levels or
 * contain a cycle.
 *
 * @module
 */

import { CheckpointFormatError } from "./errors.ts";

/** A Python global (`module.name`) recorded as an inert name. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  /** `module.name`. */
  get qualname(): string {
    return `${this.module}.${this.name}`;
  }
  toString(): string {
    return this.qualname;
  }
}

/**
 * A Python float. Kept apart from ints (which are plain numbers) so that a
 * float can never pass for an integer where one is required (a tensor's
 * size, stride or offset).
 */
export class PyFloat {
  constructor(readonly value: number) {}
  valueOf(): number {
    return this.value;
  }
  /** Python's repr: `1.0`, `0.001`, `inf`, `nan`. */
  toString(): string {
    const v = this.value;
    if (Number.isNaN(v)) return "nan";
    if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
    return Number.isInteger(v) && Math.abs(v) < 1e16 ? v.toFixed(1) : String(v);
  }
}

/**
 * An object built by a call tost does not interpret: the callable's name,
 * its arguments and any state `BUILD` gave it. Never executed.
 */
export class PyObject {
  /** State set by `BUILD` (e.g. an `argparse.Namespace`'s attribute dict). */
  state: PickleValue = null;
  constructor(
    readonly callable: PyGlobal,
    readonly args: readonly PickleValue[],
    readonly kwargs: PickleValue = null,
  ) {}
  /**
   * The object's attributes when its state is a dict with string keys (as
   * for `argparse.Namespace`), else undefined.
   */
  attributes(): Map<string, PickleValue> | undefined {
    const s = this.state;
    const dict = s instanceof Map ? s : Array.isArray(s) && s[1] instanceof Map ? s[1] : undefined;
    if (!dict) return undefined;
    const out = new Map<string, PickleValue>();
    for (const [k, v] of dict) if (typeof k === "string") out.set(k, v);
    return out;
  }
}

/**
 * A value the caller's hooks produce (e.g. a tensor reference); opaque to
 * the decoder.
 */
export abstract class PickleExtension {
  /** A short description for inspection output. */
  abstract describe(): string;
}

/** Any decoded value. */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | PyFloat
  | string
  | Uint8Array
  | PickleValue[]
  | Map<PickleValue, PickleValue>
  | Set<PickleValue>
  | PyGlobal
  | PyObject
  | PickleExtension;

/** Options of {@linkcode unpickle}. */
export interface UnpickleOptions {
  /** Where decoding starts (default 0). */
  start?: number;
  /** Resolve a persistent id (`PERSID`/`BINPERSID`); absent means they are refused. */
  persistentLoad?: (pid: PickleValue) => PickleValue;
  /**
   * Interpret a call of `fn` on `args`; return undefined to leave it as an
   * inert {@linkcode PyObject}. Throw to refuse it.
   */
  call?: (fn: PyGlobal, args: readonly PickleValue[]) => PickleValue | undefined;
  /** Name used in error messages (e.g. "data.pkl"). */
  where?: string;
}

/** The decoded object and the offset just past its `STOP` opcode. */
export interface UnpickleResult {
  value: PickleValue;
  end: number;
}

/** Thrown when the pickle ends before `STOP`: a caller may retry with more bytes. */
export class PickleTruncatedError extends CheckpointFormatError {
  override name = "PickleTruncatedError";
}

/** Deepest nesting of containers a decoded object may have. */
export const MAX_NESTING = 1000;
/** Most values the decoder's stack may hold at once. */
export const MAX_STACK = 4_000_000;
/** Most open `MARK`s at once. */
export const MAX_MARKS = 100_000;
/** Longest text or binary integer accepted, in bytes. */
export const MAX_LONG_BYTES = 4096;

/** Modules whose globals no checkpoint needs: naming one is refused. */
const FORBIDDEN_MODULES = new Set([
  "os",
  "posix",
  "nt",
  "subprocess",
  "sys",
  "shutil",
  "socket",
  "importlib",
  "runpy",
  "code",
  "codeop",
  "pty",
  "ctypes",
  "pickle",
  "_pickle",
  "cPickle",
  "marshal",
  "types",
  "webbrowser",
  "multiprocessing",
  "signal",
  "asyncio",
  "operator",
  "functools",
  "commands",
  "platform",
  "pdb",
  "bdb",
  "timeit",
  "io",
  "_io",
  "tempfile",
  "glob",
  "zipimport",
  "pydoc",
  "imp",
  "threading",
  "_thread",
  "http",
  "urllib",
  "requests",
]);

/** Names in `builtins` that are plain data constructors (everything else is refused). */
const SAFE_BUILTINS = new Set([
  "set",
  "frozenset",
  "bytearray",
  "bytes",
  "complex",
  "slice",
  "range",
  "object",
  "list",
  "dict",
  "tuple",
  "int",
  "float",
  "str",
  "bool",
]);

/** Globals that are refused even though their module is otherwise harmless data. */
const FORBIDDEN_GLOBALS = new Set([
  "numpy.testing._private.utils.runstring",
  "numpy.load",
  "torch.load",
  "torch.storage._load_from_bytes",
  "torch.hub.load",
  "torch.jit.load",
  "torch.package.PackageImporter",
]);

/** Whether naming global `module.name` is refused; returns the reason or undefined. */
export function forbiddenGlobal(module: string, name: string): string | undefined {
  const top = module.split(".")[0];
  if (FORBIDDEN_MODULES.has(top)) return `module "${top}" can run code`;
  if ((top === "builtins" || top === "__builtin__") && !SAFE_BUILTINS.has(name)) {
    return `builtin "${name}" can run code`;
  }
  if (FORBIDDEN_GLOBALS.has(`${module}.${name}`)) return "it loads or runs code";
  return undefined;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const latin1 = new TextDecoder("latin1");

function hex(b: number): string {
  return `0x${b.toString(16).padStart(2, "0")}`;
}

function describeType(v: PickleValue | undefined): string {
  if (v === undefined) return "nothing";
  if (v === null) return "None";
  if (Array.isArray(v)) return Object.isFrozen(v) ? "tuple" : "list";
  if (v instanceof Map) return "dict";
  if (v instanceof Set) return "set";
  if (v instanceof Uint8Array) return "bytes";
  if (v instanceof PyFloat) return "float";
  if (v instanceof PyGlobal) return `global ${v.qualname}`;
  if (v instanceof PyObject) return `${v.callable.qualname} object`;
  if (v instanceof PickleExtension) return v.describe();
  if (typeof v === "number" || typeof v === "bigint") return "int";
  if (typeof v === "string") return "str";
  if (typeof v === "boolean") return "bool";
  return typeof v;
}

/** The value's Python type with an article: "an int", "a dict", "a tensor F32 [2]". */
export function aType(v: PickleValue | undefined): string {
  const t = describeType(v);
  return `${/^[aeiou]/i.test(t) ? "an" : "a"} ${t}`;
}

/** Python's hashable key for a dict/set entry: primitives by value, others by identity. */
function keyOf(v: PickleValue): PickleValue {
  if (
    Array.isArray(v) && Object.isFrozen(v) && v.every((x) => x === null || typeof x !== "object")
  ) {
    // Tuples of primitives compare by value in Python; mimic it with a string key.
    return `\u0000tuple:${JSON.stringify(v, (_k, x) => typeof x === "bigint" ? `${x}n` : x)}`;
  }
  return v;
}

/**
 * Decode one pickle from `bytes` (from `options.start`), returning the value
 * and the offset after `STOP`. Throws {@linkcode CheckpointFormatError}
 * (or its subclass {@linkcode PickleTruncatedError} when the data end early).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { unpickle } from "./pickle.ts";
 * // pickle.dumps({"a": (1, 2.5)}, protocol=2)
 * const bytes = new Uint8Array([
 *   0x80, 0x02, 0x7d, 0x71, 0x00, 0x58, 0x01, 0x00, 0x00, 0x00, 0x61, 0x71, 0x01, 0x4b, 0x01,
 *   0x47, 0x40, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x86, 0x71, 0x02, 0x73, 0x2e,
 * ]);
 * const { value } = unpickle(bytes);
 * assert.ok(value instanceof Map && String((value.get("a") as unknown[])[1]) === "2.5");
 * ```
 */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions = {}): UnpickleResult {
  return new Unpickler(bytes, options).run();
}

class Unpickler {
  readonly #b: Uint8Array;
  readonly #view: DataView;
  readonly #opts: UnpickleOptions;
  readonly #where: string;
  #pos: number;
  #op = 0; // offset of the opcode being decoded
  readonly #stack: PickleValue[] = [];
  readonly #marks: number[] = [];
  readonly #memo = new Map<number, PickleValue>();

  constructor(bytes: Uint8Array, opts: UnpickleOptions) {
    this.#b = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#opts = opts;
    this.#where = opts.where ?? "pickle";
    this.#pos = opts.start ?? 0;
  }

  #fail(msg: string): never {
    throw new CheckpointFormatError(`${msg} (opcode at byte ${this.#op} of ${this.#where})`);
  }

  #need(n: number | bigint, what: string): number {
    const left = this.#b.length - this.#pos;
    if (typeof n === "bigint" ? n > BigInt(left) : n > left) {
      throw new PickleTruncatedError(
        `${what} of ${n} bytes runs past the end of ${this.#where} (${left} bytes left, ` +
          `opcode at byte ${this.#op})`,
      );
    }
    return Number(n);
  }

  #take(n: number | bigint, what: string): Uint8Array {
    const len = this.#need(n, what);
    const out = this.#b.subarray(this.#pos, this.#pos + len);
    this.#pos += len;
    return out;
  }

  #u8(): number {
    this.#need(1, "argument");
    return this.#b[this.#pos++];
  }
  #u16(): number {
    this.#need(2, "argument");
    const v = this.#view.getUint16(this.#pos, true);
    this.#pos += 2;
    return v;
  }
  #u32(): number {
    this.#need(4, "argument");
    const v = this.#view.getUint32(this.#pos, true);
    this.#pos += 4;
    return v;
  }
  #i32(): number {
    this.#need(4, "argument");
    const v = this.#view.getInt32(this.#pos, true);
    this.#pos += 4;
    return v;
  }
  #u64(): bigint {
    this.#need(8, "argument");
    const v = this.#view.getBigUint64(this.#pos, true);
    this.#pos += 8;
    return v;
  }

  /** A text line (protocol 0 arguments), without its newline. */
  #line(): string {
    const nl = this.#b.indexOf(0x0a, this.#pos);
    if (nl < 0) {
      throw new PickleTruncatedError(
        `unterminated text argument in ${this.#where} (opcode at byte ${this.#op})`,
      );
    }
    const raw = this.#b.subarray(this.#pos, nl);
    this.#pos = nl + 1;
    return latin1.decode(raw);
  }

  #push(v: PickleValue): void {
    if (this.#stack.length >= MAX_STACK) this.#fail(`stack deeper than ${MAX_STACK} values`);
    this.#stack.push(v);
  }

  #pop(): PickleValue {
    const floor = this.#marks.length ? this.#marks[this.#marks.length - 1] : 0;
    if (this.#stack.length <= floor) this.#fail("stack underflow");
    return this.#stack.pop()!;
  }

  #top(): PickleValue {
    const floor = this.#marks.length ? this.#marks[this.#marks.length - 1] : 0;
    if (this.#stack.length <= floor) this.#fail("stack underflow");
    return this.#stack[this.#stack.length - 1];
  }

  #popMark(): PickleValue[] {
    const m = this.#marks.pop();
    if (m === undefined) this.#fail("no MARK to pop");
    return this.#stack.splice(m);
  }

  #memoIndex(i: number): number {
    // Every memoized object costs at least one opcode byte, so an index beyond
    // the pickle's length can only come from a hostile file (a memo bomb).
    if (i > this.#b.length) this.#fail(`memo index ${i} is implausibly large`);
    return i;
  }

  #put(i: number): void {
    this.#memo.set(this.#memoIndex(i), this.#top());
  }

  #get(i: number): void {
    if (!this.#memo.has(i)) this.#fail(`memo entry ${i} is not defined`);
    this.#push(this.#memo.get(i)!);
  }

  #global(module: string, name: string): PyGlobal {
    if (!module || !name) this.#fail("empty global name");
    const why = forbiddenGlobal(module, name);
    if (why) {
      this.#fail(`refusing global ${module}.${name}: ${why}, and no checkpoint needs it`);
    }
    return new PyGlobal(module, name);
  }

  #call(fn: PickleValue, args: PickleValue, kwargs: PickleValue = null): PickleValue {
    if (!(fn instanceof PyGlobal)) {
      this.#fail(`cannot call ${aType(fn)}: only named globals are callable`);
    }
    if (!Array.isArray(args)) this.#fail(`arguments of ${fn.qualname} are ${aType(args)}`);
    if (kwargs === null || (kwargs instanceof Map && kwargs.size === 0)) {
      const builtin = this.#builtinCall(fn, args);
      if (builtin !== undefined) return builtin;
      let hooked: PickleValue | undefined;
      try {
        hooked = this.#opts.call?.(fn, args);
      } catch (err) {
        if (err instanceof CheckpointFormatError) this.#fail(err.message);
        throw err;
      }
      if (hooked !== undefined) return hooked;
    }
    return new PyObject(fn, Object.freeze([...args]), kwargs);
  }

  #builtinCall(fn: PyGlobal, args: readonly PickleValue[]): PickleValue | undefined {
    const q = fn.qualname;
    switch (q) {
      case "collections.OrderedDict": {
        const m = new Map<PickleValue, PickleValue>();
        if (args.length === 0) return m;
        if (args.length === 1 && Array.isArray(args[0])) {
          for (const pair of args[0]) {
            if (!Array.isArray(pair) || pair.length !== 2) {
              this.#fail("OrderedDict items must be pairs");
            }
            m.set(keyOf(pair[0]), pair[1]);
          }
          return m;
        }
        return undefined;
      }
      case "_codecs.encode": {
        const [s, enc] = args;
        if (typeof s !== "string" || args.length > 2) return undefined;
        const e = typeof enc === "string" ? enc.toLowerCase().replace("_", "-") : "utf-8";
        if (e === "latin1" || e === "latin-1" || e === "iso-8859-1") {
          const out = new Uint8Array(s.length);
          for (let i = 0; i < s.length; i++) {
            const c = s.charCodeAt(i);
            if (c > 255) this.#fail("_codecs.encode: character outside latin-1");
            out[i] = c;
          }
          return out;
        }
        if (e === "utf-8" || e === "utf8") return new TextEncoder().encode(s);
        return undefined;
      }
      case "builtins.set":
      case "builtins.frozenset":
      case "__builtin__.set":
      case "__builtin__.frozenset": {
        if (args.length === 0) return new Set();
        if (args.length === 1 && Array.isArray(args[0])) return new Set(args[0].map(keyOf));
        return undefined;
      }
      case "builtins.bytearray":
      case "__builtin__.bytearray": {
        if (args.length === 0) return new Uint8Array(0);
        if (args.length === 1 && args[0] instanceof Uint8Array) return args[0].slice();
        return undefined;
      }
      case "copyreg._reconstructor":
      case "copy_reg._reconstructor": {
        // Protocol 0/1 object creation: (cls, base, state) → a bare instance of cls.
        if (args[0] instanceof PyGlobal) {
          return new PyObject(args[0], Object.freeze([]), null);
        }
        return undefined;
      }
      default:
        return undefined;
    }
  }

  #build(): void {
    const state = this.#pop();
    const target = this.#top();
    if (target instanceof PyObject) {
      target.state = state;
    } else if (target instanceof Map) {
      // OrderedDict state: (inst_dict, slots) or inst_dict, e.g. a state_dict's `_metadata`.
      // It is recorded nowhere: only the dict's items matter.
    } else if (target instanceof PickleExtension) {
      // Tensor state (e.g. a Parameter subclass' attributes): irrelevant to the values.
    } else {
      this.#fail(`BUILD on ${aType(target)}`);
    }
  }

  #setItems(dict: PickleValue, items: PickleValue[]): void {
    if (!(dict instanceof Map)) this.#fail(`SETITEM(S) on ${aType(dict)}, not a dict`);
    if (items.length % 2 !== 0) this.#fail("SETITEMS with an odd number of values");
    for (let i = 0; i < items.length; i += 2) dict.set(keyOf(items[i]), items[i + 1]);
  }

  #appendItems(list: PickleValue, items: PickleValue[]): void {
    if (list instanceof PyObject) {
      // e.g. a list subclass or deque: record the items inertly.
      const st = list.state;
      if (Array.isArray(st) && !Object.isFrozen(st)) st.push(...items);
      else list.state = [...items];
      return;
    }
    if (!Array.isArray(list) || Object.isFrozen(list)) {
      this.#fail(`APPEND(S) on ${aType(list)}, not a list`);
    }
    for (const it of items) list.push(it);
  }

  #decodeInt(text: string): number | bigint | boolean {
    const t = text.trim();
    if (t === "01") return true;
    if (t === "00") return false;
    return this.#parseDecimal(t.endsWith("L") ? t.slice(0, -1) : t);
  }

  #parseDecimal(t: string): number | bigint {
    if (!/^[+-]?\d+$/.test(t) || t.length > MAX_LONG_BYTES) {
      this.#fail(`invalid integer "${t.slice(0, 40)}"`);
    }
    const b = BigInt(t);
    return b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(b)
      : b;
  }

  #decodeLong(raw: Uint8Array): number | bigint {
    if (raw.length === 0) return 0;
    if (raw.length > MAX_LONG_BYTES) this.#fail(`integer of ${raw.length} bytes is too long`);
    let v = 0n;
    for (let i = raw.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(raw[i]);
    if (raw[raw.length - 1] & 0x80) v -= 1n << BigInt(raw.length * 8);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(v)
      : v;
  }

  #decodeUtf8(raw: Uint8Array): string {
    try {
      return utf8.decode(raw);
    } catch {
      this.#fail("string is not valid UTF-8");
    }
  }

  /** Python 2 `str` bytes: UTF-8 when valid, else latin-1 (as torch.load's encoding). */
  #decodeStr(raw: Uint8Array): string {
    try {
      return utf8.decode(raw);
    } catch {
      return latin1.decode(raw);
    }
  }

  /** Protocol 0 STRING argument: a quoted Python 2 string literal with escapes. */
  #decodeQuoted(text: string): string {
    const q = text[0];
    if (text.length < 2 || (q !== "'" && q !== '"') || text[text.length - 1] !== q) {
      this.#fail("STRING argument is not quoted");
    }
    const body = text.slice(1, -1);
    const bytes: number[] = [];
    for (let i = 0; i < body.length; i++) {
      const c = body.charCodeAt(i);
      if (body[i] !== "\\") {
        bytes.push(c & 0xff);
        continue;
      }
      const e = body[++i];
      const simple: Record<string, number> = {
        "\\": 0x5c,
        "'": 0x27,
        '"': 0x22,
        n: 0x0a,
        r: 0x0d,
        t: 0x09,
        a: 0x07,
        b: 0x08,
        f: 0x0c,
        v: 0x0b,
      };
      if (e === undefined) this.#fail("STRING argument ends in a backslash");
      if (e in simple) bytes.push(simple[e]);
      else if (e === "x") {
        const h = body.slice(i + 1, i + 3);
        if (!/^[0-9a-fA-F]{2}$/.test(h)) this.#fail("bad \\x escape in STRING");
        bytes.push(parseInt(h, 16));
        i += 2;
      } else if (/[0-7]/.test(e)) {
        let o = e;
        while (o.length < 3 && /[0-7]/.test(body[i + 1] ?? "")) o += body[++i];
        bytes.push(parseInt(o, 8) & 0xff);
      } else {
        bytes.push(0x5c, body.charCodeAt(i) & 0xff); // unknown escapes stay as written
      }
    }
    return this.#decodeStr(new Uint8Array(bytes));
  }

  /** Protocol 0 UNICODE argument: raw-unicode-escape. */
  #decodeRawUnicode(raw: string): string {
    return raw.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_m, u4, u8) => {
      const cp = parseInt(u4 ?? u8, 16);
      if (cp > 0x10ffff) this.#fail("UNICODE escape beyond U+10FFFF");
      return String.fromCodePoint(cp);
    });
  }

  run(): UnpickleResult {
    const b = this.#b;
    for (;;) {
      this.#op = this.#pos;
      if (this.#pos >= b.length) {
        throw new PickleTruncatedError(
          `${this.#where} ends at byte ${this.#pos} before its STOP opcode`,
        );
      }
      const op = b[this.#pos++];
      switch (op) {
        // ---- protocol 2+ framing and control
        case 0x80: { // PROTO
          const p = this.#u8();
          if (p > 5) this.#fail(`unsupported pickle protocol ${p}`);
          break;
        }
        case 0x95: // FRAME
          this.#need(this.#u64(), "FRAME");
          break;
        case 0x2e: { // STOP '.'
          if (this.#marks.length) this.#fail("STOP with an open MARK");
          if (this.#stack.length !== 1) {
            this.#fail(`STOP with ${this.#stack.length} values on the stack, expected 1`);
          }
          const value = this.#stack[0];
          checkGraph(value, this.#where);
          return { value, end: this.#pos };
        }
        // ---- stack manipulation
        case 0x28: // MARK '('
          if (this.#marks.length >= MAX_MARKS) this.#fail(`more than ${MAX_MARKS} nested MARKs`);
          this.#marks.push(this.#stack.length);
          break;
        case 0x30: { // POP '0'
          const floor = this.#marks.length ? this.#marks[this.#marks.length - 1] : 0;
          if (this.#stack.length > floor) this.#stack.pop();
          else this.#popMark();
          break;
        }
        case 0x31: // POP_MARK '1'
          this.#popMark();
          break;
        case 0x32: // DUP '2'
          this.#push(this.#top());
          break;
        // ---- memo
        case 0x70: // PUT 'p'
          this.#put(Number(this.#parseDecimal(this.#line())));
          break;
        case 0x71: // BINPUT 'q'
          this.#put(this.#u8());
          break;
        case 0x72: // LONG_BINPUT 'r'
          this.#put(this.#u32());
          break;
        case 0x94: // MEMOIZE
          this.#put(this.#memo.size);
          break;
        case 0x67: // GET 'g'
          this.#get(Number(this.#parseDecimal(this.#line())));
          break;
        case 0x68: // BINGET 'h'
          this.#get(this.#u8());
          break;
        case 0x6a: // LONG_BINGET 'j'
          this.#get(this.#u32());
          break;
        // ---- constants and numbers
        case 0x4e: // NONE 'N'
          this.#push(null);
          break;
        case 0x88: // NEWTRUE
          this.#push(true);
          break;
        case 0x89: // NEWFALSE
          this.#push(false);
          break;
        case 0x49: // INT 'I'
          this.#push(this.#decodeInt(this.#line()));
          break;
        case 0x4a: // BININT 'J'
          this.#push(this.#i32());
          break;
        case 0x4b: // BININT1 'K'
          this.#push(this.#u8());
          break;
        case 0x4d: // BININT2 'M'
          this.#push(this.#u16());
          break;
        case 0x4c: { // LONG 'L'
          const t = this.#line().trim();
          this.#push(this.#parseDecimal(t.endsWith("L") ? t.slice(0, -1) : t));
          break;
        }
        case 0x8a: // LONG1
          this.#push(this.#decodeLong(this.#take(this.#u8(), "LONG1")));
          break;
        case 0x8b: { // LONG4
          const n = this.#i32();
          if (n < 0) this.#fail("LONG4 with a negative length");
          if (n > MAX_LONG_BYTES) this.#fail(`integer of ${n} bytes is too long`);
          this.#push(this.#decodeLong(this.#take(n, "LONG4")));
          break;
        }
        case 0x46: { // FLOAT 'F'
          const t = this.#line().trim();
          let v: number;
          if (/^[+-]?inf(inity)?$/i.test(t)) v = t.startsWith("-") ? -Infinity : Infinity;
          else if (/^[+-]?nan$/i.test(t)) v = NaN;
          else if (/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) v = Number(t);
          else this.#fail(`invalid float "${t.slice(0, 40)}"`);
          this.#push(new PyFloat(v));
          break;
        }
        case 0x47: { // BINFLOAT 'G' (big-endian)
          this.#need(8, "BINFLOAT");
          this.#push(new PyFloat(this.#view.getFloat64(this.#pos, false)));
          this.#pos += 8;
          break;
        }
        // ---- strings and bytes
        case 0x53: // STRING 'S'
          this.#push(this.#decodeQuoted(this.#line()));
          break;
        case 0x54: { // BINSTRING 'T'
          const n = this.#i32();
          if (n < 0) this.#fail("BINSTRING with a negative length");
          this.#push(this.#decodeStr(this.#take(n, "BINSTRING")));
          break;
        }
        case 0x55: // SHORT_BINSTRING 'U'
          this.#push(this.#decodeStr(this.#take(this.#u8(), "SHORT_BINSTRING")));
          break;
        case 0x56: // UNICODE 'V'
          this.#push(this.#decodeRawUnicode(this.#line()));
          break;
        case 0x58: // BINUNICODE 'X'
          this.#push(this.#decodeUtf8(this.#take(this.#u32(), "BINUNICODE")));
          break;
        case 0x8c: // SHORT_BINUNICODE
          this.#push(this.#decodeUtf8(this.#take(this.#u8(), "SHORT_BINUNICODE")));
          break;
        case 0x8d: // BINUNICODE8
          this.#push(this.#decodeUtf8(this.#take(this.#u64(), "BINUNICODE8")));
          break;
        case 0x42: // BINBYTES 'B'
          this.#push(this.#take(this.#u32(), "BINBYTES").slice());
          break;
        case 0x43: // SHORT_BINBYTES 'C'
          this.#push(this.#take(this.#u8(), "SHORT_BINBYTES").slice());
          break;
        case 0x8e: // BINBYTES8
          this.#push(this.#take(this.#u64(), "BINBYTES8").slice());
          break;
        case 0x96: // BYTEARRAY8
          this.#push(this.#take(this.#u64(), "BYTEARRAY8").slice());
          break;
        case 0x97: // NEXT_BUFFER
          this.#fail("NEXT_BUFFER: out-of-band buffers are not part of a checkpoint");
          break;
        case 0x98: // READONLY_BUFFER
          this.#top();
          break;
        // ---- containers
        case 0x29: // EMPTY_TUPLE ')'
          this.#push(Object.freeze([]) as unknown as PickleValue[]);
          break;
        case 0x74: // TUPLE 't'
          this.#push(Object.freeze(this.#popMark()) as unknown as PickleValue[]);
          break;
        case 0x85: // TUPLE1
          this.#push(Object.freeze([this.#pop()]) as unknown as PickleValue[]);
          break;
        case 0x86: { // TUPLE2
          const b2 = this.#pop();
          const a = this.#pop();
          this.#push(Object.freeze([a, b2]) as unknown as PickleValue[]);
          break;
        }
        case 0x87: { // TUPLE3
          const c = this.#pop();
          const b2 = this.#pop();
          const a = this.#pop();
          this.#push(Object.freeze([a, b2, c]) as unknown as PickleValue[]);
          break;
        }
        case 0x5d: // EMPTY_LIST ']'
          this.#push([]);
          break;
        case 0x6c: // LIST 'l'
          this.#push(this.#popMark());
          break;
        case 0x61: { // APPEND 'a'
          const v = this.#pop();
          this.#appendItems(this.#top(), [v]);
          break;
        }
        case 0x65: { // APPENDS 'e'
          const items = this.#popMark();
          this.#appendItems(this.#top(), items);
          break;
        }
        case 0x7d: // EMPTY_DICT '}'
          this.#push(new Map());
          break;
        case 0x64: { // DICT 'd'
          const items = this.#popMark();
          const m = new Map<PickleValue, PickleValue>();
          this.#setItems(m, items);
          this.#push(m);
          break;
        }
        case 0x73: { // SETITEM 's'
          const v = this.#pop();
          const k = this.#pop();
          this.#setItems(this.#top(), [k, v]);
          break;
        }
        case 0x75: { // SETITEMS 'u'
          const items = this.#popMark();
          this.#setItems(this.#top(), items);
          break;
        }
        case 0x8f: // EMPTY_SET
          this.#push(new Set());
          break;
        case 0x90: { // ADDITEMS
          const items = this.#popMark();
          const s = this.#top();
          if (!(s instanceof Set) || Object.isFrozen(s)) {
            this.#fail(`ADDITEMS on ${aType(s)}, not a set`);
          }
          for (const it of items) s.add(keyOf(it));
          break;
        }
        case 0x91: // FROZENSET
          this.#push(Object.freeze(new Set(this.#popMark().map(keyOf))));
          break;
        // ---- globals and object construction
        case 0x63: { // GLOBAL 'c'
          const module = this.#line();
          const name = this.#line();
          this.#push(this.#global(module, name));
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = this.#pop();
          const module = this.#pop();
          if (typeof module !== "string" || typeof name !== "string") {
            this.#fail("STACK_GLOBAL needs two strings");
          }
          this.#push(this.#global(module, name));
          break;
        }
        case 0x69: { // INST 'i'
          const module = this.#line();
          const name = this.#line();
          const cls = this.#global(module, name);
          const args = this.#popMark();
          this.#push(this.#call(cls, args));
          break;
        }
        case 0x6f: { // OBJ 'o'
          const items = this.#popMark();
          if (items.length === 0) this.#fail("OBJ without a class");
          this.#push(this.#call(items[0], items.slice(1)));
          break;
        }
        case 0x52: { // REDUCE 'R'
          const args = this.#pop();
          const fn = this.#pop();
          this.#push(this.#call(fn, args));
          break;
        }
        case 0x81: { // NEWOBJ
          const args = this.#pop();
          const cls = this.#pop();
          this.#push(this.#call(cls, args));
          break;
        }
        case 0x92: { // NEWOBJ_EX
          const kwargs = this.#pop();
          const args = this.#pop();
          const cls = this.#pop();
          if (!(kwargs instanceof Map)) this.#fail("NEWOBJ_EX keyword arguments are not a dict");
          this.#push(this.#call(cls, args, kwargs));
          break;
        }
        case 0x62: // BUILD 'b'
          this.#build();
          break;
        case 0x82: // EXT1
        case 0x83: // EXT2
        case 0x84: // EXT4
          this.#fail("extension registry codes (EXT1/2/4) are not supported");
          break;
        // ---- persistent ids
        case 0x50: { // PERSID 'P'
          const pid = this.#line();
          this.#push(this.#persistent(pid));
          break;
        }
        case 0x51: // BINPERSID 'Q'
          this.#push(this.#persistent(this.#pop()));
          break;
        default:
          this.#fail(`unknown opcode ${hex(op)}`);
      }
    }
  }

  #persistent(pid: PickleValue): PickleValue {
    const load = this.#opts.persistentLoad;
    if (!load) this.#fail("persistent id where none is expected");
    try {
      return load(pid);
    } catch (err) {
      if (err instanceof CheckpointFormatError) this.#fail(err.message);
      throw err;
    }
  }
}

/** Children of a container value (none for scalars). */
function childrenOf(v: PickleValue): Iterable<PickleValue> {
  if (Array.isArray(v)) return v;
  if (v instanceof Map) return mapChildren(v);
  if (v instanceof Set) return v;
  if (v instanceof PyObject) return [...v.args, v.kwargs, v.state];
  return [];
}

function* mapChildren(m: Map<PickleValue, PickleValue>): Iterable<PickleValue> {
  for (const [k, v] of m) {
    yield k;
    yield v;
  }
}

function isContainer(v: PickleValue): v is object & PickleValue {
  return Array.isArray(v) || v instanceof Map || v instanceof Set || v instanceof PyObject;
}

/**
 * Reject object graphs nested deeper than {@linkcode MAX_NESTING} or holding a
 * cycle, so later walks are safe. Linear in the graph's size (shared
 * sub-objects are measured once, so memo "billion laughs" stay cheap).
 */
function checkGraph(root: PickleValue, where: string): void {
  if (!isContainer(root)) return;
  const height = new Map<object, number>();
  const onPath = new Set<object>();
  type Frame = { node: object & PickleValue; it: Iterator<PickleValue>; h: number };
  const stack: Frame[] = [{ node: root, it: childrenOf(root)[Symbol.iterator](), h: 0 }];
  onPath.add(root);
  while (stack.length) {
    const f = stack[stack.length - 1];
    const n = f.it.next();
    if (n.done) {
      stack.pop();
      onPath.delete(f.node);
      height.set(f.node, f.h + 1);
      if (stack.length) {
        const p = stack[stack.length - 1];
        p.h = Math.max(p.h, f.h + 1);
      }
      continue;
    }
    const c = n.value;
    if (!isContainer(c)) continue;
    if (onPath.has(c)) {
      throw new CheckpointFormatError(`${where} holds an object that contains itself`);
    }
    const known = height.get(c);
    if (known !== undefined) {
      f.h = Math.max(f.h, known);
      continue;
    }
    if (stack.length >= MAX_NESTING) {
      throw new CheckpointFormatError(
        `${where} nests containers more than ${MAX_NESTING} levels deep`,
      );
    }
    onPath.add(c);
    stack.push({ node: c, it: childrenOf(c)[Symbol.iterator](), h: 0 });
  }
}

/** A one-word description of a decoded value's Python type. */
export function pythonType(v: PickleValue): string {
  return describeType(v);
}
