/**
 * WGSL sources of the GEMM kernels: `kernels/gemm_common.wgsl` (parameters,
 * epilogue) joined with one variant's file, its slots filled. Two kinds of
 * slot are generated here rather than written out:
 *
 * - the epilogue's bindings and steps, from the product's options (each
 *   combination is its own pipeline, so absent options cost nothing and need
 *   no placeholder bindings);
 * - the unrolled register block of the texture and simple kernels: on
 *   lavapipe an RM×RN block must live in plain variables (`c3_5`), never in a
 *   private array indexed by a loop variable (see `kernels/gemm_block.wgsl`).
 *
 * @module
 */

import commonWgsl from "../../kernels/gemm_common.wgsl" with { type: "text" };
import blockWgsl from "../../kernels/gemm_block.wgsl" with { type: "text" };
import tileWgsl from "../../kernels/gemm_tile.wgsl" with { type: "text" };
import type { SlotValue } from "../gpu/render.ts";

/** What the epilogue does with each accumulated dot product (see gemm_common.wgsl). */
export interface EpilogueSpec {
  /** `v += bias[j]` */
  bias: boolean;
  /** `v += C[i, j]` */
  accumulate: boolean;
  /** `aux[i, j] = v` before GELU and the residual */
  aux: boolean;
  /** `v = gelu(v)` */
  gelu: boolean;
  /** `C[i, j] += gamma[j]·v` ("gamma"), `C[i, j] += v` ("plain"), or `C[i, j] = v` ("none") */
  residual: "none" | "gamma" | "plain";
  /**
   * Store 4 outputs at a time (`emit4`, C and the epilogue tensors bound as
   * array<vec4f>): register-block kernels only, when every row of C, the
   * piece's first column and the bias and gamma sizes are multiples of 4.
   */
  vector: boolean;
}

/** The epilogue of a plain product `C = A·Bᵀ`. */
export const PLAIN_EPILOGUE: Readonly<EpilogueSpec> = {
  bias: false,
  accumulate: false,
  aux: false,
  gelu: false,
  residual: "none",
  vector: false,
};

/** The extra bindings (4, 5, …) an epilogue uses, in binding order. */
export function epilogueBindingNames(spec: EpilogueSpec): ("bias" | "gamma" | "aux")[] {
  const names: ("bias" | "gamma" | "aux")[] = [];
  if (spec.bias) names.push("bias");
  if (spec.residual === "gamma") names.push("gamma");
  if (spec.aux) names.push("aux");
  return names;
}

/** A short name for an epilogue, for pipeline labels: e.g. `bias+gelu+aux`. */
export function epilogueName(spec: EpilogueSpec): string {
  const parts: string[] = [];
  if (spec.bias) parts.push("bias");
  if (spec.accumulate) parts.push("acc");
  if (spec.aux) parts.push("aux");
  if (spec.gelu) parts.push("gelu");
  if (spec.residual !== "none") parts.push(spec.residual === "gamma" ? "residual" : "add");
  return (parts.join("+") || "plain") + (spec.vector ? ",vec4" : "");
}

