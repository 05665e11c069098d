/**
 * Reading a forward's results back: the logits and, for the fixture checks,
 * copies of the named intermediate activations a forward reports.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";

/** Called with every named intermediate activation while a forward is recorded. */
export type ActivationHook = (name: string, t: Tensor) => void;

/**
 * Which activations to read back: all (`true`), none (`false`), or those
 * whose names the function accepts.
 */
export type ActivationFilter = boolean | ((name: string) => boolean);

/** Logits of a forward and, when requested, copies of its named activations. */
export interface ForwardOutput {
  logits: Float32Array;
  /** Fixture-named activations, when requested. */
  activations: Map<string, { shape: number[]; data: Float32Array }>;
}

/**
 * Record a whole forward with `encode`, submit it once and read back the
 * logits and, with `activations`, a copy of every activation the forward
 * reports through its hook (or of those the filter accepts), all under one
 * host wait.
 */
export async function readForward(
  gpu: Gpu,
  activations: ActivationFilter,
  encode: (onActivation: ActivationHook | undefined) => Promise<Tensor>,
): Promise<ForwardOutput> {
  const saved: [string, Tensor][] = [];
  const wanted = typeof activations === "function" ? activations : () => true;
  try {
    const onActivation: ActivationHook | undefined = activations
      ? (name, t) => {
        if (!wanted(name)) return;
        const copy = gpu.empty(t.shape, "f32", `act.${name}`);
        gpu.copy(t, copy);
        saved.push([name, copy]);
      }
      : undefined;
    const logits = await encode(onActivation);
    try {
      // One wait for the logits and every activation.
      const [values, ...acts] = await gpu.readMany([logits, ...saved.map(([, t]) => t)]);
      const out: ForwardOutput = { logits: values as Float32Array, activations: new Map() };
      saved.forEach(([name, t], i) => {
        out.activations.set(name, { shape: [...t.shape], data: acts[i] as Float32Array });
      });
      return out;
    } finally {
      logits.destroy();
    }
  } finally {
    for (const [, t] of saved) t.destroy();
  }
}
