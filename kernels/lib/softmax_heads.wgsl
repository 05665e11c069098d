// The softmax over the heads of one token (TSSA's memberships Pi),
// numerically stable (the largest logit is subtracted first). Its backward
// is softmax_heads_backward.wgsl.
//
// Contract with the including kernel: it declares `const HEADS: u32`, the
// number of heads, and a workgroup array `logits` in which the HEADS logits
// of a token stand at logits[base + h] (written before a barrier).

// Pi[h] = exp(logits[base + h] − m) / Σ_g exp(logits[base + g] − m),
// m = max_g logits[base + g].
fn softmax_heads_at(base: u32, h: u32) -> f32 {
  var m = -0x1.fffffep+127f; // the lowest finite f32 (WGSL may assume no infinities)
  for (var g = 0u; g < HEADS; g++) {
    m = max(m, logits[base + g]);
  }
  var s = 0.0;
  for (var g = 0u; g < HEADS; g++) {
    s += exp(logits[base + g] - m);
  }
  return exp(logits[base + h] - m) / s;
}
