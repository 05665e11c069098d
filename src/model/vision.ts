/**
 * The vision models on the GPU: ToST (`tost_cab_*`, TSSA blocks) and its ViT
 * twin (`vit_cab_*`, softmax attention), from one config.
 *
 *     patch_embed   3 (patch 8) or 4 (patch 16) × [conv3x3/2 + BN], GELU between
 *                   (BN folded into the convolutions at load time)
 *     + Fourier positional encoding of the Hp × Wp grid (computed on the host
 *       in float64 once per grid size, then cached on the GPU)
 *     depth × block: x += γ1·attn(LN1(x)); x += γ2·MLP(LN2(x))
 *     prepend the class token
 *     cls_attn_layers × class-attention block (as the reference, see below)
 *     LN(class token) → head
 *
 * The class-attention block follows the reference (XCiT) literally: the
 * patch tokens take `x + γ1·LN1(x)`, with `tokens_norm` every token is then
 * normalised by LN2, the MLP runs on the class token only, and the last
 * residual doubles the patch tokens.
 *
 * {@linkcode encodeVision} records the whole forward into the runtime's
 * current batch (one submission); {@linkcode visionForward} uploads images,
 * records, and reads back only the logits (plus, on request, the
 * activations the fixtures store).
 *
 * Shapes: B images, D = embed_dim, NH heads, N = Hp·Wp tokens, M = N + 1.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { VisionConfig } from "./config.ts";
import { fourierEncoding } from "./fourier.ts";
import { mlpHidden, stemWidths } from "./names.ts";
import { conv3x3s2, convOutSize, foldBatchNorm, paddedChannels } from "../ops/conv2d.ts";
import { copyRows } from "../ops/copy_rows.ts";
import { addRows, residual, scaleChannels } from "../ops/elementwise.ts";
import { gelu } from "../ops/gelu.ts";
import { layerNorm } from "../ops/layer_norm.ts";
import { linear } from "../ops/linear.ts";
import { tssa } from "../ops/tssa.ts";
import { softmaxAttention } from "../ops/attention.ts";
import { flashAttention } from "../ops/flash_attention.ts";
import { classAttention } from "../ops/class_attention.ts";
import { ParamUploader, readForward, Scratch } from "./_params.ts";
import type {
  ActivationHook,
  ForwardOutput,
  LinearParams,
  NamedTensors,
  NormParams,
} from "./_params.ts";

/** BatchNorm epsilon of the stem (PyTorch's default). */
const BN_EPS = 1e-5;

/** Softmax attention materialises `[B, NH, N, N]` scores up to this size, then uses flash attention. */
const MAX_SCORE_BYTES = 64 * 1024 * 1024;

/** One stem stage: convolution with BatchNorm folded in. */
export interface StemStage {
  /** `[Cin·9, Cout4]` (see {@linkcode paddedChannels}) */
  weight: Tensor;
  /** `[Cout]` */
  bias: Tensor;
}

/** The attention of a block: TSSA (ToST) or multi-head softmax (ViT). */
export type VisionAttentionParams =
  | { kind: "tssa"; qkv: LinearParams; temp: Tensor; out: LinearParams }
  | { kind: "softmax"; qkv: LinearParams; proj: LinearParams };

/** timm's `Mlp`: fc1 → GELU → fc2. */
export interface MlpParams {
  fc1: LinearParams;
  fc2: LinearParams;
}

/** One block `x += γ1·attn(LN1(x)); x += γ2·MLP(LN2(x))`. */
export interface VisionBlockParams {
  norm1: NormParams;
  attn: VisionAttentionParams;
  gamma1: Tensor;
  norm2: NormParams;
  mlp: MlpParams;
  gamma2: Tensor;
}

/** One class-attention block. */
export interface ClassBlockParams {
  norm1: NormParams;
  /** `[3D, D]` */
  qkv: LinearParams;
  proj: LinearParams;
  gamma1: Tensor;
  norm2: NormParams;
  mlp: MlpParams;
  gamma2: Tensor;
}

