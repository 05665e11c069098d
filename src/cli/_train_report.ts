/**
 * What `tost train` shows: progress on stderr (a bar on a terminal with
 * evaluation lines printed above it, plain lines every `log_interval` steps
 * when piped) and the summary at the end, finished or interrupted.
 *
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import type { TrainEvent, TrainResult } from "../train/loop.ts";
import type { TrainSettings } from "../train/presets.ts";
import { formatSeconds, ProgressBar } from "./_progress.ts";

/** One line naming a model: kind, depth, heads, width, context or patch. */
export function describeConfig(c: ModelConfig): string {
  return c.family === "language"
    ? `${c.attention === "tssa" ? "causal ToST" : "GPT (softmax twin)"}: ${c.n_layer} layers, ` +
      `${c.n_head} heads, width ${c.n_embd}, context ${c.block_size}, vocabulary ${c.vocab_size}`
    : `${c.attention === "tssa" ? "vision ToST" : "ViT (softmax twin)"}: ${c.depth} blocks, ` +
      `${c.num_heads} heads, width ${c.embed_dim}, patch ${c.patch_size}`;
}

/** Progress on stderr: a bar on a terminal, plain lines every `log_interval` steps otherwise. */
export class TrainProgress {
  #bar: ProgressBar | undefined;
  #settings: TrainSettings | undefined;
  #unit = "tokens";
  #suffix = (loss: string, rate: string, eta: string) =>
    ` | loss ${loss} | ${rate} ${this.#unit}/s | ETA ${eta}`;

  /** Print a line (above the bar when there is one). */
  line(text: string): void {
    if (this.#bar) this.#bar.log(text);
    else console.error(text);
  }

  /** Show one training event. */
  event(e: TrainEvent): void {
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
        const bar = new ProgressBar({ label: "training", total: e.settings.max_iters });
        if (bar.enabled) {
          this.#bar = bar;
          bar.start(e.step, this.#suffix("-", "-", "-"));
        }
        break;
      }
      case "step": {
        const eta = formatSeconds(e.etaSeconds);
        if (this.#bar) {
          this.#bar.update(
            e.step,
            this.#suffix(e.loss.toFixed(4), e.itemsPerSecond.toFixed(0), eta),
          );
        } else if (
          this.#settings &&
          (e.step % this.#settings.log_interval === 0 || e.step === this.#settings.max_iters)
        ) {
          console.error(
            `step ${e.step}/${this.#settings.max_iters}: loss ${e.loss.toFixed(4)}, lr ${
              e.lr.toExponential(2)
            }, grad norm ${e.gradNorm.toFixed(3)}, ${
              e.itemsPerSecond.toFixed(0)
            } ${this.#unit}/s, ETA ${eta}`,
          );
        }
        break;
      }
      case "eval":
        this.line(
          `step ${e.step}: validation loss ${e.valLoss.toFixed(4)}${
            e.accuracy === null ? "" : `, top-1 ${(100 * e.accuracy).toFixed(2)}%`
          }${e.step === 0 ? " (untrained baseline)" : e.best ? " (best so far)" : ""} [${
            e.seconds.toFixed(1)
          } s]`,
        );
        break;
      case "checkpoint":
        break;
    }
  }

  /** Leave the final bar on screen once (after a finished run). */
  finish(): void {
    this.#bar?.finish();
    this.#bar = undefined;
  }

  /** Erase the bar (interrupt, error): what follows starts on a clean line. */
  erase(): void {
    this.#bar?.erase();
    this.#bar = undefined;
  }
}

/** The summary printed on stdout when a run ends (finished or interrupted). */
export function summary(
  r: TrainResult,
  out: string,
  plots: { svg: string; png: string },
  device: string,
): string {
  const interrupted = r.status === "interrupted";
  const lines = [
    `${interrupted ? "interrupted" : "finished"} at step ${r.step}/${r.settings.max_iters} ` +
    `in ${formatSeconds(r.seconds)} on ${device}`,
  ];
  if (r.trainLoss !== null) {
    lines.push(`train loss:      ${r.trainLoss.toFixed(4)} (step ${r.step}, the last measured)`);
  }
  if (r.finalValLoss !== null && r.finalValStep !== null && r.finalValStep > 0) {
    lines.push(
      `validation loss: ${r.finalValLoss.toFixed(4)} at step ${r.finalValStep}` +
        (r.bestValLoss === null ? "" : ` (best ${r.bestValLoss.toFixed(4)})`),
    );
  } else if (r.bestValLoss !== null) {
    lines.push(`validation loss: best ${r.bestValLoss.toFixed(4)} (earlier in the run)`);
  } else {
    lines.push(`validation loss: not measured after training began`);
  }
  if (r.finalAccuracy !== null && r.finalValStep !== null && r.finalValStep > 0) {
    lines.push(
      `top-1 accuracy:  ${(100 * r.finalAccuracy).toFixed(2)}% (first ${r.settings.eval_tokens} ` +
        `MNIST test digits)`,
    );
  }
  lines.push(
    `throughput:      ${r.itemsPerSecond.toFixed(0)} training ${r.unit}/s`,
    `checkpoints:     ${r.lastCheckpoint} (step ${r.step})${
      r.bestCheckpoint ? `, ${r.bestCheckpoint} (best validation loss)` : ""
    }`,
    `loss curve:      ${plots.svg}, ${plots.png}`,
  );
  if (interrupted) lines.push(`resume with:     tost train --resume --out ${out}`);
  if (r.sample !== null) lines.push("sample:", r.sample);
  return lines.join("\n");
}
