/**
 * The language models on the GPU: causal ToST (nanoGPT-style `GPT` with
 * `TSSA=True`) and plain GPT (`TSSA=False`, causal softmax), from one config,
 * with or without biases.
 *
 *     x = wte[idx] + wpe[pos]
 *     n_layer × block: x += γ1·attn(ln_1(x)); x += γ2·MLP(ln_2(x))
 *     logits = ln_f(x) · wteᵀ          (lm_head tied to wte)
 *
 * The layers are exported one by one ({@linkcode embedTokens},
 * {@linkcode encodeLanguageBlock}, {@linkcode encodeLanguageHead}) so that
 * generation can reuse them; {@linkcode encodeLanguage} records the whole
 * forward into the runtime's current batch, {@linkcode languageForward}
 * uploads ids, submits once and reads back only the logits (or, with
 * {@linkcode languageLoss}, only the per-token losses).
 *
 * Shapes: B sequences of T ≤ block_size tokens, C = n_embd, NH = n_head,
 * V = vocab_size.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import type { LanguageConfig } from "./config.ts";
import { checkTokenIds, embedding } from "../ops/embedding.ts";
import { residual } from "../ops/elementwise.ts";
import { gelu } from "../ops/gelu.ts";
import { layerNorm } from "../ops/layer_norm.ts";
import { linear } from "../ops/linear.ts";
import { causalTssa } from "../ops/causal_tssa.ts";
import { softmaxAttention } from "../ops/attention.ts";
import { flashAttention } from "../ops/flash_attention.ts";
import { checkTargets, crossEntropy } from "../ops/cross_entropy.ts";
import { ParamUploader, readForward, Scratch } from "./_params.ts";
import type {
  ActivationHook,
  ForwardOutput,
  LinearParams,
  NamedTensors,
  NormParams,
} from "./_params.ts";

/** Softmax attention materialises `[B, NH, T, T]` scores up to this size, then uses flash attention. */
const MAX_SCORE_BYTES = 64 * 1024 * 1024;

/** A block's attention: causal TSSA (ToST) or causal softmax (GPT). */
export type LanguageAttentionParams =
  | { kind: "tssa"; cAttn: LinearParams; temp: Tensor; denomBias: Tensor; cProj: LinearParams }
  | { kind: "softmax"; cAttn: LinearParams; cProj: LinearParams };

/** One block `x += γ1·attn(ln_1(x)); x += γ2·MLP(ln_2(x))`. */
export interface LanguageBlockParams {
  ln1: NormParams;
  attn: LanguageAttentionParams;
  gamma1: Tensor;
  ln2: NormParams;
  /** `[4C, C]` */
  cFc: LinearParams;
  /** `[C, 4C]` */
  mlpProj: LinearParams;
  gamma2: Tensor;
}

/** A language model's parameters on the GPU, uploaded once. */
export interface LanguageParams {
  config: LanguageConfig;
  /** `[V, C]`, also the tied `lm_head`. */
  wte: Tensor;
  /** `[block_size, C]` */
  wpe: Tensor;
  blocks: LanguageBlockParams[];
  lnF: NormParams;
  /** Every tensor above, for {@linkcode destroyLanguageParams}. */
  tensors: Tensor[];
}

/**
 * Check a language config's sizes.
 *
 * @throws {RangeError} for sizes the model cannot have
 */
export function checkLanguageConfig(cfg: LanguageConfig): void {
  const ints = {
    n_embd: cfg.n_embd,
    n_head: cfg.n_head,
    n_layer: cfg.n_layer,
    vocab_size: cfg.vocab_size,
    block_size: cfg.block_size,
  };
  for (const [k, v] of Object.entries(ints)) {
    if (!Number.isInteger(v) || v < (k === "n_layer" ? 0 : 1)) {
      throw new RangeError(`Language config: ${k} must be a positive integer, got ${v}`);
    }
  }
  if (cfg.n_embd % cfg.n_head !== 0) {
    throw new RangeError(
      `Language config: n_embd ${cfg.n_embd} is not a multiple of n_head ${cfg.n_head}`,
    );
  }
  if (cfg.attention !== "tssa" && cfg.attention !== "softmax") {
    throw new RangeError(
      `Language config: unsupported attention "${cfg.attention}" (tssa or softmax)`,
    );
  }
}

