#!/usr/bin/env python3
"""Small ONNX models for lowbit's import tests, with inputs and references.

    make_onnx_models.py gen OUTDIR NAME      write OUTDIR/NAME.onnx, the inputs
                                             OUTDIR/NAME.in/<input>.pb and the
                                             reference outputs OUTDIR/NAME.ref/<output>.pb
    make_onnx_models.py compare REF GOT [--atol A] [--rtol R]
                                             compare every REF/*.pb with GOT/*.pb
    make_onnx_models.py list                 the model names

References come from onnxruntime (graph optimizations off, so it runs each
operator as the spec defines it) unless a model says otherwise: for
operators onnxruntime cannot run (float4 weights with E8M0 scales), the
reference is computed with numpy/ml_dtypes in float64 from the spec's formula.
Inputs are seeded, so every run writes the same files. Nothing here is
checked in: the lit tests call this script into a temporary directory.

`compare` decodes both sides to float64 (integers exactly) and requires
|got - ref| <= atol + rtol * |ref| per element, NaN where the reference is
NaN, and equal element types and shapes; it prints the worst element.
"""

import os
import sys

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21


def rng(seed):
    return np.random.default_rng(seed)


def init(name, arr, dtype=None):
    if dtype is None:
        return numpy_helper.from_array(np.asarray(arr), name)
    # Sub-byte and float8/float4 tensors: make_tensor packs them per the spec.
    arr = np.asarray(arr)
    return helper.make_tensor(name, dtype, arr.shape, arr.flatten().tolist())


def model(nodes, inputs, outputs, inits, opset=OPSET, ms=False):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    imports = [helper.make_opsetid("", opset)]
    if ms:
        imports.append(helper.make_opsetid("com.microsoft", 1))
    m = helper.make_model(graph, opset_imports=imports)
    m.ir_version = 10
    return m


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


F = TensorProto.FLOAT

# Each builder returns (model, {input name: array}, reference or None).
# A reference of None means "run onnxruntime".


def mlp():
    r = rng(1)
    w1 = r.standard_normal((8, 16)).astype(np.float32)
    b1 = r.standard_normal(16).astype(np.float32)
    w2 = r.standard_normal((4, 16)).astype(np.float32)
    b2 = r.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="/fc1/MatMul"),
        helper.make_node("Add", ["h", "b1"], ["/fc1/Add_output_0"], name="/fc1/Add"),
        helper.make_node("Relu", ["/fc1/Add_output_0"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], name="fc2", transB=1, alpha=0.5),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    m = model(nodes, [vi("x", F, [3, 8])],
              [vi("probs", F, [3, 4]), vi("logits", F, [3, 4])],
              [init("w1", w1), init("b1", b1), init("w2", w2), init("b2", b2)])
    return m, {"x": r.standard_normal((3, 8)).astype(np.float32)}, None


def w8a8_qdq():
    r = rng(2)
    w1 = r.integers(-127, 128, (16, 32)).astype(np.int8)
    s1 = (r.random(32) * 0.01 + 0.001).astype(np.float32)
    w2 = r.integers(-127, 128, (32, 8)).astype(np.int8)
    # Arbitrary activation scales: lowbit's quantize divides in f32 as
    # onnxruntime does, so the codes agree at ties too.
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w1", "s1"], ["w1d"], name="dq_w1", axis=1),
        helper.make_node("MatMul", ["xd", "w1d"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
        helper.make_node("Relu", ["hb"], ["hr"], name="relu1"),
        helper.make_node("QuantizeLinear", ["hr", "hs", "hz"], ["hq"], name="q_h"),
        helper.make_node("DequantizeLinear", ["hq", "hs", "hz"], ["hd"], name="dq_h"),
        helper.make_node("DequantizeLinear", ["w2", "s2"], ["w2d"], name="dq_w2"),
        helper.make_node("MatMul", ["hd", "w2d"], ["y"], name="mm2"),
    ]
    inits = [
        init("xs", np.float32(0.0371)), init("xz", np.uint8(128)),
        init("w1", w1), init("s1", s1), init("b1", r.standard_normal(32).astype(np.float32)),
        init("hs", np.float32(0.0573)), init("hz", np.uint8(0)),
        init("w2", w2), init("s2", np.float32(0.004)),
    ]
    m = model(nodes, [vi("x", F, [4, 16])], [vi("y", F, [4, 8])], inits)
    return m, {"x": (r.standard_normal((4, 16)) * 2).astype(np.float32)}, None


def w4_blocked():
    r = rng(3)
    k, n, block = 40, 8, 16  # 40 = 16 + 16 + 8: a ragged last block
    w = r.integers(-8, 8, (k, n))
    zp = r.integers(-8, 8, (3, n))
    zp[0, 0], zp[1, 1] = -8, 7  # zero points at the extremes
    s = (r.random((3, n)) * 0.1 + 0.01).astype(np.float32)
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"], name="dq_w",
                         axis=0, block_size=block),
        helper.make_node("MatMul", ["x", "wd"], ["y"], name="mm"),
    ]
    inits = [init("w", w, TensorProto.INT4), init("s", s), init("z", zp, TensorProto.INT4)]
    m = model(nodes, [vi("x", F, [2, k])], [vi("y", F, [2, n])], inits)
    return m, {"x": r.standard_normal((2, k)).astype(np.float32)}, None


def w4_uint4_per_axis():
    r = rng(4)
    w = r.integers(0, 16, (12, 6))
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"], name="dq", axis=1),
        helper.make_node("MatMul", ["x", "wd"], ["y"], name="mm"),
    ]
    inits = [init("w", w, TensorProto.UINT4),
             init("s", (r.random(6) * 0.1 + 0.01).astype(np.float32)),
             init("z", np.array([0, 15, 8, 7, 1, 3]), TensorProto.UINT4)]
    m = model(nodes, [vi("x", F, [3, 12])], [vi("y", F, [3, 6])], inits)
    return m, {"x": r.standard_normal((3, 12)).astype(np.float32)}, None


def fp8_weights():
    r = rng(5)
    w = (r.standard_normal((16, 8)) * 50).astype(ml_dtypes.float8_e4m3fn)
    w5 = (r.standard_normal((8, 4))).astype(ml_dtypes.float8_e5m2)
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "s"], ["wd"], name="dq_w", axis=1),
        helper.make_node("MatMul", ["x", "wd"], ["h"], name="mm1"),
        helper.make_node("DequantizeLinear", ["w5", "s5"], ["w5d"], name="dq_w5"),
        helper.make_node("MatMul", ["h", "w5d"], ["y"], name="mm2"),
    ]
    inits = [init("w", w.astype(np.float32), TensorProto.FLOAT8E4M3FN),
             init("s", (r.random(8) * 0.01 + 0.001).astype(np.float32)),
             init("w5", w5.astype(np.float32), TensorProto.FLOAT8E5M2),
             init("s5", np.float32(0.5))]
    m = model(nodes, [vi("x", F, [2, 16])], [vi("y", F, [2, 4])], inits)
    return m, {"x": r.standard_normal((2, 16)).astype(np.float32)}, None


