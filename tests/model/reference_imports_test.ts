/**
 * The float64 references stay independent of GPU code: no reference module
 * (`src/ops/*_reference.ts`, `src/nn/*_reference.ts`,
 * `src/model/reference/*.ts`) reaches the GPU runtime (`src/gpu/`), a kernel
 * (`kernels/*.wgsl`), a GPU op module or a GPU nn module through its runtime
 * imports, directly or transitively.
 */

import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url);
const rel = (specifier: string) => specifier.replace(ROOT.href, "");

/** A reference module: GPU-free by contract. */
function isReference(path: string): boolean {
  return /^src\/(ops|nn)\/\w+_reference\.ts$/.test(path) ||
    path.startsWith("src/model/reference/");
}

/** Whether a module is GPU code a reference must not reach. */
function isGpu(path: string): boolean {
  return path.startsWith("src/gpu/") || path.endsWith(".wgsl") ||
    (path.startsWith("src/ops/") && !isReference(path) && !path.startsWith("src/ops/_")) ||
    (path.startsWith("src/nn/") && !isReference(path));
}

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string } }[];
}

/** The runtime-import graph from `root`, as `deno info` resolves it. */
async function importGraph(root: string): Promise<Map<string, string[]>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", root],
    cwd: ROOT.pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: InfoModule[] };
  return new Map(info.modules.map((m) => [
    rel(m.specifier),
    (m.dependencies ?? []).flatMap((d) => d.code ? [rel(d.code.specifier)] : []),
  ]));
}

Deno.test("the float64 references import no GPU code", async () => {
  const roots = [
    ...["src/ops/", "src/nn/"].flatMap((dir) =>
      [...Deno.readDirSync(new URL(dir, ROOT))].map((e) => `${dir}${e.name}`).filter(isReference)
    ),
    ...[...Deno.readDirSync(new URL("src/model/reference/", ROOT))]
      .map((e) => `src/model/reference/${e.name}`),
  ].sort();
  assert.ok(roots.length >= 18, `found only ${roots.length} reference modules`);
  for (const root of roots) {
    const graph = await importGraph(root);
    const seen = new Set<string>();
    const walk = (path: string, via: string[]): void => {
      if (seen.has(path)) return;
      seen.add(path);
      assert.ok(!isGpu(path), `${[...via, path].join(" → ")} reaches GPU code`);
      for (const dep of graph.get(path) ?? []) walk(dep, [...via, path]);
    };
    walk(root, []);
  }
});
