/**
 * The language attention module of ToST (`CausalSelfAttention_TSSA`):
 * `c_attn` projection → causal TSSA (`ops/causal_tssa.ts`, or its O(1)
 * per-token step `ops/causal_tssa_step.ts` when decoding) → `c_proj`
 * projection (dropout is the identity): the forward (with its saves on
 * request) and the backward; their float64 references are in
 * `causal_tssa_attention_reference.ts`. Parameters are named after the
 * reference `state_dict`:
 *
 * | field       | state_dict      | shape                 |
 * | ----------- | --------------- | --------------------- |
 * | `inWeight`  | `c_attn.weight` | `[D, D]`              |
 * | `inBias`    | `c_attn.bias`   | `[D]` or absent (`bias=False`) |
 * | `temp`      | `temp`          | `[H, 1]`              |
 * | `denomBias` | `denom_bias`    | `[H, block_size, 1]`  |
 * | `outWeight` | `c_proj.weight` | `[D, D]`              |
 * | `outBias`   | `c_proj.bias`   | `[D]` or absent       |
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { causalTssa } from "../ops/causal_tssa.ts";
import type { CausalTssaSaves } from "../ops/causal_tssa.ts";
import { causalTssaBackward } from "../ops/causal_tssa_backward.ts";
import { causalTssaStep } from "../ops/causal_tssa_step.ts";
import type { CausalTssaState } from "../ops/causal_tssa_step.ts";
import { projectedBackward, projectedForward } from "./_projected.ts";
import type { ProjectedSaves, Projections, ResidualInto } from "./_projected.ts";

/** GPU parameters of {@linkcode causalTssaAttention} (and, shaped alike, its gradients). */
export interface CausalTssaAttentionParams extends Projections {
  /** `temp`, `H` values (`[H, 1]`). */
  temp: Tensor;
  /** `denom_bias`, `[H, block_size, 1]`. */
  denomBias: Tensor;
}

/** What {@linkcode causalTssaAttention} keeps for {@linkcode causalTssaAttentionBackward}. */
export type CausalTssaAttentionSaves = ProjectedSaves<CausalTssaSaves>;

/** Options of {@linkcode causalTssaAttention}. */
export interface CausalTssaAttentionOptions {
  /** Keep what the backward needs and return it. */
  saves?: boolean;
  /**
   * Add the output into this residual stream in place (fused into the
   * output projection) and return the stream instead of a new tensor.
   */
  residual?: ResidualInto;
  /**
   * Decode: `x` holds the next tokens of sequences whose earlier tokens
   * this state has consumed (running statistics, O(1) per token); the
   * state advances.
   */
  state?: CausalTssaState;
  /**
   * Receives Π `[B·N, H]` (the head memberships of the operator's saves)
   * while it is valid: copy it to keep it (`tost inspect`). Not while decoding.
   */
  onPi?: (pi: Tensor) => void;
}

/**
 * `CausalSelfAttention_TSSA` forward on the GPU: `x` `[B, N, D]` →
 * `[B, N, D]`, for `N ≤ block_size` (with a `state`: positions
 * `state.position …` of the sequences). Records dispatches only. With
 * `{ saves: true }` returns `{ out, saves }` for
 * {@linkcode causalTssaAttentionBackward}; otherwise the intermediates are
 * freed.
 *
 * @param heads number of heads; `D` must be a multiple of it
 * @throws {RangeError} when the tokens exceed `block_size`
 * @throws {TypeError} when asked for saves or Π while decoding
 * @example
 * ```ts ignore
 * const out = await causalTssaAttention(gpu, x, {
 *   inWeight, inBias, temp, denomBias, outWeight, outBias,
 * }, 4);
 * ```
 */
export async function causalTssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: CausalTssaAttentionParams,
  heads: number,
  options: CausalTssaAttentionOptions & { saves: true },
): Promise<{ out: Tensor; saves: CausalTssaAttentionSaves }>;
export async function causalTssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: CausalTssaAttentionParams,
  heads: number,
  options?: CausalTssaAttentionOptions,
): Promise<Tensor>;
export async function causalTssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: CausalTssaAttentionParams,
  heads: number,
  options: CausalTssaAttentionOptions = {},
): Promise<Tensor | { out: Tensor; saves: CausalTssaAttentionSaves }> {
  const { state, onPi } = options;
  if (state && options.saves) {
    throw new TypeError("causalTssaAttention: decoding keeps no saves for a backward");
  }
  if (state && onPi) throw new TypeError("causalTssaAttention: decoding does not report Π");
  const r = await projectedForward<CausalTssaSaves>(
    gpu,
    x,
    p,
    async (w, keep) => {
      if (state) {
        return { y: await causalTssaStep(gpu, w, p.temp, p.denomBias, state), saves: null };
      }
      if (!keep && !onPi) {
        return { y: await causalTssa(gpu, w, p.temp, p.denomBias, heads), saves: null };
      }
      const op = await causalTssa(gpu, w, p.temp, p.denomBias, heads, { saves: true });
      onPi?.(op.saves.pi);
      if (keep) return op;
      op.saves.pi.destroy();
      return { y: op.y, saves: null };
    },
    options.saves ?? false,
    options.residual,
  );
  return r.saves ? { out: r.out, saves: r.saves } : r.out;
}

/**
 * `CausalSelfAttention_TSSA` backward on the GPU: adds every parameter's
 * gradient into `grads` and returns ∂x `[B, N, D]` (new). Records dispatches only.
 */
export async function causalTssaAttentionBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    saves: CausalTssaAttentionSaves;
    params: CausalTssaAttentionParams;
    grads: CausalTssaAttentionParams;
    heads: number;
  },
): Promise<Tensor> {
  const { saves, params, grads, heads } = args;
  return await projectedBackward(gpu, {
    ...args,
    opBackward: (dY) =>
      causalTssaBackward(gpu, {
        dy: dY,
        w: saves.w,
        temp: params.temp,
        denomBias: params.denomBias,
        saves: saves.op,
        dtemp: grads.temp,
        dDenomBias: grads.denomBias,
        heads,
      }),
  });
}
