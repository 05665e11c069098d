/**
 * What a checkpoint holds, without converting it: its top-level entries,
 * every tensor of the chosen state_dict with dtype and shape, and the
 * detected architecture.
 *
 * @module
 */

import type { StDType } from "../io/dtype.ts";
import type { ModelConfig } from "../model/config.ts";
import { architectureName, prepareCheckpoint } from "./convert.ts";
import { CheckpointError, CheckpointFormatError } from "./errors.ts";
import { PickleExtension, PyFloat, PyGlobal, PyObject, pythonType } from "./pickle.ts";
import type { PickleValue } from "./pickle.ts";
import { chooseStateDict } from "./state_dict.ts";
import { openCheckpoint, TensorRef, wrapError } from "./torch.ts";

/** One top-level entry of a checkpoint. */
export interface TopLevelEntry {
  key: string;
  /** Python type, e.g. "dict", "argparse.Namespace object", "tensor F32 []". */
  type: string;
  /** A short description: a value, a count, or a few keys. */
  summary: string;
}

/** One tensor of the chosen state_dict. */
export interface TensorInfo {
  /** Name as it will be written (prefixes removed). */
  name: string;
  /** Name in the checkpoint. */
  original: string;
  dtype: StDType;
  shape: number[];
}

/** Result of {@linkcode inspectCheckpoint}. */
export interface CheckpointInspection {
  file: string;
  format: "zip" | "legacy";
  bytes: number;
  topLevel: TopLevelEntry[];
  /** Top-level key of the state_dict (null: the root is the state_dict). */
  key: string | null;
  tensors: TensorInfo[];
  parameters: number;
  /** e.g. "tost_lang", "tost_vision"; null when the model is not recognised. */
  architecture: string | null;
  config: ModelConfig | null;
  /** Why no config could be inferred, when it could not. */
  configError?: string;
  /** Why no state_dict was found, when none was (then `tensors` is empty). */
  stateDictError?: string;
}

function scalar(v: PickleValue): string | undefined {
  if (v === null) return "None";
  if (typeof v === "string") return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (typeof v === "boolean") return v ? "True" : "False";
  if (typeof v === "number" || typeof v === "bigint" || v instanceof PyFloat) return String(v);
  return undefined;
}

function summarize(v: PickleValue): string {
  const s = scalar(v);
  if (s !== undefined) return s;
  if (v instanceof TensorRef) return v.describe();
  if (v instanceof PickleExtension) return v.describe();
  if (v instanceof PyGlobal) return v.qualname;
  if (v instanceof Map) {
    const keys = [...v.keys()].slice(0, 6).map((k) => scalar(k) ?? pythonType(k));
    return `${v.size} entries${
      keys.length ? `: ${keys.join(", ")}${v.size > 6 ? ", …" : ""}` : ""
    }`;
  }
  if (Array.isArray(v) || v instanceof Set) {
    const n = Array.isArray(v) ? v.length : v.size;
    return `${n} items`;
  }
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (v instanceof PyObject) {
    const attrs = v.attributes();
    if (attrs) {
      const parts = [...attrs].slice(0, 8).map(([k, x]) => `${k}=${scalar(x) ?? pythonType(x)}`);
      return `${parts.join(", ")}${attrs.size > 8 ? ", …" : ""}`;
    }
    return `${v.args.length} arguments`;
  }
  return pythonType(v);
}

/**
 * Describe a checkpoint. The state_dict and config are reported when they
 * can be; a checkpoint whose model is not recognised still inspects (with
 * `configError`), but one that cannot be decoded throws a CheckpointError.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { inspectCheckpoint } from "./inspect.ts";
 * const info = await inspectCheckpoint("tests/fixtures/tost_vision_small.pth");
 * assert.ok(info.architecture === "tost_vision" && info.key === "model");
 * ```
 */
export async function inspectCheckpoint(
  path: string,
  options: { key?: string } = {},
): Promise<CheckpointInspection> {
  const ck = await openCheckpoint(path);
  let info: CheckpointInspection;
  try {
    const root = ck.root;
    const topLevel: TopLevelEntry[] = root instanceof Map
      ? [...root].map(([k, v]) => ({ key: String(k), type: pythonType(v), summary: summarize(v) }))
      : [];
    info = {
      file: path,
      format: ck.format,
      bytes: ck.size,
      topLevel,
      key: null,
      tensors: [],
      parameters: 0,
      architecture: null,
      config: null,
    };
    let chosen;
    try {
      chosen = chooseStateDict(root, options.key);
    } catch (err) {
      // Still describe what is there; only an explicit --key must exist.
      if (!(err instanceof CheckpointFormatError) || options.key !== undefined) throw err;
      info.stateDictError = err.message;
      return info;
    }
    info.key = chosen.key;
    info.tensors = [...chosen.tensors].map(([name, t]) => ({
      name,
      original: chosen.originalNames.get(name)!,
      dtype: t.dtype,
      shape: [...t.shape],
    }));
    info.parameters = [...chosen.tensors.values()].reduce((a, t) => a + t.numel, 0);
  } catch (err) {
    throw wrapError(path, err);
  } finally {
    ck.close();
  }
  try {
    const p = await prepareCheckpoint(path, options);
    p.ck.close();
    info.config = p.config;
    info.architecture = architectureName(p.config);
  } catch (err) {
    if (!(err instanceof CheckpointError)) throw err;
    info.configError = err.detail;
  }
  return info;
}
