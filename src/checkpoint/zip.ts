/**
 * A lazy zip reader for PyTorch's zip checkpoints: parses the central
 * directory (zip64 included) and reads entries by offset from a
 * {@linkcode ByteSource}, a range at a time.
 *
 * Why not a library: DESIGN.md records that fflate returns empty entries past
 * 4 GiB, and @zip.js/zip.js and unzipit read entries through whole-entry
 * Blob/stream readers with no API for "bytes [a, b) of a stored entry".
 * Tensor views need exactly that, and a multi-gigabyte checkpoint must not
 * be buffered. Stored entries (what torch.save writes) are read in place;
 * deflated ones (re-zipped files) are inflated with the platform's
 * DecompressionStream, bounded by their declared size.
 *
 * @module
 */

import * as zlib from "node:zlib";
import { CheckpointFormatError } from "./errors.ts";
import type { ByteSource } from "./source.ts";

/** One file in the archive. */
export interface ZipEntry {
  readonly name: string;
  /** 0 stored, 8 deflated. */
  readonly method: number;
  readonly crc32: number;
  readonly compressedSize: number;
  readonly size: number;
  /** Offset of the local file header. */
  readonly headerOffset: number;
}

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;

/** Largest central directory accepted (a checkpoint has a few thousand entries). */
const MAX_CENTRAL_DIRECTORY = 256 * 1024 * 1024;

/** Whether `head` starts like a zip archive. */
export function looksLikeZip(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 &&
    head[3] === 4;
}

/** An open zip archive; entry data are read on demand. */
export class ZipArchive {
  readonly entries: ReadonlyMap<string, ZipEntry>;
  readonly #src: ByteSource;
  readonly #dataOffsets = new Map<string, number>();

  private constructor(src: ByteSource, entries: Map<string, ZipEntry>) {
    this.#src = src;
    this.entries = entries;
  }

