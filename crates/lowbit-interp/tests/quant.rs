//! quantize / dequantize / requantize / cast: granularities, zero points,
//! rounding ties, saturation, float formats, and a round-trip property.

mod common;
use common::*;
use lowbit_ir::{Granularity, OpKind, Rounding};
use proptest::prelude::*;

fn q(g: Granularity, r: Rounding, saturate: bool) -> OpKind {
    OpKind::Quantize {
        granularity: g,
        rounding: r,
        saturate,
        stochastic: None,
    }
}
fn dq(g: Granularity) -> OpKind {
    OpKind::Dequantize { granularity: g }
}
fn cast(r: Rounding, saturate: bool) -> OpKind {
    OpKind::Cast {
        rounding: r,
        saturate,
        stochastic: None,
    }
}
const PT: Granularity = Granularity::PerTensor;
const NE: Rounding = Rounding::NearestEven;

#[test]
fn per_tensor_with_zero_point_saturates_or_wraps() {
    let x = t("f32", &[6], &[1.0, -1.25, 0.25, 100.0, -100.0, 0.75]);
    let s = t("f32", &[], &[0.5]);
    let z = t("i8", &[], &[3.]);
    // x/s = 2, -2.5, 0.5, 200, -200, 1.5
    let r = ok(q(PT, NE, true), &[&x, &s, &z], ty("i8", &[6]));
    assert_eq!(ints(&r), [5, 1, 3, 127, -128, 5]);
    let r = ok(q(PT, NE, false), &[&x, &s, &z], ty("i8", &[6]));
    assert_eq!(ints(&r), [5, 1, 3, 203 - 256, -197 + 256, 5]);
    let r = ok(
        q(PT, Rounding::NearestAway, true),
        &[&x, &s, &z],
        ty("i8", &[6]),
    );
    assert_eq!(ints(&r), [5, 0, 4, 127, -128, 5]);
    // no zero point; scale of shape [1] is per-tensor too
    let s1 = t("f32", &[1], &[0.5]);
    let r = ok(q(PT, NE, true), &[&x, &s1], ty("i8", &[6]));
    assert_eq!(ints(&r), [2, -2, 0, 127, -128, 2]);
}

#[test]
fn rounding_ties_in_every_mode() {
    let x = t("f32", &[6], &[0.5, 1.5, 2.5, -0.5, -1.5, -2.5]);
    let s = t("f32", &[], &[1.]);
    let cases = [
        (Rounding::NearestEven, [0, 2, 2, 0, -2, -2]),
        (Rounding::NearestAway, [1, 2, 3, -1, -2, -3]),
        (Rounding::TowardZero, [0, 1, 2, 0, -1, -2]),
        (Rounding::Up, [1, 2, 3, 0, -1, -2]),
        (Rounding::Down, [0, 1, 2, -1, -2, -3]),
    ];
    for (mode, want) in cases {
        let r = ok(q(PT, mode, true), &[&x, &s], ty("i4", &[6]));
        assert_eq!(ints(&r), want, "{mode}");
    }
}

#[test]
fn per_axis_with_zero_points() {
    let x = t("f32", &[2, 3], &[1., 2., 3., -1., -4., 1.]);
    let s = t("f32", &[3], &[1., 2., 0.5]);
    let z = t("u4", &[3], &[0., 8., 15.]);
    let g = Granularity::PerAxis { axis: 1 };
    // x/s = [[1, 1, 6], [-1, -2, 2]], + zp = [[1, 9, 21], [-1, 6, 17]]
    let r = ok(q(g.clone(), NE, true), &[&x, &s, &z], ty("u4", &[2, 3]));
    assert_eq!(ints(&r), [1, 9, 15, 0, 6, 15]);
    let r = ok(q(g.clone(), NE, false), &[&x, &s, &z], ty("u4", &[2, 3]));
    assert_eq!(ints(&r), [1, 9, 5, 15, 6, 1]);
    // axis 0 needs 2 scales
    err(
        q(Granularity::PerAxis { axis: 0 }, NE, true),
        &[&x, &s, &z],
        ty("u4", &[2, 3]),
        "'quantize' op: the scale has shape [3] but this granularity needs [2]",
    );
    let z2 = t("u4", &[2], &[0., 0.]);
    err(
        q(g.clone(), NE, true),
        &[&x, &s, &z2],
        ty("u4", &[2, 3]),
        "the zero point has shape [2]",
    );
    let zi = t("i4", &[3], &[0., 0., 0.]);
    err(
        q(g, NE, true),
        &[&x, &s, &zi],
        ty("u4", &[2, 3]),
        "zero point has element type i4",
    );
}

