/**
 * Class attention (CaiT, XCiT): softmax attention in which only the class
 * token (token 0) queries, over all `N` tokens including itself. The vision
 * models' class-attention blocks use it; its cost is linear in `N`.
 *
 * Input is the packed projection `qkv [B, N, 3·C]` (last dimension
 * `(3, H, d)`); output `[B, 1, C]`, heads concatenated. Scale `1/√d`.
 *
 * GPU kernels, two designs chosen per adapter by measuring
 * ({@linkcode CLASS_ATTENTION}): `workgroup` (`kernels/class_attention.wgsl`,
 * one workgroup per batch and head, keys spread over its invocations,
 * partial softmaxes merged: hardware GPUs) and `serial`
 * (`kernels/class_attention_serial.wgsl`, one invocation per batch and head
 * walking the keys in order, no barriers: software adapters). They may
 * differ in the last bits.
 * Float64 reference: `attentionReference(…, { classToken: true })` in
 * `attention_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import classWgsl from "../../kernels/class_attention.wgsl" with { type: "text" };
import classSerialWgsl from "../../kernels/class_attention_serial.wgsl" with { type: "text" };
import { bindingLimit, bindRows, rowPieces, storageAlignment } from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";
import { qkvShape } from "./_attention_shape.ts";
import { bucket, testValues, type Tunable } from "../gpu/tune.ts";
import { mismatch, resolveVariant, tunableOp } from "./_tuned.ts";
import { serialBudgetExceeded } from "./_serial.ts";
import { attentionReference } from "./attention_reference.ts";

/** vec4 columns merged per step: 8 (or fewer for small heads), dividing ⌈d/4⌉. */
function mergeVec4s(headVec4s: number): number {
  for (let ch = Math.min(8, headVec4s); ch > 1; ch--) {
    if (headVec4s % ch === 0) return ch;
  }
  return 1;
}

/**
 * Class attention of packed `qkv`: token 0's query against every token.
 * Records dispatches only.
 *
 * @param qkv f32 `[B, N, 3·C]`, last dimension `(3, heads, d)`, `d ≤ 128`, `N ≥ 1`
 * @param heads number of heads `H` (`C = H·d`)
 * @param options `maxBindingBytes` (tests), `variant` (tests, benches)
 * @returns a new f32 tensor `[B, 1, C]`, heads concatenated
 * @throws {TypeError} for a malformed `qkv`, a head count that does not
 *   divide it, or no tokens
 * @throws {RangeError} for a head size over 128 or one row of `qkv` over one
 *   storage binding
 * @example
 * ```ts ignore
 * const cls = await classAttention(gpu, qkv, 4); // [B, 1, C]
 * ```
 */
export async function classAttention(
  gpu: Gpu,
  qkv: Tensor,
  heads: number,
  options: ChunkOptions & { variant?: string } = {},
): Promise<Tensor> {
  const op = "classAttention";
  const { B, N, H, d, C } = qkvShape(op, qkv, heads);
  if (N === 0) throw new TypeError(`${op}: qkv has no tokens (the class token is token 0)`);
  const out = gpu.empty([B, 1, C], "f32", "class_attention.out");
  if (B === 0) return out;
  const limit = bindingLimit(gpu, options);
  const align = storageAlignment(gpu);
  const headVec4s = Math.ceil(d / 4);
  let variant: string;
  try {
    variant = await resolveVariant(gpu, op, CLASS_ATTENTION, { B, N, H, d }, options.variant);
  } catch (err) {
    out.destroy();
    throw err;
  }
  const serial = variant === "serial";
  const kernel = serial
    ? await gpu.kernel("class_attention_serial", classSerialWgsl, {
      headVec4s,
      workgroupSize: SERIAL_WG,
    })
    : await gpu.kernel("class_attention", classWgsl, {
      headVec4s,
      mergeVec4s: mergeVec4s(headVec4s),
    });
  /** Workgroups for `pairs` (batch, head) pairs. */
  const groups = (pairs: number) => serial ? Math.ceil(pairs / SERIAL_WG) : pairs;
  const scale = f32(Math.LOG2E / Math.sqrt(d));
  const params = (
    pairs: number,
    keys: number,
    qBase: number,
    kvBase: number,
    oBase: number,
    sBase: number,
    first: boolean,
    last: boolean,
  ) => [
    H,
    d,
    C,
    pairs,
    keys,
    qBase,
    kvBase,
    oBase,
    sBase,
    N * 3 * C,
    scale,
    first ? 1 : 0,
    last ? 1 : 0,
  ];

  const batchBytes = N * 3 * C * 4;
  if (batchBytes + align - 4 <= limit) {
    const placeholder = gpu.empty([4], "f32", "class_attention.no_state");
    for (const { start, count } of rowPieces(op, B, batchBytes, limit, align)) {
      const src = bindRows(qkv, start, count, N * 3 * C, align);
      const dst = bindRows(out, start, count, C, align);
      gpu.dispatch(kernel, {
        bindings: [src.range, src.range, dst.range, placeholder],
        params: params(count * H, N, src.base, src.base, dst.base, 0, true, true),
        workgroups: groups(count * H),
      });
    }
    placeholder.destroy();
    return out;
  }

  // One batch is over a binding: ranges of keys, carrying the softmax state.
  const pieces = rowPieces(op, N, 3 * C * 4, limit, align);
  const state = gpu.empty([B, H, 2], "f32", "class_attention.state");
  for (let b = 0; b < B; b++) {
    const q = bindRows(qkv, b * N, 1, 3 * C, align);
    const dst = bindRows(out, b, 1, C, align);
    const st = bindRows(state, b, 1, 2 * H, align);
    pieces.forEach((kp, index) => {
      const kv = bindRows(qkv, b * N + kp.start, kp.count, 3 * C, align);
      gpu.dispatch(kernel, {
        bindings: [q.range, kv.range, dst.range, st.range],
        params: params(
          H,
          kp.count,
          q.base,
          kv.base,
          dst.base,
          st.base,
          index === 0,
          index === pieces.length - 1,
        ),
        workgroups: groups(H),
      });
    });
  }
  state.destroy();
  return out;
}

