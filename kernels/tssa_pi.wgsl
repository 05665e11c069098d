// Non-causal TSSA, second pass over the tokens (the first, block_sums.wgsl
// with SQUARE, gives sq_sums[b, c] = Σ_n w[b, n, c]²). Per block of tokens:
//   Pi[n, h] = softmax over h of temp[h] · Σ_k w[n, h·d+k]² / max(sq_sums[h·d+k], 1e-24)
//              (written to pi[B·N, H] for the output pass), and
//   partial[g, c]       = Σ_{n in block} Pi[n, h(c)] · w[n, c]²
//   partial[g, DIM + c] = Σ_{n in block} Pi[n, h(c)]
// (the second half repeats each head's Σ Pi for its d columns so that both
// halves reduce with the same kernel). block_sums.wgsl then sums the
// partials over blocks.
//
// One workgroup of 256 threads per block, walking it in tiles of TILE
// tokens. Thread i owns columns i, i + 256, … (COLS of them): it loads them
// coalesced, keeps the squares in registers and writes the normalised
// squares to a TILE × DIM tile in workgroup memory; one thread per
// (token, head) pair then sums its head's d values and applies the softmax
// over heads; finally each thread adds Pi·w² and Pi for its own columns.
// Three barriers per tile, no atomics.

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
@group(0) @binding(2) var<storage, read> sq_sums: array<f32>;   // [B, DIM]
@group(0) @binding(3) var<storage, read> temp: array<f32>;      // [HEADS]
@group(0) @binding(4) var<storage, read_write> pi: array<f32>;  // [B·N, HEADS]
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;  // [blocks, 2·DIM]

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

  var norm: array<f32, COLS>;
  for (var j = 0u; j < COLS; j++) {
    // F.normalize's clamp, max(‖w[:, c]‖, 1e-12)²: an all-zero feature gives 0, not NaN.
    norm[j] = max(sq_sums[blk.b * DIM + min(j * WG + lid, DIM - 1u)], 1e-24);
  }
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
          sq[j * TILE + t] = v;
          tile[t * DIM + c] = v / norm[j];
        }
      }
    }
    workgroupBarrier();
    for (var q = lid; q < PAIRS; q += WG) {
      let t = q / HEADS;
      let h = q % HEADS;
      logits[q] = temp[h] * tile_head_sum(t, h);
    }
    workgroupBarrier();
    tile_memberships(lid, blk.row0 + t0, tn);
    workgroupBarrier();
    tile_accumulate(lid, tn, &sq, &num, &den);
  }
  for (var j = 0u; j < COLS; j++) {
    let c = j * WG + lid;
    if (c < DIM) {
      partial[blk.g * 2u * DIM + c] = num[j];
      partial[blk.g * 2u * DIM + DIM + c] = den[j];
    }
  }
}
