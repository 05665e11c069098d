/**
 * `tost bench --compare peer.json`: pair tost's records with a peer's (the
 * PyTorch script in `bench/peer/`, or any program writing the same records)
 * by workload, and report tost ÷ peer for time and throughput.
 *
 * Every record kind has a pairing key (the sizes that define its work) and a
 * time and throughput:
 *
 * | op                                   | key                                              | throughput  |
 * | ------------------------------------ | ------------------------------------------------ | ----------- |
 * | attention (`tssa`, `softmax`, …)     | op, pass, n, batch, dim, heads, projections      | tokens/s    |
 * | `tost-s`, `vit-s` (`--model`)        | op, pass, image, batch                           | images/s    |
 * | `linear`                             | op, m, k, n                                      | GFLOP/s     |
 * | `train`                              | op, model, sizes, batch_size, accumulation, vocab | tokens or images/s |
 * | `eval`                               | op, model, sizes, image, batch_size              | images/s    |
 *
 * Several records of one workload on one side (interleaved runs read from
 * several files) are reduced to their medians. Records without a partner, of
 * an unknown kind, or missing a key field are listed as unmatched, never
 * dropped.
 *
 * @module
 */

import Table from "cli-table3";
import { OPERATORS } from "./operators.ts";
import { median } from "./stats.ts";

/** One record as read from a JSON file: an object with at least a string `op`. */
export type AnyRecord = { op: string; [field: string]: unknown };

type FieldType = "number" | "string" | "boolean";
/** A field's type; a trailing `?` allows null or absence. */
type FieldSpec = FieldType | `${FieldType}?`;

interface Kind {
  name: string;
  /** Fields every record of the kind has, with their types (checked on reading). */
  fields: Record<string, FieldSpec>;
  /** Fields that define the workload (pairing key), in display order. */
  key: string[];
  /** Values of key fields that older records leave out. */
  defaults?: Record<string, unknown>;
  /** Unit of the throughput. */
  unit(r: AnyRecord): string;
  label(r: AnyRecord): string;
  /** Milliseconds per unit of work (a pass, a step, a batch). */
  time(r: AnyRecord): number | null;
  throughput(r: AnyRecord): number | null;
}

const STATUS: Record<string, FieldSpec> = {
  status: "string",
  wall_ms: "number?",
  gpu_ms: "number?",
  device: "string",
  backend: "string",
};

const num = (v: unknown): number | null => typeof v === "number" && Number.isFinite(v) ? v : null;
const per = (items: number, ms: number | null) => ms && ms > 0 ? (items * 1000) / ms : null;

const ATTENTION: Kind = {
  name: "attention",
  fields: {
    ...STATUS,
    n: "number",
    pass: "string",
    batch: "number",
    dim: "number",
    heads: "number",
    projections: "boolean?",
  },
  key: ["op", "pass", "n", "batch", "dim", "heads", "projections"],
  defaults: { projections: true },
  unit: () => "tokens/s",
  label: (r) =>
    `${r.op}${r.pass === "fwd" ? "" : ` ${r.pass}`}${
      r.projections === false ? " (operator alone)" : ""
    } n=${r.n} (B${r.batch} D${r.dim} H${r.heads})`,
  time: (r) => num(r.wall_ms),
  throughput: (r) => per(Number(r.batch) * Number(r.n), num(r.wall_ms)),
};

const MODEL: Kind = {
  name: "model",
  fields: { ...STATUS, image: "number", n: "number", pass: "string", batch: "number" },
  key: ["op", "pass", "image", "batch"],
  unit: () => "images/s",
  label: (r) => `${r.op} ${r.image}px (${r.n} tokens, batch ${r.batch})`,
  time: (r) => num(r.wall_ms),
  throughput: (r) => per(Number(r.batch), num(r.wall_ms)),
};

const LINEAR: Kind = {
  name: "linear",
  fields: { ...STATUS, m: "number", k: "number", n: "number", gflops: "number?" },
  key: ["op", "m", "k", "n"],
  unit: () => "GFLOP/s",
  label: (r) => `linear ${r.m}×${r.k}×${r.n}`,
  time: (r) => num(r.wall_ms),
  throughput: (r) => num(r.gflops),
};

