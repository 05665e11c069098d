/**
 * `tost convert`: PyTorch checkpoint → tost safetensors, or `--inspect` what
 * a checkpoint holds. Nothing in the checkpoint is executed.
 *
 * @module
 */

import { Command, Option } from "commander";
import { convertCheckpoint, inspectCheckpoint } from "../checkpoint/mod.ts";
import type { CheckpointInspection, ConvertResult, TargetDType } from "../checkpoint/mod.ts";
import type { ModelConfig } from "../model/config.ts";
import { formatBytes } from "../gpu/runtime.ts";
import { describeKind } from "../io/sniff.ts";
import { InterruptedError, UsageError } from "./_errors.ts";
import { printJson } from "./_output.ts";
import { checkWritableFile, inputKind, refuseOverwritingInputs, userFile } from "./_files.ts";
import { onInterrupt } from "./_interrupt.ts";
import { ProgressBar } from "./_progress.ts";
import { readVocabFile } from "../model/load.ts";
import { GPT2_VOCAB_SIZE } from "../data/codec.ts";

/** Fail with exit code 2 unless `path` is a PyTorch checkpoint (told by its content). */
async function requireCheckpoint(path: string): Promise<void> {
  const kind = await inputKind("checkpoint", path);
  if (kind === "pytorch-zip" || kind === "pytorch-legacy") return;
  if (kind === "safetensors") {
    throw new UsageError(
      `"${path}" is a safetensors file already, not a PyTorch checkpoint: it needs no ` +
        `conversion (tost evaluate and tost sample read it as it is)`,
    );
  }
  throw new UsageError(`"${path}" is ${describeKind(kind)}, not a PyTorch checkpoint`);
}

function shape(s: readonly number[]): string {
  return `[${s.join(", ")}]`;
}

function printInspection(info: CheckpointInspection): void {
  const lines: string[] = [];
  lines.push(`file:          ${info.file} (${info.format} format, ${formatBytes(info.bytes)})`);
  if (info.topLevel.length) {
    lines.push("top-level keys:");
    const w = Math.max(...info.topLevel.map((e) => e.key.length));
    for (const e of info.topLevel) {
      lines.push(`  ${e.key.padEnd(w)}  ${e.type}: ${e.summary}`);
    }
  }
  if (info.stateDictError) {
    lines.push(`state_dict:    none found (${info.stateDictError})`);
    console.log(lines.join("\n"));
    return;
  }
  lines.push(
    `state_dict:    ${info.key === null ? "the whole file" : `"${info.key}"`} ` +
      `(${info.tensors.length} tensors, ${info.parameters.toLocaleString("en-US")} elements)`,
  );
  lines.push(`architecture:  ${info.architecture ?? `not recognised (${info.configError})`}`);
  if (info.config) lines.push(`config:        ${JSON.stringify(info.config)}`);
  lines.push("tensors:");
  const w = Math.max(0, ...info.tensors.map((t) => t.name.length));
  for (const t of info.tensors) {
    const renamed = t.original !== t.name ? `  (was ${t.original})` : "";
    lines.push(`  ${t.name.padEnd(w)}  ${t.dtype.padEnd(4)}  ${shape(t.shape)}${renamed}`);
  }
  console.log(lines.join("\n"));
}

function printResult(r: ConvertResult, seconds: number): void {
  console.log(
    `wrote ${r.out}: ${r.tensors} tensors, ${formatBytes(r.bytes)}, ${r.metadata.architecture} ` +
      `from ${r.key === null ? "the whole checkpoint" : `"${r.key}"`} in ${seconds.toFixed(1)} s`,
  );
  console.log(`config: ${r.metadata.config}`);
}

/** `__metadata__` that attaches a tokenizer to a converted language model. */
function tokenizerMetadata(
  vocab: string[] | undefined,
  tokenizer: "char" | "gpt2" | undefined,
): ((config: ModelConfig) => Record<string, string>) | undefined {
  if (vocab === undefined && tokenizer === undefined) return undefined;
  return (config) => {
    if (config.family !== "language") {
      throw new UsageError(
        "--vocab and --tokenizer apply to language models; this is a vision model",
      );
    }
    if (tokenizer === "gpt2") {
      if (config.vocab_size < GPT2_VOCAB_SIZE) {
        throw new UsageError(
          `--tokenizer gpt2 needs vocab_size ≥ ${GPT2_VOCAB_SIZE}, the model has ${config.vocab_size}`,
        );
      }
      return { tokenizer: "gpt2" };
    }
    if (vocab && vocab.length !== config.vocab_size) {
      throw new UsageError(
        `--vocab has ${vocab.length} tokens, the model's vocab_size is ${config.vocab_size}: give ` +
          `the model's own vocabulary (the distinct characters of its training text, in id order)`,
      );
    }
    return { tokenizer: "char", ...(vocab ? { vocab: JSON.stringify(vocab) } : {}) };
  };
}