/** A vision model's parameters on the GPU, uploaded once. */
export interface VisionParams {
  config: VisionConfig;
  stem: StemStage[];
  /** `pos_embeder.token_projection` kept on the host: `[D, 2·hidden]` and `[D]`. */
  posProjection: { weight: Float64Array; bias: Float64Array };
  /** Positional encodings `[Hp·Wp, D]` already computed, by `"HpxWp"`. */
  posCache: Map<string, Tensor>;
  blocks: VisionBlockParams[];
  /** `[D]` */
  clsToken: Tensor;
  clsBlocks: ClassBlockParams[];
  norm: NormParams;
  head: LinearParams;
  /** Every tensor above, for {@linkcode destroyVisionParams}. */
  tensors: Tensor[];
}

/**
 * Check a vision config's sizes.
 *
 * @throws {RangeError} for sizes the model cannot have
 */
export function checkVisionConfig(cfg: VisionConfig): void {
  const D = cfg.embed_dim;
  const ints = {
    embed_dim: D,
    num_heads: cfg.num_heads,
    depth: cfg.depth,
    num_classes: cfg.num_classes,
  };
  for (const [k, v] of Object.entries(ints)) {
    if (!Number.isInteger(v) || v < (k === "depth" ? 0 : 1)) {
      throw new RangeError(`Vision config: ${k} must be a positive integer, got ${v}`);
    }
  }
  if (D % cfg.num_heads !== 0) {
    throw new RangeError(
      `Vision config: embed_dim ${D} is not a multiple of num_heads ${cfg.num_heads}`,
    );
  }
  if (cfg.attention !== "tssa" && cfg.attention !== "softmax") {
    throw new RangeError(
      `Vision config: unsupported attention "${cfg.attention}" (tssa or softmax)`,
    );
  }
  stemWidths(cfg.patch_size, D);
}

/**
 * Upload a vision model's tensors (by `state_dict` name) to the GPU, folding
 * the stem's BatchNorms into its convolutions.
 *
 * @throws {RangeError} for a missing tensor; {TypeError} for a misshapen one
 */
export function uploadVisionParams(
  gpu: Gpu,
  cfg: VisionConfig,
  tensors: NamedTensors,
): VisionParams {
  checkVisionConfig(cfg);
  const up = new ParamUploader(gpu, tensors);
  try {
    const D = cfg.embed_dim;
    const hidden = mlpHidden(D, cfg.mlp_ratio);
    const stem: StemStage[] = [];
    let cin = cfg.in_chans;
    stemWidths(cfg.patch_size, D).forEach((cout, s) => {
      const p = `patch_embed.proj.${2 * s}`;
      const bn = (n: string) => up.host(`${p}.1.${n}`, [cout]);
      const folded = foldBatchNorm(up.host(`${p}.0.weight`, [cout, cin, 3, 3]), cout, cin, {
        weight: bn("weight"),
        bias: bn("bias"),
        mean: bn("running_mean"),
        variance: bn("running_var"),
      }, BN_EPS);
      stem.push({
        weight: up.upload(folded.weight, [cin * 9, paddedChannels(cout)], `${p}.folded.weight`),
        bias: up.upload(folded.bias, [cout], `${p}.folded.bias`),
      });
      cin = cout;
    });
    const F = 2 * cfg.pos_hidden_dim;
    const posProjection = {
      weight: Float64Array.from(up.host("pos_embeder.token_projection.weight", [D, F, 1, 1])),
      bias: Float64Array.from(up.host("pos_embeder.token_projection.bias", [D])),
    };
    const mlp = (p: string): MlpParams => ({
      fc1: up.linear(`${p}.fc1`, hidden, D, true),
      fc2: up.linear(`${p}.fc2`, D, hidden, true),
    });
    const blocks: VisionBlockParams[] = [];
    for (let i = 0; i < cfg.depth; i++) {
      const p = `blocks.${i}`;
      const attn: VisionAttentionParams = cfg.attention === "tssa"
        ? {
          kind: "tssa",
          qkv: up.linear(`${p}.attn.qkv`, D, D, cfg.qkv_bias),
          temp: up.param(`${p}.attn.temp`, [cfg.num_heads, 1]),
          out: up.linear(`${p}.attn.to_out.0`, D, D, true),
        }
        : {
          kind: "softmax",
          qkv: up.linear(`${p}.attn.qkv`, 3 * D, D, cfg.qkv_bias),
          proj: up.linear(`${p}.attn.proj`, D, D, true),
        };
      blocks.push({
        norm1: up.norm(`${p}.norm1`, D, true),
        attn,
        gamma1: up.param(`${p}.gamma1`, [D]),
        norm2: up.norm(`${p}.norm2`, D, true),
        mlp: mlp(`${p}.mlp`),
        gamma2: up.param(`${p}.gamma2`, [D]),
      });
    }
    const clsBlocks: ClassBlockParams[] = [];
    for (let i = 0; i < cfg.cls_attn_layers; i++) {
      const p = `cls_attn_blocks.${i}`;
      clsBlocks.push({
        norm1: up.norm(`${p}.norm1`, D, true),
        qkv: up.linear(`${p}.attn.qkv`, 3 * D, D, cfg.qkv_bias),
        proj: up.linear(`${p}.attn.proj`, D, D, true),
        gamma1: up.param(`${p}.gamma1`, [D]),
        norm2: up.norm(`${p}.norm2`, D, true),
        mlp: mlp(`${p}.mlp`),
        gamma2: up.param(`${p}.gamma2`, [D]),
      });
    }
    const params: VisionParams = {
      config: cfg,
      stem,
      posProjection,
      posCache: new Map(),
      blocks,
      clsToken: up.upload(up.host("cls_token", [1, 1, D]), [D], "cls_token"),
      clsBlocks,
      norm: up.norm("norm", D, true),
      head: up.linear("head", cfg.num_classes, D, true),
      tensors: up.uploaded,
    };
    return params;
  } catch (err) {
    up.destroy();
    throw err;
  }
}

