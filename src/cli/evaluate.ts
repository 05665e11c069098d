/**
 * `tost evaluate`: run a model in eval mode.
 *
 * - `--inputs in.safetensors --save-outputs out.safetensors`: every
 *   `caseK.input` (float images, NCHW) or `caseK.idx` (int64 token ids) is
 *   run and `caseK.logits` written (language models: every position);
 * - `--data …`: top-1 accuracy on MNIST's test set (vision), or loss and
 *   perplexity on the validation split of a text (language: the bundled
 *   State of the Union corpus or a text file), with throughput.
 *
 * `<model>` is a tost safetensors file or a PyTorch checkpoint converted on
 * the fly. Each batch is one GPU submission; only logits (vision) or
 * per-token losses (language) are read back, collected on the GPU over many
 * batches and read about 20 times in all (for the progress), not per batch.
 *
 * @module
 */

import { Command } from "commander";
import { Gpu } from "../gpu/runtime.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import type { SafetensorsFile, StTensor } from "../io/safetensors.ts";
import { destroyModel, readModelFile, uploadModel } from "../model/load.ts";
import type { GpuModel, ModelFile } from "../model/load.ts";
import { visionForward } from "../model/vision/model.ts";
import { languageForward, recordLanguageLosses } from "../model/language/model.ts";
import { Arena } from "../gpu/arena.ts";
import { collectBatches } from "../gpu/collect.ts";
import { loadMnistTest } from "../data/mnist.ts";
import { scoreMnist } from "../model/vision/score_mnist.ts";
import { evalBatches, loadSotu, readTextData, splitTrainVal } from "../data/text.ts";
import type { TextCodec } from "../data/codec.ts";
import { UsageError } from "./_errors.ts";
import { countNonFinite, printJson, warn, warnNonFiniteWeights } from "./_output.ts";
import { modelCodec } from "./_codec.ts";
import { checkWritableFile, expectKind, refuseOverwritingInputs, userFile } from "./_files.ts";
import { ProgressBar } from "./_progress.ts";

function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) {
      throw new UsageError(`--${name} must be a positive integer, got "${value}"`);
    }
    return n;
  };
}

/**
 * How often a `--data` evaluation reads its results back: about 20 times in
 * all (each read is one host wait; between reads the batches run back to
 * back), so the progress moves without a wait per batch.
 */
function progressReads(batches: number): { readEvery: number } {
  return { readEvery: Math.max(1, Math.ceil(batches / 20)) };
}

/** Progress on stderr: a bar on a terminal, a plain line per ~10 % otherwise. */
class Progress {
  #bar: ProgressBar;
  #lastLine = -1;
  constructor(readonly total: number, readonly unit: string, readonly quiet: boolean) {
    this.#bar = new ProgressBar({ label: "evaluating", total });
    if (!quiet) this.#bar.start(0, ` ${unit}`);
  }
  update(done: number, rate: string): void {
    if (this.quiet) return;
    if (this.#bar.enabled) {
      this.#bar.update(done, ` ${this.unit} | ${rate}`);
      return;
    }
    const tenth = Math.floor((10 * done) / this.total);
    if (tenth > this.#lastLine && done < this.total) {
      this.#lastLine = tenth;
      console.error(`evaluating: ${done}/${this.total} ${this.unit} (${rate})`);
    }
  }
  /** Erase the bar: the results follow on a clean screen. */
  stop(): void {
    this.#bar.erase();
  }
}

function formatPerplexity(p: number): string {
  return p < 1e6 ? p.toFixed(3) : p.toExponential(3);
}

function describeModel(file: ModelFile): string {
  const c = file.config;
  const size = c.family === "vision"
    ? `width ${c.embed_dim}, ${c.depth} blocks, ${c.num_heads} heads, patch ${c.patch_size}`
    : `width ${c.n_embd}, ${c.n_layer} blocks, ${c.n_head} heads, block_size ${c.block_size}`;
  const kind = c.family === "vision"
    ? (c.attention === "tssa" ? "ToST vision" : "ViT")
    : (c.attention === "tssa" ? "causal ToST language" : "GPT");
  return `${kind} (${size})`;
}

const CASE = /^(case(\d+))\.(input|idx)$/;

