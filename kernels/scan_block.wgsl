// Exclusive prefix sums down the rows of x viewed as [B, L, C], within
// blocks of 64 rows, in place; the block totals go to totals[B, ceil(L/64), C].
// Scanning the totals the same way (recursively) and adding them back with
// scan_add.wgsl gives the exclusive scan over all L rows: work O(L·C), depth
// O(log L), and every partial sum is formed hierarchically, which keeps f32
// rounding growth logarithmic rather than linear in L.
//
// One workgroup per (block, chunk of 64 columns): 4 row lanes × 64 column
// lanes. Lane l scans rows 16l … 16l+15 of the block in registers, the four
// lane totals are exchanged through workgroup memory, and each lane adds the
// totals of the lanes before it. Loads and stores are coalesced along columns.

struct Params {
  rows: u32,             // L
  cols: u32,             // C
  blocks_per_batch: u32, // ceil(L / 64)
  blocks: u32,           // B · blocks_per_batch
  col_chunks: u32,       // ceil(C / 64)
}

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
  let flat = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
  let g = flat / p.col_chunks;
  if (g >= p.blocks) {
    return;
  }
  let b = g / p.blocks_per_batch;
  let first = (g % p.blocks_per_batch) * SB;
  let count = min(SB, p.rows - first);
  let lane = lid / CC;
  let c = (flat % p.col_chunks) * CC + lid % CC;
  let in_range = c < p.cols;
  let base = (b * p.rows + first) * p.cols + c;

  var vals: array<f32, TPL>;
  var run = 0.0;
  for (var i = 0u; i < TPL; i++) {
    let t = lane * TPL + i;
    var v = 0.0;
    if (in_range && t < count) {
      v = x[base + t * p.cols];
    }
    vals[i] = run;
    run += v;
  }
  lane_tot[lid] = run;
  workgroupBarrier();
  var off = 0.0;
  for (var l = 0u; l < lane; l++) {
    off += lane_tot[l * CC + lid % CC];
  }
  if (in_range) {
    for (var i = 0u; i < TPL; i++) {
      let t = lane * TPL + i;
      if (t < count) {
        x[base + t * p.cols] = vals[i] + off;
      }
    }
    if (lane == RL - 1u) {
      totals[g * p.cols + c] = off + run;
    }
  }
}
