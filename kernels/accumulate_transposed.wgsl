// Add scaled sums into a tensor, transposing [positions, heads] into its
// [heads, stride] layout:
//   dst[h·stride + n] += scale · src[n·heads + h]   for n < positions.
// With heads = stride = 1 a plain dst[n] += scale · src[n]: how the backward
// ops add their reduced parameter gradients (linear's ∂W and ∂b, the TSSA
// ∂temp (positions 1) and the causal ∂denom_bias (positions N, scale d)).

{{include grid}}

struct Params {
  positions: u32,
  heads: u32,
  stride: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_workgroup(wid, nwg) * 64u + lid;
  if (i >= p.positions * p.heads) {
    return;
  }
  let n = i / p.heads;
  let h = i % p.heads;
  dst[h * p.stride + n] += p.scale * src[i];
}
