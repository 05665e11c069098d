/**
 * One parameter container per model: a {@linkcode ParamStore} holds every
 * float tensor of the model's `state_dict` on the GPU under its reference
 * name, with the shape of the config's name table (`names.ts`). It is what
 * inference, training, the optimizer, checkpoints and evaluation all use;
 * the gradients are a second store with the trained names. The layers see
 * typed views of a store (`language/params.ts`, `vision/params.ts`) whose
 * fields are the store's own tensors, not copies.
 *
 * The trained tensors live in flat buffers ({@linkcode FlatSegment}): each
 * is a {@linkcode Tensor.slice} at an aligned offset of one buffer, those
 * with weight decay ({@linkcode decays}) first, so the optimizer and the
 * gradient norm run one dispatch over every parameter. A gradient or moment
 * store made by {@linkcode ParamStore.zeros} with the same names has the
 * same layout. A store splits into several segments only past the device's
 * largest buffer; BatchNorm's running statistics keep buffers of their own
 * (they are written in the forward pass, where the weights are read).
 *
 * Not stored: BatchNorm's integer `num_batches_tracked` (a counter the
 * training task keeps on the host), buffers some reference versions save and
 * no computation reads (nanoGPT's causal mask), and `lm_head.weight`, which
 * is tied to `transformer.wte.weight` (checked equal when uploaded).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { toF32 } from "../io/dtype.ts";
import type { StTensor } from "../io/safetensors.ts";
import type { ModelConfig } from "./config.ts";
import { paramSpecs } from "./names.ts";
import type { ParamSpec } from "./names.ts";

/** Tensors by `state_dict` name, as a safetensors file or a checkpoint gives them. */
export type NamedTensors = ReadonlyMap<string, StTensor>;

const FLOAT_DTYPES = new Set(["F32", "F16", "BF16", "F64"]);
const RUNNING_STATS = /\.running_(mean|var)$/;
const TIED_HEAD = "lm_head.weight";

/** The entries of a config's table that a store holds, in the reference's order. */
function storedSpecs(cfg: ModelConfig): ParamSpec[] {
  return paramSpecs(cfg).filter((s) => s.kind === "float" && !s.optional && s.name !== TIED_HEAD);
}

/**
 * Names of a config's trained parameters: every stored tensor except the
 * BatchNorm running statistics, in the reference's order.
 *
 * @example
 * ```ts
 * import { trainedNames } from "./params.ts";
 * const names = trainedNames({
 *   family: "language", attention: "tssa", block_size: 8, vocab_size: 5, n_layer: 1,
 *   n_head: 1, n_embd: 4, bias: false, dropout: 0, norm_eps: 1e-5,
 * });
 * if (names[0] !== "transformer.wte.weight" || names.includes("lm_head.weight")) throw new Error();
 * ```
 */
export function trainedNames(cfg: ModelConfig): string[] {
  return storedSpecs(cfg).filter((s) => !RUNNING_STATS.test(s.name)).map((s) => s.name);
}

/**
 * Whether weight decay applies to a parameter (the reference recipe's
 * groups): tensors of two or more dimensions, except ToST's `temp` and
 * `denom_bias`; not biases, norms and layer scales.
 *
 * @example
 * ```ts
 * import { decays } from "./params.ts";
 * if (!decays("transformer.h.0.attn.c_attn.weight", [64, 64])) throw new Error("weight");
 * if (decays("transformer.h.0.attn.temp", [4, 1])) throw new Error("temp");
 * if (decays("transformer.h.0.ln_1.bias", [64])) throw new Error("bias");
 * ```
 */
export function decays(name: string, shape: readonly number[]): boolean {
  const last = name.split(".").pop();
  if (last === "temp" || last === "denom_bias") return false;
  return shape.length >= 2;
}

/**
 * One flat buffer of a store: its tensors back to back at aligned offsets
 * (zeros between them), those with weight decay in `[0, decayEnd)`.
 */
export interface FlatSegment {
  /** The whole buffer, `[numel]` f32. */
  readonly tensor: Tensor;
  /**
   * Elements before this index belong to tensors with weight decay (or to
   * the zero gaps between them). Both it and the size are multiples of 64.
   */
  readonly decayEnd: number;
  /** The tensors in it, by name, in layout order. */
  readonly names: readonly string[];
}

/** Where each tensor of a flat store goes. */
interface Layout {
  segments: { n: number; decayEnd: number; at: { name: string; start: number }[] }[];
}

/** Byte alignment of a tensor in a flat buffer: the binding offset alignment, at least 256. */
function flatAlignment(gpu: Gpu): number {
  return Math.max(256, gpu.limits.minStorageBufferOffsetAlignment);
}

