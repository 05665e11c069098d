// Class attention (CaiT/XCiT): only the class token (token 0) queries,
//   out[b, h·d + c] = Σ_j softmax_j(q_0 · k_j / √d) · v_j[c]   over all N tokens,
// a cost linear in N.
//
// One workgroup per (batch, head). Invocation t walks keys t, t + WG, … with
// its own online softmax (running maximum m_t, sum l_t and unnormalised
// acc_t in registers; scores in base 2, q pre-multiplied by log2(e)/√d).
// The partial results are then merged through workgroup memory: the global
// maximum M, L = Σ l_t·2^(m_t − M) and the output columns, a chunk of CH
// vec4 columns at a time.
//
// Keys too many for one storage binding are split over several dispatches:
// every pass but the last stores (acc, m, l) in `out` and `state`, every pass
// but the first starts from them.
//
// Bindings: 1 = qkv rows holding token 0 of each batch, 2 = qkv rows holding
// the keys and values (may be the same range), 3 = out [B, 1, C],
// 4 = state [B, H, 2] (a placeholder in single-pass dispatches).

{{include grid}}
{{include reduce}}

struct Params {
  heads: u32,       // H
  head_dim: u32,    // d
  width: u32,       // C = H·d
  pairs: u32,       // (batch, head) pairs in this dispatch
  keys: u32,        // keys per batch in this dispatch
  q_base: u32,      // element index of the first batch's token 0 in binding 1
  kv_base: u32,     // element index of the first batch's first key in binding 2
  o_base: u32,      // element index of the first batch in binding 3
  s_base: u32,      // element index of the first batch in binding 4
  qkv_bstride: u32, // elements between batches in bindings 1 and 2 (N·3C)
  scale: f32,       // log2(e)/√d
  first: u32,
  last: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q_src: array<f32>;
@group(0) @binding(2) var<storage, read> kv_src: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;

const WG: u32 = 64u;
const D4: u32 = {{headVec4s}}u; // ⌈d/4⌉
const CH: u32 = {{mergeVec4s}}u; // vec4 columns merged at a time, divides D4

// Lowest finite f32: implementations may assume no infinities occur.
const LOWEST: f32 = -0x1.fffffep+127f;

var<workgroup> columns: array<vec4f, WG * CH>;

fn load_head(src_is_q: bool, at: u32, c: u32, d: u32) -> f32 {
  if (c >= d) {
    return 0.0;
  }
  if (src_is_q) {
    return q_src[at + c];
  }
  return kv_src[at + c];
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let pair = flat_workgroup(wid, nwg);
  if (pair >= params.pairs) {
    return; // uniform
  }
  let b = pair / params.heads;
  let h = pair % params.heads;
  let d = params.head_dim;
  let c3 = 3u * params.width;

  var q: array<vec4f, D4>;
  let q_at = params.q_base + b * params.qkv_bstride + h * d;
  for (var k = 0u; k < D4; k++) {
    q[k] = vec4f(
      load_head(true, q_at, 4u * k, d),
      load_head(true, q_at, 4u * k + 1u, d),
      load_head(true, q_at, 4u * k + 2u, d),
      load_head(true, q_at, 4u * k + 3u, d),
    ) * params.scale;
  }

  let o_at = params.o_base + b * params.width + h * d;
  let s_at = params.s_base + b * 2u * params.heads + 2u * h;
  var m = LOWEST;
  var l = 0.0;
  var acc: array<vec4f, D4>;
  if (params.first == 0u && lid == 0u) {
    // Invocation 0 starts from the keys of the earlier passes.
    m = state[s_at];
    l = state[s_at + 1u];
    for (var k = 0u; k < D4; k++) {
      for (var e = 0u; e < 4u; e++) {
        if (4u * k + e < d) {
          acc[k][e] = out[o_at + 4u * k + e];
        }
      }
    }
  }

  let kv_at = params.kv_base + b * params.qkv_bstride + h * d;
  for (var j = lid; j < params.keys; j += WG) {
    let k_at = kv_at + j * c3 + params.width;
    var s = 0.0;
    for (var k = 0u; k < D4; k++) {
      let kv = vec4f(
        load_head(false, k_at, 4u * k, d),
        load_head(false, k_at, 4u * k + 1u, d),
        load_head(false, k_at, 4u * k + 2u, d),
        load_head(false, k_at, 4u * k + 3u, d),
      );
      s += dot(q[k], kv);
    }
    let m_new = max(m, s);
    let correction = exp2(m - m_new);
    let p = exp2(s - m_new);
    l = l * correction + p;
    let v_at = k_at + params.width;
    for (var k = 0u; k < D4; k++) {
      let vv = vec4f(
        load_head(false, v_at, 4u * k, d),
        load_head(false, v_at, 4u * k + 1u, d),
        load_head(false, v_at, 4u * k + 2u, d),
        load_head(false, v_at, 4u * k + 3u, d),
      );
      acc[k] = acc[k] * correction + p * vv;
    }
    m = m_new;
  }

  // Merge the invocations' partial softmaxes.
  let m_all = workgroup_max(lid, m);
  let weight = exp2(m - m_all); // 0 for an invocation that saw no key
  let l_all = workgroup_sum(lid, l * weight);
  let inv = select(1.0, 1.0 / l_all, params.last != 0u);
  for (var k0 = 0u; k0 < D4; k0 += CH) {
    for (var k = 0u; k < CH; k++) {
      columns[lid * CH + k] = acc[k0 + k] * weight;
    }
    workgroupBarrier();
    if (lid < CH) {
      var sum = vec4f(0.0);
      for (var t = 0u; t < WG; t++) {
        sum += columns[t * CH + lid];
      }
      sum *= inv;
      for (var e = 0u; e < 4u; e++) {
        let c = 4u * (k0 + lid) + e;
        if (c < d) {
          out[o_at + c] = sum[e];
        }
      }
    }
    workgroupBarrier();
  }
  if (params.last == 0u && lid == 0u) {
    state[s_at] = m_all;
    state[s_at + 1u] = l_all;
  }
}