#[test]
fn blocked_with_a_ragged_last_block() {
    let x = t("f32", &[2, 5], &[1., 2., 3., 4., 5., 1., 2., 3., 4., 5.]);
    let s = t("f32", &[2, 3], &[1., 2., 4., 0.5, 1., 10.]);
    let g = Granularity::Blocked {
        blocks: vec![(1, 2)],
    };
    // row 0: [1, 2, 1.5, 2, 1.25] -> [1, 2, 2, 2, 1]; row 1: [2, 4, 3, 4, 0.5] -> [2, 4, 3, 4, 0]
    let r = ok(q(g.clone(), NE, true), &[&x, &s], ty("i8", &[2, 5]));
    assert_eq!(ints(&r), [1, 2, 2, 2, 1, 2, 4, 3, 4, 0]);
    // and back, with zero points per block
    let z = t("i8", &[2, 3], &[0., 1., -1., 0., 0., 2.]);
    let qv = t("i8", &[2, 5], &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10.]);
    let d = ok(dq(g.clone()), &[&qv, &s, &z], ty("f32", &[2, 5]));
    assert_eq!(vals(&d), [1., 2., 4., 6., 24., 3., 3.5, 8., 9., 80.]);
    let bad = t("f32", &[2, 2], &[1.; 4]);
    err(
        q(g, NE, true),
        &[&x, &bad],
        ty("i8", &[2, 5]),
        "needs [2, 3]",
    );
}

#[test]
fn blocked_along_two_axes() {
    // 3x3 tensor, 2x2 blocks -> 2x2 scales (ragged in both dims)
    let x = t("f32", &[3, 3], &[8.; 9]);
    let s = t("f32", &[2, 2], &[1., 2., 4., 8.]);
    let g = Granularity::Blocked {
        blocks: vec![(0, 2), (1, 2)],
    };
    let r = ok(q(g, NE, true), &[&x, &s], ty("i8", &[3, 3]));
    assert_eq!(ints(&r), [8, 8, 4, 8, 8, 4, 2, 2, 1]);
}

#[test]
fn zero_scale_and_nan() {
    let x = t("f32", &[3], &[1., -1., 0.]);
    let s = t("f32", &[], &[0.]);
    let z = t("i8", &[], &[-7.]);
    // ±inf saturate, 0/0 = NaN counts as 0 (the zero point)
    let r = ok(q(PT, NE, true), &[&x, &s, &z], ty("i8", &[3]));
    assert_eq!(ints(&r), [127, -128, -7]);
    // without saturation ±inf wrap to 0 too: the result is the zero point
    let r = ok(q(PT, NE, false), &[&x, &s, &z], ty("i8", &[3]));
    assert_eq!(ints(&r), [-7, -7, -7]);
}

#[test]
fn fp8_and_fp4_quantization_saturate_or_overflow() {
    let x = t("f32", &[4], &[1000., -1000., 448., 0.3]);
    let s = t("f32", &[], &[1.]);
    let r = ok(q(PT, NE, true), &[&x, &s], ty("f8E4M3FN", &[4]));
    assert_eq!(r.codes[..3], [0x7e, 0xfe, 0x7e]);
    assert_eq!(vals(&r)[3], 0.3125); // 0.3 rounds to 5 * 2^-4
    let r = ok(q(PT, NE, false), &[&x, &s], ty("f8E4M3FN", &[4]));
    assert_eq!(r.codes[..3], [0x7f, 0xff, 0x7e]); // NaN of the sign (as ml_dtypes): E4M3FN has no inf
    let big = t("f32", &[2], &[1e5, -1e5]);
    let r = ok(q(PT, NE, false), &[&big, &s], ty("f8E5M2", &[2]));
    assert_eq!(r.codes, [0x7c, 0xfc]); // ±inf
    let r = ok(q(PT, NE, true), &[&big, &s], ty("f8E5M2", &[2]));
    assert_eq!(vals(&r), [57344., -57344.]);
    // fp4 is finite-only: the largest value either way
    for sat in [true, false] {
        let r = ok(q(PT, NE, sat), &[&x, &s], ty("f4E2M1FN", &[4]));
        assert_eq!(vals(&r), [6., -6., 6., 0.5]);
    }
    // NVFP4-style: blocks of 2 with an e4m3 scale, rounding toward zero
    let x = t("f32", &[4], &[2.9, 5.0, -0.7, 0.2]);
    let s = t("f8E4M3FN", &[2], &[0.5, 0.125]);
    let g = Granularity::Blocked {
        blocks: vec![(0, 2)],
    };
    let r = ok(
        q(g, Rounding::TowardZero, true),
        &[&x, &s],
        ty("f4E2M1FN", &[4]),
    );
    // 5.8 -> 4, 10 -> 6 (saturated), -5.6 -> -4, 1.6 -> 1.5
    assert_eq!(vals(&r), [4., 6., -4., 1.5]);
}