/** Run every `caseK.input` / `caseK.idx` and write `caseK.logits`. */
async function runInputs(
  gpu: Gpu,
  model: GpuModel,
  inputs: SafetensorsFile,
  out: string,
  json: boolean,
): Promise<void> {
  const cases = inputs.names
    .map((n) => CASE.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(a[2]) - Number(b[2]));
  if (cases.length === 0) {
    throw new UsageError(
      `"${inputs.source}" has no caseK.input (images) or caseK.idx (token ids) tensors`,
    );
  }
  const outputs: [string, StTensor][] = [];
  const report: { case: string; input: number[]; logits: number[]; ms: number }[] = [];
  for (const [name, key, , kind] of cases) {
    const shape = inputs.shape(name);
    const t0 = performance.now();
    let logits: Float32Array;
    let logitsShape: number[];
    if (model.family === "vision") {
      if (kind !== "input") {
        throw new UsageError(`"${name}" holds token ids, but the model is a vision model`);
      }
      if (shape.length !== 4) {
        throw new UsageError(`"${name}" must be images [B, C, H, W], got [${shape}]`);
      }
      const data = inputs.f32(name);
      const bad = countNonFinite(data);
      if (bad > 0) warn(`"${name}" holds ${bad} NaN or infinite value(s); its logits will too`);
      ({ logits } = await visionForward(
        gpu,
        model.params,
        data,
        shape as [number, number, number, number],
      ));
      logitsShape = [shape[0], model.config.num_classes];
    } else {
      if (kind !== "idx") {
        throw new UsageError(`"${name}" holds images, but the model is a language model`);
      }
      if (shape.length !== 2) {
        throw new UsageError(`"${name}" must be token ids [B, T], got [${shape}]`);
      }
      const t = inputs.get(name);
      const ids = t.dtype === "I64"
        ? inputs.i64(name)
        : t.dtype === "I32"
        ? new Int32Array(t.data.slice().buffer)
        : null;
      if (!ids) throw new UsageError(`"${name}" must be I64 (or I32) token ids, got ${t.dtype}`);
      ({ logits } = await languageForward(gpu, model.params, ids, shape[0], shape[1]));
      logitsShape = [shape[0], shape[1], model.config.vocab_size];
    }
    const ms = performance.now() - t0;
    const badLogits = countNonFinite(logits);
    if (badLogits > 0) {
      warn(`${key}.logits holds ${badLogits} NaN or infinite value(s) of ${logits.length}`);
    }
    outputs.push([`${key}.logits`, {
      dtype: "F32",
      shape: logitsShape,
      data: new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength),
    }]);
    report.push({ case: key, input: shape, logits: logitsShape, ms });
    if (!json) {
      console.log(
        `${key}: [${shape.join(", ")}] → logits [${logitsShape.join(", ")}] in ${ms.toFixed(1)} ms`,
      );
    }
  }
  await writeSafetensors(out, outputs, {
    model: model.file.path,
    config: JSON.stringify(model.config),
  });
  if (json) printJson({ model: model.file.path, outputs: out, cases: report });
  else console.log(`wrote ${cases.length} case(s) to ${out}`);
}

/** Top-1 accuracy on the MNIST test set. */
async function evaluateMnist(
  gpu: Gpu,
  model: GpuModel & { family: "vision" },
  opts: { limit?: number; batchSize: number; json: boolean },
): Promise<void> {
  const cfg = model.config;
  if (cfg.num_classes < 10) {
    throw new UsageError(`MNIST has 10 classes, the model has ${cfg.num_classes} outputs`);
  }
  const set = await loadMnistTest();
  const total = Math.min(set.count, opts.limit ?? set.count);
  const progress = new Progress(total, "images", opts.json);
  const start = performance.now();
  const arena = new Arena(gpu, "evaluate");
  let correct: number;
  try {
    ({ correct } = await scoreMnist(gpu, model.params, set, {
      count: total,
      batchSize: opts.batchSize,
      inChans: cfg.in_chans,
      numClasses: cfg.num_classes,
      arena,
      ...progressReads(Math.ceil(total / opts.batchSize)),
      onRead: (done) => {
        const s = (performance.now() - start) / 1000;
        progress.update(done, `${(done / s).toFixed(1)} images/s`);
      },
    }));
  } finally {
    arena.destroy();
    progress.stop();
  }
  const seconds = (performance.now() - start) / 1000;
  const result = {
    model: model.file.path,
    data: "mnist",
    split: "test",
    images: total,
    correct,
    accuracy: correct / total,
    seconds,
    images_per_second: total / seconds,
    batch_size: opts.batchSize,
    device: gpu.info.name,
  };
  if (opts.json) {
    printJson(result);
    return;
  }
  console.log(
    [
      `model:      ${model.file.path}: ${describeModel(model.file)}`,
      `data:       MNIST test set, ${total} images`,
      `top-1:      ${(100 * result.accuracy).toFixed(2)}% (${correct}/${total})`,
      `throughput: ${result.images_per_second.toFixed(1)} images/s (${
        seconds.toFixed(2)
      } s, batch ${opts.batchSize}, ${gpu.info.name})`,
    ].join("\n"),
  );
}

