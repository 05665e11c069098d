/**
 * The vision models on the GPU — ToST (`tost_cab_*`, TSSA blocks) and its ViT
 * twin (`vit_cab_*`, softmax attention) — from one config: the forward that
 * inference, evaluation, training and `tost bench --model` all run, and the
 * training pass's backward.
 *
 *     patch_embed   stem (`stem.ts`): conv3x3/2 + BatchNorm stages, GELU between
 *     + Fourier positional encoding of the Hp × Wp grid (`stem.ts`)
 *     depth × block: x += γ1·attn(LN1(x)); x += γ2·MLP(LN2(x))     (`nn/block.ts`)
 *     prepend the class token
 *     cls_attn_layers × class-attention block (`class_block.ts`)
 *     LN(class token) → head
 *
 * Inference and evaluation use BatchNorm's running statistics (eval mode);
 * the training pass uses the batch statistics and updates the running ones
 * in the parameter store, as PyTorch's training mode does. Everything else
 * runs the same kernels in both.
 *
 * Gradient convention: parameter gradients accumulate (`+=`) into the
 * gradient store; activation gradients are assigned.
 *
 * Shapes: B images, D = embed_dim, NH heads, N = Hp·Wp tokens, M = N + 1, K classes.
 *
 * @module
 */

import type { Gpu, Tensor } from "../../gpu/runtime.ts";
import { withArena } from "../../gpu/arena.ts";
import type { Arena } from "../../gpu/arena.ts";
import { convOutSize } from "../../ops/conv2d.ts";
import { layerNorm } from "../../ops/layer_norm.ts";
import { layerNormBackward } from "../../ops/layer_norm_backward.ts";
import { linear } from "../../ops/linear.ts";
import { linearBackward } from "../../ops/linear_backward.ts";
import { accumulateRowSums } from "../../ops/column_sums.ts";
import { crossEntropyForwardBackward } from "../../ops/cross_entropy_backward.ts";
import { block, blockBackward } from "../../nn/block.ts";
import type { BlockSaves } from "../../nn/block.ts";
import type { VisionConfig } from "../config.ts";
import { stemWidths } from "../names.ts";
import type { ParamStore } from "../params.ts";
import { readForward } from "../_readback.ts";
import type { ActivationFilter, ActivationHook, ForwardOutput } from "../_readback.ts";
import { visionParams } from "./params.ts";
import type { VisionParams } from "./params.ts";
import { addPositions, addPositionsBackward, gridFeatures, stem, stemBackward } from "./stem.ts";
import type { StemSaves } from "./stem.ts";
import { classBlock, classBlockBackward } from "./class_block.ts";
import { copyRows, putRows, takeRows } from "../../ops/copy_rows.ts";
import type { ClassBlockSaves } from "./class_block.ts";

/** Token grid `[Hp, Wp]` the stem makes of an `H × W` image. */
export function visionGrid(cfg: VisionConfig, H: number, W: number): [number, number] {
  let h = H;
  let w = W;
  for (let s = 0; s < stemWidths(cfg.patch_size, cfg.embed_dim).length; s++) {
    h = convOutSize(h);
    w = convOutSize(w);
  }
  return [h, w];
}

/** What the training forward keeps for the backward. */
interface VisionSaves {
  stem: StemSaves;
  features: Tensor;
  blocks: BlockSaves[];
  clsBlocks: ClassBlockSaves[];
  /** `[B, 1, D]` the class token entering the final norm. */
  cls: Tensor;
  /** `[B, D]` the final norm's output (the head's input). */
  normed: Tensor;
}

/**
 * The forward on `images` `[B, in_chans, H, W]`: logits `[B, K]` and, in
 * training mode, the saves. Temporaries are freed as soon as they are read.
 */
