// Linear layer, y = x·Wᵀ (+ b), as torch.nn.Linear: x [M, K], W [N, K],
// b [N], y [M, N] (y rows may be longer than N: `y_stride`, so a piece of
// output features writes its columns into the full rows).
//
// Register-blocked tiling: a workgroup computes a BM×BN tile of y. Each step
// stages a BM×BK slab of x and a BN×BK slab of W in workgroup memory (stored
// k-major so the inner loop reads along m and n), then every thread
// accumulates a TM×TN block of outputs in registers: per k it loads TM values
// of x and TN of W and does TM·TN multiply-adds. Thread (ty, tx) owns rows
// ty + i·(BM/TM) and columns tx + j·(BN/TN) of the tile, so neighbouring
// threads touch neighbouring addresses (no bank conflicts on a real GPU,
// coalesced stores). Edges are zero-padded on load and masked on store, so
// M, N, K need not be multiples of anything.
//
// Entry points: `main` (bindings 1 = x, 2 = W, 3 = y, 4 = b) and
// `main_no_bias` (no binding 4). Every binding may be a piece of a larger
// tensor; the *_base params say where the piece starts inside its binding.

struct Params {
  m: u32,        // rows of x and y in this piece
  n: u32,        // output features in this piece
  k: u32,        // input features
  x_base: u32,   // element offsets of the pieces inside their bindings
  w_base: u32,
  y_base: u32,   // includes the piece's first output column
  b_base: u32,
  y_stride: u32, // elements per row of y (all output features)
  tiles_n: u32,  // ceil(n / BN)
  tiles: u32,    // ceil(m / BM) · tiles_n
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;

const BM: u32 = {{bm}}u;
const BN: u32 = {{bn}}u;
const BK: u32 = {{bk}}u;
const TM: u32 = {{tm}}u;
const TN: u32 = {{tn}}u;
const THREADS_M: u32 = BM / TM;
const THREADS_N: u32 = BN / TN;
const THREADS: u32 = THREADS_M * THREADS_N;

var<workgroup> x_tile: array<f32, BK * BM>; // [k][m]
var<workgroup> w_tile: array<f32, BK * BN>; // [k][n]
var<private> acc: array<f32, TM * TN>;

// Accumulate the tile's dot products into `acc`; returns (first row, first column).
fn accumulate(tile: u32, lid: u32) -> vec2u {
  let m0 = (tile / params.tiles_n) * BM;
  let n0 = (tile % params.tiles_n) * BN;
  let ty = lid / THREADS_N;
  let tx = lid % THREADS_N;
  let k_len = params.k;
  for (var i = 0u; i < TM * TN; i++) {
    acc[i] = 0.0;
  }
  var a: array<f32, TM>;
  var bw: array<f32, TN>;
  for (var k0 = 0u; k0 < k_len; k0 += BK) {
    // Stage the slabs, zero past the edges. Consecutive threads read consecutive k.
    for (var e = lid; e < BM * BK; e += THREADS) {
      let r = e / BK;
      let c = e % BK;
      var v = 0.0;
      if (m0 + r < params.m && k0 + c < k_len) {
        v = x[params.x_base + (m0 + r) * k_len + k0 + c];
      }
      x_tile[c * BM + r] = v;
    }
    for (var e = lid; e < BN * BK; e += THREADS) {
      let r = e / BK;
      let c = e % BK;
      var v = 0.0;
      if (n0 + r < params.n && k0 + c < k_len) {
        v = w[params.w_base + (n0 + r) * k_len + k0 + c];
      }
      w_tile[c * BN + r] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      for (var i = 0u; i < TM; i++) {
        a[i] = x_tile[kk * BM + ty + i * THREADS_M];
      }
      for (var j = 0u; j < TN; j++) {
        bw[j] = w_tile[kk * BN + tx + j * THREADS_N];
      }
      for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
          acc[i * TN + j] = fma(a[i], bw[j], acc[i * TN + j]);
        }
      }
    }
    workgroupBarrier();
  }
  return vec2u(m0 + ty, n0 + tx);
}

fn flat_tile(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
}

@compute @workgroup_size(THREADS)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let tile = flat_tile(wid, nwg);
  if (tile >= params.tiles) {
    return; // uniform: the whole workgroup leaves together
  }
  let origin = accumulate(tile, lid);
  for (var j = 0u; j < TN; j++) {
    let n = origin.y + j * THREADS_N;
    if (n < params.n) {
      let bias = b[params.b_base + n];
      for (var i = 0u; i < TM; i++) {
        let m = origin.x + i * THREADS_M;
        if (m < params.m) {
          y[params.y_base + m * params.y_stride + n] = acc[i * TN + j] + bias;
        }
      }
    }
  }
}

@compute @workgroup_size(THREADS)
fn main_no_bias(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let tile = flat_tile(wid, nwg);
  if (tile >= params.tiles) {
    return;
  }
  let origin = accumulate(tile, lid);
  for (var j = 0u; j < TN; j++) {
    let n = origin.y + j * THREADS_N;
    if (n < params.n) {
      for (var i = 0u; i < TM; i++) {
        let m = origin.x + i * THREADS_M;
        if (m < params.m) {
          y[params.y_base + m * params.y_stride + n] = acc[i * TN + j];
        }
      }
    }
  }
}