#[test]
fn float_zero_point_is_added_before_rounding() {
    let x = t("f32", &[2], &[1., 2.]);
    let s = t("f32", &[], &[2.]);
    let z = t("f8E4M3FN", &[], &[0.25]);
    let r = ok(q(PT, NE, true), &[&x, &s, &z], ty("f8E4M3FN", &[2]));
    assert_eq!(vals(&r), [0.75, 1.25]);
}

#[test]
fn quantize_to_b1_takes_the_sign() {
    let x = t("f32", &[4], &[-0.3, 0.0, 2.0, -5.0]);
    let s = t("f32", &[], &[1.]);
    let r = ok(q(PT, NE, true), &[&x, &s], ty("b1", &[4]));
    assert_eq!(ints(&r), [-1, 1, 1, -1]);
}

#[test]
fn dequantize_per_axis_with_zero_points() {
    let qv = t("i4", &[2, 2], &[-8., 7., 0., 3.]);
    let s = t("f32", &[2], &[0.5, 2.]);
    let z = t("i4", &[2], &[1., -1.]);
    let r = ok(
        dq(Granularity::PerAxis { axis: 0 }),
        &[&qv, &s, &z],
        ty("f32", &[2, 2]),
    );
    assert_eq!(vals(&r), [-4.5, 3., 2., 8.]);
    // the result is rounded once to f16: 2049 ties to 2048
    let big = t("i32", &[2], &[2049., 2051.]);
    let one = t("f32", &[], &[1.]);
    let r = ok(dq(PT), &[&big, &one], ty("f16", &[2]));
    assert_eq!(vals(&r), [2048., 2052.]);
    // fp8 data with an e8m0 scale (MX)
    let f = t("f8E4M3FN", &[2], &[1.5, -448.]);
    let e = t("f8E8M0FNU", &[], &[0.25]);
    let r = ok(dq(PT), &[&f, &e], ty("f32", &[2]));
    assert_eq!(vals(&r), [0.375, -112.]);
    err(
        dq(PT),
        &[&qv, &s],
        ty("i8", &[2, 2]),
        "'dequantize' op: the result must have a float element type, got i8",
    );
    let zf = t("i8", &[2], &[0., 0.]);
    err(
        dq(Granularity::PerAxis { axis: 0 }),
        &[&qv, &s, &zf],
        ty("f32", &[2, 2]),
        "zero point has element type i8 but the quantized operand has i4",
    );
}

#[test]
fn requantize_rescales_exactly_once() {
    let qv = t("i32", &[3], &[100., -37., 1000.]);
    let s_in = t("f32", &[], &[0.25]);
    let z_in = t("i32", &[], &[0.]);
    let s_out = t("f32", &[], &[2.]);
    let z_out = t("i8", &[], &[10.]);
    let op = |sat| OpKind::Requantize {
        in_granularity: PT,
        out_granularity: PT,
        rounding: NE,
        saturate: sat,
    };
    // v = 25, -9.25, 250; v/2 = 12.5, -4.625, 125 -> 12, -5, 125; + 10
    let r = ok(
        op(true),
        &[&qv, &s_in, &z_in, &s_out, &z_out],
        ty("i8", &[3]),
    );
    assert_eq!(ints(&r), [22, 5, 127]);
    let r = ok(
        op(false),
        &[&qv, &s_in, &z_in, &s_out, &z_out],
        ty("i8", &[3]),
    );
    assert_eq!(ints(&r), [22, 5, 135 - 256]);
    // per-axis input scales, per-tensor output
    let qv = t("u8", &[2, 2], &[130., 120., 10., 20.]);
    let s_in = t("f32", &[2], &[0.5, 4.]);
    let z_in = t("u8", &[2], &[128., 0.]);
    let s_out = t("f32", &[], &[1.]);
    let z_out = t("i4", &[], &[0.]);
    let op = OpKind::Requantize {
        in_granularity: Granularity::PerAxis { axis: 0 },
        out_granularity: PT,
        rounding: Rounding::TowardZero,
        saturate: true,
    };
    // v = [1, -4, 40, 80] -> clamp to i4
    let r = ok(
        op.clone(),
        &[&qv, &s_in, &z_in, &s_out, &z_out],
        ty("i4", &[2, 2]),
    );
    assert_eq!(ints(&r), [1, -4, 7, 7]);
    err(
        op,
        &[&qv, &s_in, &z_in, &s_out],
        ty("i4", &[2, 2]),
        "'requantize' op: expected 5 operands, got 4",
    );
}

