// Causal TSSA for software adapters (lavapipe): the forward of
// causal_tssa_pi.wgsl + causal_tssa_out.wgsl + their scans, in three
// dispatches with no scan kernels, no workgroup memory and no barriers
// (every barrier is a fibre switch on lavapipe). The formulas are those of
// src/ops/causal_tssa.ts:
//   squares:     one invocation per (batch element, column) walks the tokens
//                in order: y[n, c] = Σ_{n' ≤ n} w[n', c]²   (y is scratch here)
//   memberships: one invocation per token:
//                Pi[n, h] = softmax_h temp[h]·(Σ_k w[n, h·d+k]² / max(y[n, h·d+k], 1e-12)
//                                             + d·denom_bias[h, n])
//   output:      one invocation per (batch element, column) walks the tokens
//                in order: num = Σ_{n' ≤ n} Pi·w², den = Σ_{n' ≤ n} Pi,
//                y[n, c] = −w[n, c]·Pi[n, h(c)] / (1 + num / (den + 1e-8))
//
// Order of summation (a deliberate choice): each prefix sum is carry + run,
// where run sums the current block of BLOCK = 64 tokens in order and carry
// adds the finished blocks' totals in order, exactly the split of the block
// design (causal_tssa_pi.wgsl / causal_tssa_out.wgsl), whose carry is a
// tree over block totals instead. So for N ≤ 64 both designs add in the
// same order, and rounding grows with N/64 + 64 terms, not N; the float64
// reference (causal_tssa_reference.ts) sums in token order. The sum over a
// head's d features and the softmax are those of tssa_pi_tile.wgsl.
//
// Bindings (every entry point uses a prefix of them): 1 = w, 2 = y, both
// bound from the dispatch's first batch element (elem_base); 3 = pi
// [B·N, HEADS], 4 = temp [HEADS], 5 = denom_bias [HEADS, bias_stride].

{{include grid}}

struct Params {
  batches: u32,     // batch elements in this dispatch
  rows: u32,        // N, tokens per batch element
  batch_base: u32,  // global index of the dispatch's first batch element
  elem_base: u32,   // element of w / y holding that element's first value
  bias_stride: u32, // block_size of denom_bias
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;
const WG: u32 = {{workgroupSize}}u;
const BLOCK: u32 = 64u;  // tokens per run before it joins the carry

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> pi: array<f32>;
@group(0) @binding(4) var<storage, read> temp: array<f32>;
@group(0) @binding(5) var<storage, read> denom_bias: array<f32>;

fn invocation(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return flat_workgroup(wid, nwg) * WG + lid;
}

@compute @workgroup_size(WG)
fn squares(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = invocation(wid, nwg, lid);
  if (i >= p.batches * DIM) {
    return;
  }
  let c = i % DIM;
  let e0 = p.elem_base + (i / DIM) * p.rows * DIM + c;
  var carry = 0.0;
  var run = 0.0;
  for (var n = 0u; n < p.rows; n++) {
    let x = w[e0 + n * DIM];
    run += x * x;
    y[e0 + n * DIM] = carry + run;
    if (n % BLOCK == BLOCK - 1u) {
      carry += run;
      run = 0.0;
    }
  }
}

@compute @workgroup_size(WG)
fn memberships(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = invocation(wid, nwg, lid);
  if (i >= p.batches * p.rows) {
    return;
  }
  let n = i % p.rows;
  let e = p.elem_base + i * DIM;
  let bias_at = min(n, p.bias_stride - 1u);
  var logits: array<f32, HEADS>;
  var m = -0x1.fffffep+127f; // the lowest finite f32
  for (var h = 0u; h < HEADS; h++) {
    var s = 0.0;
    for (var k = 0u; k < HEAD_DIM; k++) {
      let x = w[e + h * HEAD_DIM + k];
      s += (x * x) / max(y[e + h * HEAD_DIM + k], 1e-12);
    }
    logits[h] = temp[h] * (s + f32(HEAD_DIM) * denom_bias[h * p.bias_stride + bias_at]);
    m = max(m, logits[h]);
  }
  var total = 0.0;
  for (var h = 0u; h < HEADS; h++) {
    total += exp(logits[h] - m);
  }
  let row = p.batch_base * p.rows + i;
  for (var h = 0u; h < HEADS; h++) {
    pi[row * HEADS + h] = exp(logits[h] - m) / total;
  }
}

@compute @workgroup_size(WG)
fn output(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = invocation(wid, nwg, lid);
  if (i >= p.batches * DIM) {
    return;
  }
  let c = i % DIM;
  let h = c / HEAD_DIM;
  let b = i / DIM;
  let e0 = p.elem_base + b * p.rows * DIM + c;
  let row0 = (p.batch_base + b) * p.rows;
  var num_carry = 0.0;
  var den_carry = 0.0;
  var num = 0.0;
  var den = 0.0;
  for (var n = 0u; n < p.rows; n++) {
    let x = w[e0 + n * DIM];
    let v = pi[(row0 + n) * HEADS + h];
    num += v * (x * x);
    den += v;
    let dots = (num_carry + num) / (den_carry + den + 1e-8);
    y[e0 + n * DIM] = -(x * v) / (1.0 + dots);
    if (n % BLOCK == BLOCK - 1u) {
      num_carry += num;
      den_carry += den;
      num = 0.0;
      den = 0.0;
    }
  }
}
