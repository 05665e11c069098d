/**
 * What a file is, from its first bytes (never from its name): a safetensors
 * file, a PyTorch checkpoint (zip or legacy pickle), another zip, an image,
 * an MNIST IDX file, UTF-8 text, an empty file, or other binary data. Used to
 * pick the reader of a model file and to say plainly what a wrong file is.
 *
 * @module
 */

/** The kinds of file tost tells apart. */
export type FileKind =
  | "empty"
  | "safetensors"
  | "pytorch-zip"
  | "pytorch-legacy"
  | "zip"
  | "png"
  | "jpeg"
  | "gzip"
  | "idx"
  | "text"
  | "binary";

/** Bytes {@linkcode sniffFile} reads: enough for a zip entry name and a text check. */
export const SNIFF_BYTES = 4096;

function u32le(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}

function u16le(b: Uint8Array, at: number): number {
  return b[at] | (b[at + 1] << 8);
}

/** Whether the bytes are UTF-8 text (a sequence cut at the end of the sample is fine). */
function looksLikeText(head: Uint8Array): boolean {
  if (head.includes(0)) return false;
  // Drop up to 3 trailing bytes that may be a character cut by the sample's end.
  for (let cut = 0; cut <= 3 && cut < head.length; cut++) {
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(head.subarray(0, head.length - cut));
      return true;
    } catch { /* try a shorter prefix */ }
  }
  return false;
}

/**
 * The kind of a file from its first bytes and its size.
 *
 * @example
 * ```ts
 * import { sniffBytes } from "./sniff.ts";
 * sniffBytes(new TextEncoder().encode("hello\n"), 6); // "text"
 * sniffBytes(new Uint8Array([0x80, 0x02, 0x8a]), 3); // "pytorch-legacy"
 * ```
 */
export function sniffBytes(head: Uint8Array, size: number): FileKind {
  if (size === 0) return "empty";
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 && head[3] === 4) {
    // A zip's first local header: PyTorch's first entry is "<archive>/data.pkl".
    const nameLength = head.length >= 30 ? u16le(head, 26) : 0;
    const name = new TextDecoder().decode(head.subarray(30, 30 + nameLength));
    return name.endsWith("data.pkl") ? "pytorch-zip" : "zip";
  }
  if (head.length >= 2 && head[0] === 0x80 && head[1] >= 2 && head[1] <= 5) return "pytorch-legacy";
  if (head.length >= 9 && head[8] === 0x7b && u32le(head, 4) === 0) {
    const n = u32le(head, 0);
    if (n >= 2 && n <= size - 8) return "safetensors";
  }
  if (head.length >= 8 && head[0] === 0x89 && head[1] === 0x50 && head[2] === 0x4e) return "png";
  if (head.length >= 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return "jpeg";
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head[0] === 0 && head[1] === 0 && head[2] === 8 && head[3] >= 1) {
    return "idx";
  }
  return looksLikeText(head) ? "text" : "binary";
}

/** A short phrase naming a kind, for messages: "a PyTorch checkpoint (zip format)". */
export function describeKind(kind: FileKind): string {
  switch (kind) {
    case "empty":
      return "an empty file";
    case "safetensors":
      return "a safetensors file";
    case "pytorch-zip":
      return "a PyTorch checkpoint (zip format)";
    case "pytorch-legacy":
      return "a PyTorch checkpoint (legacy pickle format)";
    case "zip":
      return "a zip archive that is not a PyTorch checkpoint";
    case "png":
      return "a PNG image";
    case "jpeg":
      return "a JPEG image";
    case "gzip":
      return "a gzip-compressed file";
    case "idx":
      return "an IDX data file (MNIST's format)";
    case "text":
      return "a text file";
    case "binary":
      return "binary data of no format tost knows";
  }
}

/**
 * Read the first bytes of `path` and tell its kind. A missing file throws
 * `Deno.errors.NotFound`, a directory `Deno.errors.IsADirectory`.
 */
export async function sniffFile(path: string): Promise<FileKind> {
  const f = await Deno.open(path, { read: true });
  try {
    const info = await f.stat();
    if (info.isDirectory) throw new Deno.errors.IsADirectory(`"${path}" is a directory`);
    const buf = new Uint8Array(Math.min(SNIFF_BYTES, info.size));
    let got = 0;
    while (got < buf.length) {
      const n = await f.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    return sniffBytes(buf.subarray(0, got), info.size);
  } finally {
    f.close();
  }
}