/// An `f32` operand from its bit pattern (exact in the test tensor).
fn f32b(bits: u32) -> f64 {
    f32::from_bits(bits) as f64
}

#[test]
fn quantize_divides_in_f32_for_f32_operands() {
    // 0.35f32 / 0.1f32 is 3.5 exactly in f32 (onnxruntime's quotient) but
    // 3.49999989 in f64; 0.45000002f32 / 0.1f32 is 4.5 in f32 and
    // 4.50000011 in f64. Nearest-even then gives 4 and 4 from f32, 3 and 5
    // from f64.
    let xs = [f32b(0x3eb3_3333), f32b(0x3ee6_6667)];
    assert_eq!(xs[0], 0.35f32 as f64);
    let s = 0.1f32 as f64;
    let z = t("i8", &[], &[0.]);
    let r = ok(
        q(PT, NE, true),
        &[&t("f32", &[2], &xs), &t("f32", &[], &[s]), &z],
        ty("i8", &[2]),
    );
    assert_eq!(ints(&r), [4, 4]);
    // f16 operands divide in f32 as well (not in f16): 86.9 / 0.007866
    // (f16 codes 0x556e, 0x2007) is 11044.5 in f32 (ties to 11044) and
    // 11044.50048 in f64 (11045).
    let xh = codes("f16", &[1], &[0x556e]);
    let sh = codes("f16", &[], &[0x2007]);
    let r = ok(q(PT, NE, true), &[&xh, &sh], ty("i16", &[1]));
    assert_eq!(ints(&r), [11044]);
    let r = ok(
        q(PT, NE, true),
        &[&xh, &t("f64", &[], &vals(&sh))],
        ty("i16", &[1]),
    );
    assert_eq!(ints(&r), [11045]);
    // An f64 operand makes the quotient f64: the same values give 3 and 5.
    let r = ok(
        q(PT, NE, true),
        &[&t("f64", &[2], &xs), &t("f32", &[], &[s]), &z],
        ty("i8", &[2]),
    );
    assert_eq!(ints(&r), [3, 5]);
    let r = ok(
        q(PT, NE, true),
        &[&t("f32", &[2], &xs), &t("f64", &[], &[s]), &z],
        ty("i8", &[2]),
    );
    assert_eq!(ints(&r), [3, 5]);
    // So does a format with more precision than f32 (25 significand bits).
    let r = ok(
        q(PT, NE, true),
        &[&t("fE8M24", &[2], &xs), &t("f32", &[], &[s]), &z],
        ty("i8", &[2]),
    );
    assert_eq!(ints(&r), [3, 5]);
    // Per-axis and blocked scales take the same f32 quotient per element.
    let x = t("f32", &[2, 2], &[xs[0], xs[1], xs[1], xs[0]]);
    let sa = t("f32", &[2], &[s, s]);
    let r = ok(
        q(Granularity::PerAxis { axis: 1 }, NE, true),
        &[&x, &sa],
        ty("u4", &[2, 2]),
    );
    assert_eq!(ints(&r), [4, 4, 4, 4]);
    let r = ok(
        q(
            Granularity::Blocked {
                blocks: vec![(0, 1)],
            },
            NE,
            true,
        ),
        &[&x, &t("f32", &[2, 2], &[s; 4])],
        ty("i16", &[2, 2]),
    );
    assert_eq!(ints(&r), [4, 4, 4, 4]);
    // Directed modes see the f32 quotient 3.5 too.
    let r = ok(
        q(PT, Rounding::TowardZero, true),
        &[&t("f32", &[1], &xs[..1]), &t("f32", &[], &[s])],
        ty("i8", &[1]),
    );
    assert_eq!(ints(&r), [3]);
    let r = ok(
        q(PT, Rounding::NearestAway, true),
        &[&t("f32", &[1], &xs[..1]), &t("f32", &[], &[s])],
        ty("i8", &[1]),
    );
    assert_eq!(ints(&r), [4]);
}

