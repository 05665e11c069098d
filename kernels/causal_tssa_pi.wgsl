// Causal TSSA, second pass over the tokens. Before it, block_sums.wgsl
// (SQUARE) and the hierarchical scan give sq_off[g, c] = Σ w[·, c]² over the
// tokens of the earlier blocks of the same batch element (an exclusive scan
// over blocks). Per block:
//   denom[n, c] = max(sq_off[g, c] + Σ_{n' ≤ n in block} w[n', c]², 1e-12)
//   Pi[n, h]    = softmax over h of temp[h] · (Σ_k w[n, h·d+k]² / denom[n, h·d+k]
//                                             + d · denom_bias[h, n])
//                 (written to pi[B·N, H] for the output pass), and the block totals
//   totals[g, c]       = Σ_{n in block} Pi[n, h(c)] · w[n, c]²
//   totals[g, DIM + c] = Σ_{n in block} Pi[n, h(c)]
// which are scanned the same way for causal_tssa_out.wgsl.
//
// One workgroup of 256 threads per block, walking it in tiles of TILE
// tokens. Thread i owns columns i, i + 256, … (COLS of them) for the whole
// block and carries their in-block running sums in registers, so the prefix
// sums need no communication; it writes the normalised squares to a
// TILE × DIM tile in workgroup memory, from which one thread per
// (token, head) pair sums its head's d values and applies the softmax over
// heads. The block's running sum is kept apart from the carried offset so
// that each prefix sum is (tree-summed offset) + (≤ block_rows-term sum).

{{include grid}}
{{include token_blocks}}
{{include tssa_pi_tile}}

struct Params {
  rows: u32,             // N, tokens per batch element
  block_rows: u32,
  blocks_per_batch: u32,
  first_block: u32,
  block_count: u32,
  row_base: u32,
  elem_base: u32,
  bias_stride: u32,      // block_size of denom_bias [H, block_size]
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;
const CHUNKS: u32 = {{chunks}}u;       // ceil(DIM / 64), the slot all TSSA kernels share
const_assert CHUNKS == (DIM + 63u) / 64u;
const WG: u32 = 256u;
const COLS: u32 = (DIM + WG - 1u) / WG;  // columns per thread
// Tokens per tile: the tile holds at most 3072 floats and 256 (token, head) pairs.
const TILE: u32 = max(1u, min(32u, min(3072u / DIM, 256u / HEADS)));
const PAIRS: u32 = TILE * HEADS;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> sq_off: array<f32>;      // [blocks, DIM]
@group(0) @binding(3) var<storage, read> temp: array<f32>;        // [HEADS]
@group(0) @binding(4) var<storage, read> denom_bias: array<f32>;  // [HEADS, bias_stride]
@group(0) @binding(5) var<storage, read_write> pi: array<f32>;    // [B·N, HEADS]
@group(0) @binding(6) var<storage, read_write> totals: array<f32>;  // [blocks, 2·DIM]

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let flat = flat_workgroup(wid, nwg);
  if (flat >= p.block_count) {
    return;
  }
  let blk = token_block(flat);
  let elem0 = piece_element(blk.row0, DIM);

  var off: array<f32, COLS>;
  for (var j = 0u; j < COLS; j++) {
    off[j] = sq_off[blk.g * DIM + min(j * WG + lid, DIM - 1u)];
  }
  var run: array<f32, COLS>;  // in-block running Σ w²
  var sq: array<f32, COLS * TILE>;
  var num: array<f32, COLS>;
  var den: array<f32, COLS>;
  for (var t0 = 0u; t0 < blk.count; t0 += TILE) {
    let tn = min(TILE, blk.count - t0);
    for (var j = 0u; j < COLS; j++) {
      let c = j * WG + lid;
      if (c < DIM) {
        for (var t = 0u; t < TILE; t++) {
          var v = 0.0;
          if (t < tn) {
            let x = w[elem0 + (t0 + t) * DIM + c];
            v = x * x;
          }
          run[j] += v;
          sq[j * TILE + t] = v;
          tile[t * DIM + c] = v / max(off[j] + run[j], 1e-12);
        }
      }
    }
    workgroupBarrier();
    for (var q = lid; q < PAIRS; q += WG) {
      let t = q / HEADS;
      let h = q % HEADS;
      let n = min(blk.first + t0 + t, p.bias_stride - 1u);
      let bias = f32(HEAD_DIM) * denom_bias[h * p.bias_stride + n];
      logits[q] = temp[h] * (tile_head_sum(t, h) + bias);
    }
    workgroupBarrier();
    tile_memberships(lid, blk.row0 + t0, tn);
    workgroupBarrier();
    tile_accumulate(lid, tn, &sq, &num, &den);
  }
  for (var j = 0u; j < COLS; j++) {
    let c = j * WG + lid;
    if (c < DIM) {
      totals[blk.g * 2u * DIM + c] = num[j];
      totals[blk.g * 2u * DIM + DIM + c] = den[j];
    }
  }
}
