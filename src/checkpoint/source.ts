/**
 * Random-access reads from a file with `Deno.FsFile` (seek + read), so a
 * multi-gigabyte checkpoint is never held in memory.
 *
 * @module
 */

import { CheckpointFormatError } from "./errors.ts";

/** Byte ranges of one open file. */
export interface ByteSource {
  /** Total size in bytes. */
  readonly size: number;
  /** Exactly `length` bytes from `offset`; throws when they run past the end. */
  read(offset: number, length: number): Promise<Uint8Array<ArrayBuffer>>;
  /** Release the file. */
  close(): void;
}

/** A {@linkcode ByteSource} over a file on disk. */
export class FileSource implements ByteSource {
  readonly size: number;
  readonly #file: Deno.FsFile;

  private constructor(file: Deno.FsFile, size: number) {
    this.#file = file;
    this.size = size;
  }

  /** Open `path` for reading; a missing file throws `Deno.errors.NotFound`. */
  static async open(path: string): Promise<FileSource> {
    const file = await Deno.open(path, { read: true });
    try {
      const info = await file.stat();
      if (!info.isFile) throw new CheckpointFormatError("not a regular file");
      return new FileSource(file, info.size);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array<ArrayBuffer>> {
    checkRange(offset, length, this.size);
    const out = new Uint8Array(length);
    await this.#file.seek(offset, Deno.SeekMode.Start);
    let got = 0;
    while (got < length) {
      const n = await this.#file.read(out.subarray(got));
      if (n === null) {
        throw new CheckpointFormatError(`file ended at byte ${offset + got} while reading`);
      }
      got += n;
    }
    return out;
  }

  close(): void {
    try {
      this.#file.close();
    } catch { /* already closed */ }
  }
}

/** A {@linkcode ByteSource} over bytes in memory (for tests and small files). */
export class MemorySource implements ByteSource {
  readonly size: number;
  constructor(readonly bytes: Uint8Array) {
    this.size = bytes.length;
  }
  read(offset: number, length: number): Promise<Uint8Array<ArrayBuffer>> {
    checkRange(offset, length, this.size);
    return Promise.resolve(this.bytes.slice(offset, offset + length));
  }
  close(): void {}
}

function checkRange(offset: number, length: number, size: number): void {
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
    offset + length > size
  ) {
    throw new CheckpointFormatError(
      `bytes [${offset}, ${offset + length}) lie outside the file's ${size} bytes`,
    );
  }
}
