#!/usr/bin/env python3
"""Writes the tensor-file fixtures of crates/lowbit-onnx/tests/data/.

Each fixture is produced by the reference implementations (onnx.numpy_helper,
onnx.helper.make_tensor, numpy.save) so the Rust reader is checked against
files it did not write. expected.json records, per file, what the Rust reader
must return: element type, shape, name, element codes (raw bit patterns) and
decoded values, all taken from onnx.numpy_helper.to_array / numpy.load, plus
the malformed files with a fragment of the error each must produce.

Run from the workspace root with the venv: .venv/bin/python scripts/make_tensor_fixtures.py
"""

import json
import math
import os
import sys

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "lowbit-onnx", "tests", "data")
TP = onnx.TensorProto
NAN = float("nan")
INF = float("inf")

# (ONNX type, lowbit element type, numpy/ml_dtypes dtype, shape, values)
CASES = [
    (TP.FLOAT, "f32", np.float32, (2, 3), [1.5, -0.0, INF, -INF, NAN, 1e-45]),
    (TP.DOUBLE, "f64", np.float64, (3,), [-2.5, 1e-310, NAN]),
    (TP.FLOAT16, "f16", np.float16, (2, 2), [1.0, -65504.0, 2.0**-24, INF]),
    (TP.BFLOAT16, "bf16", ml_dtypes.bfloat16, (3,), [1.0, -3.3895313892515355e38, 2.0**-133]),
    (TP.INT8, "i8", np.int8, (5,), [-128, -1, 0, 1, 127]),
    (TP.INT16, "i16", np.int16, (3,), [-32768, 7, 32767]),
    (TP.INT32, "i32", np.int32, (3,), [-(2**31), -5, 2**31 - 1]),
    (TP.INT64, "i64", np.int64, (3,), [-(2**63), -5, 2**63 - 1]),
    (TP.UINT8, "u8", np.uint8, (3,), [0, 128, 255]),
    (TP.UINT16, "u16", np.uint16, (3,), [0, 40000, 65535]),
    (TP.UINT32, "u32", np.uint32, (3,), [0, 4000000000, 2**32 - 1]),
    (TP.UINT64, "u64", np.uint64, (3,), [0, 2**63, 2**64 - 1]),
    (TP.BOOL, "u1", np.bool_, (2, 2), [True, False, False, True]),
    (TP.FLOAT8E4M3FN, "f8E4M3FN", ml_dtypes.float8_e4m3fn, (5,), [448.0, -(2.0**-9), NAN, -0.0, 1.0]),
    (TP.FLOAT8E4M3FNUZ, "f8E4M3FNUZ", ml_dtypes.float8_e4m3fnuz, (5,), [240.0, 2.0**-10, NAN, 0.0, -1.0]),
    (TP.FLOAT8E5M2, "f8E5M2", ml_dtypes.float8_e5m2, (5,), [57344.0, -INF, NAN, 2.0**-16, 1.0]),
    (TP.FLOAT8E5M2FNUZ, "f8E5M2FNUZ", ml_dtypes.float8_e5m2fnuz, (5,), [57344.0, 2.0**-17, NAN, -1.0, 0.0]),
    (TP.FLOAT8E8M0, "f8E8M0FNU", ml_dtypes.float8_e8m0fnu, (5,), [1.0, 2.0**-127, 2.0**127, 0.5, NAN]),
    (TP.FLOAT4E2M1, "f4E2M1FN", ml_dtypes.float4_e2m1fn, (7,), [0.0, 0.5, -6.0, 3.0, -0.0, 1.5, 4.0]),
    (TP.INT4, "i4", ml_dtypes.int4, (7,), [-8, -1, 0, 1, 7, 3, -5]),
    (TP.UINT4, "u4", ml_dtypes.uint4, (7,), [0, 1, 15, 8, 7, 2, 9]),
    (TP.INT2, "i2", ml_dtypes.int2, (5,), [-2, -1, 0, 1, -2]),
    (TP.UINT2, "u2", ml_dtypes.uint2, (6,), [0, 1, 2, 3, 3, 0]),
    (TP.FLOAT6E2M3, "f6E2M3FN", ml_dtypes.float6_e2m3fn, (5,), [7.5, -0.125, 1.0, -0.0, 0.875]),
    (TP.FLOAT6E3M2, "f6E3M2FN", ml_dtypes.float6_e3m2fn, (5,), [28.0, -0.0625, 1.0, 0.0, -3.0]),
]

# dtype string -> lowbit element type, for the .npy fixtures
NPY_CASES = [
    ("<f4", "f32", (2, 3), [0.5, -1.0, INF, NAN, -0.0, 3.25]),
    (">f8", "f64", (3,), [1e300, -1e-300, 2.0]),
    ("<f2", "f16", (2,), [-1.5, 65504.0]),
    ("|i1", "i8", (4,), [-128, 0, 5, 127]),
    (">i2", "i16", (2,), [-2, 300]),
    ("<i4", "i32", (2, 1), [-(2**31), 12345]),
    ("<i8", "i64", (2,), [-(2**63), 2**62]),
    ("|u1", "u8", (3,), [0, 1, 255]),
    ("<u2", "u16", (1,), [65535]),
    (">u4", "u32", (2,), [1, 2**32 - 1]),
    ("<u8", "u64", (1,), [2**64 - 1]),
    ("|b1", "u1", (3,), [True, False, True]),
    ("<f4", "f32", (), [7.0]),
    ("<f4", "f32", (0, 3), []),
]