/**
 * Upload a language model's tensors (by `state_dict` name) to the GPU. The
 * tied `lm_head.weight` is not uploaded twice: `wte` serves as the head.
 *
 * @throws {RangeError} for a missing tensor; {TypeError} for a misshapen one
 */
export function uploadLanguageParams(
  gpu: Gpu,
  cfg: LanguageConfig,
  tensors: NamedTensors,
): LanguageParams {
  checkLanguageConfig(cfg);
  const up = new ParamUploader(gpu, tensors);
  try {
    const C = cfg.n_embd;
    const NH = cfg.n_head;
    const bias = cfg.bias;
    const blocks: LanguageBlockParams[] = [];
    for (let i = 0; i < cfg.n_layer; i++) {
      const p = `transformer.h.${i}`;
      const attn: LanguageAttentionParams = cfg.attention === "tssa"
        ? {
          kind: "tssa",
          cAttn: up.linear(`${p}.attn.c_attn`, C, C, bias),
          temp: up.param(`${p}.attn.temp`, [NH, 1]),
          denomBias: up.param(`${p}.attn.denom_bias`, [NH, cfg.block_size, 1]),
          cProj: up.linear(`${p}.attn.c_proj`, C, C, bias),
        }
        : {
          kind: "softmax",
          cAttn: up.linear(`${p}.attn.c_attn`, 3 * C, C, bias),
          cProj: up.linear(`${p}.attn.c_proj`, C, C, bias),
        };
      blocks.push({
        ln1: up.norm(`${p}.ln_1`, C, bias),
        attn,
        gamma1: up.param(`${p}.gamma1`, [C]),
        ln2: up.norm(`${p}.ln_2`, C, bias),
        cFc: up.linear(`${p}.mlp.c_fc`, 4 * C, C, bias),
        mlpProj: up.linear(`${p}.mlp.c_proj`, C, 4 * C, bias),
        gamma2: up.param(`${p}.gamma2`, [C]),
      });
    }
    const wte = up.param("transformer.wte.weight", [cfg.vocab_size, C]);
    const head = tensors.get("lm_head.weight");
    if (head) {
      // Tied in the reference; a file whose head differs is not this model.
      const a = up.host("lm_head.weight", [cfg.vocab_size, C]);
      const b = up.host("transformer.wte.weight", [cfg.vocab_size, C]);
      if (a.some((v, i) => !Object.is(v, b[i]))) {
        throw new TypeError(
          "lm_head.weight differs from transformer.wte.weight: tost needs them tied",
        );
      }
    }
    return {
      config: cfg,
      wte,
      wpe: up.param("transformer.wpe.weight", [cfg.block_size, C]),
      blocks,
      lnF: up.norm("transformer.ln_f", C, bias),
      tensors: up.uploaded,
    };
  } catch (err) {
    up.destroy();
    throw err;
  }
}

/** Free a language model's GPU tensors. */
export function destroyLanguageParams(params: LanguageParams): void {
  for (const t of params.tensors) t.destroy();
}

/**
 * Record `x = wte[idx] + wpe[pos0 + t]` for u32 ids `[B, T]`; returns `[B, T, C]`.
 *
 * @throws {RangeError} when `pos0 + T` exceeds block_size
 */
export function embedTokens(
  gpu: Gpu,
  params: LanguageParams,
  idx: Tensor,
  pos0 = 0,
): Promise<Tensor> {
  return embedding(gpu, idx, params.wte, params.wpe, pos0);
}

