/**
 * `tost convert`: PyTorch checkpoint → tost safetensors, or `--inspect` what
 * a checkpoint holds. Nothing in the checkpoint is executed.
 *
 * @module
 */

import { Command, Option } from "commander";
// @ts-types="npm:@types/cli-progress@3.11.6"
import cliProgress from "cli-progress";
import process from "node:process";
import { convertCheckpoint, inspectCheckpoint } from "../checkpoint/mod.ts";
import type { CheckpointInspection, ConvertResult, TargetDType } from "../checkpoint/mod.ts";
import { formatBytes } from "../gpu/runtime.ts";
import { UsageError } from "./_errors.ts";
import { printJson, stderrIsTerminal } from "./_output.ts";

/** Fail with exit code 2 unless `path` is a readable regular file. */
async function requireFile(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new UsageError(`Cannot read checkpoint "${path}": no such file`);
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new UsageError(`Cannot read checkpoint "${path}": permission denied`);
    }
    throw err;
  }
  if (!info.isFile) throw new UsageError(`Cannot read checkpoint "${path}": not a regular file`);
}

/** Fail with exit code 2 unless the output's directory exists. */
async function requireOutputDir(out: string): Promise<void> {
  const slash = Math.max(out.lastIndexOf("/"), out.lastIndexOf("\\"));
  const dir = slash < 0 ? "." : out.slice(0, slash) || "/";
  try {
    if (!(await Deno.stat(dir)).isDirectory) throw new Deno.errors.NotFound();
  } catch {
    throw new UsageError(`Cannot write "${out}": directory "${dir}" does not exist`);
  }
  try {
    if ((await Deno.stat(out)).isDirectory) {
      throw new UsageError(`Cannot write "${out}": it is a directory`);
    }
  } catch (err) {
    if (err instanceof UsageError) throw err;
  }
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

/** Call `fn` on SIGINT/SIGTERM/SIGHUP (where the platform has them); returns the remover. */
function listenForSignals(fn: () => void): () => void {
  const added: Deno.Signal[] = [];
  const names: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT"]
    : ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of names) {
    try {
      Deno.addSignalListener(s, fn);
      added.push(s);
    } catch { /* not available here */ }
  }
  return () => {
    for (const s of added) Deno.removeSignalListener(s, fn);
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
output's __metadata__ with the source's name and SHA-256.

Examples:
  tost convert ckpt.pt -o model.safetensors
  tost convert ckpt.pth --key model_ema --dtype f16 -o ema_f16.safetensors
  tost convert ckpt.pt --inspect --json`,
    )
    .action(async (checkpoint, options) => {
      if (options.inspect && options.out) {
        throw new UsageError("use either --inspect or -o/--out, not both");
      }
      if (!options.inspect && !options.out) {
        throw new UsageError("say where to write the result with -o <file>, or use --inspect");
      }
      await requireFile(checkpoint);
      if (options.inspect) {
        const info = await inspectCheckpoint(checkpoint, { key: options.key });
        if (options.json) printJson(info);
        else printInspection(info);
        return;
      }
      const out = options.out!;
      await requireOutputDir(out);
      const bar = stderrIsTerminal() && !options.json
        ? new cliProgress.SingleBar({
          format: "converting [{bar}] {percentage}% | {done} of {all}",
          stream: process.stderr,
          hideCursor: true,
        }, cliProgress.Presets.shades_classic)
        : undefined;
      const start = performance.now();
      // Ctrl-C or a termination signal stops the conversion and removes the partial file.
      const abort = new AbortController();
      const onSignal = () => abort.abort(new Error("interrupted"));
      const signals = listenForSignals(onSignal);
      let started = false;
      let result: ConvertResult;
      try {
        result = await convertCheckpoint(checkpoint, out, {
          key: options.key,
          dtype: options.dtype as TargetDType,
          signal: abort.signal,
          onProgress: bar
            ? (done, total) => {
              const payload = { done: formatBytes(done), all: formatBytes(total) };
              if (!started) bar.start(total, done, payload);
              else bar.update(done, payload);
              started = true;
            }
            : undefined,
        });
      } finally {
        if (started) bar?.stop();
        signals();
      }
      if (options.json) printJson(result);
      else printResult(result, (performance.now() - start) / 1000);
    });
}
