/**
 * Loading a PyTorch checkpoint as named tensors plus its inferred config, and
 * converting it to a tost safetensors file tensor by tensor.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { convertFloatBytes, DTYPE_BYTES, isFloatDType } from "../io/dtype.ts";
import type { StDType } from "../io/dtype.ts";
import { SafetensorsWriter } from "../io/safetensors.ts";
import type { StTensor, StTensorSpec } from "../io/safetensors.ts";
import type { ModelConfig } from "../model/config.ts";
import { crossCheckConfig, inferConfig } from "./config.ts";
import type { ConfigHints } from "./config.ts";
import { CheckpointFormatError } from "./errors.ts";
import { chooseStateDict, plainRecord } from "./state_dict.ts";
import { openCheckpoint, type TensorRef, wrapError } from "./torch.ts";
import type { OpenCheckpoint } from "./torch.ts";

/** Output dtype of float tensors: as stored, or cast. Integer tensors are always kept. */
export type TargetDType = "keep" | "f32" | "f16" | "bf16";

/** Options of {@linkcode loadCheckpoint}. */
export interface LoadOptions {
  /** Top-level key of the state_dict (default: `model`, `state_dict`, … or the root). */
  key?: string;
  /** Cast float tensors (default "keep"). */
  dtype?: TargetDType;
}

/** A checkpoint's model, ready to run. */
export interface LoadedCheckpoint {
  /** Tensors under the reference `state_dict` names (wrapper prefixes removed). */
  tensors: Map<string, StTensor>;
  config: ModelConfig;
  /** What a converted file's `__metadata__` would hold. */
  metadata: Record<string, string>;
  /** Top-level key the state_dict came from (null for a bare state_dict). */
  key: string | null;
}

/** Options of {@linkcode convertCheckpoint}. */
export interface ConvertOptions extends LoadOptions {
  /** Called as bytes are hashed and written: `done` of `total`. */
  onProgress?: (done: number, total: number) => void;
  /** Largest piece of one tensor held at a time when streaming (default 16 MiB). */
  chunkBytes?: number;
  /** Stops the conversion (between chunks); the partial output is removed. */
  signal?: AbortSignal;
  /**
   * More `__metadata__` entries for the output, from the inferred config
   * (e.g. a vocabulary checked against `vocab_size`); may throw to refuse.
   */
  extraMetadata?: (config: ModelConfig) => Record<string, string>;
}

/** What {@linkcode convertCheckpoint} wrote. */
export interface ConvertResult {
  /** Path of the safetensors file written. */
  out: string;
  tensors: number;
  /** Bytes of the output file. */
  bytes: number;
  config: ModelConfig;
  metadata: Record<string, string>;
  key: string | null;
}

const TARGET: Record<TargetDType, StDType | undefined> = {
  keep: undefined,
  f32: "F32",
  f16: "F16",
  bf16: "BF16",
};

/** tost's short name for an architecture (stored as `__metadata__.architecture`). */
export function architectureName(config: ModelConfig): string {
  if (config.family === "language") return config.attention === "tssa" ? "tost_lang" : "gpt";
  return config.attention === "tssa" ? "tost_vision" : "vit_vision";
}

/** A state_dict chosen, named, checked and described: everything but the bytes. */
export interface PreparedCheckpoint {
  ck: OpenCheckpoint;
  key: string | null;
  /** Output name → tensor (tied weights appear under both names). */
  tensors: Map<string, TensorRef>;
  config: ModelConfig;
  /** Output dtype per name. */
  dtypes: Map<string, StDType>;
  /** Metadata without the source hash. */
  metadata: Record<string, string>;
}

function baseName(path: string): string {
  return path.slice(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1);
}

/** Open and analyse a checkpoint; the caller must close `ck`. */
export async function prepareCheckpoint(
  path: string,
  options: LoadOptions = {},
): Promise<PreparedCheckpoint> {
  const dtype = options.dtype ?? "keep";
  if (!Object.hasOwn(TARGET, dtype)) {
    throw new TypeError(`Unknown dtype "${dtype}": use keep, f32, f16 or bf16`);
  }
  const ck = await openCheckpoint(path);
  try {
    const chosen = chooseStateDict(ck.root, options.key);
    const tensors = chosen.tensors;
    // Tied embeddings: the reference state_dict has both names.
    const wte = tensors.get("transformer.wte.weight");
    const head = tensors.get("lm_head.weight");
    if (wte && !head) tensors.set("lm_head.weight", wte);
    if (head && !wte && tensors.has("transformer.wpe.weight")) {
      tensors.set("transformer.wte.weight", head);
    }
    const root = ck.root instanceof Map ? ck.root : undefined;
    const hints: ConfigHints = {
      model_args: plainRecord(root?.get("model_args")),
      args: plainRecord(root?.get("args")),
    };
    const shapes = new Map([...tensors].map(([n, t]) => [n, [...t.shape]]));
    let config: ModelConfig;
    try {
      config = inferConfig(shapes, hints);
    } catch (err) {
      throw new CheckpointFormatError(`cannot infer the model: ${(err as Error).message}`);
    }
    try {
      crossCheckConfig(config, hints);
    } catch (err) {
      throw new CheckpointFormatError(
        `the checkpoint disagrees with itself: ${(err as Error).message}`,
      );
    }
    const target = TARGET[dtype];
    const dtypes = new Map<string, StDType>();
    for (const [n, t] of tensors) {
      dtypes.set(n, target && isFloatDType(t.dtype) ? target : t.dtype);
    }
    const progress: Record<string, number> = {};
    for (const k of ["epoch", "iter_num", "step", "global_step"]) {
      const v = root?.get(k);
      if (typeof v === "number") progress[k] = v;
    }
    const metadata: Record<string, string> = {
      format: "pt",
      architecture: architectureName(config),
      config: JSON.stringify(config),
      source: baseName(path),
      source_format: ck.format,
      source_key: chosen.key ?? "",
      dtype,
    };
    if (Object.keys(progress).length) metadata.progress = JSON.stringify(progress);
    return { ck, key: chosen.key, tensors, config, dtypes, metadata };
  } catch (err) {
    ck.close();
    throw wrapError(path, err);
  }
}

