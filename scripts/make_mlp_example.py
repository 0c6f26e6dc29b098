#!/usr/bin/env python3
"""Generates the bundled example: examples/mlp.lbir, mlp_input.npy, mlp_expected.npy.

The model is a two-layer MLP whose float weights (seeded, deterministic) are
quantized the way weight-only quantizers do it:
  layer 1: 64 -> 128, int4 weights, blocked scales (32 rows of k share one
           f16 scale per output column, symmetric), f32 bias, GELU (erf form);
  layer 2: 128 -> 10, uint8 weights, one f32 scale and one u8 zero point per
           output column (asymmetric), softmax -> `probs`.

The .lbir text is what lowbit's printer prints for this module (see
crates/lowbit-ir/src/printer.rs): constants of at most 16 elements as value
lists, up to 256 bytes as inline hex, larger ones in the trailing resource
section, all as physical bytes (int4 two per byte, low nibble first;
little-endian f16/f32).

mlp_expected.npy follows the reference interpreter's semantics: every op is
computed in f64 and rounded once to its f32 result (dequantize, then matmul
with products summed in k order, add, gelu, softmax). Transcendental
functions (erf, exp) may differ from Rust's in the last f64 bit, so compare
with a tolerance of a few f32 ulps.

Run from the workspace root: .venv/bin/python scripts/make_mlp_example.py
"""

import math
import os

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
EXAMPLES = os.path.join(ROOT, "examples")
SEED = 20240607
K, HIDDEN, CLASSES, BLOCK = 64, 128, 10, 32
LIST_LIMIT, INLINE_HEX_LIMIT = 16, 256  # the printer's thresholds


def quantize_int4_blocked(w):
    """Symmetric int4, one f16 scale per (block of BLOCK rows, column)."""
    blocks = w.reshape(K // BLOCK, BLOCK, HIDDEN)
    scale = (np.abs(blocks).max(axis=1) / 7.0).astype(np.float16)  # [K/BLOCK, HIDDEN]
    s = np.repeat(scale.astype(np.float64), BLOCK, axis=0)
    q = np.clip(np.round(w / s), -8, 7).astype(np.int8)
    return q, scale


def quantize_uint8_per_column(w):
    """Asymmetric uint8, one f32 scale and u8 zero point per output column."""
    lo, hi = np.minimum(w.min(axis=0), 0.0), np.maximum(w.max(axis=0), 0.0)
    scale = ((hi - lo) / 255.0).astype(np.float32)
    zp = np.clip(np.round(-lo / scale.astype(np.float64)), 0, 255).astype(np.uint8)
    q = np.clip(np.round(w / scale.astype(np.float64)) + zp, 0, 255).astype(np.uint8)
    return q, scale, zp


def pack_int4(q):
    """Row-major int4 codes, two per byte, first element in the low nibble."""
    codes = (q.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if codes.size % 2:
        codes = np.append(codes, 0)
    return (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8).tobytes()


def f32(x):
    return float(np.float32(x))


def dequantize(q, scale, zp=None):
    """(q - zp) * scale in f64, rounded to f32."""
    v = q.astype(np.float64)
    if zp is not None:
        v = v - zp.astype(np.float64)
    return (v * scale.astype(np.float64)).astype(np.float32)


def matmul(a, b):
    """f64 products summed in k order, rounded once to f32."""
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), np.float32)
    for i in range(m):
        for j in range(n):
            acc = 0.0
            for t in range(k):
                acc += float(a[i, t]) * float(b[t, j])
            out[i, j] = f32(acc)
    return out


def gelu(x):
    return np.vectorize(lambda v: f32(0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))))(x.astype(np.float64)).astype(
        np.float32
    )


def softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def value_text(v):
    """A float as Rust's `{:?}` prints it (shortest round-trip); the two
    languages agree on the digits and, in this range, on the notation."""
    v = float(v)
    assert v == 0.0 or 1e-4 <= abs(v) < 1e16, v
    return repr(v)


class Printer:
    def __init__(self):
        self.lines, self.resources, self.next = [], [], 0

    def value(self):
        name = f"%{self.next}"
        self.next += 1
        return name

    def constant(self, ty, raw, values=None):
        """`values`: exact decimal texts, used when the printer would list them."""
        name = self.value()
        if values is not None and len(values) <= LIST_LIMIT:
            payload = f"dense<[{', '.join(values)}]>"
        elif len(raw) <= INLINE_HEX_LIMIT:
            payload = f'dense<"0x{raw.hex().upper()}">'
        else:
            payload = f"dense_resource<r{len(self.resources)}>"
            self.resources.append(raw)
        self.lines.append(f"    {name} = constant {payload} : {ty}")
        return name

    def op(self, text, operands, attrs, in_tys, out_ty):
        name = self.value()
        attr = f" {{{attrs}}}" if attrs else ""
        self.lines.append(f"    {name} = {text} {', '.join(operands)}{attr} : ({', '.join(in_tys)}) -> {out_ty}")
        return name


