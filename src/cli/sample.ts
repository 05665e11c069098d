/**
 * `tost sample`: generate text with a language model, streaming it to stdout
 * as it is sampled.
 *
 * Causal ToST decodes incrementally by default: each layer carries the
 * running statistics of causal TSSA, so every new token costs the same work
 * whatever the context length; GPT models carry a key/value cache. Each new
 * token is one GPU submission that reads back only its logits.
 *
 * @module
 */

import { Command } from "commander";
import { Gpu } from "../gpu/runtime.ts";
import { destroyModel, readModelFile, uploadModel } from "../model/load.ts";
import { generate } from "../model/generate.ts";
import type { GenerateResult } from "../model/generate.ts";
import { UsageError } from "./_errors.ts";
import { printJson, warnNonFiniteWeights } from "./_output.ts";
import { modelCodec } from "./_codec.ts";
import { userFile } from "./_files.ts";

function integer(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `in [${min}, ${max}]`;
      throw new UsageError(`--${name} must be an integer ${range}, got "${value}"`);
    }
    return n;
  };
}

function temperature(value: string): number {
  const t = Number(value);
  if (value.trim() === "" || !Number.isFinite(t) || t < 0) {
    throw new UsageError(`--temperature must be a number ≥ 0, got "${value}"`);
  }
  return t;
}

/** Write all of `text` to stdout now (no buffering: the text streams). */
function writeOut(text: string): void {
  const bytes = new TextEncoder().encode(text);
  for (let done = 0; done < bytes.length;) done += Deno.stdout.writeSync(bytes.subarray(done));
}

function blockSizeNote(r: GenerateResult, requested: number, blockSize: number): string {
  return `stopped after ${r.ids.length} of ${requested} tokens: the context reached the model's ` +
    `block_size ${blockSize}, past which it has no learned positions (--slide continues with a ` +
    `sliding window of the last ${blockSize} tokens, recomputed for every new token)`;
}