const TRAIN: Kind = {
  name: "train",
  fields: {
    ...STATUS,
    model: "string",
    preset: "string",
    n_layer: "number",
    n_head: "number",
    n_embd: "number",
    block_size: "number",
    batch_size: "number",
    gradient_accumulation_steps: "number",
    vocab_size: "number?",
    unit: "string",
    step_ms: "number?",
  },
  key: [
    "op",
    "model",
    "n_layer",
    "n_head",
    "n_embd",
    "block_size",
    "batch_size",
    "gradient_accumulation_steps",
    "vocab_size",
  ],
  unit: (r) => `${r.unit}/s`,
  label: (r) =>
    `train ${r.model} ${r.n_layer}×${r.n_embd} ${r.n_head} heads, ` +
    `${r.unit === "images" ? `${r.block_size}px` : `ctx ${r.block_size}`}, ` +
    `batch ${r.batch_size}${
      Number(r.gradient_accumulation_steps) > 1 ? `×${r.gradient_accumulation_steps}` : ""
    }`,
  time: (r) => num(r.step_ms),
  throughput: (r) => num(r.tokens_per_s) ?? num(r.images_per_s),
};

const EVAL: Kind = {
  name: "eval",
  fields: {
    ...STATUS,
    model: "string",
    embed_dim: "number",
    depth: "number",
    num_heads: "number",
    patch_size: "number",
    image: "number",
    batch_size: "number",
    batch_ms: "number?",
    images_per_s: "number?",
  },
  key: ["op", "model", "embed_dim", "depth", "num_heads", "patch_size", "image", "batch_size"],
  unit: () => "images/s",
  label: (r) =>
    `eval ${r.model} ${r.depth}×${r.embed_dim} patch ${r.patch_size}, ${r.image}px, ` +
    `batch ${r.batch_size}`,
  time: (r) => num(r.batch_ms),
  throughput: (r) => num(r.images_per_s),
};

function kindOf(op: string): Kind | null {
  if ((OPERATORS as readonly string[]).includes(op)) return ATTENTION;
  if (op === "tost-s" || op === "vit-s") return MODEL;
  if (op === "linear") return LINEAR;
  if (op === "train") return TRAIN;
  if (op === "eval") return EVAL;
  return null;
}

/** Why a record does not fit its kind's schema, or null when it does (unknown ops fit nothing). */
export function recordProblem(r: AnyRecord): string | null {
  const kind = kindOf(r.op);
  if (!kind) return `no pairing rule for op "${r.op}"`;
  for (const [field, spec] of Object.entries(kind.fields)) {
    const optional = spec.endsWith("?");
    const type = optional ? spec.slice(0, -1) : spec;
    const v = r[field];
    if (optional && (v === null || v === undefined)) continue;
    const actual: string = typeof v;
    if (actual !== type) {
      return `${kind.name} record field "${field}" must be a ${type}${
        optional ? " or null" : ""
      }, got ${JSON.stringify(v) ?? "nothing"}`;
    }
  }
  if (r.status !== "ok" && r.status !== "failed") {
    return `status must be "ok" or "failed", got ${JSON.stringify(r.status)}`;
  }
  return null;
}

/**
 * The records of a `tost bench --json` or peer output (an object with a
 * `results` array, or a bare array of records).
 *
 * @throws {TypeError} naming the source and the first malformed record
 * @example
 * ```ts
 * import { parseRecords } from "./compare.ts";
 * const recs = parseRecords('{"results": [{"op": "linear"}]}', "peer.json");
 * if (recs.length !== 1) throw new Error("one record");
 * ```
 */
export function parseRecords(text: string, source: string): AnyRecord[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new TypeError(`${source} is not valid JSON: ${(err as Error).message}`);
  }
  const results = Array.isArray(doc)
    ? doc
    : (doc && typeof doc === "object" ? (doc as { results?: unknown }).results : undefined);
  if (!Array.isArray(results)) {
    throw new TypeError(`${source} holds no "results" array of bench records`);
  }
  results.forEach((r, i) => {
    if (!r || typeof r !== "object" || typeof (r as { op?: unknown }).op !== "string") {
      throw new TypeError(`${source}: results[${i}] is not a record with a string "op"`);
    }
  });
  return results as AnyRecord[];
}