#[test]
fn quantize_to_fp8_rounds_the_f32_quotient() {
    // 0.10625f32 / 0.1f32 is 1.0625 in f32, the midpoint of the E4M3
    // values 1 and 1.125, so it ties to even (1); the exact quotient
    // 1.06250001 is above it (1.125).
    let x = t("f32", &[2], &[f32b(0x3dd9_999a), -f32b(0x3dd9_999a)]);
    assert_eq!(vals(&x)[0], 0.10625f32 as f64);
    let s = t("f32", &[], &[0.1f32 as f64]);
    let r = ok(q(PT, NE, true), &[&x, &s], ty("f8E4M3FN", &[2]));
    assert_eq!(vals(&r), [1.0, -1.0]);
    let s64 = t("f64", &[], &[0.1f32 as f64]);
    let r = ok(q(PT, NE, true), &[&x, &s64], ty("f8E4M3FN", &[2]));
    assert_eq!(vals(&r), [1.125, -1.125]);
    // A float zero point is added to the f32 quotient in f32: 1.0625 + 0
    // is still the tie.
    let z = t("f8E4M3FN", &[], &[0.]);
    let r = ok(q(PT, NE, true), &[&x, &s, &z], ty("f8E4M3FN", &[2]));
    assert_eq!(vals(&r), [1.0, -1.0]);
}

#[test]
fn requantize_rounds_the_exact_rescaled_value_once_to_f32() {
    let op = OpKind::Requantize {
        in_granularity: PT,
        out_granularity: PT,
        rounding: NE,
        saturate: true,
    };
    let z32 = t("i32", &[], &[0.]);
    let z8 = t("i8", &[], &[0.]);
    // v = 1 · 0.35f32 exactly; v / 0.1f32 is 3.5 in f32: 4, as quantize.
    let r = ok(
        op.clone(),
        &[
            &t("i32", &[1], &[1.]),
            &t("f32", &[], &[0.35f32 as f64]),
            &z32,
            &t("f32", &[], &[0.1f32 as f64]),
            &z8,
        ],
        ty("i8", &[1]),
    );
    assert_eq!(ints(&r), [4]);
    // With f64 scales the quotient is f64: 3.4999999 gives 3.
    let r = ok(
        op.clone(),
        &[
            &t("i32", &[1], &[1.]),
            &t("f64", &[], &[0.35f32 as f64]),
            &z32,
            &t("f32", &[], &[0.1f32 as f64]),
            &z8,
        ],
        ty("i8", &[1]),
    );
    assert_eq!(ints(&r), [3]);
    // A 62-bit q: (3 (2^60 + 2^36) + 1) / 3 is 1/3 above the f32 midpoint
    // 2^60 + 2^36 and rounds up once to 2^60 + 2^37; no f64 step happens.
    let d: i64 = 3 * ((1 << 60) + (1 << 36)) + 1;
    let qv = codes("i64", &[1], &[d as u64]);
    let r = ok(
        op,
        &[
            &qv,
            &t("f32", &[], &[1.]),
            &t("i64", &[], &[0.]),
            &t("f32", &[], &[3.]),
            &t("i64", &[], &[0.]),
        ],
        ty("i64", &[1]),
    );
    assert_eq!(ints(&r), [(1i128 << 60) + (1 << 37)]);
}

#[test]
fn cast_float_to_int_nan_is_zero_and_overflow_wraps_or_clamps() {
    let x = t(
        "f32",
        &[6],
        &[f64::NAN, 2.5, -2.5, 300., -300., f64::INFINITY],
    );
    let r = ok(cast(NE, false), &[&x], ty("i8", &[6]));
    assert_eq!(ints(&r), [0, 2, -2, 44, -44, 0]);
    let r = ok(cast(NE, true), &[&x], ty("i8", &[6]));
    assert_eq!(ints(&r), [0, 2, -2, 127, -128, 127]);
    let r = ok(cast(Rounding::Up, true), &[&x], ty("u4", &[6]));
    assert_eq!(ints(&r), [0, 3, 0, 15, 0, 15]);
}

#[test]
fn cast_between_ints_and_b1() {
    let x = t("i8", &[3], &[-1., 17., 5.]);
    assert_eq!(
        ints(&ok(cast(NE, false), &[&x], ty("u4", &[3]))),
        [15, 1, 5]
    );
    assert_eq!(ints(&ok(cast(NE, true), &[&x], ty("u4", &[3]))), [0, 15, 5]);
    assert_eq!(ints(&ok(cast(NE, true), &[&x], ty("i3", &[3]))), [-1, 3, 3]);
    let b = codes("b1", &[2], &[0, 1]);
    assert_eq!(ints(&ok(cast(NE, false), &[&b], ty("i8", &[2]))), [-1, 1]);
    assert_eq!(
        vals(&ok(cast(NE, false), &[&b], ty("f32", &[2]))),
        [-1., 1.]
    );
    assert_eq!(
        ints(&ok(cast(NE, false), &[&x], ty("b1", &[3]))),
        [-1, 1, 1]
    );
    let f = t("f32", &[4], &[-0.5, 0., 3., f64::NAN]);
    assert_eq!(
        ints(&ok(cast(NE, false), &[&f], ty("b1", &[4]))),
        [-1, 1, 1, 1]
    );
}