function epilogueSlots(spec: EpilogueSpec): Record<string, string> {
  // The vector form does each scalar step on a vec4f: the same operations
  // per component, so the same bits (see kernels/gemm_common.wgsl).
  const [type, q] = spec.vector ? ["vec4f", " / 4u"] : ["f32", ""];
  const bindings = [
    `@group(0) @binding(3) var<storage, read_write> c: array<${type}>;`,
    ...epilogueBindingNames(spec).map((name, i) => {
      const access = name === "aux" ? "read_write" : "read";
      return `@group(0) @binding(${4 + i}) var<storage, ${access}> ${name}: array<${type}>;`;
    }),
  ];
  const steps: string[] = [];
  if (spec.bias) steps.push(`v += bias[(p.e_base + j)${q}];`);
  if (spec.accumulate) steps.push("v += c[at];");
  if (spec.aux) steps.push(`aux[(p.aux_base + i * p.c_ld + j)${q}] = v;`);
  if (spec.gelu) {
    steps.push(
      spec.vector ? "v = vec4f(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w));" : "v = gelu(v);",
    );
  }
  if (spec.residual === "gamma") steps.push(`c[at] = c[at] + gamma[(p.e_base + j)${q}] * v;`);
  else if (spec.residual === "plain") steps.push("c[at] = c[at] + v;");
  else steps.push("c[at] = v;");
  const emit = [
    spec.vector
      ? "// Store the dot products `acc` of outputs (i, j … j+3) of this piece (j % 4 = 0)."
      : "// Store the dot product `acc` of output (i, j) of this piece.",
    `fn emit${spec.vector ? "4" : ""}(i: u32, j: u32, acc: ${type}) {`,
    "  if (i >= p.m || j >= p.n) {",
    "    return;",
    "  }",
    `  let at = (p.c_base + i * p.c_ld + j)${q};`,
    "  var v = acc;",
    ...steps.map((x) => `  ${x}`),
    "}",
  ];
  return { epilogueBindings: bindings.join("\n"), emit: emit.join("\n") };
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * Declarations, chains and store of an RM×RN block of plain accumulators:
 * the store copies the block into `blk` and emits it in a loop (kept out of
 * the unrolled code: an unrolled epilogue is slower on lavapipe), one output
 * or, with the vector epilogue, 4 neighbouring outputs at a time.
 */
function blockSlots(
  rm: number,
  rn: number,
  vector: boolean,
  fma: (i: number, j: number) => string,
) {
  const cells = range(rm).flatMap((i) => range(rn).map((j) => [i, j] as const));
  const store = vector
    ? [
      "var blk: array<vec4f, RM * RN / 4u>;",
      ...range(rm).flatMap((i) =>
        range(rn / 4).map((h) =>
          `blk[${i * (rn / 4) + h}] = vec4f(${
            range(4).map((x) => `c${i}_${4 * h + x}`).join(", ")
          });`
        )
      ),
      "for (var e = 0u; e < RM * RN / 4u; e++) {",
      "  emit4(i0 + e / (RN / 4u), j0 + 4u * (e % (RN / 4u)), blk[e]);",
      "}",
    ]
    : [
      "var blk: array<f32, RM * RN>;",
      ...cells.map(([i, j]) => `blk[${i * rn + j}] = c${i}_${j};`),
      "for (var e = 0u; e < RM * RN; e++) {",
      "  emit(i0 + e / RN, j0 + e % RN, blk[e]);",
      "}",
    ];
  return {
    declare: cells.map(([i, j]) => `var c${i}_${j} = 0.0;`).join("\n  "),
    fma: cells.map(([i, j]) => `c${i}_${j} = ${fma(i, j)};`).join("\n    "),
    store: store.join("\n  "),
  };
}

/** A kernel's name (for errors and the pipeline cache), template and slots. */
export interface GemmSource {
  name: string;
  template: string;
  slots: Record<string, SlotValue>;
}

const XYZW = ["x", "y", "z", "w"];

/**
 * The register-block kernel reading packed textures, an RM×RN block per
 * invocation; each operand in "k" form (texel = 4 terms of one row) or "row"
 * form (texel = 4 rows at one term), see `gemm.ts`.
 */
export function textureSource(
  rm: number,
  rn: number,
  workgroupSize: number,
  spec: EpilogueSpec,
  aForm: "k" | "row" = "k",
  bForm: "k" | "row" = "k",
): GemmSource {
  // The loads of one step (4 terms) and the expression of term q of row `at`.
  const operand = (name: "a" | "b", rows: number, origin: string, form: "k" | "row") => {
    const tex = `${name}_tex`;
    if (form === "k") {
      return {
        loads: range(rows).map((i) =>
          `let ${name}${i} = textureLoad(${tex}, vec2u(s, ${origin} + ${i}u));`
        ),
        term: (at: number, q: number) => `${name}${at}.${XYZW[q]}`,
      };
    }
    return {
      loads: range(4).flatMap((q) =>
        range(rows / 4).map((g) =>
          `let ${name}${q}_${g} = textureLoad(${tex}, vec2u(${origin} / 4u + ${g}u, 4u * s + ${q}u));`
        )
      ),
      term: (at: number, q: number) => `${name}${q}_${at >> 2}.${XYZW[at & 3]}`,
    };
  };
  const a = operand("a", rm, "i0", aForm);
  const b = operand("b", rn, "j0", bForm);
  const chain = (i: number, j: number) =>
    range(4).reduce((acc, q) => `fma(${a.term(i, q)}, ${b.term(j, q)}, ${acc})`, `c${i}_${j}`);
  return blockSource(`gemm_texture_${aForm}${bForm}`, rm, rn, workgroupSize, spec, {
    ...blockSlots(rm, rn, spec.vector, chain),
    operands: [
      "@group(0) @binding(1) var a_tex: texture_storage_2d<rgba32float, read>;",
      "@group(0) @binding(2) var b_tex: texture_storage_2d<rgba32float, read>;",
    ].join("\n"),
    rows: "",
    load: [...a.loads, ...b.loads].join("\n    "),
  });
}

/** kernels/gemm_block.wgsl with its generated slots. */
function blockSource(
  name: string,
  rm: number,
  rn: number,
  workgroupSize: number,
  spec: EpilogueSpec,
  generated: Record<string, string>,
): GemmSource {
  return {
    name,
    template: commonWgsl + blockWgsl,
    slots: { rm, rn, workgroupSize, ...epilogueSlots(spec), ...generated },
  };
}

/** The register-block kernel reading the buffers (no packing), an RM×RN block per invocation. */
export function simpleSource(
  rm: number,
  rn: number,
  workgroupSize: number,
  spec: EpilogueSpec,
): GemmSource {
  return blockSource("gemm_simple", rm, rn, workgroupSize, spec, {
    ...blockSlots(rm, rn, spec.vector, (i, j) => `fma(a${i}, b${j}, c${i}_${j})`),
    operands: [
      "@group(0) @binding(1) var<storage, read> a: array<f32>;",
      "@group(0) @binding(2) var<storage, read> b: array<f32>;",
    ].join("\n"),
    rows: [
      ...range(rm).map((i) => `let ra${i} = p.a_base + min(i0 + ${i}u, p.m - 1u) * p.a_si;`),
      ...range(rn).map((j) => `let rb${j} = p.b_base + min(j0 + ${j}u, p.n - 1u) * p.b_sj;`),
    ].join("\n  "),
    load: [
      ...range(rm).map((i) => `let a${i} = a[ra${i} + s * p.a_sr];`),
      ...range(rn).map((j) => `let b${j} = b[rb${j} + s * p.b_sr];`),
    ].join("\n    "),
  });
}

/** Workgroup tiling of the tile kernel. */
export interface TileShape {
  bm: number;
  bn: number;
  bk: number;
  tm: number;
  tn: number;
}

/** The workgroup-memory tile kernel for given operand layouts. */
export function tileSource(
  t: TileShape,
  aDepthContiguous: boolean,
  bDepthContiguous: boolean,
  spec: EpilogueSpec,
): GemmSource {
  return {
    name: "gemm_tile",
    template: commonWgsl + tileWgsl,
    slots: {
      ...t,
      aDepthContiguous: String(aDepthContiguous),
      bDepthContiguous: String(bDepthContiguous),
      ...epilogueSlots(spec),
    },
  };
}
