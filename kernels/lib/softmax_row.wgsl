// The statistics of a numerically stable softmax (or log-sum-exp) over one
// row that a whole workgroup owns: the row maximum m and Σ exp(x − m),
// tree-reduced with lib/reduce.wgsl.
//
// Contract with the including kernel:
// - it declares `const WG: u32`, its workgroup size, a power of two (see
//   lib/reduce.wgsl), and calls from uniform control flow;
// - it declares `fn softmax_row_input(i: u32) -> f32`, the input value at
//   flat index i (a read of its own binding).

{{include reduce}}

// (m, Σ_c exp(x[start + c] − m)) over c < count, m = max_c x[start + c];
// every invocation gets both.
fn softmax_row_stats(lid: u32, start: u32, count: u32) -> vec2f {
  // The lowest finite f32 (WGSL has no infinity literal, and implementations
  // may assume no infinities: mask with large negative finite values).
  var m = -0x1.fffffep+127f;
  for (var c = lid; c < count; c += WG) {
    m = max(m, softmax_row_input(start + c));
  }
  m = workgroup_max(lid, m);
  var s = 0.0;
  for (var c = lid; c < count; c += WG) {
    s += exp(softmax_row_input(start + c) - m);
  }
  return vec2f(m, workgroup_sum(lid, s));
}