/** Build the `convert` subcommand. */
export function convertCommand() {
  return new Command("convert")
    .description(
      "Convert a PyTorch checkpoint (.pt/.pth, any PyTorch version) to a tost safetensors " +
        "file, or inspect it. Nothing in the checkpoint is executed.",
    )
    .argument("<checkpoint>", "PyTorch checkpoint written by torch.save")
    .option("-o, --out <file>", "safetensors file to write")
    .option("--inspect", "show what the checkpoint holds instead of converting it")
    .option("--json", "print the result as JSON on stdout")
    .option("--key <key>", "top-level entry holding the state_dict (e.g. model_ema)")
    .option(
      "--vocab <file>",
      "attach a character vocabulary to a language model (its characters in id order, or .json)",
    )
    .addOption(
      new Option("--tokenizer <kind>", "attach the tokenizer of a language model").choices(
        ["char", "gpt2"] as const,
      ),
    )
    .addOption(
      new Option("--dtype <dtype>", "float tensors' output type").choices(
        ["keep", "f32", "f16", "bf16"] as const,
      ).default("keep" as const),
    )
    .addHelpText(
      "after",
      `
Reads zip checkpoints (PyTorch >= 1.6) and legacy ones, full training checkpoints (the model
entry is chosen as "model", "state_dict", ... unless --key names another) and bare state_dicts.
Names lose the _orig_mod. (torch.compile) and module. (DDP) prefixes; the architecture and its
config are inferred from the weights, checked against model_args/args, and stored in the
output's __metadata__ with the source's name and SHA-256. nanoGPT's own GPT checkpoints load
too: no layer scale (gamma1/gamma2 are taken as 1) and the causal-mask buffers attn.bias
that PyTorch < 2.0 saves are ignored.

A PyTorch checkpoint holds no tokenizer. For a language model, --vocab chars.txt attaches
its character vocabulary (exactly vocab_size characters in id order: nanoGPT's itos, the
sorted characters of its input.txt) and --tokenizer gpt2 marks GPT-2 BPE, so tost sample and
tost evaluate need no --vocab afterwards. The output may not be the checkpoint itself (or
a link to it); its directory is checked before any work.

Examples:
  tost convert ckpt.pt -o model.safetensors
  tost convert ckpt.pth --key model_ema --dtype f16 -o ema_f16.safetensors
  tost convert ckpt.pt --inspect --json
  tost convert out-shakespeare-char/ckpt.pt --vocab chars.txt -o shakespeare.safetensors
  tost convert gpt2_finetuned.pt --tokenizer gpt2 -o gpt2.safetensors`,
    )
    .action(async (checkpoint, options) => {
      if (options.inspect && options.out) {
        throw new UsageError("use either --inspect or -o/--out, not both");
      }
      if (!options.inspect && !options.out) {
        throw new UsageError("say where to write the result with -o <file>, or use --inspect");
      }
      await requireCheckpoint(checkpoint);
      if (options.inspect) {
        if (options.vocab !== undefined || options.tokenizer !== undefined) {
          throw new UsageError(
            "--vocab and --tokenizer apply when converting (-o), not to --inspect",
          );
        }
        const info = await userFile(
          "checkpoint",
          checkpoint,
          () => inspectCheckpoint(checkpoint, { key: options.key }),
        );
        if (options.json) printJson(info);
        else printInspection(info);
        return;
      }
      if (options.vocab !== undefined && options.tokenizer === "gpt2") {
        throw new UsageError("--vocab is a character vocabulary; --tokenizer gpt2 needs none");
      }
      const out = options.out!;
      await refuseOverwritingInputs({ what: "-o", path: out }, [
        { what: "the checkpoint", path: checkpoint },
        options.vocab === undefined ? undefined : { what: "--vocab", path: options.vocab },
      ]);
      await checkWritableFile("-o", out);
      // The vocabulary's size is checked against vocab_size once the config is inferred.
      const vocabPath = options.vocab;
      const vocab = vocabPath === undefined
        ? undefined
        : await userFile("vocabulary", vocabPath, () => readVocabFile(vocabPath));
      const bar = options.json
        ? undefined
        : new ProgressBar({ label: "converting", total: 1, percent: true });
      const start = performance.now();
      let started = false;
      // Ctrl-C stops the conversion and removes the partial file.
      const abort = new AbortController();
      const giveBack = onInterrupt(() => abort.abort(new InterruptedError("interrupted")));
      let result: ConvertResult;
      try {
        result = await userFile("checkpoint", checkpoint, () =>
          convertCheckpoint(checkpoint, out, {
            key: options.key,
            dtype: options.dtype as TargetDType,
            signal: abort.signal,
            extraMetadata: tokenizerMetadata(vocab, options.tokenizer),
            onProgress: bar?.enabled
              ? (done, total) => {
                const text = ` | ${formatBytes(done)} of ${formatBytes(total)}`;
                if (!started) bar.start(done / total, text);
                else bar.update(done / total, text);
                started = true;
              }
              : undefined,
          }));
      } catch (err) {
        bar?.erase();
        if (abort.signal.aborted) {
          throw new InterruptedError(`interrupted: "${out}" was not written`);
        }
        throw err;
      } finally {
        giveBack();
      }
      bar?.finish();
      if (options.json) printJson(result);
      else printResult(result, (performance.now() - start) / 1000);
    });
}
