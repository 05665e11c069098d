/**
 * The rules of a run directory (`tost train --out DIR`):
 *
 * - it holds one run: `last.safetensors`, `best.safetensors`, `log.jsonl`,
 *   `loss.svg`, `loss.png` and `tune.json` (the kernel variants the run
 *   uses, pinned so that a resumed run uses them too) ({@linkcode RUN_FILES});
 * - while a run uses it, it holds a lock file `.tost-lock` with the process
 *   id, host name and start time of that run; a second run is refused. A lock
 *   whose process is gone (a crash, a kill -9) on this host is taken over
 *   with a note; one from another host is left to the user to remove;
 * - on resume, the metrics log is cut back to the checkpoint's step, so
 *   steps a crashed run logged after its last checkpoint are not repeated.
 *
 * @module
 */

/** Files a run writes into its directory. */
export const RUN_FILES = [
  "last.safetensors",
  "best.safetensors",
  "log.jsonl",
  "loss.svg",
  "loss.png",
  "tune.json",
] as const;

/** Name of the lock file inside a run directory. */
export const LOCK_FILE = ".tost-lock";

/** A run directory that cannot be used (locked by another run). */
export class RunDirectoryError extends Error {
  override name = "RunDirectoryError";
}

/** What a lock file holds. */
export interface LockInfo {
  pid: number;
  hostname: string;
  /** ISO time the run started. */
  started: string;
}

function join(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, "") || "."}/${name}`;
}

/** The run files present in `dir` (none when it does not exist). */
export async function existingRunFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const name of RUN_FILES) {
    try {
      await Deno.lstat(join(dir, name));
      found.push(name);
    } catch { /* absent */ }
  }
  return found;
}

/** Remove a run's files from `dir` (`--force`); other files are left alone. */
export async function removeRunFiles(dir: string): Promise<void> {
  for (const name of RUN_FILES) await Deno.remove(join(dir, name)).catch(() => {});
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown";
  }
}

/**
 * Whether process `pid` on this host still runs: `/proc` on Linux, `kill -0`
 * elsewhere on Unix; assumed alive where neither can tell (Windows).
 */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (Deno.build.os === "linux") {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      // Field 3, after the parenthesised command name: Z is a zombie, X dead.
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      return state !== "Z" && state !== "X";
    } catch {
      return false;
    }
  }
  if (Deno.build.os === "windows") return true;
  try {
    return new Deno.Command("kill", { args: ["-0", String(pid)], stderr: "null" }).outputSync()
      .success;
  } catch {
    return true;
  }
}

function readLock(path: string): LockInfo | null {
  try {
    const v = JSON.parse(Deno.readTextFileSync(path));
    if (typeof v?.pid === "number" && typeof v?.hostname === "string") return v as LockInfo;
  } catch { /* unreadable or half-written */ }
  return null;
}

/**
 * Lock `dir` (created if needed) for this process until the returned
 * function is called. `note` receives a line when a stale lock is taken over.
 *
 * @throws {RunDirectoryError} when another live run holds the lock (or one
 *   on another host, which cannot be checked)
 */
export async function lockRunDirectory(
  dir: string,
  note: (line: string) => void = () => {},
): Promise<() => void> {
  await Deno.mkdir(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  const me: LockInfo = { pid: Deno.pid, hostname: hostname(), started: new Date().toISOString() };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const f = await Deno.open(path, { write: true, createNew: true });
      try {
        await f.write(new TextEncoder().encode(JSON.stringify(me) + "\n"));
      } finally {
        f.close();
      }
      return () => {
        const held = readLock(path);
        if (held?.pid === me.pid && held.started === me.started) {
          try {
            Deno.removeSync(path);
          } catch { /* already gone */ }
        }
      };
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    const held = readLock(path);
    const who = held
      ? `process ${held.pid} on ${held.hostname}, started ${held.started}`
      : "an unreadable lock";
    if (held && held.hostname === me.hostname && !processAlive(held.pid)) {
      note(`note: taking over the lock of "${dir}" from a run that is no longer running (${who})`);
      await Deno.remove(path).catch(() => {});
      continue;
    }
    if (held === null) {
      // A lock being written this instant, or garbage: give a live writer a moment.
      await new Promise((r) => setTimeout(r, 200));
      if (readLock(path) === null) {
        note(`note: replacing the unreadable lock file "${path}"`);
        await Deno.remove(path).catch(() => {});
        continue;
      }
    }
    throw new RunDirectoryError(
      `"${dir}" is in use by another tost train (${who}); wait for it to end, or if it ` +
        `is no longer running, remove "${path}"`,
    );
  }
  throw new RunDirectoryError(`Cannot lock "${dir}": "${path}" keeps reappearing`);
}

/**
 * Keep only the log records up to `step` (a resumed run logs the later ones
 * again). Returns the kept records. Written atomically.
 */
export async function trimLog(path: string, step: number): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return [];
  }
  const records: Record<string, unknown>[] = [];
  let dropped = false;
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch {
      dropped = true; // a line cut by a crash
      continue;
    }
    if (typeof r !== "object" || r === null) continue;
    const rec = r as Record<string, unknown>;
    if (typeof rec.step === "number" && rec.step > step) {
      dropped = true;
      continue;
    }
    records.push(rec);
  }
  if (dropped) {
    const tmp = `${path}.tmp`;
    await Deno.writeTextFile(tmp, records.map((r) => JSON.stringify(r) + "\n").join(""));
    await Deno.rename(tmp, path);
  }
  return records;
}
