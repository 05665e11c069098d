// One AdamW step (PyTorch's torch.optim.AdamW, decoupled weight decay) on a
// flat range of parameters (weight decay on elements [0, decay_end)), with global-norm gradient clipping and gradient
// accumulation folded in, then the gradient is zeroed for the next step:
//
//   g     = grad · grad_scale · clip          (grad_scale = 1 / micro-steps)
//   clip  = min(1, max_norm / (‖g_all‖ + 1e-6)) when max_norm > 0, else 1,
//           ‖g_all‖ = sqrt(norm_sq[0]) · grad_scale (norm of the raw sums)
//   p    *= 1 − lr · weight_decay
//   m     = β1·m + (1 − β1)·g;   v = β2·v + (1 − β2)·g²
//   p    −= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
//   grad  = 0
//
// Nothing but the gradient's reset happens once the halt word (word 0 of the
// training stats, see train_stats.wgsl) names a step whose loss or gradient
// norm was not finite: the parameters and moments keep their last good values.
//
// {{vecType}} is vec4f (n and decay_end count vec4s: the flat buffers are
// padded to whole vec4s, see model/params.ts) or f32.
//
// bc1 = 1 − β1^t and bc2 = 1 − β2^t are computed on the host in float64.

{{include grid}}

struct Params {
  n: u32,
  decay_end: u32,
  lr: f32,
  beta1: f32,
  beta2: f32,
  eps: f32,
  weight_decay: f32,
  bc1: f32,
  sqrt_bc2: f32,
  grad_scale: f32,
  max_norm: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<{{vecType}}>;
@group(0) @binding(2) var<storage, read_write> grad: array<{{vecType}}>;
@group(0) @binding(3) var<storage, read_write> m: array<{{vecType}}>;
@group(0) @binding(4) var<storage, read_write> v: array<{{vecType}}>;
@group(0) @binding(5) var<storage, read> norm_sq: array<f32>;
@group(0) @binding(6) var<storage, read> halt: array<u32>;

@compute @workgroup_size({{workgroupSize}})
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_workgroup(wid, nwg) * {{workgroupSize}}u + lid;
  if (i >= p.n) {
    return;
  }
  if (halt[0] != 0u) {
    grad[i] = {{vecType}}(0.0);
    return;
  }
  var scale = p.grad_scale;
  if (p.max_norm > 0.0) {
    let total = sqrt(norm_sq[0]) * p.grad_scale;
    scale = scale * min(1.0, p.max_norm / (total + 1e-6));
  }
  let g = grad[i] * scale;
  let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
  let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
  m[i] = mi;
  v[i] = vi;
  var wd = 0.0;
  if (i < p.decay_end) {
    wd = p.weight_decay;
  }
  let decayed = param[i] * (1.0 - p.lr * wd);
  param[i] = decayed - (p.lr / p.bc1) * mi / (sqrt(vi) / p.sqrt_bc2 + p.eps);
  grad[i] = {{vecType}}(0.0);
}
