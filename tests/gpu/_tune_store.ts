/**
 * Test helper: a tuning store that counts its loads and saves.
 *
 * @module
 */

import { memoryTuneStore, type TuneStore, type TuneTable } from "../../src/gpu/tune.ts";

/** A memory store (holding `initial`, if given) that counts its loads and saves. */
export function countingStore(initial: TuneTable | null = null): {
  store: TuneStore;
  counts: { loads: number; saves: number };
} {
  const inner = memoryTuneStore();
  const counts = { loads: 0, saves: 0 };
  if (initial) inner.save(initial);
  const store: TuneStore = {
    where: "test",
    load: () => {
      counts.loads++;
      return inner.load();
    },
    save: (t) => {
      counts.saves++;
      return inner.save(t);
    },
  };
  return { store, counts };
}
