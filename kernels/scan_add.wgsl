// Scans down the rows of x viewed as [B, L, C], second half (see
// scan_block.wgsl): add to every row the carry of its 64-row block, the
// block totals already scanned in the same direction:
//   forward: x[b, r, c] += carries[b, r/64, c]        (exclusive prefix of the totals)
//   reverse: x[b, r, c] += carries[b, r/64 + 1, c]    (inclusive suffix; nothing for
//                                                      the last block)
// One thread per element; the grid is flat and may be folded over 65535.

{{include grid}}

struct Params {
  rows: u32,             // L
  cols: u32,             // C
  blocks_per_batch: u32, // ceil(L / 64)
  total: u32,            // B · L · C
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> carries: array<f32>;

const REVERSE: bool = {{reverse}};

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_workgroup(wid, nwg) * 256u + lid;
  if (i >= p.total) {
    return;
  }
  let row = i / p.cols;
  let c = i - row * p.cols;
  let b = row / p.rows;
  let k = (row - b * p.rows) / 64u + select(0u, 1u, REVERSE);
  if (k < p.blocks_per_batch) {
    x[i] += carries[(b * p.blocks_per_batch + k) * p.cols + c];
  }
}
