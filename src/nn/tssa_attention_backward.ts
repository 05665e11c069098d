/**
 * Backward of the two TSSA attention modules, input projection → operator →
 * output projection:
 *
 * - `AttentionTSSA` (vision): `qkv` (bias optional) → TSSA → `to_out.0`;
 * - `CausalSelfAttention_TSSA` (language): `c_attn` → causal TSSA → `c_proj`.
 *
 * Gradient convention (as in llm.c): **parameter gradients accumulate**
 * (`+=`) into gradient buffers the caller provides and zeroes; **activation
 * gradients are assigned** (returned fresh).
 *
 * Saved by the forward for the backward: the module input `x`, the
 * projection `w = x·W_inᵀ + b_in`, the operator output `y`, and the
 * operator's own saves (`Pi`, and for the non-causal operator its token
 * statistics).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { linear } from "../ops/linear.ts";
import {
  linearBackward,
  linearBackwardReference,
  linearForwardReference,
} from "../ops/linear_backward.ts";
import type { LinearDims } from "../ops/linear_backward.ts";
import {
  destroySaves,
  tssaBackward,
  tssaBackwardReference,
  tssaForwardReference,
  tssaForwardWithSaves,
} from "../ops/tssa_backward.ts";
import type { TssaSaves, TssaSavesReference } from "../ops/tssa_backward.ts";
import {
  causalTssaBackward,
  causalTssaBackwardReference,
  causalTssaForwardReference,
  causalTssaForwardWithSaves,
} from "../ops/causal_tssa_backward.ts";

/** Parameters of a TSSA attention module (float values, PyTorch layouts). */
export interface TssaAttentionParamsReference {
  /** `qkv.weight` / `c_attn.weight`, `[D, D]`. */
  inWeight: ArrayLike<number>;
  /** `c_attn.bias` `[D]`, or null (`qkv_bias=False`). */
  inBias: ArrayLike<number> | null;
  /** `temp`, `[H, 1]`. */
  temp: ArrayLike<number>;
  /** `to_out.0.weight` / `c_proj.weight`, `[D, D]`. */
  outWeight: ArrayLike<number>;
  /** `to_out.0.bias` / `c_proj.bias` `[D]`, or null. */
  outBias: ArrayLike<number> | null;
  /** Causal module only: `denom_bias`, `[H, blockSize, 1]`. */
  denomBias?: ArrayLike<number>;
}

/** Gradients of {@linkcode TssaAttentionParamsReference}, accumulated into. */
export interface TssaAttentionGradsReference {
  inWeight: Float64Array;
  inBias: Float64Array | null;
  temp: Float64Array;
  outWeight: Float64Array;
  outBias: Float64Array | null;
  denomBias?: Float64Array;
}

/** Sizes of a module call: input `[batches, tokens, heads·headDim]`. */
export interface TssaAttentionDims {
  batches: number;
  tokens: number;
  heads: number;
  headDim: number;
  /** Causal module only: positions of `denom_bias`; selects the causal operator. */
  blockSize?: number;
}

/** What the module forward keeps (float64). */
export interface TssaAttentionSavesReference {
  /** Module output `[B, N, D]`. */
  out: Float64Array;
  /** Input projection `w` `[B, N, D]`. */
  w: Float64Array;
  /** Operator output `[B, N, D]`. */
  y: Float64Array;
  /** Operator saves: Pi (both), statistics (non-causal). */
  op: TssaSavesReference | { y: Float64Array; pi: Float64Array };
}

function linearDims(dims: TssaAttentionDims): LinearDims {
  const D = dims.heads * dims.headDim;
  return { rows: dims.batches * dims.tokens, inFeatures: D, outFeatures: D };
}

/**
 * Module forward in float64, keeping what the backward needs.
 *
 * @example
 * ```ts
 * import { tssaAttentionForwardReference } from "./tssa_attention_backward.ts";
 * const params = { inWeight: [1], inBias: null, temp: [1], outWeight: [1], outBias: [0] };
 * const s = tssaAttentionForwardReference([2], params, {
 *   batches: 1, tokens: 1, heads: 1, headDim: 1,
 * });
 * if (Math.abs(s.out[0] + 2 / 5) > 1e-8) throw new Error("module");
 * ```
 */
