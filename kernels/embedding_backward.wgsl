// Backward of the token embedding without atomics: the rows of dy are grouped
// by token id on the host (a counting sort), each token's list cut into
// segments of at most 32 rows (src/ops/embedding_backward.ts).
//
//   segment_sums: partial[s, c] = Σ_{i in segment s} dy[order[i], c]
//                 (bindings 1 = dy [B·T, C], 2 = order, 3 = seg_start, 4 = partial)
//   token_sums:   dwte[v, c] += Σ_{s in token v's segments} partial[s, c]
//                 (bindings 1 = partial, 2 = vocab_seg, 3 = dwte [V, C])
//
// Columns count lanes: one value (slot vecType f32) or four (vec4f, when C
// is a multiple of 4). One invocation per (segment, lane) and per (token,
// lane), PER of them per invocation, WG apart (lib/lanes.wgsl), so
// neighbouring invocations take neighbouring lanes of one row. Every sum
// runs in order: the same bits every run.

{{include lanes}}

alias V = {{vecType}};
const WG: u32 = {{workgroupSize}}u;
const PER: u32 = {{perInvocation}}u;

struct Params {
  count: u32, // segments (segment_sums) or V (token_sums)
  cols: u32,  // lanes per row
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> dy: array<V>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read> seg_start: array<u32>;
@group(0) @binding(4) var<storage, read_write> partial_out: array<V>;

@compute @workgroup_size(WG)
fn segment_sums(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  for (var k = 0u; k < PER; k++) {
    let i = lane(wid, nwg, lid, k);
    if (i >= p.count * p.cols) {
      return;
    }
    let s = i / p.cols;
    let c = i % p.cols;
    var acc = V(0.0);
    for (var j = seg_start[s]; j < seg_start[s + 1u]; j++) {
      acc += dy[order[j] * p.cols + c];
    }
    partial_out[i] = acc;
  }
}

@group(0) @binding(1) var<storage, read> partial_in: array<V>;
@group(0) @binding(2) var<storage, read> vocab_seg: array<u32>;
@group(0) @binding(3) var<storage, read_write> dwte: array<V>;

@compute @workgroup_size(WG)
fn token_sums(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  for (var k = 0u; k < PER; k++) {
    let i = lane(wid, nwg, lid, k);
    if (i >= p.count * p.cols) {
      return;
    }
    let v = i / p.cols;
    let c = i % p.cols;
    let first = vocab_seg[v];
    let last = vocab_seg[v + 1u];
    if (first != last) { // a token absent from the batch keeps its gradient
      var acc = V(0.0);
      for (var s = first; s < last; s++) {
        acc += partial_in[s * p.cols + c];
      }
      dwte[i] += acc;
    }
  }
}
