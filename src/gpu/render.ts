/**
 * WGSL templates: kernels live in `kernels/*.wgsl` as real WGSL with a few
 * named `{{slots}}` for compile-time constants (workgroup size, tile sizes)
 * and `{{include name}}` lines that pull in a shared snippet from
 * `kernels/lib/name.wgsl` (reductions, softmax over heads, erf, scans:
 * written once, used by many kernels).
 *
 * {@linkcode renderKernel} expands the includes (each snippet once per
 * kernel, so snippets may include the snippets they build on), fills the
 * slots, and rejects unknown includes, leftovers and unknown slot names, so
 * a typo never reaches the shader compiler as silent text. It also keeps a
 * line map, so a compile error points at the file and line the code came
 * from, inside a snippet or not.
 *
 * @module
 */

import { WGSL_LIBRARY } from "./wgsl_library.ts";

/** Values a slot may take. Numbers are written as WGSL integer literals. */
export type SlotValue = string | number;

/** Where one line of rendered WGSL came from. */
export interface WgslOrigin {
  /** `kernels/<name>.wgsl` or `kernels/lib/<name>.wgsl`. */
  file: string;
  /** 1-based line in that file. */
  line: number;
}

/** A rendered kernel: its code and, per line, where the line came from. */
export interface RenderedKernel {
  code: string;
  /** `origins[i]` is the source of line `i + 1` of `code`. */
  origins: WgslOrigin[];
}

const SLOT = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;
const INCLUDE = /^\s*\{\{\s*include\s+([^\s}]*)\s*\}\}\s*$/;
const INCLUDE_ANYWHERE = /\{\{\s*include\b/;

/**
 * Expand the includes and fill the `{{name}}` slots of a WGSL template.
 *
 * @param kernel the kernel's name (`kernels/<kernel>.wgsl`), for messages
 * @param library snippets by include name (default: `kernels/lib/`)
 * @throws {SyntaxError} on an unknown include, an include that is not alone
 *   on its line, a slot without a value, a value that names no slot, or a
 *   malformed slot
 * @example
 * ```ts
 * import { renderKernel } from "./render.ts";
 * const { code, origins } = renderKernel("k", "{{include grid}}\n@compute @workgroup_size({{wg}}) fn main() {}", { wg: 64 });
 * if (!code.includes("fn flat_workgroup") || !code.includes("@workgroup_size(64)")) {
 *   throw new Error("not rendered");
 * }
 * if (origins.at(-1)?.file !== "kernels/k.wgsl") throw new Error("line map");
 * ```
 */
export function renderKernel(
  kernel: string,
  template: string,
  slots: Readonly<Record<string, SlotValue>> = {},
  library: Readonly<Record<string, string>> = WGSL_LIBRARY,
): RenderedKernel {
  const lines: string[] = [];
  const origins: WgslOrigin[] = [];
  const included = new Set<string>();
  const expand = (file: string, source: string) => {
    source.split("\n").forEach((text, i) => {
      const include = INCLUDE.exec(text);
      if (include) {
        const name = include[1];
        if (!Object.hasOwn(library, name)) {
          throw new SyntaxError(
            `Kernel "${kernel}": ${file}:${i + 1} includes unknown snippet "${name}" ` +
              `(known: ${Object.keys(library).sort().join(", ") || "none"})`,
          );
        }
        if (included.has(name)) return;
        included.add(name);
        expand(`kernels/lib/${name}.wgsl`, library[name]);
        return;
      }
      if (INCLUDE_ANYWHERE.test(text)) {
        throw new SyntaxError(
          `Kernel "${kernel}": ${file}:${i + 1}: an include must stand alone on its line`,
        );
      }
      lines.push(text);
      origins.push({ file, line: i + 1 });
    });
  };
  expand(`kernels/${kernel}.wgsl`, template);
  return fillSlots(kernel, lines, origins, slots);
}

/**
 * Fill the `{{name}}` slots of a WGSL template (includes expanded too); the
 * code of {@linkcode renderKernel}.
 *
 * @throws {SyntaxError} when a slot has no value or a value names no slot.
 * @example
 * ```ts
 * import { renderWgsl } from "./render.ts";
 * const code = renderWgsl("k", "@compute @workgroup_size({{wg}}) fn main() {}", { wg: 64 });
 * if (!code.includes("@workgroup_size(64)")) throw new Error("not rendered");
 * ```
 */
export function renderWgsl(
  kernel: string,
  template: string,
  slots: Readonly<Record<string, SlotValue>> = {},
): string {
  return renderKernel(kernel, template, slots).code;
}

function fillSlots(
  kernel: string,
  lines: readonly string[],
  origins: readonly WgslOrigin[],
  slots: Readonly<Record<string, SlotValue>>,
): RenderedKernel {
  const used = new Set<string>();
  const missing = new Set<string>();
  const out: string[] = [];
  const outOrigins: WgslOrigin[] = [];
  lines.forEach((text, i) => {
    const filled = text.replace(SLOT, (_match, name: string) => {
      if (!Object.hasOwn(slots, name)) {
        missing.add(name);
        return "";
      }
      used.add(name);
      const value = slots[name];
      if (typeof value === "number" && !Number.isFinite(value)) {
        throw new RangeError(`Kernel "${kernel}": slot "${name}" is not a finite number`);
      }
      return String(value);
    });
    // A slot value of several lines (generated code) maps every one of its
    // lines to the template line that holds the slot.
    for (const part of filled.split("\n")) {
      out.push(part);
      outOrigins.push(origins[i]);
    }
  });
  if (missing.size > 0) {
    throw new SyntaxError(`Kernel "${kernel}": no value for slot(s) ${[...missing].join(", ")}`);
  }
  const unused = Object.keys(slots).filter((k) => !used.has(k));
  if (unused.length > 0) {
    throw new SyntaxError(`Kernel "${kernel}": unknown slot(s) ${unused.join(", ")}`);
  }
  const code = out.join("\n");
  if (code.includes("{{")) {
    throw new SyntaxError(`Kernel "${kernel}": malformed slot left after rendering`);
  }
  return { code, origins: outOrigins };
}
