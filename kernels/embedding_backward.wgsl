// Backward of the token embedding without atomics: the rows of dy are grouped
// by token id on the host (a counting sort), each token's list cut into
// segments of at most 32 rows (src/ops/embedding_backward.ts).
//
//   segment_sums: partial[s, c] = Σ_{i in segment s} dy[order[i], c]
//                 (bindings 1 = dy [B·T, C], 2 = order, 3 = seg_start, 4 = partial)
//   token_sums:   dwte[v, c] += Σ_{s in token v's segments} partial[s, c]
//                 (bindings 1 = partial, 2 = vocab_seg, 3 = dwte [V, C])
//
// One thread per (segment, channel) and per (token, channel); neighbouring
// threads take neighbouring channels, so loads of one row are coalesced.

{{include grid}}

struct Params {
  count: u32, // segments (segment_sums) or V (token_sums)
  cols: u32,  // C
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read> seg_start: array<u32>;
@group(0) @binding(4) var<storage, read_write> partial_out: array<f32>;

fn flat_index(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return flat_workgroup(wid, nwg) * 64u + lid;
}

@compute @workgroup_size(64)
fn segment_sums(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.count * p.cols) {
    return;
  }
  let s = i / p.cols;
  let c = i % p.cols;
  var acc = 0.0;
  for (var k = seg_start[s]; k < seg_start[s + 1u]; k++) {
    acc += dy[order[k] * p.cols + c];
  }
  partial_out[i] = acc;
}

@group(0) @binding(1) var<storage, read> partial_in: array<f32>;
@group(0) @binding(2) var<storage, read> vocab_seg: array<u32>;
@group(0) @binding(3) var<storage, read_write> dwte: array<f32>;

@compute @workgroup_size(64)
fn token_sums(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.count * p.cols) {
    return;
  }
  let v = i / p.cols;
  let c = i % p.cols;
  let first = vocab_seg[v];
  let last = vocab_seg[v + 1u];
  if (first == last) {
    return; // token absent from the batch: its gradient is unchanged
  }
  var acc = 0.0;
  for (var s = first; s < last; s++) {
    acc += partial_in[s * p.cols + c];
  }
  dwte[i] += acc;
}