def mxfp4():
    """MXFP4-style weights: float4e2m1 elements, one E8M0 scale per 32."""
    r = rng(6)
    k, n, block = 64, 8, 32
    vals = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float64)
    w = vals[r.integers(0, 8, (k, n))] * r.choice([-1.0, 1.0], (k, n))
    w[0, 0] = -0.0
    exps = r.integers(-4, 3, (k // block, n))
    scales = np.exp2(exps.astype(np.float64))
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "s"], ["wd"], name="dq_w", axis=0,
                         block_size=block, output_dtype=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "wd"], ["y"], name="mm"),
    ]
    inits = [init("w", w, TensorProto.FLOAT4E2M1),
             init("s", scales.astype(np.float32), TensorProto.FLOAT8E8M0)]
    m = model(nodes, [vi("x", F, [2, k])], [vi("y", F, [2, n])], inits, opset=25)
    x = r.standard_normal((2, k)).astype(np.float32)
    # Reference from the spec: y = x @ (w * scale[block]) in float64, rounded once.
    wd = w * np.repeat(scales, block, axis=0)
    ref = {"y": (x.astype(np.float64) @ wd).astype(np.float32)}
    return m, {"x": x}, ref


def pack_nibbles(codes, per_row_bytes):
    """Packs rows of 4-bit codes low nibble first, padding each row."""
    rows = []
    for row in codes:
        b = np.zeros(per_row_bytes, dtype=np.uint8)
        for i, c in enumerate(row):
            b[i // 2] |= np.uint8(int(c) << (4 * (i % 2)))
        rows.append(b)
    return np.stack(rows)


def matmulnbits(with_zp=True, k=40, seed=7, zp_kind="packed", g_idx=None):
    """MatMulNBits; zp_kind "packed" (uint8 nibbles) or "float" (the scales'
    type, integral or fractional values); g_idx "identity" (i / block_size)
    or "shuffled" (act-order: each row of K in a random group)."""
    r = rng(seed)
    n, block = 8, 16
    blocks = (k + block - 1) // block
    q = r.integers(0, 16, (n, blocks * block))
    q[:, k:] = 0  # padding past K
    scales = (r.random((n, blocks)) * 0.05 + 0.01).astype(np.float32)
    b = pack_nibbles(q, blocks * block // 2).reshape(n, blocks, block // 2)
    inputs = ["a", "b", "scales"]
    inits = [init("b", b), init("scales", scales.reshape(-1))]
    if with_zp and zp_kind == "packed":
        zp = r.integers(0, 16, (n, blocks))
        zp[0, 0], zp[-1, -1] = 0, 15
        inputs.append("zp")
        inits.append(init("zp", pack_nibbles(zp, (blocks + 1) // 2).reshape(-1)))
    elif with_zp:
        zp = r.integers(0, 16, (n, blocks)).astype(np.float32)
        if zp_kind == "float_frac":
            zp += r.random((n, blocks)).astype(np.float32)
        inputs.append("zp")
        inits.append(init("zp", zp.reshape(-1)))
    if g_idx is not None:
        g = np.arange(k, dtype=np.int32) // block
        if g_idx == "shuffled":
            g = r.integers(0, blocks, k).astype(np.int32)
        if not with_zp:
            inputs.append("")
        inputs.append("g_idx")
        inits.append(init("g_idx", g))
    node = helper.make_node("MatMulNBits", inputs, ["y"], name="mmnb", domain="com.microsoft",
                            K=k, N=n, bits=4, block_size=block)
    m = model([node], [vi("a", F, [1, 3, k])], [vi("y", F, [1, 3, n])], inits, ms=True)
    return m, {"a": r.standard_normal((1, 3, k)).astype(np.float32)}, None


def cast_weight():
    """int8 weights dequantized by hand, without DequantizeLinear. "w":
    Cast to float, Mul by a per-column scale, MatMul (lowbit imports it as a
    dequantize, so it stays quantized). "w2": Cast, Sub a fractional float
    zero point, Mul, MatMul (the weight becomes float at import; lowbit
    explain says so). "w3": Cast, Sub Cast(per-column uint8 zero points),
    Mul by one scale (a dequantize with zero points again)."""
    r = rng(21)
    nodes = [
        helper.make_node("Cast", ["w"], ["wf"], name="w_to_float", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["wf", "ws"], ["wd"], name="w_scale"),
        helper.make_node("MatMul", ["x", "wd"], ["h"], name="mm"),
        helper.make_node("Cast", ["w2"], ["w2f"], name="w2_to_float", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["w2f", "w2z"], ["w2c"], name="w2_zero"),
        helper.make_node("Mul", ["w2c", "w2s"], ["w2d"], name="w2_scale"),
        helper.make_node("MatMul", ["h", "w2d"], ["y"], name="mm2"),
        helper.make_node("Cast", ["w3"], ["w3f"], name="w3_to_float", to=TensorProto.FLOAT),
        helper.make_node("Cast", ["w3z"], ["w3zf"], name="w3z_to_float", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["w3f", "w3zf"], ["w3c"], name="w3_zero"),
        helper.make_node("Mul", ["w3s", "w3c"], ["w3d"], name="w3_scale"),
        helper.make_node("MatMul", ["x", "w3d"], ["y3"], name="mm3"),
    ]
    inits = [init("w", r.integers(-128, 128, (16, 8)).astype(np.int8)),
             init("ws", (r.random(8) * 0.02 + 0.005).astype(np.float32)),
             init("w2", r.integers(0, 256, (8, 4)).astype(np.uint8)),
             init("w2z", np.float32(127.5)),
             init("w2s", np.float32(0.01)),
             init("w3", r.integers(0, 256, (16, 5)).astype(np.uint8)),
             init("w3z", r.integers(100, 156, 5).astype(np.uint8)),
             init("w3s", np.float32(0.0125))]
    m = model(nodes, [vi("x", F, [3, 16])], [vi("y", F, [3, 4]), vi("y3", F, [3, 5])], inits)
    return m, {"x": r.standard_normal((3, 16)).astype(np.float32)}, None


def attention():
    """A quantized single-head-pair attention block with residual and LayerNorm."""
    r = rng(8)
    d, s, h = 16, 4, 2
    nodes, inits = [], []
    for name in ["q", "k", "v", "o"]:
        inits.append(init(f"w{name}", r.integers(-127, 128, (d, d)).astype(np.int8)))
        inits.append(init(f"s{name}", (r.random(d) * 0.004 + 0.001).astype(np.float32)))
        nodes.append(helper.make_node("DequantizeLinear", [f"w{name}", f"s{name}"],
                                      [f"w{name}d"], name=f"dq_{name}", axis=1))
    # Reshape targets built from Shape/Gather/Concat, as exporters write them.
    nodes += [
        helper.make_node("Shape", ["x"], ["xshape"], name="shape"),
        helper.make_node("Gather", ["xshape", "i0"], ["batch"], name="g0", axis=0),
        helper.make_node("Gather", ["xshape", "i1"], ["seq"], name="g1", axis=0),
        helper.make_node("Concat", ["batch", "seq", "heads"], ["split_shape"], name="cat", axis=0),
        helper.make_node("Concat", ["batch", "seq", "model_dim"], ["merge_shape"], name="cat2", axis=0),
    ]
    inits += [init("i0", np.array([0], np.int64)), init("i1", np.array([1], np.int64)),
              init("heads", np.array([h, d // h], np.int64)),
              init("model_dim", np.array([d], np.int64))]
    for name in ["q", "k", "v"]:
        nodes += [
            helper.make_node("MatMul", ["x", f"w{name}d"], [f"{name}p"], name=f"/attn/{name}_proj"),
            helper.make_node("Reshape", [f"{name}p", "split_shape"], [f"{name}r"], name=f"rs_{name}"),
            helper.make_node("Transpose", [f"{name}r"], [f"{name}t"], name=f"tr_{name}", perm=[0, 2, 1, 3]),
        ]
    nodes += [
        helper.make_node("Transpose", ["kt"], ["ktt"], name="tr_kt", perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["qt", "ktt"], ["scores"], name="qk"),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"], name="scale_mul"),
        helper.make_node("Softmax", ["scaled"], ["attn"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["attn", "vt"], ["ctx"], name="av"),
        helper.make_node("Transpose", ["ctx"], ["ctxt"], name="tr_ctx", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctxt", "merge_shape"], ["ctxm"], name="rs_ctx"),
        helper.make_node("MatMul", ["ctxm", "wod"], ["proj"], name="o_proj"),
        helper.make_node("Add", ["proj", "x"], ["res"], name="residual"),
        helper.make_node("LayerNormalization", ["res", "gamma", "beta"], ["y"], name="ln",
                         axis=-1, epsilon=1e-5),
    ]
    inits += [init("scale", np.float32(1 / np.sqrt(d // h))),
              init("gamma", (r.random(d) + 0.5).astype(np.float32)),
              init("beta", r.standard_normal(d).astype(np.float32))]
    m = model(nodes, [vi("x", F, [1, s, d])], [vi("y", F, [1, s, d])], inits)
    return m, {"x": r.standard_normal((1, s, d)).astype(np.float32)}, None


def dynamic_quant():
    """DynamicQuantizeLinear + MatMulInteger, the dynamic-quantization pattern."""
    r = rng(9)
    w = r.integers(-127, 128, (8, 6)).astype(np.int8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
        helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"], name="mmi"),
        helper.make_node("Cast", ["acc"], ["accf"], name="cast", to=F),
        helper.make_node("Mul", ["xs", "ws"], ["s"], name="mul_s"),
        helper.make_node("Mul", ["accf", "s"], ["y"], name="mul_y"),
    ]
    inits = [init("w", w), init("wz", np.int8(3)), init("ws", np.float32(0.02))]
    m = model(nodes, [vi("x", F, [5, 8])],
              [vi("y", F, [5, 6]), vi("xq", TensorProto.UINT8, [5, 8]),
               vi("xs", F, []), vi("xz", TensorProto.UINT8, [])], inits)
    return m, {"x": (r.standard_normal((5, 8)) * 3).astype(np.float32)}, None


def qlinear():
    r = rng(10)
    nodes = [
        helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"],
                         name="qlmm"),
        helper.make_node("Conv", ["img", "cw", "cb"], ["conv"], name="conv", pads=[1, 1, 1, 1],
                         strides=[2, 1]),
        helper.make_node("ConvInteger", ["qimg", "qcw", "qz", "qcz"], ["convi"], name="convi",
                         group=2),
    ]
    inits = [
        init("as", np.float32(0.05)), init("az", np.uint8(120)),
        init("b", r.integers(0, 256, (6, 5)).astype(np.uint8)),
        init("bs", np.float32(0.01)), init("bz", np.uint8(130)),
        init("ys", np.float32(0.2)), init("yz", np.uint8(100)),
        init("cw", r.standard_normal((3, 2, 3, 3)).astype(np.float32)),
        init("cb", r.standard_normal(3).astype(np.float32)),
        init("qcw", r.integers(0, 256, (4, 1, 2, 2)).astype(np.uint8)),
        init("qz", np.uint8(7)), init("qcz", np.uint8(128)),
    ]
    m = model(nodes,
              [vi("a", TensorProto.UINT8, [4, 6]), vi("img", F, [1, 2, 5, 5]),
               vi("qimg", TensorProto.UINT8, [1, 2, 4, 4])],
              [vi("y", TensorProto.UINT8, [4, 5]), vi("conv", F, [1, 3, 3, 5]),
               vi("convi", TensorProto.INT32, [1, 4, 3, 3])], inits)
    return m, {"a": r.integers(0, 256, (4, 6)).astype(np.uint8),
               "img": r.standard_normal((1, 2, 5, 5)).astype(np.float32),
               "qimg": r.integers(0, 256, (1, 2, 4, 4)).astype(np.uint8)}, None


def qlinear_ref(a, a_s, a_z, b, b_s, b_z, y_s, y_z):
    """QLinearMatMul as onnxruntime's CPU kernel computes it, with every
    scale and zero point already shaped to broadcast (a's [.., M, 1], b's
    [.., 1, N]): the exact int32 product, S = f32(f32(a_s * b_s) / y_s),
    then saturate(round_half_even(f32(acc) * S) + y_z), each step in f32."""
    acc = np.matmul(a.astype(np.int64) - np.asarray(a_z, np.int64),
                    b.astype(np.int64) - np.asarray(b_z, np.int64)).astype(np.int32)
    s = (np.float32(a_s) * np.float32(b_s)).astype(np.float32) / np.float32(y_s)
    x = acc.astype(np.float32) * s.astype(np.float32)
    info = np.iinfo(y_z.dtype)
    return np.clip(np.rint(x).astype(np.float64) + int(y_z), info.min, info.max).astype(y_z.dtype)


def qlinear_per_row():
    """QLinearMatMul with per-row a scales and zero points (the spec's [M]
    and [.., M, 1] forms) and per-column b ([N] and [1, N]). onnxruntime
    refuses per-row a, so the reference is qlinear_ref; it is first checked
    against onnxruntime, bit for bit, on the per-column model it can run."""
    r = rng(31)
    m, k, n = 5, 7, 4
    a_s = (r.random(m) * 0.03 + 0.02).astype(np.float32)
    a_z = r.integers(100, 156, m).astype(np.uint8)
    b = r.integers(0, 256, (k, n)).astype(np.uint8)
    b_s = (r.random(n) * 0.02 + 0.01).astype(np.float32)
    b_z = r.integers(100, 156, n).astype(np.uint8)
    y_s, y_z = np.float32(0.1), np.uint8(128)
    a2_s = (r.random((2, 3, 1)) * 0.03 + 0.02).astype(np.float32)
    a2_z = r.integers(-20, 20, (2, 3, 1)).astype(np.int8)
    b2 = r.integers(-128, 128, (k, n)).astype(np.int8)
    b2_s = (r.random((1, n)) * 0.02 + 0.01).astype(np.float32)
    b2_z = r.integers(-10, 10, (1, n)).astype(np.int8)
    y2_s, y2_z = np.float32(0.15), np.int8(-3)
    a = r.integers(0, 256, (m, k)).astype(np.uint8)
    a2 = r.integers(-128, 128, (2, 3, k)).astype(np.int8)

    def qlmm(name, ins, out):
        return helper.make_node("QLinearMatMul", ins, [out], name=name)

    # The reference function against onnxruntime, where it runs (a per
    # tensor): any difference in the f32 steps would show here.
    a_s0, a_z0 = np.float32(0.03), np.uint8(120)
    check = model([qlmm("check", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], "y")],
                  [vi("a", TensorProto.UINT8, [m, k])], [vi("y", TensorProto.UINT8, [m, n])],
                  [init("as", a_s0), init("az", a_z0), init("b", b), init("bs", b_s),
                   init("bz", b_z), init("ys", y_s), init("yz", y_z)])
    got = run_ort(check, {"a": a})["y"]
    want = qlinear_ref(a, a_s0, a_z0, b, b_s, b_z, y_s, y_z)
    assert np.array_equal(got, want), (got, want)

    nodes = [qlmm("qlmm_rows", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], "y"),
             qlmm("qlmm_batched", ["a2", "a2s", "a2z", "b2", "b2s", "b2z", "y2s", "y2z"], "y2")]
    inits = [init("as", a_s), init("az", a_z), init("b", b), init("bs", b_s), init("bz", b_z),
             init("ys", y_s), init("yz", y_z), init("a2s", a2_s), init("a2z", a2_z),
             init("b2", b2), init("b2s", b2_s), init("b2z", b2_z), init("y2s", y2_s),
             init("y2z", y2_z)]
    mdl = model(nodes, [vi("a", TensorProto.UINT8, [m, k]), vi("a2", TensorProto.INT8, [2, 3, k])],
                [vi("y", TensorProto.UINT8, [m, n]), vi("y2", TensorProto.INT8, [2, 3, n])], inits)
    ref = {"y": qlinear_ref(a, a_s.reshape(m, 1), a_z.reshape(m, 1), b, b_s, b_z, y_s, y_z),
           "y2": qlinear_ref(a2, a2_s, a2_z, b2, b2_s, b2_z, y2_s, y2_z)}
    return mdl, {"a": a, "a2": a2}, ref


def quant_edges():
    """QuantizeLinear/DequantizeLinear at ties, saturation, NaN/Inf, -0."""
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 1000, -1000, -0.0, 0.49999997,
                  126.5, 127.5, -128.5, 3.0, -3.0, 0.0], dtype=np.float32).reshape(2, 8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "one", "z8"], ["q_i8"], name="q_i8"),
        helper.make_node("QuantizeLinear", ["x", "one", "zu8"], ["q_u8"], name="q_u8"),
        helper.make_node("QuantizeLinear", ["x", "one", "z4"], ["q_i4"], name="q_i4"),
        helper.make_node("QuantizeLinear", ["x", "one", "zu4"], ["q_u4"], name="q_u4"),
        helper.make_node("QuantizeLinear", ["x", "pa", "pz"], ["q_axis"], name="q_axis", axis=0),
        helper.make_node("QuantizeLinear", ["x", "bs", "bz"], ["q_block"], name="q_block",
                         axis=1, block_size=3),
        # onnxruntime's Python API cannot return int4 tensors: compare them dequantized.
        helper.make_node("DequantizeLinear", ["q_i4", "one", "z4"], ["dq_i4"], name="dq_i4"),
        helper.make_node("DequantizeLinear", ["q_u4", "one"], ["dq_u4"], name="dq_u4"),
        helper.make_node("DequantizeLinear", ["q_block", "bs", "bz"], ["dq_block"], name="dq_block",
                         axis=1, block_size=3),
        helper.make_node("QuantizeLinear", ["x", "one", "zf8"], ["q_f8"], name="q_f8"),
        helper.make_node("QuantizeLinear", ["x", "one", "zf8"], ["q_f8_nosat"], name="q_f8_nosat",
                         saturate=0),
        helper.make_node("QuantizeLinear", ["x", "one", "zf5"], ["q_f5"], name="q_f5"),
        helper.make_node("DequantizeLinear", ["q_f8", "one"], ["dq_f8"], name="dq_f8"),
        # ... nor E5M2 ones.
        helper.make_node("Cast", ["q_f5"], ["q_f5_f"], name="q_f5_back", to=F),
    ]
    inits = [
        init("one", np.float32(1.0)),
        init("z8", np.int8(-128)), init("zu8", np.uint8(255)),
        init("z4", np.array(7), TensorProto.INT4), init("zu4", np.array(0), TensorProto.UINT4),
        init("pa", np.array([1.0, 0.25], np.float32)), init("pz", np.array([-128, 127], np.int8)),
        init("bs", np.array([[0.5, 2.0, 4.0], [1.0, 0.125, 3.0]], np.float32)),
        init("bz", np.array([[0, 255, 1], [128, 3, 200]], np.uint8)),
        init("zf8", np.array(0.0), TensorProto.FLOAT8E4M3FN),
        init("zf5", np.array(0.0), TensorProto.FLOAT8E5M2),
    ]
    i8, u8 = TensorProto.INT8, TensorProto.UINT8
    outs = [vi("q_i8", i8, [2, 8]), vi("q_u8", u8, [2, 8]), vi("dq_u4", F, [2, 8]),
            vi("q_axis", i8, [2, 8]),
            vi("q_block", u8, [2, 8]), vi("dq_i4", F, [2, 8]), vi("dq_block", F, [2, 8]),
            vi("q_f8", TensorProto.FLOAT8E4M3FN, [2, 8]),
            vi("q_f8_nosat", TensorProto.FLOAT8E4M3FN, [2, 8]),
            vi("q_f5_f", F, [2, 8]), vi("dq_f8", F, [2, 8])]
    m = model(nodes, [vi("x", F, [2, 8])], outs, inits)
    return m, {"x": x}, None


def ties_for(r, scale, lo, hi, zp):
    """f32 values whose f32 quotient by `scale` (broadcast) is often exactly a
    half-integer code: (k + 0.5) * scale rounded to f32, for codes k + zp in
    [lo, hi). Their float64 quotients are usually a hair off the tie, which
    is where a float64 division would pick the other code."""
    k = r.integers(lo, hi, np.shape(scale)) - zp
    return ((k + 0.5) * np.asarray(scale, np.float64)).astype(np.float32)


def quant_random():
    """QuantizeLinear with random, non-power-of-two scales: per tensor, per
    axis and blocked (ragged last block), to int8/uint8/int16/int4/uint4,
    float8 E4M3FN/E5M2, and from float16; half of each input sits on f32
    ties. Bit-exact against onnxruntime (its f32 division)."""
    r = rng(21)
    R, C, B = 6, 20, 8  # blocks of 8 along axis 1: 8 + 8 + 4
    nb = -(-C // B)
    st = np.float32(r.random() * 0.05 + 0.003)
    sa = (r.random(C) * 0.05 + 0.003).astype(np.float32)
    sb = (r.random((R, nb)) * 0.05 + 0.003).astype(np.float32)
    za = r.integers(0, 256, C).astype(np.uint8)
    zb = r.integers(-30000, 30000, (R, nb)).astype(np.int16)
    z4 = r.integers(-8, 8, C)
    zu4 = r.integers(0, 16, (R, nb))
    sbf = np.repeat(sb, B, axis=1)[:, :C]
    zbf = np.repeat(zb, B, axis=1)[:, :C].astype(np.int64)

    def mixed(scale_full, lo, hi, zp, spread):
        t = ties_for(r, np.broadcast_to(scale_full, (R, C)), lo, hi, zp)
        noise = (r.standard_normal((R, C)) * spread * scale_full).astype(np.float32)
        return np.where(r.random((R, C)) < 0.5, t, noise).astype(np.float32)

    x_t = mixed(st, -128, 127, 0, 60)
    x_a = mixed(sa, 0, 255, za.astype(np.int64), 60)
    x_b = mixed(sbf, -32768, 32767, zbf, 20000)
    x_4 = mixed(sa, -8, 7, z4, 5)
    x_u4 = mixed(sbf, 0, 15, np.repeat(zu4, B, axis=1)[:, :C], 5)
    # float8: f32 values whose f32 quotient by st is an E4M3 (resp. E5M2)
    # midpoint, and random ones.
    def fp8_mids(mt):
        v = np.arange(256, dtype=np.uint8).view(mt).astype(np.float64)
        v = np.unique(v[np.isfinite(v)])
        mids = (v[:-1] + v[1:]) / 2
        pick = r.choice(mids, (R, C))
        t = (pick * np.float64(st)).astype(np.float32)
        noise = (r.standard_normal((R, C)) * 100 * st).astype(np.float32)
        return np.where(r.random((R, C)) < 0.5, t, noise).astype(np.float32)
    x_f8 = fp8_mids(ml_dtypes.float8_e4m3fn)
    x_f5 = fp8_mids(ml_dtypes.float8_e5m2)
    # float16 data and scale: onnxruntime widens to f32 and divides there.
    sh = np.float16(0.007866)
    x_h = np.where(r.random((R, C)) < 0.5,
                   ((r.integers(-20000, 20000, (R, C)) + 0.5) * np.float64(sh)).astype(np.float16),
                   (r.standard_normal((R, C)) * 3000 * sh).astype(np.float16)).astype(np.float16)
    x_h[0, 0] = np.float16(86.9)  # 86.9 / 0.007866 is 11044.5 in f32, 11044.5005 in f64

    I4, U4 = TensorProto.INT4, TensorProto.UINT4
    nodes = [
        helper.make_node("QuantizeLinear", ["x_t", "st", "zt"], ["q_t"], name="q_tensor"),
        helper.make_node("QuantizeLinear", ["x_a", "sa", "za"], ["q_a"], name="q_axis", axis=1),
        helper.make_node("QuantizeLinear", ["x_b", "sb", "zb"], ["q_b"], name="q_block",
                         axis=1, block_size=B),
        helper.make_node("QuantizeLinear", ["x_4", "sa", "z4"], ["q_4"], name="q_int4", axis=1),
        helper.make_node("QuantizeLinear", ["x_u4", "sb", "zu4"], ["q_u4"], name="q_uint4",
                         axis=1, block_size=B),
        helper.make_node("QuantizeLinear", ["x_f8", "st", "zf8"], ["q_f8"], name="q_f8"),
        helper.make_node("QuantizeLinear", ["x_f5", "st", "zf5"], ["q_f5"], name="q_f5"),
        helper.make_node("QuantizeLinear", ["x_h", "sh", "zh"], ["q_h"], name="q_f16"),
        # onnxruntime cannot return int4 or E5M2 tensors: compare them as
        # floats (exact: scale 1, no zero point).
        helper.make_node("DequantizeLinear", ["q_4", "one"], ["d_4"], name="dq_int4"),
        helper.make_node("DequantizeLinear", ["q_u4", "one"], ["d_u4"], name="dq_uint4"),
        helper.make_node("Cast", ["q_f5"], ["c_f5"], name="cast_f5", to=F),
    ]
    inits = [
        init("st", st), init("zt", np.int8(0)),
        init("sa", sa), init("za", za), init("sb", sb), init("zb", zb),
        init("z4", z4, I4), init("zu4", zu4, U4),
        init("zf8", np.zeros(()), TensorProto.FLOAT8E4M3FN),
        init("zf5", np.zeros(()), TensorProto.FLOAT8E5M2),
        init("sh", sh), init("zh", np.int16(0)), init("one", np.float32(1.0)),
    ]
    H = TensorProto.FLOAT16
    ins = {"x_t": x_t, "x_a": x_a, "x_b": x_b, "x_4": x_4, "x_u4": x_u4, "x_f8": x_f8,
           "x_f5": x_f5, "x_h": x_h}
    m = model(nodes, [vi(k, H if k == "x_h" else F, [R, C]) for k in ins],
              [vi("q_t", TensorProto.INT8, [R, C]), vi("q_a", TensorProto.UINT8, [R, C]),
               vi("q_b", TensorProto.INT16, [R, C]), vi("d_4", F, [R, C]),
               vi("d_u4", F, [R, C]), vi("q_f8", TensorProto.FLOAT8E4M3FN, [R, C]),
               vi("c_f5", F, [R, C]), vi("q_h", TensorProto.INT16, [R, C])], inits)
    return m, ins, None


def dynamic_quant_ties():
    """DynamicQuantizeLinear on random data with values on f32 ties of the
    computed scale, on positive-only and negative-only data, and on an
    all-zero input (onnxruntime's scale is then 1)."""
    r = rng(22)
    n = 64
    lo, hi = np.float32(-3.7183), np.float32(5.1234)
    s = np.float32((hi - lo) / np.float32(255))  # onnxruntime's f32 scale
    zp = np.rint(-(lo / s))
    # Codes 1..253 keep the ties inside [lo, hi], so the scale stays s.
    x1 = ties_for(r, np.full(n, s), 1, 254, zp)
    x1[: n // 4] = np.clip(r.standard_normal(n // 4) * 2, lo, hi).astype(np.float32)
    x1[0], x1[1] = lo, hi
    x2 = np.abs(r.standard_normal(n) * 3).astype(np.float32)
    x3 = -np.abs(r.standard_normal(n) * 0.1).astype(np.float32)
    x4 = np.zeros(n, np.float32)
    nodes, outs = [], []
    ins = {"x1": x1, "x2": x2, "x3": x3, "x4": x4}
    for k in ins:
        nodes.append(helper.make_node("DynamicQuantizeLinear", [k], [f"{k}q", f"{k}s", f"{k}z"],
                                      name=f"dql_{k}"))
        outs += [vi(f"{k}q", TensorProto.UINT8, [n]), vi(f"{k}s", F, []),
                 vi(f"{k}z", TensorProto.UINT8, [])]
    m = model(nodes, [vi(k, F, [n]) for k in ins], outs, [])
    return m, ins, None


def cast_edges():
    """Cast per the spec's tables: float8 saturation, truncation, wrapping."""
    x = np.array([0.5, -0.5, 2.7, -2.7, 1e6, -1e6, np.inf, -np.inf, np.nan, -0.0,
                  448.0, 464.0, 57344.0, 1e-9, 100.4, -7.9], dtype=np.float32)
    ints = np.array([200, -200, 127, -129, 65535, 0, 1, -1], dtype=np.int32)
    nodes = [
        helper.make_node("Cast", ["x"], ["f8"], name="c_f8", to=TensorProto.FLOAT8E4M3FN),
        helper.make_node("Cast", ["x"], ["f8_nosat"], name="c_f8n", to=TensorProto.FLOAT8E4M3FN,
                         saturate=0),
        helper.make_node("Cast", ["x"], ["f8uz"], name="c_f8uz", to=TensorProto.FLOAT8E4M3FNUZ),
        helper.make_node("Cast", ["x"], ["f5"], name="c_f5", to=TensorProto.FLOAT8E5M2),
        helper.make_node("Cast", ["x"], ["f5_nosat"], name="c_f5n", to=TensorProto.FLOAT8E5M2,
                         saturate=0),
        helper.make_node("Cast", ["x"], ["f16"], name="c_f16", to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["x"], ["bf16"], name="c_bf16", to=TensorProto.BFLOAT16),
        helper.make_node("Cast", ["xs"], ["i8"], name="c_i8", to=TensorProto.INT8),
        helper.make_node("Cast", ["ints"], ["wrap_i8"], name="c_wrap", to=TensorProto.INT8),
        helper.make_node("Cast", ["ints"], ["wrap_u8"], name="c_wrapu", to=TensorProto.UINT8),
        helper.make_node("CastLike", ["ints", "x"], ["like"], name="c_like"),
        # onnxruntime's Python API cannot return E4M3FNUZ, E5M2 or BF16: compare
        # those cast back (exact for every finite value, inf and NaN).
        helper.make_node("Cast", ["f8uz"], ["f8uz_f"], name="c_back", to=F),
        helper.make_node("Cast", ["f5"], ["f5_f"], name="c_back5", to=F),
        helper.make_node("Cast", ["f5_nosat"], ["f5_nosat_f"], name="c_back5n", to=F),
        helper.make_node("Cast", ["bf16"], ["bf16_f"], name="c_backbf", to=F),
    ]
    m = model(nodes, [vi("x", F, [16]), vi("xs", F, [6]), vi("ints", TensorProto.INT32, [8])],
              [vi("f8", TensorProto.FLOAT8E4M3FN, [16]), vi("f8_nosat", TensorProto.FLOAT8E4M3FN, [16]),
               vi("f8uz_f", F, [16]), vi("f5_f", F, [16]),
               vi("f5_nosat_f", F, [16]), vi("f16", TensorProto.FLOAT16, [16]),
               vi("bf16_f", F, [16]), vi("i8", TensorProto.INT8, [6]),
               vi("wrap_i8", TensorProto.INT8, [8]), vi("wrap_u8", TensorProto.UINT8, [8]),
               vi("like", F, [8])], [])
    xs = np.array([2.7, -2.7, 0.9, -0.9, 127.9, -128.9], dtype=np.float32)
    return m, {"x": x, "xs": xs, "ints": ints}, None


def cast_bool():
    """Cast/CastLike to BOOL: nonzero (NaN and ±inf included) is true, ±0 false."""
    x = np.array([0.0, -0.0, 1e-45, -1e-45, 0.3, -0.3, 2.0, np.inf, -np.inf, np.nan,
                  -np.nan, 65504.0], dtype=np.float32)
    ints = np.array([0, 1, -1, 2147483647, -2147483648, 7], dtype=np.int32)
    i8 = np.array([0, -128, 127, -1, 1, 0], dtype=np.int8)
    u8 = np.array([0, 255, 1, 128, 0, 2], dtype=np.uint8)
    B = TensorProto.BOOL
    nodes = [
        helper.make_node("Cast", ["x"], ["xb"], name="c_fb", to=B),
        helper.make_node("Cast", ["x"], ["h"], name="c_h", to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["h"], ["hb"], name="c_hb", to=B),
        helper.make_node("Cast", ["ints"], ["ib"], name="c_ib", to=B),
        helper.make_node("Cast", ["i8"], ["i8b"], name="c_i8b", to=B),
        helper.make_node("CastLike", ["u8", "xb"], ["u8b"], name="c_u8b"),
        helper.make_node("Cast", ["xb"], ["back"], name="c_back", to=F),
    ]
    m = model(nodes, [vi("x", F, [12]), vi("ints", TensorProto.INT32, [6]),
                      vi("i8", TensorProto.INT8, [6]), vi("u8", TensorProto.UINT8, [6])],
              [vi("xb", B, [12]), vi("hb", B, [12]), vi("ib", B, [6]), vi("i8b", B, [6]),
               vi("u8b", B, [6]), vi("back", F, [12])], [])
    return m, {"x": x, "ints": ints, "i8": i8, "u8": u8}, None


def layernorm_stats():
    """LayerNormalization with its Mean and InvStdDev outputs (axis 1 and -1,
    one with InvStdDev alone)."""
    r = rng(17)
    x = (r.standard_normal((2, 3, 8)) * 3 + 1).astype(np.float32)
    gamma = r.standard_normal((3, 8)).astype(np.float32)
    beta = r.standard_normal((8,)).astype(np.float32)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b2"], ["y1", "m1", "s1"], name="ln1",
                         axis=1, epsilon=1e-3),
        helper.make_node("LayerNormalization", ["x", "b"], ["y2", "", "s2"], name="ln2",
                         axis=-1),
    ]
    inits = [init("g", gamma), init("b", beta), init("b2", np.tile(beta, (3, 1)))]
    m = model(nodes, [vi("x", F, [2, 3, 8])],
              [vi("y1", F, [2, 3, 8]), vi("m1", F, [2, 1, 1]), vi("s1", F, [2, 1, 1]),
               vi("y2", F, [2, 3, 8]), vi("s2", F, [2, 3, 1])], inits)
    return m, {"x": x}, None


def misc_ops():
    """Element-wise and shape ops on one input."""
    r = rng(11)
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"], name="id"),
        helper.make_node("Sigmoid", ["xi"], ["sig"], name="sig"),
        helper.make_node("Tanh", ["x"], ["tanh"], name="tanh"),
        helper.make_node("Erf", ["x"], ["erf"], name="erf"),
        helper.make_node("Neg", ["x"], ["neg"], name="neg"),
        helper.make_node("Mul", ["x", "x"], ["sq"], name="sq"),
        helper.make_node("Sqrt", ["sq"], ["abs"], name="sqrt"),
        helper.make_node("Pow", ["abs", "p"], ["pow"], name="pow"),
        helper.make_node("Div", ["x", "two"], ["half"], name="div"),
        helper.make_node("Sub", ["half", "x"], ["sub"], name="sub"),
        helper.make_node("Gelu", ["x"], ["gelu"], name="gelu"),
        helper.make_node("Gelu", ["x"], ["gelu_tanh"], name="gelu_t", approximate="tanh"),
        helper.make_node("LogSoftmax", ["x"], ["lsm"], name="lsm", axis=1),
        helper.make_node("RMSNormalization", ["x", "g"], ["rms"], name="rms", axis=-1, epsilon=1e-6),
        helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["sl"], name="slice"),
        helper.make_node("Unsqueeze", ["x", "uax"], ["un"], name="unsq"),
        helper.make_node("Squeeze", ["un", "uax"], ["sqz"], name="sqz"),
        helper.make_node("Concat", ["sqz", "x"], ["cat"], name="cat", axis=0),
        helper.make_node("Gather", ["cat", "gi"], ["gat"], name="gather", axis=1),
        helper.make_node("Expand", ["bias", "eshape"], ["exp"], name="expand"),
        helper.make_node("Constant", [], ["c"], name="const", value_floats=[1.0, -2.0, 3.0, 0.5, 0.0, 8.0]),
        helper.make_node("Add", ["exp", "c"], ["ec"], name="add_c"),
        helper.make_node("Flatten", ["un"], ["flat"], name="flatten", axis=2),
    ]
    inits = [init("p", np.float32(1.5)), init("two", np.float32(2.0)),
             init("g", (r.random(6) + 0.5).astype(np.float32)),
             init("st", np.array([-1, 1], np.int64)), init("en", np.array([-100, 100], np.int64)),
             init("ax", np.array([0, 1], np.int64)), init("sp", np.array([-1, 2], np.int64)),
             init("uax", np.array([1], np.int64)), init("gi", np.array([[5, 0], [-1, 2]], np.int64)),
             init("bias", r.standard_normal((1, 6)).astype(np.float32)),
             init("eshape", np.array([3, 1], np.int64))]
    outs = ["sig", "tanh", "erf", "neg", "pow", "sub", "gelu", "gelu_tanh", "lsm", "rms",
            "sl", "gat", "ec", "flat"]
    shapes = {"sl": [3, 3], "gat": [6, 2, 2], "ec": [3, 6], "flat": [3, 6]}
    m = model(nodes, [vi("x", F, [3, 6])], [vi(o, F, shapes.get(o, [3, 6])) for o in outs],
              inits, opset=23)
    return m, {"x": r.standard_normal((3, 6)).astype(np.float32)}, None


def quant_int2_fp4():
    """int2/uint2 and float4 E2M1 QuantizeLinear (opset 25), compared
    dequantized against the spec's formula in numpy (onnxruntime has no
    kernels for these types)."""
    x = np.array([0.5, 1.5, -0.5, -1.5, 2.5, -2.5, 7.0, -7.0,
                  0.25, 0.75, 2.5, 5.0, -5.0, 6.0, -0.0, 1.25], dtype=np.float32).reshape(2, 8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z2"], ["q2"], name="q_i2"),
        helper.make_node("DequantizeLinear", ["q2", "s", "z2"], ["d2"], name="dq_i2"),
        helper.make_node("QuantizeLinear", ["x", "s", "zu2"], ["qu2"], name="q_u2"),
        helper.make_node("DequantizeLinear", ["qu2", "s", "zu2"], ["du2"], name="dq_u2"),
        helper.make_node("QuantizeLinear", ["x", "s4", "zf4"], ["q4"], name="q_f4"),
        helper.make_node("DequantizeLinear", ["q4", "s4"], ["d4"], name="dq_f4"),
    ]
    inits = [init("s", np.float32(1.0)), init("z2", np.array(0), TensorProto.INT2),
             init("zu2", np.array(1), TensorProto.UINT2), init("s4", np.float32(1.0)),
             init("zf4", np.array(0.0), TensorProto.FLOAT4E2M1)]
    m = model(nodes, [vi("x", F, [2, 8])],
              [vi("d2", F, [2, 8]), vi("du2", F, [2, 8]), vi("d4", F, [2, 8])], inits, opset=25)
    x64 = x.astype(np.float64)
    r = np.round(x64)  # numpy rounds half to even, as the spec requires
    # float4 E2M1: round to nearest even among its values; in range here.
    f4 = x.astype(ml_dtypes.float4_e2m1fn).astype(np.float32)
    ref = {"d2": np.clip(r, -2, 1).astype(np.float32),
           "du2": (np.clip(r + 1, 0, 3) - 1).astype(np.float32),
           "d4": f4}
    return m, {"x": x}, ref


MODELS = {
    "mlp": mlp,
    "w8a8_qdq": w8a8_qdq,
    "w4_blocked": w4_blocked,
    "w4_uint4_per_axis": w4_uint4_per_axis,
    "fp8_weights": fp8_weights,
    "mxfp4": mxfp4,
    "matmulnbits": matmulnbits,
    "matmulnbits_no_zp": lambda: matmulnbits(with_zp=False, k=32, seed=12),
    "matmulnbits_float_zp": lambda: matmulnbits(zp_kind="float", seed=13),
    "matmulnbits_float_zp_frac": lambda: matmulnbits(zp_kind="float_frac", seed=14),
    "matmulnbits_g_idx": lambda: matmulnbits(zp_kind="float", seed=15, g_idx="identity"),
    "matmulnbits_g_idx_shuffled": lambda: matmulnbits(zp_kind="float_frac", seed=16,
                                                      g_idx="shuffled"),
    "cast_weight": cast_weight,
    "attention": attention,
    "dynamic_quant": dynamic_quant,
    "qlinear": qlinear,
    "qlinear_per_row": qlinear_per_row,
    "quant_edges": quant_edges,
    "cast_edges": cast_edges,
    "cast_bool": cast_bool,
    "misc_ops": misc_ops,
    "layernorm_stats": layernorm_stats,
    "quant_int2_fp4": quant_int2_fp4,
    "quant_random": quant_random,
    "dynamic_quant_ties": dynamic_quant_ties,
}


def save_tensor(path, name, arr):
    t = numpy_helper.from_array(np.asarray(arr), name)
    with open(path, "wb") as f:
        f.write(t.SerializeToString())


def run_ort(m, inputs):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))


def gen(outdir, name):
    m, inputs, ref = MODELS[name]()
    onnx.checker.check_model(m)
    os.makedirs(outdir, exist_ok=True)
    onnx.save(m, os.path.join(outdir, f"{name}.onnx"))
    for sub in ("in", "ref"):
        os.makedirs(os.path.join(outdir, f"{name}.{sub}"), exist_ok=True)
    for k, v in inputs.items():
        save_tensor(os.path.join(outdir, f"{name}.in", f"{k}.pb"), k, v)
    if ref is None:
        ref = run_ort(m, inputs)
    declared = {o.name: o.type.tensor_type.elem_type for o in m.graph.output}
    for k, v in ref.items():
        # onnxruntime hands float8 outputs back as uint8 bit patterns.
        if declared.get(k) == TensorProto.FLOAT8E4M3FN and v.dtype == np.uint8:
            v = v.view(ml_dtypes.float8_e4m3fn)
        save_tensor(os.path.join(outdir, f"{name}.ref", f"{k}.pb"), k, v)


def load(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t.data_type, numpy_helper.to_array(t)


def as_f64(arr):
    a = np.asarray(arr)
    if a.dtype.kind in "iub":
        return a.astype(np.int64).astype(np.float64)
    return a.astype(np.float32).astype(np.float64) if a.dtype.itemsize < 4 else a.astype(np.float64)


def compare(refdir, gotdir, atol, rtol):
    names = sorted(f for f in os.listdir(refdir) if f.endswith(".pb"))
    if not names:
        print(f"no reference tensors in {refdir}")
        return 1
    bad = 0
    for f in names:
        gp = os.path.join(gotdir, f)
        if not os.path.exists(gp):
            print(f"{f}: missing from {gotdir}")
            bad += 1
            continue
        (rt, r), (gt, g) = load(os.path.join(refdir, f)), load(gp)
        if rt != gt or r.shape != g.shape:
            print(f"{f}: type/shape differ: ref {TensorProto.DataType.Name(rt)}{list(r.shape)}, "
                  f"got {TensorProto.DataType.Name(gt)}{list(g.shape)}")
            bad += 1
            continue
        r64, g64 = as_f64(r), as_f64(g)
        nan_r, nan_g = np.isnan(r64), np.isnan(g64)
        with np.errstate(invalid="ignore"):
            diff = np.where(nan_r | nan_g, 0.0, np.abs(g64 - r64))
        # Same-signed infinities are equal; inf - inf is NaN, counted as 0 here.
        diff = np.nan_to_num(diff, nan=0.0, posinf=np.inf)
        limit = atol + rtol * np.abs(np.nan_to_num(r64, posinf=0, neginf=0))
        inf_bad = (np.isinf(r64) | np.isinf(g64)) & (r64 != g64)
        fail = (nan_r != nan_g) | (diff > limit) | inf_bad
        worst = float(np.max(diff)) if diff.size else 0.0
        if fail.any():
            i = np.unravel_index(np.argmax(fail), fail.shape)
            print(f"{f}: {int(fail.sum())}/{fail.size} elements differ; first at {list(i)}: "
                  f"got {g64[i]!r}, ref {r64[i]!r} (max |diff| {worst:.3g})")
            bad += 1
        else:
            print(f"{f}: ok ({fail.size} elements, max |diff| {worst:.3g})")
    return 1 if bad else 0


def main(argv):
    if len(argv) >= 1 and argv[0] == "list":
        print("\n".join(MODELS))
        return 0
    if len(argv) == 3 and argv[0] == "gen" and argv[2] in MODELS:
        gen(argv[1], argv[2])
        return 0
    if len(argv) >= 3 and argv[0] == "compare":
        atol = rtol = 0.0
        rest = argv[3:]
        while rest:
            if rest[0] == "--atol":
                atol = float(rest[1])
            elif rest[0] == "--rtol":
                rtol = float(rest[1])
            else:
                break
            rest = rest[2:]
        return compare(argv[1], argv[2], atol, rtol)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
