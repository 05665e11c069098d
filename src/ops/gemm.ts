/**
 * General matrix products on the GPU, the engine under `linear` and its
 * backward:
 *
 *     C[i, j] (= or +=) epilogue( Σ_r A(i, r)·B(j, r) )     i < m, j < n, r < k
 *
 * A and B are row-major tensors read either along their rows ("depth"
 * layout: element (i, r) at `i·ld + r`, as x and W in the forward) or down
 * their columns ("rows" layout: at `r·ld + i`, as W in ∂x = ∂y·W and ∂y, x in
 * ∂W = ∂yᵀ·x). In BLAS terms the forward is NT, ∂x is NN and ∂W is TN
 * ({@linkcode GemmKind}). C is row-major `[m, n]`.
 *
 * Several kernel designs ({@linkcode GEMM_VARIANTS}) compute the same thing:
 *
 * - `texture-RMxRN`: operands in rgba32float storage textures, an RM×RN
 *   register block per invocation, no workgroup memory; the design that is
 *   fast on lavapipe (../shared/PERF.md). An operand's contiguous direction
 *   runs along the texture's rows (4 terms per texel for depth layouts, 4
 *   operand rows per texel for rows layouts), so it is copied in with
 *   `copyBufferToTexture` when its rows are 256-byte multiples apart, and
 *   packed by `kernels/gemm_pack.wgsl` (zero-padded) otherwise.
 * - `tile-BMxBN`: workgroup-memory tiles with an 8×8 (or 4×4) block per
 *   thread and vec4 reads of the tiles; the design hardware GPUs want.
 * - `simple-RMxRN`: straight from the buffers, no packing pass: for one or
 *   two rows (sampling a token) and small products where a dispatch's fixed
 *   cost dominates.
 *
 * Every variant adds the products of one output in increasing r with one fma
 * each, starting from 0, so on one device they all give the same bits: the
 * tuner's choice ({@linkcode ./gemm_tune.ts}) never changes results.
 *
 * Tensors over one storage binding are processed in pieces (rows of C and of
 * depth-layout operands, spans of r for rows-layout operands; later spans
 * accumulate into C), and so are textures over `maxTextureDimension2D`.
 *
 * @module
 */

import type { Gpu, Kernel, Tensor, Texture } from "../gpu/runtime.ts";
import type { RowChunk } from "../gpu/chunks.ts";
import packWgsl from "../../kernels/gemm_pack.wgsl" with { type: "text" };
import {
  assertF32,
  bindingLimit,
  bindRows,
  type BoundRows,
  type ChunkOptions,
  rowPieces,
  storageAlignment,
} from "./_shapes.ts";
import {
  epilogueBindingNames,
  epilogueName,
  type EpilogueSpec,
  type GemmSource,
  simpleSource,
  textureSource,
  type TileShape,
  tileSource,
} from "./_gemm_source.ts";

/**
 * The product's layout in BLAS terms: forward `x·Wᵀ` is "nt", `∂x = ∂y·W` is
 * "nn", `∂W = ∂yᵀ·x` is "tn" ("tt" completes the set).
 */
export type GemmKind = "nt" | "nn" | "tn" | "tt";

/** One operand of `C = A·Bᵀ`, seen as rows × depth. */
export interface GemmOperand {
  /** A row-major f32 tensor. */
  tensor: Tensor;
  /** "depth": element (i, r) at `i·ld + r`; "rows": at `r·ld + i`. */
  layout: "depth" | "rows";
  /** Elements per row of the tensor. */
  ld: number;
}

/** What happens to each dot product `v` before it is stored (see `kernels/gemm_common.wgsl`). */
export interface GemmEpilogue {
  /** `v += bias[j]` (f32 `[n]`). */
  bias?: Tensor | null;
  /** `v += C[i, j]` (∂W +=). */
  accumulate?: boolean;
  /** Also write `v` before GELU and the residual here (f32 `[m, n]`). */
  aux?: Tensor | null;
  /** `v = gelu(v)`, exact erf GELU. */
  gelu?: boolean;
  /** `C[i, j] += gamma[j]·v` (or `+= v` without gamma) instead of `C[i, j] = v`. */
  residual?: boolean;
  /** The layer scale of the residual, f32 `[n]`, or null for none. */
  gamma?: Tensor | null;
}

