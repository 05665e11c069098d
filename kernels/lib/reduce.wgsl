// Workgroup tree reductions: every invocation passes one value, every
// invocation gets the workgroup's sum (or maximum) back. The values are
// added pairwise (lid + s into lid, s = WG/2, WG/4, …, 1), always in that
// order, so a result is the same bit for bit on every run.
//
// Contract with the including kernel:
// - it declares `const WG: u32`, its workgroup size, a power of two, and
//   calls these with its `local_invocation_index`;
// - it calls them from uniform control flow (they contain barriers): every
//   invocation of the workgroup, or none;
// - each call ends with a barrier after the result is read, so calls may
//   follow each other directly.
// The snippet declares the workgroup arrays `reduce_f32` and `reduce_vec2`
// (WG values each; an entry point only gets the ones it uses).

var<workgroup> reduce_f32: array<f32, WG>;
var<workgroup> reduce_vec2: array<vec2f, WG>;

// The sum (use_max false) or the maximum (true) of v over the workgroup;
// use_max is a constant at every call, so the choice costs nothing.
fn workgroup_reduce(lid: u32, v: f32, use_max: bool) -> f32 {
  reduce_f32[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      let a = reduce_f32[lid];
      let b = reduce_f32[lid + s];
      reduce_f32[lid] = select(a + b, max(a, b), use_max);
    }
    workgroupBarrier();
  }
  let r = reduce_f32[0];
  workgroupBarrier(); // everyone has read before the next reduction writes
  return r;
}

// Σ v over the workgroup.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
  return workgroup_reduce(lid, v, false);
}

// max v over the workgroup.
fn workgroup_max(lid: u32, v: f32) -> f32 {
  return workgroup_reduce(lid, v, true);
}

// Σ v over the workgroup, two sums at once.
fn workgroup_sum2(lid: u32, v: vec2f) -> vec2f {
  reduce_vec2[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      reduce_vec2[lid] = reduce_vec2[lid] + reduce_vec2[lid + s];
    }
    workgroupBarrier();
  }
  let r = reduce_vec2[0];
  workgroupBarrier();
  return r;
}
