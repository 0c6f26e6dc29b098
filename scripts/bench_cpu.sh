#!/usr/bin/env bash
# Runs the CPU backend's benchmark table (BENCHMARKS.md, "CPU backend") and
# prints it as Markdown: one row per workload with the median time, the
# figure of merit and the fraction of the roofline the same run measured.
#
#   scripts/bench_cpu.sh [LOWBIT_BINARY] [--threads T] [--quick]
#
# Each `lowbit bench gemm` run re-measures the DRAM bandwidth and the compute
# peak it compares against, so every row carries its own roofline. The load
# average before and after the table is printed: the figures are only as
# quiet as the machine was.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/lowbit
threads=2
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    *) bin="$1"; shift ;;
  esac
done
if [ ! -x "$bin" ]; then
  echo "bench_cpu.sh: $bin not found; build it with: cargo build --release -p lowbit-cli" >&2
  exit 1
fi
m=4096; k=14336
if [ "$quick" = 1 ]; then m=1024; k=4096; fi
workloads=(
  "q4_0-like n=1|--n 1 --weight i4 --group 32 --scale f16 --act f32"
  "q8_0-like n=1|--n 1 --weight i8 --group 32 --scale f16 --act f32"
  "q4_0-like n=8|--n 8 --weight i4 --group 32 --scale f16 --act f32"
  "q8_0-like n=8|--n 8 --weight i8 --group 32 --scale f16 --act f32"
  "q4_0 x q8_0 act-quant n=1 (opt-in)|--n 1 --weight i4 --group 32 --scale f16 --act f32 --act-quant i8:32"
  "q8_0 x q8_0 act-quant n=1 (opt-in)|--n 1 --weight i8 --group 32 --scale f16 --act f32 --act-quant i8:32"
  "q4_0 x q8_0 act-quant n=8 (opt-in)|--n 8 --weight i4 --group 32 --scale f16 --act f32 --act-quant i8:32"
  "q8_0 x q8_0 act-quant n=8 (opt-in)|--n 8 --weight i8 --group 32 --scale f16 --act f32 --act-quant i8:32"
  "MXFP4 n=1|--n 1 --weight f4E2M1FN --group 32 --scale f8E8M0FNU --act f32"
  "NVFP4 n=1|--n 1 --weight f4E2M1FN --group 16 --scale f8E4M3FN --tensor-scale 0.0125 --act f32"
  "fp8 E4M3 per-channel n=1|--n 1 --weight f8E4M3FN --scale f32 --act f32"
  "W8A8 n=512|--n 512 --weight i8 --act u8"
  "W4A8 n=512|--n 512 --weight i4 --act u8"
  "W8A8 n=512 AMX (fraction of the AMX peak)|--n 512 --weight i8 --act u8 --schedule amx"
  "W4A8 n=512 AMX (fraction of the AMX peak)|--n 512 --weight i4 --act u8 --schedule amx"
  "W1A1 n=512|--n 512 --weight b1 --act b1"
  "W2A2 bit-serial n=512|--n 512 --weight u2 --act u2 --schedule bit-serial"
  "W1A8 bit-serial n=512|--n 512 --weight b1 --act u8 --schedule bit-serial"
)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC'); m=$m k=$k threads=$threads"
echo
echo "| workload | median s | GOP/s | weight GB/s | DRAM probe GB/s | peak probe GOP/s | fraction of DRAM | fraction of peak | fraction of roofline | JIT ms |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for w in "${workloads[@]}"; do
  name="${w%%|*}"; args="${w#*|}"
  # shellcheck disable=SC2086
  if ! out=$("$bin" bench gemm --m $m --k $k $args --threads "$threads" --json 2>/tmp/bench_cpu.err); then
    echo "| $name | failed: $(head -1 /tmp/bench_cpu.err) | | | | | | | | |"
    continue
  fi
  python3 - "$name" "$out" <<'PY'
import json, sys
name, d = sys.argv[1], json.loads(sys.argv[2])
m = d["machine"]
rf = d.get("roofline_fraction")
f = lambda v, p=3: "—" if v is None else f"{v:.{p}f}"
print(f"| {name} | {d['seconds_median']:.5f} | {d['gflops']:.1f} | {d['weight_gbps']:.1f} | "
      f"{m['mem_gbps']:.1f} | {m['peak_gops']:.0f} ({m.get('peak_kind','')}) | {f(d['bandwidth_fraction'],2)} | "
      f"{f(d['compute_fraction'],2)} | {f(rf,2)} | {d.get('compile_ms',0):.0f} |")
PY
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
