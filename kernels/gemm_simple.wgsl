// GEMM straight from storage buffers through the strides of
// kernels/gemm_common.wgsl, for products too small or too skinny for the
// other kernels to pay off (one row when sampling a token, 512×64×192 blocks
// where a dispatch's fixed cost dominates): no packing pass, no workgroup
// memory. Each invocation owns an RM×RN block of C in plain variables
// (generated into the slots rows, declare, load, fma, spill by
// src/ops/_gemm_source.ts); neighbouring invocations take neighbouring column
// blocks. Loads past the edges are clamped to the last row or column (their
// outputs are never stored), so the loop has no branches.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

const RM: u32 = {{rm}}u;
const RN: u32 = {{rn}}u;
const WG: u32 = {{workgroupSize}}u;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = flat_group(wid, nwg) * WG + lid;
  if (idx >= p.blocks) {
    return;
  }
  let i0 = (idx / p.blocks_n) * RM;
  let j0 = (idx % p.blocks_n) * RN;
  {{rows}}
  {{declare}}
  for (var r = 0u; r < p.k; r++) {
    {{load}}
    {{fma}}
  }
  var blk: array<f32, RM * RN>;
  {{spill}}
  for (var e = 0u; e < RM * RN; e++) {
    emit(i0 + e / RN, j0 + e % RN, blk[e]);
  }
}