export function tssaAttentionForwardReference(
  x: ArrayLike<number>,
  params: TssaAttentionParamsReference,
  dims: TssaAttentionDims,
): TssaAttentionSavesReference {
  const ld = linearDims(dims);
  const w = linearForwardReference(x, params.inWeight, params.inBias, ld);
  let op: TssaAttentionSavesReference["op"];
  if (dims.blockSize === undefined) {
    op = tssaForwardReference(w, params.temp, dims);
  } else {
    if (!params.denomBias) throw new TypeError("causal TSSA module: denomBias is missing");
    op = causalTssaForwardReference(
      w,
      { temp: params.temp, denomBias: params.denomBias },
      { ...dims, blockSize: dims.blockSize },
    );
  }
  const out = linearForwardReference(op.y, params.outWeight, params.outBias, ld);
  return { out, w, y: op.y, op };
}

/**
 * Module backward in float64: through the output projection, the operator
 * and the input projection.
 *
 * @param args `dy` (∂L/∂out, `[B, N, D]`), `x`, `params`, the forward's
 *   `saved`, and `grads`, to which every parameter gradient is **added**
 * @returns `∂L/∂x`, `[B, N, D]` (assigned)
 */
export function tssaAttentionBackwardReference(
  args: {
    dy: ArrayLike<number>;
    x: ArrayLike<number>;
    params: TssaAttentionParamsReference;
    saved: TssaAttentionSavesReference;
    grads: TssaAttentionGradsReference;
  },
  dims: TssaAttentionDims,
): Float64Array {
  const { dy, x, params, saved, grads } = args;
  const ld = linearDims(dims);
  const dY = linearBackwardReference({
    dy,
    x: saved.y,
    weight: params.outWeight,
    dWeight: grads.outWeight,
    dBias: grads.outBias,
  }, ld);
  let dw: Float64Array;
  if (dims.blockSize === undefined) {
    dw = tssaBackwardReference({
      dy: dY,
      w: saved.w,
      temp: params.temp,
      saved: saved.op as TssaSavesReference,
      dtemp: grads.temp,
    }, dims);
  } else {
    if (!params.denomBias || !grads.denomBias) {
      throw new TypeError("causal TSSA module: denomBias or its gradient is missing");
    }
    dw = causalTssaBackwardReference({
      dy: dY,
      w: saved.w,
      temp: params.temp,
      denomBias: params.denomBias,
      pi: saved.op.pi,
      dtemp: grads.temp,
      dDenomBias: grads.denomBias,
    }, { ...dims, blockSize: dims.blockSize });
  }
  return linearBackwardReference({
    dy: dw,
    x,
    weight: params.inWeight,
    dWeight: grads.inWeight,
    dBias: grads.inBias,
  }, ld);
}

// ------------------------------------------------------------------- GPU

/** Parameters of a TSSA attention module on the GPU (PyTorch layouts). */
export interface TssaAttentionParams {
  /** `qkv.weight` / `c_attn.weight`, `[D, D]`. */
  inWeight: Tensor;
  /** `c_attn.bias` `[D]`, or null. */
  inBias: Tensor | null;
  /** `temp`, `[H, 1]`. */
  temp: Tensor;
  /** `to_out.0.weight` / `c_proj.weight`, `[D, D]`. */
  outWeight: Tensor;
  /** `to_out.0.bias` / `c_proj.bias` `[D]`, or null. */
  outBias: Tensor | null;
  /** Present for the causal module only (selects it): `denom_bias`, `[H, blockSize, 1]`. */
  denomBias?: Tensor;
}

/** Gradient buffers shaped like {@linkcode TssaAttentionParams}; added to. */
export interface TssaAttentionGrads {
  inWeight: Tensor;
  inBias: Tensor | null;
  temp: Tensor;
  outWeight: Tensor;
  outBias: Tensor | null;
  denomBias?: Tensor;
}

/** What {@linkcode tssaAttentionForwardWithSaves} keeps (owned, except `x`). */
export interface TssaAttentionSaves {
  /** The module input `[B, N, D]` (the caller's tensor, not freed here). */
  x: Tensor;
  /** Input projection `[B, N, D]`. */
  w: Tensor;
  /** Operator output `[B, N, D]`. */
  y: Tensor;
  /** Non-causal operator saves (Pi and statistics). */
  tssa?: TssaSaves;
  /** Causal operator saves: Pi `[B·N, H]`. */
  pi?: Tensor;
}

