# -*- Python -*-
# lit configuration for lowbit's CLI tests.  Run with: lit -sv lit-tests
# (scripts/test.sh does this after building target/debug/lowbit).
#
# Substitutions available in RUN lines:
#   lowbit     -> <repo>/target/debug/lowbit
#   FileCheck  -> /usr/lib/llvm-22/bin/FileCheck
#   not        -> /usr/lib/llvm-22/bin/not
#   llc        -> /usr/lib/llvm-22/bin/llc
#   %python    -> <repo>/.venv/bin/python (numpy, onnx, onnxruntime, ml_dtypes)
#   %ptxas     -> NVIDIA ptxas from the nvidia-cuda-nvcc-cu12 wheel; only when
#                 found, together with the lit feature `ptxas` (use
#                 `REQUIRES: ptxas` in tests that call it).
# Plus lit's built-ins: %s (test file), %t (temp path), %S, %T, %p ...
# Environment overrides: LOWBIT_BIN, LOWBIT_LLVM_BIN, LOWBIT_PTXAS.

import glob
import os
import shutil
import subprocess

import lit.formats

config.name = "lowbit"
# lit's internal shell (the default; the external one is deprecated in lit 23).
config.test_format = lit.formats.ShTest()
config.suffixes = [".lbir", ".test"]
config.excludes = ["Output", "lit.cfg.py", "lit.local.cfg", "README.md"]

config.test_source_root = os.path.dirname(os.path.abspath(__file__))
# Output/ goes under the test source tree (ignored by .gitignore).
config.test_exec_root = config.test_source_root

repo_root = os.path.dirname(config.test_source_root)

lowbit_bin = os.environ.get(
    "LOWBIT_BIN", os.path.join(repo_root, "target", "debug", "lowbit"))
llvm_bin = os.environ.get("LOWBIT_LLVM_BIN", "/usr/lib/llvm-22/bin")
venv_python = os.path.join(repo_root, ".venv", "bin", "python")


def find_ptxas():
    p = os.environ.get("LOWBIT_PTXAS")
    if p:
        return p if os.access(p, os.X_OK) else None
    for p in glob.glob(os.path.join(
            repo_root, ".venv", "lib", "python*", "site-packages",
            "nvidia", "cuda_nvcc", "bin", "ptxas")):
        if os.access(p, os.X_OK):
            return p
    if os.access(venv_python, os.X_OK):
        try:
            out = subprocess.run(
                [venv_python, "-c",
                 "import os, nvidia.cuda_nvcc as m; "
                 "print(os.path.join(list(m.__path__)[0], 'bin', 'ptxas'))"],
                capture_output=True, text=True, timeout=60)
            p = out.stdout.strip()
            if out.returncode == 0 and os.access(p, os.X_OK):
                return p
        except (OSError, subprocess.SubprocessError):
            pass
    return shutil.which("ptxas")


if not os.path.exists(lowbit_bin):
    lit_config.warning(
        "lowbit binary not found at %s; run `cargo build --workspace` "
        "(or scripts/setup.sh) first" % lowbit_bin)
if not os.path.exists(os.path.join(llvm_bin, "FileCheck")):
    lit_config.warning("FileCheck not found in %s (install llvm-22-tools)" % llvm_bin)

# Longest / most specific patterns first; the word-boundary regexes keep
# `lowbit` from matching inside paths such as `lowbit-ir` or `%s.lowbit`.
config.substitutions.append(("%python", venv_python))
ptxas = find_ptxas()
if ptxas:
    config.substitutions.append(("%ptxas", ptxas))
    config.available_features.add("ptxas")
# `amx`: the host CPU has AMX-INT8 (the CPU backend's amx schedule runs).
try:
    with open("/proc/cpuinfo") as info:
        if " amx_int8" in info.read():
            config.available_features.add("amx")
except OSError:
    pass
config.substitutions.append(
    (r"(?<![\w./%-])FileCheck(?![\w.-])", os.path.join(llvm_bin, "FileCheck")))
config.substitutions.append(
    (r"(?<![\w./%-])not(?![\w./-])", os.path.join(llvm_bin, "not")))
# llc: compiles `lowbit compile --emit llvm` output in the AOT tests.
config.substitutions.append(
    (r"(?<![\w./%-])llc(?![\w./-])", os.path.join(llvm_bin, "llc")))
config.substitutions.append(
    (r"(?<![\w./%-])lowbit(?![\w./-])", lowbit_bin))

# A predictable environment for the tool under test.
config.environment["LC_ALL"] = "C"
for var in ("RUST_BACKTRACE", "RUST_LOG", "HOME", "TMPDIR"):
    if var in os.environ:
        config.environment[var] = os.environ[var]
