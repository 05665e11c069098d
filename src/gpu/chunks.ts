/**
 * Splitting row-major tensors into row ranges that each fit one storage
 * binding. Software WebGPU allows 128 MiB per binding, so a 262k×384 f32
 * activation (400 MB) must be processed in pieces: an op binds each piece
 * with a {@linkcode BufferRange} and passes the piece's first row as a
 * uniform.
 *
 * @module
 */

/** A contiguous range of rows and its byte range. */
export interface RowChunk {
  /** First row. */
  start: number;
  /** Number of rows. */
  count: number;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Row ranges of at most `maxBytes` each whose byte offsets
 * (`start * rowBytes`) are multiples of `alignment`.
 *
 * @throws {RangeError} when one aligned group of rows exceeds `maxBytes`.
 * @example
 * ```ts
 * import { rowChunks } from "./chunks.ts";
 * const chunks = rowChunks(10, 256, 1024, 256); // 4 rows of 256 bytes per binding
 * if (chunks.length !== 3 || chunks[1].start !== 4) throw new Error("unexpected");
 * ```
 */
export function rowChunks(
  rows: number,
  rowBytes: number,
  maxBytes: number,
  alignment: number,
): RowChunk[] {
  if (rows === 0) return [];
  if (rows * rowBytes <= maxBytes) return [{ start: 0, count: rows }];
  const step = alignment / gcd(rowBytes, alignment); // rows per aligned group
  const perChunk = Math.floor(maxBytes / rowBytes / step) * step;
  if (perChunk < 1) {
    throw new RangeError(
      `A row group of ${step * rowBytes} bytes does not fit one ${maxBytes}-byte binding`,
    );
  }
  const out: RowChunk[] = [];
  for (let start = 0; start < rows; start += perChunk) {
    out.push({ start, count: Math.min(perChunk, rows - start) });
  }
  return out;
}
