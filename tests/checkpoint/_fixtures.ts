/**
 * The checkpoint fixtures written by `tools/gen_checkpoints.py` (their
 * manifest and independently computed expected tensors), a reader of one
 * state_dict that goes through the reader's public pieces without model
 * inference, and assertions shared by the checkpoint tests.
 *
 * @module
 */

import assert from "node:assert/strict";
import { CheckpointError } from "../../src/checkpoint/errors.ts";
import { chooseStateDict } from "../../src/checkpoint/state_dict.ts";
import { openCheckpoint, openSource, wrapError } from "../../src/checkpoint/torch.ts";
import type { OpenCheckpoint } from "../../src/checkpoint/torch.ts";
import { MemorySource } from "../../src/checkpoint/source.ts";
import type { StDType } from "../../src/io/dtype.ts";
import type { LoadReply, LoadRequest } from "./_load_worker.ts";

/** Folder of the generated fixtures. */
export const FIXTURE_DIR = new URL("../fixtures/checkpoints/", import.meta.url).pathname;

/** One tensor as the generator computed it: contiguous little-endian bytes in hex. */
export interface ExpectedTensor {
  dtype: StDType;
  shape: number[];
  hex: string;
}

/** What a fixture must do when read. */
export type Expectation = "ok" | "error" | "ok_or_error";

/** One generated fixture (see `manifest.json`). */
export interface Case {
  name: string;
  /** Path relative to {@linkcode FIXTURE_DIR}. */
  file: string;
  kind: "edge" | "opcodes" | "hostile";
  what: string;
  expect: Expectation;
  options?: { key?: string };
  /** Regular expression the error message must match. */
  message?: string;
  /** The exact state_dict expected (for "ok", and for "ok_or_error" when it loads). */
  tensors?: Record<string, ExpectedTensor>;
  /** Used as a seed of the fuzz test. */
  fuzz?: boolean;
}

/** All generated cases. */
export async function loadManifest(): Promise<Case[]> {
  const text = await Deno.readTextFile(`${FIXTURE_DIR}manifest.json`);
  return (JSON.parse(text) as { cases: Case[] }).cases;
}

/** Absolute path of a case's file. */
export function casePath(c: Case): string {
  return FIXTURE_DIR + c.file;
}

/** A state_dict as read: name → dtype, shape and materialised bytes. */
export type ReadTensors = Map<string, { dtype: StDType; shape: number[]; data: Uint8Array }>;

async function readChosen(ck: OpenCheckpoint, key: string | undefined): Promise<ReadTensors> {
  const chosen = chooseStateDict(ck.root, key);
  const out: ReadTensors = new Map();
  for (const [name, t] of chosen.tensors) {
    out.set(name, { dtype: t.dtype, shape: [...t.shape], data: await ck.tensorBytes(t) });
  }
  return out;
}

/**
 * Open a checkpoint, choose its state_dict (as `tost convert` does, `key` or
 * the default) and materialise every tensor. Unlike `loadCheckpoint` this
 * infers no model config, so any state_dict loads. Errors surface as the
 * reader lets them out (a {@linkcode CheckpointError} for bad content).
 */
export async function readStateDict(path: string, key?: string): Promise<ReadTensors> {
  const ck = await openCheckpoint(path);
  try {
    return await readChosen(ck, key);
  } catch (err) {
    throw wrapError(path, err);
  } finally {
    ck.close();
  }
}

/** {@linkcode readStateDict} from bytes in memory; `path` names them in messages. */
export async function readStateDictBytes(
  path: string,
  bytes: Uint8Array,
  key?: string,
): Promise<ReadTensors> {
  const src = new MemorySource(bytes);
  let ck: OpenCheckpoint;
  try {
    ck = await openSource(path, src);
  } catch (err) {
    throw wrapError(path, err);
  }
  try {
    return await readChosen(ck, key);
  } catch (err) {
    throw wrapError(path, err);
  } finally {
    ck.close();
  }
}