/** One product to record. */
export interface GemmProduct {
  a: GemmOperand;
  b: GemmOperand;
  /** f32 `[m, n]` row-major (n elements per row), written or accumulated. */
  c: Tensor;
  m: number;
  n: number;
  k: number;
  epilogue?: GemmEpilogue;
}

/** Test and bench options of {@linkcode gemm}. */
export interface GemmOptions extends ChunkOptions {
  /**
   * Treat `maxTextureDimension2D` as this (at most the device's), to
   * exercise the texture variant's pieces cheaply.
   */
  maxTextureSide?: number;
}

/** The product's kind from its operand layouts. */
export function gemmKind(p: Pick<GemmProduct, "a" | "b">): GemmKind {
  return `${p.a.layout === "depth" ? "n" : "t"}${p.b.layout === "depth" ? "t" : "n"}` as GemmKind;
}

/** Sides of the pieces a variant can take at once. */
interface Caps {
  i: number;
  j: number;
  r: number;
}

/** Where one piece's data sits in its bindings. */
interface Piece {
  i: RowChunk;
  j: RowChunk;
  r: RowChunk;
  a: BoundRows;
  b: BoundRows;
  c: BoundRows;
  aux: BoundRows | null;
  /** Element addressing of the operands inside their bindings. */
  aAt: Strides;
  bAt: Strides;
  spec: EpilogueSpec;
}

interface Strides {
  base: number;
  /** Step of the operand's row index. */
  si: number;
  /** Step of r. */
  sr: number;
}

/** One kernel design and its compile-time shape. */
export interface GemmVariant {
  /** e.g. "texture-16x16", "tile-64x64", "simple-1x4". */
  readonly name: string;
  /** "texture", "tile" or "simple". */
  readonly family: "texture" | "tile" | "simple";
  /** Why this variant cannot run a product of these sizes here, or null. */
  unsupported(gpu: Gpu, kind: GemmKind): string | null;
  /** @internal largest piece sides */
  caps(gpu: Gpu, options: GemmOptions, kind: GemmKind): Caps;
  /** @internal record one piece */
  record(gpu: Gpu, prod: GemmProduct, piece: Piece, options: GemmOptions): Promise<void>;
}

const UNLIMITED: Caps = { i: Infinity, j: Infinity, r: Infinity };

/** The Params of kernels/gemm_common.wgsl for one piece. */
function uniforms(
  prod: GemmProduct,
  piece: Piece,
  k: number,
  blocksN: number,
  blocks: number,
): number[] {
  return [
    piece.i.count,
    piece.j.count,
    k,
    piece.aAt.base,
    piece.aAt.si,
    piece.aAt.sr,
    piece.bAt.base,
    piece.bAt.si,
    piece.bAt.sr,
    piece.c.base + piece.j.start,
    prod.n,
    piece.j.start,
    (piece.aux?.base ?? 0) + piece.j.start,
    blocksN,
    blocks,
  ];
}

function epilogueBindings(prod: GemmProduct, piece: Piece) {
  const e = prod.epilogue ?? {};
  return epilogueBindingNames(piece.spec).map((name) =>
    name === "aux" ? piece.aux!.range : name === "bias" ? e.bias! : e.gamma!
  );
}

/** Dispatch a kernel that reads A and B from their buffers. */
function dispatchBuffers(
  gpu: Gpu,
  kernel: Kernel,
  prod: GemmProduct,
  piece: Piece,
  blocksN: number,
  blocks: number,
  { workgroups }: { workgroups: number },
): void {
  gpu.dispatch(kernel, {
    bindings: [piece.a.range, piece.b.range, piece.c.range, ...epilogueBindings(prod, piece)],
    params: uniforms(prod, piece, piece.r.count, blocksN, blocks),
    workgroups,
  });
}