/** Free a vision model's GPU tensors (cached positional encodings included). */
export function destroyVisionParams(params: VisionParams): void {
  for (const t of params.tensors) t.destroy();
  for (const t of params.posCache.values()) t.destroy();
  params.posCache.clear();
}

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

function positionalEncoding(gpu: Gpu, params: VisionParams, Hp: number, Wp: number): Tensor {
  const key = `${Hp}x${Wp}`;
  let pe = params.posCache.get(key);
  if (!pe) {
    const { weight, bias } = params.posProjection;
    const values = fourierEncoding(Hp, Wp, weight, bias, { hidden: params.config.pos_hidden_dim });
    pe = gpu.upload(Float32Array.from(values), [Hp * Wp, params.config.embed_dim], `pos.${key}`);
    params.posCache.set(key, pe);
  }
  return pe;
}

/** `x`'s shape with the last dimension replaced by `n`. */
function withLast(x: Tensor, n: number): number[] {
  return [...x.shape.slice(0, -1), n];
}

async function mlpForward(gpu: Gpu, s: Scratch, p: MlpParams, x: Tensor): Promise<Tensor> {
  const hidden = p.fc1.weight.shape[0];
  const h = await linear(
    gpu,
    x,
    p.fc1.weight,
    p.fc1.bias,
    s.empty(gpu, withLast(x, hidden), "fc1"),
  );
  const a = await gelu(gpu, h, s.empty(gpu, h.shape, "gelu"));
  s.recycle(h);
  const out = s.empty(gpu, withLast(x, p.fc2.weight.shape[0]), "fc2");
  await linear(gpu, a, p.fc2.weight, p.fc2.bias, out);
  s.recycle(a);
  return out;
}

async function attentionForward(
  gpu: Gpu,
  s: Scratch,
  cfg: VisionConfig,
  p: VisionAttentionParams,
  x: Tensor,
): Promise<Tensor> {
  const NH = cfg.num_heads;
  const D = cfg.embed_dim;
  const qkvOut = p.kind === "tssa" ? D : 3 * D;
  const w = await linear(
    gpu,
    x,
    p.qkv.weight,
    p.qkv.bias,
    s.empty(gpu, withLast(x, qkvOut), "qkv"),
  );
  let y: Tensor;
  if (p.kind === "tssa") {
    y = s.keep(await tssa(gpu, w, p.temp, NH));
  } else {
    const [B, N] = x.shape;
    const attend = B * NH * N * N * 4 > MAX_SCORE_BYTES ? flashAttention : softmaxAttention;
    y = s.keep(await attend(gpu, w, NH));
  }
  s.recycle(w);
  const proj = p.kind === "tssa" ? p.out : p.proj;
  const out = await linear(
    gpu,
    y,
    proj.weight,
    proj.bias,
    s.empty(gpu, withLast(x, D), "attn.out"),
  );
  s.recycle(y);
  return out;
}

