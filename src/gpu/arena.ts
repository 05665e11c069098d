/**
 * Arenas: the one way tost owns the temporary tensors of a forward pass or a
 * training step.
 *
 * Inside {@linkcode Arena.use}, every {@linkcode Gpu.empty} and
 * {@linkcode Gpu.upload} — in the models, the layers and the ops alike —
 * takes one of the arena's buffers instead of creating one. Destroying such
 * a tensor hands its buffer back for the next allocation of the same size
 * in the same pass (queue order makes the reuse safe: the new writer is
 * recorded after the old readers), and {@linkcode Arena.reset} hands every
 * buffer back at once. The buffers themselves stay allocated until
 * {@linkcode Arena.destroy}.
 *
 * Allocation is deterministic: the i-th allocation of a pass takes the
 * buffer the i-th allocation of the previous pass took, when it is free and
 * fits; otherwise the smallest free buffer that holds the tensor (and is at
 * most twice its size, so a small tensor never pins a large buffer), the
 * first made among equals; a new one is created only when none fits. A pass that repeats the same allocations after a
 * reset (a training step, a decoding step, an evaluation batch) therefore
 * gets the same buffers in the same order and creates none: steady state
 * allocates nothing, and a bind group made for a buffer of one step fits the
 * same buffer in the next. Sizes that vary a little from pass to pass (the
 * embedding backward's token groups) settle on buffers of the largest size
 * seen.
 *
 * A buffer handed out again is cleared first, so an arena tensor starts at
 * zero like a fresh one; tensors of a previous pass count as destroyed
 * after a reset (using one throws).
 *
 * @example
 * ```ts ignore
 * const arena = new Arena(gpu, "train");
 * for (const batch of batches) {
 *   arena.reset();
 *   await arena.use(async () => {
 *     const loss = await trainingPass(gpu, params, grads, batch);
 *     console.log((await loss.read())[0]);
 *   });
 * }
 * arena.destroy();
 * ```
 *
 * @module
 */

import { Tensor } from "./runtime.ts";
import type { Allocator, DType, Gpu, TensorOwner } from "./runtime.ts";

interface Slot {
  /** The counted buffer this slot owns. */
  backing: Tensor;
  /** Its bytes. */
  bytes: number;
  /** Whether a live tensor of this pass uses it. */
  busy: boolean;
}

/** What an arena holds (see {@linkcode Arena.stats}). */
export interface ArenaStats {
  /** Buffers the arena owns. */
  buffers: number;
  /** Their bytes. */
  bytes: number;
  /** Buffers created since the arena was made (constant in steady state). */
  created: number;
  /** Tensors handed out and not yet given back. */
  live: number;
}

/** Buffer bytes of a tensor of `n` elements (as the runtime pads them). */
function paddedBytes(n: number): number {
  return Math.max(16, Math.ceil((n * 4) / 16) * 16);
}

/** Temporary tensors of repeated passes, on a fixed set of reused buffers. */
export class Arena implements Allocator, TensorOwner {
  readonly #gpu: Gpu;
  readonly #label: string;
  /** Every slot, in creation order. */
  readonly #slots: Slot[] = [];
  readonly #handed = new Map<Tensor, Slot>();
  #created = 0;
  #destroyed = false;
  /** The slot each allocation of the last pass took, in order (replayed by the next pass). */
  readonly #plan: Slot[] = [];
  /** Allocations of this pass so far. */
  #taken = 0;

  constructor(gpu: Gpu, label = "arena") {
    this.#gpu = gpu;
    this.#label = label;
  }

  /**
   * Run `fn` with this arena serving every allocation on its runtime
   * (nested scopes: the innermost wins; {@linkcode Gpu.outsideArena}
   * suspends them).
   *
   * @throws {Error} when the arena was destroyed
   */
  async use<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#destroyed) throw new Error(`Arena "${this.#label}" used after destroy()`);
    this.#gpu._enterArena(this);
    try {
      return await fn();
    } finally {
      this.#gpu._leaveArena(this);
    }
  }

  /** @internal serves `gpu.empty` inside {@linkcode use} */
  _take(shape: readonly number[], dtype: DType, label: string, zero: boolean): Tensor {
    let n = 1;
    for (const d of shape) n *= d;
    const bytes = paddedBytes(n);
    const fits = (s: Slot | undefined): s is Slot =>
      !!s && !s.busy && s.bytes >= bytes && s.bytes <= 2 * bytes;
    // The slot the same allocation of the previous pass took, when it fits:
    // a pass that repeats its allocations replays them exactly (best fit
    // alone could hand an early small tensor a slot that a later, larger one
    // of the first pass created, and make the second pass create another).
    const planned = this.#plan[this.#taken];
    let slot: Slot | undefined = fits(planned) ? planned : undefined;
    if (!slot) {
      for (const s of this.#slots) {
        if (!fits(s)) continue;
        if (!slot || s.bytes < slot.bytes) slot = s;
      }
    }
    if (slot) {
      if (zero) this.#gpu.clear(slot.backing);
    } else {
      const backing = this.#gpu._fresh([bytes / 4], "f32", `${this.#label}.${label}`);
      slot = { backing, bytes, busy: false };
      this.#slots.push(slot);
      this.#created++;
    }
    slot.busy = true;
    this.#plan[this.#taken++] = slot;
    const t = new Tensor(this.#gpu, slot.backing.buffer, [...shape], dtype, this);
    this.#handed.set(t, slot);
    return t;
  }

  /** @internal called by `Tensor.destroy` */
  _release(t: Tensor): void {
    const slot = this.#handed.get(t);
    if (!slot) return;
    this.#handed.delete(t);
    slot.busy = false;
  }

  /**
   * Hand every buffer back (the tensors of the last pass count as
   * destroyed); the next pass takes the same buffers again.
   */
  reset(): void {
    for (const t of [...this.#handed.keys()]) t.destroy();
    this.#taken = 0;
  }

  /** Free every buffer. The arena cannot be used again. */
  destroy(): void {
    this.reset();
    for (const s of this.#slots) s.backing.destroy();
    this.#slots.length = 0;
    this.#plan.length = 0;
    this.#destroyed = true;
  }

  /** Buffers, bytes and tensors in use (for tests and memory reports). */
  get stats(): ArenaStats {
    const bytes = this.#slots.reduce((a, s) => a + s.bytes, 0);
    return { buffers: this.#slots.length, bytes, created: this.#created, live: this.#handed.size };
  }
}

/**
 * Run `fn` in `arena` when one is given (its caller resets it), else in a
 * fresh arena destroyed at the end: the temporaries of a one-off pass.
 */
export async function withArena<T>(
  gpu: Gpu,
  arena: Arena | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  if (arena) return await arena.use(fn);
  const own = new Arena(gpu, "pass");
  try {
    return await own.use(fn);
  } finally {
    own.destroy();
  }
}
