/**
 * Images as a vision model takes them, for `tost inspect` and the
 * `tost serve` page: decoding (PNG with `fast-png`, JPEG with `jpeg-js`, both
 * pure JavaScript from npm, so the same code runs in Deno, in a bundle and in
 * a browser), bilinear resizing, and the normalisation the model was trained
 * with:
 *
 * - `mnist`: models trained by `tost train --preset mnist`. The image becomes
 *   grey (ITU-R BT.601 luma), a light background is inverted (MNIST digits
 *   are white on black), and the grey value in [0, 1] is normalised with
 *   MNIST's mean and deviation and fed to every input channel — exactly what
 *   `src/data/mnist.ts` does for the digits the model was trained on.
 * - `imagenet`: every other model (converted ToST checkpoints were trained
 *   on ImageNet with timm's defaults): RGB in [0, 1] normalised per channel
 *   with ImageNet's mean and deviation.
 *
 * Sizes: the stem accepts any size (every stage rounds up, and the Fourier
 * position encoding is computed for whatever grid results), so the only
 * question is what the model was trained on. {@linkcode targetSize} scales
 * the image so that its shorter side is the model's `img_size` and keeps its
 * aspect ratio (a non-square image gives a non-square grid); a size can
 * also be given, or the image kept as it is.
 *
 * @module
 */

import { decode as decodePng } from "fast-png";
import jpeg from "jpeg-js";
import { MNIST_MEAN, MNIST_STD } from "../data/mnist.ts";

/** An 8-bit RGBA image, row-major. */
export interface RgbaImage {
  width: number;
  height: number;
  /** `height × width × 4` bytes. */
  data: Uint8Array | Uint8ClampedArray;
}

/** How pixel values become model inputs (see the module doc). */
export type Normalisation = "mnist" | "imagenet";

/** ImageNet's per-channel mean (RGB, in [0, 1]), timm's default. */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
/** ImageNet's per-channel standard deviation (RGB). */
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

/**
 * The normalisation a vision model was trained with, from its file's
 * metadata: `mnist` when `tost train` trained it on MNIST (its `training`
 * record says so), else `imagenet`.
 *
 * @example
 * ```ts
 * import { normalisationFor } from "./image.ts";
 * const meta = { training: JSON.stringify({ settings: { data: "mnist" } }) };
 * if (normalisationFor(meta) !== "mnist" || normalisationFor({}) !== "imagenet") throw new Error();
 * ```
 */
export function normalisationFor(metadata: Readonly<Record<string, string>>): Normalisation {
  try {
    const training = JSON.parse(metadata.training ?? "{}");
    if (training?.settings?.data === "mnist") return "mnist";
  } catch {
    // no readable training record: a converted checkpoint
  }
  return "imagenet";
}

/** Largest side accepted when decoding (a bigger image is almost surely a mistake). */
export const MAX_IMAGE_SIDE = 8192;

/** The kind of an image file from its first bytes: PNG, JPEG, or null. */
export function imageKind(bytes: Uint8Array): "png" | "jpeg" | null {
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length >= 8 && png.every((b, i) => bytes[i] === b)) return "png";
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    return "jpeg";
  }
  return null;
}

/**
 * Decode a PNG (any bit depth, grey, grey+alpha, RGB, RGBA or palette) or a
 * baseline/progressive JPEG into 8-bit RGBA. Transparent pixels are laid
 * on white, as a viewer shows them.
 *
 * @throws {SyntaxError} for bytes that are neither, or a corrupt file
 * @throws {RangeError} for an image over {@linkcode MAX_IMAGE_SIDE} pixels a side
 * @example
 * ```ts
 * import { encode } from "fast-png";
 * import { decodeImage } from "./image.ts";
 * const png = encode({ width: 1, height: 1, data: new Uint8Array([10, 20, 30]), channels: 3 });
 * const img = decodeImage(png);
 * if (img.data.join() !== "10,20,30,255") throw new Error("decode");
 * ```
 */
export function decodeImage(bytes: Uint8Array): RgbaImage {
  const kind = imageKind(bytes);
  if (kind === null) throw new SyntaxError("not a PNG or JPEG image (unknown first bytes)");
  let img: RgbaImage;
  try {
    img = kind === "png" ? pngToRgba(bytes) : jpegToRgba(bytes);
  } catch (err) {
    if (err instanceof RangeError) throw err;
    throw new SyntaxError(`corrupt ${kind.toUpperCase()} image: ${(err as Error).message}`);
  }
  if (img.width < 1 || img.height < 1) throw new SyntaxError("the image has no pixels");
  return img;
}

function checkSide(width: number, height: number): void {
  if (width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE) {
    throw new RangeError(
      `the image is ${width}×${height} pixels; at most ${MAX_IMAGE_SIDE} a side is accepted`,
    );
  }
}

