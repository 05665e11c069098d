// Cross-entropy of each row of logits against an integer target, as
// PyTorch's F.cross_entropy(..., reduction="none", ignore_index=-1):
//
//   loss[r] = log Σ_v exp(logits[r, v] − m) + m − logits[r, target[r]],  m = max_v logits[r, v]
//
// and 0 where target[r] < 0. Two designs (src/ops/cross_entropy.ts chooses
// by measuring): `main`, one workgroup per row (flat workgroup index folded
// over 65535), max and sum tree-reduced in workgroup memory (GPUs); `row`,
// one invocation per row, serial, no barrier (CPUs), WG rows per workgroup.
// Targets are validated on the host (< V); the kernel clamps for safety.
//
// Bindings: 1 = logits (a piece of rows starting at `base`), 2 = targets
// (i32, whole), 3 = loss (read_write, whole); `row0` is the piece's first row.

{{include grid}}
{{include softmax_row}}
{{include softmax_serial}}

struct Params {
  rows: u32, // rows in this piece
  cols: u32, // V
  base: u32, // element offset of the piece's first row inside logits' binding
  row0: u32, // global index of the piece's first row
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;

const WG: u32 = {{workgroupSize}}u; // a power of two

fn softmax_row_input(i: u32) -> f32 {
  return logits[i];
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = flat_workgroup(wid, nwg);
  if (row >= params.rows) {
    return; // uniform: the whole workgroup leaves together
  }
  let start = params.base + row * params.cols;
  let stats = softmax_row_stats(lid, start, params.cols);
  let m = stats.x;
  let s = stats.y;
  if (lid == 0u) {
    let t = targets[params.row0 + row];
    var l = 0.0;
    if (t >= 0) {
      let v = min(u32(t), params.cols - 1u);
      l = log(s) + m - logits[start + v];
    }
    loss[params.row0 + row] = l;
  }
}

@compute @workgroup_size(WG)
fn row(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let r = flat_workgroup(wid, nwg) * WG + lid;
  if (r >= params.rows) {
    return;
  }
  let start = params.base + r * params.cols;
  let stats = softmax_serial_stats(start, params.cols);
  let t = targets[params.row0 + r];
  var l = 0.0;
  if (t >= 0) {
    let v = min(u32(t), params.cols - 1u);
    l = log(stats.y) + stats.x - logits[start + v];
  }
  loss[params.row0 + r] = l;
}