#[test]
fn cast_to_floats_rounds_once_with_the_mode() {
    let x = t("i32", &[2], &[2049., -2049.]);
    assert_eq!(
        vals(&ok(cast(NE, false), &[&x], ty("f16", &[2]))),
        [2048., -2048.]
    );
    assert_eq!(
        vals(&ok(cast(Rounding::Up, false), &[&x], ty("f16", &[2]))),
        [2050., -2048.]
    );
    assert_eq!(
        vals(&ok(cast(Rounding::Down, false), &[&x], ty("f16", &[2]))),
        [2048., -2050.]
    );
    let f = t("f32", &[2], &[1000., 0.1]);
    let r = ok(cast(NE, false), &[&f], ty("f8E4M3FN", &[2]));
    assert_eq!(r.codes[0], 0x7f);
    let r = ok(cast(NE, true), &[&f], ty("f8E4M3FN", &[2]));
    assert_eq!(vals(&r)[0], 448.);
    // f32 -> f16 agrees with the half crate on every rounding-sensitive value
    for bits in [
        0x3f800001u32,
        0x477fe000,
        0x477ff000,
        0x33000000,
        0x33000001,
        0xc7800000,
    ] {
        let v = f32::from_bits(bits);
        let x = codes("f32", &[], &[bits as u64]);
        let r = ok(cast(NE, false), &[&x], ty("f16", &[]));
        assert_eq!(r.codes[0] as u16, half::f16::from_f32(v).to_bits(), "{v:e}");
    }
    err(
        cast(NE, false),
        &[&f],
        ty("f16", &[3]),
        "'cast' op: result type tensor<3xf16> should have shape [2]",
    );
}

