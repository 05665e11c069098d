// Flash attention forward (tiled online softmax; the N×N scores never exist):
//   out[b, i, h·d + c] = Σ_j softmax_j(q_i · k_j / √d) · v_j[c]
// with q, k, v read from the packed projection qkv[b, n, (3, H, d)].
//
// One workgroup owns BQ consecutive queries of one (batch, head); each
// invocation owns one query row, keeping q, the running maximum m, the
// running sum l and the unnormalised output acc in registers. The workgroup
// walks the keys in tiles of BK rows: the tile's keys and values are loaded
// cooperatively (consecutive invocations read consecutive floats of a row)
// into workgroup memory, every invocation scores its query against the whole
// tile (broadcast reads), rescales acc once per tile by exp(m_old − m_new)
// and accumulates p · v. Scores are kept in base 2: q is pre-multiplied by
// log2(e)/√d so that exp2 gives the same softmax.
//
// Causal (PyTorch is_causal=True: query i sees keys 0..i): a workgroup stops
// at the tile holding its last query's diagonal, and keys past a query are
// masked inside that tile.
//
// Long sequences: a dispatch covers batches × queries [q_start, +q_count) ×
// keys [k_start, +k_count), each bound as a range of rows. When the keys are
// split over several dispatches (a batch too large for one storage binding),
// the running state carries over: every pass but the last stores acc
// (unnormalised) in `out` and (m, l) in `state`; every pass but the first
// loads them back; the last divides by l.
//
// Bindings: 1 = qkv rows holding the queries, 2 = qkv rows holding the keys
// and values (may be the same range), 3 = out [B, N, C], 4 = state
// [B, N, H, 2] (a 4-float placeholder in single-pass dispatches).

{{include grid}}

struct Params {
  n_tokens: u32,  // N
  heads: u32,     // H
  head_dim: u32,  // d
  width: u32,     // C = H·d
  batches: u32,   // batches covered by this dispatch
  q_start: u32,   // first query token (within its batch)
  q_count: u32,   // queries per batch
  k_start: u32,   // first key token (within its batch)
  k_count: u32,   // keys per batch
  q_base: u32,    // element index of (first batch, token q_start, column 0) in binding 1
  kv_base: u32,   // element index of (first batch, token k_start, column 0) in binding 2
  o_base: u32,    // element index of (first batch, token q_start, column 0) in binding 3
  s_base: u32,    // element index of (first batch, token q_start, head 0) in binding 4
  qkv_bstride: u32, // elements between batches in bindings 1 and 2 (N·3C)
  o_bstride: u32, // elements between batches in binding 3 (N·C)
  s_bstride: u32, // elements between batches in binding 4 (N·2H)
  scale: f32,     // log2(e)/√d
  causal: u32,
  first: u32,     // 1: start from m = −max, l = 0, acc = 0
  last: u32,      // 1: write acc / l; 0: write acc and (m, l) for the next pass
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q_src: array<f32>;
@group(0) @binding(2) var<storage, read> kv_src: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;

const BQ: u32 = {{blockQueries}}u; // queries per workgroup = invocations
const BK: u32 = {{blockKeys}}u;    // keys per tile
const D4: u32 = {{headVec4s}}u;    // ⌈d/4⌉: vec4s per head row
const DP: u32 = D4 * 4u;           // d padded to a multiple of 4

// Lowest finite f32: implementations may assume no infinities occur.
const LOWEST: f32 = -0x1.fffffep+127f;

var<workgroup> k_tile: array<vec4f, BK * D4>;
var<workgroup> v_tile: array<vec4f, BK * D4>;

@compute @workgroup_size(BQ)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = flat_workgroup(wid, nwg);
  let q_blocks = (params.q_count + BQ - 1u) / BQ;
  if (group >= params.batches * params.heads * q_blocks) {
    return; // uniform: the whole workgroup leaves together
  }
  let qb = group % q_blocks;
  let bh = group / q_blocks;
  let h = bh % params.heads;
  let bb = bh / params.heads;
  let d = params.head_dim;
  let c3 = 3u * params.width;