function jpegToRgba(bytes: Uint8Array): RgbaImage {
  const img = jpeg.decode(bytes, {
    useTArray: true,
    formatAsRGBA: true,
    maxResolutionInMP: (MAX_IMAGE_SIDE * MAX_IMAGE_SIDE) / 1e6,
  });
  checkSide(img.width, img.height);
  return { width: img.width, height: img.height, data: img.data };
}

function pngToRgba(bytes: Uint8Array): RgbaImage {
  const png = decodePng(bytes);
  const { width, height } = png;
  checkSide(width, height);
  const n = width * height;
  const out = new Uint8Array(n * 4);
  const max = 2 ** png.depth - 1;
  let ch = png.channels;
  let src: ArrayLike<number> = png.data;
  if (png.palette) {
    // Indexed colour: expand through the palette (RGB or RGBA entries).
    const pal = png.palette;
    const expanded = new Uint8Array(n * 4);
    for (let i = 0; i < n; i++) {
      const e = pal[png.data[i]] ?? [0, 0, 0];
      expanded.set([e[0], e[1], e[2], e.length > 3 ? e[3] : 255], 4 * i);
    }
    src = expanded;
    ch = 4;
  }
  const scale = png.palette ? 1 : 255 / max;
  for (let i = 0; i < n; i++) {
    const at = i * ch;
    const v = (c: number) => Math.round(src[at + c] * scale);
    const [r, g, b] = ch >= 3 ? [v(0), v(1), v(2)] : [v(0), v(0), v(0)];
    const a = ch === 4 ? v(3) : ch === 2 ? v(1) : 255;
    // Lay transparent pixels on white.
    const over = (c: number) => Math.round((c * a + 255 * (255 - a)) / 255);
    out.set([over(r), over(g), over(b), 255], 4 * i);
  }
  return { width, height, data: out };
}

/**
 * Resize with bilinear interpolation, pixel centres aligned (PyTorch's
 * `interpolate(mode="bilinear", align_corners=False)` without antialiasing;
 * when shrinking by more than 2×, the image is first halved by box
 * filtering so no pixel is skipped).
 *
 * @throws {RangeError} for a target size under 1 pixel
 * @example
 * ```ts
 * import { resizeBilinear } from "./image.ts";
 * const img = { width: 2, height: 1, data: new Uint8Array([0, 0, 0, 255, 100, 100, 100, 255]) };
 * const out = resizeBilinear(img, 4, 1);
 * if (out.data[4] !== 25) throw new Error("bilinear"); // a quarter of the way
 * ```
 */
export function resizeBilinear(img: RgbaImage, width: number, height: number): RgbaImage {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width >= 1 && height >= 1)) {
    throw new RangeError(`cannot resize to ${width}×${height} pixels`);
  }
  let src = img;
  while (src.width >= 2 * width && src.height >= 2 * height) src = halve(src);
  if (src.width === width && src.height === height) return src;
  const out = new Uint8Array(width * height * 4);
  const sx = src.width / width;
  const sy = src.height / height;
  for (let y = 0; y < height; y++) {
    const fy = Math.max(0, (y + 0.5) * sy - 0.5);
    const y0 = Math.min(src.height - 1, Math.floor(fy));
    const y1 = Math.min(src.height - 1, y0 + 1);
    const wy = fy - y0;
    for (let x = 0; x < width; x++) {
      const fx = Math.max(0, (x + 0.5) * sx - 0.5);
      const x0 = Math.min(src.width - 1, Math.floor(fx));
      const x1 = Math.min(src.width - 1, x0 + 1);
      const wx = fx - x0;
      for (let c = 0; c < 4; c++) {
        const at = (yy: number, xx: number) => src.data[(yy * src.width + xx) * 4 + c];
        const top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx;
        const bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx;
        out[(y * width + x) * 4 + c] = Math.round(top * (1 - wy) + bottom * wy);
      }
    }
  }
  return { width, height, data: out };
}

/** Halve both sides by averaging 2×2 blocks (the last odd row/column is dropped). */
function halve(img: RgbaImage): RgbaImage {
  const width = Math.floor(img.width / 2);
  const height = Math.floor(img.height / 2);
  const out = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 4; c++) {
        const at = (yy: number, xx: number) => img.data[(yy * img.width + xx) * 4 + c];
        const s = at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) +
          at(2 * y + 1, 2 * x + 1);
        out[(y * width + x) * 4 + c] = Math.round(s / 4);
      }
    }
  }
  return { width, height, data: out };
}

/**
 * The size to feed: `"native"` keeps the image's; a number `s` scales the
 * shorter side to `s` keeping the aspect ratio; `[h, w]` is used as given.
 *
 * @example
 * ```ts
 * import { targetSize } from "./image.ts";
 * const [h, w] = targetSize(480, 640, 224);
 * if (h !== 224 || w !== 299) throw new Error("shorter side");
 * ```
 */
