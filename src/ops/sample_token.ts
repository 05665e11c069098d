/**
 * Drawing the next token on the GPU (`kernels/sample_token.wgsl`): greedy,
 * temperature and top-k, seeded, with the semantics of the host sampler
 * {@linkcode sampleToken} (`sample_token_reference.ts`, the float64
 * reference it is tested against). The token is written into a u32 tensor
 * where the next decoding step reads it, so generation records token after
 * token without waiting for logits.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import sampleTokenWgsl from "../../kernels/sample_token.wgsl" with { type: "text" };
import { assertF32 } from "./_shapes.ts";
import { checkSampling, nonFiniteLogitMessage } from "./sample_token_reference.ts";
import type { SamplingOptions } from "./sample_token_reference.ts";

export { randomAt, sampleToken } from "./sample_token_reference.ts";

/** Where and how {@linkcode recordSampleToken} draws. */
export interface SampleTokenOptions extends SamplingOptions {
  /** The row of `logits` (`[R, V]`) to draw from; default 0. */
  row?: number;
  /** Only ids below this take part (default V). */
  limit?: number;
  /** Seed of the draws (an integer in [0, 2³²)). */
  seed: number;
  /** Index of this draw in the seed's sequence (the token's index: `randomAt(seed, draw)`). */
  draw: number;
  /** u32 tensor receiving the token at element `at`. */
  tokens: Tensor;
  at: number;
  /**
   * u32 `[4]` status, zero at the start of a generation: the first
   * non-finite logit is recorded there (read it with {@linkcode samplingError}),
   * and every later draw then writes token 0.
   */
  status: Tensor;
}

/**
 * Record one draw from row `row` of `logits` `[R, V]` into
 * `tokens[at]`. Records one dispatch (one workgroup).
 *
 * @throws {RangeError} for bad options or `at` outside `tokens`
 * @example
 * ```ts ignore
 * const status = gpu.empty([4], "u32");
 * await recordSampleToken(gpu, logits, { temperature: 0.8, topK: 200, seed: 1337, draw: 0,
 *   tokens: history, at: promptLength, status });
 * ```
 */
export async function recordSampleToken(
  gpu: Gpu,
  logits: Tensor,
  o: SampleTokenOptions,
): Promise<void> {
  checkSampling(o);
  assertF32("sampleToken", "logits", logits);
  const V = logits.shape[logits.shape.length - 1];
  const rows = logits.numel / V;
  const row = o.row ?? 0;
  const limit = o.limit ?? V;
  if (!Number.isInteger(row) || row < 0 || row >= rows) {
    throw new RangeError(`sampleToken: row ${row} outside [0, ${rows})`);
  }
  if (!Number.isInteger(limit) || limit < 1 || limit > V) {
    throw new RangeError(`sampleToken: limit must be an integer in [1, ${V}], got ${limit}`);
  }
  if (o.tokens.dtype !== "u32" || !Number.isInteger(o.at) || o.at < 0 || o.at >= o.tokens.numel) {
    throw new RangeError(
      `sampleToken: position ${o.at} outside the u32 tokens [${o.tokens.shape}] (${o.tokens.dtype})`,
    );
  }
  if (o.status.dtype !== "u32" || o.status.numel < 4) {
    throw new TypeError(
      `sampleToken: status must be u32 [4], got ${o.status.dtype} [${o.status.shape}]`,
    );
  }
  for (const [name, v] of [["seed", o.seed], ["draw", o.draw]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new RangeError(`sampleToken: ${name} must be an integer in [0, 2^32), got ${v}`);
    }
  }
  const k = o.topK ?? 0;
  const kernel = await gpu.kernel("sample_token", sampleTokenWgsl);
  gpu.dispatch(kernel, {
    bindings: [logits, o.tokens, o.status],
    params: [
      limit,
      k >= limit ? 0 : k,
      f32(o.temperature ?? 1),
      o.seed,
      o.draw,
      o.at,
      row * V,
    ],
    workgroups: 1,
  });
}

/**
 * The error a sampling status (`[4]` u32, read back) records, or null: the
 * draw (0-based) that met a non-finite logit and the host sampler's message.
 */
export function samplingError(
  status: ArrayLike<number>,
): { draw: number; error: RangeError } | null {
  if (status[0] === 0) return null;
  const value = new Float32Array(new Uint32Array([status[2]]).buffer)[0];
  return { draw: status[0] - 1, error: new RangeError(nonFiniteLogitMessage(value, status[1])) };
}