/** Lower-case hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** The read state_dict equals the expected one exactly: names, dtypes, shapes, bytes. */
export function assertTensorsEqual(
  got: ReadTensors,
  want: Record<string, ExpectedTensor>,
  what: string,
): void {
  assert.deepEqual([...got.keys()].sort(), Object.keys(want).sort(), `${what}: tensor names`);
  for (const [name, w] of Object.entries(want)) {
    const g = got.get(name)!;
    assert.equal(g.dtype, w.dtype, `${what}: dtype of "${name}"`);
    assert.deepEqual(g.shape, w.shape, `${what}: shape of "${name}"`);
    const hex = toHex(g.data);
    if (hex !== w.hex) {
      let i = 0;
      while (i < hex.length && hex[i] === w.hex[i]) i++;
      assert.fail(
        `${what}: bytes of "${name}" differ from byte ${i >> 1} ` +
          `(got ${hex.length / 2} bytes ${hex.slice(i, i + 16)}…, ` +
          `expected ${w.hex.length / 2} bytes ${w.hex.slice(i, i + 16)}…)`,
      );
    }
  }
}

/**
 * `err` is the reader's clean refusal of `path`: a {@linkcode CheckpointError}
 * whose message names the file and, when given, matches `pattern`.
 */
export function assertCleanError(err: unknown, path: string, pattern?: string): void {
  if (!(err instanceof CheckpointError)) {
    const e = err as Error;
    assert.fail(
      `expected a CheckpointError for ${path}, got ${e?.name ?? typeof err}: ${e?.message}\n` +
        `${e?.stack ?? ""}`,
    );
  }
  const prefix = `Cannot read checkpoint "${path}": `;
  assert.ok(err.message.startsWith(prefix), `message should start with ${prefix}: ${err.message}`);
  assert.ok(err.detail.length > 0, "the error says what is wrong");
  if (pattern !== undefined) {
    assert.match(err.message, new RegExp(pattern), `message of ${path}`);
  }
}

/**
 * Reads checkpoints in a worker, each within a wall-clock limit: a read that
 * hangs is terminated (with its worker) instead of hanging the test run.
 * Call {@linkcode BoundedReader.close} when done.
 */
export class BoundedReader {
  #worker: Worker | undefined;
  #next = 0;

  /** Read in the worker; "timeout" when it took longer than `limitMs`. */
  read(req: Omit<LoadRequest, "id">, limitMs: number): Promise<LoadReply | "timeout"> {
    const worker = this.#worker ??= new Worker(new URL("./_load_worker.ts", import.meta.url).href, {
      type: "module",
    });
    const id = ++this.#next;
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        worker.removeEventListener("message", onMessage);
        worker.removeEventListener("error", onError);
      };
      const onMessage = (ev: MessageEvent<LoadReply>) => {
        if (ev.data.id !== id) return;
        done();
        resolve(ev.data);
      };
      const onError = (ev: ErrorEvent) => {
        ev.preventDefault();
        done();
        this.close();
        reject(new Error(`the reader's worker crashed reading ${req.path}: ${ev.message}`));
      };
      const timer = setTimeout(() => {
        done();
        this.close();
        resolve("timeout");
      }, limitMs);
      worker.addEventListener("message", onMessage);
      worker.addEventListener("error", onError);
      worker.postMessage({ id, ...req });
    });
  }

  /** Terminate the worker (a later read starts a fresh one). */
  close(): void {
    this.#worker?.terminate();
    this.#worker = undefined;
  }
}

/**
 * The outcome of a bounded read agrees with `expect`: "ok" loads, "error"
 * throws the reader's clean error, "ok_or_error" does either. Loaded tensors
 * are compared with `want` when given.
 */
export function assertOutcome(
  reply: LoadReply | "timeout",
  c: {
    name: string;
    expect: Expectation;
    message?: string;
    tensors?: Record<string, ExpectedTensor>;
  },
  path: string,
  limitMs: number,
): void {
  if (reply === "timeout") assert.fail(`${c.name}: reading ${path} took over ${limitMs} ms`);
  if (reply.ok) {
    assert.notEqual(
      c.expect,
      "error",
      `${c.name}: ${path} should have been refused, but it loaded`,
    );
    if (c.tensors) assertTensorsEqual(reply.tensors, c.tensors, c.name);
    return;
  }
  if (!reply.clean) {
    assert.fail(
      `${c.name}: expected a CheckpointError, got ${reply.name}: ${reply.message}\n${
        reply.stack ?? ""
      }`,
    );
  }
  assert.notEqual(c.expect, "ok", `${c.name} should load, but: ${reply.message}`);
  const prefix = `Cannot read checkpoint "${path}": `;
  assert.ok(
    reply.message.startsWith(prefix),
    `message should start with ${prefix}: ${reply.message}`,
  );
  if (c.message !== undefined) assert.match(reply.message, new RegExp(c.message), c.name);
}
