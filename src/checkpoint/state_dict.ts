/**
 * Finding the model's state_dict inside a checkpoint and cleaning its names.
 *
 * @module
 */

import { CheckpointFormatError } from "./errors.ts";
import { aType, PyFloat, PyObject } from "./pickle.ts";
import type { PickleValue } from "./pickle.ts";
import { TensorRef } from "./torch.ts";

/** Top-level keys tried, in order, when no `--key` is given. */
export const MODEL_KEYS = ["model", "state_dict", "model_state_dict", "model_state", "net"];

/** Prefixes added by wrappers: `torch.compile` and DDP/DataParallel. */
export const WRAPPER_PREFIXES = ["_orig_mod.", "module."];

/** A chosen state_dict. */
export interface ChosenStateDict {
  /** The top-level key it came from, or null for a bare state_dict. */
  key: string | null;
  /** Tensors under cleaned names, in checkpoint order. */
  tensors: Map<string, TensorRef>;
  /** Original name of each cleaned name. */
  originalNames: Map<string, string>;
}

function isTensorDict(v: PickleValue): boolean {
  if (!(v instanceof Map) || v.size === 0) return false;
  for (const [k, t] of v) if (typeof k !== "string" || !(t instanceof TensorRef)) return false;
  return true;
}

/** Whether `root` is itself a state_dict: tensors and no nested dicts. */
function looksBare(root: Map<PickleValue, PickleValue>): boolean {
  if (isTensorDict(root)) return true;
  const values = [...root.values()];
  return values.some((v) => v instanceof TensorRef) && !values.some((v) => v instanceof Map);
}

/** Describe the top-level entries of a checkpoint for messages. */
export function topLevelKeys(root: PickleValue): string[] {
  return root instanceof Map ? [...root.keys()].map((k) => String(k)) : [];
}

/**
 * Choose the state_dict: the root itself when it maps names to tensors,
 * else `key` when given, else the first of {@linkcode MODEL_KEYS} present.
 * Throws {@linkcode CheckpointFormatError} saying what was found instead.
 */
export function chooseStateDict(root: PickleValue, key?: string): ChosenStateDict {
  if (root instanceof PyObject) {
    throw new CheckpointFormatError(
      `the checkpoint pickles a whole ${root.callable.qualname} object, not a state_dict; ` +
        "save model.state_dict() instead",
    );
  }
  if (!(root instanceof Map)) {
    throw new CheckpointFormatError(`the checkpoint holds ${aType(root)}, not a dict`);
  }
  let chosenKey: string | null;
  let dict: PickleValue;
  if (key !== undefined) {
    if (!root.has(key)) {
      throw new CheckpointFormatError(
        `no top-level key "${key}"; the keys are ${
          topLevelKeys(root).map((k) => `"${k}"`).join(", ")
        }`,
      );
    }
    chosenKey = key;
    dict = root.get(key)!;
  } else if (looksBare(root)) {
    chosenKey = null;
    dict = root;
  } else {
    const found = MODEL_KEYS.find((k) => root.has(k) && root.get(k) instanceof Map);
    const whole = MODEL_KEYS.find((k) => root.get(k) instanceof PyObject);
    if (found === undefined && whole !== undefined) {
      const obj = root.get(whole) as PyObject;
      throw new CheckpointFormatError(
        `"${whole}" pickles a whole ${obj.callable.qualname} object, not a state_dict; ` +
          "save model.state_dict() instead",
      );
    }
    if (found === undefined) {
      throw new CheckpointFormatError(
        `no model state_dict found (looked for ${MODEL_KEYS.map((k) => `"${k}"`).join(", ")}); ` +
          `the top-level keys are ${topLevelKeys(root).map((k) => `"${k}"`).join(", ")}: ` +
          "pick one with --key",
      );
    }
    chosenKey = found;
    dict = root.get(found)!;
  }
  const where = chosenKey === null ? "the state_dict" : `"${chosenKey}"`;
  if (!(dict instanceof Map)) {
    throw new CheckpointFormatError(`${where} is ${aType(dict)}, not a state_dict`);
  }
  if (dict.size === 0) throw new CheckpointFormatError(`${where} is empty`);
  const tensors = new Map<string, TensorRef>();
  const originalNames = new Map<string, string>();
  for (const [k, v] of dict) {
    if (typeof k !== "string") {
      throw new CheckpointFormatError(
        `${where} has ${aType(k)} key; tensor names are strings`,
      );
    }
    if (!(v instanceof TensorRef)) {
      throw new CheckpointFormatError(
        `entry "${k}" of ${where} is ${aType(v)}, where a tensor is expected`,
      );
    }
    const name = cleanName(k);
    if (tensors.has(name)) {
      throw new CheckpointFormatError(
        `"${k}" and "${originalNames.get(name)}" of ${where} both become "${name}"`,
      );
    }
    tensors.set(name, v);
    originalNames.set(name, k);
  }
  return { key: chosenKey, tensors, originalNames };
}

/** Strip `_orig_mod.` and `module.` prefixes (in any order, repeatedly). */
export function cleanName(name: string): string {
  let n = name;
  for (;;) {
    const p = WRAPPER_PREFIXES.find((x) => n.startsWith(x) && n.length > x.length);
    if (!p) return n;
    n = n.slice(p.length);
  }
}

/** Plain JS view of a dict-like value (a dict with string keys or an object's attributes). */
export function plainRecord(v: PickleValue | undefined): Record<string, unknown> | undefined {
  let m: Map<PickleValue, PickleValue> | undefined;
  if (v instanceof Map) m = v;
  else if (v instanceof PyObject) m = v.attributes() as Map<PickleValue, PickleValue> | undefined;
  if (!m) return undefined;
  const out: Record<string, unknown> = {};
  for (const [k, x] of m) {
    if (typeof k !== "string") continue;
    if (x instanceof PyFloat) out[k] = x.value;
    else if (x === null || typeof x !== "object") out[k] = x;
  }
  return out;
}
