/**
 * Worker that reads one checkpoint per message, so that the hostile and fuzz
 * tests can bound each read by a wall-clock limit and terminate a read that
 * hangs. Message in: {@linkcode LoadRequest}; message out:
 * {@linkcode LoadReply}.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { CheckpointError } from "../../src/checkpoint/errors.ts";
import { readStateDict, readStateDictBytes } from "./_fixtures.ts";
import type { ReadTensors } from "./_fixtures.ts";

/** A read to do: a file on disk, or bytes named `path` in messages. */
export interface LoadRequest {
  id: number;
  path: string;
  bytes?: Uint8Array;
  key?: string;
}

/** The outcome of a read. */
export type LoadReply =
  | { id: number; ok: true; tensors: ReadTensors }
  | {
    id: number;
    ok: false;
    /** Whether the error is the reader's CheckpointError. */
    clean: boolean;
    name: string;
    message: string;
    detail?: string;
    stack?: string;
  };

self.onmessage = async (ev: MessageEvent<LoadRequest>) => {
  const { id, path, bytes, key } = ev.data;
  let reply: LoadReply;
  try {
    const tensors = bytes
      ? await readStateDictBytes(path, bytes, key)
      : await readStateDict(path, key);
    reply = { id, ok: true, tensors };
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    reply = {
      id,
      ok: false,
      clean: err instanceof CheckpointError,
      name: e.name,
      message: e.message,
      detail: err instanceof CheckpointError ? err.detail : undefined,
      stack: e.stack,
    };
  }
  self.postMessage(reply);
};
