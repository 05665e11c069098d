#!/bin/sh
# Interleaved runs of tost and its PyTorch peer on the same workloads (tost, peer, tost,
# peer, ...), every output kept as JSON, then tost ÷ peer over the medians.
#
#   bench/peer/compare.sh [ROUNDS] [OUT_DIR] [WORKLOAD...]
#
# ROUNDS (default 3) runs of each side per workload (0: only compare what OUT_DIR holds);
# OUT_DIR (default runs/peer); WORKLOAD names from the list below (default: all). Run it
# from the repository root on a quiet machine. PYTHON picks the interpreter with PyTorch
# (default /usr/bin/python3). A workload one side cannot run leaves its outputs empty: the
# comparison lists the other side's records as unmatched.
set -u
ROUNDS=${1:-3}
OUT=${2:-runs/peer}
[ $# -gt 2 ] && shift 2 || set --
PY=${PYTHON:-/usr/bin/python3}
export OMP_WAIT_POLICY=PASSIVE DENO_WEBGPU_BACKEND=${DENO_WEBGPU_BACKEND:-vulkan}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} NO_COLOR=1
mkdir -p "$OUT"

# name: the flags both sides take
workloads() {
  cat <<'EOF'
ops --seq 256,1024 --repeats 3 --backward
alone --seq 4096,16384 --ops tssa,causal-tssa --repeats 3 --no-projections
linear --ops linear --repeats 5
small --train --preset small --steps 10
small-gpt --train --preset small-gpt --steps 10
nanogpt-cpu --train --config bench/peer/configs/nanogpt_cpu.json --steps 5
gpt-6x384 --train --config bench/peer/configs/gpt_6x384.json --steps 2
mnist --train --preset mnist --steps 5
eval --eval tests/fixtures/tost_vision_small.pth --repeats 5
model --model --images 64,128 --repeats 2
EOF
}

wanted() {
  [ $# -eq 0 ] && return 0
  for w in "$@"; do [ "$w" = "$NAME" ] && return 0; done
  return 1
}

workloads | while read -r NAME FLAGS; do
  wanted "$@" || continue
  r=1
  while [ "$r" -le "$ROUNDS" ]; do
    echo "== $NAME round $r: tost" >&2
    # shellcheck disable=SC2086
    deno run -A main.ts bench $FLAGS --json >"$OUT/$NAME.tost.$r.json" ||
      echo "warning: tost failed on $NAME (see above)" >&2
    echo "== $NAME round $r: peer" >&2
    # shellcheck disable=SC2086
    "$PY" bench/peer/peer.py $FLAGS --json >"$OUT/$NAME.peer.$r.json" ||
      echo "warning: the peer failed on $NAME (see above)" >&2
    r=$((r + 1))
  done
done

# The outputs of one side, in the order of the workloads above (empty files: failed runs).
list() {
  workloads | while read -r NAME _; do
    wanted "$@" || continue
    find "$OUT" -name "$NAME.$SIDE.*.json" -size +0 | sort
  done | paste -sd, -
}
TOST=$(SIDE=tost list "$@")
PEER=$(SIDE=peer list "$@")
deno run -A main.ts bench --from "$TOST" --compare "$PEER"
