/**
 * `tost info`: which WebGPU adapter tost would use, its features and limits.
 *
 * @module
 */

import { Command } from "commander";
import { describeAdapter, requestAdapter } from "../gpu/device.ts";
import { formatBytes } from "../gpu/runtime.ts";
import { printJson } from "./_output.ts";
import { savedChoices, tuneStore } from "../gpu/tune.ts";

/** Build the `info` subcommand. */
export function infoCommand() {
  return new Command("info")
    .description("Show the WebGPU adapter tost runs on: name, backend, features and limits.")
    .option("--json", "print the description as JSON on stdout")
    .addHelpText(
      "after",
      `
The backend is chosen by wgpu; force one with DENO_WEBGPU_BACKEND=vulkan (or gl, metal, dx12).
On a machine without a GPU, Mesa's software Vulkan driver (apt-get install mesa-vulkan-drivers)
gives a "software" adapter that runs everything, slowly.`,
    )
    .action(async (options) => {
      const adapter = await requestAdapter();
      const d = describeAdapter(adapter);
      const choices = await savedChoices(d);
      if (options.json) {
        printJson({ ...d, tuning: { cache: tuneStore().where, choices } });
        return;
      }
      const lines = [
        `adapter:   ${d.name}${d.software ? " (software renderer)" : ""}`,
        `vendor:    ${d.vendor || "-"}${d.architecture ? ` / ${d.architecture}` : ""}`,
        `backend:   ${d.backend}`,
        `features:  ${d.features.join(", ") || "-"}`,
        `limits:`,
        ...Object.entries(d.limits).map(([k, v]) =>
          `  ${k.padEnd(36)} ${/Size$/.test(k) && v >= 1024 ? formatBytes(v) : v}`
        ),
        `kernel variants by op and shape class (tuning cache ${tuneStore().where}; ` +
        `\`tost tune\` measures):`,
        ...Object.entries(choices).sort(([a], [b]) => a < b ? -1 : 1)
          .map(([key, c]) => `  ${key.padEnd(40)} ${c.variant}`),
      ];
      if (Object.keys(choices).length === 0) lines.push("  none cached yet");
      console.log(lines.join("\n"));
    });
}
