// Causal TSSA output pass. With pi[B·N, H] from causal_tssa_pi.wgsl and
// off[g] = the exclusive scan over blocks of its totals (Σ Pi·w² per column,
// then Σ Pi per column), per block:
//   num[n, c] = off[g, c]       + Σ_{n' ≤ n in block} Pi[n', h(c)] · w[n', c]²
//   den[n, c] = off[g, DIM + c] + Σ_{n' ≤ n in block} Pi[n', h(c)]
//   y[n, c]   = −w[n, c] · Pi[n, h(c)] / (1 + num / (den + 1e-8))
// One thread per column of a block, walking the block's tokens in order with
// the running sums in registers (kept apart from the carried offsets); a
// workgroup covers 64 consecutive columns, so loads and stores are coalesced.
// No barriers, no workgroup memory.

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
@group(0) @binding(2) var<storage, read> pi: array<f32>;   // [B·N, HEADS]
@group(0) @binding(3) var<storage, read> off: array<f32>;  // [blocks, 2·DIM]
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
  let o_num = off[blk.g * 2u * DIM + c];
  let o_den = off[blk.g * 2u * DIM + DIM + c];
  var num = 0.0;
  var den = 0.0;
  for (var t = 0u; t < blk.count; t++) {
    let x = w[elem0 + t * DIM];
    let v = pi[(blk.row0 + t) * HEADS + h];
    num += v * x * x;
    den += v;
    let dots = (o_num + num) / (o_den + den + 1e-8);
    y[elem0 + t * DIM] = -(x * v) / (1.0 + dots);
  }
}
