/**
 * The Fourier positional encoding of the vision models (XCiT's
 * `PositionalEncodingFourier`, after DETR), as plain functions.
 *
 * For a `Hp × Wp` grid of patches, positions are the normalised cumulative
 * counts `y = (i+1)/(Hp + 1e-6)·2π` and `x = (j+1)/(Wp + 1e-6)·2π`. With
 * `hidden` features per axis and `τ = temperature^(2⌊m/2⌋/hidden)`, feature
 * `m` of an axis is `sin(pos/τ)` for even `m` and `cos(pos/τ)` for odd `m`
 * (the reference stacks sin of the even and cos of the odd frequencies and
 * interleaves them). The `2·hidden` channels are the y features then the x
 * features; a 1×1 convolution (`pos_embeder.token_projection`) maps them to
 * the model width, and the result is added to every image of the batch.
 *
 * The reference computes the features in float32 (its `cumsum` and `arange`
 * say `dtype=torch.float32`) and only the projection in the model's dtype;
 * {@linkcode fourierFeatures} can do either.
 *
 * @module
 */

/** Options of {@linkcode fourierFeatures}. */
export interface FourierOptions {
  /** Features per axis (XCiT: 32); must be even. */
  hidden?: number;
  /** Frequency base (XCiT: 10000). */
  temperature?: number;
  /**
   * Round every step to float32 as the reference does (default true), so
   * float64 results match PyTorch's; false computes all of it in float64.
   */
  float32?: boolean;
}

const EPS = 1e-6;
const SCALE = 2 * Math.PI;

/**
 * The sin/cos features of a `Hp × Wp` grid, token-major: `[Hp·Wp, 2·hidden]`,
 * row `i·Wp + j` holding patch `(i, j)`'s y features then its x features.
 *
 * @throws {RangeError} for a non-positive grid or an odd or non-positive `hidden`
 * @example
 * ```ts
 * import { fourierFeatures } from "./fourier.ts";
 * const f = fourierFeatures(1, 1, { hidden: 2, float32: false });
 * // y = x = 2π/(1 + 1e-6): [sin y, cos y, sin x, cos x]
 * f.length; // 4
 * ```
 */
export function fourierFeatures(
  Hp: number,
  Wp: number,
  { hidden = 32, temperature = 10000, float32 = true }: FourierOptions = {},
): Float64Array {
  if (!(Number.isInteger(Hp) && Hp > 0 && Number.isInteger(Wp) && Wp > 0)) {
    throw new RangeError(`Fourier encoding needs a positive integer grid, got ${Hp}×${Wp}`);
  }
  if (!(Number.isInteger(hidden) && hidden > 0 && hidden % 2 === 0)) {
    throw new RangeError(`Fourier encoding needs an even positive hidden size, got ${hidden}`);
  }
  const r = float32 ? Math.fround : (v: number) => v;
  // τ_m = temperature^(2⌊m/2⌋/hidden); the reference divides by it, in float32.
  const tau = new Float64Array(hidden);
  for (let m = 0; m < hidden; m++) tau[m] = r(temperature ** r(r(2 * Math.floor(m / 2)) / hidden));
  // Normalised positions along one axis of length n: r(r(r(k+1)/r(n + eps))·2π).
  const positions = (n: number) => {
    const p = new Float64Array(n);
    const last = r(n + EPS);
    for (let k = 0; k < n; k++) p[k] = r(r((k + 1) / last) * r(SCALE));
    return p;
  };
  const ys = positions(Hp);
  const xs = positions(Wp);
  const axis = (out: Float64Array, at: number, pos: number) => {
    for (let m = 0; m < hidden; m++) {
      const a = r(pos / tau[m]);
      out[at + m] = r(m % 2 === 0 ? Math.sin(a) : Math.cos(a));
    }
  };
  const F = 2 * hidden;
  const out = new Float64Array(Hp * Wp * F);
  for (let i = 0; i < Hp; i++) {
    for (let j = 0; j < Wp; j++) {
      const row = (i * Wp + j) * F;
      axis(out, row, ys[i]);
      axis(out, row + hidden, xs[j]);
    }
  }
  return out;
}

/**
 * The positional encoding added to the tokens: features projected by the 1×1
 * convolution, `[Hp·Wp, dim]` token-major (`pe[n, o] = bias[o] + Σ_f feat[n, f]·weight[o, f]`).
 *
 * @param weight the `token_projection` weight, `dim × 2·hidden` (a `[dim, 2·hidden, 1, 1]` tensor's data)
 * @param bias the `token_projection` bias, `dim`
 * @throws {TypeError} when the weight and bias sizes disagree with `hidden`
 * @example
 * ```ts
 * import { fourierEncoding } from "./fourier.ts";
 * const pe = fourierEncoding(2, 3, new Float64Array(4 * 5), new Float64Array(5), { hidden: 2 });
 * pe.length; // 2·3 tokens × 5 features = 30
 * ```
 */
export function fourierEncoding(
  Hp: number,
  Wp: number,
  weight: Float64Array,
  bias: Float64Array,
  options: FourierOptions = {},
): Float64Array {
  const hidden = options.hidden ?? 32;
  const F = 2 * hidden;
  const dim = bias.length;
  if (weight.length !== dim * F) {
    throw new TypeError(
      `Fourier projection weight has ${weight.length} values, expected ${dim}×${F}`,
    );
  }
  const feat = fourierFeatures(Hp, Wp, options);
  const N = Hp * Wp;
  const out = new Float64Array(N * dim);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < dim; o++) {
      let s = bias[o];
      for (let f = 0; f < F; f++) s += feat[n * F + f] * weight[o * F + f];
      out[n * dim + o] = s;
    }
  }
  return out;
}
