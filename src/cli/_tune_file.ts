/**
 * The GEMM tuning cache on disk, for the command line (the core keeps
 * choices in memory: it must run where there is no file system). One JSON
 * file, `TOST_TUNE_CACHE`, else `$XDG_CACHE_HOME/tost/tune.json`, else
 * `~/.cache/tost/tune.json`, holding the choices of every adapter seen.
 * Writes are atomic (temporary file, then rename) and merge with what other
 * processes saved meanwhile.
 *
 * @module
 */

import { atomicTempPath } from "../io/atomic.ts";
import type { TuneStore, TuneTable } from "../ops/gemm_tune.ts";
import { TUNE_VERSION } from "../ops/gemm_tune.ts";

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
  return { version: TUNE_VERSION, adapters: t.adapters };
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
          merged = { version: TUNE_VERSION, adapters: { ...disk.adapters } };
          for (const [key, classes] of Object.entries(table.adapters)) {
            merged.adapters[key] = { ...disk.adapters[key], ...classes };
          }
        }
      } catch {
        // An unreadable file is replaced by what this process knows.
      }
      const slash = path.lastIndexOf("/");
      if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true });
      const tmp = atomicTempPath(path);
      try {
        await Deno.writeTextFile(tmp, JSON.stringify(merged, null, 1) + "\n");
        await Deno.rename(tmp, path);
      } catch (err) {
        await Deno.remove(tmp).catch(() => {});
        throw err;
      }
    },
  };
}
