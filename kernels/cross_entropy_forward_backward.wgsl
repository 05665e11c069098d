// Cross-entropy forward and backward fused (PyTorch's F.cross_entropy with
// ignore_index=-1, mean over the n rows whose target is not −1):
//
//   count_targets: count[0] = n                              (one workgroup)
//   rows:          losses[r] = log Σ_v exp(z[r, v] − m) + m − z[r, t_r],
//                  dz[r, v]  = scale · (softmax(z_r)_v − [v = t_r]) / n,
//                  both 0 where t_r < 0                      (one workgroup per row:
//                  GPUs)
//   rows_serial:   the same, one invocation per row, serial, no barrier (CPUs)
//   mean:          loss[0] = Σ_r losses[r] / n (0 when n = 0) (one workgroup)
//
// Bindings shared by all entry points: 1 = targets (i32, whole), 2 = count
// (f32 [1]), 3 = losses (f32 [R], whole). `rows` also binds 4 = a piece of
// logits rows and 5 = the same piece of dz (`base` = the piece's first row
// inside both, `row0` = its global row index); `mean` binds 4 = loss [1]
// (entry points never share a binding number they both use). Targets are
// checked on the host; the kernel clamps for safety.

{{include grid}}
{{include reduce}}
{{include softmax_row}}
{{include softmax_serial}}

struct Params {
  total_rows: u32, // R
  cols: u32,       // V
  rows: u32,       // rows in this piece (rows entry only)
  row0: u32,       // global index of the piece's first row
  base: u32,       // element offset of the piece's first row in bindings 4 and 5
  scale: f32,      // upstream gradient of the loss
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> count: array<f32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;
@group(0) @binding(4) var<storage, read> logits: array<f32>;
@group(0) @binding(5) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

const WG: u32 = {{workgroupSize}}u; // a power of two

fn softmax_row_input(i: u32) -> f32 {
  return logits[i];
}

@compute @workgroup_size(WG)
fn count_targets(@builtin(local_invocation_index) lid: u32) {
  var n = 0.0;
  for (var r = lid; r < params.total_rows; r += WG) {
    n += select(0.0, 1.0, targets[r] >= 0);
  }
  n = workgroup_sum(lid, n);
  if (lid == 0u) {
    count[0] = n;
  }
}

@compute @workgroup_size(WG)
fn mean(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var r = lid; r < params.total_rows; r += WG) {
    if (targets[r] >= 0) {
      s += losses[r];
    }
  }
  s = workgroup_sum(lid, s);
  if (lid == 0u) {
    let n = count[0];
    loss[0] = select(0.0, s / n, n > 0.0);
  }
}

@compute @workgroup_size(WG)
fn rows(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = flat_workgroup(wid, nwg);
  if (row >= params.rows) {
    return; // uniform: the whole workgroup leaves together
  }
  let start = params.base + row * params.cols;
  // Ignored rows run the same reductions (a workgroup barrier must stay in
  // uniform control flow) and write zeros.
  let t = targets[params.row0 + row];
  let tgt = min(u32(max(t, 0)), params.cols - 1u);
  let stats = softmax_row_stats(lid, start, params.cols);
  let m = stats.x;
  let s = stats.y;
  // count[0] ≥ 1 whenever this row's target counts.
  let k = params.scale / count[0];
  let inv = 1.0 / s;
  for (var c = lid; c < params.cols; c += WG) {
    let p = exp(logits[start + c] - m) * inv;
    dlogits[start + c] = select(0.0, k * (p - select(0.0, 1.0, c == tgt)), t >= 0);
  }
  if (lid == 0u) {
    losses[params.row0 + row] = select(0.0, log(s) + m - logits[start + tgt], t >= 0);
  }
}

@compute @workgroup_size(WG)
fn rows_serial(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = flat_workgroup(wid, nwg) * WG + lid;
  if (row >= params.rows) {
    return;
  }
  let start = params.base + row * params.cols;
  let t = targets[params.row0 + row];
  let tgt = min(u32(max(t, 0)), params.cols - 1u);
  let stats = softmax_serial_stats(start, params.cols);
  let m = stats.x;
  let s = stats.y;
  // count[0] ≥ 1 whenever this row's target counts.
  let k = params.scale / count[0];
  let inv = 1.0 / s;
  for (var c = 0u; c < params.cols; c++) {
    let p = exp(logits[start + c] - m) * inv;
    dlogits[start + c] = select(0.0, k * (p - select(0.0, 1.0, c == tgt)), t >= 0);
  }
  losses[params.row0 + row] = select(0.0, log(s) + m - logits[start + tgt], t >= 0);
}