def json_value(v):
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def codes_of(a, elem):
    """Raw bit patterns of the elements of array `a` holding lowbit type `elem`."""
    a = np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return [int(x) for x in a.reshape(-1).view(np.uint8)]
    if a.dtype.itemsize == 1 and elem not in ("i8", "u8"):
        # ml_dtypes sub-byte and fp8 types hold one element per byte; the code
        # is the low bits of that byte.
        bits = {"i4": 4, "u4": 4, "f4E2M1FN": 4, "i2": 2, "u2": 2, "f6E2M3FN": 6, "f6E3M2FN": 6}.get(elem, 8)
        return [int(x) & ((1 << bits) - 1) for x in a.reshape(-1).view(np.uint8)]
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return [int(x) for x in a.astype(a.dtype.newbyteorder("<")).reshape(-1).view(unsigned)]


def same(a, b):
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b)) and len(a) == len(b)


def entry(fname, elem, a, name):
    return {
        "file": fname,
        "elem": elem,
        "shape": list(a.shape),
        "name": name,
        "codes": codes_of(a, elem),
        "values": [json_value(v) for v in np.asarray(a).astype(np.float64).reshape(-1)],
    }


def save_pb(fname, t):
    with open(os.path.join(OUT, fname), "wb") as f:
        f.write(t.SerializeToString())


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    files, errors = [], []

    for onnx_type, elem, dtype, shape, values in CASES:
        want = np.array(values, dtype=dtype).reshape(shape)
        # raw_data, as onnx.numpy_helper writes it
        raw = numpy_helper.from_array(want, f"{elem}_raw")
        assert raw.HasField("raw_data")
        # the typed repeated field (int32_data, float_data, ...), as make_tensor writes it
        typed = helper.make_tensor(f"{elem}_typed", onnx_type, list(shape), want.reshape(-1).tolist(), raw=False)
        if elem in ("f8E5M2", "f8E8M0FNU"):
            # make_tensor converts floats itself (it saturates infinities into
            # FLOAT8 and rounds E8M0 upwards); store the bit patterns directly,
            # as the schema says int32_data holds them.
            del typed.int32_data[:]
            typed.int32_data.extend(codes_of(want, elem))
        assert not typed.HasField("raw_data")
        for kind, t in (("raw", raw), ("typed", typed)):
            back = numpy_helper.to_array(t)
            if not same(back.astype(np.float64), want.astype(np.float64)):
                sys.exit(f"{elem} {kind}: onnx round trip changed the values: {back} != {want}")
            fname = f"{elem}_{kind}.pb"
            save_pb(fname, t)
            files.append(entry(fname, elem, back, t.name))

    empty = numpy_helper.from_array(np.zeros((0, 3), np.float32), "")
    save_pb("empty_f32.pb", empty)
    files.append(entry("empty_f32.pb", "f32", np.zeros((0, 3), np.float32), None))

    for i, (descr, elem, shape, values) in enumerate(NPY_CASES):
        a = np.array(values, dtype=np.dtype(descr)).reshape(shape)
        fname = f"{elem}_{i}.npy"
        np.save(os.path.join(OUT, fname), a)
        back = np.load(os.path.join(OUT, fname))
        assert back.dtype.str == descr, (back.dtype.str, descr)
        files.append(entry(fname, elem, back, None))

    def bad(fname, data, fragment):
        with open(os.path.join(OUT, fname), "wb") as f:
            f.write(data)
        errors.append({"file": fname, "contains": fragment})

    def npy_bytes(a):
        import io

        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    good_pb = numpy_helper.from_array(np.arange(16, dtype=np.float32), "w").SerializeToString()
    bad("truncated.pb", good_pb[:-5], "not a valid ONNX TensorProto")
    ext = helper.make_tensor("w", TP.FLOAT, [4], [0.0] * 4)
    ext.ClearField("float_data")
    ext.data_location = TP.EXTERNAL
    loc = ext.external_data.add()
    loc.key, loc.value = "location", "weights.bin"
    bad("external.pb", ext.SerializeToString(), "external data is not supported for input tensors")
    neg = numpy_helper.from_array(np.zeros((2,), np.float32), "n")
    neg.dims[0] = -2
    bad("negative_dims.pb", neg.SerializeToString(), "dimension 0 is negative (-2)")
    short = numpy_helper.from_array(np.zeros((3,), np.float32), "s")
    short.raw_data = short.raw_data[:8]
    bad("short_raw.pb", short.SerializeToString(), "raw_data is 8 bytes, expected 12")
    bad("string.pb", helper.make_tensor("s", TP.STRING, [1], [b"hi"]).SerializeToString(), "STRING tensors are not supported")
    bad("bf16_void.npy", npy_bytes(np.ones((2,), ml_dtypes.bfloat16)), "anonymous void")
    bad("fortran.npy", npy_bytes(np.asfortranarray(np.ones((2, 3), np.float32))), "Fortran-order")
    bad("truncated.npy", npy_bytes(np.ones((4,), np.float32))[:-3], "npy data is 13 bytes, expected 16")
    bad("complex.npy", npy_bytes(np.ones((1,), np.complex64)), "unsupported npy dtype '<c8'")
    header = b"{'descr': '<f4', 'shape': (1,), }\n"
    bad("no_order.npy", b"\x93NUMPY\x01\x00" + bytes([len(header), 0]) + header + bytes(4), "missing 'fortran_order'")
    bad("cut_header.npy", b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order'", "truncated in its header")
    bad("tensor.txt", b"1 2 3\n", "unknown tensor file type")

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        # One fixture per line keeps the file small and its diffs readable.
        f.write('{"onnx_version": %s,\n"files": [\n' % json.dumps(onnx.__version__))
        f.write(",\n".join(json.dumps(e) for e in files))
        f.write('\n],\n"errors": [\n')
        f.write(",\n".join(json.dumps(e) for e in errors))
        f.write("\n]}\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(files)} fixtures and {len(errors)} malformed files ({total} bytes) to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