/** One side of a pair: medians over the side's runs of the workload. */
export interface PairSide {
  /** Records of this workload on this side (ok or failed). */
  runs: number;
  /** Runs that succeeded (the medians are over these). */
  ok: number;
  time_ms: number | null;
  /** tost's GPU time where timestamp queries gave one. */
  gpu_ms: number | null;
  throughput: number | null;
  /** The variant (kernel) the numbers are of, when the records name one. */
  variant?: string;
  /** The first failure's message when no run succeeded. */
  error?: string;
}

/** One workload measured on both sides. */
export interface Pair {
  workload: string;
  kind: string;
  /** The pairing key's fields and values. */
  key: Record<string, unknown>;
  /** Unit of `throughput`. */
  unit: string;
  tost: PairSide;
  peer: PairSide;
  /** tost time ÷ peer time (above 1: tost is slower). */
  time_ratio: number | null;
  /** tost GPU time ÷ peer time, where tost has GPU time. */
  gpu_time_ratio: number | null;
  /** tost throughput ÷ peer throughput (below 1: tost is slower). */
  throughput_ratio: number | null;
}

/** A record with no partner, or one that cannot be paired. */
export interface Unmatched {
  side: "tost" | "peer";
  workload: string;
  reason: string;
}

/** Result of {@linkcode compareRecords}. */
export interface Comparison {
  pairs: Pair[];
  unmatched: Unmatched[];
}

interface Group {
  kind: Kind;
  key: Record<string, unknown>;
  records: AnyRecord[];
}

function group(
  records: readonly AnyRecord[],
  side: "tost" | "peer",
  unmatched: Unmatched[],
): Map<string, Group> {
  const groups = new Map<string, Group>();
  for (const r of records) {
    const problem = recordProblem(r);
    const kind = kindOf(r.op);
    if (problem || !kind) {
      unmatched.push({ side, workload: String(r.op), reason: problem ?? "unknown op" });
      continue;
    }
    const key: Record<string, unknown> = {};
    for (const f of kind.key) key[f] = r[f] ?? kind.defaults?.[f] ?? null;
    const id = JSON.stringify(kind.key.map((f) => key[f]));
    const g = groups.get(id) ?? { kind, key, records: [] };
    g.records.push(r);
    groups.set(id, g);
  }
  return groups;
}

function medianOf(values: (number | null)[]): number | null {
  const ok = values.filter((v): v is number => v !== null);
  return ok.length ? median(ok) : null;
}

function summariseRuns(kind: Kind, records: AnyRecord[]): PairSide {
  const ok = records.filter((r) => r.status === "ok");
  const side: PairSide = {
    runs: records.length,
    ok: ok.length,
    time_ms: medianOf(ok.map((r) => kind.time(r))),
    gpu_ms: medianOf(ok.map((r) => num(r.gpu_ms))),
    throughput: medianOf(ok.map((r) => kind.throughput(r))),
  };
  if (typeof records[0].variant === "string") side.variant = records[0].variant;
  if (!ok.length) side.error = String(records[0].error ?? "failed");
  return side;
}

/**
 * Medians over a side's runs of one workload. Records of several variants
 * (kernels timed side by side) are summarised per variant and the one with
 * the highest throughput stands for the side.
 */
function summarise(g: Group): PairSide {
  const byVariant = new Map<string, AnyRecord[]>();
  for (const r of g.records) {
    const v = typeof r.variant === "string" ? r.variant : "";
    byVariant.set(v, [...(byVariant.get(v) ?? []), r]);
  }
  const sides = [...byVariant.values()].map((rs) => summariseRuns(g.kind, rs));
  return sides.reduce((best, s) => (s.throughput ?? -1) > (best.throughput ?? -1) ? s : best);
}

const ratio = (a: number | null, b: number | null) =>
  a !== null && b !== null && b > 0 ? a / b : null;

