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
// @ts-types="npm:@types/cli-progress@3.11.6"
import cliProgress from "cli-progress";
import process from "node:process";
import { Gpu } from "../gpu/runtime.ts";
import {
  applySettings,
  DEFAULT_PRESET,
  describePresets,
  presetSettings,
} from "../train/presets.ts";
import type { TrainSettings } from "../train/presets.ts";
import type { ModelConfig } from "../model/config.ts";
import { runPaths, train } from "../train/loop.ts";
import type { TrainEvent, TrainResult } from "../train/loop.ts";
import { lossCurvePng, lossCurveSvg, readLossLog } from "../train/plot.ts";
import { UsageError } from "./_errors.ts";
import { printJson, stderrIsTerminal } from "./_output.ts";

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

function describeConfig(c: ModelConfig): string {
  return c.family === "language"
    ? `${c.attention === "tssa" ? "causal ToST" : "GPT (softmax twin)"}: ${c.n_layer} layers, ` +
      `${c.n_head} heads, width ${c.n_embd}, context ${c.block_size}, vocabulary ${c.vocab_size}`
    : `${c.attention === "tssa" ? "vision ToST" : "ViT (softmax twin)"}: ${c.depth} blocks, ` +
      `${c.num_heads} heads, width ${c.embed_dim}, patch ${c.patch_size}`;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s` : `${s.toFixed(1)}s`;
}

/** Progress on stderr: a bar on a terminal, plain lines every `log_interval` steps otherwise. */
class TrainProgress {
  #bar: cliProgress.SingleBar | undefined;
  #settings: TrainSettings | undefined;
  #unit = "tokens";
  #payload = { loss: "-", tps: "-" };
  constructor(readonly quiet: boolean) {}

  #line(text: string): void {
    if (this.#bar) this.#bar.stop();
    console.error(text);
    if (this.#bar && this.#settings) this.#restart();
  }

  #restart(): void {
    // cli-progress cannot print above itself: stop, print, start again at the same value.
    const bar = this.#bar!;
    const value = bar.getProgress() * bar.getTotal();
    bar.start(bar.getTotal(), Math.round(value), this.#payload);
  }

  event(e: TrainEvent): void {
    if (this.quiet) return;
    switch (e.kind) {
      case "start": {
        this.#settings = e.settings;
        this.#unit = e.unit;
        console.error(
          `${e.resumed ? "resuming" : "training"} ${describeConfig(e.config)}, ${
            (e.params / 1e6).toFixed(2)
          } M parameters; data ${e.settings.data} (${e.trainItems} train / ${e.valItems} ` +
            `validation ${e.unit}); steps ${e.step}→${e.settings.max_iters}`,
        );
        if (stderrIsTerminal()) {
          this.#bar = new cliProgress.SingleBar({
            format:
              `training [{bar}] {value}/{total} | loss {loss} | {tps} ${e.unit}/s | ETA {eta_formatted}`,
            stream: process.stderr,
            hideCursor: true,
            etaBuffer: 20,
          }, cliProgress.Presets.shades_classic);
          this.#bar.start(e.settings.max_iters, e.step, this.#payload);
        }
        break;
      }
      case "step": {
        if (this.#bar) {
          this.#payload = { loss: e.loss.toFixed(4), tps: e.itemsPerSecond.toFixed(0) };
          this.#bar.update(e.step, this.#payload);
        } else if (
          this.#settings &&
          (e.step % this.#settings.log_interval === 0 || e.step === this.#settings.max_iters)
        ) {
          console.error(
            `step ${e.step}/${this.#settings.max_iters}: loss ${e.loss.toFixed(4)}, lr ${
              e.lr.toExponential(2)
            }, grad norm ${e.gradNorm.toFixed(3)}, ${
              e.itemsPerSecond.toFixed(0)
            } ${this.#unit}/s, ` +
              `ETA ${formatSeconds(e.etaSeconds)}`,
          );
        }
        break;
      }
      case "eval":
        this.#line(
          `step ${e.step}: validation loss ${e.valLoss.toFixed(4)}${
            e.accuracy === null ? "" : `, top-1 ${(100 * e.accuracy).toFixed(2)}%`
          }${e.best ? " (best so far)" : ""} [${e.seconds.toFixed(1)} s]`,
        );
        break;
      case "checkpoint":
        break;
    }
  }

  stop(): void {
    this.#bar?.stop();
    this.#bar = undefined;
  }
}

async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new UsageError(`Cannot read config "${path}": no such file`);
    }
    throw err;
  }
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

function userSettings(fn: () => TrainSettings): TrainSettings {
  try {
    return fn();
  } catch (err) {
    if (err instanceof TypeError || err instanceof RangeError) throw new UsageError(err.message);
    throw err;
  }
}

async function writePlots(out: string, title: string): Promise<{ svg: string; png: string }> {
  const paths = runPaths(out);
  const svg = `${out.replace(/\/+$/, "")}/loss.svg`;
  const png = `${out.replace(/\/+$/, "")}/loss.png`;
  const text = await lossCurveSvg(await readLossLog(paths.log), title);
  await Deno.writeTextFile(svg, text);
  await Deno.writeFile(png, await lossCurvePng(text));
  return { svg, png };
}

