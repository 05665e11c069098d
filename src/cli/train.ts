/**
 * `tost train`: train a language model (causal ToST or its GPT twin) on the
 * bundled corpus or a text file, or a vision model (ToST or its ViT twin) on
 * MNIST, on WebGPU, with a progress bar on a terminal (plain lines when
 * piped), evaluations on the validation split, atomic checkpoints, a metrics
 * log, a loss curve (SVG and PNG) and, for text, a sample at the end.
 * `--resume` continues a run exactly where it stopped.
 *
 * @module
 */

import { Command, Option } from "commander";
import { Gpu } from "../gpu/runtime.ts";
import {
  applySettings,
  DEFAULT_PRESET,
  describePresets,
  presetSettings,
} from "../train/presets.ts";
import type { TrainSettings } from "../train/presets.ts";
import { isVision, runPaths, train } from "../train/loop.ts";
import type { TrainResult } from "../train/loop.ts";
import { loadTrainingCheckpoint } from "../train/checkpoint.ts";
import type { LoadedCheckpoint } from "../train/checkpoint.ts";
import type { TextDataset } from "../train/data.ts";
import {
  existingRunFiles,
  LOCK_FILE,
  lockRunDirectory,
  removeRunFiles,
  RunDirectoryError,
} from "../train/run_dir.ts";
import { lossCurvePng, lossCurveSvg, readLossLog } from "../train/plot.ts";
import { InterruptedError, UsageError } from "./_errors.ts";
import { userFile } from "./_files.ts";
import { onInterrupt } from "./_interrupt.ts";
import { printJson } from "./_output.ts";
import { describeConfig, summary, TrainProgress } from "./_train_report.ts";
import { pinnedTuneStore } from "./_tune_file.ts";
import { setTuneStore, tuneStore } from "../gpu/tune.ts";
import {
  checkDataFitsPreset,
  checkRunDirectory,
  givenFlags,
  loadTrainingText,
  resumeSettings,
} from "./_train_checks.ts";
import type { GivenSetting } from "./_train_checks.ts";

function integer(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isInteger(n) || n < min) {
      throw new UsageError(`--${name} must be an integer ≥ ${min}, got "${value}"`);
    }
    return n;
  };
}

function positiveNumber(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n <= 0) {
      throw new UsageError(`--${name} must be a positive number, got "${value}"`);
    }
    return n;
  };
}

