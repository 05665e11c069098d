// Flash attention backward, step 1 of 2: per (batch, head, query) the row
// statistics the backward recomputes the probabilities from,
//   lse[b, h, i]   = log2 Σ_j 2^(s_ij),  s_ij = q_i · k_j · log2(e)/√d   (base 2)
//   delta[b, h, i] = Σ_c dout[b, i, h·d + c] · out[b, i, h·d + c]
// so that P_ij = 2^(s_ij − lse_i) and Σ_j P_ij ∂P_ij = delta_i. Causal:
// query i sees keys 0..i.
//
// One workgroup owns ROWS consecutive queries of one (batch, head); each
// invocation owns one query (q in registers, running maximum and sum). Keys
// are staged TILE rows at a time in workgroup memory, as in
// flash_attention.wgsl.
//
// Bindings (whole tensors): 1 = qkv [B, N, 3C], 2 = dout [B, N, C],
// 3 = out [B, N, C], 4 = lse [B, H, N], 5 = delta [B, H, N].

{{include grid}}

struct Params {
  n_tokens: u32, // N
  heads: u32,    // H
  head_dim: u32, // d
  width: u32,    // C = H·d
  batches: u32,  // B
  scale: f32,    // log2(e)/√d
  causal: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<storage, read_write> delta: array<f32>;

const ROWS: u32 = {{rows}}u;       // queries per workgroup = invocations
const TILE: u32 = {{tileRows}}u;   // keys per staged tile
const D4: u32 = {{headVec4s}}u;    // ⌈d/4⌉
const DP: u32 = D4 * 4u;

const LOWEST: f32 = -0x1.fffffep+127f;

var<workgroup> k_tile: array<vec4f, TILE * D4>;

@compute @workgroup_size(ROWS)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = flat_workgroup(wid, nwg);
  let n = params.n_tokens;
  let blocks = (n + ROWS - 1u) / ROWS;
  if (group >= params.batches * params.heads * blocks) {
    return; // uniform
  }
  let pair = group / blocks;
  let b = pair / params.heads;
  let h = pair % params.heads;
  let d = params.head_dim;
  let c = params.width;
  let i = (group % blocks) * ROWS + lid;
  let row_ok = i < n;
  let ti = min(i, n - 1u);

  let q_row = (b * n + ti) * 3u * c + h * d;
  let o_row = (b * n + ti) * c + h * d;
  var q: array<vec4f, D4>;
  var dsum = 0.0;
  for (var k = 0u; k < D4; k++) {
    var v = vec4f(0.0);
    for (var e = 0u; e < 4u; e++) {
      let col = 4u * k + e;
      if (col < d) {
        v[e] = qkv[q_row + col];
        dsum += dout[o_row + col] * out[o_row + col];
      }
    }
    q[k] = v * params.scale;
  }

  var k_end = n;
  if (params.causal != 0u) {
    k_end = min(n, (group % blocks) * ROWS + ROWS);
  }
  let k_rows = b * n * 3u * c + c + h * d;
  var m = LOWEST;
  var l = 0.0;
  for (var j0 = 0u; j0 < k_end; j0 += TILE) {
    workgroupBarrier();
    for (var e = lid; e < TILE * DP; e += ROWS) {
      let r = e / DP;
      let col = e % DP;
      var kv = 0.0;
      if (col < d && j0 + r < k_end) {
        kv = qkv[k_rows + (j0 + r) * 3u * c + col];
      }
      k_tile[r * D4 + col / 4u][col % 4u] = kv;
    }
    workgroupBarrier();
    for (var r = 0u; r < TILE; r++) {
      let j = j0 + r;
      if (j < k_end && (params.causal == 0u || j <= ti)) {
        var s = 0.0;
        for (var k = 0u; k < D4; k++) {
          s += dot(q[k], k_tile[r * D4 + k]);
        }
        let m_new = max(m, s);
        l = l * exp2(m - m_new) + exp2(s - m_new);
        m = m_new;
      }
    }
  }
  if (row_ok) {
    lse[pair * n + i] = m + log2(l);
    delta[pair * n + i] = dsum;
  }
}
