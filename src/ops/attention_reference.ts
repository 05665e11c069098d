/**
 * Float64 references of softmax attention on the packed projection
 * `qkv [B, N, (3, heads, d)]`, forward and backward, for every GPU form of
 * it: standard (`attention.ts`, `attention_backward.ts`), flash
 * (`flash_attention*.ts`), decoding with a key/value cache
 * (`kv_cache_attention.ts`) and class attention, where only the class token
 * (token 0) queries (`class_attention*.ts`):
 *
 *     out[b, i, h·d + c] = Σ_j P_ij · v_j[c],   P_ij = softmax_j(q_i · k_j / √d)
 *
 * over the keys j query i sees (all N, or 0…i when causal). Plain
 * TypeScript with no GPU import: the reference models build on it too.
 *
 * @module
 */

import { softmaxRowsInPlace } from "./softmax_reference.ts";

/** Which queries and keys of {@linkcode attentionReference}. */
export interface AttentionReferenceOptions {
  /** Query i sees keys 0…i (PyTorch `is_causal=True`). */
  causal?: boolean;
  /** Only token 0 (the class token) queries, over all N keys: output `[B, 1, C]`. */
  classToken?: boolean;
}

/** The sizes of one call, checked. */
interface Problem {
  B: number;
  N: number;
  H: number;
  d: number;
  C: number;
  /** Query rows per batch element (N, or 1 for class attention). */
  Q: number;
  causal: boolean;
}

function problem(
  op: string,
  qkv: ArrayLike<number>,
  [B, N, H, d]: [number, number, number, number],
  options: AttentionReferenceOptions,
): Problem {
  for (const [name, v] of [["B", B], ["N", N], ["heads", H], ["d", d]] as const) {
    if (!Number.isInteger(v) || v < 0) {
      throw new TypeError(`${op}: ${name} must be a non-negative integer, got ${v}`);
    }
  }
  if (H === 0 || d === 0) throw new TypeError(`${op}: heads and d must be positive`);
  const C = H * d;
  if (qkv.length !== B * N * 3 * C) {
    throw new TypeError(
      `${op}: qkv has ${qkv.length} values, expected B·N·3·heads·d = ${B * N * 3 * C}`,
    );
  }
  const classToken = options.classToken ?? false;
  const causal = options.causal ?? false;
  if (classToken && (N === 0 || causal)) {
    throw new TypeError(`${op}: class attention needs N ≥ 1 and is not causal`);
  }
  return { B, N, H, d, C, Q: classToken ? 1 : N, causal };
}

/**
 * Visit every (batch element, head, query) of the problem with its
 * attention weights: `p[j] = P_ij` for the `keys` keys the query sees, and
 * the offsets of its q, of k and v of key 0, and of its output row.
 */
function forEachQuery(
  qkv: ArrayLike<number>,
  s: Problem,
  visit: (p: Float64Array, at: { q: number; k: number; v: number; out: number }) => void,
): void {
  const { B, N, H, d, C, Q } = s;
  const scale = 1 / Math.sqrt(d);
  const p = new Float64Array(N);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < Q; i++) {
        const keys = s.causal ? i + 1 : N;
        const q = (b * N + i) * 3 * C + h * d;
        const k = b * N * 3 * C + C + h * d;
        const row = p.subarray(0, keys);
        for (let j = 0; j < keys; j++) {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += qkv[q + c] * qkv[k + j * 3 * C + c];
          row[j] = dot * scale;
        }
        softmaxRowsInPlace(row, 1, keys);
        visit(row, { q, k, v: k + C, out: (b * Q + i) * C + h * d });
      }
    }
  }
}

/**
 * Softmax attention in float64.
 *
 * @param qkv `B·N·3·heads·d` values, layout `[B, N, (3, heads, d)]`
 * @returns `[B, N, heads·d]` (heads concatenated), or `[B, 1, heads·d]` for
 *   `classToken`
 * @throws {TypeError} when the sizes do not match `qkv`
 * @example
 * ```ts
 * import { attentionReference } from "./attention_reference.ts";
 * // one token attends only to itself: the output is its value
 * const y = attentionReference(new Float64Array([0.3, -1, 2]), 1, 1, 1, 1);
 * if (y[0] !== 2) throw new Error("attention of one token");
 * // two tokens with equal keys: the class token averages the values
 * const c = attentionReference([1, 1, 2, 0, 1, 4], 1, 2, 1, 1, { classToken: true });
 * if (c[0] !== 3) throw new Error("class attention");
 * ```
 */