const compiled = new WeakMap<Gpu, Map<string, Promise<Kernel>>>();

/**
 * The pipeline of a variant's kernel for one epilogue (and layout), compiled
 * once per device. Memoised here by a short key: generating a big unrolled
 * source and keying the runtime's cache by it would cost every product
 * ~0.1 ms of host time.
 */
function compile(
  gpu: Gpu,
  key: string,
  spec: EpilogueSpec,
  source: () => GemmSource,
): Promise<Kernel> {
  let perGpu = compiled.get(gpu);
  if (!perGpu) compiled.set(gpu, perGpu = new Map());
  const full = `${key}[${epilogueName(spec)}]`;
  let k = perGpu.get(full);
  if (!k) {
    const src = source();
    k = gpu.kernel(`${src.name}[${epilogueName(spec)}]`, src.template, src.slots);
    perGpu.set(full, k);
    k.catch(() => perGpu.delete(full));
  }
  return k;
}

/**
 * Invocations per workgroup of a register-block kernel whose rows of C hold
 * `blocksN` blocks: 64, or fewer for narrow products (8, 16 or 32: whole
 * 8-lane vectors of lavapipe), so that few workgroups start idle invocations. Lavapipe runs
 * every 8 invocations as one fibre even when they all leave at once: at
 * 2176×64→64 with 8×8 blocks (8 blocks a row) a workgroup of 64 took 1.9×
 * the time of one of 8 (CPU time, under load).
 */
function blockWorkgroupSize(blocksN: number): number {
  // Powers of two: each size is a pipeline of its own to compile.
  let wg = 8;
  while (wg < BLOCK_WG && wg < blocksN) wg *= 2;
  return wg;
}

const BLOCK_WG = 64;

/**
 * The piece's epilogue for a register-block kernel of RN columns a block:
 * stored 4 outputs at a time where C's rows, the piece's columns and the
 * epilogue tensors are whole vec4s (see `EpilogueSpec.vector`).
 */
function blockSpec(prod: GemmProduct, piece: Piece, rn: number): EpilogueSpec {
  const e = prod.epilogue ?? {};
  const whole = (bytes: number) => bytes % 16 === 0;
  const vector = rn % 4 === 0 && prod.n % 4 === 0 && piece.j.start % 4 === 0 &&
    piece.j.count % 4 === 0 && piece.c.base % 4 === 0 && whole(piece.c.range.size) &&
    (!piece.aux || (piece.aux.base % 4 === 0 && whole(piece.aux.range.size))) &&
    (!e.bias || whole(e.bias.byteSize)) && (!e.gamma || whole(e.gamma.byteSize));
  return { ...piece.spec, vector };
}

/** Register-block variants straight from the buffers. */
function simpleVariant(rm: number, rn: number): GemmVariant {
  const name = `simple-${rm}x${rn}`;
  return {
    name,
    family: "simple",
    unsupported: () => null,
    caps: () => UNLIMITED,
    async record(gpu, prod, piece) {
      const spec = blockSpec(prod, piece, rn);
      const blocksN = Math.ceil(piece.j.count / rn);
      const wg = blockWorkgroupSize(blocksN);
      const kernel = await compile(
        gpu,
        `${name}/${wg}`,
        spec,
        () => simpleSource(rm, rn, wg, spec),
      );

      const groupsPerRow = Math.ceil(blocksN / wg);
      dispatchBuffers(gpu, kernel, prod, piece, blocksN, groupsPerRow, {
        workgroups: Math.ceil(piece.i.count / rm) * groupsPerRow,
      });
    },
  };
}

