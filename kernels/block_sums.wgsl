// Column sums over blocks of rows: for x viewed as [B, L, C] and blocks of
// `block_rows` rows per batch element,
//   sums[g, c] = Σ_{rows r of block g} f(x[r, c]),   f(v) = v² if SQUARE else v,
// with g = b·blocks_per_batch + k the global block index (see
// src/ops/_tssa_blocks.ts). One thread per (block, column), summing the
// block's rows in order; a workgroup covers 64 consecutive columns, so every
// load instruction reads 64 consecutive floats of one row (coalesced). No
// barriers, no atomics; callers reduce the [B, blocks, C] result again until
// one block is left (a tree), or scan it.
//
// x may be one piece of a larger tensor: row r (flat over batches) is at
// element elem_base + (r - row_base)·C of the binding.

{{include grid}}
{{include token_blocks}}

struct Params {
  rows: u32,             // L, rows per batch element
  block_rows: u32,
  blocks_per_batch: u32,
  first_block: u32,      // global index of this dispatch's first block
  block_count: u32,      // blocks in this dispatch
  row_base: u32,         // flat row at elem_base
  elem_base: u32,
  cols: u32,             // C
  col_chunks: u32,       // ceil(C / 64)
}

const SQUARE: bool = {{square}};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let flat = flat_workgroup(wid, nwg);
  let local_block = flat / p.col_chunks;
  let c = (flat % p.col_chunks) * 64u + lid;
  if (local_block >= p.block_count || c >= p.cols) {
    return;
  }
  let blk = token_block(local_block);
  let base = piece_element(blk.row0, p.cols) + c;
  var acc = 0.0;
  for (var t = 0u; t < blk.count; t++) {
    let v = x[base + t * p.cols];
    if (SQUARE) {
      acc += v * v;
    } else {
      acc += v;
    }
  }
  sums[blk.g * p.cols + c] = acc;
}
