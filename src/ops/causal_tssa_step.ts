/**
 * Causal TSSA for decoding: the operator of `causal_tssa.ts` evaluated token
 * by token on top of running statistics, so that each new token costs O(D)
 * work, whatever the length of the context before it.
 *
 * Causal TSSA at position n depends on the past only through three sums
 * over the tokens 0…n−1 of the sequence, per head h and feature k:
 *
 *     s1[h,k] = Σ w²        s2[h,k] = Σ Pi[h]·w²        s3[h] = Σ Pi[h]
 *
 * A new token w at position n updates them and gives its output:
 *
 *     s1 += w²
 *     Pi  = softmax over h of temp[h]·(Σ_k w²/max(s1, 1e-12) + d·denom_bias[h,n])
 *     s2 += Pi·w²;   s3 += Pi
 *     y   = −w·Pi / (1 + s2/(s3 + 1e-8))
 *
 * which is exactly the full operator's prefix sums up to position n. The
 * statistics of one layer live in a {@linkcode CausalTssaState} (`s1`, `s2`
 * `[B, H, d]`, `s3` `[B, H]`, plus the position on the host). Because
 * `denom_bias` is learned per position, a state can only grow to the model's
 * `block_size` tokens; there is no way to drop the oldest token from it
 * (Pi of every later token depended on it), so a sliding window needs the
 * window recomputed from an empty state.
 *
 * GPU kernel: `kernels/causal_tssa_step.wgsl`, one workgroup per sequence,
 * walking its new tokens in order (so a prompt of T tokens can be fed in one
 * dispatch). Its float64 reference, with a CPU state, is
 * `causalTssaStepReference` in `causal_tssa_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import stepWgsl from "../../kernels/causal_tssa_step.wgsl" with { type: "text" };
import { assertF32 } from "./_shapes.ts";
import { tssaShape } from "./tssa.ts";

/** Threads per workgroup of the step kernel, at most. */
const MAX_WORKGROUP = 256;

/**
 * Running statistics of one causal TSSA layer for B sequences that have all
 * consumed `position` tokens. Create with {@linkcode createCausalTssaState}.
 */
export interface CausalTssaState {
  /** Sequences B. */
  readonly batches: number;
  /** Heads H. */
  readonly heads: number;
  /** Features per head d. */
  readonly headDim: number;
  /** Σ w², `[B, H, d]`. */
  readonly s1: Tensor;
  /** Σ Pi·w², `[B, H, d]`. */
  readonly s2: Tensor;
  /** Σ Pi, `[B, H]`. */
  readonly s3: Tensor;
  /** Tokens consumed so far: the position of the next token. */
  position: number;
}

/** An empty state (no tokens yet) for B sequences of H heads of d features. */
export function createCausalTssaState(
  gpu: Gpu,
  batches: number,
  heads: number,
  headDim: number,
): CausalTssaState {
  for (const [k, v] of Object.entries({ batches, heads, headDim })) {
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(`createCausalTssaState: ${k} must be a positive integer, got ${v}`);
    }
  }
  const s1 = gpu.empty([batches, heads, headDim], "f32", "causalTssaState.s1");
  const s2 = gpu.empty([batches, heads, headDim], "f32", "causalTssaState.s2");
  const s3 = gpu.empty([batches, heads], "f32", "causalTssaState.s3");
  return { batches, heads, headDim, s1, s2, s3, position: 0 };
}

/** Forget every token: zero the statistics (queued in order with recorded work). */
export function resetCausalTssaState(gpu: Gpu, state: CausalTssaState): void {
  gpu.write(state.s1, new Float32Array(state.s1.numel));
  gpu.write(state.s2, new Float32Array(state.s2.numel));
  gpu.write(state.s3, new Float32Array(state.s3.numel));
  state.position = 0;
}

/** Free a state's tensors. */
export function destroyCausalTssaState(state: CausalTssaState): void {
  state.s1.destroy();
  state.s2.destroy();
  state.s3.destroy();
}

/**
 * Feed T new tokens of each of B sequences through causal TSSA on top of
 * `state`: `w` `[B, T, H·d]` (the `c_attn` projection of the new tokens) →
 * `y` `[B, T, H·d]`, equal to rows `position … position+T−1` of
 * {@linkcode causalTssa} on the whole sequence. Updates the state on the GPU
 * and advances `state.position` by T. Records one dispatch; read `y` to wait.
 *
 * @param temp per-head temperature, `H` values
 * @param denomBias `[H, blockSize]` (or `[H, blockSize, 1]`)
 * @throws {RangeError} when the tokens would pass `blockSize`
 * @throws {TypeError} on wrong shapes or dtypes, or a state of other sizes
 * @example
 * ```ts ignore
 * const state = createCausalTssaState(gpu, 1, 2, 4);
 * const y0 = await causalTssaStep(gpu, w0, temp, denomBias, state); // w0 [1, 1, 8]
 * const y1 = await causalTssaStep(gpu, w1, temp, denomBias, state); // next position
 * ```
 */
export async function causalTssaStep(
  gpu: Gpu,
  w: Tensor,
  temp: Tensor,
  denomBias: Tensor,
  state: CausalTssaState,
): Promise<Tensor> {
  const op = "causalTssaStep";
  const s = tssaShape(op, w, temp, state.heads);
  assertF32(op, "denomBias", denomBias);
  const { batches: B, tokens: T, dim: D, heads: H } = s;
  const blockSize = denomBias.numel / H;
  if (denomBias.shape[0] !== H || !Number.isInteger(blockSize)) {
    throw new TypeError(
      `${op}: denomBias must have shape [${H}, blockSize(, 1)], got [${denomBias.shape}]`,
    );
  }
  if (B !== state.batches || s.headDim !== state.headDim) {
    throw new TypeError(
      `${op}: w [${w.shape}] does not match a state of ${state.batches} sequences × ` +
        `${state.heads} heads × ${state.headDim} features`,
    );
  }
  for (const t of [state.s1, state.s2, state.s3]) assertF32(op, "state", t);
  if (state.position + T > blockSize) {
    throw new RangeError(
      `${op}: tokens at positions ${state.position}…${state.position + T - 1} pass ` +
        `the block size ${blockSize} of denomBias`,
    );
  }
  const shared = (D + 3 * H) * 4;
  const maxShared = gpu.limits.maxComputeWorkgroupStorageSize;
  if (shared > maxShared) {
    throw new RangeError(
      `${op}: ${D} features and ${H} heads need ${shared} bytes of workgroup memory, ` +
        `the device allows ${maxShared}`,
    );
  }
  gpu.assertBindable(`${op}: w`, w.byteSize);
  const y = gpu.empty([B, T, D], "f32", "causalTssaStep.y");
  if (B * T === 0) return y;
  try {
    const workgroupSize = Math.min(MAX_WORKGROUP, Math.ceil(Math.max(D, H) / 32) * 32);
    const kernel = await gpu.kernel("causal_tssa_step", stepWgsl, {
      dim: D,
      heads: H,
      headDim: s.headDim,
      workgroupSize,
    });
    gpu.dispatch(kernel, {
      bindings: [w, temp, denomBias, state.s1, state.s2, state.s3, y],
      params: [T, state.position, blockSize, B],
      workgroups: B,
    });
  } catch (err) {
    y.destroy();
    throw err;
  }
  state.position += T;
  return y;
}