/** Loss and perplexity on a text's validation split. */
async function evaluateText(
  gpu: Gpu,
  model: GpuModel & { family: "language" },
  data: string,
  text: string,
  codec: TextCodec,
  opts: { limit?: number; batchSize: number; json: boolean },
): Promise<void> {
  const cfg = model.config;
  let ids: Int32Array;
  try {
    ids = codec.encode(text);
  } catch (err) {
    throw new UsageError(`Cannot evaluate on "${data}": ${(err as Error).message}`);
  }
  const { val } = splitTrainVal(ids);
  if (val.length < 2) throw new UsageError(`the validation split of "${data}" has under 2 tokens`);
  const total = Math.min(val.length - 1, opts.limit ?? Infinity);
  const progress = new Progress(total, "tokens", opts.json);
  let sum = 0;
  let count = 0;
  const windows = Math.ceil(total / cfg.block_size);
  const start = performance.now();
  const arena = new Arena(gpu, "evaluate");
  try {
    await collectBatches(gpu, evalBatches(val, cfg.block_size, opts.batchSize, total), {
      arena,
      ...progressReads(Math.ceil(windows / opts.batchSize)),
      record: (batch) => recordLanguageLosses(gpu, model.params, batch),
      consume: (_, losses) => {
        for (const l of losses) sum += l;
        count += losses.length;
      },
      onRead: () => {
        const s = (performance.now() - start) / 1000;
        progress.update(count, `${(count / s).toFixed(0)} tokens/s`);
      },
    });
  } finally {
    arena.destroy();
    progress.stop();
  }
  const seconds = (performance.now() - start) / 1000;
  const loss = sum / count;
  if (!Number.isFinite(loss)) warn(`the loss is ${loss}: the model's outputs hold NaN or infinity`);
  const result = {
    model: model.file.path,
    data: data === "sotu" ? "sotu" : data,
    split: "val",
    tokens: count,
    loss,
    perplexity: Math.exp(loss),
    bits_per_token: loss / Math.LN2,
    seconds,
    tokens_per_second: count / seconds,
    batch_size: opts.batchSize,
    context: cfg.block_size,
    device: gpu.info.name,
  };
  if (opts.json) {
    printJson(result);
    return;
  }
  const name = data === "sotu" ? "State of the Union corpus (bundled)" : `"${data}"`;
  console.log(
    [
      `model:      ${model.file.path}: ${describeModel(model.file)}`,
      `data:       ${name}, validation split (last 10%), ${count} tokens`,
      `loss:       ${loss.toFixed(4)} nats/token (${result.bits_per_token.toFixed(4)} bits)`,
      `perplexity: ${formatPerplexity(result.perplexity)}`,
      `throughput: ${result.tokens_per_second.toFixed(0)} tokens/s (${
        seconds.toFixed(2)
      } s, batch ${opts.batchSize} × ${cfg.block_size}, ${gpu.info.name})`,
    ].join("\n"),
  );
}

