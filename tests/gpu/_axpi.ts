/**
 * A test kernel for the runtime's tests: `y[i] = x[i] · scale + i`, one
 * invocation per element (uniform `n`, `scale`; bindings x, y).
 *
 * @module
 */

/** The WGSL of the kernel (no slots). */
export const AXPI = `
struct Params { n: u32, scale: f32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= params.n) { return; }
  y[g.x] = x[g.x] * params.scale + f32(g.x);
}`;
