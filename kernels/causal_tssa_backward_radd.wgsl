// Second half of the reverse scan (see causal_tssa_backward_rscan.wgsl): add
// to each row the suffix total of the later 64-row blocks of its batch
// element, x[b, r, c] += suffix[b, r/64 + 1, c] (nothing for the last block),
// where suffix holds the block totals already reverse-scanned (inclusive).
// One thread per element; the grid is flat and may be folded over 65535.

struct Params {
  rows: u32,             // L
  cols: u32,             // C
  blocks_per_batch: u32, // ceil(L / 64)
  total: u32,            // B · L · C
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> suffix: array<f32>;

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * 256u + lid;
  if (i >= p.total) {
    return;
  }
  let row = i / p.cols;
  let c = i - row * p.cols;
  let b = row / p.rows;
  let k = (row - b * p.rows) / 64u + 1u;
  if (k < p.blocks_per_batch) {
    x[i] += suffix[(b * p.blocks_per_batch + k) * p.cols + c];
  }
}
