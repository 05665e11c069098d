// Shared part of every GEMM kernel (gemm_block, gemm_tile):
// the uniform parameters and the epilogue that turns one accumulated dot
// product into stored outputs. A kernel's source is this file followed by its
// own; the product is
//
//   C[i, j] (= or +=) epilogue( Σ_r A(i, r)·B(j, r) )   i < m, j < n, r < k
//
// with C row-major (`c_ld` elements per row) and the operands addressed
// through strides, so one kernel serves the forward (x·Wᵀ) and both backward
// products (dy·W, dyᵀ·x): A(i, r) = a[a_base + i·a_si + r·a_sr], same for B.
//
// The epilogue steps are generated from the product's options
// (src/ops/_gemm_source.ts fills the slots epilogueBindings and epilogue):
//   bias:        v += bias[e_base + j]
//   accumulate:  v += C[i, j]                  (∂W += …, and later K pieces)
//   aux:         aux[i, j] = v                 (the pre-activation, kept for the backward)
//   gelu:        v = gelu(v)                   (exact erf GELU)
//   residual:    C[i, j] += gamma[e_base + j]·v  (x += γ ⊙ (x·Wᵀ + b), in place)
//   otherwise    C[i, j] = v
// Every variant sums r in increasing order with one fma per term starting
// from 0, so all variants give bit-identical results on one device.
//
// The register-block kernels may store through the vector form instead:
// `emit4(i, j, v)` finishes outputs (i, j … j+3) with the same steps done
// on a vec4f, C and the epilogue tensors bound as array<vec4f> (when every
// row and base is a multiple of 4: see src/ops/_gemm_source.ts). Each
// component sees the same operations as in `emit`, so the bits are the same;
// on lavapipe a store is a per-lane loop, so 4 outputs per store make the
// epilogue ~3× cheaper, which matters at small K.

struct Params {
  m: u32,         // rows of C in this piece
  n: u32,         // columns of C in this piece
  k: u32,         // reduction length (texels of 4 for the texture kernel)
  a_base: u32,    // A(i, r) = a[a_base + i * a_si + r * a_sr]
  a_si: u32,
  a_sr: u32,
  b_base: u32,    // B(j, r) = b[b_base + j * b_sj + r * b_sr]
  b_sj: u32,
  b_sr: u32,
  c_base: u32,    // C[i, j] = c[c_base + i * c_ld + j]
  c_ld: u32,
  e_base: u32,    // bias and gamma index of column 0
  aux_base: u32,  // aux[i, j] = aux[aux_base + i * c_ld + j]
  blocks_n: u32,  // blocks (tiles) along n
  blocks: u32,    // gemm_tile: tiles in the grid; register-block kernels: workgroups per row block
}

@group(0) @binding(0) var<uniform> p: Params;
{{epilogueBindings}}

{{include erf}}

// Exact (erf) GELU, as kernels/gelu.wgsl: the fused epilogue equals
// gelu(linear(…)) bit for bit.
fn gelu(v: f32) -> f32 {
  return v * normal_cdf(v);
}

{{emit}}

{{include grid}}
