// Register-block GEMM: each invocation owns an RM×RN block of C held in
// plain variables c{i}_{j}. Two operand sources share this file:
//
// - textures (the "texture" variants): A and B packed into rgba32float
//   storage textures by kernels/gemm_pack.wgsl, texel (s, r) holding
//   A(r, 4s … 4s+3); `p.k` counts texels and each step does four fmas per
//   output. Designed for lavapipe (Mesa's software Vulkan), which runs 8
//   invocations in the lanes of one 256-bit vector (../shared/PERF.md, "GEMM
//   on lavapipe"): private arrays indexed by loop variables would become
//   per-lane memory traffic there, so the block is plain variables and no
//   workgroup memory is used; per step all RM + RN loads are issued before
//   the RM·RN chains of fmas (one per k, in order).
// - buffers (the "simple" variants): A and B read straight from storage
//   buffers through the strides of kernels/gemm_common.wgsl, one term per
//   step, loads past the edges clamped to the last row or column (their
//   outputs are never stored) so the loop has no branches. No packing pass:
//   for one row (sampling a token) and products where a dispatch's fixed
//   cost dominates.
//
// The invocations of a workgroup take neighbouring column blocks of one row
// block, so the lanes of a vector share their rows of A and the compiler
// sees those loads as uniform (~30% faster on lavapipe than lanes spread
// over row blocks).
//
// src/ops/_gemm_source.ts generates the slots: operands (the bindings of A
// and B), rows (per-invocation row offsets), the unrolled declare, load and
// fma, and store (which copies the block into `blk` and emits it in a loop,
// one output or, where C's rows allow, 4 at a time).

{{operands}}

const RM: u32 = {{rm}}u;
const RN: u32 = {{rn}}u;
const WG: u32 = {{workgroupSize}}u;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let g = flat_workgroup(wid, nwg);
  let i0 = (g / p.blocks) * RM;
  let jb = (g % p.blocks) * WG + lid;
  if (i0 >= p.m || jb >= p.blocks_n) {
    return;
  }
  let j0 = jb * RN;
  {{rows}}
  {{declare}}
  for (var s = 0u; s < p.k; s++) {
    {{load}}
    {{fma}}
  }
  {{store}}
}