function summary(r: TrainResult, plots: { svg: string; png: string }, device: string): string {
  const lines = [
    `${
      r.status === "finished" ? "finished" : "stopped"
    } at step ${r.step}/${r.settings.max_iters} in ${formatSeconds(r.seconds)} on ${device}`,
    `validation loss: ${r.finalValLoss?.toFixed(4) ?? "-"} (best ${
      r.bestValLoss?.toFixed(4) ?? "-"
    })`,
    ...(r.finalAccuracy === null ? [] : [
      `top-1 accuracy:  ${(100 * r.finalAccuracy).toFixed(2)}% (first ${r.settings.eval_tokens} ` +
      `MNIST test digits)`,
    ]),
    `throughput:      ${r.itemsPerSecond.toFixed(0)} training ${r.unit}/s`,
    `checkpoints:     ${r.lastCheckpoint}${r.bestCheckpoint ? `, ${r.bestCheckpoint}` : ""}`,
    `loss curve:      ${plots.svg}, ${plots.png}`,
  ];
  if (r.status === "interrupted") {
    lines.push(
      `resume with:     tost train --resume --out ${
        r.lastCheckpoint.replace(/\/last\.safetensors$/, "")
      }`,
    );
  }
  if (r.sample !== null) lines.push("sample:", r.sample);
  return lines.join("\n");
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

The run directory holds last.safetensors (every evaluation and on stop) and
best.safetensors (lowest validation loss), both written atomically, log.jsonl (metrics)
and loss.svg / loss.png. Checkpoints load in tost evaluate and tost sample as they are.
Ctrl-C stops after the current step and saves; --resume continues exactly (the same
batches, bit-identical parameters). A NaN loss or a GPU failure stops the run with the
last good checkpoint kept.

Examples:
  tost train                                   # the default: small ToST, bundled corpus
  tost train --preset small-gpt                # its softmax twin, for the A/B
  tost train --preset tiny --out runs/tiny     # 20 steps, seconds
  tost train --data input.txt --preset medium  # nanoGPT shakespeare-char sizes, for a GPU
  tost train --preset mnist                    # vision ToST on MNIST (mnist-vit: its twin)
  tost train --resume --out runs/small --max-iters 600`,
    )
    .action(async (options) => {
      const flags: Record<string, unknown> = {
        data: options.data,
        tokenizer: options.tokenizer,
        max_iters: options.maxIters,
        batch_size: options.batchSize,
        learning_rate: options.lr,
        eval_interval: options.evalInterval,
        seed: options.seed,
      };
      let settings: TrainSettings;
      if (options.resume) {
        const ignored = Object.entries(flags)
          .filter(([k, v]) => v !== undefined && k !== "max_iters").map(([k]) => k);
        if (ignored.length || options.config) {
          throw new UsageError(
            `--resume continues with the checkpoint's settings; only --max-iters may change ` +
              `(got ${[...ignored, ...(options.config ? ["config"] : [])].join(", ")})`,
          );
        }
        if (!options.out) throw new UsageError("--resume needs --out <dir> of the run to continue");
        settings = userSettings(() => presetSettings(DEFAULT_PRESET));
      } else {
        const file = options.config ? await readConfigFile(options.config) : {};
        const preset = userSettings(() => presetSettings(options.preset));
        const fromFile = userSettings(() =>
          applySettings(preset, file, `Config "${options.config}"`)
        );
        settings = userSettings(() => applySettings(fromFile, flags, "options"));
      }
      const out = options.out ?? `runs/${settings.preset}`;
      if (options.resume) {
        try {
          await Deno.stat(runPaths(out).last);
        } catch {
          throw new UsageError(`Cannot resume: "${runPaths(out).last}" does not exist`);
        }
      }
      const progress = new TrainProgress(false);
      const abort = new AbortController();
      let listening = true;
      const stopListening = () => {
        if (listening) Deno.removeSignalListener("SIGINT", onSigint);
        listening = false;
      };
      const onSigint = () => {
        progress.stop();
        console.error(
          "interrupted: stopping after this step and saving a checkpoint… " +
            "(Ctrl-C again quits at once; the last checkpoint stays valid)",
        );
        abort.abort();
        stopListening(); // a second Ctrl-C gets the default behaviour
      };
      Deno.addSignalListener("SIGINT", onSigint);
      const gpu = await Gpu.create();
      try {
        const result = await train(gpu, settings, {
          out,
          resume: !!options.resume,
          maxIters: options.resume ? options.maxIters : undefined,
          signal: abort.signal,
          onEvent: (e) => progress.event(e),
        });
        progress.stop();
        const title = `${describeConfig(result.config)} (${result.settings.data})`;
        const plots = await writePlots(out, title);
        if (options.json) {
          printJson({
            status: result.status,
            step: result.step,
            max_iters: result.settings.max_iters,
            val_loss: result.finalValLoss,
            best_val_loss: result.bestValLoss,
            accuracy: result.finalAccuracy,
            [`${result.unit}_per_second`]: result.itemsPerSecond,
            seconds: result.seconds,
            device: gpu.info.name,
            config: result.config,
            settings: result.settings,
            checkpoints: { last: result.lastCheckpoint, best: result.bestCheckpoint },
            plots,
            sample: result.sample,
          });
        } else {
          console.log(summary(result, plots, gpu.info.name));
        }
      } finally {
        progress.stop();
        stopListening();
        gpu.destroy();
      }
    });
}
