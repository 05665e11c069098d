// The backward of the softmax over the heads of each token (TSSA's
// memberships Pi; the forward is softmax_heads.wgsl).
//
// Contract with the including kernel: it declares `const HEADS: u32`, the
// number of heads, and a storage array `pi` holding the forward's Pi as
// [rows, HEADS] (Pi of token `row`, head h at pi[row·HEADS + h]).

// In place, from ∂Pi to the gradient of the logits z (Pi = softmax(z)):
//   g[h] ← Pi[h]·(g[h] − Σ_h' Pi[h']·g[h'])   for the token `row`.
fn softmax_heads_backward(row: u32, g: ptr<function, array<f32, HEADS>>) {
  var dot = 0.0;
  for (var h = 0u; h < HEADS; h++) {
    dot += pi[row * HEADS + h] * (*g)[h];
  }
  for (var h = 0u; h < HEADS; h++) {
    (*g)[h] = pi[row * HEADS + h] * ((*g)[h] - dot);
  }
}