/** Workgroup-memory tile variants (for hardware GPUs). */
function tileVariant(t: TileShape): GemmVariant {
  const threads = (t.bm / t.tm) * (t.bn / t.tn);
  const shared = t.bk * (t.bm + t.bn + 8) * 4; // slab rows padded by 4 floats
  const name = `tile-${t.bm}x${t.bn}` + (t.tm === 8 && t.tn === 8 ? "" : `-${t.tm}x${t.tn}`);
  return {
    name,
    family: "tile",
    unsupported(gpu) {
      if (threads > gpu.limits.maxComputeInvocationsPerWorkgroup) {
        return `needs ${threads} invocations per workgroup, the device allows ${gpu.limits.maxComputeInvocationsPerWorkgroup}`;
      }
      if (shared > gpu.limits.maxComputeWorkgroupStorageSize) {
        return `needs ${shared} bytes of workgroup memory, the device allows ${gpu.limits.maxComputeWorkgroupStorageSize}`;
      }
      return null;
    },
    caps: () => UNLIMITED,
    async record(gpu, prod, piece) {
      const aDepth = prod.a.layout === "depth";
      const bDepth = prod.b.layout === "depth";
      const kernel = await compile(
        gpu,
        `${name}/${gemmKind(prod)}`,
        piece.spec,
        () => tileSource(t, aDepth, bDepth, piece.spec),
      );
      const blocksN = Math.ceil(piece.j.count / t.bn);
      const blocks = Math.ceil(piece.i.count / t.bm) * blocksN;
      dispatchBuffers(gpu, kernel, prod, piece, blocksN, blocks, { workgroups: blocks });
    },
  };
}

/** Extra texel per texture row: rows 4 KiB apart thrash lavapipe's cache (PERF.md). */
const ROW_PAD_TEXELS = 1;
const PACK_WG = 64;

/** Packed-texture variants (for lavapipe). */
function textureVariant(rm: number, rn: number): GemmVariant {
  const side = (gpu: Gpu, options: GemmOptions) =>
    Math.min(gpu.limits.maxTextureDimension2D, options.maxTextureSide ?? Infinity);
  const name = `texture-${rm}x${rn}`;
  return {
    name,
    family: "texture",
    unsupported(gpu) {
      const need = Math.max(rm, rn, 1 + ROW_PAD_TEXELS);
      if (gpu.limits.maxStorageTexturesPerShaderStage < 2) {
        return "needs 2 storage textures per shader stage";
      }
      if (gpu.limits.maxTextureDimension2D < need) {
        return `needs textures of ${need} texels a side`;
      }
      return null;
    },
    caps(gpu, options, kind) {
      // A "k" texture holds a row per operand row and 4 terms per texel; a
      // "row" texture a row per term and 4 operand rows per texel.
      const s = side(gpu, options);
      const along = (block: number, form: TexelForm) =>
        Math.floor((form === "k" ? s : (s - ROW_PAD_TEXELS) * 4) / block) * block;
      const [aForm, bForm] = forms(kind);
      const rCap = (form: TexelForm) => (form === "k" ? (s - ROW_PAD_TEXELS) * 4 : s - (s % 4));
      return { i: along(rm, aForm), j: along(rn, bForm), r: Math.min(rCap(aForm), rCap(bForm)) };
    },
    async record(gpu, prod, piece) {
      const [aForm, bForm] = forms(gemmKind(prod));
      const pack = await gpu.kernel("gemm_pack", packWgsl);
      const spec = blockSpec(prod, piece, rn);
      const blocksN = Math.ceil(piece.j.count / rn);
      const wg = blockWorkgroupSize(blocksN);
      const kernel = await compile(
        gpu,
        `${name}/${aForm}${bForm}/${wg}`,
        spec,
        () => textureSource(rm, rn, wg, spec, aForm, bForm),
      );
      const depth = piece.r.count;
      const steps = Math.ceil(depth / 4);
      const packInto = (
        slot: number,
        rows: number,
        block: number,
        form: TexelForm,
        bound: BoundRows,
        at: Strides,
      ) => {
        // In texels: along the contiguous direction, and across.
        const [along, across, contiguous, strided] = form === "k"
          ? [depth, rows, at.sr, at.si]
          : [rows, depth, at.si, at.sr];
        const texels = Math.ceil(along / 4);
        // k form: rows up to the block; row form: texels up to the block and
        // terms up to whole steps of 4 (zeros, as they reach stored outputs).
        const width = (form === "k" ? texels : Math.ceil(rows / block) * block / 4) +
          ROW_PAD_TEXELS;
        const height = form === "k" ? Math.ceil(rows / block) * block : 4 * steps;
        const tex = texturePool(gpu).get(width, height, slot);
        const byteOffset = bound.range.offset + at.base * 4;
        if (
          contiguous === 1 && depth % 4 === 0 && (strided * 4) % 256 === 0 && byteOffset % 16 === 0
        ) {
          // Whole texels laid out as WebGPU copies them: ~15× faster than the
          // packing kernel on lavapipe. Terms must fill whole steps (they
          // reach stored outputs); operand rows past the piece and texture
          // rows past the copy keep old contents: they only reach outputs
          // never stored. Row-form copies end within the tensor's rows:
          // `strided` is a multiple of 64 and the piece starts on a texel.
          gpu.copyToTexture(bound.range.tensor, tex, {
            byteOffset,
            bytesPerRow: strided * 4,
            width: texels,
            rows: across,
          });
          return tex;
        }
        gpu.dispatch(pack, {
          bindings: [bound.range, tex],
          params: [across, along, texels, height, at.base, strided, contiguous],
          workgroups: Math.ceil((texels * height) / PACK_WG),
        });
        return tex;
      };
      // A is packed again for every piece of B: pieces exist only past a
      // binding or texture limit, where the product dwarfs the packing.
      const aTex = packInto(0, piece.i.count, rm, aForm, piece.a, piece.aAt);
      const bTex = packInto(1, piece.j.count, rn, bForm, piece.b, piece.bAt);
      const groupsPerRow = Math.ceil(blocksN / wg);
      gpu.dispatch(kernel, {
        bindings: [aTex, bTex, piece.c.range, ...epilogueBindings(prod, piece)],
        params: uniforms(prod, piece, steps, blocksN, groupsPerRow),
        workgroups: Math.ceil(piece.i.count / rm) * groupsPerRow,
      });
    },
  };
}

