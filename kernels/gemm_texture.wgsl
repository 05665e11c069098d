// GEMM over operands packed into rgba32float storage textures
// (kernels/gemm_pack.wgsl): texel (t, r) of `a_tex` holds A(r, 4t … 4t+3),
// of `b_tex` B(r, 4t … 4t+3); `p.k` counts texels. Designed for lavapipe
// (Mesa's software Vulkan), which runs 8 invocations in the lanes of one
// 256-bit vector (measurements in ../shared/PERF.md, "GEMM on lavapipe"):
//
// - each invocation owns an RM×RN block of C held in plain variables c{i}_{j}
//   (private arrays indexed by loop variables become per-lane memory
//   traffic there), and no workgroup memory is used;
// - per texel step it issues all RM + RN texture loads before the RM·RN
//   chains of four fmas (one per k, in order);
// - neighbouring invocations take neighbouring column blocks, so the lanes of
//   one vector share their rows of A.
//
// The unrolled block is generated (src/ops/_gemm_source.ts) into the slots
// declare, load, fma and spill (which copies the block into `blk` for the
// epilogue loop, kept out of the unrolled code).

@group(0) @binding(1) var a_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var b_tex: texture_storage_2d<rgba32float, read>;

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
  {{declare}}
  for (var t = 0u; t < p.k; t++) {
    {{load}}
    {{fma}}
  }
  var blk: array<f32, RM * RN>;
  {{spill}}
  for (var e = 0u; e < RM * RN; e++) {
    emit(i0 + e / RN, j0 + e % RN, blk[e]);
  }
}