/** `x`'s shape with the last dimension replaced by `n`. */
function withLast(x: Tensor, n: number): number[] {
  return [...x.shape.slice(0, -1), n];
}

/**
 * Record the attention module (`c_attn` → causal TSSA or causal softmax →
 * `c_proj`) on normalised `h` `[B, T, C]`; the result and temporaries belong
 * to `scratch`.
 */
export async function encodeLanguageAttention(
  gpu: Gpu,
  cfg: LanguageConfig,
  p: LanguageAttentionParams,
  h: Tensor,
  scratch: Scratch,
): Promise<Tensor> {
  const s = scratch;
  const NH = cfg.n_head;
  const C = cfg.n_embd;
  const wOut = p.kind === "tssa" ? C : 3 * C;
  const w = await linear(
    gpu,
    h,
    p.cAttn.weight,
    p.cAttn.bias,
    s.empty(gpu, withLast(h, wOut), "c_attn"),
  );
  let y: Tensor;
  if (p.kind === "tssa") {
    y = s.keep(await causalTssa(gpu, w, p.temp, p.denomBias, NH));
  } else {
    const [B, T] = h.shape;
    const attend = B * NH * T * T * 4 > MAX_SCORE_BYTES ? flashAttention : softmaxAttention;
    y = s.keep(await attend(gpu, w, NH, { causal: true }));
  }
  s.recycle(w);
  const out = await linear(
    gpu,
    y,
    p.cProj.weight,
    p.cProj.bias,
    s.empty(gpu, withLast(h, C), "c_proj"),
  );
  s.recycle(y);
  return out;
}

/**
 * Record one block on `x` `[B, T, C]`, in place. `onActivation` receives the
 * attention output (`<prefix>.attn`) and the block output (`<prefix>`) while
 * they are still valid (copy them if they must outlive the call).
 */
export async function encodeLanguageBlock(
  gpu: Gpu,
  cfg: LanguageConfig,
  p: LanguageBlockParams,
  x: Tensor,
  scratch: Scratch,
  onActivation?: (what: "attn" | "block", t: Tensor) => void,
): Promise<void> {
  const s = scratch;
  const eps = cfg.norm_eps;
  const C = cfg.n_embd;
  const h = await layerNorm(gpu, x, p.ln1.weight, p.ln1.bias, eps, s.empty(gpu, x.shape, "ln_1"));
  const a = await encodeLanguageAttention(gpu, cfg, p.attn, h, s);
  s.recycle(h);
  onActivation?.("attn", a);
  await residual(gpu, x, a, p.gamma1);
  s.recycle(a);
  const h2 = await layerNorm(gpu, x, p.ln2.weight, p.ln2.bias, eps, s.empty(gpu, x.shape, "ln_2"));
  const f = await linear(
    gpu,
    h2,
    p.cFc.weight,
    p.cFc.bias,
    s.empty(gpu, withLast(x, 4 * C), "c_fc"),
  );
  s.recycle(h2);
  const g = await gelu(gpu, f, s.empty(gpu, f.shape, "gelu"));
  s.recycle(f);
  const m = await linear(
    gpu,
    g,
    p.mlpProj.weight,
    p.mlpProj.bias,
    s.empty(gpu, x.shape, "mlp.c_proj"),
  );
  s.recycle(g);
  await residual(gpu, x, m, p.gamma2);
  s.recycle(m);
  onActivation?.("block", x);
}

/** Record `ln_f` and the tied head on `x` `[..., C]`; returns logits `[..., V]` (owned by the caller). */
export async function encodeLanguageHead(
  gpu: Gpu,
  params: LanguageParams,
  x: Tensor,
  scratch: Scratch,
): Promise<Tensor> {
  const h = scratch.keep(
    await layerNorm(gpu, x, params.lnF.weight, params.lnF.bias, params.config.norm_eps),
  );
  return await linear(gpu, h, params.wte, null);
}

