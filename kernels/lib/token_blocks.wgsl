// The token blocks of src/ops/_tssa_blocks.ts: a [B, N, C] tensor cut into
// blocks of up to block_rows consecutive tokens of one batch element,
// numbered g = b·blocks_per_batch + k, and bound in pieces of whole blocks
// (row r, flat over batches, at element elem_base + (r − row_base)·C of the
// binding).
//
// Contract with the including kernel: its uniform is `p`, a struct that
// starts with the fields blockParams() writes, in this order:
//   rows (N), block_rows, blocks_per_batch, first_block, block_count,
//   row_base, elem_base   (u32 each).

// Where one block lies.
struct TokenBlock {
  g: u32,      // global block index
  b: u32,      // batch element
  first: u32,  // its first token within the batch element
  count: u32,  // its tokens (block_rows, fewer in the last block)
  row0: u32,   // flat row b·N + first of its first token
}

// The block of this dispatch's `local_block`-th workgroup (or column of workgroups).
fn token_block(local_block: u32) -> TokenBlock {
  let g = p.first_block + local_block;
  let b = g / p.blocks_per_batch;
  let first = (g % p.blocks_per_batch) * p.block_rows;
  return TokenBlock(g, b, first, min(p.block_rows, p.rows - first), b * p.rows + first);
}

// The element of flat row `row`, column 0, inside the bound piece of a tensor of `cols` columns.
fn piece_element(row: u32, cols: u32) -> u32 {
  return p.elem_base + (row - p.row_base) * cols;
}