  /** Parse the central directory of `src`. */
  static async open(src: ByteSource): Promise<ZipArchive> {
    const size = src.size;
    if (size < 22) throw new CheckpointFormatError("zip archive too short for its directory");
    const tailLen = Math.min(size, 22 + 65535);
    const tail = await src.read(size - tailLen, tailLen);
    const tv = new DataView(tail.buffer);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (tv.getUint32(i, true) === EOCD_SIG && i + 22 + tv.getUint16(i + 20, true) === tailLen) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) {
      throw new CheckpointFormatError(
        "zip end-of-central-directory record not found (truncated or corrupted archive)",
      );
    }
    let count = tv.getUint16(eocd + 10, true);
    let cdSize = tv.getUint32(eocd + 12, true);
    let cdOffset = tv.getUint32(eocd + 16, true);
    const eocdAbs = size - tailLen + eocd;
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      if (eocdAbs < 20) throw new CheckpointFormatError("zip64 locator missing");
      const loc = new DataView((await src.read(eocdAbs - 20, 20)).buffer);
      if (loc.getUint32(0, true) !== ZIP64_LOCATOR_SIG) {
        throw new CheckpointFormatError("zip64 end-of-central-directory locator missing");
      }
      const z64Off = safe(loc.getBigUint64(8, true), "zip64 record offset");
      const z = new DataView((await src.read(z64Off, 56)).buffer);
      if (z.getUint32(0, true) !== ZIP64_EOCD_SIG) {
        throw new CheckpointFormatError(
          `zip64 end-of-central-directory record missing at byte ${z64Off}`,
        );
      }
      count = safe(z.getBigUint64(32, true), "zip64 entry count");
      cdSize = safe(z.getBigUint64(40, true), "zip64 directory size");
      cdOffset = safe(z.getBigUint64(48, true), "zip64 directory offset");
    }
    if (cdSize > MAX_CENTRAL_DIRECTORY || cdOffset + cdSize > size) {
      throw new CheckpointFormatError(
        `zip central directory [${cdOffset}, ${cdOffset + cdSize}) lies outside the file's ` +
          `${size} bytes`,
      );
    }
    if (count * 46 > cdSize) {
      throw new CheckpointFormatError(
        `zip directory claims ${count} entries in ${cdSize} bytes`,
      );
    }
    const cd = await src.read(cdOffset, cdSize);
    const entries = parseCentralDirectory(cd, count, size);
    return new ZipArchive(src, entries);
  }

  /** The entry called `name`, or undefined. */
  get(name: string): ZipEntry | undefined {
    return this.entries.get(name);
  }

  /** Offset of the entry's data, after checking its local header. */
  async #dataOffset(e: ZipEntry): Promise<number> {
    const known = this.#dataOffsets.get(e.name);
    if (known !== undefined) return known;
    const h = await this.#src.read(e.headerOffset, 30).catch(() => {
      throw new CheckpointFormatError(`zip entry "${e.name}": local header outside the file`);
    });
    const v = new DataView(h.buffer);
    if (v.getUint32(0, true) !== LOCAL_SIG) {
      throw new CheckpointFormatError(
        `zip entry "${e.name}": no local header at byte ${e.headerOffset}`,
      );
    }
    const nameLen = v.getUint16(26, true);
    const extraLen = v.getUint16(28, true);
    const nameBytes = await this.#src.read(e.headerOffset + 30, nameLen);
    if (new TextDecoder().decode(nameBytes) !== e.name) {
      throw new CheckpointFormatError(
        `zip entry "${e.name}": local header names a different file`,
      );
    }
    const start = e.headerOffset + 30 + nameLen + extraLen;
    if (start + e.compressedSize > this.#src.size) {
      throw new CheckpointFormatError(
        `zip entry "${e.name}": data [${start}, ${start + e.compressedSize}) run past the end ` +
          `of the file (${this.#src.size} bytes; truncated archive?)`,
      );
    }
    this.#dataOffsets.set(e.name, start);
    return start;
  }

  /**
   * Bytes [offset, offset + length) of a stored entry's content, or of a
   * deflated entry after inflating it. No CRC check (see {@linkcode readAll}).
   */
  async readRange(e: ZipEntry, offset: number, length: number): Promise<Uint8Array<ArrayBuffer>> {
    if (offset < 0 || length < 0 || offset + length > e.size) {
      throw new CheckpointFormatError(
        `zip entry "${e.name}": bytes [${offset}, ${offset + length}) outside its ${e.size} bytes`,
      );
    }
    if (e.method === 0) {
      const start = await this.#dataOffset(e);
      return await this.#src.read(start + offset, length);
    }
    const all = await this.readAll(e);
    return all.slice(offset, offset + length);
  }

  /** The whole entry, CRC-checked. */
  async readAll(e: ZipEntry): Promise<Uint8Array<ArrayBuffer>> {
    const start = await this.#dataOffset(e);
    const raw = await this.#src.read(start, e.compressedSize);
    const data = e.method === 0 ? raw : await inflate(raw, e);
    const crc = crc32(data);
    if (crc !== e.crc32) {
      throw new CheckpointFormatError(
        `zip entry "${e.name}": CRC-32 mismatch (corrupted data)`,
      );
    }
    return data;
  }

  /**
   * The whole entry in chunks of at most `chunkBytes`, CRC-checked once the
   * last chunk has been read (a mismatch throws at the end).
   */
  async *chunks(e: ZipEntry, chunkBytes: number): AsyncGenerator<Uint8Array<ArrayBuffer>> {
    if (e.method !== 0) {
      yield await this.readAll(e);
      return;
    }
    const start = await this.#dataOffset(e);
    let crc = 0;
    for (let off = 0; off < e.size; off += chunkBytes) {
      const n = Math.min(chunkBytes, e.size - off);
      const chunk = await this.#src.read(start + off, n);
      crc = crc32(chunk, crc);
      if (off + n >= e.size && crc !== e.crc32) {
        throw new CheckpointFormatError(`zip entry "${e.name}": CRC-32 mismatch (corrupted data)`);
      }
      yield chunk;
    }
    if (e.size === 0 && crc !== e.crc32) {
      throw new CheckpointFormatError(`zip entry "${e.name}": CRC-32 mismatch (corrupted data)`);
    }
  }
}

function safe(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CheckpointFormatError(`${what} ${v} is out of range`);
  }
  return Number(v);
}

