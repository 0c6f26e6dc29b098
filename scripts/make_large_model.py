#!/usr/bin/env python3
"""A large int4 ONNX model for measuring lowbit's compile-time memory.

    make_large_model.py OUT.onnx [--layers L] [--dim D] [--block B]

Writes a stack of L blocked-int4 `DequantizeLinear -> MatMul -> Relu`
layers of D x D weights (block size B along K, f32 scales: ONNX's MatMul
needs both operands of one type and the input is f32; no zero points),
input `x: f32 [1, D]`, output `y`. The weights are random codes, so the file is about L * (D*D/2 + D*D/B*4) bytes; BENCHMARKS.md ("Memory")
measures `lowbit compile` / `lowbit run` on it with `/usr/bin/time -v`.
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--block", type=int, default=32)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    d, b = a.dim, a.block
    nodes, inits = [], []
    cur = "x"
    for i in range(a.layers):
        codes = rng.integers(-8, 8, size=(d, d), dtype=np.int8)
        # int4 initializer: two codes per byte, low nibble first (ONNX packing).
        flat = (codes.reshape(-1) & 0xF).astype(np.uint8)
        packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
        w = helper.make_tensor(f"w{i}", TensorProto.INT4, [d, d], packed.tobytes(), raw=True)
        s = rng.uniform(0.001, 0.01, size=(d // b, d)).astype(np.float32)
        st = helper.make_tensor(f"s{i}", TensorProto.FLOAT, [d // b, d], s.tobytes(), raw=True)
        inits += [w, st]
        nodes.append(helper.make_node("DequantizeLinear", [f"w{i}", f"s{i}"], [f"wd{i}"],
                                      axis=0, block_size=b, name=f"dq{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"wd{i}"], [f"mm{i}"], name=f"mm{i}"))
        out = "y" if i == a.layers - 1 else f"h{i}"
        nodes.append(helper.make_node("Relu", [f"mm{i}"], [out], name=f"relu{i}"))
        cur = out
    g = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, d])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, d])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.save(m, a.out)


if __name__ == "__main__":
    main()