def main():
    rng = np.random.default_rng(SEED)
    w1 = rng.normal(0.0, 1.0 / math.sqrt(K), (K, HIDDEN))
    b1 = rng.normal(0.0, 0.1, HIDDEN).astype(np.float32)
    w2 = rng.normal(0.0, 2.0 / math.sqrt(HIDDEN), (HIDDEN, CLASSES))
    x = rng.normal(0.0, 1.0, (1, K)).astype(np.float32)

    q1, s1 = quantize_int4_blocked(w1)
    q2, s2, zp2 = quantize_uint8_per_column(w2)

    h = matmul(x, dequantize(q1, np.repeat(s1, BLOCK, axis=0)))
    h = (h.astype(np.float64) + b1.astype(np.float64)).astype(np.float32)
    h = gelu(h)
    logits = matmul(h, dequantize(q2, s2, zp2))
    probs = softmax(logits)

    t_x, t_w1, t_s1 = f"tensor<1x{K}xf32>", f"tensor<{K}x{HIDDEN}xi4>", f"tensor<{K // BLOCK}x{HIDDEN}xf16>"
    t_d1, t_h, t_b1 = f"tensor<{K}x{HIDDEN}xf32>", f"tensor<1x{HIDDEN}xf32>", f"tensor<{HIDDEN}xf32>"
    t_w2, t_s2, t_z2 = f"tensor<{HIDDEN}x{CLASSES}xu8>", f"tensor<{CLASSES}xf32>", f"tensor<{CLASSES}xu8>"
    t_d2, t_y = f"tensor<{HIDDEN}x{CLASSES}xf32>", f"tensor<1x{CLASSES}xf32>"

    p = Printer()
    c_w1 = p.constant(t_w1, pack_int4(q1))
    c_s1 = p.constant(t_s1, s1.astype("<f2").tobytes())
    d1 = p.op("dequantize", [c_w1, c_s1], f"axis = 0, block_size = {BLOCK}", [t_w1, t_s1], t_d1)
    m1 = p.op("matmul", ["%x", d1], "", [t_x, t_d1], t_h)
    c_b1 = p.constant(t_b1, b1.astype("<f4").tobytes())
    a1 = p.op("add", [m1, c_b1], "", [t_h, t_b1], t_h)
    g1 = p.op("gelu", [a1], "", [t_h], t_h)
    c_w2 = p.constant(t_w2, q2.tobytes())
    c_s2 = p.constant(t_s2, s2.astype("<f4").tobytes(), [value_text(v) for v in s2])
    c_z2 = p.constant(t_z2, zp2.tobytes(), [str(int(v)) for v in zp2])
    d2 = p.op("dequantize", [c_w2, c_s2, c_z2], "axis = 1", [t_w2, t_s2, t_z2], t_d2)
    m2 = p.op("matmul", [g1, d2], "", [t_h, t_d2], t_y)
    out = p.op("softmax", [m2], "", [t_y], t_y)

    header = [
        "// A small quantized MLP, the example of scripts/demo.sh; generated by",
        "// scripts/make_mlp_example.py (do not edit by hand).",
        f"//   layer 1: {K} -> {HIDDEN}, int4 weights with one f16 scale per {BLOCK} rows of k",
        "//            and output column (blocked, symmetric), f32 bias, GELU;",
        f"//   layer 2: {HIDDEN} -> {CLASSES}, uint8 weights with a per-column f32 scale and",
        "//            u8 zero point (per-axis, asymmetric), softmax -> probs.",
        "// Weights are constants holding their physical bytes (int4: two per byte,",
        "// low nibble first); the large ones live in the resource section at the end.",
        "// Input: examples/mlp_input.npy; expected output: examples/mlp_expected.npy.",
    ]
    text = "\n".join(header) + "\nmodule {\n"
    text += f"  func @main(%x: {t_x}) -> (probs: {t_y}) {{\n"
    text += "\n".join(p.lines) + "\n"
    text += f"    return {out}\n  }}\n}}\n"
    if p.resources:
        text += "{-#\n  resources: {\n"
        entries = [f'    r{i}: "0x{raw.hex().upper()}"' for i, raw in enumerate(p.resources)]
        text += ",\n".join(entries) + "\n  }\n#-}\n"

    os.makedirs(EXAMPLES, exist_ok=True)
    with open(os.path.join(EXAMPLES, "mlp.lbir"), "w") as f:
        f.write(text)
    np.save(os.path.join(EXAMPLES, "mlp_input.npy"), x)
    np.save(os.path.join(EXAMPLES, "mlp_expected.npy"), probs)

    # The unquantized float model, to show what quantization costs.
    z = x.astype(np.float64) @ w1 + b1
    reference = softmax((0.5 * z * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))) @ w2)
    print(f"wrote examples/mlp.lbir ({len(text)} bytes), mlp_input.npy, mlp_expected.npy")
    print("probs (quantized):", np.array2string(probs[0], precision=4))
    print("probs (float)    :", np.array2string(reference[0], precision=4))


if __name__ == "__main__":
    main()
