// Token plus position embedding (nanoGPT's `wte(idx) + wpe(pos)`):
//
//   y[r, c] = wte[idx[r], c] + wpe[pos0 + r % T, c],   r = b·T + t.
//
// Token ids are validated on the host before upload (out-of-range ids are a
// user error there); the kernel still clamps them so that a bad id can never
// read outside wte.
//
// Columns count lanes: one value (slot vecType f32) or four (vec4f, when C
// is a multiple of 4); each invocation writes PER lanes, WG apart
// (lib/lanes.wgsl).
//
// Bindings: 1 = idx (u32), 2 = wte, 3 = wpe, 4 = y (read_write).

{{include lanes}}

alias V = {{vecType}};
const WG: u32 = {{workgroupSize}}u;
const PER: u32 = {{perInvocation}}u;

struct Params {
  n: u32,     // rows · C (lanes)
  cols: u32,  // lanes per row
  t: u32,     // T, tokens per sequence
  vocab: u32, // V
  pos0: u32,  // position of the first token of every sequence
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read> wte: array<V>;
@group(0) @binding(3) var<storage, read> wpe: array<V>;
@group(0) @binding(4) var<storage, read_write> y: array<V>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  for (var k = 0u; k < PER; k++) {
    let i = lane(wid, nwg, lid, k);
    if (i >= params.n) {
      return;
    }
    let c = i % params.cols;
    let r = i / params.cols;
    let token = min(idx[r], params.vocab - 1u);
    let pos = params.pos0 + r % params.t;
    y[i] = wte[token * params.cols + c] + wpe[pos * params.cols + c];
  }
}
