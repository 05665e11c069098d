// Eval-mode BatchNorm folded into the bias-free 3×3 convolution before it,
// from the live parameters: with s[co] = gamma[co] / √(running_var[co] + eps),
//
//   packed[k, co] = W[co, k]·s[co]   (k = ci·9 + ky·3 + kx; zero columns up to COUT4)
//   bias[co]      = beta[co] − running_mean[co]·s[co]
//
// packed is the [Cin·9, Cout4] layout conv2d.wgsl reads (as conv2d_pack_weight.wgsl
// writes it). One thread per packed element; the threads of row k = 0 also
// write the bias.
//
// Bindings: 1 = W [Cout, Cin, 3, 3], 2 = gamma, 3 = beta, 4 = running_mean,
// 5 = running_var (each [Cout]), 6 = packed (read_write), 7 = bias (read_write).

struct Params {
  n: u32,     // Cin·9·Cout4
  cin: u32,
  cout: u32,
  eps: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> variance: array<f32>;
@group(0) @binding(6) var<storage, read_write> packed: array<f32>;
@group(0) @binding(7) var<storage, read_write> bias: array<f32>;

const WG: u32 = 64u;

{{include grid}}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_workgroup(wid, nwg) * WG + lid;
  if (i >= params.n) {
    return;
  }
  let cout4 = (params.cout + 3u) / 4u * 4u;
  let co = i % cout4;
  let k = i / cout4;
  var v = 0.0;
  if (co < params.cout) {
    let s = gamma[co] / sqrt(variance[co] + params.eps);
    v = w[co * params.cin * 9u + k] * s;
    if (k == 0u) {
      bias[co] = beta[co] - mean[co] * s;
    }
  }
  packed[i] = v;
}
