/**
 * Mutation fuzzing of the checkpoint reader with a fixed seed: byte flips,
 * interesting values written over length and offset fields, truncations,
 * deletions and duplications, aimed mostly at the structure (the pickle and
 * the zip's central directory) of the two real fixtures and of a few
 * generated ones (zip, legacy, text-opcode and hostile pickles). Every mutant
 * must either load or be refused with the reader's `CheckpointError`, within
 * a time limit (reads run in a worker that is terminated on a hang).
 *
 * @module
 */

import assert from "node:assert/strict";
import { seededRandom } from "../_util.ts";
import { assertOutcome, BoundedReader, FIXTURE_DIR, loadManifest } from "./_fixtures.ts";

const SEED = 20251127;
const LIMIT_MS = 15_000;

interface Source {
  name: string;
  bytes: Uint8Array;
  /** Byte ranges holding structure rather than tensor data. */
  regions: [number, number][];
  /** For zips: where data.pkl's bytes and its two CRC-32 fields are. */
  pickle?: { start: number; size: number; localCrc: number; centralCrc: number };
  iterations: number;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const x of b) c = CRC_TABLE[(c ^ x) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Where data.pkl (the first entry, as torch writes it) keeps its bytes and
 * CRC-32 copies: the central directory, and the data descriptor after the
 * data (flag bit 3, as torch writes) or else the local header. Not for zip64.
 */
function picklePlace(b: Uint8Array): Source["pickle"] {
  const eocd = b.length - 22;
  if (eocd < 0 || u32(b, 0) !== 0x04034b50 || u32(b, eocd) !== 0x06054b50) return undefined;
  const view = new DataView(b.buffer, b.byteOffset);
  const cd = u32(b, eocd + 16);
  if (cd === 0xffffffff || u32(b, cd) !== 0x02014b50 || u32(b, cd + 42) !== 0) return undefined;
  const size = u32(b, cd + 20);
  const start = 30 + view.getUint16(26, true) + view.getUint16(28, true);
  const descriptor = (view.getUint16(6, true) & 8) !== 0 && u32(b, start + size) === 0x08074b50;
  return { start, size, localCrc: descriptor ? start + size + 4 : 14, centralCrc: cd + 16 };
}

function u32(b: Uint8Array, at: number): number {
  return new DataView(b.buffer, b.byteOffset).getUint32(at, true);
}

/** The pickle (up to the second local header) and the central directory of a zip. */
function zipRegions(b: Uint8Array): [number, number][] {
  const eocd = b.length - 22;
  if (eocd < 0 || u32(b, 0) !== 0x04034b50 || u32(b, eocd) !== 0x06054b50) {
    return [[0, Math.min(b.length, 4096)]];
  }
  let second = 4;
  while (second < b.length - 4 && u32(b, second) !== 0x04034b50) second++;
  const cd = u32(b, eocd + 16);
  return [[0, second], [Math.min(cd, b.length - 1), b.length]];
}

/** Generated fixtures fuzzed besides those the manifest marks. */
const EXTRA_SEEDS = [
  "protocol_0",
  "frame_STACK_GLOBAL",
  "ints_LONG",
  "zip64",
  "training_checkpoint_p0",
  "legacy_storage_view",
  "legacy_cuda_v1",
];

async function sources(): Promise<Source[]> {
  const out: Source[] = [];
  for (
    const [file, iterations] of [["tost_vision_small.pth", 80], [
      "tost_lang_small.pt",
      150,
    ]] as const
  ) {
    const bytes = await Deno.readFile(`${FIXTURE_DIR}../${file}`);
    out.push({
      name: file,
      bytes,
      regions: zipRegions(bytes),
      pickle: picklePlace(bytes),
      iterations,
    });
  }
  const picked = (await loadManifest()).filter((c) => c.fuzz || EXTRA_SEEDS.includes(c.name));
  for (const c of picked) {
    const bytes = await Deno.readFile(FIXTURE_DIR + c.file);
    const legacy = bytes[0] === 0x80;
    out.push({
      name: c.file,
      bytes,
      // legacy files: pickles first, storages last
      regions: legacy ? [[0, Math.max(1, bytes.length - 64)]] : zipRegions(bytes),
      pickle: legacy ? undefined : picklePlace(bytes),
      iterations: 60,
    });
  }
  return out;
}

const INTERESTING = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];
const INTERESTING_32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffff0, 65535, 65536];

/**
 * A mutant whose data.pkl bytes change in place and whose CRC-32 fields are
 * fixed up, so that the pickle decoder, not the zip's CRC check, meets it.
 */