proptest! {
    #[test]
    fn quantize_dequantize_error_is_at_most_half_a_step(
        scale in 1e-3f64..10.0,
        zp in -20i64..20,
        steps in prop::collection::vec(-100.0f64..100.0, 1..40),
    ) {
        // x chosen so that x/scale + zp stays inside i8's range
        let xs: Vec<f64> = steps.iter().map(|k| k * scale).collect();
        let n = xs.len() as u64;
        let x = t("f64", &[n], &xs);
        let s = t("f64", &[], &[scale]);
        let z = t("i8", &[], &[zp as f64]);
        let qv = ok(q(PT, NE, true), &[&x, &s, &z], ty("i8", &[n]));
        let d = ok(dq(PT), &[&qv, &s, &z], ty("f64", &[n]));
        for (got, want) in vals(&d).iter().zip(&xs) {
            prop_assert!((got - want).abs() <= scale / 2.0 * (1.0 + 1e-12), "{got} vs {want} at scale {scale}");
        }
    }

    #[test]
    fn requantize_is_quantize_of_an_exact_f32_dequantize(
        qs in prop::collection::vec(-2048i64..2048, 1..30),
        m_in in 1u32..4096,
        e_in in -20i32..4,
        s_out_bits in 0x3c00_0000u32..0x4100_0000,
        zp in -100i64..100,
    ) {
        // s_in has 12 significand bits and |q| < 2^11: every (q - 0) · s_in
        // is an f32, so dequantizing to f32 is exact and requantize must
        // equal quantize of it, f32 quotient and all.
        let n = qs.len() as u64;
        let qv = t("i16", &[n], &qs.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let s_in = t("f32", &[], &[m_in as f64 * 2f64.powi(e_in)]);
        let s_out = t("f32", &[], &[f32::from_bits(s_out_bits) as f64]);
        let z_in = t("i16", &[], &[0.]);
        let z = t("i8", &[], &[zp as f64]);
        let rq = OpKind::Requantize {
            in_granularity: PT,
            out_granularity: PT,
            rounding: NE,
            saturate: true,
        };
        let got = ok(rq, &[&qv, &s_in, &z_in, &s_out, &z], ty("i8", &[n]));
        let d = ok(dq(PT), &[&qv, &s_in, &z_in], ty("f32", &[n]));
        let want = ok(q(PT, NE, true), &[&d, &s_out, &z], ty("i8", &[n]));
        prop_assert_eq!(ints(&got), ints(&want));
    }

    #[test]
    fn per_axis_round_trip_error_is_bounded(
        scales in prop::collection::vec(1e-2f64..4.0, 1..6),
        seed in prop::collection::vec(-7.0f64..7.0, 6),
    ) {
        let c = scales.len();
        let xs: Vec<f64> = (0..3 * c).map(|i| seed[i % 6] * scales[i % c]).collect();
        let x = t("f32", &[3, c as u64], &xs);
        let s = t("f64", &[c as u64], &scales);
        let g = Granularity::PerAxis { axis: 1 };
        let qv = ok(q(g.clone(), NE, true), &[&x, &s], ty("i4", &[3, c as u64]));
        let d = ok(dq(g), &[&qv, &s], ty("f64", &[3, c as u64]));
        let xv = vals(&x);
        for (i, got) in vals(&d).iter().enumerate() {
            prop_assert!((got - xv[i]).abs() <= scales[i % c] / 2.0 * (1.0 + 1e-12));
        }
    }
}

fn stochastic(seed: u64, bits: u32) -> Option<lowbit_numerics::StochasticRounding> {
    lowbit_numerics::StochasticRounding::new(seed, bits).ok()
}

fn sq(g: Granularity, seed: u64, bits: u32) -> OpKind {
    OpKind::Quantize {
        granularity: g,
        rounding: NE,
        saturate: true,
        stochastic: stochastic(seed, bits),
    }
}

fn scast(seed: u64, bits: u32, saturate: bool) -> OpKind {
    OpKind::Cast {
        rounding: NE,
        saturate,
        stochastic: stochastic(seed, bits),
    }
}

#[test]
fn stochastic_quantize_is_seeded_per_element_and_unbiased() {
    let n = 4096;
    // x / s = 2.25 + k for k in 0..4: each element rounds to one of its two
    // neighbours, up with probability 1/4 (exact in 8 random bits).
    let xs: Vec<f64> = (0..n).map(|i| (2.25 + (i % 4) as f64) * 0.5).collect();
    let x = t("f32", &[64, 64], &xs);
    let s = t("f32", &[], &[0.5]);
    let r = ok(sq(PT, 11, 8), &[&x, &s], ty("i8", &[64, 64]));
    let again = ok(sq(PT, 11, 8), &[&x, &s], ty("i8", &[64, 64]));
    assert_eq!(r.codes, again.codes, "same seed, same codes");
    let other = ok(sq(PT, 12, 8), &[&x, &s], ty("i8", &[64, 64]));
    assert_ne!(r.codes, other.codes, "another seed draws other bits");
    // Element i uses the stream's bits for index i (the numerics encoder).
    let sr = stochastic(11, 8).unwrap();
    let i8t = el("i8");
    for (i, (&c, &v)) in r.codes.iter().zip(&xs).enumerate() {
        assert_eq!(c, sr.encode(&i8t, v / 0.5, i as u64, true), "element {i}");
    }
    let got = ints(&r);
    let ups = got
        .iter()
        .enumerate()
        .filter(|&(i, &q)| q as f64 > 2.25 + (i % 4) as f64)
        .count();
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, &q)| (q - 2 - (i % 4) as i128) as u32 <= 1),
        "every element rounds to a neighbour"
    );
    // Binomial(4096, 1/4): mean 1024, sd 27.7; 5 sd either side.
    assert!((885..=1163).contains(&ups), "{ups} of {n} rounded up");
    // A zero point is added after the stochastic rounding.
    let z = t("i8", &[], &[-3.]);
    let rz = ok(sq(PT, 11, 8), &[&x, &s, &z], ty("i8", &[64, 64]));
    let shifted: Vec<i128> = got.iter().map(|v| v - 3).collect();
    assert_eq!(ints(&rz), shifted);
}

#[test]
fn stochastic_quantize_to_a_float_format() {
    let xs: Vec<f64> = (0..256).map(|i| 0.3 + i as f64 / 64.0).collect();
    let x = t("f32", &[256], &xs);
    let s = t("f32", &[], &[0.25]);
    let r = ok(sq(PT, 99, 16), &[&x, &s], ty("f8E4M3FN", &[256]));
    let sr = stochastic(99, 16).unwrap();
    let e4m3 = el("f8E4M3FN");
    for (i, &c) in r.codes.iter().enumerate() {
        let v = xs[i] as f32 as f64 / 0.25;
        assert_eq!(c, sr.encode(&e4m3, v, i as u64, true));
        let lo = e4m3.encode(v, Rounding::Down, true);
        let hi = e4m3.encode(v, Rounding::Up, true);
        assert!(c == lo || c == hi, "{v}: {c:#x} not in [{lo:#x}, {hi:#x}]");
    }
    let nearest = ok(q(PT, NE, true), &[&x, &s], ty("f8E4M3FN", &[256]));
    assert_ne!(r.codes, nearest.codes);
}

