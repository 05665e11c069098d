// TSSA backward, per-column coefficients after the first reduction. With
// gwpi[b, c] = Σ_n ∂y·w·Pi (so ∂a = −gwpi) and the forward's statistics
// (tssa_pi.wgsl's, reduced) stats[b] = [M = Σ_n Pi·w² per column,
// Σ_n Pi of the column's head per column]:
//   P = Σ Pi + 1e-8,  a = 1 / (1 + M / P),  ∂dots = a²·gwpi
//   col[b, c]       = a
//   col[b, DIM + c] = ∂M = ∂dots / P
//   dp[b, h]        = ∂P = −Σ_k ∂dots·M / P²
// One thread per (batch element, head), looping over the head's d columns.

{{include grid}}

struct Params {
  pairs: u32,  // B · HEADS
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gwpi: array<f32>;   // [B, DIM]
@group(0) @binding(2) var<storage, read> stats: array<f32>;  // [B, 2·DIM]
@group(0) @binding(3) var<storage, read_write> col: array<f32>;  // [B, 4·DIM]
@group(0) @binding(4) var<storage, read_write> dp: array<f32>;   // [B, HEADS]

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let q = flat_workgroup(wid, nwg) * 64u + lid;
  if (q >= p.pairs) {
    return;
  }
  let b = q / HEADS;
  let h = q % HEADS;
  let P = stats[b * 2u * DIM + DIM + h * HEAD_DIM] + 1e-8;
  var acc = 0.0;
  for (var k = 0u; k < HEAD_DIM; k++) {
    let c = h * HEAD_DIM + k;
    let M = stats[b * 2u * DIM + c];
    let a = 1.0 / (1.0 + M / P);
    let ddots = a * a * gwpi[b * DIM + c];
    col[b * 4u * DIM + c] = a;
    col[b * 4u * DIM + DIM + c] = ddots / P;
    acc += ddots * M;
  }
  dp[q] = -acc / (P * P);
}
