#!/usr/bin/env python3
"""IR text round trip of every generated ONNX model (lit test
`lit-tests/onnx/ir-roundtrip-streamed.test`).

    check_ir_roundtrip.py LOWBIT OUTDIR

For every model of make_onnx_models.py: `LOWBIT compile NAME.onnx --emit ir`,
then `LOWBIT opt` of that text read from the file (parsed as a stream) and
from standard input (kept whole); both must print it back byte for byte.
Prints one summary line; exits non-zero naming the models that differ.
"""

import filecmp
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    tool, out = argv
    gen = os.path.join(HERE, "make_onnx_models.py")
    names = subprocess.run([sys.executable, gen, "list"], check=True,
                           capture_output=True, text=True).stdout.split()
    bad, with_hex = [], 0
    for name in names:
        subprocess.run([sys.executable, gen, "gen", out, name], check=True)
        base = os.path.join(out, name)
        text = base + ".lbir"
        subprocess.run([tool, "compile", base + ".onnx", "-o", text, "--emit", "ir"], check=True)
        subprocess.run([tool, "opt", text, "-o", base + ".file.lbir"], check=True)
        with open(text, "rb") as stdin:
            subprocess.run([tool, "opt", "-", "-o", base + ".stdin.lbir"], stdin=stdin, check=True)
        same = all(filecmp.cmp(text, base + suffix, shallow=False)
                   for suffix in (".file.lbir", ".stdin.lbir"))
        if not same:
            bad.append(name)
        with open(text) as f:
            with_hex += '"0x' in f.read()
    print(f"round trips {len(names)} differ {bad} with hex {with_hex}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