async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  const text = await userFile("config", path, () => Deno.readTextFile(path));
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`Config "${path}" is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UsageError(`Config "${path}" must hold a JSON object of settings`);
  }
  return value as Record<string, unknown>;
}

function userSettings<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof TypeError || err instanceof RangeError) throw new UsageError(err.message);
    throw err;
  }
}

async function writePlots(out: string, title: string): Promise<{ svg: string; png: string }> {
  const dir = out.replace(/\/+$/, "") || ".";
  const svg = `${dir}/loss.svg`;
  const png = `${dir}/loss.png`;
  const text = await lossCurveSvg(await readLossLog(runPaths(out).log), title);
  await Deno.writeTextFile(svg, text);
  await Deno.writeFile(png, await lossCurvePng(text));
  return { svg, png };
}

function resultJson(r: TrainResult, device: string, plots: { svg: string; png: string }) {
  return {
    status: r.status,
    step: r.step,
    max_iters: r.settings.max_iters,
    train_loss: r.trainLoss,
    val_loss: r.finalValLoss,
    val_step: r.finalValStep,
    best_val_loss: r.bestValLoss,
    accuracy: r.finalAccuracy,
    [`${r.unit}_per_second`]: r.itemsPerSecond,
    seconds: r.seconds,
    device,
    config: r.config,
    settings: r.settings,
    checkpoints: { last: r.lastCheckpoint, best: r.bestCheckpoint },
    plots,
    sample: r.sample,
  };
}

/** The options `train` declares (commander's parsed values). */
interface TrainFlags {
  preset: string;
  config?: string;
  data?: string;
  tokenizer?: "char" | "gpt2";
  maxIters?: number;
  batchSize?: number;
  lr?: number;
  evalInterval?: number;
  seed?: number;
  out?: string;
  resume?: true;
  force?: true;
  json?: true;
}

/** Settings and inputs of the run to start or continue, all checked. */
interface Plan {
  settings: TrainSettings;
  out: string;
  checkpoint?: LoadedCheckpoint<TrainSettings>;
  dataset?: TextDataset;
}

async function plan(options: TrainFlags, presetGiven: boolean): Promise<Plan> {
  if (options.resume && options.force) {
    throw new UsageError("--resume continues the run in --out and --force replaces it: not both");
  }
  const flags: Record<string, unknown> = {
    data: options.data,
    tokenizer: options.tokenizer,
    max_iters: options.maxIters,
    batch_size: options.batchSize,
    learning_rate: options.lr,
    eval_interval: options.evalInterval,
    seed: options.seed,
  };
  const file = options.config ? await readConfigFile(options.config) : {};
  let settings: TrainSettings;
  let checkpoint: LoadedCheckpoint<TrainSettings> | undefined;
  if (options.resume) {
    if (!options.out) throw new UsageError("--resume needs --out <dir>: the run to continue");
    const last = runPaths(options.out).last;
    if (!(await existingRunFiles(options.out)).includes("last.safetensors")) {
      throw new UsageError(`Cannot resume: "${last}" does not exist (no run in "${options.out}")`);
    }
    checkpoint = await userFile(
      "checkpoint",
      last,
      () => loadTrainingCheckpoint<TrainSettings>(last),
    );
    const given: GivenSetting[] = [
      ...Object.entries(file).map(([k, v]) => ({
        key: k as keyof TrainSettings,
        value: v,
        from: `config "${options.config}": ${k}`,
      })),
      ...givenFlags(flags),
    ];
    settings = await resumeSettings(
      checkpoint.settings,
      presetGiven ? options.preset : undefined,
      given,
    );
    // Data named again (perhaps by another path to the same file) is read from there.
    if (options.data !== undefined) settings = { ...settings, data: options.data };
    if (checkpoint.progress.step > settings.max_iters) {
      throw new UsageError(
        `the run in "${options.out}" is at step ${checkpoint.progress.step}, past --max-iters ` +
          `${settings.max_iters}: give a larger --max-iters to train further`,
      );
    }
  } else {
    const preset = userSettings(() => presetSettings(options.preset));
    const fromFile = userSettings(() => applySettings(preset, file, `Config "${options.config}"`));
    settings = userSettings(() => applySettings(fromFile, flags, "options"));
  }
  checkDataFitsPreset(settings);
  const dataset = isVision(settings) ? undefined : await loadTrainingText(settings);
  const out = options.out ?? `runs/${settings.preset}`;
  const inputs = [
    ...(isVision(settings) || settings.data === "sotu"
      ? []
      : [{ what: "--data", path: settings.data }]),
    ...(options.config ? [{ what: "--config", path: options.config }] : []),
  ];
  await checkRunDirectory(out, { resume: !!options.resume, force: !!options.force, inputs });
  return { settings, out, checkpoint, dataset };
}

async function dirExists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** After a failure before the first checkpoint: remove what this run created. */
async function removeEmptyRun(out: string): Promise<void> {
  if ((await existingRunFiles(out)).includes("last.safetensors")) return;
  await removeRunFiles(out);
  await Deno.remove(`${out.replace(/\/+$/, "") || "."}/${LOCK_FILE}`).catch(() => {});
  await Deno.remove(out).catch(() => {}); // only if now empty
}

async function run(options: TrainFlags, presetGiven: boolean): Promise<void> {
  const p = await plan(options, presetGiven);
  const { out } = p;
  if (p.checkpoint && p.checkpoint.progress.step === p.settings.max_iters) {
    const msg = `nothing to do: the run in "${out}" is already at step ` +
      `${p.checkpoint.progress.step} of ${p.settings.max_iters} (give a larger --max-iters to ` +
      `train further)`;
    if (options.json) {
      printJson({ status: "finished", step: p.checkpoint.progress.step, note: msg });
    } else console.error(msg);
    return;
  }
  const gpu = await Gpu.create();
  const created = !(await dirExists(out));
  let release: () => void;
  try {
    release = await lockRunDirectory(out, (line) => console.error(line));
  } catch (err) {
    gpu.destroy();
    if (err instanceof RunDirectoryError) throw new UsageError(err.message);
    throw err;
  }
  const progress = new TrainProgress();
  const abort = new AbortController();
  const giveBack = onInterrupt(() => {
    progress.erase();
    console.error(
      "interrupted: stopping after this step and saving a checkpoint… " +
        "(Ctrl-C again quits at once; the last checkpoint stays valid)",
    );
    abort.abort();
  });
  let failed = true;
  try {
    if (options.force) await removeRunFiles(out);
    // The run keeps the kernel variants it starts with, also when resumed (src/gpu/tune.ts).
    setTuneStore(pinnedTuneStore(`${out.replace(/\/+$/, "") || "."}/tune.json`, tuneStore()));
    const result = await train(gpu, p.settings, {
      out,
      resume: !!options.resume,
      checkpoint: p.checkpoint,
      dataset: p.dataset,
      maxIters: options.resume ? p.settings.max_iters : undefined,
      signal: abort.signal,
      onEvent: (e) => progress.event(e),
    });
    failed = false;
    if (result.status === "finished") progress.finish();
    else progress.erase();
    const title = `${describeConfig(result.config)} (${result.settings.data})`;
    const plots = await writePlots(out, title);
    if (options.json) printJson(resultJson(result, gpu.info.name, plots));
    else console.log(summary(result, out, plots, gpu.info.name));
    if (result.status === "interrupted") {
      throw new InterruptedError(
        `interrupted at step ${result.step} of ${result.settings.max_iters}; the run is saved ` +
          `in "${out}": continue it with tost train --resume --out ${out}`,
      );
    }
  } finally {
    giveBack();
    progress.erase();
    release();
    gpu.destroy();
    if (failed && created) await removeEmptyRun(out);
  }
}

/** Build the `train` subcommand. */
export function trainCommand() {
  return new Command("train")
    .description(
      "Train ToST (or its softmax twin) on WebGPU: language models on text, vision on MNIST.",
    )
    .option("--preset <name>", "starting settings (see below)", DEFAULT_PRESET)
    .option("--config <file.json>", "JSON object of settings (nanoGPT names) over the preset")
    .option(
      "--data <sotu|mnist|file>",
      "training data: the bundled corpus (sotu), a UTF-8 text file, or mnist (vision)",
    )
    .addOption(
      new Option("--tokenizer <kind>", "characters or GPT-2 BPE").choices(
        ["char", "gpt2"] as const,
      ),
    )
    .option("--max-iters <n>", "optimizer steps in all", integer("max-iters", 0))
    .option("--batch-size <n>", "sequences per micro-batch", integer("batch-size", 1))
    .option("--lr <x>", "peak learning rate", positiveNumber("lr"))
    .option(
      "--eval-interval <n>",
      "evaluate and checkpoint every n steps",
      integer("eval-interval", 1),
    )
    .option("--seed <n>", "seed of the initial weights and the batch sampler", integer("seed", 0))
    .option("--out <dir>", "run directory (default: runs/<preset>)")
    .option("--resume", "continue the run in --out from its last checkpoint (its settings)")
    .option("--force", "replace the run already in --out (its checkpoints and log are deleted)")
    .option("--json", "print the result as JSON on stdout")
    .addHelpText(
      "after",
      `
