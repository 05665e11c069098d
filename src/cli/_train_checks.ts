/**
 * What `tost train` checks before any work: that `--resume` repeats the run's
 * settings (only `--max-iters` may change), that the data fits the preset
 * (text for language presets, MNIST for vision ones), that a text file is
 * there, is text and is long enough, and that the run directory may be used.
 * Every refusal is a {@linkcode UsageError} (exit 2) and leaves nothing behind.
 *
 * @module
 */

import { isVision } from "../train/loop.ts";
import { presetSettings } from "../train/presets.ts";
import type { TrainSettings } from "../train/presets.ts";
import { loadTextDataset } from "../train/data.ts";
import type { TextDataset } from "../train/data.ts";
import { existingRunFiles, RUN_FILES } from "../train/run_dir.ts";
import { UsageError } from "./_errors.ts";
import { checkWritableDir, refuseOverwritingInputs, sameFile, userFile } from "./_files.ts";

/** The flag that sets a setting, for messages. */
const FLAG_OF: Partial<Record<keyof TrainSettings, string>> = {
  data: "--data",
  tokenizer: "--tokenizer",
  max_iters: "--max-iters",
  batch_size: "--batch-size",
  learning_rate: "--lr",
  eval_interval: "--eval-interval",
  seed: "--seed",
};

/** A setting the user gave explicitly, and where. */
export interface GivenSetting {
  key: keyof TrainSettings;
  value: unknown;
  /** `"--lr"`, `config "c.json"`. */
  from: string;
}

/** Settings given by flags (undefined: not given), with their flag names. */
export function givenFlags(flags: Record<string, unknown>): GivenSetting[] {
  return Object.entries(flags)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ({
      key: k as keyof TrainSettings,
      value: v,
      from: FLAG_OF[k as keyof TrainSettings] ?? k,
    }));
}

async function sameData(a: string, b: string): Promise<boolean> {
  if (a === b) return true;
  if (["sotu", "mnist"].includes(a) || ["sotu", "mnist"].includes(b)) return false;
  return await sameFile(a, b);
}

/**
 * The settings of a resumed run: the checkpoint's, with `max_iters` from the
 * flags. Repeating a setting with the run's value is fine; a different value
 * (or a different preset) is refused, naming each.
 *
 * @throws {UsageError} listing what would change
 */
export async function resumeSettings(
  run: TrainSettings,
  preset: string | undefined,
  given: readonly GivenSetting[],
): Promise<TrainSettings> {
  const changes: string[] = [];
  if (preset !== undefined && preset !== run.preset) {
    let kind = "";
    try {
      const p = presetSettings(preset);
      if (isVision(p) !== isVision(run)) {
        kind = isVision(p) ? " (a vision preset for a language run)" : " (a language preset " +
          "for a vision run)";
      }
    } catch { /* an unknown preset is a change too */ }
    changes.push(`--preset ${preset}${kind}: the run uses preset ${run.preset}`);
  }
  let maxIters = run.max_iters;
  for (const g of given) {
    if (g.key === "max_iters") {
      maxIters = g.value as number;
      continue;
    }
    const was = run[g.key];
    const same = g.key === "data"
      ? await sameData(String(g.value), String(was))
      : JSON.stringify(g.value) === JSON.stringify(was);
    if (!same) {
      changes.push(`${g.from} ${JSON.stringify(g.value)}: the run has ${JSON.stringify(was)}`);
    }
  }
  if (changes.length) {
    throw new UsageError(
      `--resume continues a run with its own settings; these would change it: ` +
        `${changes.join("; ")}. Only --max-iters may change (or start a new run elsewhere ` +
        `with --out)`,
    );
  }
  return { ...run, max_iters: maxIters };
}

/** Refuse data that does not fit the preset's model family. */
export function checkDataFitsPreset(s: TrainSettings): void {
  let presetVision: boolean;
  try {
    presetVision = isVision(presetSettings(s.preset));
  } catch {
    return; // a preset name from an old checkpoint: its data decides
  }
  if (presetVision && !isVision(s)) {
    throw new UsageError(
      `preset ${s.preset} trains the vision model on MNIST, but --data is "${s.data}" (text): ` +
        `use a language preset (tiny, small, medium or a -gpt twin) for text`,
    );
  }
  if (!presetVision && isVision(s)) {
    throw new UsageError(
      `--data mnist is for the vision presets (--preset mnist or mnist-vit); preset ` +
        `${s.preset} trains a language model on text`,
    );
  }
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length];
}

/**
 * Read and tokenise the training text, refusing a missing, empty, binary or
 * too-short file with a message that says which and what `--data` takes.
 */
export async function loadTrainingText(s: TrainSettings): Promise<TextDataset> {
  const source = s.data;
  let data: TextDataset;
  try {
    data = await userFile("training data", source, () => loadTextDataset(source, s.tokenizer));
  } catch (err) {
    if (err instanceof UsageError && /no such file/.test(err.message)) {
      const near = ["sotu", "mnist"].find((n) => editDistance(source.toLowerCase(), n) <= 2);
      throw new UsageError(
        `${err.message}; --data takes sotu (the bundled corpus), mnist (vision), or a UTF-8 ` +
          `text file${near ? ` (did you mean ${near}?)` : ""}`,
      );
    }
    throw err;
  }
  const need = s.block_size + 1;
  if (data.train.length < need || data.val.length < 2) {
    throw new UsageError(
      `"${source}" is too short: its ${data.train.length + data.val.length} tokens give ` +
        `${data.train.length} for training and ${data.val.length} for validation; training ` +
        `needs at least one window of block_size + 1 = ${need} and validation 2: use a longer ` +
        `text or a smaller block_size`,
    );
  }
  return data;
}

/**
 * Check the run directory before any work: a new run refuses a directory
 * that already holds one (unless `force`), a resumed run needs one, no run
 * file may be an input, and the directory must be writable.
 */
export async function checkRunDirectory(
  out: string,
  opts: { resume: boolean; force: boolean; inputs: { what: string; path: string }[] },
): Promise<void> {
  const existing = await existingRunFiles(out);
  if (!opts.resume && !opts.force && existing.length > 0) {
    throw new UsageError(
      `"${out}" already holds a run (${existing.join(", ")}): continue it with --resume, ` +
        `replace it with --force, or choose another --out`,
    );
  }
  await refuseOverwritingInputs({ what: "--out", path: out }, opts.inputs);
  for (const name of RUN_FILES) {
    await refuseOverwritingInputs(
      { what: `the run file`, path: `${out.replace(/\/+$/, "") || "."}/${name}` },
      opts.inputs,
    );
  }
  await checkWritableDir("run directory", out);
}
