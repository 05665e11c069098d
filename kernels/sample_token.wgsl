// Draw the next token from one row of logits, on the GPU, as the host
// sampler `sampleToken` (src/model/generate.ts) does, so generation never
// waits for logits:
//
//   greedy (temperature 0): the first index of the largest logit;
//   otherwise keep the logits ≥ the k-th largest (ties kept; all when k = 0
//   or k ≥ L), p_i = exp((x_i − max) / temperature), and return the first i
//   (in index order) where Σ_{j ≤ i} p_j > u · Σ p, skipping p = 0.
//
// Only the first `limit` logits take part (L = limit). u is the seeded
// draw `draw` (SplitMix32: hash(seed + (draw + 1)·0x9e3779b9), its top 24
// bits / 2^24, exact in f32; the host's randomAt gives the same number).
// The k-th largest logit is found exactly by a radix select on the order-
// preserving integer keys of the floats (four passes of 8 bits, a histogram
// in workgroup memory each), so any vocabulary size works (GPT-2: 50257).
//
// One workgroup per draw. Thread t owns the contiguous chunk
// [t·chunk, (t+1)·chunk) of the row, so its partial sum is in index order
// and the final walk (thread 0: chunk sums, then inside one chunk) visits
// tokens in the host's order. Sums are f32 (the host's are float64): a draw
// within f32 rounding of a boundary between two tokens may differ.
//
// A non-finite logit stops sampling: the first one's index and bits go to
// `status` (with the draw, 1-based), and this and every later draw write
// token 0 (the host reports the error when it reads the status).
//
// Bindings: 1 = logits (the row starts at `base`), 2 = tokens (u32, the
// draw goes to tokens[out]), 3 = status (u32 [4]: draw + 1, index, bits, 0).

