#!/usr/bin/env bash
# Run lowbit's main job on the bundled example (after scripts/setup.sh):
#   1. optimise examples/mlp.lbir, printing the IR after every pass;
#   2. run it on examples/mlp_input.npy with the reference interpreter
#      and print the output tensor(s).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() { printf '[demo] error: %s\n' "$*" >&2; exit 1; }

LOWBIT="$ROOT/target/debug/lowbit"
VPY="$ROOT/.venv/bin/python"
MODEL=examples/mlp.lbir
INPUT=examples/mlp_input.npy

[[ -x "$LOWBIT" ]] || die "$LOWBIT not found; run scripts/setup.sh first"
[[ -x "$VPY" ]] || die "$VPY not found; run scripts/setup.sh first"
for f in "$MODEL" "$INPUT"; do
    [[ -f "$f" ]] || die "example file $f is missing"
done

OUT="$(mktemp -d "${TMPDIR:-/tmp}/lowbit-demo.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT

echo "==> lowbit opt $MODEL --passes='canonicalize,cse,dce' --print-ir-after-all --verify-each --elide-resources"
"$LOWBIT" opt "$MODEL" --passes='canonicalize,cse,dce' --print-ir-after-all --verify-each --elide-resources

echo
echo "==> lowbit run $MODEL --input x=$INPUT --backend interp --output-dir $OUT"
"$LOWBIT" run "$MODEL" --input "x=$INPUT" --backend interp --output-dir "$OUT"

shopt -s nullglob
outputs=("$OUT"/*.pb)
((${#outputs[@]})) || die "lowbit run wrote no output tensors to $OUT"

echo
"$VPY" - "${outputs[@]}" <<'PY'
import os, sys
import numpy as np
import onnx
from onnx import numpy_helper

np.set_printoptions(precision=6, suppress=True, linewidth=120)
for path in sys.argv[1:]:
    t = onnx.load_tensor(path)
    a = numpy_helper.to_array(t)
    name = t.name or os.path.splitext(os.path.basename(path))[0]
    print(f"output {name}: dtype={onnx.TensorProto.DataType.Name(t.data_type)} shape={list(a.shape)}")
    print(a)
PY