/** (batch, head) pairs (invocations) per workgroup of the serial design. */
const SERIAL_WG = 8;

/** A class-attention call: batch elements, tokens, heads and head size. */
export interface ClassAttentionShape {
  B: number;
  N: number;
  H: number;
  d: number;
}

/** The class-attention designs (see the module doc). */
export const CLASS_ATTENTION_VARIANTS = ["workgroup", "serial"] as const;

/**
 * Loop iterations of one invocation of the serial kernel over `keys` keys:
 * per key two loops over the head's vec4s.
 */
function serialIterations(keys: number, d: number): number {
  const d4 = Math.ceil(d / 4);
  return keys * (2 * d4 + 1) + 3 * d4;
}

/** Why a class-attention variant cannot run a call, or null. */
export function classAttentionUnsupported(variant: string, s: ClassAttentionShape): string | null {
  if (!(CLASS_ATTENTION_VARIANTS as readonly string[]).includes(variant)) {
    return `is unknown (known: ${CLASS_ATTENTION_VARIANTS.join(", ")})`;
  }
  if (variant !== "serial") return null;
  return serialBudgetExceeded(serialIterations(s.N, s.d), `${s.N} keys of ${s.d} values`);
}

/** The shape class: batch·heads (the parallelism), tokens and head size, each to a power of 4. */
function classAttentionClass(s: ClassAttentionShape): string | null {
  if (s.B * s.H < 4) return null;
  return `p${bucket(s.B * s.H)} n${bucket(s.N)} d${bucket(s.d)}`;
}

/** Shapes the variants are validated at (`[B, N, H, d]`; keys split over bindings in the last). */
const CHECK_CLASS: readonly ClassAttentionShape[] = [
  { B: 1, N: 1, H: 1, d: 5 },
  { B: 3, N: 17, H: 4, d: 16 },
  { B: 2, N: 63, H: 6, d: 7 },
];

async function validateClassAttention(gpu: Gpu, variant: string): Promise<string | null> {
  for (const [i, s] of CHECK_CLASS.entries()) {
    const { B, N, H, d } = s;
    const hx = testValues(B * N * 3 * H * d, 11 + i).map((v) => 3 * v);
    const qkv = gpu.upload(hx, [B, N, 3 * H * d], "check.qkv");
    try {
      // The last shape also runs with its keys split over several bindings.
      for (
        const limit of i === CHECK_CLASS.length - 1 ? [undefined, 20 * 3 * H * d * 4] : [undefined]
      ) {
        const y = await classAttention(gpu, qkv, H, { variant, maxBindingBytes: limit });
        const got = await y.read();
        y.destroy();
        const want = attentionReference(hx, B, N, H, d, { classToken: true });
        const why = mismatch(`[${B}, ${N}, ${H}, ${d}]`, got, want, { atol: 2e-5, rtol: 1e-4 });
        if (why) return why;
      }
    } finally {
      qkv.destroy();
    }
  }
  return null;
}

/** Class attention's forward as a tuned op ("class_attention" in `tost tune` and `tost info`). */
export const CLASS_ATTENTION: Tunable<ClassAttentionShape> = tunableOp<ClassAttentionShape>({
  op: "class_attention",
  version: 1,
  variants: CLASS_ATTENTION_VARIANTS,
  unsupported: (_gpu, v, s) => classAttentionUnsupported(v, s),
  shapeClass: classAttentionClass,
  fallback: (gpu, s) =>
    gpu.info.software && classAttentionUnsupported("serial", s) === null ? "serial" : "workgroup",
  validate: validateClassAttention,
  workload(gpu, { B, N, H, d }) {
    const qkv = gpu.upload(testValues(B * N * 3 * H * d, 1), [B, N, 3 * H * d], "tune.qkv");
    return {
      shape: [B, N, H, d],
      run: async (variant) => {
        (await classAttention(gpu, qkv, H, { variant })).destroy();
      },
      destroy() {
        qkv.destroy();
      },
    };
  },
});
