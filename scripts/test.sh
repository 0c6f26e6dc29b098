#!/usr/bin/env bash
# Run every lowbit test: cargo (nextest, or cargo test), doc tests, lit.
# Calls scripts/setup.sh first, so it works on a fresh machine.
# Every step runs even if an earlier one fails; exits non-zero if any failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/setup.sh"

passed=0
failed=0
failed_steps=()

step() {
    local name="$1"; shift
    echo
    echo "==> [$name] $*"
    if "$@"; then
        passed=$((passed + 1))
    else
        local rc=$?
        echo "==> [$name] FAILED (exit $rc)"
        failed=$((failed + 1))
        failed_steps+=("$name")
    fi
}

# 1. unit, integration and property tests
if cargo nextest --version >/dev/null 2>&1; then
    step cargo-tests cargo nextest run --workspace --no-tests=warn
else
    step cargo-tests cargo test --workspace
fi

# 2. doc tests (nextest does not run them)
step doc-tests cargo test --workspace --doc

# 3. the examples that check themselves: the library JIT (exits non-zero if
#    the kernel leaves its declared error bound or the cache misses) and the
#    numerics round trip
step examples bash -c 'cargo run -q -p lowbit-llvm --example jit_gemm && cargo run -q -p lowbit-numerics --example numerics_roundtrip >/dev/null'

# 4. lit tests (prefer Debian's LLVM lit; fall back to the venv's lit package)
LIT=""
for cand in /usr/lib/llvm-22/bin/lit /usr/bin/lit-22 "$ROOT/.venv/bin/lit"; do
    if [[ -x "$cand" ]] && "$cand" --version >/dev/null 2>&1; then
        LIT="$cand"
        break
    fi
done
if [[ -z "$LIT" ]]; then
    echo "==> [lit] no lit found"
    failed=$((failed + 1))
    failed_steps+=(lit)
elif [[ -z "$(find lit-tests -type d -name Output -prune -o -type f \( -name '*.lbir' -o -name '*.test' \) -print -quit)" ]]; then
    echo
    echo "==> [lit] no lit tests under lit-tests/ yet; skipped"
else
    step lit "$LIT" -sv lit-tests
fi

echo
if ((failed)); then
    echo "test.sh: $passed passed, $failed failed (${failed_steps[*]})"
    exit 1
fi
echo "test.sh: $passed passed, $failed failed"