export function targetSize(
  height: number,
  width: number,
  size: number | "native" | readonly [number, number],
): [number, number] {
  if (size === "native") return [height, width];
  if (typeof size !== "number") return [size[0], size[1]];
  const scale = size / Math.min(height, width);
  return [
    Math.max(1, Math.round(height * scale)),
    Math.max(1, Math.round(width * scale)),
  ];
}

/** ITU-R BT.601 luma of a pixel, in [0, 1]. */
function grey(d: ArrayLike<number>, at: number): number {
  return (0.299 * d[at] + 0.587 * d[at + 1] + 0.114 * d[at + 2]) / 255;
}

/** Whether an image is light on average (a dark digit on paper, to invert for MNIST). */
export function isLight(img: RgbaImage): boolean {
  let sum = 0;
  const n = img.width * img.height;
  for (let i = 0; i < n; i++) sum += grey(img.data, 4 * i);
  return sum / n > 0.5;
}

/**
 * Model input `[channels, H, W]` (float32) from an image already at the
 * model's size, with the model's normalisation. For `mnist`, `invert`
 * turns a dark-on-light image into MNIST's light-on-dark.
 *
 * @throws {RangeError} for ImageNet normalisation of a model without 3 channels
 * @example
 * ```ts
 * import { toModelInput } from "./image.ts";
 * const white = { width: 1, height: 1, data: new Uint8Array([255, 255, 255, 255]) };
 * const x = toModelInput(white, 3, "mnist", { invert: false });
 * if (Math.abs(x[0] - (1 - 0.1307) / 0.3081) > 1e-6) throw new Error("mnist");
 * ```
 */
export function toModelInput(
  img: RgbaImage,
  channels: number,
  normalisation: Normalisation,
  options: { invert?: boolean } = {},
): Float32Array<ArrayBuffer> {
  const plane = img.width * img.height;
  const out = new Float32Array(channels * plane);
  if (normalisation === "mnist") {
    for (let p = 0; p < plane; p++) {
      const g = grey(img.data, 4 * p);
      const v = ((options.invert ? 1 - g : g) - MNIST_MEAN) / MNIST_STD;
      for (let c = 0; c < channels; c++) out[c * plane + p] = v;
    }
    return out;
  }
  if (channels !== 3) {
    throw new RangeError(
      `ImageNet normalisation needs a 3-channel model, this one takes ${channels} channels`,
    );
  }
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      out[c * plane + p] = (img.data[4 * p + c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
    }
  }
  return out;
}

/**
 * The RGBA picture of a normalised model input `[channels, H, W]` (what the
 * model sees): `mnist` inputs as grey, others un-normalised RGB.
 */
export function inputToRgba(
  input: ArrayLike<number>,
  channels: number,
  height: number,
  width: number,
  normalisation: Normalisation,
): RgbaImage {
  const plane = width * height;
  const out = new Uint8Array(plane * 4);
  const clamp = (v: number) => Math.max(0, Math.min(255, Math.round(v * 255)));
  for (let p = 0; p < plane; p++) {
    if (normalisation === "mnist" || channels !== 3) {
      const g = clamp(input[p] * MNIST_STD + MNIST_MEAN);
      out.set([g, g, g, 255], 4 * p);
    } else {
      for (let c = 0; c < 3; c++) {
        out[4 * p + c] = clamp(input[c * plane + p] * IMAGENET_STD[c] + IMAGENET_MEAN[c]);
      }
      out[4 * p + 3] = 255;
    }
  }
  return { width, height, data: out };
}

/** An image made ready for a vision model by {@linkcode prepareImage}. */
export interface PreparedImage {
  /** `[channels, height, width]`, normalised. */
  input: Float32Array<ArrayBuffer>;
  height: number;
  width: number;
  /** Whether a light image was inverted (MNIST normalisation). */
  inverted: boolean;
}

/**
 * Everything between a decoded image and a model's input, the same for
 * `tost inspect --image` and the `tost serve` page: the target size
 * ({@linkcode targetSize}), bilinear resizing, MNIST's inversion of light
 * images, the normalisation.
 *
 * @throws {RangeError} for ImageNet normalisation of a model without 3 channels
 */
export function prepareImage(
  img: RgbaImage,
  model: { channels: number; imgSize: number },
  normalisation: Normalisation,
  size: number | "native" | readonly [number, number] = model.imgSize,
): PreparedImage {
  const [height, width] = targetSize(img.height, img.width, size);
  const resized = resizeBilinear(img, width, height);
  const inverted = normalisation === "mnist" && isLight(resized);
  const input = toModelInput(resized, model.channels, normalisation, { invert: inverted });
  return { input, height, width, inverted };
}