export function attentionReference(
  qkv: ArrayLike<number>,
  B: number,
  N: number,
  heads: number,
  d: number,
  options: AttentionReferenceOptions = {},
): Float64Array {
  const s = problem("attentionReference", qkv, [B, N, heads, d], options);
  const out = new Float64Array(B * s.Q * s.C);
  forEachQuery(qkv, s, (p, at) => {
    for (let j = 0; j < p.length; j++) {
      const v = at.v + j * 3 * s.C;
      for (let c = 0; c < d; c++) out[at.out + c] += p[j] * qkv[v + c];
    }
  });
  return out;
}

/**
 * The attention weights of class attention in float64: `P[b, h, j] =
 * softmax_j(q_0 · k_j / √d)`, the class token's (token 0's) weights over all
 * `N` tokens, itself included — what `tost inspect` draws as the
 * class-attention map (the GPU kernel never stores them: it merges partial
 * softmaxes as it goes).
 *
 * @param qkv `B·N·3·heads·d` values, layout `[B, N, (3, heads, d)]`
 * @returns `[B, heads, N]`, each row summing to 1
 * @throws {TypeError} when the sizes do not match `qkv` or `N` is 0
 * @example
 * ```ts
 * import { classAttentionWeightsReference } from "./attention_reference.ts";
 * // equal keys: the class token spreads its attention evenly
 * const p = classAttentionWeightsReference([1, 1, 2, 0, 1, 4], 1, 2, 1, 1);
 * if (p[0] !== 0.5 || p[1] !== 0.5) throw new Error("class attention weights");
 * ```
 */
export function classAttentionWeightsReference(
  qkv: ArrayLike<number>,
  B: number,
  N: number,
  heads: number,
  d: number,
): Float64Array {
  const s = problem("classAttentionWeightsReference", qkv, [B, N, heads, d], {
    classToken: true,
  });
  const out = new Float64Array(B * heads * N);
  let row = 0;
  forEachQuery(qkv, s, (p) => out.set(p, N * row++)); // (b, h) in order, one query each
  return out;
}

/**
 * Softmax attention backward in float64 (the weights recomputed): with
 * `∂P_ij = ∂out_i·v_j` and `∂S_ij = P_ij·(∂P_ij − Σ_j' P_ij'·∂P_ij')/√d`,
 * `∂q_i = Σ_j ∂S_ij·k_j`, `∂k_j = Σ_i ∂S_ij·q_i`, `∂v_j = Σ_i P_ij·∂out_i`.
 *
 * @param qkv `B·N·3·heads·d` values, layout `[B, N, (3, heads, d)]`
 * @param dout the upstream gradient, shaped like {@linkcode attentionReference}'s output
 * @returns ∂qkv, same layout as `qkv` (assigned)
 * @throws {TypeError} when the sizes do not match
 * @example
 * ```ts
 * import { softmaxAttentionBackwardReference } from "./attention_reference.ts";
 * // one token: the output is its value, so ∂v = ∂out and q, k get nothing
 * const g = softmaxAttentionBackwardReference([0.3, -1, 2], [5], 1, 1, 1, 1);
 * if (g.join() !== "0,0,5") throw new Error();
 * ```
 */
export function softmaxAttentionBackwardReference(
  qkv: ArrayLike<number>,
  dout: ArrayLike<number>,
  B: number,
  N: number,
  heads: number,
  d: number,
  options: AttentionReferenceOptions = {},
): Float64Array {
  const op = "softmaxAttentionBackwardReference";
  const s = problem(op, qkv, [B, N, heads, d], options);
  if (dout.length !== B * s.Q * s.C) {
    throw new TypeError(`${op}: dout has ${dout.length} values, expected ${B * s.Q * s.C}`);
  }
  const scale = 1 / Math.sqrt(d);
  const dqkv = new Float64Array(qkv.length);
  const dp = new Float64Array(N);
  forEachQuery(qkv, s, (p, at) => {
    let delta = 0;
    for (let j = 0; j < p.length; j++) {
      const v = at.v + j * 3 * s.C;
      let dot = 0;
      for (let c = 0; c < d; c++) {
        dot += dout[at.out + c] * qkv[v + c];
        dqkv[v + c] += p[j] * dout[at.out + c];
      }
      dp[j] = dot;
      delta += p[j] * dot;
    }
    for (let j = 0; j < p.length; j++) {
      const ds = p[j] * (dp[j] - delta) * scale;
      const k = at.k + j * 3 * s.C;
      for (let c = 0; c < d; c++) {
        dqkv[at.q + c] += ds * qkv[k + c];
        dqkv[k + c] += ds * qkv[at.q + c];
      }
    }
  });
  return dqkv;
}