#[test]
fn stochastic_casts() {
    // float -> int: NaN still gives 0, saturation still clamps.
    let x = t("f32", &[6], &[f64::NAN, 0.5, -0.5, 300.0, -1.75, 7.0]);
    let r = ok(scast(5, 32, true), &[&x], ty("i8", &[6]));
    let got = ints(&r);
    assert_eq!(got[0], 0);
    assert!(got[1] == 0 || got[1] == 1);
    assert!(got[2] == 0 || got[2] == -1);
    assert_eq!(got[3], 127);
    assert!(got[4] == -1 || got[4] == -2);
    assert_eq!(got[5], 7, "exact values are kept");
    assert_eq!(ok(scast(5, 32, true), &[&x], ty("i8", &[6])).codes, r.codes);
    // int -> float: 17 lies between the f8E4M3FN values 16 and 18.
    let ints_in = t("i32", &[512], &[17.0; 512]);
    let r = ok(scast(1, 8, false), &[&ints_in], ty("f8E4M3FN", &[512]));
    let v = vals(&r);
    assert!(v.iter().all(|&y| y == 16.0 || y == 18.0), "{v:?}");
    let ups = v.iter().filter(|&&y| y == 18.0).count();
    assert!((180..=332).contains(&ups), "{ups} of 512 rounded up");
    // float -> float.
    let f = t("f32", &[3], &[1.0 / 3.0, 2.0, -1.0 / 3.0]);
    let r = ok(scast(3, 24, false), &[&f], ty("f16", &[3]));
    let sr = stochastic(3, 24).unwrap();
    let f16 = el("f16");
    for (i, &c) in r.codes.iter().enumerate() {
        let want = sr.encode(&f16, (vals(&f)[i] as f32) as f64, i as u64, false);
        assert_eq!(c, want);
    }
    assert_eq!(vals(&r)[1], 2.0);
}

#[test]
fn absmax_scale_per_block_with_a_partial_last_block() {
    let am = |block, qmax| OpKind::AbsMaxScale { block, qmax };
    // Rows of 5 in blocks of 2: [1, -3 | 0.5, 0 | -7], [0, -0 | 2, 2 | NaN].
    let x = t(
        "f32",
        &[2, 5],
        &[1.0, -3.0, 0.5, 0.0, -7.0, 0.0, -0.0, 2.0, 2.0, f64::NAN],
    );
    let r = ok(am(2, 127), &[&x], ty("f32", &[2, 3]));
    let v = vals(&r);
    for (g, amax) in v.iter().zip([3.0f32, 0.5, 7.0, 0.0, 2.0]) {
        // The f32 quotient, rounded once.
        assert_eq!(*g, f64::from(amax / 127.0), "{v:?}");
    }
    assert!(v[5].is_nan(), "a NaN in the block gives NaN: {v:?}");
    // f16 results round the quotient to f16 (3 / 7 = 0.42857.. -> 0.4285).
    let h = t("f16", &[1, 2], &[-3.0, 1.0]);
    let r = ok(am(4, 7), &[&h], ty("f16", &[1, 1]));
    assert_eq!(vals(&r), [f64::from(half::f16::from_f64(3.0 / 7.0))]);
    // With quantize: the all-zero block's 0/0 gives code 0.
    let s = ok(am(2, 127), &[&x], ty("f32", &[2, 3]));
    let g = Granularity::Blocked {
        blocks: vec![(1, 2)],
    };
    let qx = t(
        "f32",
        &[2, 5],
        &[1.0, -3.0, 0.5, 0.0, -7.0, 0.0, -0.0, 2.0, 2.0, 1.0],
    );
    let r = ok(q(g, NE, true), &[&qx, &s], ty("i8", &[2, 5]));
    // The last block's scale is NaN (its x had a NaN): code 0 too.
    assert_eq!(ints(&r), [42, -127, 127, 0, -127, 0, 0, 127, 127, 0]);
    err(am(2, 127), &[&x], ty("f32", &[2, 2]), "should have shape");
    err(
        am(2, 127),
        &[&t("i8", &[2], &[1., 2.])],
        ty("i8", &[1]),
        "float",
    );
}