Presets (each has a softmax-attention twin, "-gpt" or "-vit": same size, data, steps and
settings, only the attention differs: the paper's A/B):
${describePresets()}

Settings (--config file.json, nanoGPT's names): attention, n_layer, n_head, n_embd,
block_size, bias, data, tokenizer, batch_size, gradient_accumulation_steps, max_iters,
learning_rate, min_lr, warmup_iters, lr_decay_iters, weight_decay, beta1, beta2, eps,
grad_clip, eval_interval, eval_tokens, log_interval, seed, sample_tokens. Flags override
the file, which overrides the preset. data "mnist" trains the vision model (ToST or ViT,
patch 8, on the 60 000 MNIST training digits; n_layer/n_head/n_embd give its depth, heads
and width; validation is the first eval_tokens test digits, with top-1 accuracy).

The run directory (--out) holds one run: last.safetensors (every evaluation and on stop),
best.safetensors (lowest validation loss after training began; the untrained model never
counts), both written atomically, log.jsonl (metrics) and loss.svg / loss.png.
Checkpoints load in tost evaluate and tost sample as they are. A directory that already
holds a run is refused: --resume continues it, --force replaces it. While a run works in
it the directory is locked (.tost-lock: process, host, start time); a second run there is
refused, and the lock of a run that died is taken over with a note.

--resume continues exactly (the same batches, bit-identical parameters). It takes the
run's own settings: the same flags may be given again (the same command plus --resume
works), a different value is refused; only --max-iters may change.

Steps run back to back on the GPU: the host never waits for a step before recording the
next. Their losses and gradient norms are read back once per log_interval steps, so the
progress bar and the log show them up to log_interval steps late (evaluations and
checkpoints wait for every step before them).

Ctrl-C stops after the current step, saves last.safetensors, reports the last training
loss and exits 130; a second Ctrl-C quits at once (the last checkpoint stays valid). A NaN
loss is caught on the GPU, which updates nothing from that step on; the run stops when it
reads the step back, naming it, with the last good checkpoint kept (exit 1), as it does
on a GPU failure. The data
is checked before anything starts: a missing, empty, binary or too short --data file, or
text given to a vision preset, is refused (exit 2) and nothing is written.

Examples:
  tost train                                   # the default: small ToST, bundled corpus
  tost train --preset small-gpt                # its softmax twin, for the A/B
  tost train --preset tiny --out runs/tiny     # 20 steps, seconds
  tost train --data input.txt --preset medium  # nanoGPT shakespeare-char sizes, for a GPU
  tost train --preset mnist                    # vision ToST on MNIST (mnist-vit: its twin)
  tost train --resume --out runs/small --max-iters 600
  tost train --preset tiny --out runs/tiny --force   # start runs/tiny afresh`,
    )
    .action(async (options, cmd) => {
      await run(options, cmd.getOptionValueSource("preset") === "cli");
    });
}
