// Non-causal TSSA output pass: with stats[b] = [Σ_n Pi·w² (DIM values),
// Σ_n Pi (repeated per column, DIM values)] from tssa_pi.wgsl reduced over
// all blocks,
//   y[n, c] = −w[n, c] · Pi[n, h(c)] / (1 + stats[c] / (stats[DIM + c] + 1e-8)).
// One thread per (block, column), walking the block's tokens; a workgroup
// covers 64 consecutive columns, so loads and stores are coalesced. y is
// bound like w (same piece, same base).

{{include grid}}
{{include token_blocks}}

struct Params {
  rows: u32,
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
const CHUNKS: u32 = {{chunks}}u;  // ceil(DIM / 64)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> pi: array<f32>;     // [B·N, HEADS]
@group(0) @binding(3) var<storage, read> stats: array<f32>;  // [B, 2·DIM]
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let flat = flat_workgroup(wid, nwg);
  let local_block = flat / CHUNKS;
  let c = (flat % CHUNKS) * 64u + lid;
  if (local_block >= p.block_count || c >= DIM) {
    return;
  }
  let blk = token_block(local_block);
  let elem0 = piece_element(blk.row0, DIM) + c;
  let h = c / HEAD_DIM;
  let attn = 1.0 / (1.0 + stats[blk.b * 2u * DIM + c] / (stats[blk.b * 2u * DIM + DIM + c] + 1e-8));
  for (var t = 0u; t < blk.count; t++) {
    let i = elem0 + t * DIM;
    y[i] = -(w[i] * pi[(blk.row0 + t) * HEADS + h]) * attn;
  }
}