/** SHA-256 (hex) of a file, read in chunks. */
export async function sha256File(
  path: string,
  onBytes?: (n: number) => void,
): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(8 * 1024 * 1024);
  for (;;) {
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
    onBytes?.(n);
  }
  return hash.digest("hex");
}

function castChunk(chunk: Uint8Array, from: StDType, to: StDType): Uint8Array {
  return from === to ? chunk : convertFloatBytes(chunk, from, to);
}

/**
 * Read a checkpoint's model: tensors under their reference names (views
 * materialised, tied weights under both names), the inferred and
 * cross-checked config, and the metadata a converted file would carry.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadCheckpoint } from "./convert.ts";
 * const { config, tensors } = await loadCheckpoint("tests/fixtures/tost_lang_small.pt");
 * assert.ok(config.family === "language" && tensors.has("lm_head.weight"));
 * ```
 */
export async function loadCheckpoint(
  path: string,
  options: LoadOptions = {},
): Promise<LoadedCheckpoint> {
  const p = await prepareCheckpoint(path, options);
  try {
    const tensors = new Map<string, StTensor>();
    const cache = new Map<TensorRef, Uint8Array>();
    for (const [name, t] of p.tensors) {
      let bytes = cache.get(t);
      if (!bytes) {
        bytes = castChunk(await p.ck.tensorBytes(t), t.dtype, p.dtypes.get(name)!);
        cache.set(t, bytes);
      }
      tensors.set(name, { dtype: p.dtypes.get(name)!, shape: [...t.shape], data: bytes });
    }
    const metadata = { ...p.metadata, source_sha256: await sha256File(path) };
    return { tensors, config: p.config, metadata, key: p.key };
  } catch (err) {
    throw wrapError(path, err);
  } finally {
    p.ck.close();
  }
}

/**
 * Convert a checkpoint to a safetensors file at `out`, streaming: at most one
 * tensor chunk (or one non-contiguous view) is in memory at a time, and the
 * output appears only once complete (nothing is left behind on failure).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { convertCheckpoint } from "./convert.ts";
 * const out = await Deno.makeTempFile({ suffix: ".safetensors" });
 * const r = await convertCheckpoint("tests/fixtures/tost_lang_small.pt", out);
 * assert.ok(r.metadata.architecture === "tost_lang");
 * await Deno.remove(out);
 * ```
 */
export async function convertCheckpoint(
  path: string,
  out: string,
  options: ConvertOptions = {},
): Promise<ConvertResult> {
  const p = await prepareCheckpoint(path, options);
  let writer: SafetensorsWriter | undefined;
  try {
    const specs: StTensorSpec[] = [...p.tensors].map(([name, t]) => ({
      name,
      dtype: p.dtypes.get(name)!,
      shape: [...t.shape],
    }));
    const dataBytes = specs.reduce(
      (a, s) => a + s.shape.reduce((x, y) => x * y, 1) * DTYPE_BYTES[s.dtype],
      0,
    );
    const total = p.ck.size + dataBytes;
    let done = 0;
    const tick = (n: number) => {
      done += n;
      options.onProgress?.(done, total);
    };
    const sha = await sha256File(path, (n) => {
      options.signal?.throwIfAborted();
      tick(n);
    });
    const metadata = {
      ...p.metadata,
      ...options.extraMetadata?.(p.config),
      source_sha256: sha,
    };
    writer = await SafetensorsWriter.create(out, specs, metadata);
    for (const [name, t] of p.tensors) {
      const to = p.dtypes.get(name)!;
      for await (const chunk of p.ck.tensorChunks(t, options.chunkBytes)) {
        options.signal?.throwIfAborted();
        const c = castChunk(chunk, t.dtype, to);
        await writer.write(c);
        tick(c.length);
      }
    }
    await writer.commit();
    return {
      out,
      tensors: specs.length,
      bytes: writer.totalBytes,
      config: p.config,
      metadata,
      key: p.key,
    };
  } catch (err) {
    await writer?.abort();
    throw wrapError(path, err);
  } finally {
    p.ck.close();
  }
}
