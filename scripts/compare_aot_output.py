#!/usr/bin/env python3
"""Compares a compiled model's output with the reference interpreter's.

Usage: compare_aot_output.py Y_TXT REF_PB exact
       compare_aot_output.py Y_TXT REF_PB RTOL ATOL

Y_TXT holds one value per line (what examples/aot/main.c or main_int.c
print); REF_PB is a reference output (`lowbit run --output-dir`, an ONNX
TensorProto). `exact` demands equal values: integers equal, floats equal
as f32 (main.c prints them with 9 significant digits, which round-trips
f32 exactly; NaNs compare equal to NaNs); otherwise each value must satisfy
|y - ref| <= ATOL + RTOL * |ref| (numpy.isclose). Prints
"ok SHAPE exact" or "ok SHAPE max error E", or "MISMATCH ..." and exits 1.
"""

import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    ref = numpy_helper.to_array(onnx.load_tensor(sys.argv[2]))
    with open(sys.argv[1]) as f:
        lines = [ln for ln in f.read().split("\n") if ln.strip()]
    if len(lines) != ref.size:
        print(f"MISMATCH: {len(lines)} values, the reference has {ref.size}")
        sys.exit(1)
    flat = ref.reshape(-1)
    if sys.argv[3] == "exact":
        if np.issubdtype(flat.dtype, np.floating):
            got = np.array([float(v) for v in lines], dtype=np.float32)
            want = flat.astype(np.float32)
            same = (got == want) | (np.isnan(got) & np.isnan(want))
        else:
            got = np.array([int(v) for v in lines], dtype=np.int64)
            want = flat.astype(np.int64)
            same = got == want
        bad = np.nonzero(~same)[0]
        if bad.size:
            i = bad[0]
            print(f"MISMATCH at {i}: {got[i]} != {want[i]} ({bad.size} differ)")
            sys.exit(1)
        print(f"ok {ref.shape} exact")
        return
    rtol, atol = float(sys.argv[3]), float(sys.argv[4])
    got = np.array([float(v) for v in lines], dtype=np.float64)
    want = flat.astype(np.float64)
    ok = np.abs(got - want) <= atol + rtol * np.abs(want)
    if not ok.all():
        i = np.nonzero(~ok)[0][0]
        print(f"MISMATCH at {i}: {got[i]} vs {want[i]}")
        sys.exit(1)
    print(f"ok {ref.shape} max error {np.abs(got - want).max():.3g}")


if __name__ == "__main__":
    main()
