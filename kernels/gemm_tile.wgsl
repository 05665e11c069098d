// GEMM for hardware GPUs: the classic workgroup-memory tiling. A workgroup
// computes a BM×BN tile of C; per step it stages a BK-deep slab of A and of
// B in workgroup memory (k-major, as vec4 groups along i and j), then every
// thread accumulates a TM×TN block with vec4 reads of the slabs and vec4
// fmas. Thread (ty, tx) owns the 4-row groups ty, ty + BM/TM/…, and the
// 4-column groups likewise, so a warp's reads of a slab row are contiguous
// and its stores coalesce. Loads from the storage buffers use the strides of
// kernels/gemm_common.wgsl (consecutive threads read consecutive addresses
// for either operand layout, chosen by the slots aDepthContiguous and
// bDepthContiguous) and are zero past the edges, so M, N, K are
// arbitrary. On lavapipe this design is slow (PERF.md); it is a candidate
// there only so that the tuner can show it.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

const BM: u32 = {{bm}}u;
const BN: u32 = {{bn}}u;
const BK: u32 = {{bk}}u;
const TM: u32 = {{tm}}u; // a multiple of 4
const TN: u32 = {{tn}}u; // a multiple of 4
const A_DEPTH_CONTIGUOUS: bool = {{aDepthContiguous}};
const B_DEPTH_CONTIGUOUS: bool = {{bDepthContiguous}};
const THREADS_M: u32 = BM / TM;
const THREADS_N: u32 = BN / TN;
const THREADS: u32 = THREADS_M * THREADS_N;
const GM: u32 = TM / 4u;
const GN: u32 = TN / 4u;

// Slab rows are padded by 4 floats: staging k-contiguous operands writes
// down a column, and an unpadded row of 64 floats would put all 16 writes of
// a column in one memory bank.
const AP: u32 = BM + 4u;
const BP: u32 = BN + 4u;
var<workgroup> a_tile: array<vec4f, BK * AP / 4u>; // [r][i / 4]
var<workgroup> b_tile: array<vec4f, BK * BP / 4u>; // [r][j / 4]

fn load_a(i: u32, r: u32) -> f32 {
  if (i < p.m && r < p.k) {
    return a[p.a_base + i * p.a_si + r * p.a_sr];
  }
  return 0.0;
}

fn load_b(j: u32, r: u32) -> f32 {
  if (j < p.n && r < p.k) {
    return b[p.b_base + j * p.b_sj + r * p.b_sr];
  }
  return 0.0;
}

@compute @workgroup_size(THREADS)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let tile = flat_workgroup(wid, nwg);
  if (tile >= p.blocks) {
    return; // uniform: the whole workgroup leaves together
  }
  let i0 = (tile / p.blocks_n) * BM;
  let j0 = (tile % p.blocks_n) * BN;
  let ty = lid / THREADS_N;
  let tx = lid % THREADS_N;
  var acc: array<vec4f, TM * GN>; // acc[row * GN + h]: 4 columns of group h
  for (var r0 = 0u; r0 < p.k; r0 += BK) {
    for (var e = lid; e < BM * BK; e += THREADS) {
      var ii = e / BK;
      var rr = e % BK;
      if (!A_DEPTH_CONTIGUOUS) {
        ii = e % BM;
        rr = e / BM;
      }
      a_tile[(rr * AP + ii) / 4u][ii % 4u] = load_a(i0 + ii, r0 + rr);
    }
    for (var e = lid; e < BN * BK; e += THREADS) {
      var jj = e / BK;
      var rr = e % BK;
      if (!B_DEPTH_CONTIGUOUS) {
        jj = e % BN;
        rr = e / BN;
      }
      b_tile[(rr * BP + jj) / 4u][jj % 4u] = load_b(j0 + jj, r0 + rr);
    }
    workgroupBarrier();
    for (var rr = 0u; rr < BK; rr++) {
      var av: array<vec4f, GM>;
      var bv: array<vec4f, GN>;
      for (var g = 0u; g < GM; g++) {
        av[g] = a_tile[rr * (AP / 4u) + g * THREADS_M + ty];
      }
      for (var h = 0u; h < GN; h++) {
        bv[h] = b_tile[rr * (BP / 4u) + h * THREADS_N + tx];
      }
      for (var g = 0u; g < GM; g++) {
        for (var q = 0u; q < 4u; q++) {
          let x = vec4f(av[g][q]);
          for (var h = 0u; h < GN; h++) {
            let at = (g * 4u + q) * GN + h;
            acc[at] = fma(x, bv[h], acc[at]);
          }
        }
      }
    }
    workgroupBarrier();
  }
  for (var g = 0u; g < GM; g++) {
    for (var q = 0u; q < 4u; q++) {
      let i = i0 + (g * THREADS_M + ty) * 4u + q;
      for (var h = 0u; h < GN; h++) {
        let v = acc[(g * 4u + q) * GN + h];
        let j = j0 + (h * THREADS_N + tx) * 4u;
        emit(i, j, v.x);
        emit(i, j + 1u, v.y);
        emit(i, j + 2u, v.z);
        emit(i, j + 3u, v.w);
      }
    }
  }
}
