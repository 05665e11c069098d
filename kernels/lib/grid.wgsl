// The flat workgroup index of a 1-D grid that the runtime folded over 65535
// workgroups per dimension into y and z (see src/gpu/runtime.ts): kernels
// return when it is past their workgroup count.
fn flat_workgroup(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
}
