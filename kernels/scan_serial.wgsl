// Scans down the rows of x viewed as [B, L, C], per batch element and
// column, in place, for software adapters (lavapipe): the whole scan that
// scan_block.wgsl + its carries give, in one dispatch with no workgroup
// memory and no barriers (every barrier is a fibre switch on lavapipe).
// Slot REVERSE picks the direction:
//   forward: x[b, r, c] ← Σ_{r' < r} x[b, r', c]   (exclusive prefix sums)
//   reverse: x[b, r, c] ← Σ_{r' ≥ r} x[b, r', c]   (inclusive suffix sums)
// One invocation per (batch element, column) walks the L rows (from the last
// when reversed). The driver is src/ops/_scan.ts (serialScan).
//
// Order of summation (a deliberate choice): each sum is carry + run, where
// run adds the rows of the current 64-row block (blocks aligned at row 0, as
// in scan_block.wgsl) one by one in walking order and carry adds the
// finished blocks' totals one by one; scan_block.wgsl forms the same split
// with trees inside the block and over the blocks. Rounding grows with
// L/64 + 64 terms, not L. Loads stride C floats (each invocation owns a
// column); on a CPU the rows of a batch element stay in cache.

{{include grid}}

struct Params {
  batches: u32,   // B
  rows: u32,      // L
  cols: u32,      // C
}

const REVERSE: bool = {{reverse}};
const WG: u32 = 64u;
const SB: u32 = 64u;  // rows per block of the run

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_workgroup(wid, nwg) * WG + lid;
  if (i >= p.batches * p.cols) {
    return;
  }
  let c = i % p.cols;
  let base = (i / p.cols) * p.rows * p.cols + c;
  var carry = 0.0;
  var run = 0.0;
  for (var t = 0u; t < p.rows; t++) {
    var r = t;
    if (REVERSE) {
      r = p.rows - 1u - t;
    }
    let at = base + r * p.cols;
    let v = x[at];
    if (REVERSE) {
      run += v;
      x[at] = carry + run;
      if (r % SB == 0u) {
        carry += run;
        run = 0.0;
      }
    } else {
      x[at] = carry + run;
      run += v;
      if (r % SB == SB - 1u) {
        carry += run;
        run = 0.0;
      }
    }
  }
}