/**
 * Pair tost's records with the peer's by workload and compute tost ÷ peer.
 * Pairs keep the order of tost's records; unmatched records are listed
 * (tost's first, then the peer's).
 *
 * @example
 * ```ts
 * import { compareRecords } from "./compare.ts";
 * const rec = (wall_ms: number, gflops: number) => ({
 *   op: "linear", m: 8, k: 8, n: 8, gflops, wall_ms, gpu_ms: null, status: "ok",
 *   device: "d", backend: "b",
 * });
 * const { pairs } = compareRecords([rec(4, 1)], [rec(2, 2)]);
 * if (pairs[0].time_ratio !== 2 || pairs[0].throughput_ratio !== 0.5) throw new Error();
 * ```
 */
export function compareRecords(
  tost: readonly AnyRecord[],
  peer: readonly AnyRecord[],
): Comparison {
  const unmatched: Unmatched[] = [];
  const peerUnmatched: Unmatched[] = [];
  const ours = group(tost, "tost", unmatched);
  const theirs = group(peer, "peer", peerUnmatched);
  const pairs: Pair[] = [];
  for (const [id, g] of ours) {
    const other = theirs.get(id);
    const workload = g.kind.label(g.records[0]);
    if (!other) {
      unmatched.push({ side: "tost", workload, reason: "no peer record of this workload" });
      continue;
    }
    const t = summarise(g);
    const p = summarise(other);
    pairs.push({
      workload,
      kind: g.kind.name,
      key: g.key,
      unit: g.kind.unit(g.records[0]),
      tost: t,
      peer: p,
      time_ratio: ratio(t.time_ms, p.time_ms),
      gpu_time_ratio: ratio(t.gpu_ms, p.time_ms),
      throughput_ratio: ratio(t.throughput, p.throughput),
    });
  }
  for (const [id, g] of theirs) {
    if (!ours.has(id)) {
      peerUnmatched.push({
        side: "peer",
        workload: g.kind.label(g.records[0]),
        reason: "no tost record of this workload",
      });
    }
  }
  return { pairs, unmatched: [...unmatched, ...peerUnmatched] };
}

function fmtTime(ms: number | null): string {
  if (ms === null) return "-";
  return ms < 10
    ? `${ms.toFixed(3)} ms`
    : ms < 10_000
    ? `${ms.toFixed(1)} ms`
    : `${(ms / 1000).toFixed(1)} s`;
}

function fmtRate(v: number | null, unit: string): string {
  if (v === null) return "-";
  const digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${v.toFixed(digits)} ${unit}`;
}

function fmtRatio(r: number | null): string {
  return r === null ? "-" : `${r < 0.1 ? r.toPrecision(2) : r.toFixed(2)}×`;
}

function sideCell(s: PairSide, unit: string): string {
  if (s.ok === 0) return `failed: ${s.error ?? ""}`.slice(0, 40);
  const runs = s.runs > 1 ? ` (${s.ok} runs)` : "";
  return `${fmtTime(s.time_ms)}, ${fmtRate(s.throughput, unit)}${runs}`;
}

/**
 * The comparison as a table (tost ÷ peer per workload) followed by the
 * unmatched records, one per line.
 */
export function formatComparison(c: Comparison, options: { color?: boolean } = {}): string {
  const t = new Table({
    head: ["workload", "tost", "peer", "time tost÷peer", "throughput tost÷peer", "GPU time÷peer"],
    style: options.color ? {} : { head: [], border: [] },
    colAligns: ["left", "right", "right", "right", "right", "right"],
  });
  for (const p of c.pairs) {
    t.push([
      p.workload,
      sideCell(p.tost, p.unit),
      sideCell(p.peer, p.unit),
      fmtRatio(p.time_ratio),
      fmtRatio(p.throughput_ratio),
      fmtRatio(p.gpu_time_ratio),
    ]);
  }
  const lines = [c.pairs.length ? t.toString() : "no workload measured on both sides"];
  for (const u of c.unmatched) lines.push(`unmatched ${u.side} record: ${u.workload}: ${u.reason}`);
  return lines.join("\n");
}
