// Causal TSSA, decoding: T new tokens per sequence, fed in order on top of
// the running statistics of the tokens before them (positions 0…pos0-1):
//   s1[b, c] = Σ w[·, c]²           s2[b, c] = Σ Pi[·, h(c)] · w[·, c]²
//   s3[b, h] = Σ Pi[·, h]
// For each new token at position n = pos0 + t, in order:
//   s1[c] += w[c]²
//   Pi[h]  = softmax over h of temp[h] · (Σ_k w[h·d+k]² / max(s1[h·d+k], 1e-12)
//                                         + d · denom_bias[h, n])
//   s2[c] += Pi[h(c)] · w[c]²;   s3[h] += Pi[h]
//   y[c]   = −w[c] · Pi[h(c)] / (1 + s2[c] / (s3[h(c)] + 1e-8))
// which is the causal TSSA of the whole sequence at position n, at O(D) work
// per token instead of O(n·D).
//
// One workgroup per sequence. Thread i owns columns i, i + WG, … (COLS of
// them) and keeps their s1 and s2 in registers for all T tokens; the per-head
// sums go through workgroup memory, and one thread per head owns that head's
// s3. The state is read at the start and written back at the end.

{{include grid}}
{{include softmax_heads}}

struct Params {
  tokens: u32,       // T, new tokens per sequence
  pos0: u32,         // position of the first new token
  bias_stride: u32,  // block_size of denom_bias [H, block_size]
  batches: u32,      // B
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;
const WG: u32 = {{workgroupSize}}u;
const COLS: u32 = (DIM + WG - 1u) / WG;  // columns per thread
const HEAD_SLOTS: u32 = (HEADS + WG - 1u) / WG;  // heads per thread

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;           // [B, T, DIM]
@group(0) @binding(2) var<storage, read> temp: array<f32>;        // [HEADS]
@group(0) @binding(3) var<storage, read> denom_bias: array<f32>;  // [HEADS, bias_stride]
@group(0) @binding(4) var<storage, read_write> s1: array<f32>;    // [B, DIM]
@group(0) @binding(5) var<storage, read_write> s2: array<f32>;    // [B, DIM]
@group(0) @binding(6) var<storage, read_write> s3: array<f32>;    // [B, HEADS]
@group(0) @binding(7) var<storage, read_write> y: array<f32>;     // [B, T, DIM]

var<workgroup> tile: array<f32, DIM>;     // w² / max(s1, 1e-12) of the current token
var<workgroup> logits: array<f32, HEADS>;
var<workgroup> pis: array<f32, HEADS>;
var<workgroup> dens: array<f32, HEADS>;   // s3 after the current token

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  // Uniform control flow: every thread of a workgroup takes the same branch.
  let b = flat_workgroup(wid, nwg);
  if (b >= p.batches) {
    return;
  }
  var sq: array<f32, COLS>;  // s1 of my columns
  var num: array<f32, COLS>;  // s2 of my columns
  for (var j = 0u; j < COLS; j++) {
    let c = min(j * WG + lid, DIM - 1u);
    sq[j] = s1[b * DIM + c];
    num[j] = s2[b * DIM + c];
  }
  var den: array<f32, HEAD_SLOTS>;  // s3 of my heads
  for (var j = 0u; j < HEAD_SLOTS; j++) {
    den[j] = s3[b * HEADS + min(j * WG + lid, HEADS - 1u)];
  }
  for (var t = 0u; t < p.tokens; t++) {
    let row = (b * p.tokens + t) * DIM;
    let n = p.pos0 + t;
    for (var j = 0u; j < COLS; j++) {
      let c = j * WG + lid;
      if (c < DIM) {
        let x = w[row + c];
        sq[j] += x * x;
        tile[c] = x * x / max(sq[j], 1e-12);
      }
    }
    workgroupBarrier();
    for (var j = 0u; j < HEAD_SLOTS; j++) {
      let h = j * WG + lid;
      if (h < HEADS) {
        var s = 0.0;
        for (var k = 0u; k < HEAD_DIM; k++) {
          s += tile[h * HEAD_DIM + k];
        }
        logits[h] = temp[h] * (s + f32(HEAD_DIM) * denom_bias[h * p.bias_stride + n]);
      }
    }
    workgroupBarrier();
    for (var j = 0u; j < HEAD_SLOTS; j++) {
      let h = j * WG + lid;
      if (h < HEADS) {
        let v = softmax_heads_at(0u, h);
        den[j] += v;
        pis[h] = v;
        dens[h] = den[j];
      }
    }
    workgroupBarrier();
    for (var j = 0u; j < COLS; j++) {
      let c = j * WG + lid;
      if (c < DIM) {
        let h = c / HEAD_DIM;
        let x = w[row + c];
        let v = pis[h];
        num[j] += v * x * x;
        y[row + c] = -(x * v) / (1.0 + num[j] / (dens[h] + 1e-8));
      }
    }
    // The next token's writes to tile, logits, pis and dens come after at
    // least one more barrier than every read of them above.
  }
  for (var j = 0u; j < COLS; j++) {
    let c = j * WG + lid;
    if (c < DIM) {
      s1[b * DIM + c] = sq[j];
      s2[b * DIM + c] = num[j];
    }
  }
  for (var j = 0u; j < HEAD_SLOTS; j++) {
    let h = j * WG + lid;
    if (h < HEADS) {
      s3[b * HEADS + h] = den[j];
    }
  }
}
