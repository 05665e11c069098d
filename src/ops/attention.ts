/**
 * Standard softmax attention, the quadratic baseline ToST is compared with
 * (ViT, GPT): the scores `[B, H, N, N]` are materialised, softmaxed in place
 * and multiplied by the values, as PyTorch's eager
 * `softmax(q @ k.transpose(-2, -1) * scale) @ v` does.
 *
 * Input is the packed projection `qkv [B, N, 3·C]` (last dimension
 * `(3, H, d)`, `C = H·d`); output `[B, N, C]` with heads concatenated, ready
 * for the output projection. Scale `1/√d`. Causal masking is PyTorch's
 * `is_causal=True`: query `i` sees keys `0..i`.
 *
 * GPU kernels: `kernels/attention_scores.wgsl`, `attention_softmax.wgsl`,
 * `attention_values.wgsl`. Float64 reference: `attentionReference` in
 * `attention_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32, formatBytes } from "../gpu/runtime.ts";
import scoresWgsl from "../../kernels/attention_scores.wgsl" with { type: "text" };
import softmaxWgsl from "../../kernels/attention_softmax.wgsl" with { type: "text" };
import valuesWgsl from "../../kernels/attention_values.wgsl" with { type: "text" };
import { bindingLimit, bindRows, rowPieces, storageAlignment } from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";
import { qkvShape } from "./_attention_shape.ts";

/** Options of the softmax-attention ops. */
export interface AttentionOptions extends ChunkOptions {
  /** Mask future keys: query `i` sees keys `0..i` (PyTorch `is_causal=True`). */
  causal?: boolean;
}

const TILE = 32;

/** Invocations per softmax row: fewer for short rows, where most would idle. */
function softmaxWorkgroupSize(N: number): number {
  return N >= 2048 ? 256 : N >= 64 ? 64 : 16;
}

/** What the forward keeps for `softmaxAttentionBackward` when asked for its saves. */
export interface SoftmaxAttentionSaves {
  /** `[B, H, N, N]` attention probabilities (exact zeros where masked). */
  probs: Tensor;
}

/** Options of {@linkcode softmaxAttention}: causal masking, the saves request, test limits. */
export interface SoftmaxAttentionOptions extends AttentionOptions {
  /** Keep the probabilities for the backward and return them. */
  saves?: boolean;
}

/**
 * Softmax attention of packed `qkv` with the scores materialised in a
 * `[B, H, N, N]` tensor, freed before returning unless the saves are
 * requested (`{ saves: true }` returns `{ out, saves }`: the softmaxed
 * scores, which the backward needs). Records dispatches only.
 *
 * @param qkv f32 `[B, N, 3·C]`, last dimension `(3, heads, d)`, `d ≤ 128`
 * @param heads number of heads `H` (`C = H·d`)
 * @param options `causal`, `saves`; `maxBindingBytes` (tests)
 * @returns a new f32 tensor `[B, N, C]`, heads concatenated
 * @throws {TypeError} for a malformed `qkv` or head count
 * @throws {RangeError} when the scores do not fit one buffer, one head's
 *   scores or one batch of `qkv` do not fit one storage binding (the message
 *   gives the bytes needed and the device's limit)
 * @example
 * ```ts ignore
 * const y = await softmaxAttention(gpu, qkv, 6, { causal: true });
 * const { out, saves } = await softmaxAttention(gpu, qkv, 6, { causal: true, saves: true });
 * ```
 */
