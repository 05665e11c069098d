/**
 * The tuning cache on disk, for the command line (the core keeps choices in
 * memory: it must run where there is no file system). One JSON file,
 * `TOST_TUNE_CACHE`, else `$XDG_CACHE_HOME/tost/tune.json`, else
 * `~/.cache/tost/tune.json`, holding every tuned op's choices for every
 * adapter seen (`src/gpu/tune.ts`). Writes are atomic (temporary file, then
 * rename) and merge with what other processes saved meanwhile.
 *
 * A training run pins its choices in its run directory
 * ({@linkcode pinnedTuneStore}), so that a resumed run uses the variants it
 * started with even if the global cache was retuned since.
 *
 * @module
 */

import { atomicTempPath } from "../io/atomic.ts";
import { TUNE_FORMAT, type TuneStore, type TuneTable } from "../gpu/tune.ts";

/** Where the cache lives: `TOST_TUNE_CACHE`, `$XDG_CACHE_HOME/tost/tune.json` or `~/.cache/…`. */
export function tuneCachePath(): string {
  const explicit = Deno.env.get("TOST_TUNE_CACHE");
  if (explicit) return explicit;
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/tost/tune.json`;
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
  if (!home) throw new Error("no cache directory: set TOST_TUNE_CACHE, XDG_CACHE_HOME or HOME");
  return `${home}/.cache/tost/tune.json`;
}

function parseTable(text: string, path: string): TuneTable {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SyntaxError(
      `${path} is not JSON (${err instanceof Error ? err.message : String(err)})`,
    );
  }
  const t = value as Partial<TuneTable> | null;
  if (
    !t || typeof t !== "object" || typeof t.adapters !== "object" || t.adapters === null ||
    Array.isArray(t.adapters)
  ) {
    throw new SyntaxError(`${path} is not a tost tuning cache (no "adapters" object)`);
  }
  for (const [key, classes] of Object.entries(t.adapters)) {
    if (typeof classes !== "object" || classes === null) {
      throw new SyntaxError(`${path}: the entry of adapter "${key}" is not an object`);
    }
    for (const [cls, choice] of Object.entries(classes)) {
      if (typeof (choice as { variant?: unknown })?.variant !== "string") {
        throw new SyntaxError(`${path}: the choice for "${cls}" on "${key}" has no variant`);
      }
    }
  }
  return { version: TUNE_FORMAT, adapters: t.adapters };
}

async function writeTable(path: string, table: TuneTable): Promise<void> {
  const slash = path.lastIndexOf("/");
  if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true });
  const tmp = atomicTempPath(path);
  try {
    await Deno.writeTextFile(tmp, JSON.stringify(table, null, 1) + "\n");
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}

async function readTable(path: string): Promise<TuneTable | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  return parseTable(text, path);
}

/**
 * A {@linkcode TuneStore} backed by a JSON file.
 *
 * @example
 * ```ts ignore
 * setTuneStore(fileTuneStore()); // what main.ts does
 * ```
 */
export function fileTuneStore(explicitPath?: string): TuneStore {
  // Resolved at first use, so a missing HOME surfaces as the tuner's one warning.
  const resolve = () => explicitPath ?? tuneCachePath();
  return {
    get where() {
      try {
        return resolve();
      } catch {
        return "no cache directory";
      }
    },
    load: () => readTable(resolve()),
    async save(table: TuneTable): Promise<void> {
      const path = resolve();
      // Keep what other processes saved since we loaded (other adapters and classes).
      let merged = table;
      try {
        const disk = await readTable(path);
        if (disk) {
          merged = { version: TUNE_FORMAT, adapters: { ...disk.adapters } };
          for (const [key, classes] of Object.entries(table.adapters)) {
            merged.adapters[key] = { ...disk.adapters[key], ...classes };
          }
        }
      } catch {
        // An unreadable file is replaced by what this process knows.
      }
      await writeTable(path, merged);
    },
  };
}

/**
 * A store that pins the choices a run starts with in `path` (a file in the
 * run directory) on top of `global`: the first load copies the global
 * table into `path`; later loads (a resumed run) take `path`'s choices
 * first and the global ones only for shape classes the run had not seen.
 * New choices are saved to both.
 *
 * @example
 * ```ts ignore
 * setTuneStore(pinnedTuneStore(`${out}/tune.json`, tuneStore())); // what tost train does
 * ```
 */
export function pinnedTuneStore(path: string, global: TuneStore): TuneStore {
  return {
    get where() {
      return `${path} (pinned for this run), ${global.where}`;
    },
    async load(): Promise<TuneTable | null> {
      const pinned = await readTable(path);
      let shared: TuneTable | null = null;
      try {
        shared = await global.load();
      } catch {
        shared = null; // the run's own file still pins what it used
      }
      if (!pinned) {
        const first = shared ?? { version: TUNE_FORMAT, adapters: {} };
        await writeTable(path, first);
        return first;
      }
      const merged: TuneTable = { version: TUNE_FORMAT, adapters: { ...shared?.adapters } };
      for (const [key, classes] of Object.entries(pinned.adapters)) {
        merged.adapters[key] = { ...merged.adapters[key], ...classes };
      }
      return merged;
    },
    async save(table: TuneTable): Promise<void> {
      await writeTable(path, table);
      await global.save(table);
    },
  };
}