function parseCentralDirectory(
  cd: Uint8Array<ArrayBuffer>,
  count: number,
  fileSize: number,
): Map<string, ZipEntry> {
  const v = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
  const entries = new Map<string, ZipEntry>();
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || v.getUint32(p, true) !== CENTRAL_SIG) {
      throw new CheckpointFormatError(`zip central directory entry ${i} is corrupted`);
    }
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    const crc = v.getUint32(p + 16, true);
    let csize = v.getUint32(p + 20, true);
    let usize = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    let offset = v.getUint32(p + 42, true);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cd.length) throw new CheckpointFormatError(`zip directory entry ${i} is truncated`);
    let name: string;
    try {
      name = decoder.decode(cd.subarray(p + 46, p + 46 + nameLen));
    } catch {
      throw new CheckpointFormatError(`zip directory entry ${i} has an invalid name`);
    }
    // zip64 extended information: the 0xffffffff fields, in order.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = v.getUint16(e, true);
      const len = v.getUint16(e + 2, true);
      if (e + 4 + len > extraEnd) break;
      if (id === 0x0001) {
        let q = e + 4;
        const next = (what: string): number => {
          if (q + 8 > e + 4 + len) {
            throw new CheckpointFormatError(`zip entry "${name}": zip64 field ${what} missing`);
          }
          const x = safe(v.getBigUint64(q, true), `zip entry "${name}" ${what}`);
          q += 8;
          return x;
        };
        if (usize === 0xffffffff) usize = next("size");
        if (csize === 0xffffffff) csize = next("compressed size");
        if (offset === 0xffffffff) offset = next("offset");
      }
      e += 4 + len;
    }
    if (flags & 1) throw new CheckpointFormatError(`zip entry "${name}" is encrypted`);
    if (method !== 0 && method !== 8) {
      throw new CheckpointFormatError(
        `zip entry "${name}" uses compression method ${method} (only stored and deflate are supported)`,
      );
    }
    if (method === 0 && csize !== usize) {
      throw new CheckpointFormatError(
        `zip entry "${name}": stored entry with compressed size ${csize} != size ${usize}`,
      );
    }
    if (offset + 30 + csize > fileSize) {
      throw new CheckpointFormatError(
        `zip entry "${name}" at byte ${offset} (${csize} bytes) runs past the end of the file ` +
          `(${fileSize} bytes; truncated archive?)`,
      );
    }
    if (entries.has(name)) throw new CheckpointFormatError(`zip entry "${name}" appears twice`);
    entries.set(name, {
      name,
      method,
      crc32: crc,
      compressedSize: csize,
      size: usize,
      headerOffset: offset,
    });
    p = end;
  }
  return entries;
}

async function inflate(
  raw: Uint8Array<ArrayBuffer>,
  e: ZipEntry,
): Promise<Uint8Array<ArrayBuffer>> {
  const out = new Uint8Array(e.size);
  let got = 0;
  try {
    const stream = new Blob([raw]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
    for await (const chunk of stream) {
      if (got + chunk.length > e.size) {
        throw new CheckpointFormatError(
          `zip entry "${e.name}" inflates to more than its declared ${e.size} bytes`,
        );
      }
      out.set(chunk, got);
      got += chunk.length;
    }
  } catch (err) {
    if (err instanceof CheckpointFormatError) throw err;
    throw new CheckpointFormatError(`zip entry "${e.name}": corrupted deflate data`);
  }
  if (got !== e.size) {
    throw new CheckpointFormatError(
      `zip entry "${e.name}" inflates to ${got} bytes, not its declared ${e.size}`,
    );
  }
  return out;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** Node's native CRC-32 (70x faster than a JS table), when the runtime has it. */
const nativeCrc32 = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;

/**
 * CRC-32 (the zip polynomial) of `bytes`, continuing from `previous` (the
 * CRC of the bytes before them; 0 to start).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { crc32 } from "./zip.ts";
 * const b = new TextEncoder().encode("123456789");
 * assert.ok(crc32(b) === 0xcbf43926);
 * assert.ok(crc32(b.subarray(4), crc32(b.subarray(0, 4))) === 0xcbf43926);
 * ```
 */
export function crc32(bytes: Uint8Array, previous = 0): number {
  if (nativeCrc32) return nativeCrc32(bytes, previous) >>> 0;
  let c = (previous ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
