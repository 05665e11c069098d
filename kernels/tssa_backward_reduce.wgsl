// TSSA backward: column sums over blocks of tokens of a product with a
// per-head weight. For x, w viewed as [B, N, D] and s as [B·N, H]:
//   partial[g, c] = Σ_{tokens n of block g} x[n, c] · w[n, c] · s[n, c / HEAD_DIM]
// with g = b·blocks_per_batch + k (block k holds tokens k·block_rows …).
// The backward uses it for Σ_n ∂y·w·Pi (x = ∂y) and Σ_n ∂z·w² (x = w).
// src/ops/_scan.ts (totalSums) then reduces the blocks as a tree.
//
// One workgroup per (block, chunk of 64 columns): 4 row lanes × 64 column
// lanes, so each load reads 64 consecutive floats of one row; each lane
// strides over the block's tokens, the 4 lane sums are added at the end.
//
// x and w may be one piece of larger tensors (whole blocks): row r (flat
// over batches) is at element elem_base + (r - row_base)·DIM of the binding.

{{include grid}}
{{include token_blocks}}

struct Params {
  rows: u32,             // N, tokens per batch element
  block_rows: u32,
  blocks_per_batch: u32,
  first_block: u32,      // global index of this dispatch's first block
  block_count: u32,      // blocks in this dispatch
  row_base: u32,         // flat row at elem_base
  elem_base: u32,
  col_chunks: u32,       // ceil(DIM / 64)
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;
const CC: u32 = 64u;  // column lanes
const RL: u32 = 4u;   // row lanes

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;        // [B·N, DIM]
@group(0) @binding(2) var<storage, read> w: array<f32>;        // [B·N, DIM]
@group(0) @binding(3) var<storage, read> s: array<f32>;        // [B·N, HEADS]
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;  // [blocks, DIM]

var<workgroup> lane_sums: array<f32, 256>;

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let flat = flat_workgroup(wid, nwg);
  let local_block = flat / p.col_chunks;
  if (local_block >= p.block_count) {
    return;
  }
  let blk = token_block(local_block);
  let lane = lid / CC;
  let c = (flat % p.col_chunks) * CC + lid % CC;
  let h = c / HEAD_DIM;
  var acc = 0.0;
  if (c < DIM) {
    for (var t = lane; t < blk.count; t += RL) {
      let row = blk.row0 + t;
      let i = piece_element(row, DIM) + c;
      acc += x[i] * w[i] * s[row * HEADS + h];
    }
  }
  lane_sums[lid] = acc;
  workgroupBarrier();
  if (lane == 0u && c < DIM) {
    partial[blk.g * DIM + c] = (lane_sums[lid] + lane_sums[lid + CC]) +
      (lane_sums[lid + 2u * CC] + lane_sums[lid + 3u * CC]);
  }
}