/** Build the `sample` subcommand. */
export function sampleCommand() {
  return new Command("sample")
    .description("Generate text with a language model (causal ToST or GPT), streamed to stdout.")
    .argument("<model>", "tost safetensors file or PyTorch checkpoint of a language model")
    .option(
      "-p, --prompt <text>",
      "text to continue (every character must be in the vocabulary)",
      "\n",
    )
    .option("-n, --tokens <n>", "new tokens to generate", integer("tokens", 0), 200)
    .option(
      "-t, --temperature <t>",
      "divide the logits by t before sampling; 0 is greedy",
      temperature,
      0.8,
    )
    .option(
      "-k, --top-k <k>",
      "sample among the k most likely tokens; 0 for all",
      integer("top-k", 0),
      200,
    )
    .option(
      "-s, --seed <seed>",
      "seed of the sampler: equal seeds give equal text",
      integer("seed", 0, 2 ** 32 - 1),
      1337,
    )
    .option(
      "--vocab <file>",
      "vocabulary: its vocab_size characters in id order (or a .json list of tokens)",
    )
    .option("--slide", "at block_size, slide the window instead of stopping")
    .option("--recompute", "recompute the whole context for every token (the slow reference)")
    .option("--key <key>", "top-level entry of a PyTorch checkpoint holding the state_dict")
    .option("--json", "print the result as JSON on stdout instead of streaming the text")
    .addHelpText(
      "after",
      `
Decoding: causal ToST carries, per layer and head, the running sums of its statistics
(sum of w^2, of Pi*w^2 and of Pi), so every new token costs the same work whatever the
context length; GPT models (TSSA=False) carry a key/value cache. --recompute runs the full
forward on the whole context for every token instead (the same tokens, slower).

At block_size: the model has learned positions (and ToST learned denom_bias) only for
block_size tokens, and the prediction at the last position gives one more token. By default
generation stops there, with a note on stderr. --slide continues as nanoGPT does: every
further token is predicted from the last block_size tokens, recomputed from scratch each
time, because sliding the window changes every token's position and ToST's running
statistics cannot forget their oldest token. A prompt longer than block_size is an error,
or cropped to its end with --slide.

Tokenizer: the one saved with the model (tost train saves its character vocabulary, or GPT-2
BPE for --tokenizer gpt2; tost convert --vocab attaches one to a PyTorch checkpoint). A
checkpoint without one needs --vocab, with exactly vocab_size entries.

The prompt and the continuation go to stdout, the timing to stderr.

Examples:
  tost sample out-shakespeare-char/ckpt.pt --vocab chars.txt --prompt "ROMEO:" --tokens 500
  tost sample model.safetensors --temperature 0 --tokens 100      # greedy
  tost sample model.safetensors --prompt "The" --seed 7 --json`,
    )
    .action(async (modelPath, options) => {
      const file = await userFile(
        "model",
        modelPath,
        () => readModelFile(modelPath, { key: options.key }),
      );
      if (file.config.family !== "language") {
        throw new UsageError(`"${modelPath}" is a vision model: sample needs a language model`);
      }
      const cfg = file.config;
      warnNonFiniteWeights(modelPath, file.tensors);
      const codec = await modelCodec(file, options.vocab);
      let prompt: Int32Array;
      try {
        prompt = codec.encode(options.prompt);
      } catch (err) {
        throw new UsageError(`Cannot encode the prompt: ${(err as Error).message}`);
      }
      if (prompt.length === 0) {
        throw new UsageError("the prompt is empty: give at least one character");
      }
      if (prompt.length > cfg.block_size && !options.slide) {
        throw new UsageError(
          `the prompt has ${prompt.length} tokens, more than the model's block_size ` +
            `${cfg.block_size} (--slide uses its last ${cfg.block_size})`,
        );
      }
      const gpu = await Gpu.create();
      try {
        const model = uploadModel(gpu, file);
        try {
          if (model.family !== "language") throw new Error("unreachable: not a language model");
          const stream = !options.json;
          if (stream) writeOut(options.prompt);
          const start = performance.now();
          const result = await generate(gpu, model.params, prompt, {
            tokens: options.tokens,
            temperature: options.temperature,
            topK: options.topK === 0 ? null : options.topK,
            seed: options.seed,
            mode: options.recompute ? "recompute" : "incremental",
            atBlockSize: options.slide ? "slide" : "stop",
            vocabLimit: codec.size,
            onToken: stream
              ? ((next) => (id: number) => writeOut(next(id)))(codec.streamer())
              : undefined,
          });
          const seconds = (performance.now() - start) / 1000;
          const text = codec.decode(result.ids);
          const perToken = result.ids.length > 1
            ? (result.ids.length - 1) / result.decodeSeconds
            : null;
          const decoding = options.recompute
            ? "recomputation"
            : cfg.attention === "tssa"
            ? "incremental causal TSSA statistics"
            : "incremental KV cache";
          if (options.json) {
            printJson({
              model: modelPath,
              attention: cfg.attention,
              decoding: options.recompute ? "recompute" : "incremental",
              prompt: options.prompt,
              text,
              ids: result.ids,
              prompt_tokens: result.promptTokens,
              tokens_requested: options.tokens,
              tokens: result.ids.length,
              stopped: result.stopped,
              block_size: cfg.block_size,
              temperature: options.temperature,
              top_k: options.topK === 0 ? null : options.topK,
              seed: options.seed,
              seconds,
              prompt_seconds: result.promptSeconds,
              decode_seconds: result.decodeSeconds,
              tokens_per_second: perToken,
            });
          } else {
            writeOut("\n");
            if (result.stopped === "block_size") {
              console.error(blockSizeNote(result, options.tokens, cfg.block_size));
            }
            const rate = perToken === null
              ? ""
              : `, ${perToken.toFixed(1)} tokens/s after the prompt`;
            console.error(
              `${result.ids.length} tokens in ${seconds.toFixed(2)} s${rate} (${decoding}, ` +
                `${gpu.info.name})`,
            );
          }
        } finally {
          destroyModel(model);
        }
      } finally {
        gpu.destroy();
      }
    });
}
