#!/usr/bin/env bash
# Per-call time of one decode-size block-dot layer compiled ahead of time
# (`lowbit compile --emit so --cpu native`), two lowbit binaries
# alternating in the same minutes (BENCHMARKS.md "session 5 (aotdot
# helper)").
#
#   scripts/bench_aot_blockdot.sh OLD_LOWBIT NEW_LOWBIT [ROUNDS] [N]
#
# Models: one MatMul of x [N, 14336] (default N = 8) by a 14336 x 4096
# weight (m = 4096, k = 14336), `q4_0` (i4 codes) and `q8_0` (i8), f16
# scales per 32-block, after `lowbit opt --passes=quantize-activations`
# (the block-dot kernel; the driver quantizes the activations). Each run:
# 5 warm-up calls, then CALLS timed calls (clock_gettime around the call
# only), each after reading a FLUSH_MB MiB buffer (default 512) so that
# the weights (29 or 58 MiB) come from DRAM, not the cache (as `lowbit
# bench gemm` rotates its weight copies; FLUSH_MB=0: back-to-back calls,
# the weights as cached as the last call left them); a row is the median over ROUNDS runs of each run's
# median, and `same` says whether both libraries' outputs hash alike.
# Everything is built in a temporary directory, removed at the end.
set -euo pipefail
old=$(realpath "$1") new=$(realpath "$2") rounds=${3:-5} n=${4:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
dir=$(mktemp -d /tmp/lowbit-aot-blockdot.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
# Building runs in an autogroup of its own at nice 19 (it yields to
# other sessions' timings); the timing runs at the caller's priority.
low() { setsid -w bash -c 'echo 19 > /proc/self/autogroup; exec nice -n 19 "$@"' _ "$@"; }

# The timing harness: scripts/aot_time.c.

# One layer x [N, K] @ dequantize(W [K, M], f32 scales per 32-block).
cat > make.py <<'EOF'
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper
out, bits, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
k, m, b = 14336, 4096, 32
rng = np.random.default_rng(0)
if bits == 4:
    codes = rng.integers(-8, 8, size=(k, m), dtype=np.int8)
    flat = (codes.reshape(-1) & 0xF).astype(np.uint8)
    raw = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()
    w = helper.make_tensor("w", TensorProto.INT4, [k, m], raw, raw=True)
else:
    codes = rng.integers(-128, 128, size=(k, m), dtype=np.int8)
    w = helper.make_tensor("w", TensorProto.INT8, [k, m], codes.tobytes(), raw=True)
s = rng.uniform(0.001, 0.01, size=(k // b, m)).astype(np.float32)
st = helper.make_tensor("s", TensorProto.FLOAT, [k // b, m], s.tobytes(), raw=True)
nodes = [helper.make_node("DequantizeLinear", ["w", "s"], ["wd"], axis=0, block_size=b, name="dq"),
         helper.make_node("MatMul", ["x", "wd"], ["y"], name="mm")]
g = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, k])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, m])], [w, st])
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), out)
EOF

# The weight scales as f16: scripts/lbir_scales_f16.py.

models="q4_0 q8_0"
for q in $models; do
  bits=4
  [ $q = q8_0 ] && bits=8
  low "$py" make.py "$q.onnx" $bits "$n"
  low "$new" compile "$q.onnx" -o "$q.lbir" --emit ir
  low "$new" opt "$q.lbir" --passes=quantize-activations -o "$q-q.lbir"
  low "$py" "$root/scripts/lbir_scales_f16.py" "$q-q.lbir" "$q-aq.lbir"
  rm "$q.onnx" "$q.lbir" "$q-q.lbir"
  for v in old new; do
    bin=$old
    [ $v = new ] && bin=$new
    mkdir -p "$v-$q"
    low "$bin" compile "$q-aq.lbir" -o "$v-$q/libbig.so" --emit so --cpu native
    low cc -O2 -I "$v-$q" "$root/scripts/aot_time.c" -L "$v-$q" -lbig -Wl,-rpath,"$dir/$v-$q" -o "$v-$q/time"
  done
  rm "$q-aq.lbir"
done
for q in $models; do
  echo "$q: new library's AMX tile dots: $(objdump -d "new-$q/libbig.so" | grep -c 'tdpbs[su]d') / vpdpbusd: $(objdump -d "new-$q/libbig.so" | grep -c vpdpbusd); old: $(objdump -d "old-$q/libbig.so" | grep -c 'tdpbs[su]d') / $(objdump -d "old-$q/libbig.so" | grep -c vpdpbusd)"
done

# The timing runs, under the shared benchmark lock (one block of about a
# minute or two per call of this script).
cat > run.sh <<'EOF'
set -euo pipefail
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
calls=$CALLS
echo "load average before: $(cat /proc/loadavg)"
echo "flush between calls: $FLUSH_MB MiB"
echo "| model | n | threads | old us/call | new us/call | old/new | same |"
echo "|---|---|---|---|---|---|---|"
for q in $MODELS; do
  for t in 1 2; do
    o=() nn=() ho="" hn=""
    for _ in $(seq "$ROUNDS"); do
      read -r a ho < <("./old-$q/time" $t $calls $FLUSH_MB 5); o+=("$a")
      read -r b hn < <("./new-$q/time" $t $calls $FLUSH_MB 5); nn+=("$b")
    done
    mo=$(printf '%s\n' "${o[@]}" | median) mn=$(printf '%s\n' "${nn[@]}" | median)
    echo "| $q | $N | $t | $mo | $mn | $(awk "BEGIN {printf \"%.2f\", $mo / $mn}") | $([ "$ho" = "$hn" ] && echo yes || echo NO) |"
  done
done
echo "load average after: $(cat /proc/loadavg)"
EOF
FLUSH_MB=${FLUSH_MB:-512} N=$n CALLS=${CALLS:-30} MODELS="$models" ROUNDS=$rounds flock /tmp/lowbit-bench.lock bash run.sh
