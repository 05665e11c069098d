/**
 * One parameter container per model: a {@linkcode ParamStore} holds every
 * float tensor of the model's `state_dict` on the GPU under its reference
 * name, with the shape of the config's name table (`names.ts`). It is what
 * inference, training, the optimizer, checkpoints and evaluation all use;
 * the gradients are a second store with the trained names. The layers see
 * typed views of a store (`language/params.ts`, `vision/params.ts`) whose
 * fields are the store's own tensors, not copies.
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
  readonly #constants = new Map<string, Tensor>();

  private constructor(gpu: Gpu, config: ModelConfig, tensors: Map<string, Tensor>) {
    this.#gpu = gpu;
    this.config = config;
    this.#tensors = tensors;
  }

  /**
   * Upload a model's tensors, checked against the config's table (names,
   * shapes, float dtypes), as f32. Allocated outside any arena.
   *
   * @throws {RangeError} for a missing tensor; {TypeError} for a misshapen or
   *   non-float one, or an `lm_head.weight` that differs from the embedding
   */
  static upload(gpu: Gpu, cfg: ModelConfig, named: NamedTensors): ParamStore {
    const tensors = new Map<string, Tensor>();
    try {
      for (const spec of storedSpecs(cfg)) {
        const values = hostValues(named, spec);
        tensors.set(spec.name, gpu.outsideArena(() => gpu.upload(values, spec.shape, spec.name)));
      }
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
      for (const t of tensors.values()) t.destroy();
      throw err;
    }
    return new ParamStore(gpu, cfg, tensors);
  }

  /**
   * Zeroed tensors shaped like `names` of the config's table: the gradient
   * store of the trained parameters (default {@linkcode trainedNames}).
   */
  static zeros(
    gpu: Gpu,
    cfg: ModelConfig,
    names: readonly string[] = trainedNames(cfg),
  ): ParamStore {
    const shapes = new Map(storedSpecs(cfg).map((s) => [s.name, s.shape]));
    const tensors = new Map<string, Tensor>();
    for (const name of names) {
      const shape = shapes.get(name);
      if (!shape) throw new RangeError(`The ${cfg.family} config has no tensor "${name}"`);
      tensors.set(name, gpu.outsideArena(() => gpu.empty(shape, "f32", `grad.${name}`)));
    }
    return new ParamStore(gpu, cfg, tensors);
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
    for (const t of this.#tensors.values()) t.destroy();
    for (const t of this.#constants.values()) t.destroy();
    this.#tensors.clear();
    this.#constants.clear();
  }
}
