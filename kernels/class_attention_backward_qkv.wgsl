// Class attention backward, step 2: ∂qkv [B, M, 3C] (assigned) from the
// coefficients (p_j, ds_j) of class_attention_backward_coef.wgsl, one
// thread per element (b, j, part, h, c):
//
//   q part:  ∂q = Σ_j ds_j·k_j[c] for the class token (j = 0), 0 for the others
//   k part:  ∂k_j[c] = ds_j·q[c]
//   v part:  ∂v_j[c] = p_j·dout[b, h·d + c]
//
// Bindings: 1 = qkv, 2 = dout [B, C], 3 = coef [B, H, M, 2], 4 = dqkv (read_write).

{{include grid}}

struct Params {
  n: u32,       // B·M·3C
  heads: u32,
  head_dim: u32,
  width: u32,   // C
  tokens: u32,  // M
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> dqkv: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_workgroup(wid, nwg) * WG + lid;
  if (i >= params.n) {
    return;
  }
  let C = params.width;
  let d = params.head_dim;
  let row = 3u * C;
  let col = i % row;
  let token = i / row; // b·M + j
  let j = token % params.tokens;
  let b = token / params.tokens;
  let part = col / C;
  let h = (col % C) / d;
  let c = col % d;
  let c_at = (b * params.heads + h) * params.tokens * 2u;
  var v = 0.0;
  if (part == 0u) {
    if (j == 0u) {
      let k0 = b * params.tokens * row + C + h * d + c;
      for (var t = 0u; t < params.tokens; t++) {
        v += coef[c_at + 2u * t + 1u] * qkv[k0 + t * row];
      }
    }
  } else if (part == 1u) {
    v = coef[c_at + 2u * j + 1u] * qkv[b * params.tokens * row + h * d + c];
  } else {
    v = coef[c_at + 2u * j] * dout[b * C + h * d + c];
  }
  dqkv[i] = v;
}