/**
 * How an operand sits in its texture: "k", texel (s, i) = A(i, 4s … 4s+3),
 * for depth-layout operands; "row", texel (g, r) = A(4g … 4g+3, r), for
 * rows-layout operands. Either way the operand's contiguous direction runs
 * along the texture rows, so it can be copied rather than transposed.
 */
type TexelForm = "k" | "row";

function forms(kind: GemmKind): [TexelForm, TexelForm] {
  return [kind[0] === "n" ? "k" : "row", kind[1] === "t" ? "k" : "row"];
}

/**
 * Packed operand textures, kept per device and reused across products (a
 * new texture costs an allocation and a clear): at most {@linkcode POOL_SIZE}
 * shapes, least recently used dropped first. Counted in `gpu.memory()`.
 */
class TexturePool {
  #entries = new Map<string, Texture>();
  constructor(readonly gpu: Gpu) {}

  get(width: number, height: number, slot: number): Texture {
    const key = `${width}x${height}#${slot}`;
    let t = this.#entries.get(key);
    if (t && !t.destroyed) {
      this.#entries.delete(key);
    } else {
      t = this.gpu.texture(width, height, `gemm.operand${slot}`);
      if (this.#entries.size >= POOL_SIZE) {
        const [oldest, tex] = this.#entries.entries().next().value!;
        this.#entries.delete(oldest);
        tex.destroy();
      }
    }
    this.#entries.set(key, t);
    return t;
  }

