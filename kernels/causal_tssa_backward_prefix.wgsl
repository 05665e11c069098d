// Causal TSSA backward, first pass of the serial design (software adapters
// such as lavapipe): causal_tssa_backward_prep.wgsl and the three forward
// scans of its outputs in one dispatch, with no workgroup memory and no
// barriers. One invocation per (batch element, column c) walks the tokens in
// order and writes the exclusive prefix sums the later passes read (with
// zero carries):
//   sq[n, c]  = Σ_{m<n} w[m, c]²
//   spi[n, c] = Σ_{m<n} w[m, c]²·Pi[m, h(c)]
//   pis[n, h] = Σ_{m<n} Pi[m, h]        (by the invocation of the head's first column)
//
// Order of summation (a deliberate choice, that of scan_serial.wgsl): each
// sum is carry + run, where run adds the tokens of the current 64-token block
// in order and carry adds the finished blocks' totals in order; the block
// design (scan_block.wgsl) forms the same split with trees. The terms are
// prep's (w², then w²·Pi).
//
// The token tensors are bound whole (one binding each); [B·N, HEADS]
// tensors too.

{{include grid}}

struct Params {
  batches: u32,  // B
  tokens: u32,   // N
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;
const WG: u32 = 64u;
const SB: u32 = 64u;  // tokens per block of the run

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> pi: array<f32>;         // [B·N, HEADS]
@group(0) @binding(3) var<storage, read_write> sq: array<f32>;   // [B·N, DIM]
@group(0) @binding(4) var<storage, read_write> spi: array<f32>;  // [B·N, DIM]
@group(0) @binding(5) var<storage, read_write> pis: array<f32>;  // [B·N, HEADS]

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let j = flat_workgroup(wid, nwg) * WG + lid;
  if (j >= p.batches * DIM) {
    return;
  }
  let c = j % DIM;
  let h = c / HEAD_DIM;
  let first_of_head = c % HEAD_DIM == 0u;
  let row0 = (j / DIM) * p.tokens;
  var c_carry = 0.0;
  var c_run = 0.0;
  var a_carry = 0.0;
  var a_run = 0.0;
  var q_carry = 0.0;
  var q_run = 0.0;
  for (var n = 0u; n < p.tokens; n++) {
    let row = row0 + n;
    let i = row * DIM + c;
    let x = w[i];
    let s = x * x;
    let q = pi[row * HEADS + h];
    sq[i] = c_carry + c_run;
    spi[i] = a_carry + a_run;
    if (first_of_head) {
      pis[row * HEADS + h] = q_carry + q_run;
    }
    c_run += s;
    a_run += s * q;
    q_run += q;
    if (n % SB == SB - 1u) {
      c_carry += c_run;
      a_carry += a_run;
      q_carry += q_run;
      c_run = 0.0;
      a_run = 0.0;
      q_run = 0.0;
    }
  }
}