/**
 * Lay `specs` out in flat buffers of at most `maxBytes`: decayed tensors
 * first, each in the reference's order, every start a multiple of `align`
 * bytes.
 */
function layoutOf(specs: readonly ParamSpec[], align: number, maxBytes: number): Layout {
  const ordered = [...specs.filter((s) => decays(s.name, s.shape))];
  const decayCount = ordered.length;
  ordered.push(...specs.filter((s) => !decays(s.name, s.shape)));
  const step = align / 4;
  const segments: Layout["segments"] = [];
  let seg: Layout["segments"][number] | undefined;
  ordered.forEach((spec, i) => {
    const n = Math.max(1, spec.shape.reduce((a, d) => a * d, 1));
    const start = seg ? Math.ceil(seg.n / step) * step : 0;
    if (!seg || (start + n) * 4 > maxBytes) {
      seg = { n: 0, decayEnd: 0, at: [] };
      segments.push(seg);
    }
    const at = Math.ceil(seg.n / step) * step;
    seg.at.push({ name: spec.name, start: at });
    seg.n = at + n;
    if (i < decayCount) seg.decayEnd = seg.n;
  });
  // Whole aligned blocks (the optimizer reads vec4s); the padding is zeros.
  for (const seg of segments) {
    seg.n = Math.ceil(seg.n / step) * step;
    seg.decayEnd = Math.ceil(seg.decayEnd / step) * step;
  }
  return { segments };
}

/** Tensors in flat buffers: the buffers, and every tensor by name (a slice of one). */
export interface FlatTensors {
  segments: FlatSegment[];
  /** In the order of the specs given to {@linkcode allocateFlat}. */
  tensors: Map<string, Tensor>;
}

/**
 * Zeroed flat buffers holding `specs` (decayed tensors first, aligned
 * starts, a new buffer past `maxBytes`), outside any arena. The caller owns
 * the segments' tensors.
 *
 * @example
 * ```ts ignore
 * const flat = allocateFlat(gpu, [{ name: "w", shape: [7, 5], kind: "float" }], "test.");
 * flat.tensors.get("w"); // a [7, 5] slice of flat.segments[0].tensor
 * ```
 */
export function allocateFlat(
  gpu: Gpu,
  specs: readonly ParamSpec[],
  labelPrefix: string,
  maxBytes = gpu.limits.maxBufferSize,
): FlatTensors {
  const layout = layoutOf(specs, flatAlignment(gpu), maxBytes);
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  const slices = new Map<string, Tensor>();
  const segments: FlatSegment[] = [];
  for (const [k, seg] of layout.segments.entries()) {
    const tensor = gpu.outsideArena(() => gpu.empty([seg.n], "f32", `${labelPrefix}flat.${k}`));
    for (const { name, start } of seg.at) slices.set(name, tensor.slice(start, shapes.get(name)!));
    segments.push({ tensor, decayEnd: seg.decayEnd, names: seg.at.map((a) => a.name) });
  }
  return { segments, tensors: new Map(specs.map((s) => [s.name, slices.get(s.name)!])) };
}

/** Float32 values of a named host tensor, checked against its spec. */
function hostValues(named: NamedTensors, spec: ParamSpec): Float32Array<ArrayBuffer> {
  const t = named.get(spec.name);
  if (!t) throw new RangeError(`Missing parameter "${spec.name}" (expected shape [${spec.shape}])`);
  if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
    throw new TypeError(
      `Parameter "${spec.name}" has shape [${t.shape}], expected [${spec.shape}]`,
    );
  }
  if (!FLOAT_DTYPES.has(t.dtype)) {
    throw new TypeError(`Parameter "${spec.name}" is ${t.dtype}, not a float tensor`);
  }
  return toF32(t.dtype, t.data);
}

/** A model's tensors on the GPU by `state_dict` name (see the module docs). */
export class ParamStore {
  readonly config: ModelConfig;
  readonly #gpu: Gpu;
  readonly #tensors: Map<string, Tensor>;
  /** Buffers the store owns: its flat segments and any tensor of its own. */
  readonly #owned: Tensor[];
  readonly #segments: FlatSegment[];
  readonly #constants = new Map<string, Tensor>();

  private constructor(
    gpu: Gpu,
    config: ModelConfig,
    tensors: Map<string, Tensor>,
    owned: Tensor[],
    segments: FlatSegment[],
  ) {
    this.#gpu = gpu;
    this.config = config;
    this.#tensors = tensors;
    this.#owned = owned;
    this.#segments = segments;
  }

