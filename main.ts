/**
 * tost — the Token Statistics Transformer on WebGPU. CLI entry point: wires the
 * subcommands and is the only place that exits.
 *
 * @module
 */

import { Command, CommanderError } from "commander";
import { describeError, EXIT, exitCodeOf } from "./src/cli/_errors.ts";
import { watchInterrupts } from "./src/cli/_interrupt.ts";
import { eraseActiveBar } from "./src/cli/_progress.ts";
import { benchCommand } from "./src/cli/bench.ts";
import { infoCommand } from "./src/cli/info.ts";
import { inspectCommand } from "./src/cli/inspect.ts";
import { convertCommand } from "./src/cli/convert.ts";
import { evaluateCommand } from "./src/cli/evaluate.ts";
import { sampleCommand } from "./src/cli/sample.ts";
import { serveCommand } from "./src/cli/serve.ts";
import { trainCommand } from "./src/cli/train.ts";
import { tuneCommand } from "./src/cli/tune.ts";
import { fileTuneStore } from "./src/cli/_tune_file.ts";
import { setTuneStore } from "./src/gpu/tune.ts";
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
    .addCommand(inspectCommand())
    .addCommand(serveCommand())
    .addCommand(tuneCommand())
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .configureOutput({
      outputError: (str, write) => write(str),
    });
}

/**
 * Run the CLI on `args`; returns the exit code: 0 done, 1 the work failed,
 * 2 a user mistake, 130 interrupted (see `src/cli/_errors.ts`). An interrupt
 * that no command takes calls `exit(130)` at once.
 */
export async function main(
  args: string[],
  exit: (code: number) => void = (code) => Deno.exit(code),
): Promise<number> {
  const cli = buildCli();
  // Commander's "error: …" lines go through console.error like every other error line.
  const writeErr = (str: string) => console.error(str.replace(/\n$/, ""));
  for (const c of [cli, ...cli.commands]) c.exitOverride().configureOutput({ writeErr });
  const verbose = args.includes("--verbose") || args.includes("-v");
  setTuneStore(fileTuneStore()); // kernel variant choices persist on disk for the CLI
  const unwatch = watchInterrupts(exit);
  try {
    await cli.parseAsync(args, { from: "user" });
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version arrive here with exit code 0.
      if (err.exitCode === 0) return EXIT.ok;
      return EXIT.usage; // commander already printed "error: …"
    }
    eraseActiveBar();
    console.error(`error: ${describeError(err)}`);
    if (verbose) {
      // The stack, and each cause's (a file error wraps the reader's own error).
      for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; depth++) {
        console.error(depth === 0 ? e.stack : `caused by: ${e.stack}`);
        e = e.cause;
      }
    }
    return exitCodeOf(err);
  } finally {
    unwatch();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
