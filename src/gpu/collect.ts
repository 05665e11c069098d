/**
 * Pipelined evaluation: run many batches on the GPU and read their results
 * back a few times, not once per batch.
 *
 * Each batch's result (per-token losses, logits) is copied into the next
 * free range of one collection buffer on the GPU; every `readEvery` batches
 * (or when the buffer is full, or at the end) the collected values are read
 * back under one host wait. That read is issued as soon as its last batch is
 * recorded and awaited only after the next batch has been submitted, so the
 * GPU works through the wait. Results reach `consume` batch by batch, in
 * order, exactly as a read per batch would give them.
 *
 * @module
 */

import type { Gpu, Tensor } from "./runtime.ts";
import type { Arena } from "./arena.ts";

/** Options of {@linkcode collectBatches}. */
export interface CollectOptions<B> {
  /** Each batch's temporaries (reset before every batch). */
  arena: Arena;
  /** Record one batch inside `arena`; its f32 result tensor (only recorded, not read). */
  record: (batch: B) => Promise<Tensor>;
  /** Receives each batch's result, in order, as the reads arrive. */
  consume: (batch: B, values: Float32Array) => void | Promise<void>;
  /** Batches per read (default: all of them in one read, as far as `capacity` allows). */
  readEvery?: number;
  /** Float values the collection buffer holds (default 4 Mi): a read is made when it is full. */
  capacity?: number;
  /** Called after each read with the number of batches consumed so far. */
  onRead?: (batches: number) => void;
}

/**
 * Record every batch, collect the results on the GPU and hand them to
 * `consume` after a few reads (see the module notes).
 *
 * @throws {RangeError} when one batch's result exceeds `capacity`
 * @example
 * ```ts ignore
 * let sum = 0;
 * await collectBatches(gpu, batches, {
 *   arena,
 *   record: (b) => recordLanguageLosses(gpu, store, b),
 *   consume: (_, losses) => { for (const l of losses) sum += l; },
 * });
 * ```
 */
export async function collectBatches<B>(
  gpu: Gpu,
  batches: Iterable<B>,
  options: CollectOptions<B>,
): Promise<void> {
  const readEvery = options.readEvery ?? Infinity;
  if (!(readEvery >= 1)) throw new RangeError(`readEvery must be ≥ 1, got ${readEvery}`);
  const capacity = options.capacity ?? 4 * 1024 * 1024;
  let buffer: Tensor | null = null;
  /** Batches collected since the last read, with their ranges. */
  let group: { batch: B; offset: number; count: number }[] = [];
  let used = 0;
  let consumed = 0;
  let inFlight: Promise<void> | null = null;
  const issueRead = () => {
    const parts = group;
    group = [];
    used = 0;
    const pending = gpu.readMany([buffer!]); // the wait starts here
    return (async () => {
      const [values] = await pending;
      for (const p of parts) {
        await options.consume(
          p.batch,
          (values as Float32Array).subarray(p.offset, p.offset + p.count),
        );
      }
      consumed += parts.length;
      options.onRead?.(consumed);
    })();
  };
  try {
    for (const batch of batches) {
      options.arena.reset();
      const result = await options.arena.use(() => options.record(batch));
      if (result.dtype !== "f32") {
        throw new TypeError(`collectBatches: results must be f32, got ${result.dtype}`);
      }
      const n = result.numel;
      if (n > capacity) {
        throw new RangeError(
          `A batch's result of ${n} values exceeds the collection's ${capacity}`,
        );
      }
      buffer ??= gpu.outsideArena(() => gpu.empty([capacity], "f32", "collect"));
      if (used + n > capacity) {
        // Full: read what is there first (this batch is already recorded behind it).
        if (inFlight) await inFlight;
        inFlight = issueRead();
      }
      gpu.copy(result, buffer, n * 4, 0, used * 4);
      group.push({ batch, offset: used, count: n });
      used += n;
      gpu.flush();
      // The read issued after the batch before: awaited while this one runs.
      if (inFlight) {
        await inFlight;
        inFlight = null;
      }
      if (group.length >= readEvery) inFlight = issueRead();
    }
    if (inFlight) await inFlight;
    inFlight = null;
    if (group.length > 0) await issueRead();
  } finally {
    // A failed read leaves nothing to wait for; the buffer goes either way.
    await inFlight?.catch(() => {});
    buffer?.destroy();
  }
}
