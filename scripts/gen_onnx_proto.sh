#!/usr/bin/env bash
# Regenerates crates/lowbit-onnx/src/proto/onnx.rs from the onnx-ml.proto that
# ships with the `onnx` Python package in the workspace venv. onnx-ml.proto is
# the superset of onnx.proto (adds the ML map/sequence/opaque types) and is
# wire-compatible with it, so one binding reads every ONNX model.
#
# No system protoc is needed: a throwaway cargo project under $TMPDIR compiles
# the schema with `protox` (pure Rust) and emits Rust with `prost-build`.
# The .proto text itself is never copied into the repository.
#
# Usage: scripts/gen_onnx_proto.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-$root/.venv/bin/python}"
onnx_dir="$("$python" -c 'import onnx, os; print(os.path.dirname(onnx.__file__))')"
onnx_version="$("$python" -c 'import onnx; print(onnx.__version__)')"
proto="$onnx_dir/onnx-ml.proto"
[[ -f "$proto" ]] || { echo "gen_onnx_proto: $proto not found" >&2; exit 1; }

work="${TMPDIR:-/tmp}/lowbit-gen-onnx-proto"
mkdir -p "$work/src"
cat > "$work/Cargo.toml" <<'TOML'
[package]
name = "gen_onnx_proto"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
# Keep prost-build's major version in step with the `prost` runtime dependency
# of crates/lowbit-onnx.
prost-build = "0.14"
protox = "0.10"

[workspace]
TOML
cp "$root/scripts/gen_onnx_proto.rs" "$work/src/main.rs"

out="$root/crates/lowbit-onnx/src/proto/onnx.rs"
mkdir -p "$(dirname "$out")"
cargo run --quiet --manifest-path "$work/Cargo.toml" -- "$proto" "$out" "$onnx_version"
# Formatted like the rest of the crate, so `cargo fmt --check` stays clean.
rustfmt --edition 2021 "$out"
echo "wrote $out (from $proto)"
