// Strided row copy between batched row tensors:
//
//   dst[b, dst_row0 + r, c] = src[b · src_batch_rows + src_row0 + r, c]
//   for b < batches, r < rows, c < cols.
//
// `src_batch_rows` 0 broadcasts one block of rows to every batch (the class
// token); the other uses are concatenation along rows and picking one row
// (the class token's) out of every batch.
//
// Columns count lanes: one value (slot vecType f32) or four (vec4f, when
// C is a multiple of 4); each invocation copies PER lanes, WG apart
// (lib/lanes.wgsl).
//
// Bindings: 1 = src, 2 = dst (read_write), both whole tensors.

{{include lanes}}

alias V = {{vecType}};
const WG: u32 = {{workgroupSize}}u;
const PER: u32 = {{perInvocation}}u;

struct Params {
  n: u32,              // batches · rows · cols (lanes)
  rows: u32,           // rows copied per batch
  cols: u32,           // lanes per row
  src_batch_rows: u32, // rows between batches in src (0: broadcast)
  src_row0: u32,       // first source row inside each batch
  dst_batch_rows: u32, // rows between batches in dst
  dst_row0: u32,       // first destination row inside each batch
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<V>;
@group(0) @binding(2) var<storage, read_write> dst: array<V>;

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
    let r = (i / params.cols) % params.rows;
    let b = i / (params.cols * params.rows);
    let s = (b * params.src_batch_rows + params.src_row0 + r) * params.cols + c;
    let d = (b * params.dst_batch_rows + params.dst_row0 + r) * params.cols + c;
    dst[d] = src[s];
  }
}