  /** Take a flat allocation's tensors and buffers; its segments. */
  static #adopt(flat: FlatTensors, tensors: Map<string, Tensor>, owned: Tensor[]): FlatSegment[] {
    for (const [name, t] of flat.tensors) tensors.set(name, t);
    owned.push(...flat.segments.map((s) => s.tensor));
    return flat.segments;
  }

  /**
   * Upload a model's tensors, checked against the config's table (names,
   * shapes, float dtypes), as f32. Allocated outside any arena.
   *
   * @throws {RangeError} for a missing tensor; {TypeError} for a misshapen or
   *   non-float one, or an `lm_head.weight` that differs from the embedding
   */
  static upload(
    gpu: Gpu,
    cfg: ModelConfig,
    named: NamedTensors,
    maxBytes = gpu.limits.maxBufferSize,
  ): ParamStore {
    const tensors = new Map<string, Tensor>();
    const owned: Tensor[] = [];
    let segments: FlatSegment[] = [];
    try {
      const specs = storedSpecs(cfg);
      const values = specs.map((spec) => hostValues(named, spec));
      const trained = new Set(trainedNames(cfg));
      segments = ParamStore.#adopt(
        allocateFlat(gpu, specs.filter((s) => trained.has(s.name)), "", maxBytes),
        tensors,
        owned,
      );
      specs.forEach((spec, i) => {
        if (trained.has(spec.name)) {
          gpu.write(tensors.get(spec.name)!, values[i]);
        } else {
          const t = gpu.outsideArena(() => gpu.upload(values[i], spec.shape, spec.name));
          owned.push(t);
          tensors.set(spec.name, t);
        }
      });
      const head = named.get(TIED_HEAD);
      if (cfg.family === "language" && head) {
        // Tied in the reference; a file whose head differs is not this model.
        const spec = {
          name: TIED_HEAD,
          shape: [cfg.vocab_size, cfg.n_embd],
          kind: "float" as const,
        };
        const a = hostValues(named, spec);
        const b = hostValues(named, { ...spec, name: "transformer.wte.weight" });
        if (a.some((v, i) => !Object.is(v, b[i]))) {
          throw new TypeError(
            "lm_head.weight differs from transformer.wte.weight: tost needs them tied",
          );
        }
      }
    } catch (err) {
      for (const t of owned) t.destroy();
      throw err;
    }
    // The reference's order for entries(), whatever the flat layout.
    const ordered = new Map(storedSpecs(cfg).map((s) => [s.name, tensors.get(s.name)!]));
    return new ParamStore(gpu, cfg, ordered, owned, segments);
  }

  /**
   * Zeroed tensors shaped like `names` of the config's table: the gradient
   * store of the trained parameters (default {@linkcode trainedNames}).
   */
  static zeros(
    gpu: Gpu,
    cfg: ModelConfig,
    names: readonly string[] = trainedNames(cfg),
    maxBytes = gpu.limits.maxBufferSize,
  ): ParamStore {
    const byName = new Map(storedSpecs(cfg).map((s) => [s.name, s]));
    const specs = names.map((name) => {
      const spec = byName.get(name);
      if (!spec) throw new RangeError(`The ${cfg.family} config has no tensor "${name}"`);
      return spec;
    });
    const tensors = new Map<string, Tensor>();
    const owned: Tensor[] = [];
    const segments = ParamStore.#adopt(allocateFlat(gpu, specs, "grad.", maxBytes), tensors, owned);
    return new ParamStore(gpu, cfg, tensors, owned, segments);
  }

  /**
   * The flat buffers of the trained tensors (all of a
   * {@linkcode ParamStore.zeros} store), laid out alike in every store of
   * the same config and names.
   */
  segments(): readonly FlatSegment[] {
    return this.#segments;
  }

  /**
   * The tensor `name`.
   *
   * @throws {RangeError} when the store has none of that name
   */
  get(name: string): Tensor {
    const t = this.#tensors.get(name);
    if (!t) throw new RangeError(`No tensor "${name}" in the ${this.config.family} model`);
    return t;
  }

  /** The tensor `name` when `has` (an optional bias), else null. */
  optional(name: string, has: boolean): Tensor | null {
    return has ? this.get(name) : null;
  }

  /** Whether the store holds `name`. */
  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  /** Every tensor with its name, in the reference's order. */
  entries(): [string, Tensor][] {
    return [...this.#tensors];
  }

  /**
   * A constant derived from the model and cached with it (a grid's Fourier
   * features, say): `make` runs once per key, outside any arena, and the
   * tensor is freed with the store.
   */
  constant(key: string, make: () => Tensor): Tensor {
    let t = this.#constants.get(key);
    if (!t) {
      t = this.#gpu.outsideArena(make);
      this.#constants.set(key, t);
    }
    return t;
  }

  /** Free every tensor (and cached constant). */
  destroy(): void {
    for (const t of this.#owned) t.destroy();
    for (const t of this.#constants.values()) t.destroy();
    this.#owned.length = 0;
    this.#tensors.clear();
    this.#constants.clear();
  }
}
