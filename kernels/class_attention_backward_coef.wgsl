// Class attention backward, step 1: the softmax weights and their gradient
// coefficients of each (batch, head), one workgroup per pair. With the class
// token's query q = qkv[b, 0, q-part of head h], keys k_j and values v_j
// (j < M), scale σ = 1/√d and the upstream gradient g = dout[b, h·d : h·d + d]:
//
//   p_j   = softmax_j(σ·q·k_j)                (recomputed: two passes, online max/sum)
//   dp_j  = g·v_j
//   coef  = (p_j, σ·p_j·(dp_j − Σ_j' p_j'·dp_j'))   written to coef[b, h, j, 0..1]
//
// Bindings: 1 = qkv [B, M, 3C], 2 = dout [B, C], 3 = coef [B, H, M, 2] (read_write).

{{include grid}}
{{include reduce}}

struct Params {
  pairs: u32,   // B·H
  heads: u32,   // H
  head_dim: u32,// d
  width: u32,   // C = H·d
  tokens: u32,  // M
  scale: f32,   // 1/√d
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read_write> coef: array<f32>;

const WG: u32 = 64u;
// Lowest finite f32: implementations may assume no infinities occur.
const LOWEST: f32 = -0x1.fffffep+127f;


@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let pair = flat_workgroup(wid, nwg);
  if (pair >= params.pairs) {
    return; // uniform per workgroup
  }
  let b = pair / params.heads;
  let h = pair % params.heads;
  let d = params.head_dim;
  let C = params.width;
  let row = 3u * C;
  let q_at = b * params.tokens * row + h * d;
  let g_at = b * C + h * d;
  let c_at = pair * params.tokens * 2u;

  // Pass 1: softmax maximum and normaliser.
  var m = LOWEST;
  var l = 0.0;
  for (var j = lid; j < params.tokens; j += WG) {
    let k_at = (b * params.tokens + j) * row + C + h * d;
    var s = 0.0;
    for (var c = 0u; c < d; c++) {
      s += qkv[q_at + c] * qkv[k_at + c];
    }
    s *= params.scale;
    let m_new = max(m, s);
    l = l * exp(m - m_new) + exp(s - m_new);
    m = m_new;
  }
  let m_all = workgroup_max(lid, m);
  let l_all = workgroup_sum(lid, l * exp(m - m_all));

  // Pass 2: p_j and dp_j, and Σ p·dp.
  var dot = 0.0;
  for (var j = lid; j < params.tokens; j += WG) {
    let k_at = (b * params.tokens + j) * row + C + h * d;
    let v_at = k_at + C;
    var s = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < d; c++) {
      s += qkv[q_at + c] * qkv[k_at + c];
      dp += dout[g_at + c] * qkv[v_at + c];
    }
    let p = exp(s * params.scale - m_all) / l_all;
    coef[c_at + 2u * j] = p;
    coef[c_at + 2u * j + 1u] = dp;
    dot += p * dp;
  }
  let dot_all = workgroup_sum(lid, dot);

  // Pass 3 (each invocation revisits its own keys): the score gradient.
  for (var j = lid; j < params.tokens; j += WG) {
    let p = coef[c_at + 2u * j];
    coef[c_at + 2u * j + 1u] = params.scale * p * (coef[c_at + 2u * j + 1u] - dot_all);
  }
}
