// Class attention (CaiT/XCiT) for software adapters (lavapipe): the same
// result as class_attention.wgsl,
//   out[b, h·d + c] = Σ_j softmax_j(q_0 · k_j / √d) · v_j[c]   over all N tokens,
// with one INVOCATION per (batch, head) walking the keys serially with an
// online softmax (running maximum m, sum l and unnormalised acc in
// registers; scores in base 2, q pre-multiplied by log2(e)/√d). No
// workgroup memory and no barriers (every barrier is a fibre switch on
// lavapipe).
//
// Order of summation (a deliberate choice): keys are added in order
// j = 0 … N−1 into one accumulator, rescaled whenever the maximum grows; the
// float64 reference (attention_reference.ts) takes the exact maximum first
// and sums in the same key order. class_attention.wgsl instead spreads keys
// over 64 invocations and merges them as a tree, so the two designs may
// differ in the last bits.
//
// Keys too many for one storage binding are split over several dispatches
// exactly as in class_attention.wgsl (same bindings and Params): every pass
// but the last stores (acc, m, l) in `out` and `state`, every pass but the
// first starts from them.

{{include grid}}

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

const WG: u32 = {{workgroupSize}}u;
const D4: u32 = {{headVec4s}}u; // ⌈d/4⌉

// Lowest finite f32: implementations may assume no infinities occur.
const LOWEST: f32 = -0x1.fffffep+127f;

// One value of a head, zero past d.
fn load1(src_is_q: bool, i: u32, ok: bool) -> f32 {
  if (!ok) {
    return 0.0;
  }
  if (src_is_q) {
    return q_src[i];
  }
  return kv_src[i];
}

// Four values of a head from `at + c`, zero past d (no loop: lavapipe
// counts every loop iteration against its limit, see src/ops/_serial.ts).
fn load4(src_is_q: bool, at: u32, c: u32, d: u32) -> vec4f {
  return vec4f(
    load1(src_is_q, at + c, c < d),
    load1(src_is_q, at + c + 1u, c + 1u < d),
    load1(src_is_q, at + c + 2u, c + 2u < d),
    load1(src_is_q, at + c + 3u, c + 3u < d),
  );
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let pair = flat_workgroup(wid, nwg) * WG + lid;
  if (pair >= params.pairs) {
    return;
  }
  let b = pair / params.heads;
  let h = pair % params.heads;
  let d = params.head_dim;
  let c3 = 3u * params.width;

  var q: array<vec4f, D4>;
  let q_at = params.q_base + b * params.qkv_bstride + h * d;
  for (var k = 0u; k < D4; k++) {
    q[k] = load4(true, q_at, 4u * k, d) * params.scale;
  }

  let o_at = params.o_base + b * params.width + h * d;
  let s_at = params.s_base + b * 2u * params.heads + 2u * h;
  var m = LOWEST;
  var l = 0.0;
  var acc: array<vec4f, D4>;
  if (params.first == 0u) {
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
  for (var j = 0u; j < params.keys; j++) {
    let k_at = kv_at + j * c3 + params.width;
    var s = 0.0;
    for (var k = 0u; k < D4; k++) {
      s += dot(q[k], load4(false, k_at, 4u * k, d));
    }
    let m_new = max(m, s);
    let correction = exp2(m - m_new);
    let p = exp2(s - m_new);
    l = l * correction + p;
    let v_at = k_at + params.width;
    for (var k = 0u; k < D4; k++) {
      acc[k] = acc[k] * correction + p * load4(false, v_at, 4u * k, d);
    }
    m = m_new;
  }

  let inv = select(1.0, 1.0 / l, params.last != 0u);
  for (var k = 0u; k < D4; k++) {
    let v = acc[k] * inv;
    for (var e = 0u; e < 4u; e++) {
      let c = 4u * k + e;
      if (c < d) {
        out[o_at + c] = v[e];
      }
    }
  }
  if (params.last == 0u) {
    state[s_at] = m;
    state[s_at + 1u] = l;
  }
}
