#!/usr/bin/env bash
# Per-call time of models compiled ahead of time (`lowbit compile --emit
# so`) on 1 and 2 threads, two lowbit binaries alternating in the same
# minutes (BENCHMARKS.md "AOT: persistent thread pool").
#
#   scripts/bench_aot_threads.sh OLD_LOWBIT NEW_LOWBIT [ROUNDS]
#
# Models (scripts/make_large_model.py, blocked-int4 MatMul + ReLU layers,
# input 1 x D): d1024 (16 layers, D = 1024), d4096 (4 layers, D = 4096),
# f32 scales (the exact float kernel); and the same after
# `lowbit opt --passes=quantize-activations` with the scales turned into
# f16 (the q4_0 x q8_0 block-dot kernel; the driver quantizes the
# activations): d1024-aq, d4096-aq, and d1024n64-aq (input 64 x 1024).
# Each run: 20 warm-up calls, then CALLS timed calls (clock_gettime per
# call); a row is the median over ROUNDS runs of each run's median, and
# `same` says whether both libraries' outputs hash alike. Everything is
# built in a temporary directory, removed at the end.
set -euo pipefail
old=$(realpath "$1") new=$(realpath "$2") rounds=${3:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
dir=$(mktemp -d /tmp/lowbit-aot-threads.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir"

# The timing harness: scripts/aot_time.c.

# The weight scales as f16: scripts/lbir_scales_f16.py.

for spec in "d1024 16 1024" "d4096 4 4096"; do
  set -- $spec
  "$py" "$root/scripts/make_large_model.py" "$1.onnx" --layers "$2" --dim "$3"
  "$new" compile "$1.onnx" -o "$1.lbir" --emit ir
  "$new" opt "$1.lbir" --passes=quantize-activations -o "$1-q.lbir"
  "$py" "$root/scripts/lbir_scales_f16.py" "$1-q.lbir" "$1-aq.lbir"
  rm "$1.lbir" "$1-q.lbir"
done
sed -e 's/tensor<1x1024x/tensor<64x1024x/g' -e 's/tensor<1x32xf32>/tensor<64x32xf32>/g' \
  d1024-aq.lbir > d1024n64-aq.lbir
models="d1024 d1024-aq d4096 d4096-aq d1024n64-aq"
for m in $models; do
  src=$m.lbir
  [ -f "$src" ] || src=$m.onnx
  for v in old new; do
    bin=$old
    [ $v = new ] && bin=$new
    mkdir -p "$v-$m"
    "$bin" compile "$src" -o "$v-$m/libbig.so" --emit so
    cc -O2 -I "$v-$m" "$root/scripts/aot_time.c" -L "$v-$m" -lbig -Wl,-rpath,"$dir/$v-$m" -o "$v-$m/time"
  done
done

median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
echo "load average before: $(cat /proc/loadavg)"
echo "| model | threads | old us/call | new us/call | old/new | same |"
echo "|---|---|---|---|---|---|"
for m in $models; do
  calls=300
  [ $m = d1024n64-aq ] && calls=60
  for t in 1 2; do
    o=() n=() ho="" hn=""
    for _ in $(seq "$rounds"); do
      read -r a ho < <("./old-$m/time" $t $calls); o+=("$a")
      read -r b hn < <("./new-$m/time" $t $calls); n+=("$b")
    done
    mo=$(printf '%s\n' "${o[@]}" | median) mn=$(printf '%s\n' "${n[@]}" | median)
    echo "| $m | $t | $mo | $mn | $(awk "BEGIN {printf \"%.2f\", $mo / $mn}") | $([ "$ho" = "$hn" ] && echo yes || echo NO) |"
  done
done
echo "load average after: $(cat /proc/loadavg)"
