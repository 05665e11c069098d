// The statistics of a numerically stable softmax (or log-sum-exp) over one
// row that ONE invocation owns: the row maximum m and Σ exp(x − m), summed
// in order. The row-per-invocation twin of lib/softmax_row.wgsl (a
// workgroup per row, tree-reduced), for CPUs: no workgroup memory, no
// barrier. The sums group differently, so the last bits may differ.
//
// Contract with the including kernel: it declares
// `fn softmax_row_input(i: u32) -> f32`, the input value at flat index i.

// (m, Σ_c exp(x[start + c] − m)) over c < count, m = max_c x[start + c].
fn softmax_serial_stats(start: u32, count: u32) -> vec2f {
  // The lowest finite f32 (WGSL has no infinity literal, and implementations
  // may assume no infinities: mask with large negative finite values).
  var m = -3.40282347e38;
  for (var c = 0u; c < count; c++) {
    m = max(m, softmax_row_input(start + c));
  }
  var s = 0.0;
  for (var c = 0u; c < count; c++) {
    s += exp(softmax_row_input(start + c) - m);
  }
  return vec2f(m, s);
}
