#!/usr/bin/env python3
"""Writes the AOT example model: a two-layer quantized MLP in ONNX.

    x[2, 40] f32
      -> MatMul(DequantizeLinear(int8 W1[40, 48], per-column f32 scales, axis 1))
      -> Add(b1[48]) -> Relu
      -> MatMul(DequantizeLinear(int4 W2[48, 10], one f32 scale per 32 rows of k
                                 and output column, block_size 32))
      -> Add(b2[10]) -> y[2, 10]

k = 40 is not a multiple of the kernels' 32-element blocks, so the
compiled driver's padding path runs; W2 is int4 blocked with a partial last
block (48 = 32 + 16). Weights are seeded and deterministic.

Usage: make_aot_example.py OUT_DIR
           writes model.onnx, x.npy and x.f32 (raw little-endian) there;
       make_aot_example.py check OUT_DIR Y_TXT REF_PB
           compares the compiled library's output (one value per line) with
           the reference interpreter's, within the CPU kernels' declared
           bound (lowbit_llvm::codegen): per layer
           (k_pad/32 + 8) * 2^-24 * sum_j |x_j * w_j| for the kernel sum,
           plus one f32 ulp for the bias add, with layer 1's bound carried
           through ReLU (1-Lipschitz) and |W2| into layer 2. Prints
           "ok MAXERR" or "MISMATCH ..." (and exits 1).
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

K, H, C, BLOCK, N = 40, 48, 10, 32, 2


def weights(model):
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w1 = (init["q1"].astype(np.float64) * init["s1"]).astype(np.float32)
    s2 = np.repeat(init["s2"].astype(np.float64), BLOCK, axis=0)[:H]
    w2 = (init["q2"].astype(np.float64) * s2).astype(np.float32)
    return w1.astype(np.float64), init["b1"], w2.astype(np.float64), init["b2"]


def check(out, y_txt, ref_pb):
    w1, b1, w2, b2 = weights(onnx.load(os.path.join(out, "model.onnx")))
    x = np.load(os.path.join(out, "x.npy")).astype(np.float64)
    y = np.loadtxt(y_txt, dtype=np.float64).reshape(N, C)
    ref = numpy_helper.to_array(onnx.load_tensor(ref_pb)).astype(np.float64)
    eps = 2.0 ** -24
    kp1, kp2 = -(-K // 32) * 32, -(-H // 32) * 32
    h = np.maximum((x @ w1).astype(np.float32).astype(np.float64) + b1, 0)
    e1 = (kp1 / 32 + 8) * eps * (np.abs(x) @ np.abs(w1) + np.abs(b1)) \
        + np.spacing(np.abs(h).astype(np.float32)).astype(np.float64)
    e2 = (kp2 / 32 + 8) * eps * ((np.abs(h) + e1) @ np.abs(w2) + np.abs(b2)) \
        + e1 @ np.abs(w2) + 2 * np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    err = np.abs(y - ref)
    if y.shape != ref.shape or not np.all(err <= e2):
        print("MISMATCH max error", err.max(), "bound", e2.min())
        sys.exit(1)
    print("ok", y.shape, "max error %.3g within bound" % err.max())


def main():
    if sys.argv[1] == "check":
        check(*sys.argv[2:5])
        return
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261122)
    w1 = rng.standard_normal((K, H)) * 0.2
    s1 = (np.abs(w1).max(axis=0) / 127.0).astype(np.float32)
    q1 = np.clip(np.round(w1 / s1), -128, 127).astype(np.int8)
    w2 = rng.standard_normal((H, C)) * 0.2
    nb = -(-H // BLOCK)
    s2 = np.zeros((nb, C), np.float32)
    q2 = np.zeros((H, C), np.int8)
    for b in range(nb):
        rows = slice(b * BLOCK, min(H, (b + 1) * BLOCK))
        s2[b] = np.abs(w2[rows]).max(axis=0) / 7.0
        q2[rows] = np.clip(np.round(w2[rows] / s2[b]), -8, 7)
    b1 = (rng.standard_normal(H) * 0.1).astype(np.float32)
    b2 = (rng.standard_normal(C) * 0.1).astype(np.float32)
    inits = [
        numpy_helper.from_array(q1, "q1"),
        numpy_helper.from_array(s1, "s1"),
        helper.make_tensor("q2", TensorProto.INT4, [H, C], q2.reshape(-1).tolist()),
        numpy_helper.from_array(s2, "s2"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["q1", "s1"], ["w1"], name="dq1", axis=1),
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
        helper.make_node("Relu", ["h1"], ["h"], name="relu1"),
        helper.make_node("DequantizeLinear", ["q2", "s2"], ["w2"], name="dq2",
                         axis=0, block_size=BLOCK),
        helper.make_node("MatMul", ["h", "w2"], ["y0"], name="mm2"),
        helper.make_node("Add", ["y0", "b2"], ["y"], name="add2"),
    ]
    graph = helper.make_graph(
        nodes, "aot_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, C])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "model.onnx"))
    x = rng.standard_normal((N, K)).astype(np.float32)
    np.save(os.path.join(out, "x.npy"), x)
    x.astype("<f4").tofile(os.path.join(out, "x.f32"))


if __name__ == "__main__":
    main()
