// Scans down the rows of x viewed as [B, L, C], per batch element and
// column, first half: within blocks of 64 rows, in place, in either
// direction (slot REVERSE):
//   forward: x[b, r, c] ← Σ_{start of r's block ≤ r' < r} x[b, r', c]   (exclusive)
//   reverse: x[b, r, c] ← Σ_{r ≤ r' < end of r's block} x[b, r', c]     (inclusive)
// and the block totals go to totals[B, ceil(L/64), C]. Scanning the totals
// the same way gives each block's carry from the other blocks; scan_add.wgsl
// adds the carries back, or the consumers add them as they read x (the
// causal TSSA backward), which saves a pass over x. The driver is
// src/ops/_scan.ts. Work O(L·C), depth O(log L), and every partial sum is
// formed as a tree, which keeps f32 rounding growth logarithmic in L.
//
// One workgroup per (block, chunk of 64 columns): 4 row lanes × 64 column
// lanes. Lane l sums rows 16l … 16l+15 of the block in registers (from the
// last upwards when reversed); the lane totals go through workgroup memory
// and each lane adds the totals of the lanes before (after) it. Loads and
// stores are coalesced along columns. x may be one piece of a larger tensor
// (whole blocks): row r (flat over batches) is at element
// elem_base + (r - row_base)·C of the binding; totals are indexed globally.

{{include grid}}
{{include token_blocks}}

struct Params {
  rows: u32,             // L
  block_rows: u32,       // 64 (the layout's; fixed by SB)
  blocks_per_batch: u32, // ceil(L / 64)
  first_block: u32,      // global index of this dispatch's first block
  block_count: u32,      // blocks in this dispatch
  row_base: u32,         // flat row at elem_base
  elem_base: u32,
  cols: u32,             // C
  col_chunks: u32,       // ceil(C / 64)
}

const REVERSE: bool = {{reverse}};
const CC: u32 = 64u;   // column lanes
const RL: u32 = 4u;    // row lanes
const TPL: u32 = 16u;  // rows per lane
const SB: u32 = 64u;   // rows per block = RL · TPL

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> totals: array<f32>;

var<workgroup> lane_tot: array<f32, 256>;

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
  let blk = token_block(local_block); // blk.count ≤ SB: the driver checks block_rows = SB
  let lane = lid / CC;
  let c = (flat % p.col_chunks) * CC + lid % CC;
  let in_cols = c < p.cols;
  let base = piece_element(blk.row0, p.cols) + c;

  var vals: array<f32, TPL>;
  var run = 0.0;
  for (var j = 0u; j < TPL; j++) {
    let i = select(j, TPL - 1u - j, REVERSE);
    let t = lane * TPL + i;
    var v = 0.0;
    if (in_cols && t < blk.count) {
      v = x[base + t * p.cols];
    }
    if (REVERSE) {
      run += v;
      vals[i] = run;
    } else {
      vals[i] = run;
      run += v;
    }
  }
  lane_tot[lid] = run;
  workgroupBarrier();
  var off = 0.0;
  for (var l = 0u; l < RL; l++) {
    if (select((l < lane), (l > lane), REVERSE)) {
      off += lane_tot[l * CC + lid % CC];
    }
  }
  if (in_cols) {
    for (var i = 0u; i < TPL; i++) {
      let t = lane * TPL + i;
      if (t < blk.count) {
        x[base + t * p.cols] = vals[i] + off;
      }
    }
    if (lane == select(RL - 1u, 0u, REVERSE)) {
      totals[blk.g * p.cols + c] = off + run;
    }
  }
}