async function forward(
  gpu: Gpu,
  store: ParamStore,
  images: Tensor,
  options: { training?: boolean; onActivation?: ActivationHook },
): Promise<{ logits: Tensor; saves: VisionSaves | null }> {
  const p = visionParams(store);
  const cfg = p.config;
  const D = cfg.embed_dim;
  if (images.shape.length !== 4 || images.shape[1] !== cfg.in_chans || images.dtype !== "f32") {
    throw new TypeError(
      `Vision model needs f32 images [B, ${cfg.in_chans}, H, W], got ${images.dtype} [${images.shape}]`,
    );
  }
  const training = options.training ?? false;
  const hook = options.onActivation;
  const [B, , H, W] = images.shape;
  const [Hp, Wp] = visionGrid(cfg, H, W);
  const N = Hp * Wp;
  const M = N + 1;
  const features = gridFeatures(gpu, store, Hp, Wp); // [N, F], cached
  const st = await stem(gpu, p, images, { training });
  const x0 = st.map.view([B, N, D]); // NHWC is the token layout
  hook?.("patch_embed", x0);
  await addPositions(gpu, p, x0, features);
  let x = x0;
  const blockSaves: BlockSaves[] = [];
  for (let i = 0; i < p.blocks.length; i++) {
    const r = await block(gpu, x, p.blocks[i], {
      eps: cfg.norm_eps,
      heads: cfg.num_heads,
      saves: training,
      // Π `[B, N, H]` of this forward (TSSA models only; `tost inspect`).
      onPi: hook && cfg.attention === "tssa"
        ? (pi) => hook(`blocks.${i}.attn.pi`, pi.view([B, N, cfg.num_heads]))
        : undefined,
    });
    if (r.saves) blockSaves.push(r.saves);
    x = r.y;
    hook?.(`blocks.${i}`, x);
  }
  // Prepend the class token: t = cat([cls, x], dim=1) [B, M, D].
  let t = gpu.empty([B, M, D], "f32", "vision.tokens");
  await copyRows(gpu, p.clsToken, t, {
    batches: B,
    rows: 1,
    cols: D,
    srcBatchRows: 0,
    dstBatchRows: M,
  });
  await putRows(gpu, x, t, 1);
  if (!training) st.map.destroy(); // x is the map, updated in place
  const clsSaves: ClassBlockSaves[] = [];
  for (let i = 0; i < p.clsBlocks.length; i++) {
    const r = await classBlock(gpu, cfg, p.clsBlocks[i], t, {
      saves: training,
      onQkv: hook && ((qkv) => hook(`cls_attn_blocks.${i}.attn.qkv`, qkv)),
    });
    if (r.saves) clsSaves.push(r.saves);
    else t.destroy();
    t = r.y;
    hook?.(`cls_attn_blocks.${i}`, t);
  }
  const cls = await takeRows(gpu, t, 0, 1); // [B, 1, D]
  const normed = await layerNorm(gpu, cls.view([B, D]), p.norm.weight, p.norm.bias, cfg.norm_eps);
  const logits = await linear(gpu, normed, p.head.weight, p.head.bias); // [B, K]
  if (!training) {
    for (const u of [t, cls, normed]) u.destroy();
    return { logits, saves: null };
  }
  return {
    logits,
    saves: { stem: st.saves!, features, blocks: blockSaves, clsBlocks: clsSaves, cls, normed },
  };
}

/**
 * Record a vision model's eval-mode forward on `images` `[B, in_chans, H, W]`
 * (NCHW) and return the logits `[B, num_classes]`; nothing is submitted.
 *
 * @throws {TypeError} for images of the wrong shape
 */
export async function encodeVision(
  gpu: Gpu,
  store: ParamStore,
  images: Tensor,
  options: { onActivation?: ActivationHook } = {},
): Promise<Tensor> {
  return (await forward(gpu, store, images, options)).logits;
}

/** What {@linkcode visionForward} returns. */
export type VisionOutput = ForwardOutput; // logits `[B, num_classes]`

/**
 * Run a vision model on host images `[B, in_chans, H, W]` (NCHW): upload,
 * record the whole forward, submit once and read back the logits (and, with
 * `activations`, every fixture-named intermediate, TSSA's Π `blocks.i.attn.pi`
 * `[B, N, NH]` and the class blocks' `cls_attn_blocks.i.attn.qkv`, or those a
 * filter accepts). Temporaries come from
 * `arena` (reset by the caller) or a fresh one.
 *
 * @example
 * ```ts ignore
 * const { logits } = await visionForward(gpu, store, images, [2, 3, 32, 32]);
 * ```
 */
export async function visionForward(
  gpu: Gpu,
  store: ParamStore,
  images: Float32Array<ArrayBuffer>,
  shape: readonly [number, number, number, number],
  options: { activations?: ActivationFilter; arena?: Arena } = {},
): Promise<VisionOutput> {
  return await withArena(gpu, options.arena, async () => {
    const x = gpu.upload(images, shape, "vision.images");
    return await readForward(
      gpu,
      options.activations ?? false,
      (onActivation) => encodeVision(gpu, store, x, { onActivation }),
    );
  });
}