export async function softmaxAttention(
  gpu: Gpu,
  qkv: Tensor,
  heads: number,
  options: SoftmaxAttentionOptions & { saves: true },
): Promise<{ out: Tensor; saves: SoftmaxAttentionSaves }>;
export async function softmaxAttention(
  gpu: Gpu,
  qkv: Tensor,
  heads: number,
  options?: SoftmaxAttentionOptions,
): Promise<Tensor>;
export async function softmaxAttention(
  gpu: Gpu,
  qkv: Tensor,
  heads: number,
  options: SoftmaxAttentionOptions = {},
): Promise<Tensor | { out: Tensor; saves: SoftmaxAttentionSaves }> {
  const op = "softmaxAttention";
  const { B, N, H, d, C } = qkvShape(op, qkv, heads);
  const causal = options.causal ? 1 : 0;
  const limit = bindingLimit(gpu, options);
  const align = storageAlignment(gpu);
  const headBytes = N * N * 4;
  const scoreBytes = B * H * headBytes;
  const maxBuffer = gpu.limits.maxBufferSize;
  if (scoreBytes > maxBuffer) {
    throw new RangeError(
      `${op}: the attention scores [${B}, ${H}, ${N}, ${N}] need ${formatBytes(scoreBytes)} ` +
        `(${scoreBytes} bytes), the device allows ${formatBytes(maxBuffer)} per buffer`,
    );
  }
  if (headBytes + align - 4 > limit) {
    throw new RangeError(
      `${op}: one head's scores [${N}, ${N}] need a ${formatBytes(headBytes)} ` +
        `(${headBytes} bytes) storage binding, the device allows ${formatBytes(limit)}`,
    );
  }
  const batchBytes = N * 3 * C * 4;
  if (batchBytes + align - 4 > limit) {
    throw new RangeError(
      `${op}: one batch of qkv [${N}, ${3 * C}] needs a ${formatBytes(batchBytes)} ` +
        `storage binding, the device allows ${formatBytes(limit)}`,
    );
  }
  const out = gpu.empty([B, N, C], "f32", "attention.out");
  const scores = gpu.empty([B, H, N, N], "f32", "attention.scores");
  try {
    if (B > 0 && N > 0) {
      await recordAttention(gpu, op, qkv, out, scores, { B, N, H, d, C, causal, limit, align });
    }
  } catch (err) {
    out.destroy();
    scores.destroy();
    throw err;
  }
  if (options.saves) return { out, saves: { probs: scores } };
  scores.destroy();
  return out;
}

async function recordAttention(
  gpu: Gpu,
  op: string,
  qkv: Tensor,
  out: Tensor,
  scores: Tensor,
  p: {
    B: number;
    N: number;
    H: number;
    d: number;
    C: number;
    causal: number;
    limit: number;
    align: number;
  },
): Promise<void> {
  const { B, N, H, d, C, causal, limit, align } = p;
  const headBytes = N * N * 4;
  const batchBytes = N * 3 * C * 4;
  const [scoresK, softmaxK, valuesK] = await Promise.all([
    gpu.kernel("attention_scores", scoresWgsl),
    gpu.kernel("attention_softmax", softmaxWgsl, { workgroupSize: softmaxWorkgroupSize(N) }),
    gpu.kernel("attention_values", valuesWgsl),
  ]);
  const tiles = Math.ceil(N / TILE);
  const scale = f32(1 / Math.sqrt(d));
  for (const bp of rowPieces(op, B, batchBytes, limit, align)) {
    const src = bindRows(qkv, bp.start, bp.count, N * 3 * C, align);
    const dst = bindRows(out, bp.start, bp.count, N * C, align);
    for (const hp of rowPieces(op, bp.count * H, headBytes, limit, align)) {
      const s = bindRows(scores, bp.start * H + hp.start, hp.count, N * N, align);
      gpu.dispatch(scoresK, {
        bindings: [src.range, s.range],
        params: [N, H, d, C, hp.count, hp.start, src.base, s.base, scale, causal],
        workgroups: hp.count * tiles * tiles,
      });
      gpu.dispatch(softmaxK, {
        bindings: [s.range],
        params: [hp.count * N, N, s.base, causal],
        workgroups: hp.count * N,
      });
      gpu.dispatch(valuesK, {
        bindings: [s.range, src.range, dst.range],
        params: [N, H, d, C, hp.count, hp.start, src.base, dst.base, s.base, causal],
        workgroups: hp.count * tiles * Math.ceil(d / TILE),
      });
    }
  }
}