  let t = qb * BQ + lid;                // query index within this dispatch
  let row_ok = t < params.q_count;
  let tq = min(t, params.q_count - 1u); // clamped: padding rows load a real row
  let i = params.q_start + t;           // query token within its batch

  var q: array<vec4f, D4>;
  let q_row = params.q_base + bb * params.qkv_bstride + tq * c3 + h * d;
  for (var k = 0u; k < D4; k++) {
    var v = vec4f(0.0);
    for (var e = 0u; e < 4u; e++) {
      let c = 4u * k + e;
      if (c < d) {
        v[e] = q_src[q_row + c];
      }
    }
    q[k] = v * params.scale;
  }

  var m = LOWEST;
  var l = 0.0;
  var acc: array<vec4f, D4>;
  let o_row = params.o_base + bb * params.o_bstride + tq * params.width + h * d;
  let s_row = params.s_base + bb * params.s_bstride + tq * 2u * params.heads + 2u * h;
  if (params.first == 0u && row_ok) {
    m = state[s_row];
    l = state[s_row + 1u];
    for (var k = 0u; k < D4; k++) {
      for (var e = 0u; e < 4u; e++) {
        let c = 4u * k + e;
        if (c < d) {
          acc[k][e] = out[o_row + c];
        }
      }
    }
  }

  // Keys this workgroup needs (relative to k_start); uniform over the workgroup.
  var k_end = params.k_count;
  if (params.causal != 0u) {
    let last_q = params.q_start + min(qb * BQ + BQ, params.q_count) - 1u;
    if (last_q < params.k_start) {
      k_end = 0u;
    } else {
      k_end = min(k_end, last_q - params.k_start + 1u);
    }
  }
  let kv_rows = params.kv_base + bb * params.qkv_bstride + h * d;

  for (var j0 = 0u; j0 < k_end; j0 += BK) {
    workgroupBarrier(); // everyone is done with the previous tile
    for (var e = lid; e < BK * DP; e += BQ) {
      let r = e / DP;
      let c = e % DP;
      var kv = vec2f(0.0);
      if (c < d && j0 + r < k_end) {
        let at = kv_rows + (j0 + r) * c3 + c;
        kv = vec2f(kv_src[at + params.width], kv_src[at + 2u * params.width]);
      }
      k_tile[r * D4 + c / 4u][c % 4u] = kv.x;
      v_tile[r * D4 + c / 4u][c % 4u] = kv.y;
    }
    workgroupBarrier();

    var s: array<f32, BK>;
    var m_new = m;
    for (var r = 0u; r < BK; r++) {
      var dot_qk = 0.0;
      for (var k = 0u; k < D4; k++) {
        dot_qk += dot(q[k], k_tile[r * D4 + k]);
      }
      let j = params.k_start + j0 + r;
      let ok = j0 + r < k_end && (params.causal == 0u || j <= i);
      s[r] = select(LOWEST, dot_qk, ok);
      m_new = max(m_new, s[r]);
    }
    let correction = exp2(m - m_new);
    l *= correction;
    for (var k = 0u; k < D4; k++) {
      acc[k] *= correction;
    }
    for (var r = 0u; r < BK; r++) {
      let j = params.k_start + j0 + r;
      let ok = j0 + r < k_end && (params.causal == 0u || j <= i);
      let p = select(0.0, exp2(s[r] - m_new), ok);
      l += p;
      for (var k = 0u; k < D4; k++) {
        acc[k] += p * v_tile[r * D4 + k];
      }
    }
    m = m_new;
  }

  if (!row_ok) {
    return; // after the last barrier
  }
  if (params.last != 0u) {
    let inv = 1.0 / l;
    for (var k = 0u; k < D4; k++) {
      for (var e = 0u; e < 4u; e++) {
        let c = 4u * k + e;
        if (c < d) {
          out[o_row + c] = acc[k][e] * inv;
        }
      }
    }
  } else {
    state[s_row] = m;
    state[s_row + 1u] = l;
    for (var k = 0u; k < D4; k++) {
      for (var e = 0u; e < 4u; e++) {
        let c = 4u * k + e;
        if (c < d) {
          out[o_row + c] = acc[k][e];
        }
      }
    }
  }
}
