/**
 * The vision attention module of ToST (`AttentionTSSA`): `qkv` projection →
 * non-causal TSSA (`ops/tssa.ts`) → `to_out` projection (dropout is the
 * identity): the forward (with its saves on request) and the backward; their
 * float64 references are in `tssa_attention_reference.ts`. Parameters are
 * named after the reference `state_dict`:
 *
 * | field       | state_dict        | shape     |
 * | ----------- | ----------------- | --------- |
 * | `inWeight`  | `qkv.weight`      | `[D, D]`  |
 * | `inBias`    | `qkv.bias`        | `[D]` or absent (`qkv_bias=False`) |
 * | `temp`      | `temp`            | `[H, 1]`  |
 * | `outWeight` | `to_out.0.weight` | `[D, D]`  |
 * | `outBias`   | `to_out.0.bias`   | `[D]`     |
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { tssa } from "../ops/tssa.ts";
import type { TssaSaves } from "../ops/tssa.ts";
import { tssaBackward } from "../ops/tssa_backward.ts";
import { projectedBackward, projectedForward } from "./_projected.ts";
import type { ProjectedSaves, Projections, ResidualInto } from "./_projected.ts";

/** GPU parameters of {@linkcode tssaAttention} (and, shaped alike, its gradients). */
export interface TssaAttentionParams extends Projections {
  /** `temp`, `H` values (`[H, 1]`). */
  temp: Tensor;
}

/** What {@linkcode tssaAttention} keeps for {@linkcode tssaAttentionBackward}. */
export type TssaAttentionSaves = ProjectedSaves<TssaSaves>;

/** Options of {@linkcode tssaAttention}. */
export interface TssaAttentionOptions {
  /** Keep what the backward needs and return it. */
  saves?: boolean;
  /**
   * Add the output into this residual stream in place (fused into the
   * output projection) and return the stream instead of a new tensor.
   */
  residual?: ResidualInto;
  /**
   * Receives Π `[B·N, H]` (the head memberships of the operator's saves)
   * while it is valid: copy it to keep it (`tost inspect`).
   */
  onPi?: (pi: Tensor) => void;
}

/**
 * `AttentionTSSA` forward on the GPU: `x` `[B, N, D]` → `[B, N, D]`. Records
 * dispatches only. With `{ saves: true }` returns `{ out, saves }` for
 * {@linkcode tssaAttentionBackward}; otherwise the intermediates are freed.
 * `onPi` is shown Π from the same forward (its saves, asked for and freed).
 *
 * @param heads number of heads; `D` must be a multiple of it
 * @example
 * ```ts ignore
 * const out = await tssaAttention(gpu, x, { inWeight, inBias: null, temp, outWeight, outBias }, 4);
 * ```
 */
export async function tssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: TssaAttentionParams,
  heads: number,
  options: TssaAttentionOptions & { saves: true },
): Promise<{ out: Tensor; saves: TssaAttentionSaves }>;
export async function tssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: TssaAttentionParams,
  heads: number,
  options?: TssaAttentionOptions,
): Promise<Tensor>;
export async function tssaAttention(
  gpu: Gpu,
  x: Tensor,
  p: TssaAttentionParams,
  heads: number,
  options: TssaAttentionOptions = {},
): Promise<Tensor | { out: Tensor; saves: TssaAttentionSaves }> {
  const { onPi } = options;
  const r = await projectedForward<TssaSaves>(
    gpu,
    x,
    p,
    async (w, keep) => {
      if (!keep && !onPi) return { y: await tssa(gpu, w, p.temp, heads), saves: null };
      const op = await tssa(gpu, w, p.temp, heads, { saves: true });
      onPi?.(op.saves.pi);
      if (keep) return op;
      for (const t of Object.values(op.saves)) t.destroy();
      return { y: op.y, saves: null };
    },
    options.saves ?? false,
    options.residual,
  );
  return r.saves ? { out: r.out, saves: r.saves } : r.out;
}

/**
 * `AttentionTSSA` backward on the GPU: adds every parameter's gradient into
 * `grads` and returns ∂x `[B, N, D]` (new). Records dispatches only.
 */
export async function tssaAttentionBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    saves: TssaAttentionSaves;
    params: TssaAttentionParams;
    grads: TssaAttentionParams;
    heads: number;
  },
): Promise<Tensor> {
  const { saves, params, grads, heads } = args;
  return await projectedBackward(gpu, {
    ...args,
    opBackward: (dY) =>
      tssaBackward(gpu, {
        dy: dY,
        w: saves.w,
        temp: params.temp,
        saves: saves.op,
        dtemp: grads.temp,
        heads,
      }),
  });
}