function mutatePickle(
  src: Source,
  rand: (lo?: number, hi?: number) => number,
): [Uint8Array, string] {
  const p = src.pickle!;
  const b = src.bytes.slice();
  const int = (n: number) => Math.floor(rand(0, n));
  const done: string[] = [];
  for (let k = 1 + int(3); k > 0; k--) {
    const at = p.start + int(p.size);
    if (rand(0, 1) < 0.5) {
      b[at] = rand(0, 1) < 0.5 ? INTERESTING[int(INTERESTING.length)] : int(256);
    } else {
      b[at] ^= 1 << int(8);
    }
    done.push(`pickle byte ${at - p.start} = ${b[at]}`);
  }
  const crc = crc32(b.subarray(p.start, p.start + p.size));
  const view = new DataView(b.buffer);
  view.setUint32(p.localCrc, crc, true);
  view.setUint32(p.centralCrc, crc, true);
  return [b, done.join(", ") + " (CRC fixed)"];
}

/** One mutant of `src` and a description of what was done to it. */
function mutate(src: Source, rand: (lo?: number, hi?: number) => number): [Uint8Array, string] {
  const int = (n: number) => Math.floor(rand(0, n));
  const pos = (len: number) => {
    if (rand(0, 1) < 0.8) {
      const [a, b] = src.regions[int(src.regions.length)];
      return Math.min(len - 1, a + int(Math.max(1, b - a)));
    }
    return int(len);
  };
  let b = src.bytes.slice();
  const done: string[] = [];
  const n = 1 + int(3);
  for (let k = 0; k < n && b.length > 0; k++) {
    const at = pos(b.length);
    switch (int(6)) {
      case 0:
        b[at] ^= 1 << int(8);
        done.push(`flip bit @${at}`);
        break;
      case 1:
        b[at] = INTERESTING[int(INTERESTING.length)];
        done.push(`byte ${b[at]} @${at}`);
        break;
      case 2: {
        const v = INTERESTING_32[int(INTERESTING_32.length)];
        if (at + 4 <= b.length) new DataView(b.buffer).setUint32(at, v, true);
        done.push(`u32 ${v} @${at}`);
        break;
      }
      case 3:
        b = b.slice(0, at);
        done.push(`truncate @${at}`);
        break;
      case 4: {
        const len = 1 + int(16);
        const cut = new Uint8Array(Math.max(at, b.length - len));
        cut.set(b.subarray(0, at));
        cut.set(b.subarray(at + len), at);
        b = cut;
        done.push(`delete ${len} @${at}`);
        break;
      }
      default: {
        const len = 1 + int(16);
        const head = b.subarray(0, Math.min(b.length, at + len));
        const grown = new Uint8Array(head.length + b.length - at);
        grown.set(head);
        grown.set(b.subarray(at), head.length);
        b = grown;
        done.push(`duplicate ${len} @${at}`);
      }
    }
  }
  return [b, done.join(", ")];
}

Deno.test("checkpoint fuzz: every mutant loads or is refused with CheckpointError", async () => {
  const rand = seededRandom(SEED);
  const reader = new BoundedReader();
  const outcomes = { loaded: 0, refused: 0 };
  let iterations = 0;
  try {
    for (const src of await sources()) {
      for (let i = 0; i < src.iterations; i++) {
        const [bytes, how] = src.pickle && rand(0, 1) < 0.6
          ? mutatePickle(src, rand)
          : mutate(src, rand);
        const path = `${src.name} mutant ${i} (${how})`;
        const reply = await reader.read({ path, bytes }, LIMIT_MS);
        assertOutcome(reply, { name: path, expect: "ok_or_error" }, path, LIMIT_MS);
        outcomes[reply !== "timeout" && reply.ok ? "loaded" : "refused"]++;
        if (Deno.env.get("FUZZ_VERBOSE") && reply !== "timeout" && !reply.ok) {
          console.log("  ", reply.detail?.replace(/\d+/g, "N").slice(0, 70));
        }
        iterations++;
      }
      if (Deno.env.get("FUZZ_VERBOSE")) {
        console.log(src.name, JSON.stringify(outcomes), performance.now());
      }
    }
  } finally {
    reader.close();
  }
  assert.ok(iterations >= 800, `${iterations} iterations`);
  // The mutations must reach the structure: most mutants are refused, and some
  // survive (mutations that only touch a name or a float).
  assert.ok(outcomes.refused > iterations / 2, JSON.stringify(outcomes));
  assert.ok(outcomes.loaded > 0, JSON.stringify(outcomes));
});