  /** Free every pooled texture. */
  clear(): void {
    for (const t of this.#entries.values()) t.destroy();
    this.#entries.clear();
  }
}

const POOL_SIZE = 24;
const pools = new WeakMap<Gpu, TexturePool>();

function texturePool(gpu: Gpu): TexturePool {
  let p = pools.get(gpu);
  if (!p) {
    p = new TexturePool(gpu);
    pools.set(gpu, p);
  }
  return p;
}

/** Free the GEMM's pooled operand textures on `gpu` (they are reused otherwise). */
export function releaseGemmTextures(gpu: Gpu): void {
  pools.get(gpu)?.clear();
}

/** Every GEMM variant, by name. */
export const GEMM_VARIANTS: ReadonlyMap<string, GemmVariant> = new Map(
  [
    textureVariant(16, 16),
    textureVariant(8, 16),
    textureVariant(8, 8),
    tileVariant({ bm: 64, bn: 64, bk: 16, tm: 8, tn: 8 }),
    tileVariant({ bm: 128, bn: 64, bk: 16, tm: 8, tn: 8 }),
    tileVariant({ bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 }),
    simpleVariant(1, 4),
    simpleVariant(4, 4),
  ].map((v) => [v.name, v]),
);

/** The variant called `name`. @throws {RangeError} naming the known ones. */
export function gemmVariant(name: string): GemmVariant {
  const v = GEMM_VARIANTS.get(name);
  if (!v) {
    throw new RangeError(
      `Unknown GEMM variant "${name}" (known: ${[...GEMM_VARIANTS.keys()].join(", ")})`,
    );
  }
  return v;
}

/** Split chunks further so none is longer than `cap`. */
function capChunks(chunks: RowChunk[], cap: number): RowChunk[] {
  if (!Number.isFinite(cap)) return chunks;
  return chunks.flatMap(({ start, count }) => {
    const out: RowChunk[] = [];
    for (let s = 0; s < count; s += cap) {
      out.push({ start: start + s, count: Math.min(cap, count - s) });
    }
    return out;
  });
}

function specOf(e: GemmEpilogue): EpilogueSpec {
  return {
    bias: Boolean(e.bias),
    accumulate: Boolean(e.accumulate),
    aux: Boolean(e.aux),
    gelu: Boolean(e.gelu),
    residual: e.residual ? (e.gamma ? "gamma" : "plain") : "none",
    vector: false,
  };
}

function checkProduct(op: string, gpu: Gpu, p: GemmProduct): void {
  for (const [name, v] of Object.entries({ m: p.m, n: p.n, k: p.k })) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`${op}: ${name} is ${v}`);
  }
  const need = (name: string, t: Tensor, elems: number) => {
    assertF32(op, name, t);
    if (t.numel < elems) {
      throw new TypeError(`${op}: ${name} has ${t.numel} values, the product needs ${elems}`);
    }
  };
  for (const [name, o, rows] of [["A", p.a, p.m], ["B", p.b, p.n]] as const) {
    if (o.layout === "depth" ? o.ld < p.k : o.ld < rows) {
      throw new RangeError(`${op}: ${name}'s row length ${o.ld} is too short`);
    }
    if (rows > 0 && p.k > 0) {
      need(
        name,
        o.tensor,
        o.layout === "depth" ? (rows - 1) * o.ld + p.k : (p.k - 1) * o.ld + rows,
      );
    }
  }
  need("C", p.c, p.m * p.n);
  const e = p.epilogue ?? {};
  if (e.bias) need("bias", e.bias, p.n);
  if (e.gamma) need("gamma", e.gamma, p.n);
  if (e.aux) need("aux", e.aux, p.m * p.n);
  if (e.gamma && !e.residual) throw new TypeError(`${op}: gamma is given without residual`);
  const written = [p.c, e.aux].filter((t): t is Tensor => Boolean(t));
  const read = [p.a.tensor, p.b.tensor, e.bias, e.gamma].filter((t): t is Tensor => Boolean(t));
  for (const w of written) {
    if (
      read.some((r) => r.buffer === w.buffer) || (e.aux && w !== e.aux && w.buffer === e.aux.buffer)
    ) {
      throw new TypeError(
        `${op}: an output must not be one of the inputs (in-place is not supported)`,
      );
    }
  }
  for (const t of [e.bias, e.gamma]) {
    if (t) gpu.assertBindable(`${op}: ${t === e.bias ? "bias" : "gamma"}`, t.byteSize);
  }
}