/** One block over `x` `[B, N, D]`, in place. */
async function blockForward(
  gpu: Gpu,
  s: Scratch,
  cfg: VisionConfig,
  p: VisionBlockParams,
  x: Tensor,
): Promise<void> {
  const eps = cfg.norm_eps;
  const h = await layerNorm(
    gpu,
    x,
    p.norm1.weight,
    p.norm1.bias,
    eps,
    s.empty(gpu, x.shape, "norm1"),
  );
  const a = await attentionForward(gpu, s, cfg, p.attn, h);
  s.recycle(h);
  await residual(gpu, x, a, p.gamma1);
  s.recycle(a);
  const h2 = await layerNorm(
    gpu,
    x,
    p.norm2.weight,
    p.norm2.bias,
    eps,
    s.empty(gpu, x.shape, "norm2"),
  );
  const m = await mlpForward(gpu, s, p.mlp, h2);
  s.recycle(h2);
  await residual(gpu, x, m, p.gamma2);
  s.recycle(m);
}

/** Row `row` of every batch of `x` `[B, M, D]` as a new `[B, 1, D]` (or `[B, D]` when `flat`). */
async function pickRow(
  gpu: Gpu,
  s: Scratch,
  x: Tensor,
  row: number,
  flat = false,
): Promise<Tensor> {
  const [B, M, D] = x.shape;
  const out = s.keep(gpu.empty(flat ? [B, D] : [B, 1, D], "f32", "row"));
  await copyRows(gpu, x, out, {
    batches: B,
    rows: 1,
    cols: D,
    srcBatchRows: M,
    srcRow0: row,
    dstBatchRows: 1,
  });
  return out;
}

/** Write `src` `[B, 1, D]` into row `row` of every batch of `dst` `[B, M, D]`. */
async function putRow(gpu: Gpu, src: Tensor, dst: Tensor, row: number): Promise<void> {
  const [B, M, D] = dst.shape;
  await copyRows(gpu, src, dst, {
    batches: B,
    rows: 1,
    cols: D,
    srcBatchRows: 1,
    dstBatchRows: M,
    dstRow0: row,
  });
}

/** One class-attention block over `x` `[B, M, D]`; returns the new tokens. */
async function classBlockForward(
  gpu: Gpu,
  s: Scratch,
  cfg: VisionConfig,
  p: ClassBlockParams,
  x: Tensor,
): Promise<Tensor> {
  const eps = cfg.norm_eps;
  // x += γ1·[proj(attn_cls(LN1(x))); LN1(x)[1:]]
  const xn = s.keep(await layerNorm(gpu, x, p.norm1.weight, p.norm1.bias, eps));
  const qkv = s.keep(await linear(gpu, xn, p.qkv.weight, p.qkv.bias));
  const cls = s.keep(await classAttention(gpu, qkv, cfg.num_heads));
  const clsOut = s.keep(await linear(gpu, cls, p.proj.weight, p.proj.bias));
  await putRow(gpu, clsOut, xn, 0);
  await residual(gpu, x, xn, p.gamma1);
  // LN2 on every token (tokens_norm) or on the class token only.
  let xr: Tensor;
  if (cfg.tokens_norm) {
    xr = s.keep(await layerNorm(gpu, x, p.norm2.weight, p.norm2.bias, eps));
  } else {
    xr = s.keep(gpu.empty(x.shape, "f32", "cls_block.xr"));
    gpu.copy(x, xr);
    const c0 = await pickRow(gpu, s, x, 0);
    await putRow(gpu, s.keep(await layerNorm(gpu, c0, p.norm2.weight, p.norm2.bias, eps)), xr, 0);
  }
  // out = xr + [γ2·MLP(xr[0]); xr[1:]]
  const m = await mlpForward(gpu, s, p.mlp, await pickRow(gpu, s, xr, 0));
  await scaleChannels(gpu, m, p.gamma2);
  const out = s.keep(gpu.empty(x.shape, "f32", "cls_block.out"));
  gpu.copy(xr, out);
  await putRow(gpu, m, out, 0);
  await residual(gpu, out, xr, null);
  return out;
}

/** Options of {@linkcode encodeVision}. */
export interface EncodeVisionOptions {
  /** Called with `patch_embed`, `blocks.i`, `cls_attn_blocks.i` (fixture names) as they are recorded. */
  onActivation?: ActivationHook;
}