/** Build the `evaluate` subcommand. */
export function evaluateCommand() {
  return new Command("evaluate")
    .description(
      "Run a model in eval mode: logits for saved inputs, or accuracy / loss on a data set.",
    )
    .argument(
      "<model>",
      "tost .safetensors file or PyTorch checkpoint (.pt/.pth, converted on the fly)",
    )
    .option("--inputs <file>", "safetensors with caseK.input images (NCHW) or caseK.idx token ids")
    .option("--save-outputs <file>", "write caseK.logits for every case of --inputs here")
    .option(
      "--data <name|file>",
      "evaluate on a data set: mnist (vision), sotu or a text file (language)",
    )
    .option("--vocab <file>", "characters of a language model's vocabulary, in id order")
    .option(
      "--limit <n>",
      "evaluate only the first n images / predicted tokens",
      positiveInt("limit"),
    )
    .option(
      "--batch-size <n>",
      "with --data: images or sequences per GPU submission",
      positiveInt("batch-size"),
      32,
    )
    .option("--key <name>", "PyTorch checkpoint entry holding the weights (e.g. model_ema)")
    .option("--json", "print the results as JSON on stdout")
    .addHelpText(
      "after",
      `
Data sets (bundled, nothing is downloaded):
  mnist   the 10 000 MNIST test digits (vision models; the grey channel is fed
          to every input channel, normalised with MNIST's mean and deviation);
          reports top-1 accuracy and images/s
  sotu    State of the Union addresses 1790–2021 at character level (language
          models, the default for them); any other value is read as a UTF-8 text
          file. The last 10% of the tokens is the validation split; the loss is
          measured over windows of block_size tokens and reported with perplexity
          and tokens/s.

Tokenizer of language models: a file tost trained carries it (its character vocabulary, or
GPT-2 BPE); tost convert --vocab attaches one. A PyTorch checkpoint has none: give
--vocab <file>, a file holding exactly the vocab_size characters of the vocabulary in id
order (for shakespeare_char, the 65 sorted characters of its input.txt), or a .json array
of token strings.

--save-outputs may not be the model, --inputs or --vocab (or a link to one); its directory
is checked before the model runs. NaN or infinite values in the inputs, the weights or the
logits are reported as warnings.

Examples:
  tost evaluate model.safetensors --inputs in.safetensors --save-outputs out.safetensors
  tost evaluate tost_vision.pth --data mnist --limit 500
  tost evaluate ckpt.pt --data input.txt --vocab chars.txt --json`,
    )
    .action(async (model, options) => {
      if ((options.inputs === undefined) !== (options.saveOutputs === undefined)) {
        throw new UsageError("--inputs and --save-outputs go together");
      }
      if (options.inputs !== undefined && options.data !== undefined) {
        throw new UsageError("use either --inputs/--save-outputs or --data, not both");
      }
      if (options.saveOutputs !== undefined) {
        // Before any work: never overwrite an input, and fail now if the output cannot be written.
        await refuseOverwritingInputs({ what: "--save-outputs", path: options.saveOutputs }, [
          { what: "the model", path: model },
          { what: "--inputs", path: options.inputs! },
          options.vocab === undefined ? undefined : { what: "--vocab", path: options.vocab },
        ]);
        await checkWritableFile("--save-outputs", options.saveOutputs);
      }
      const file = await userFile("model", model, () => readModelFile(model, { key: options.key }));
      warnNonFiniteWeights(model, file.tensors);
      if (options.inputs !== undefined) {
        await expectKind("--inputs", options.inputs, ["safetensors"], "a safetensors file");
      }
      const inputs = options.inputs !== undefined
        ? await userFile("inputs", options.inputs, () => readSafetensors(options.inputs!))
        : undefined;
      const family = file.config.family;
      const data = options.data ?? (family === "vision" ? "mnist" : "sotu");
      if (!inputs) {
        if (family === "vision" && data !== "mnist") {
          throw new UsageError(`vision models evaluate on --data mnist, not "${data}"`);
        }
        if (family === "language" && data === "mnist") {
          throw new UsageError(
            "MNIST is for vision models; give a language model sotu or a text file",
          );
        }
      }
      if (options.vocab !== undefined && family !== "language") {
        throw new UsageError("--vocab applies to language models only");
      }
      const codec = family === "language" && !inputs
        ? await modelCodec(file, options.vocab)
        : undefined;
      const text = !codec
        ? ""
        : data === "sotu"
        ? await loadSotu()
        : await userFile("text file", data, () => readTextData(data));
      const gpu = await Gpu.create();
      try {
        const m = uploadModel(gpu, file);
        try {
          const opts = { limit: options.limit, batchSize: options.batchSize, json: !!options.json };
          if (inputs) await runInputs(gpu, m, inputs, options.saveOutputs!, opts.json);
          else if (m.family === "vision") await evaluateMnist(gpu, m, opts);
          else await evaluateText(gpu, m, data, text, codec!, opts);
        } finally {
          destroyModel(m);
        }
      } finally {
        gpu.destroy();
      }
    });
}
