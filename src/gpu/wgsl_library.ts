/**
 * The shared WGSL snippets in `kernels/lib/`, by the name a kernel includes
 * them with (`{{include grid}}` includes `kernels/lib/grid.wgsl`).
 *
 * WGSL has no include of its own, and `deno compile`/`deno bundle` carry
 * only what the module graph imports, so every snippet is imported here as
 * text: adding a file to `kernels/lib/` means adding one line below (a test
 * checks that the directory and this table agree).
 *
 * @module
 */

import convTaps from "../../kernels/lib/conv_taps.wgsl" with { type: "text" };
import erf from "../../kernels/lib/erf.wgsl" with { type: "text" };
import grid from "../../kernels/lib/grid.wgsl" with { type: "text" };
import lanes from "../../kernels/lib/lanes.wgsl" with { type: "text" };
import reduce from "../../kernels/lib/reduce.wgsl" with { type: "text" };
import softmaxHeads from "../../kernels/lib/softmax_heads.wgsl" with { type: "text" };
import softmaxHeadsBackward from "../../kernels/lib/softmax_heads_backward.wgsl" with {
  type: "text",
};
import softmaxRow from "../../kernels/lib/softmax_row.wgsl" with { type: "text" };
import softmaxSerial from "../../kernels/lib/softmax_serial.wgsl" with { type: "text" };
import tokenBlocks from "../../kernels/lib/token_blocks.wgsl" with { type: "text" };
import tssaPiTile from "../../kernels/lib/tssa_pi_tile.wgsl" with { type: "text" };

/** Snippet sources by include name. */
export const WGSL_LIBRARY: Readonly<Record<string, string>> = Object.freeze({
  conv_taps: convTaps,
  erf,
  grid,
  lanes,
  reduce,
  softmax_heads: softmaxHeads,
  softmax_heads_backward: softmaxHeadsBackward,
  softmax_row: softmaxRow,
  softmax_serial: softmaxSerial,
  token_blocks: tokenBlocks,
  tssa_pi_tile: tssaPiTile,
});
