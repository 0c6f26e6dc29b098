//! Binary arithmetic (broadcasting, wrap/saturate, division), activations,
//! and bit-exact cross-checks of float results against native arithmetic.

mod common;
use common::*;
use lowbit_ir::{BinaryOp, OpKind, Overflow};
use proptest::prelude::*;

fn bin(op: BinaryOp, ov: Overflow) -> OpKind {
    OpKind::Binary { op, overflow: ov }
}
const ADD: BinaryOp = BinaryOp::Add;
const SUB: BinaryOp = BinaryOp::Sub;
const MUL: BinaryOp = BinaryOp::Mul;
const DIV: BinaryOp = BinaryOp::Div;
const W: Overflow = Overflow::Wrap;
const S: Overflow = Overflow::Saturate;

#[test]
fn float_add_broadcasts_a_row() {
    let a = t("f32", &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let b = t("f32", &[3], &[10., 20., 30.]);
    let r = ok(bin(ADD, W), &[&a, &b], ty("f32", &[2, 3]));
    assert_eq!(vals(&r), [11., 22., 33., 14., 25., 36.]);
}

#[test]
fn float_mul_broadcasts_to_an_outer_product() {
    let a = t("f16", &[2, 1], &[2., -3.]);
    let b = t("f16", &[1, 3], &[1., 0.5, 4.]);
    let r = ok(bin(MUL, W), &[&a, &b], ty("f16", &[2, 3]));
    assert_eq!(vals(&r), [2., 1., 8., -3., -1.5, -12.]);
    // scalar against a 3-D tensor
    let s = t("f16", &[], &[0.5]);
    let c = t("f16", &[2, 1, 2], &[1., 2., 3., 4.]);
    let r = ok(bin(SUB, W), &[&c, &s], ty("f16", &[2, 1, 2]));
    assert_eq!(vals(&r), [0.5, 1.5, 2.5, 3.5]);
}

#[test]
fn broadcast_and_type_errors_name_the_op() {
    let a = t("f32", &[2, 3], &[0.; 6]);
    let b = t("f32", &[2], &[0.; 2]);
    err(
        bin(ADD, W),
        &[&a, &b],
        ty("f32", &[2, 3]),
        "'add' op: shapes [2, 3] and [2] do not broadcast",
    );
    let c = t("f32", &[3], &[0.; 3]);
    err(
        bin(MUL, W),
        &[&a, &c],
        ty("f32", &[3, 2]),
        "'mul' op: result type tensor<3x2xf32> should have shape [2, 3]",
    );
    let i = t("i8", &[3], &[0.; 3]);
    err(
        bin(SUB, W),
        &[&a, &i],
        ty("f32", &[2, 3]),
        "one element type",
    );
    err(
        bin(ADD, W),
        &[&a],
        ty("f32", &[2, 3]),
        "'add' op: expected 2 operands, got 1",
    );
    let e = lowbit_interp::eval_op(&bin(ADD, W), &[&a, &a], &[]).unwrap_err();
    assert!(e.to_string().contains("expected 1 result type"), "{e}");
}

#[test]
fn int_add_wraps_or_saturates() {
    let a = t("i8", &[2], &[100., -100.]);
    assert_eq!(ints(&ok(bin(ADD, W), &[&a, &a], ty("i8", &[2]))), [-56, 56]);
    assert_eq!(
        ints(&ok(bin(ADD, S), &[&a, &a], ty("i8", &[2]))),
        [127, -128]
    );
    let u = t("u8", &[1], &[16.]);
    assert_eq!(ints(&ok(bin(MUL, W), &[&u, &u], ty("u8", &[1]))), [0]);
    assert_eq!(ints(&ok(bin(MUL, S), &[&u, &u], ty("u8", &[1]))), [255]);
}

#[test]
fn odd_widths_i3_and_u5() {
    let a = t("i3", &[2], &[3., -4.]);
    let b = t("i3", &[2], &[1., -1.]);
    assert_eq!(ints(&ok(bin(ADD, W), &[&a, &b], ty("i3", &[2]))), [-4, 3]);
    assert_eq!(ints(&ok(bin(ADD, S), &[&a, &b], ty("i3", &[2]))), [3, -4]);
    assert_eq!(ints(&ok(bin(MUL, W), &[&a, &a], ty("i3", &[2]))), [1, 0]); // 9 -> 1, 16 -> 0
    let x = t("u5", &[3], &[3., 31., 20.]);
    let y = t("u5", &[3], &[5., 1., 3.]);
    assert_eq!(
        ints(&ok(bin(SUB, W), &[&x, &y], ty("u5", &[3]))),
        [30, 30, 17]
    );
    assert_eq!(
        ints(&ok(bin(SUB, S), &[&x, &y], ty("u5", &[3]))),
        [0, 30, 17]
    );
    assert_eq!(
        ints(&ok(bin(ADD, W), &[&x, &y], ty("u5", &[3]))),
        [8, 0, 23]
    );
    assert_eq!(
        ints(&ok(bin(DIV, W), &[&x, &y], ty("u5", &[3]))),
        [0, 31, 6]
    );
}

#[test]
fn u64_and_i64_products_are_exact_before_wrapping() {
    let big = codes("u64", &[2], &[1 << 63, u64::MAX]);
    let four = codes("u64", &[2], &[4, u64::MAX]);
    let w = ok(bin(MUL, W), &[&big, &four], ty("u64", &[2]));
    assert_eq!(w.codes, [0, 1]); // 2^65 mod 2^64, (2^64-1)^2 mod 2^64
    let s = ok(bin(MUL, S), &[&big, &four], ty("u64", &[2]));
    assert_eq!(s.codes, [u64::MAX, u64::MAX]);
    let m = t("i64", &[1], &[i64::MIN as f64]);
    let n1 = t("i64", &[1], &[-1.]);
    assert_eq!(
        ints(&ok(bin(MUL, S), &[&m, &n1], ty("i64", &[1]))),
        [i64::MAX as i128]
    );
    assert_eq!(
        ints(&ok(bin(DIV, W), &[&m, &n1], ty("i64", &[1]))),
        [i64::MIN as i128]
    );
    assert_eq!(
        ints(&ok(bin(DIV, S), &[&m, &n1], ty("i64", &[1]))),
        [i64::MAX as i128]
    );
    let umax = codes("u64", &[1], &[u64::MAX]);
    let one = codes("u64", &[1], &[1]);
    assert_eq!(ok(bin(ADD, W), &[&umax, &one], ty("u64", &[1])).codes, [0]);
    assert_eq!(
        ok(bin(ADD, S), &[&umax, &one], ty("u64", &[1])).codes,
        [u64::MAX]
    );
}

#[test]
fn int_division_truncates_toward_zero() {
    let a = t("i8", &[4], &[7., -7., 7., -7.]);
    let b = t("i8", &[4], &[2., 2., -2., -2.]);
    assert_eq!(
        ints(&ok(bin(DIV, W), &[&a, &b], ty("i8", &[4]))),
        [3, -3, -3, 3]
    );
    let m = t("i8", &[1], &[-128.]);
    let n = t("i8", &[1], &[-1.]);
    assert_eq!(ints(&ok(bin(DIV, W), &[&m, &n], ty("i8", &[1]))), [-128]);
    assert_eq!(ints(&ok(bin(DIV, S), &[&m, &n], ty("i8", &[1]))), [127]);
}

#[test]
fn int_division_by_zero_is_an_error() {
    let a = t("i32", &[3], &[1., 2., 3.]);
    let b = t("i32", &[3], &[1., 0., 1.]);
    let e = err(bin(DIV, W), &[&a, &b], ty("i32", &[3]), "division by zero");
    assert_eq!(e, "'div' op: integer division by zero");
    // float division by zero is IEEE
    let x = t("f32", &[3], &[1., -1., 0.]);
    let z = t("f32", &[3], &[0., 0., 0.]);
    let r = vals(&ok(bin(DIV, W), &[&x, &z], ty("f32", &[3])));
    assert_eq!(&r[..2], [f64::INFINITY, f64::NEG_INFINITY]);
    assert!(r[2].is_nan());
}

#[test]
fn float_overflow_follows_the_format() {
    let a = t("f8E4M3FN", &[1], &[448.]);
    assert_eq!(
        ok(bin(ADD, W), &[&a, &a], ty("f8E4M3FN", &[1])).codes,
        [0x7f]
    ); // NaN: no inf
    let b = t("f16", &[1], &[65504.]);
    assert_eq!(ok(bin(MUL, W), &[&b, &b], ty("f16", &[1])).codes, [0x7c00]);
    let c = t("f4E2M1FN", &[2], &[6., -6.]);
    assert_eq!(
        vals(&ok(bin(ADD, W), &[&c, &c], ty("f4E2M1FN", &[2]))),
        [6., -6.]
    );
    // Ties round to the even code: 2.5 -> 2 (code 4), 5 -> 4 (code 6).
    let d = t("f4E2M1FN", &[2], &[1.5, 3.]);
    let e = t("f4E2M1FN", &[2], &[1., 2.]);
    let r = ok(bin(ADD, W), &[&d, &e], ty("f4E2M1FN", &[2]));
    assert_eq!(vals(&r), [2., 4.]);
}

proptest! {
    #[test]
    fn f32_arithmetic_matches_native(a in any::<u32>(), b in any::<u32>()) {
        let (x, y) = (f32::from_bits(a), f32::from_bits(b));
        let ta = codes("f32", &[], &[a as u64]);
        let tb = codes("f32", &[], &[b as u64]);
        for (op, native) in [(ADD, x + y), (SUB, x - y), (MUL, x * y), (DIV, x / y)] {
            let r = ok(bin(op, W), &[&ta, &tb], ty("f32", &[]));
            let got = f32::from_bits(r.codes[0] as u32);
            prop_assert!(got.to_bits() == native.to_bits() || (got.is_nan() && native.is_nan()),
                "{op:?} {x:e} {y:e}: {got:e} vs {native:e}");
        }
    }

    #[test]
    fn f16_and_bf16_arithmetic_match_half(a in any::<u16>(), b in any::<u16>()) {
        use half::{bf16, f16};
        let (x, y) = (f16::from_bits(a), f16::from_bits(b));
        let (p, q) = (bf16::from_bits(a), bf16::from_bits(b));
        let ta = codes("f16", &[], &[a as u64]);
        let tb = codes("f16", &[], &[b as u64]);
        let ba = codes("bf16", &[], &[a as u64]);
        let bb = codes("bf16", &[], &[b as u64]);
        let cases = [(ADD, x + y, p + q), (SUB, x - y, p - q), (MUL, x * y, p * q), (DIV, x / y, p / q)];
        for (op, h, bh) in cases {
            let r = ok(bin(op, W), &[&ta, &tb], ty("f16", &[])).codes[0] as u16;
            prop_assert!(r == h.to_bits() || (f16::from_bits(r).is_nan() && h.is_nan()), "{op:?} f16 {x} {y}");
            let r = ok(bin(op, W), &[&ba, &bb], ty("bf16", &[])).codes[0] as u16;
            prop_assert!(r == bh.to_bits() || (bf16::from_bits(r).is_nan() && bh.is_nan()), "{op:?} bf16 {p} {q}");
        }
    }

    #[test]
    fn i8_arithmetic_matches_native(a in any::<i8>(), b in any::<i8>()) {
        let ta = t("i8", &[], &[a as f64]);
        let tb = t("i8", &[], &[b as f64]);
        let get = |op, ov| ok(bin(op, ov), &[&ta, &tb], ty("i8", &[])).codes[0] as u8 as i8;
        prop_assert_eq!(get(ADD, W), a.wrapping_add(b));
        prop_assert_eq!(get(ADD, S), a.saturating_add(b));
        prop_assert_eq!(get(SUB, W), a.wrapping_sub(b));
        prop_assert_eq!(get(SUB, S), a.saturating_sub(b));
        prop_assert_eq!(get(MUL, W), a.wrapping_mul(b));
        prop_assert_eq!(get(MUL, S), a.saturating_mul(b));
        if b != 0 {
            prop_assert_eq!(get(DIV, W), a.wrapping_div(b));
            prop_assert_eq!(get(DIV, S), a.saturating_div(b));
        }
    }
}

#[test]
fn relu_on_floats_and_ints() {
    let x = t("f32", &[5], &[-1., 0., 2., f64::NAN, -0.0]);
    let r = ok(OpKind::Relu, &[&x], ty("f32", &[5]));
    let v = vals(&r);
    assert_eq!(v[..3], [0., 0., 2.]);
    assert!(v[3].is_nan());
    assert_eq!(r.codes[4], 0, "relu(-0) is +0");
    let i = t("i4", &[3], &[-8., 7., 0.]);
    assert_eq!(ints(&ok(OpKind::Relu, &[&i], ty("i4", &[3]))), [0, 7, 0]);
    let b = codes("b1", &[2], &[0, 1]);
    err(
        OpKind::Relu,
        &[&b],
        ty("b1", &[2]),
        "'relu' op: relu is not defined on b1",
    );
    err(
        OpKind::Relu,
        &[&i],
        ty("i8", &[3]),
        "keeps the element type",
    );
}

// Reference values from a 100-digit evaluation of the defining formulas.
#[test]
fn gelu_erf_form_matches_reference() {
    let xs = [1., -1., -3., -10., 0.5, 2.5, 0.];
    let want = [
        0.8413447460685429,
        -0.15865525393145705,
        -0.0040496940948902835,
        -7.619853024160526e-23,
        0.34573123063700656,
        2.4844758366855597,
        0.,
    ];
    let x = t("f64", &[7], &xs);
    let r = vals(&ok(OpKind::Gelu { tanh: false }, &[&x], ty("f64", &[7])));
    for i in 0..7 {
        assert!(
            ulps(r[i], want[i]) <= 4.0,
            "gelu({}) = {} vs {}",
            xs[i],
            r[i],
            want[i]
        );
    }
    // f32 results round the f64 value once
    let x32 = t("f32", &[7], &xs);
    let r32 = vals(&ok(OpKind::Gelu { tanh: false }, &[&x32], ty("f32", &[7])));
    for i in 0..7 {
        assert_eq!(r32[i], want[i] as f32 as f64);
    }
}

#[test]
fn gelu_keeps_full_precision_in_the_negative_tail() {
    // 100-digit references for the exact x: 0.5·x·erfc(−x/√2)
    let cases = [
        (-0.1, -0.0460172162722971),
        (-0.75, -0.16997051428265114),
        (-1.5, -0.1002108019032871),
        (-2.2, -0.030587584529696933),
        (-4.0, -0.0001266849673324797),
        (-5.5, -1.0444259356238245e-07),
        (-7.0, -8.958687807200846e-12),
        (-9.0, -1.0157295653584566e-18),
        (-12.0, -2.1317785344932147e-32),
        (-20.0, -5.507248237212468e-88),
        (0.3, 0.1853734266566858),
        (1.7, 1.6242387133104768),
        (3.3, 3.2984047003301336),
        (6.0, 5.999999994080474),
    ];
    let xs: Vec<f64> = cases.iter().map(|c| c.0).collect();
    let n = xs.len() as u64;
    let x = t("f64", &[n], &xs);
    let r = vals(&ok(OpKind::Gelu { tanh: false }, &[&x], ty("f64", &[n])));
    for (got, (x, want)) in r.iter().zip(cases) {
        assert!(ulps(*got, want) <= 4.0, "gelu({x}) = {got:e} vs {want:e}");
    }
}

#[test]
fn gelu_tanh_and_silu_match_reference() {
    let x = t("f64", &[3], &[1., -1., 3.]);
    let r = vals(&ok(OpKind::Gelu { tanh: true }, &[&x], ty("f64", &[3])));
    let want = [0.8411919906082767, -0.1588080093917233, 2.996362607918227];
    for i in 0..3 {
        assert!(ulps(r[i], want[i]) <= 4.0, "{} vs {}", r[i], want[i]);
    }
    let x = t("f64", &[3], &[1., -2., 20.]);
    let r = vals(&ok(OpKind::Silu, &[&x], ty("f64", &[3])));
    let want = [0.7310585786300049, -0.23840584404423512, 19.99999995877693];
    for i in 0..3 {
        assert!(ulps(r[i], want[i]) <= 4.0, "{} vs {}", r[i], want[i]);
    }
    // an f32 operand may produce a bf16 result
    let x = t("f32", &[1], &[1.]);
    let r = ok(OpKind::Silu, &[&x], ty("bf16", &[1]));
    assert_eq!(
        vals(&r),
        [half::bf16::from_f64(0.7310585786300049).to_f64()]
    );
    let i = t("i8", &[1], &[1.]);
    err(
        OpKind::Silu,
        &[&i],
        ty("f32", &[1]),
        "'silu' op: the operand must have a float element type, got i8",
    );
}

/// The infinities follow the ONNX formula evaluated in IEEE arithmetic (and
/// onnxruntime): `gelu(+inf) = +inf`, `gelu(-inf) = -inf · 0 = NaN`, in both
/// forms.
#[test]
fn gelu_at_the_infinities_follows_the_onnx_formula() {
    for tanh in [false, true] {
        let x = t("f32", &[3], &[f64::INFINITY, f64::NEG_INFINITY, -50.0]);
        let r = vals(&ok(OpKind::Gelu { tanh }, &[&x], ty("f32", &[3])));
        assert_eq!(r[0], f64::INFINITY, "tanh = {tanh}");
        assert!(r[1].is_nan(), "tanh = {tanh}: {}", r[1]);
        assert_eq!(r[2], 0.0, "tanh = {tanh}");
    }
}
