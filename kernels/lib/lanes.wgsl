// The lanes of the elementwise kernels: a lane is one value or one vec4, and
// each invocation takes PER lanes, WG apart, so that the lanes neighbouring
// invocations touch at once are contiguous in memory (lavapipe runs 8
// invocations side by side; a GPU coalesces a warp's loads). The workgroup
// index is the flat one of a grid the runtime folded over 65535 (grid).
//
// Contract with the including kernel: it declares `const WG: u32` (its
// workgroup size) and `const PER: u32` (lanes per invocation), and returns
// once a lane is past its count (later lanes are further still).

{{include grid}}

// The k-th lane of this invocation (k < PER).
fn lane(wid: vec3u, nwg: vec3u, lid: u32, k: u32) -> u32 {
  return flat_workgroup(wid, nwg) * (WG * PER) + k * WG + lid;
}
