// Non-causal TSSA in one pass per batch element, for software adapters
// (lavapipe): one INVOCATION per batch element does all of it serially, with
// no workgroup memory and no barriers (every barrier is a fibre switch on
// lavapipe; see src/ops/_tuned.ts). Same results and saves as the block
// design (block_sums.wgsl + tssa_pi.wgsl + tssa_out.wgsl):
//   sq[b, c]          = Σ_n w[n, c]²                                    (saved, unclamped)
//   Pi[n, h]          = softmax_h temp[h]·Σ_k w[n, h·d+k]² / max(sq[b, h·d+k], 1e-24)
//   stats[b, c]       = Σ_n Pi[n, h(c)]·w[n, c]²
//   stats[b, DIM + c] = Σ_n Pi[n, h(c)]
//   y[n, c]           = −w[n, c]·Pi[n, h(c)] / (1 + stats[b, c] / (stats[b, DIM + c] + 1e-8))
//
// Order of summation (a deliberate choice): every sum over tokens runs in
// token order n = 0, 1, …, N−1 in one f32 accumulator, as the float64
// reference (tssa_reference.ts) does in float64; the block design sums
// blocks of 128 tokens in order and then the blocks as a tree, so for
// N ≤ 128 both designs add in the same order. Sums over a head's d features
// run k = 0 … d−1 as in tile_head_sum. The softmax is softmax_heads_at's.
//
// The invocation reads back sq and pi that it wrote itself (storage memory
// is coherent within one invocation). w and y are bound from the piece's
// first batch element; pi, sq and stats are bound whole.

{{include grid}}

struct Params {
  batches: u32,     // batch elements in this dispatch
  rows: u32,        // N, tokens per batch element
  batch_base: u32,  // global index of the dispatch's first batch element
  elem_base: u32,   // element of w / y holding that element's first value
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;
const WG: u32 = {{workgroupSize}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> temp: array<f32>;            // [HEADS]
@group(0) @binding(3) var<storage, read_write> pi: array<f32>;        // [B·N, HEADS]
@group(0) @binding(4) var<storage, read_write> sq: array<f32>;        // [B, DIM]
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;     // [B, 2·DIM]
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let local = flat_workgroup(wid, nwg) * WG + lid;
  if (local >= p.batches) {
    return;
  }
  let b = p.batch_base + local;
  let n_tok = p.rows;
  let e0 = p.elem_base + local * n_tok * DIM;
  let row0 = b * n_tok;
  // Σ_n w² per feature, in token order.
  for (var c = 0u; c < DIM; c++) {
    var s = 0.0;
    for (var n = 0u; n < n_tok; n++) {
      let v = w[e0 + n * DIM + c];
      s += v * v;
    }
    sq[b * DIM + c] = s;
  }
  // Pi per token: the softmax over heads of the temperature-scaled sums of
  // normalised squares (F.normalize's clamp: an all-zero feature gives 0).
  var logits: array<f32, HEADS>;
  for (var n = 0u; n < n_tok; n++) {
    let e = e0 + n * DIM;
    var m = -0x1.fffffep+127f;
    for (var h = 0u; h < HEADS; h++) {
      var s = 0.0;
      for (var k = 0u; k < HEAD_DIM; k++) {
        let c = h * HEAD_DIM + k;
        let v = w[e + c];
        s += (v * v) / max(sq[b * DIM + c], 1e-24);
      }
      logits[h] = temp[h] * s;
      m = max(m, logits[h]);
    }
    var total = 0.0;
    for (var h = 0u; h < HEADS; h++) {
      total += exp(logits[h] - m);
    }
    for (var h = 0u; h < HEADS; h++) {
      pi[(row0 + n) * HEADS + h] = exp(logits[h] - m) / total;
    }
  }
  // Per feature: the Pi-weighted statistics, then the output column.
  for (var c = 0u; c < DIM; c++) {
    let h = c / HEAD_DIM;
    var num = 0.0;
    var den = 0.0;
    for (var n = 0u; n < n_tok; n++) {
      let v = w[e0 + n * DIM + c];
      let q = pi[(row0 + n) * HEADS + h];
      num += q * (v * v);
      den += q;
    }
    stats[b * 2u * DIM + c] = num;
    stats[b * 2u * DIM + DIM + c] = den;
    let attn = 1.0 / (1.0 + num / (den + 1e-8));
    for (var n = 0u; n < n_tok; n++) {
      let i = e0 + n * DIM + c;
      y[i] = -(w[i] * pi[(row0 + n) * HEADS + h]) * attn;
    }
  }
}
