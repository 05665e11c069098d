/**
 * WGSL templates: kernels live in `kernels/*.wgsl` as real WGSL with a few
 * named `{{slots}}` for compile-time constants (workgroup size, tile sizes).
 * {@linkcode renderWgsl} fills them and rejects both leftovers and unknown
 * names, so a typo never reaches the shader compiler as silent text.
 *
 * @module
 */

/** Values a slot may take. Numbers are written as WGSL integer literals. */
export type SlotValue = string | number;

const SLOT = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

/**
 * Fill the `{{name}}` slots of a WGSL template.
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
  const used = new Set<string>();
  const missing = new Set<string>();
  const out = template.replace(SLOT, (_match, name: string) => {
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
  if (missing.size > 0) {
    throw new SyntaxError(`Kernel "${kernel}": no value for slot(s) ${[...missing].join(", ")}`);
  }
  const unused = Object.keys(slots).filter((k) => !used.has(k));
  if (unused.length > 0) {
    throw new SyntaxError(`Kernel "${kernel}": unknown slot(s) ${unused.join(", ")}`);
  }
  if (out.includes("{{")) {
    throw new SyntaxError(`Kernel "${kernel}": malformed slot left after rendering`);
  }
  return out;
}
