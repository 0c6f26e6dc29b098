"""Turns the weight scales of a `quantize-activations` .lbir into f16.

Used by scripts/bench_aot_threads.sh and scripts/bench_aot_blockdot.sh:
the block-dot kernel takes f16 scales, the ONNX models those scripts make
carry f32 ones. Converted: every f32 constant of shape (K/32) x M (its two
dimensions differ, unlike the square weights of the d1024/d4096 models),
its dense_resource bytes, and the scale type of each `dequantize` whose
scale is one of those constants (not the activations' own dequantize).

    python scripts/lbir_scales_f16.py IN.lbir OUT.lbir
"""
import re
import sys

import numpy as np

scales, values, out = set(), set(), []
for line in open(sys.argv[1]).read().split("\n"):
    m = re.match(r"\s*(%\d+) = constant dense_resource<(r\d+)> : tensor<(\d+)x(\d+)xf32>", line)
    if m and m.group(3) != m.group(4):
        values.add(m.group(1))
        scales.add(m.group(2))
        line = line.replace("xf32>", "xf16>")
    m = re.match(r"\s*%\d+ = dequantize %\d+, (%\d+)", line)
    if m and m.group(1) in values:
        # The scale operand's type is the f32 type followed by ")".
        line = re.sub(r"tensor<(\d+)x(\d+)xf32>\)", lambda t: t.group(0).replace("xf32", "xf16"), line)
    m = re.match(r'(\s*)(r\d+): "0x([0-9A-F]+)"(,?)$', line)
    if m and m.group(2) in scales:
        h = np.frombuffer(bytes.fromhex(m.group(3)), dtype="<f4").astype("<f2").tobytes().hex().upper()
        line = f'{m.group(1)}{m.group(2)}: "0x{h}"{m.group(4)}'
    out.append(line)
open(sys.argv[2], "w").write("\n".join(out))