struct Params {
  limit: u32,       // L: logits [0, L) take part
  top_k: u32,       // 0: all
  temperature: f32, // 0: greedy
  seed: u32,
  draw: u32,        // index of this draw in the seed's sequence
  out: u32,         // where in tokens the draw is written
  base: u32,        // element offset of the row in logits
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(3) var<storage, read_write> status: array<u32>;

const WG: u32 = 256u; // also the number of histogram bins
const NONE: u32 = 0xffffffffu;

var<workgroup> red_val: array<f32, WG>;
var<workgroup> red_idx: array<u32, WG>;
var<workgroup> red_bad: array<u32, WG>;
var<workgroup> sums: array<f32, WG>;
var<workgroup> hist: array<atomic<u32>, WG>;
var<workgroup> chosen: vec2u; // radix select: key prefix, rank still to find
var<workgroup> stop: u32;

fn is_finite_bits(bits: u32) -> bool {
  return (bits & 0x7f800000u) != 0x7f800000u;
}

// Integer keys in the order of the floats (finite ones).
fn order_key(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn key_value(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

// SplitMix32's output for a counter (Math.imul arithmetic: u32 wraps).
fn draw_uniform(seed: u32, draw: u32) -> f32 {
  var z = seed + (draw + 1u) * 0x9e3779b9u;
  z = (z ^ (z >> 16u)) * 0x85ebca6bu;
  z = (z ^ (z >> 13u)) * 0xc2b2ae35u;
  z = z ^ (z >> 16u);
  return f32(z >> 8u) * (1.0 / 16777216.0);
}

// exp((x − m) / T) without overflow or 0/0: 0 below about e^-103.
fn weight(x: f32, m: f32, t: f32) -> f32 {
  let d = m - x;
  if (d <= 0.0) {
    return 1.0;
  }
  if (d > t * 103.0) {
    return 0.0;
  }
  return exp(-d / t);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let n = p.limit;
  let chunk = (n + WG - 1u) / WG;
  let begin = min(lid * chunk, n);
  let end = min(begin + chunk, n);

  // The largest logit (first index among equals) and the first non-finite one.
  var best = -3.4028235e38;
  var best_i = NONE;
  var bad_i = NONE;
  for (var i = begin; i < end; i++) {
    let x = logits[p.base + i];
    if (!is_finite_bits(bitcast<u32>(x))) {
      bad_i = min(bad_i, i);
    } else if (best_i == NONE || x > best) {
      best = x;
      best_i = i;
    }
  }
  // The largest value, the lowest index among equals (the host's rule).
  red_val[lid] = best;
  red_idx[lid] = best_i;
  red_bad[lid] = bad_i;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      let vi = red_idx[lid + s];
      let ui = red_idx[lid];
      let v = red_val[lid + s];
      let u = red_val[lid];
      if (vi != NONE && (ui == NONE || v > u || (v == u && vi < ui))) {
        red_val[lid] = v;
        red_idx[lid] = vi;
      }
      red_bad[lid] = min(red_bad[lid], red_bad[lid + s]);
    }
    workgroupBarrier();
  }
  let m = red_val[0];
  let argmax = red_idx[0];
  if (lid == 0u) {
    let first_bad = red_bad[0];
    let failed = status[0] != 0u;
    if (!failed && first_bad != NONE) {
      status[0] = p.draw + 1u;
      status[1] = first_bad;
      status[2] = bitcast<u32>(logits[p.base + first_bad]);
    }
    stop = select(0u, 1u, failed || first_bad != NONE);
  }
  if (workgroupUniformLoad(&stop) != 0u) {
    if (lid == 0u) {
      tokens[p.out] = 0u;
    }
    return;
  }
  if (p.temperature == 0.0) {
    if (lid == 0u) {
      tokens[p.out] = argmax;
    }
    return;
  }

  // The k-th largest logit: radix select, 8 bits of the key per pass.
  var threshold = -3.4028235e38;
  if (p.top_k > 0u && p.top_k < n) {
    var prefix = 0u;
    var mask = 0u;
    var rank = p.top_k; // the rank-th largest among the keys matching prefix
    for (var round = 0u; round < 4u; round++) {
      let shift = 24u - 8u * round;
      atomicStore(&hist[lid], 0u);
      workgroupBarrier();
      for (var i = begin; i < end; i++) {
        let k = order_key(logits[p.base + i]);
        if ((k & mask) == prefix) {
          atomicAdd(&hist[(k >> shift) & 255u], 1u);
        }
      }
      workgroupBarrier();
      if (lid == 0u) {
        var above = 0u;
        var bin = 0u;
        for (var b = 255i; b >= 0i; b--) {
          let c = atomicLoad(&hist[u32(b)]);
          if (above + c >= rank) {
            bin = u32(b);
            break;
          }
          above += c;
        }
        chosen = vec2u(prefix | (bin << shift), rank - above);
      }
      workgroupBarrier();
      prefix = chosen.x;
      rank = chosen.y;
      mask = mask | (255u << shift);
      workgroupBarrier();
    }
    threshold = key_value(prefix);
  }

  // Each chunk's weight, in index order.
  let t = p.temperature;
  var s = 0.0;
  for (var i = begin; i < end; i++) {
    let x = logits[p.base + i];
    if (x >= threshold) {
      s += weight(x, m, t);
    }
  }
  sums[lid] = s;
  workgroupBarrier();
  if (lid != 0u) {
    return;
  }
  var total = 0.0;
  for (var c = 0u; c < WG; c++) {
    total += sums[c];
  }
  var r = draw_uniform(p.seed, p.draw) * total;
  var token = argmax; // r at the rounding error past the end, as the host does
  for (var c = 0u; c < WG; c++) {
    if (r - sums[c] >= 0.0) {
      r -= sums[c];
      continue;
    }
    // Inside chunk c; its last kept token if rounding walks past its end.
    let b = min(c * chunk, n);
    let e = min(b + chunk, n);
    for (var i = b; i < e; i++) {
      let x = logits[p.base + i];
      if (x < threshold) {
        continue;
      }
      let w = weight(x, m, t);
      if (w == 0.0) {
        continue;
      }
      token = i;
      r -= w;
      if (r < 0.0) {
        break;
      }
    }
    break;
  }
  tokens[p.out] = token;
}
