/**
 * The float64 reference of the skeleton every attention module shares
 * (`_projected.ts`): an input projection, the operator's reference, an
 * output projection (dropout is the identity),
 *
 *     w = x·W_inᵀ + b_in,   y = op(w),   out = y·W_outᵀ + b_out,
 *
 * forward and backward, in plain TypeScript with no GPU code. The modules'
 * references (`tssa_attention_reference.ts`,
 * `causal_tssa_attention_reference.ts`, `softmax_self_attention_reference.ts`)
 * differ only in the operator they put in the middle.
 *
 * Gradient convention (as in llm.c): parameter gradients accumulate (`+=`),
 * activation gradients are assigned.
 *
 * @module
 */

import { linearBackwardReference, linearForwardReference } from "../ops/linear_reference.ts";

/** `Projections` (`_projected.ts`) as host values (float64 references). */
export interface ProjectionsReference {
  inWeight: ArrayLike<number>;
  inBias: ArrayLike<number> | null;
  outWeight: ArrayLike<number>;
  outBias: ArrayLike<number> | null;
}

/** Gradients of {@linkcode ProjectionsReference}, accumulated into. */
export interface ProjectionGradsReference {
  inWeight: Float64Array;
  inBias: Float64Array | null;
  outWeight: Float64Array;
  outBias: Float64Array | null;
}

/** What the float64 module forward keeps. */
export interface ProjectedSavesReference<S> {
  /** Input projection `[rows, P]`. */
  w: Float64Array;
  /** Operator output `[rows, D]`. */
  y: Float64Array;
  /** The operator's saves. */
  op: S;
}

/**
 * The float64 module forward on `rows` tokens of width `dim`: projections
 * in float64 around the operator's reference.
 */
export function projectedReference<S>(
  x: ArrayLike<number>,
  p: ProjectionsReference,
  sizes: { rows: number; dim: number },
  op: (w: Float64Array) => { y: Float64Array; saves: S },
): { out: Float64Array; saves: ProjectedSavesReference<S> } {
  const { rows, dim } = sizes;
  const inFeatures = p.inWeight.length / dim;
  const w = linearForwardReference(x, p.inWeight, p.inBias, {
    rows,
    inFeatures: dim,
    outFeatures: inFeatures,
  });
  const r = op(w);
  const out = linearForwardReference(r.y, p.outWeight, p.outBias, {
    rows,
    inFeatures: dim,
    outFeatures: dim,
  });
  return { out, saves: { w, y: r.y, op: r.saves } };
}

/** The float64 module backward: ∂x (assigned); parameter gradients added to `grads`. */
export function projectedBackwardReference<S>(
  args: {
    dy: ArrayLike<number>;
    x: ArrayLike<number>;
    params: ProjectionsReference;
    saves: ProjectedSavesReference<S>;
    grads: ProjectionGradsReference;
    opBackward: (dY: Float64Array) => Float64Array;
  },
  sizes: { rows: number; dim: number },
): Float64Array {
  const { dy, x, params, saves, grads } = args;
  const { rows, dim } = sizes;
  const dY = linearBackwardReference({
    dy,
    x: saves.y,
    weight: params.outWeight,
    dWeight: grads.outWeight,
    dBias: grads.outBias,
  }, { rows, inFeatures: dim, outFeatures: dim });
  const dw = args.opBackward(dY);
  return linearBackwardReference({
    dy: dw,
    x,
    weight: params.inWeight,
    dWeight: grads.inWeight,
    dBias: grads.inBias,
  }, { rows, inFeatures: dim, outFeatures: params.inWeight.length / dim });
}
