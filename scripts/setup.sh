#!/usr/bin/env bash
# Prepare a machine (Debian 12, as root) to build and test lowbit.
# Idempotent and quick when everything is present:
#   1. Debian packages (LLVM/MLIR 22 dev files and tools), installed only if missing;
#   2. a project-local Python venv .venv with scripts/requirements.txt
#      (pip is skipped when .venv records the same requirements);
#   3. cargo build --workspace (debug profile).
# Environment:
#   LOWBIT_SETUP_SKIP_BUILD=1   skip step 3
#   LOWBIT_PYTHON=/path/python  interpreter used to create the venv (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. Debian packages
APT_PACKAGES=(llvm-22-dev llvm-22-tools libmlir-22-dev mlir-22-tools libpolly-22-dev libzstd-dev)
PYTHON="${LOWBIT_PYTHON:-python3}"

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
    # A bare Debian python3 cannot create venvs without python3-venv.
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        missing+=(python3 python3-venv)
        PYTHON=/usr/bin/python3
    elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
            die "need root to install: ${missing[*]}"
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        log "Debian packages present"
    fi
else
    log "warning: dpkg-query not found (not Debian?); skipping package check"
fi

# ---------------------------------------------------------------- 2. Python venv
VENV="$ROOT/.venv"
REQS="$ROOT/scripts/requirements.txt"
STAMP="$VENV/.lowbit-requirements.stamp"
[[ -f "$REQS" ]] || die "missing $REQS"

if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "no Python interpreter ($PYTHON) found"
    log "creating venv $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
    rm -f "$STAMP"
fi
VPY="$VENV/bin/python"

want_stamp="$(cat "$REQS"; "$VPY" -c 'import sys; print(sys.version)')"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]]; then
    log "Python requirements up to date"
else
    log "installing Python requirements from scripts/requirements.txt"
    "$VPY" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VPY" -m pip install -q --disable-pip-version-check -r "$REQS"
    printf '%s' "$want_stamp" > "$STAMP"
fi

# Verify imports; a failure invalidates the stamp so the next run reinstalls.
if ! "$VPY" - <<'PY'
import numpy, onnx, onnx.numpy_helper, onnxruntime, ml_dtypes, lit, nvidia.cuda_nvcc
PY
then
    rm -f "$STAMP"
    die "Python imports failed in $VENV; re-run scripts/setup.sh (or delete .venv)"
fi

PTXAS="$("$VPY" -c 'import os, nvidia.cuda_nvcc as m; print(os.path.join(list(m.__path__)[0], "bin", "ptxas"))')"
[[ -f "$PTXAS" ]] || die "ptxas not found at $PTXAS (nvidia-cuda-nvcc-cu12 wheel layout changed?)"
[[ -x "$PTXAS" ]] || chmod +x "$PTXAS"
"$PTXAS" --version >/dev/null || die "$PTXAS does not run"
log "ptxas: $PTXAS"

# ---------------------------------------------------------------- 3. cargo build
if [[ "${LOWBIT_SETUP_SKIP_BUILD:-0}" == "1" ]]; then
    log "skipping cargo build (LOWBIT_SETUP_SKIP_BUILD=1)"
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found; install the Rust toolchain (rustup) first"
    log "cargo build --workspace"
    cargo build --workspace
fi
log "done"
