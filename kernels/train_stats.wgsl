// The finiteness check of one optimizer step, on the GPU, so the training
// loop never waits for a step's loss before recording the next one.
//
// The stats buffer (u32 words; floats stored as their bits):
//   word 0                  halt: 0, or the 1-based number of the first step
//                           whose loss or gradient norm was not finite (AdamW
//                           leaves the parameters alone once it is set)
//   words 1 … 3             reserved (0)
//   slot s at 4 + s·(2 + K) norm_sq (Σ grad² of the accumulated gradients),
//                           flags (1: not finite), then the K micro-batch losses
//
// The host copies norm_sq and the losses into the slot; `finish` (one
// invocation) sets the flags and, for the first bad step, the halt word.

struct Params {
  base: u32,  // first word of the slot
  micro: u32, // K
  step: u32,  // 1-based step number
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> stats: array<u32>;

// Exponent bits all ones: infinity or NaN (a bit test: compilers may assume
// floats are finite and fold `x != x` away).
fn is_finite_bits(bits: u32) -> bool {
  return (bits & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(1)
fn finish() {
  var ok = is_finite_bits(stats[p.base]);
  for (var k = 0u; k < p.micro; k++) {
    ok = ok && is_finite_bits(stats[p.base + 2u + k]);
  }
  stats[p.base + 1u] = select(1u, 0u, ok);
  if (!ok && stats[0] == 0u) {
    stats[0] = p.step;
  }
}
