// Standard attention backward, step 3 of 3: the three products that give
// dqkv, per (batch, head), all of the form
//   dqkv[b, i, out_col + h·d + c] = Σ_j A(i, j) · X[b, j, x_col + h·d + c]
// with A(i, j) = M[i, j] or, transposed, M[j, i], M an [N, N] matrix of the
// head (probabilities or scaled ds):
//   dv = Pᵀ·dout   (transposed, X = dout, stride C,  x_col 0, out_col 2C)
//   dq = ds·k      (plain,      X = qkv,  stride 3C, x_col C, out_col 0)
//   dk = dsᵀ·q     (transposed, X = qkv,  stride 3C, x_col 0, out_col C)
// Each product writes its own third of dqkv, so nothing is accumulated.
//
// A workgroup of 64 invocations computes a 32-row × 32-column tile of one
// head; each invocation owns a 4×4 block (rows ty + 8a, columns tx + 8b).
// j is walked in chunks of KC, staging a 32×KC slab of A and a KC×32 slab of
// X in workgroup memory (loads of M are coalesced in both orientations).
// Causal: M is zero above its diagonal, so plain products stop after the
// tile's last row and transposed ones start at the tile's first row.
//
// Bindings: 1 = M rows of the pairs in this dispatch, 2 = X rows and
// 3 = dqkv rows of the batches in this dispatch.

{{include grid}}

struct Params {
  n_tokens: u32,    // N
  heads: u32,       // H
  head_dim: u32,    // d
  width: u32,       // C = H·d
  units: u32,       // (batch, head) pairs in this dispatch
  unit0: u32,       // first pair, counted from the first batch bound in bindings 2 and 3
  a_base: u32,      // element index of the first pair's matrix in binding 1
  x_base: u32,      // element index of the first bound batch in binding 2
  x_stride: u32,    // row stride of X (C or 3C)
  x_col: u32,       // column of head 0 in X's rows
  o_base: u32,      // element index of the first bound batch in binding 3
  out_col: u32,     // column of head 0 in dqkv's rows
  causal: u32,
  transposed: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> mat: array<f32>;
@group(0) @binding(2) var<storage, read> xs: array<f32>;
@group(0) @binding(3) var<storage, read_write> dqkv: array<f32>;

const TILE: u32 = 32u;
const KC: u32 = 16u;

var<workgroup> a_slab: array<array<f32, TILE>, KC>; // [j][row]
var<workgroup> x_slab: array<array<f32, TILE>, KC>; // [j][column]

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = flat_workgroup(wid, nwg);
  let n = params.n_tokens;
  let d = params.head_dim;
  let row_tiles = (n + TILE - 1u) / TILE;
  let col_tiles = (d + TILE - 1u) / TILE;
  if (group >= params.units * row_tiles * col_tiles) {
    return; // uniform
  }
  let tc = group % col_tiles;
  let ti = (group / col_tiles) % row_tiles;
  let unit = group / (col_tiles * row_tiles);
  let pair = params.unit0 + unit;
  let b = pair / params.heads;
  let h = pair % params.heads;
  let i0 = ti * TILE;
  let c0 = tc * TILE;
  let tx = lid % 8u;
  let ty = lid / 8u;
  let head = params.a_base + unit * n * n;
  let x_col = params.x_base + b * n * params.x_stride + params.x_col + h * d;
  let transposed = params.transposed != 0u;

  var j_begin = 0u;
  var j_end = n;
  if (params.causal != 0u) {
    if (transposed) {
      j_begin = i0; // M[j, i] = 0 for j < i
    } else {
      j_end = min(n, i0 + TILE); // M[i, j] = 0 for j > i
    }
  }

  var acc: array<vec4f, 4>; // acc[a][bcol]: row ty + 8a, column tx + 8·bcol
  for (var j0 = j_begin; j0 < j_end; j0 += KC) {
    workgroupBarrier();
    for (var e = lid; e < TILE * KC; e += 64u) {
      // A(i0 + r, j0 + k), neighbouring invocations reading neighbouring floats of M
      var r: u32;
      var k: u32;
      var idx: u32;
      if (transposed) {
        r = e % TILE;
        k = e / TILE;
        idx = (j0 + k) * n + i0 + r;
      } else {
        r = e / KC;
        k = e % KC;
        idx = (i0 + r) * n + j0 + k;
      }
      var av = 0.0;
      if (i0 + r < n && j0 + k < j_end) {
        av = mat[head + idx];
      }
      a_slab[k][r] = av;
      // X rows: neighbouring invocations read neighbouring columns of a row
      let xk = e / TILE;
      let xc = e % TILE;
      var xv = 0.0;
      if (j0 + xk < j_end && c0 + xc < d) {
        xv = xs[x_col + (j0 + xk) * params.x_stride + c0 + xc];
      }
      x_slab[xk][xc] = xv;
    }
    workgroupBarrier();
    for (var k = 0u; k < KC; k++) {
      let av = vec4f(a_slab[k][ty], a_slab[k][ty + 8u], a_slab[k][ty + 16u], a_slab[k][ty + 24u]);
      let xv = vec4f(x_slab[k][tx], x_slab[k][tx + 8u], x_slab[k][tx + 16u], x_slab[k][tx + 24u]);
      acc[0] += av.x * xv;
      acc[1] += av.y * xv;
      acc[2] += av.z * xv;
      acc[3] += av.w * xv;
    }
  }

  let out_rows = params.o_base + b * n * 3u * params.width + params.out_col + h * d;
  for (var a = 0u; a < 4u; a++) {
    let i = i0 + ty + 8u * a;
    if (i < n) {
      for (var col = 0u; col < 4u; col++) {
        let cc = c0 + tx + 8u * col;
        if (cc < d) {
          dqkv[out_rows + i * 3u * params.width + cc] = acc[a][col];
        }
      }
    }
  }
}