/** Options of {@linkcode encodeLanguage}. */
export interface EncodeLanguageOptions {
  /** Receives `transformer.h.i.attn` and `transformer.h.i` (fixture names) as they are recorded. */
  onActivation?: ActivationHook;
}

/**
 * Record the whole forward on u32 token ids `[B, T]` and return the logits
 * `[B, T, V]` (owned by the caller); nothing is submitted.
 *
 * @throws {RangeError} when T exceeds block_size
 */
export async function encodeLanguage(
  gpu: Gpu,
  params: LanguageParams,
  idx: Tensor,
  options: EncodeLanguageOptions = {},
): Promise<Tensor> {
  const cfg = params.config;
  const T = idx.shape[1];
  if (T > cfg.block_size) {
    throw new RangeError(
      `Cannot run ${T} tokens at once: the model's block_size is ${cfg.block_size}`,
    );
  }
  const s = new Scratch();
  try {
    const x = s.keep(await embedTokens(gpu, params, idx));
    for (let i = 0; i < params.blocks.length; i++) {
      const name = `transformer.h.${i}`;
      const hook = options.onActivation;
      await encodeLanguageBlock(
        gpu,
        cfg,
        params.blocks[i],
        x,
        s,
        hook && ((what, t) => hook(what === "attn" ? `${name}.attn` : name, t)),
      );
    }
    return await encodeLanguageHead(gpu, params, x, s);
  } finally {
    s.release();
  }
}

/** Upload token ids `[B, T]` after checking them against the vocabulary. */
export function uploadTokenIds(
  gpu: Gpu,
  params: LanguageParams,
  ids: ArrayLike<number | bigint>,
  B: number,
  T: number,
): Tensor {
  if (ids.length !== B * T) throw new TypeError(`Got ${ids.length} token ids, expected ${B}×${T}`);
  return gpu.upload(checkTokenIds(ids, params.config.vocab_size), [B, T], "language.idx");
}

/** What {@linkcode languageForward} returns. */
export type LanguageOutput = ForwardOutput; // logits `[B, T, V]`

/**
 * Run a language model on token ids `[B, T]`: upload, record the whole
 * forward, submit once and read back the logits of every position (and,
 * with `activations`, every fixture-named intermediate).
 *
 * @example
 * ```ts ignore
 * const { logits } = await languageForward(gpu, params, [0, 1, 2], 1, 3);
 * ```
 */
export async function languageForward(
  gpu: Gpu,
  params: LanguageParams,
  ids: ArrayLike<number | bigint>,
  B: number,
  T: number,
  options: { activations?: boolean } = {},
): Promise<LanguageOutput> {
  const idx = uploadTokenIds(gpu, params, ids, B, T);
  try {
    return await readForward(
      gpu,
      options.activations ?? false,
      (onActivation) => encodeLanguage(gpu, params, idx, { onActivation }),
    );
  } finally {
    idx.destroy();
  }
}

/**
 * Per-token cross-entropy of a forward on ids `[B, T]` against `targets`
 * (−1 = ignore), reading back only the `B·T` losses, not the logits.
 */
export async function languageLoss(
  gpu: Gpu,
  params: LanguageParams,
  ids: ArrayLike<number | bigint>,
  targets: ArrayLike<number | bigint>,
  B: number,
  T: number,
): Promise<Float32Array> {
  const idx = uploadTokenIds(gpu, params, ids, B, T);
  const tg = gpu.upload(
    checkTargets(targets, params.config.vocab_size),
    [B * T],
    "language.targets",
  );
  let logits: Tensor | undefined;
  let losses: Tensor | undefined;
  try {
    logits = await encodeLanguage(gpu, params, idx);
    losses = await crossEntropy(gpu, logits, tg);
    return (await gpu.read(losses)) as Float32Array;
  } finally {
    idx.destroy();
    tg.destroy();
    logits?.destroy();
    losses?.destroy();
  }
}
