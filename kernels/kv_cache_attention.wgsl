// Causal softmax attention for decoding with a key/value cache (GPT).
//
// `append`: copy the keys and values of T new tokens out of the packed
// projection qkv [B, T, (3, HEADS, HEAD_DIM)] into the caches
// k, v [B, HEADS, CAPACITY, HEAD_DIM] at positions pos0 … pos0+T-1.
// One thread per new (token, feature).
//
// `attend`: for every new token t of every sequence and head, attention of
// its query over the cached keys 0 … pos0+t (itself included):
//   y[b, t, h·d + k] = Σ_j softmax_j(q·k_j · scale) · v_j[k]
// One workgroup per (b, h, t): the scores live in workgroup memory, max and
// sum are tree reductions, then thread k sums its output features.

{{include grid}}
{{include reduce}}

struct Params {
  tokens: u32,   // T, new tokens per sequence
  pos0: u32,     // position of the first new token
  batches: u32,  // B
  scale: f32,    // 1 / sqrt(HEAD_DIM)
}

const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;
const CAPACITY: u32 = {{capacity}}u;  // positions a cache holds (block_size)
const WG: u32 = {{workgroupSize}}u;   // a power of two
const DIM: u32 = HEADS * HEAD_DIM;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;        // [B, T, 3·DIM]
@group(0) @binding(2) var<storage, read_write> k_cache: array<f32>;  // [B, HEADS, CAPACITY, HEAD_DIM]
@group(0) @binding(3) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;    // [B, T, DIM] (attend only)

var<workgroup> scores: array<f32, CAPACITY>;
var<workgroup> q: array<f32, HEAD_DIM>;

@compute @workgroup_size(WG)
fn append(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_workgroup(wid, nwg) * WG + lid;
  if (i >= p.batches * p.tokens * DIM) {
    return;
  }
  let c = i % DIM;
  let row = i / DIM;  // b·T + t
  let b = row / p.tokens;
  let t = row % p.tokens;
  let h = c / HEAD_DIM;
  let at = ((b * HEADS + h) * CAPACITY + p.pos0 + t) * HEAD_DIM + c % HEAD_DIM;
  k_cache[at] = qkv[row * 3u * DIM + DIM + c];
  v_cache[at] = qkv[row * 3u * DIM + 2u * DIM + c];
}

@compute @workgroup_size(WG)
fn attend(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  // Uniform control flow: the whole workgroup returns or none of it.
  let g = flat_workgroup(wid, nwg);  // (b·HEADS + h)·T + t
  if (g >= p.batches * HEADS * p.tokens) {
    return;
  }
  let t = g % p.tokens;
  let bh = g / p.tokens;
  let b = bh / HEADS;
  let h = bh % HEADS;
  let keys = p.pos0 + t + 1u;
  let row = b * p.tokens + t;
  for (var k = lid; k < HEAD_DIM; k += WG) {
    q[k] = qkv[row * 3u * DIM + h * HEAD_DIM + k];
  }
  workgroupBarrier();
  let base = bh * CAPACITY * HEAD_DIM;
  var m = -0x1.fffffep+127f;
  for (var j = lid; j < keys; j += WG) {
    var s = 0.0;
    for (var k = 0u; k < HEAD_DIM; k++) {
      s += q[k] * k_cache[base + j * HEAD_DIM + k];
    }
    s *= p.scale;
    scores[j] = s;
    m = max(m, s);
  }
  m = workgroup_max(lid, m);
  var sum = 0.0;
  for (var j = lid; j < keys; j += WG) {
    let e = exp(scores[j] - m);
    scores[j] = e;
    sum += e;
  }
  let total = workgroup_sum(lid, sum);
  for (var k = lid; k < HEAD_DIM; k += WG) {
    var acc = 0.0;
    for (var j = 0u; j < keys; j++) {
      acc += scores[j] * v_cache[base + j * HEAD_DIM + k];
    }
    y[row * DIM + h * HEAD_DIM + k] = acc / total;
  }
}