/** Free the tensors a module forward kept (not `x`). */
export function destroyAttentionSaves(saves: TssaAttentionSaves): void {
  saves.w.destroy();
  saves.y.destroy();
  if (saves.tssa) destroySaves(saves.tssa);
  saves.pi?.destroy();
}

/**
 * Module forward on the GPU keeping what {@linkcode tssaAttentionBackward}
 * needs: `out = proj_out(op(proj_in(x)))`. Records dispatches only.
 *
 * @param args `x` `[B, N, D]`, `params` (with `denomBias` for the causal
 *   module), `heads`
 * @returns the module output `[B, N, D]` and the saves
 * @example
 * ```ts ignore
 * const { out, saves } = await tssaAttentionForwardWithSaves(gpu, { x, params, heads: 4 });
 * ```
 */
export async function tssaAttentionForwardWithSaves(
  gpu: Gpu,
  args: { x: Tensor; params: TssaAttentionParams; heads: number },
): Promise<{ out: Tensor; saves: TssaAttentionSaves }> {
  const { x, params, heads } = args;
  const w = await linear(gpu, x, params.inWeight, params.inBias);
  try {
    if (params.denomBias) {
      const { y, pi } = await causalTssaForwardWithSaves(gpu, {
        w,
        temp: params.temp,
        denomBias: params.denomBias,
        heads,
      });
      const out = await linear(gpu, y, params.outWeight, params.outBias);
      return { out, saves: { x, w, y, pi } };
    }
    const { y, saves } = await tssaForwardWithSaves(gpu, { w, temp: params.temp, heads });
    const out = await linear(gpu, y, params.outWeight, params.outBias);
    return { out, saves: { x, w, y, tssa: saves } };
  } catch (err) {
    w.destroy();
    throw err;
  }
}

/**
 * Module backward on the GPU: through the output projection, the operator
 * and the input projection. Records dispatches only.
 *
 * @param args `dy` (∂L/∂out, `[B, N, D]`), the forward's `saves`, `params`,
 *   `grads` (every parameter gradient is **added** to them), `heads`
 * @returns ∂L/∂x, a new `[B, N, D]` tensor (assigned)
 * @throws {TypeError} when the saves or gradients do not match the module kind
 * @example
 * ```ts ignore
 * const dx = await tssaAttentionBackward(gpu, { dy, saves, params, grads, heads: 4 });
 * ```
 */
export async function tssaAttentionBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    saves: TssaAttentionSaves;
    params: TssaAttentionParams;
    grads: TssaAttentionGrads;
    heads: number;
  },
): Promise<Tensor> {
  const { dy, saves, params, grads, heads } = args;
  const dY = await linearBackward(gpu, {
    dy,
    x: saves.y,
    weight: params.outWeight,
    dWeight: grads.outWeight,
    dBias: grads.outBias,
  });
  let dw: Tensor;
  try {
    if (params.denomBias) {
      if (!saves.pi || !grads.denomBias) {
        throw new TypeError(
          "tssaAttentionBackward: causal module needs saves.pi and grads.denomBias",
        );
      }
      dw = await causalTssaBackward(gpu, {
        dy: dY,
        w: saves.w,
        temp: params.temp,
        denomBias: params.denomBias,
        pi: saves.pi,
        dtemp: grads.temp,
        dDenomBias: grads.denomBias,
        heads,
      });
    } else {
      if (!saves.tssa) throw new TypeError("tssaAttentionBackward: saves.tssa is missing");
      dw = await tssaBackward(gpu, {
        dy: dY,
        w: saves.w,
        temp: params.temp,
        saves: saves.tssa,
        dtemp: grads.temp,
        heads,
      });
    }
  } finally {
    dY.destroy();
  }
  try {
    return await linearBackward(gpu, {
      dy: dw,
      x: saves.x,
      weight: params.inWeight,
      dWeight: grads.inWeight,
      dBias: grads.inBias,
    });
  } finally {
    dw.destroy();
  }
}
