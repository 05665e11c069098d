/**
 * tost — the Token Statistics Transformer on WebGPU. CLI entry point: wires the
 * subcommands and is the only place that exits.
 *
 * @module
 */

import { Command, CommanderError } from "commander";
import { describeError, exitCodeOf } from "./src/cli/_errors.ts";
import { benchCommand } from "./src/cli/bench.ts";
import { infoCommand } from "./src/cli/info.ts";
import { convertCommand } from "./src/cli/convert.ts";
import { evaluateCommand } from "./src/cli/evaluate.ts";
import { sampleCommand } from "./src/cli/sample.ts";
import { trainCommand } from "./src/cli/train.ts";
import { tuneCommand } from "./src/cli/tune.ts";
import { fileTuneStore } from "./src/cli/_tune_file.ts";
import { setTuneStore } from "./src/ops/gemm_tune.ts";
import { VERSION } from "./src/version.ts";

/** Build the root command with every working subcommand registered. */
export function buildCli() {
  return new Command("tost")
    .description(
      "Token Statistics Transformer (ToST) on WebGPU: linear-time attention, no Python needed.",
    )
    .version(VERSION, "-V, --version", "print the version")
    .option("-v, --verbose", "print stack traces and causes on errors")
    .addCommand(infoCommand())
    .addCommand(benchCommand())
    .addCommand(convertCommand())
    .addCommand(evaluateCommand())
    .addCommand(sampleCommand())
    .addCommand(trainCommand())
    .addCommand(tuneCommand())
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .configureOutput({
      outputError: (str, write) => write(str),
    });
}

/** Run the CLI on `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const cli = buildCli();
  for (const c of cli.commands) c.exitOverride();
  const verbose = args.includes("--verbose") || args.includes("-v");
  setTuneStore(fileTuneStore()); // GEMM variant choices persist on disk for the CLI
  try {
    await cli.parseAsync(args, { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version arrive here with exit code 0.
      if (err.exitCode === 0) return 0;
      return 2; // commander already printed "error: …"
    }
    console.error(`error: ${describeError(err)}`);
    if (verbose && err instanceof Error && err.stack) console.error(err.stack);
    return exitCodeOf(err);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
