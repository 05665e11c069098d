// The tile steps the two TSSA membership passes share (tssa_pi.wgsl and
// causal_tssa_pi.wgsl). A workgroup of WG threads walks its block of tokens
// in tiles of TILE tokens; thread i owns the columns c = j·WG + i, j < COLS.
// Per tile, the kernel writes each token's normalised squares to `tile`
// (its own normalisation) and then, between barriers:
//   logits[t·HEADS + h] = temp[h]·(tile_head_sum(t, h) + its own bias term);
//   tile_memberships: Pi = the softmax over heads, into `pis` and `pi`;
//   tile_accumulate:  num[j] += Σ_t Pi[t, h(c)]·w[t, c]², den[j] += Σ_t Pi[t, h(c)].
//
// Contract with the including kernel: it declares the consts DIM, HEADS,
// HEAD_DIM, WG, COLS (⌈DIM / WG⌉), TILE and PAIRS (TILE·HEADS), and the
// storage array `pi` ([B·N, HEADS], read_write). The snippet declares the
// workgroup arrays `tile` (TILE·DIM), `logits` and `pis` (PAIRS each).

{{include softmax_heads}}

var<workgroup> tile: array<f32, TILE * DIM>;   // token t's column c at t·DIM + c
var<workgroup> logits: array<f32, PAIRS>;      // pair (t, h) at t·HEADS + h
var<workgroup> pis: array<f32, PAIRS>;

// Σ_k tile[t, h·HEAD_DIM + k]: head h's part of tile token t.
fn tile_head_sum(t: u32, h: u32) -> f32 {
  var s = 0.0;
  for (var k = 0u; k < HEAD_DIM; k++) {
    s += tile[t * DIM + h * HEAD_DIM + k];
  }
  return s;
}

// Pi of every (token, head) pair of the tile from `logits` into `pis`, and
// into pi for the tile's `tn` real tokens, the first at flat row `row0`.
fn tile_memberships(lid: u32, row0: u32, tn: u32) {
  for (var q = lid; q < PAIRS; q += WG) {
    let t = q / HEADS;
    let v = softmax_heads_at(t * HEADS, q % HEADS);
    pis[q] = v;
    if (t < tn) {
      pi[(row0 + t) * HEADS + q % HEADS] = v;
    }
  }
}

// Add the tile's `tn` tokens to the thread's Pi-weighted sums, with
// sq[j·TILE + t] = w[t, c]² of its columns.
fn tile_accumulate(
  lid: u32,
  tn: u32,
  sq: ptr<function, array<f32, COLS * TILE>>,
  num: ptr<function, array<f32, COLS>>,
  den: ptr<function, array<f32, COLS>>,
) {
  for (var j = 0u; j < COLS; j++) {
    let c = j * WG + lid;
    if (c < DIM) {
      let h = c / HEAD_DIM;
      for (var t = 0u; t < TILE; t++) {
        if (t < tn) {
          let v = pis[t * HEADS + h];
          (*num)[j] += v * (*sq)[j * TILE + t];
          (*den)[j] += v;
        }
      }
    }
  }
}