/**
 * Record `C = epilogue(A·Bᵀ)` with the given variant. Records dispatches only.
 *
 * @throws {TypeError} on wrong sizes, dtypes or aliasing; {@link RangeError}
 *   when a row does not fit one binding or the variant cannot run here
 * @example
 * ```ts ignore
 * // y [M, N] = x [M, K] · W [N, K]ᵀ + b
 * await gemm(gpu, {
 *   a: { tensor: x, layout: "depth", ld: K },
 *   b: { tensor: w, layout: "depth", ld: K },
 *   c: y, m: M, n: N, k: K,
 *   epilogue: { bias: b },
 * }, gemmVariant("texture-16x16"));
 * ```
 */
export async function gemm(
  gpu: Gpu,
  prod: GemmProduct,
  variant: GemmVariant,
  options: GemmOptions = {},
  op = "gemm",
): Promise<void> {
  checkProduct(op, gpu, prod);
  const kind = gemmKind(prod);
  const why = variant.unsupported(gpu, kind);
  if (why) throw new RangeError(`${op}: GEMM variant ${variant.name} ${why}`);
  const { m, n, k, a, b } = prod;
  const e = prod.epilogue ?? {};
  if (m === 0 || n === 0) return;
  if (k === 0 && !e.accumulate) {
    throw new RangeError(`${op}: a product over 0 terms (k = 0) is only defined when accumulating`);
  }
  if (k === 0) return;
  const align = storageAlignment(gpu);
  const limit = bindingLimit(gpu, options);
  const caps = variant.caps(gpu, options, kind);
  const depthA = a.layout === "depth";
  const depthB = b.layout === "depth";
  const iRowBytes = Math.max(n, depthA ? a.ld : 0) * 4;
  const rStepBytes = Math.max(depthA ? 0 : a.ld, depthB ? 0 : b.ld) * 4;
  const is = capChunks(rowPieces(op, m, iRowBytes, limit, align), caps.i);
  const js = capChunks(
    depthB ? rowPieces(op, n, b.ld * 4, limit, align) : [{ start: 0, count: n }],
    caps.j,
  );
  const rs = capChunks(
    rStepBytes > 0 ? rowPieces(op, k, rStepBytes, limit, align) : [{ start: 0, count: k }],
    caps.r,
  );
  const spec = specOf(e);
  if (rs.length > 1 && (spec.aux || spec.gelu || spec.residual !== "none")) {
    throw new RangeError(
      `${op}: the reduction of ${k} terms is split into ${rs.length} pieces here (binding or ` +
        `texture limits), which the GELU, aux and residual epilogues do not support`,
    );
  }
  for (const i of is) {
    const c = bindRows(prod.c, i.start, i.count, n, align);
    const aux = e.aux ? bindRows(e.aux, i.start, i.count, n, align) : null;
    for (const [ri, r] of rs.entries()) {
      const [aBound, aAt] = bindOperand(a, i, r, align);
      // Later spans of r add to what the first one stored (bias included once).
      const pieceSpec = ri === 0 ? spec : { ...spec, bias: false, accumulate: true };
      for (const j of js) {
        const [bBound, bAt] = bindOperand(b, j, r, align);
        await variant.record(gpu, prod, {
          i,
          j,
          r,
          a: aBound,
          b: bBound,
          c,
          aux,
          aAt,
          bAt,
          spec: pieceSpec,
        }, options);
      }
    }
  }
}

/**
 * Bind the piece of an operand covering operand rows `rows` and terms `r`:
 * a depth-layout operand is bound by its rows, a rows-layout one by its
 * terms (each spans the whole other direction).
 */
function bindOperand(
  o: GemmOperand,
  rows: RowChunk,
  r: RowChunk,
  align: number,
): [BoundRows, Strides] {
  if (o.layout === "depth") {
    const bound = bindRows(o.tensor, rows.start, rows.count, o.ld, align);
    return [bound, { base: bound.base + r.start, si: o.ld, sr: 1 }];
  }
  const bound = bindRows(o.tensor, r.start, r.count, o.ld, align);
  return [bound, { base: bound.base + rows.start, si: 1, sr: o.ld }];
}

/** Floating-point operations of a product (2 per multiply-add). */
export function gemmFlops(m: number, n: number, k: number): number {
  return 2 * m * n * k;
}