/**
 * Record a vision model's forward on `images` `[B, in_chans, H, W]` (NCHW)
 * into the runtime's current batch and return the logits tensor
 * `[B, num_classes]` (owned by the caller); nothing is submitted.
 *
 * @throws {TypeError} for images of the wrong shape
 */
export async function encodeVision(
  gpu: Gpu,
  params: VisionParams,
  images: Tensor,
  options: EncodeVisionOptions = {},
): Promise<Tensor> {
  const cfg = params.config;
  const D = cfg.embed_dim;
  if (images.shape.length !== 4 || images.shape[1] !== cfg.in_chans || images.dtype !== "f32") {
    throw new TypeError(
      `Vision model needs f32 images [B, ${cfg.in_chans}, H, W], got ${images.dtype} [${images.shape}]`,
    );
  }
  const [B, , H, W] = images.shape;
  const hook = options.onActivation;
  // Uploaded (once per grid size) before anything is recorded: an upload
  // mid-recording would split the forward into two submissions.
  const [Hp, Wp] = visionGrid(cfg, H, W);
  const pe = positionalEncoding(gpu, params, Hp, Wp);
  const s = new Scratch();
  try {
    // Stem: NCHW images → NHWC maps → tokens [B, N, D].
    let map = images;
    for (let i = 0; i < params.stem.length; i++) {
      const stage = params.stem[i];
      map = s.keep(await conv3x3s2(gpu, map, stage.weight, stage.bias, i === 0 ? "nchw" : "nhwc"));
      if (i < params.stem.length - 1) map = s.keep(await gelu(gpu, map));
    }
    const N = Hp * Wp; // map is [B, Hp, Wp, D]
    const x = s.keep(gpu.empty([B, N, D], "f32", "vision.x"));
    gpu.copy(map, x);
    hook?.("patch_embed", x);
    await addRows(gpu, x, pe);
    for (let i = 0; i < params.blocks.length; i++) {
      await blockForward(gpu, s, cfg, params.blocks[i], x);
      hook?.(`blocks.${i}`, x);
    }
    // Prepend the class token: t = cat([cls, x], dim=1) [B, M, D].
    const M = N + 1;
    let t = s.keep(gpu.empty([B, M, D], "f32", "vision.tokens"));
    await copyRows(gpu, params.clsToken, t, {
      batches: B,
      rows: 1,
      cols: D,
      srcBatchRows: 0,
      dstBatchRows: M,
    });
    await copyRows(gpu, x, t, {
      batches: B,
      rows: N,
      cols: D,
      srcBatchRows: N,
      dstBatchRows: M,
      dstRow0: 1,
    });
    for (let i = 0; i < params.clsBlocks.length; i++) {
      t = await classBlockForward(gpu, s, cfg, params.clsBlocks[i], t);
      hook?.(`cls_attn_blocks.${i}`, t);
    }
    const cls = await pickRow(gpu, s, t, 0, true); // [B, D]
    const normed = s.keep(
      await layerNorm(gpu, cls, params.norm.weight, params.norm.bias, cfg.norm_eps),
    );
    return await linear(gpu, normed, params.head.weight, params.head.bias); // [B, K]
  } finally {
    s.release();
  }
}

/** What {@linkcode visionForward} returns. */
export type VisionOutput = ForwardOutput; // logits `[B, num_classes]`

/**
 * Run a vision model on host images `[B, in_chans, H, W]` (NCHW): upload,
 * record the whole forward, submit once and read back the logits (and, with
 * `activations`, every fixture-named intermediate).
 *
 * @example
 * ```ts ignore
 * const { logits } = await visionForward(gpu, params, images, [2, 3, 32, 32]);
 * ```
 */
export async function visionForward(
  gpu: Gpu,
  params: VisionParams,
  images: Float32Array<ArrayBuffer>,
  shape: readonly [number, number, number, number],
  options: { activations?: boolean } = {},
): Promise<VisionOutput> {
  const x = gpu.upload(images, shape, "vision.images");
  try {
    return await readForward(
      gpu,
      options.activations ?? false,
      (onActivation) => encodeVision(gpu, params, x, { onActivation }),
    );
  } finally {
    x.destroy();
  }
}