/**
 * Record one training pass of a vision model inside the active arena: the
 * forward in training mode (BatchNorm with batch statistics; the running
 * statistics in `store` updated with PyTorch's momentum 0.1 and unbiased
 * variance), the mean cross-entropy of `labels`, and the backward, adding
 * every parameter's gradient into `grads` (a store from `ParamStore.zeros`).
 * `num_batches_tracked` is the caller's counter (one per call). Returns the
 * mean loss, a `[1]` tensor of the arena's pass.
 *
 * @param images f32 `[B, in_chans, H, W]`
 * @param labels `B` class indices in `[0, num_classes)` (host values or an i32 tensor)
 * @throws {Error} outside `Arena.use`
 * @throws {TypeError} or {RangeError} for mismatched shapes or labels
 * @example
 * ```ts ignore
 * const loss = await arena.use(() => visionForwardBackward(gpu, store, grads, images, [3, 7]));
 * ```
 */
export async function visionForwardBackward(
  gpu: Gpu,
  store: ParamStore,
  grads: ParamStore,
  images: Tensor,
  labels: Tensor | ArrayLike<number | bigint>,
): Promise<Tensor> {
  if (!gpu.inArena) {
    throw new Error("visionForwardBackward records into an arena: call it inside arena.use()");
  }
  const { logits, saves } = await forward(gpu, store, images, { training: true });
  const p = visionParams(store);
  const g = visionParams(grads);
  const { loss, dlogits } = await crossEntropyForwardBackward(gpu, { logits, targets: labels });
  await backward(gpu, p, g, saves!, dlogits);
  return loss;
}

/** The training pass's backward, from ∂logits `[B, K]`. */
async function backward(
  gpu: Gpu,
  p: VisionParams,
  g: VisionParams,
  s: VisionSaves,
  dlogits: Tensor,
): Promise<void> {
  const cfg = p.config;
  const D = cfg.embed_dim;
  const B = s.cls.shape[0];
  const [, Hp, Wp] = s.stem.stages[s.stem.stages.length - 1].conv.shape;
  const M = Hp * Wp + 1;
  const dNormed = await linearBackward(gpu, {
    dy: dlogits,
    x: s.normed,
    weight: p.head.weight,
    dWeight: g.head.weight,
    dBias: g.head.bias,
  });
  const dCls = await layerNormBackward(gpu, {
    dy: dNormed,
    x: s.cls.view([B, D]),
    weight: p.norm.weight,
    eps: cfg.norm_eps,
    dWeight: g.norm.weight,
    dBias: g.norm.bias,
  });
  let dt = gpu.empty([B, M, D], "f32", "vision.dtokens");
  await putRows(gpu, dCls.view([B, 1, D]), dt, 0);
  for (let i = s.clsBlocks.length - 1; i >= 0; i--) {
    const next = await classBlockBackward(gpu, dt, {
      cfg,
      params: p.clsBlocks[i],
      grads: g.clsBlocks[i],
      saves: s.clsBlocks[i],
    });
    dt.destroy();
    dt = next;
  }
  // The class token: ∂cls_token += Σ_b ∂t[b, 0]; the patch tokens' gradient goes on.
  const dClsToken = await takeRows(gpu, dt, 0, 1);
  const scratch: Tensor[] = [dClsToken];
  await accumulateRowSums(gpu, dClsToken, g.clsToken.view([D]), { rows: B, count: D }, scratch);
  for (const u of scratch) u.destroy();
  const dx = await takeRows(gpu, dt, 1, M - 1); // [B, N, D], the stream gradient
  for (let i = s.blocks.length - 1; i >= 0; i--) {
    await blockBackward(gpu, dx, {
      params: p.blocks[i],
      grads: g.blocks[i],
      saves: s.blocks[i],
      eps: cfg.norm_eps,
      heads: cfg.num_heads,
    });
  }
  await addPositionsBackward(gpu, dx, { params: p, grads: g, features: s.features });
  await stemBackward(gpu, dx.view([B, Hp, Wp, D]), { params: p, grads: g, saves: s.stem });
}
