/**
 * Checks every command makes on the files it is given, before any work:
 * inputs exist and are the right kind of file (told by content, see
 * `src/io/sniff.ts`), outputs can be written and are not one of the inputs
 * (by path or by inode: a hard link or a symbolic link to an input counts).
 * Problems are {@linkcode UsageError}s (exit 2) naming the file.
 *
 * @module
 */

import { CheckpointError } from "../checkpoint/errors.ts";
import { describeKind, sniffFile } from "../io/sniff.ts";
import type { FileKind } from "../io/sniff.ts";
import { UsageError } from "./_errors.ts";

/** Why an OS error made a file unreadable, in words; null for other errors. */
function osReason(err: unknown): string | null {
  if (err instanceof Deno.errors.NotFound) return "no such file";
  if (err instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (err instanceof Deno.errors.IsADirectory) return "it is a directory";
  if (err instanceof Deno.errors.NotADirectory) return "a part of the path is not a directory";
  return null;
}

/**
 * Run `read`; turn an unreadable file, or a file whose content the reader
 * rejects, into a user error (exit 2) that names it.
 */
export async function userFile<T>(what: string, path: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof UsageError) throw err;
    const why = osReason(err);
    if (why) throw new UsageError(`Cannot read ${what} "${path}": ${why}`);
    if (
      err instanceof CheckpointError || err instanceof SyntaxError ||
      err instanceof RangeError || err instanceof TypeError
    ) {
      const msg = err.message;
      throw new UsageError(
        msg.includes(path) ? msg : `Cannot read ${what} "${path}": ${msg}`,
        { cause: err },
      );
    }
    throw err;
  }
}

/**
 * The kind of an input file, which must exist and be a regular file.
 *
 * @throws {UsageError} for a missing, unreadable or non-regular file
 */
export function inputKind(what: string, path: string): Promise<FileKind> {
  return userFile(what, path, () => sniffFile(path));
}

/**
 * Throw unless the input is one of `kinds`, saying what it is instead.
 *
 * @example
 * ```ts ignore
 * await expectKind("model", "m.safetensors", ["safetensors", "pytorch-zip", "pytorch-legacy"],
 *   "a tost safetensors file or a PyTorch checkpoint");
 * ```
 */
export async function expectKind(
  what: string,
  path: string,
  kinds: readonly FileKind[],
  wanted: string,
): Promise<FileKind> {
  const kind = await inputKind(what, path);
  if (!kinds.includes(kind)) {
    throw new UsageError(
      `${what} "${path}" is ${describeKind(kind)}, not ${wanted}`,
    );
  }
  return kind;
}

function dirOf(path: string): string {
  const slash = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return slash < 0 ? "." : path.slice(0, slash) || "/";
}

function baseOf(path: string): string {
  const slash = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return path.slice(slash + 1);
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch {
    return null;
  }
}

/** The canonical path of `path`, which need not exist (its directory must, to resolve links). */
async function canonical(path: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch {
    try {
      return `${await Deno.realPath(dirOf(path))}/${baseOf(path)}`;
    } catch {
      return path;
    }
  }
}

/** Whether two paths name the same file: the same canonical path, or the same inode. */
export async function sameFile(a: string, b: string): Promise<boolean> {
  if ((await canonical(a)) === (await canonical(b))) return true;
  const [sa, sb] = [await statOrNull(a), await statOrNull(b)];
  return sa !== null && sb !== null && sa.ino !== null && sa.dev === sb.dev && sa.ino === sb.ino;
}

/** An input a command reads: a flag or argument name and its path. */
export interface NamedPath {
  /** How the user named it: `"--inputs"`, `"the model"`. */
  what: string;
  path: string;
}

/**
 * Refuse an output that is one of the inputs (same path, a link to it, or a
 * hard link): writing it would destroy the input.
 *
 * @throws {UsageError} naming both
 */
export async function refuseOverwritingInputs(
  output: NamedPath,
  inputs: readonly (NamedPath | undefined)[],
): Promise<void> {
  for (const input of inputs) {
    if (input === undefined) continue;
    if (await sameFile(output.path, input.path)) {
      throw new UsageError(
        `${output.what} "${output.path}" is the same file as ${input.what} "${input.path}": ` +
          `writing it would destroy the input; choose another output path`,
      );
    }
  }
}

/** Create and remove a probe file in `dir`: the only reliable test that it is writable. */
async function probeDirectory(dir: string, what: string, path: string): Promise<void> {
  const probe = `${dir}/.tost-probe-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
  try {
    const f = await Deno.open(probe, { write: true, createNew: true });
    f.close();
  } catch (err) {
    const why = err instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : err instanceof Error
      ? err.message
      : String(err);
    throw new UsageError(
      `Cannot write ${what} "${path}": directory "${dir}" is not writable (${why})`,
    );
  }
  await Deno.remove(probe).catch(() => {});
}

/**
 * Check, before any work, that a file can be written at `path`: its directory
 * exists and is writable, and `path` is not a directory.
 *
 * @throws {UsageError} saying why not
 */
export async function checkWritableFile(what: string, path: string): Promise<void> {
  const dir = dirOf(path);
  const d = await statOrNull(dir);
  if (!d) throw new UsageError(`Cannot write ${what} "${path}": directory "${dir}" does not exist`);
  if (!d.isDirectory) {
    throw new UsageError(`Cannot write ${what} "${path}": "${dir}" is not a directory`);
  }
  const f = await statOrNull(path);
  if (f?.isDirectory) throw new UsageError(`Cannot write ${what} "${path}": it is a directory`);
  await probeDirectory(dir, what, path);
}

/**
 * Check that a directory can hold output: it exists and is writable, or the
 * nearest existing ancestor is a writable directory (it will be created).
 *
 * @throws {UsageError} saying why not
 */
export async function checkWritableDir(what: string, dir: string): Promise<void> {
  let at = dir.replace(/\/+$/, "") || "/";
  for (let depth = 0; depth < 256; depth++) {
    const s = await statOrNull(at);
    if (s) {
      if (!s.isDirectory) {
        throw new UsageError(
          at === dir
            ? `${what} "${dir}" is a file, not a directory`
            : `Cannot create ${what} "${dir}": "${at}" is a file`,
        );
      }
      await probeDirectory(at, what, dir);
      return;
    }
    const up = dirOf(at);
    if (up === at) break;
    at = up;
  }
  throw new UsageError(`Cannot create ${what} "${dir}"`);
}
