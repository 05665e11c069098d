/**
 * Images for `tost inspect --image`: PNG in every colour type and bit depth
 * fast-png writes, JPEG through jpeg-js, bilinear resizing against values
 * worked out by hand, the target size rule and both normalisations.
 */

import assert from "node:assert/strict";
import { encode as encodePng } from "fast-png";
import jpeg from "jpeg-js";
import {
  decodeImage,
  imageKind,
  IMAGENET_MEAN,
  IMAGENET_STD,
  inputToRgba,
  isLight,
  resizeBilinear,
  targetSize,
  toModelInput,
} from "../../src/inspect/image.ts";
import { MNIST_MEAN, MNIST_STD } from "../../src/data/mnist.ts";

Deno.test("image: PNG grey, grey+alpha, RGB, RGBA, 16-bit and palette decode to RGBA on white", () => {
  const grey = decodeImage(
    encodePng({ width: 2, height: 1, data: new Uint8Array([0, 200]), channels: 1 }),
  );
  assert.deepEqual([...grey.data], [0, 0, 0, 255, 200, 200, 200, 255]);
  const ga = decodeImage(
    encodePng({ width: 1, height: 1, data: new Uint8Array([0, 0]), channels: 2 }),
  );
  assert.deepEqual([...ga.data], [255, 255, 255, 255], "transparent black shows as white");
  const rgb = decodeImage(
    encodePng({ width: 1, height: 1, data: new Uint8Array([1, 2, 3]), channels: 3 }),
  );
  assert.deepEqual([...rgb.data], [1, 2, 3, 255]);
  const half = decodeImage(
    encodePng({ width: 1, height: 1, data: new Uint8Array([0, 0, 0, 128]), channels: 4 }),
  );
  assert.deepEqual([...half.data], [127, 127, 127, 255], "half-transparent black on white");
  const deep = decodeImage(
    encodePng({
      width: 1,
      height: 1,
      data: new Uint16Array([65535, 0, 32768]),
      channels: 3,
      depth: 16,
    }),
  );
  assert.deepEqual([...deep.data], [255, 0, 128, 255]);
  const indexed = decodeImage(
    encodePng({
      width: 2,
      height: 1,
      data: new Uint8Array([1, 0]),
      channels: 1,
      depth: 8,
      palette: [[10, 20, 30], [40, 50, 60]],
    }),
  );
  assert.deepEqual([...indexed.data], [40, 50, 60, 255, 10, 20, 30, 255]);
});

Deno.test("image: JPEG decodes; other bytes, corrupt files and huge images are refused", () => {
  const raw = { width: 8, height: 8, data: new Uint8Array(8 * 8 * 4).fill(200) };
  const bytes = jpeg.encode(raw, 95).data;
  assert.equal(imageKind(bytes), "jpeg");
  const img = decodeImage(bytes);
  assert.equal(img.width, 8);
  assert.ok(Math.abs(img.data[0] - 200) <= 2);
  assert.throws(() => decodeImage(new TextEncoder().encode("hello")), SyntaxError);
  assert.throws(() => decodeImage(bytes.slice(0, 40)), SyntaxError);
  const png = encodePng({ width: 1, height: 1, data: new Uint8Array([1]), channels: 1 });
  assert.throws(() => decodeImage(png.slice(0, png.length - 20)), SyntaxError);
  const wide = encodePng({ width: 9000, height: 1, data: new Uint8Array(9000), channels: 1 });
  assert.throws(() => decodeImage(wide), /at most 8192 a side/);
});

Deno.test("image: bilinear resizing with aligned pixel centres, box halving when shrinking", () => {
  const row = (vals: number[]) => ({
    width: vals.length,
    height: 1,
    data: Uint8Array.from(vals.flatMap((v) => [v, v, v, 255])),
  });
  // 2 → 4: centres at −0.25, 0.25, 0.75, 1.25 of the source, clamped at the edges.
  assert.deepEqual(
    [...resizeBilinear(row([0, 100]), 4, 1).data].filter((_, i) => i % 4 === 0),
    [0, 25, 75, 100],
  );
  // Same size: unchanged.
  const same = row([5, 6, 7]);
  assert.equal(resizeBilinear(same, 3, 1), same);
  // 4×2 → 2×1: one box halving (averages of 2×2 blocks).
  const block = {
    width: 4,
    height: 2,
    data: Uint8Array.from([0, 0, 100, 100, 0, 0, 100, 100].flatMap((v) => [v, v, v, 255])),
  };
  assert.deepEqual([...resizeBilinear(block, 2, 1).data].filter((_, i) => i % 4 === 0), [0, 100]);
  assert.throws(() => resizeBilinear(same, 0, 1), RangeError);
});

Deno.test("image: the shorter side becomes img_size; HxW and native sizes", () => {
  assert.deepEqual(targetSize(480, 640, 224), [224, 299]);
  assert.deepEqual(targetSize(100, 50, 28), [56, 28]);
  assert.deepEqual(targetSize(10, 20, "native"), [10, 20]);
  assert.deepEqual(targetSize(10, 20, [3, 4]), [3, 4]);
});

Deno.test("image: MNIST normalisation (grey, inverted on light paper) and ImageNet's, and back", () => {
  const img = { width: 2, height: 1, data: new Uint8Array([255, 255, 255, 255, 255, 0, 0, 255]) };
  assert.equal(isLight(img), true);
  const x = toModelInput(img, 3, "mnist", { invert: true });
  const red = 0.299;
  const expect = [(0 - MNIST_MEAN) / MNIST_STD, (1 - red - MNIST_MEAN) / MNIST_STD];
  for (let c = 0; c < 3; c++) {
    assert.ok(Math.abs(x[2 * c] - expect[0]) < 1e-6);
    assert.ok(Math.abs(x[2 * c + 1] - expect[1]) < 1e-5);
  }
  const y = toModelInput(img, 3, "imagenet");
  assert.ok(Math.abs(y[0] - (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]) < 1e-6);
  assert.ok(Math.abs(y[2 + 1] - (0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]) < 1e-6); // G of pixel 1
  assert.throws(() => toModelInput(img, 1, "imagenet"), /3-channel/);
  // What the model sees, back as pixels.
  assert.deepEqual([...inputToRgba(y, 3, 1, 2, "imagenet").data], [...img.data]);
  assert.deepEqual([...inputToRgba(x, 3, 1, 2, "mnist").data].slice(0, 4), [0, 0, 0, 255]);
});
