// TSSA backward, per-column coefficients after the second reduction. With
// r[b, c] = Σ_n ∂z[n, h]·w[n, c]² and sq[b, c] = Σ_n w[n, c]²:
//   S = max(sq, 1e-24)                        (F.normalize's clamp)
//   col[b, 2·DIM + c] = temp[h] / S
//   col[b, 3·DIM + c] = ∂S = −temp[h]·r / S²  (0 where the clamp is active)
//   dtemp[h]         += Σ_b Σ_k r / S         (= Σ_n ∂z·u)
// One thread per head, looping over the batch elements and the head's d
// columns (B·d values; no loop over tokens).

{{include grid}}

struct Params {
  batches: u32,
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> r: array<f32>;     // [B, DIM]
@group(0) @binding(2) var<storage, read> sq: array<f32>;    // [B, DIM]
@group(0) @binding(3) var<storage, read> temp: array<f32>;  // [HEADS]
@group(0) @binding(4) var<storage, read_write> col: array<f32>;    // [B, 4·DIM]
@group(0) @binding(5) var<storage, read_write> dtemp: array<f32>;  // [HEADS]

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let h = flat_workgroup(wid, nwg) * 64u + lid;
  if (h >= HEADS) {
    return;
  }
  var acc = 0.0;
  for (var b = 0u; b < p.batches; b++) {
    for (var k = 0u; k < HEAD_DIM; k++) {
      let c = h * HEAD_DIM + k;
      let raw = sq[b * DIM + c];
      let S = max(raw, 1e-24);
      let rs = r[b * DIM + c] / S;
      acc += rs;
      col[b * 4u * DIM + 2u * DIM + c] = temp[h] / S;
      col[b * 4u * DIM + 3u * DIM + c] = select(0.0, -temp[h] * rs / S, raw >= 1e-24);
    }
  }
  dtemp[h] += acc;
}
