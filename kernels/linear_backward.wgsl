// Backward of y = x·Wᵀ + b (x [M, K], W [N, K], y [M, N]), 16×16 tiles
// staged through workgroup memory, one output per thread:
//   input_grad:  out[m, k] = Σ_n dy[m, n]·W[n, k]                (∂x, b_in = W)
//   weight_grad: out[s, n, k] = Σ_{m in split s} dy[m, n]·x[m, k] (b_in = x)
// weight_grad cuts the M rows into splits of rows_per_split (a multiple of
// 16) so the reduction over tokens runs in parallel; the caller sums the
// splits as a tree (src/ops/_scan.ts) and adds them to ∂W.

struct Params {
  m: u32,
  n: u32,
  k: u32,
  rows_per_split: u32,
  tiles_k: u32,  // ceil(K / 16)
  tiles: u32,    // workgroups in use
}

const T: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;    // [M, N]
@group(0) @binding(2) var<storage, read> b_in: array<f32>;  // W [N, K] or x [M, K]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> ta: array<f32, 256>;
var<workgroup> tb: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn input_grad(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
) {
  let flat = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
  if (flat >= p.tiles) {
    return;
  }
  let m0 = (flat / p.tiles_k) * T;
  let k0 = (flat % p.tiles_k) * T;
  let tx = lid.x;
  let ty = lid.y;
  var acc = 0.0;
  for (var n0 = 0u; n0 < p.n; n0 += T) {
    let am = m0 + ty;
    let an = n0 + tx;
    ta[ty * T + tx] = select(0.0, dy[am * p.n + an], am < p.m && an < p.n);
    let bn = n0 + ty;
    let bk = k0 + tx;
    tb[ty * T + tx] = select(0.0, b_in[bn * p.k + bk], bn < p.n && bk < p.k);
    workgroupBarrier();
    for (var j = 0u; j < T; j++) {
      acc += ta[ty * T + j] * tb[j * T + tx];
    }
    workgroupBarrier();
  }
  let m = m0 + ty;
  let k = k0 + tx;
  if (m < p.m && k < p.k) {
    out[m * p.k + k] = acc;
  }
}

@compute @workgroup_size(16, 16)
fn weight_grad(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
) {
  let flat = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
  if (flat >= p.tiles) {
    return;
  }
  let tiles_n = (p.n + T - 1u) / T;
  let per_split = tiles_n * p.tiles_k;
  let s = flat / per_split;
  let t = flat % per_split;
  let n0 = (t / p.tiles_k) * T;
  let k0 = (t % p.tiles_k) * T;
  let tx = lid.x;
  let ty = lid.y;
  let m_begin = s * p.rows_per_split;
  let m_end = min(p.m, m_begin + p.rows_per_split);
  var acc = 0.0;
  for (var m0 = m_begin; m0 < m_end; m0 += T) {
    let m = m0 + ty;
    let an = n0 + tx;
    ta[ty * T + tx] = select(0.0, dy[m * p.n + an], m < m_end && an < p.n);
    let bk = k0 + tx;
    tb[ty * T + tx] = select(0.0, b_in[m * p.k + bk], m < m_end && bk < p.k);
    workgroupBarrier();
    for (var j = 0u; j < T; j++) {
      acc += ta[j * T + ty] * tb[j * T + tx];
    }
    workgroupBarrier();
  }
  let n = n0 + ty;
  let k = k0 + tx;
  if (n < p.n && k < p.k) {
    out[(s * p.n + n) * p.k + k] = acc;
  }
}
