//! qmatmul / matmul_int / requant_dyadic: each equals the unfused ops it
//! stands for, bit for bit; the bit-serial schedule equals the direct one.

mod common;
use common::*;
use lowbit_ir::{
    Activation, BinaryOp, Granularity, IntSchedule, OpKind, Overflow, QRequant, Rounding,
};
use proptest::prelude::*;

fn qmm(g: Granularity, zp: bool, bias: bool, lhs: bool, act: Activation) -> OpKind {
    OpKind::QMatMul {
        granularity: g,
        dequant_type: el("f16"),
        has_zero_point: zp,
        has_bias: bias,
        weight_lhs: lhs,
        activation: act,
        requant: None,
    }
}

fn mmi(s: IntSchedule, ov: Overflow) -> OpKind {
    OpKind::MatMulInt {
        overflow: ov,
        schedule: s,
    }
}

fn dyadic(m: i64, shift: u32, r: Rounding) -> OpKind {
    OpKind::RequantDyadic {
        multiplier: vec![m],
        shift: vec![shift],
        axis: None,
        rounding: r,
        saturate: true,
    }
}

/// The unfused chain `act(matmul(x, dequantize(w)) + bias)`.
fn unfused(
    g: &Granularity,
    act: Activation,
    x: &lowbit_ir::Tensor,
    wq: &[&lowbit_ir::Tensor],
    bias: Option<&lowbit_ir::Tensor>,
    out: &[u64],
) -> lowbit_ir::Tensor {
    let wd = ok(
        OpKind::Dequantize {
            granularity: g.clone(),
        },
        wq,
        ty("f16", &wq[0].shape),
    );
    let mm = OpKind::MatMul {
        overflow: Overflow::Wrap,
    };
    let mut y = ok(mm, &[x, &wd], ty("f32", out));
    if let Some(b) = bias {
        let add = OpKind::Binary {
            op: BinaryOp::Add,
            overflow: Overflow::Wrap,
        };
        y = ok(add, &[&y, b], ty("f32", out));
    }
    let k = match act {
        Activation::None => return y,
        Activation::Relu => OpKind::Relu,
        Activation::Gelu => OpKind::Gelu { tanh: false },
        Activation::GeluTanh => OpKind::Gelu { tanh: true },
        Activation::Silu => OpKind::Silu,
    };
    ok(k, &[&y], ty("f32", out))
}

/// The `2x3 · 3x2` qmatmul both equivalence tests below use: f32
/// activations, i4 weights with per-column scales and zero points, an f32
/// bias, and the per-column granularity that goes with them.
fn small_qmatmul() -> (
    lowbit_ir::Tensor,
    lowbit_ir::Tensor,
    lowbit_ir::Tensor,
    lowbit_ir::Tensor,
    lowbit_ir::Tensor,
    Granularity,
) {
    (
        t("f32", &[2, 3], &[0.3, -1.7, 2.25, 1.1, 0.0, -0.6]),
        t("i4", &[3, 2], &[-8., 7., 3., -1., 0., 5.]),
        t("f32", &[2], &[0.1, 0.37]),
        t("i4", &[2], &[1., -2.]),
        t("f32", &[2], &[-0.5, 0.25]),
        Granularity::PerAxis { axis: 1 },
    )
}

#[test]
fn qmatmul_equals_the_unfused_chain() {
    let (x, w, s, z, b, g) = small_qmatmul();
    for act in [
        Activation::None,
        Activation::Relu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
    ] {
        let got = ok(
            qmm(g.clone(), true, true, false, act),
            &[&x, &w, &s, &z, &b],
            ty("f32", &[2, 2]),
        );
        let want = unfused(&g, act, &x, &[&w, &s, &z], Some(&b), &[2, 2]);
        assert_eq!(got.codes, want.codes, "{act:?}");
    }
    let got = ok(
        qmm(g.clone(), false, false, false, Activation::None),
        &[&x, &w, &s],
        ty("f32", &[2, 2]),
    );
    assert_eq!(
        got.codes,
        unfused(&g, Activation::None, &x, &[&w, &s], None, &[2, 2]).codes
    );
}

#[test]
fn qmatmul_weight_on_the_left() {
    // y = dequant(w)[2x3] @ x[3x1]
    let w = t("u4", &[2, 3], &[1., 2., 3., 15., 0., 8.]);
    let s = t("f32", &[], &[0.5]);
    let x = t("f32", &[3, 1], &[1.0, 2.0, -1.0]);
    let got = ok(
        qmm(Granularity::PerTensor, false, false, true, Activation::None),
        &[&x, &w, &s],
        ty("f32", &[2, 1]),
    );
    assert_eq!(vals(&got), [0.5 * (1. + 4. - 3.), 0.5 * (15. + 0. - 8.)]);
}

#[test]
fn qmatmul_operand_count_follows_the_attributes() {
    let x = t("f32", &[1, 2], &[1., 2.]);
    let w = t("i8", &[2, 1], &[1., 2.]);
    let s = t("f32", &[], &[1.]);
    err(
        qmm(Granularity::PerTensor, true, false, false, Activation::None),
        &[&x, &w, &s],
        ty("f32", &[1, 1]),
        "expected 4 operands, got 3",
    );
}

/// `qmatmul` with a requantize epilogue equals `quantize` of the float
/// `qmatmul`, for every rounding, saturating or wrapping, per-tensor or
/// per-column output scales, with and without an output zero point.
#[test]
fn qmatmul_requant_epilogue_equals_quantize_of_the_float_result() {
    let (x, w, s, z, b, g) = small_qmatmul();
    let float = ok(
        qmm(g.clone(), true, true, false, Activation::Silu),
        &[&x, &w, &s, &z, &b],
        ty("f32", &[2, 2]),
    );
    let mut distinct = std::collections::BTreeSet::new();
    for rounding in [Rounding::NearestEven, Rounding::Down, Rounding::Up] {
        for saturate in [true, false] {
            for (og, sy, zy) in [
                (Granularity::PerTensor, t("f32", &[], &[0.01]), None),
                (
                    Granularity::PerAxis { axis: 1 },
                    t("f32", &[2], &[0.02, 0.003]),
                    Some(t("i8", &[2], &[3., -100.])),
                ),
            ] {
                let rq = QRequant {
                    float_type: el("f32"),
                    granularity: og.clone(),
                    rounding,
                    saturate,
                    has_zero_point: zy.is_some(),
                };
                let mut kind = qmm(g.clone(), true, true, false, Activation::Silu);
                if let OpKind::QMatMul { requant, .. } = &mut kind {
                    *requant = Some(rq);
                }
                let mut ops = vec![&x, &w, &s, &z, &b, &sy];
                ops.extend(zy.as_ref());
                let got = ok(kind, &ops, ty("i8", &[2, 2]));
                let mut qops = vec![&float, &sy];
                qops.extend(zy.as_ref());
                let want = ok(
                    OpKind::Quantize {
                        granularity: og,
                        rounding,
                        saturate,
                        stochastic: None,
                    },
                    &qops,
                    ty("i8", &[2, 2]),
                );
                assert_eq!(got.codes, want.codes, "{rounding:?} {saturate}");
                distinct.insert(got.codes);
            }
        }
    }
    // The cases are not all the same output (the comparison is not vacuous).
    assert!(distinct.len() >= 4, "{distinct:?}");
}

#[test]
fn matmul_int_subtracts_zero_points_exactly() {
    let a = t("u8", &[2, 3], &[0., 255., 128., 7., 200., 1.]);
    let b = t("i8", &[3, 2], &[-128., 127., 5., -6., 0., 1.]);
    let za = t("u8", &[], &[128.]);
    let zb = t("i8", &[1], &[-3.]);
    let want: Vec<i128> = {
        let (av, bv) = (ints(&a), ints(&b));
        let mut out = vec![];
        for i in 0..2 {
            for j in 0..2 {
                out.push(
                    (0..3)
                        .map(|p| (av[i * 3 + p] - 128) * (bv[p * 2 + j] + 3))
                        .sum(),
                );
            }
        }
        out
    };
    for s in [
        IntSchedule::Direct,
        IntSchedule::BitSerial,
        IntSchedule::Amx,
    ] {
        let r = ok(
            mmi(s, Overflow::Wrap),
            &[&a, &b, &za, &zb],
            ty("i32", &[2, 2]),
        );
        assert_eq!(ints(&r), want, "{s:?}");
    }
    // Saturation and wrapping of the exact sum into i8.
    let r = ok(
        mmi(IntSchedule::BitSerial, Overflow::Saturate),
        &[&a, &b, &za, &zb],
        ty("i8", &[2, 2]),
    );
    assert_eq!(
        ints(&r),
        want.iter()
            .map(|v| (*v).clamp(-128, 127))
            .collect::<Vec<_>>()
    );
}

#[test]
fn matmul_int_rejects_floats_and_bad_zero_points() {
    let a = t("i4", &[1, 2], &[1., 2.]);
    let f = t("f32", &[2, 1], &[1., 2.]);
    err(
        mmi(IntSchedule::Direct, Overflow::Wrap),
        &[&a, &f],
        ty("i32", &[1, 1]),
        "rhs must be an integer tensor",
    );
    let b = t("i4", &[2, 1], &[1., 2.]);
    let z2 = t("i4", &[2], &[0., 0.]);
    err(
        mmi(IntSchedule::Direct, Overflow::Wrap),
        &[&a, &b, &z2, &z2],
        ty("i32", &[1, 1]),
        "lhs zero point must be one i4 element",
    );
}

#[test]
fn requant_dyadic_rounds_exactly() {
    // acc * 3 / 2^3: 10 -> 3.75, -10 -> -3.75, 4 -> 1.5, -4 -> -1.5, 12 -> 4.5
    let acc = t("i32", &[5], &[10., -10., 4., -4., 12.]);
    let z = t("i8", &[], &[1.]);
    let cases = [
        (Rounding::NearestEven, [4, -4, 2, -2, 4]),
        (Rounding::NearestAway, [4, -4, 2, -2, 5]),
        (Rounding::TowardZero, [3, -3, 1, -1, 4]),
        (Rounding::Up, [4, -3, 2, -1, 5]),
        (Rounding::Down, [3, -4, 1, -2, 4]),
    ];
    for (r, want) in cases {
        let got = ok(dyadic(3, 3, r), &[&acc, &z], ty("i8", &[5]));
        let want: Vec<i128> = want.iter().map(|v| v + 1).collect();
        assert_eq!(ints(&got), want, "{r:?}");
    }
    let big = t("i32", &[2], &[1e6, -1e6]);
    let got = ok(dyadic(1, 0, Rounding::NearestEven), &[&big], ty("i8", &[2]));
    assert_eq!(ints(&got), [127, -128]);
}

#[test]
fn requant_dyadic_per_channel_uses_each_channels_multiplier() {
    // Channel axis 0 of a 2x3 accumulator: row 0 * 3 / 2, row 1 * 1 / 4.
    let acc = t("i32", &[2, 3], &[1., 2., 3., 4., 6., -6.]);
    let k = |axis| OpKind::RequantDyadic {
        multiplier: vec![3, 1],
        shift: vec![1, 2],
        axis: Some(axis),
        rounding: Rounding::NearestEven,
        saturate: true,
    };
    let got = ok(k(0), &[&acc], ty("i8", &[2, 3]));
    // 1.5 -> 2, 3 -> 3, 4.5 -> 4; 1 -> 1, 1.5 -> 2, -1.5 -> -2
    assert_eq!(ints(&got), [2, 3, 4, 1, 2, -2]);
    // Along axis 1 the same lists do not fit three channels.
    let e = eval(k(1), &[&acc], ty("i8", &[2, 3])).unwrap_err();
    assert!(e.to_string().contains("for 3 channels"), "{e}");
}

#[test]
fn requant_dyadic_matches_quantize_of_the_exact_value() {
    // With a power-of-two output scale, quantize(acc * 2^-s) is the dyadic op.
    let acc: Vec<f64> = (-40..40).map(|v| v as f64 * 1.5).collect();
    let acc = t(
        "i32",
        &[80],
        &acc.iter().map(|v| v.trunc()).collect::<Vec<_>>(),
    );
    let as_float = ok(
        OpKind::Cast {
            rounding: Rounding::NearestEven,
            saturate: false,
            stochastic: None,
        },
        &[&acc],
        ty("f32", &[80]),
    );
    let q = ok(
        OpKind::Quantize {
            granularity: Granularity::PerTensor,
            rounding: Rounding::NearestEven,
            saturate: true,
            stochastic: None,
        },
        &[&as_float, &t("f32", &[], &[8.0])],
        ty("i8", &[80]),
    );
    let d = ok(
        dyadic(1, 3, Rounding::NearestEven),
        &[&acc],
        ty("i8", &[80]),
    );
    assert_eq!(q.codes, d.codes);
}

fn int_matrix(
    elem: &'static str,
    rows: usize,
    cols: usize,
) -> impl Strategy<Value = lowbit_ir::Tensor> {
    let e = el(elem);
    let (lo, hi) = e.int_range().unwrap();
    proptest::collection::vec(lo..=hi, rows * cols).prop_map(move |v| {
        let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        t(elem, &[rows as u64, cols as u64], &f)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn bit_serial_equals_direct(
        (a, b, za, zb) in (1usize..4, 1usize..70, 1usize..4).prop_flat_map(|(m, k, n)| {
            (
                prop_oneof![int_matrix("i3", m, k), int_matrix("u2", m, k), int_matrix("i8", m, k)],
                prop_oneof![int_matrix("u4", k, n), int_matrix("i2", k, n), int_matrix("u1", k, n)],
                any::<u8>(),
                any::<u8>(),
            )
        })
    ) {
        let zero = |t: &lowbit_ir::Tensor, pick: u8| {
            let (lo, hi) = t.elem.int_range().unwrap();
            let v = lo + (pick as i128) % (hi - lo + 1);
            lowbit_ir::Tensor::from_f64(t.elem, vec![], &[v as f64]).unwrap()
        };
        let (za, zb) = (zero(&a, za), zero(&b, zb));
        let out = ty("i32", &[a.shape[0], b.shape[1]]);
        let d = ok(mmi(IntSchedule::Direct, Overflow::Wrap), &[&a, &b, &za, &zb], out.clone());
        let s = ok(mmi(IntSchedule::BitSerial, Overflow::Wrap), &[&a, &b, &za, &zb], out.clone());
        prop_assert_eq!(&d.codes, &s.codes);
        // Without zero points both equal the plain integer matmul.
        let plain = ok(OpKind::MatMul { overflow: Overflow::Wrap }, &[&a, &b], out.clone());
        let s0 = ok(mmi(IntSchedule::BitSerial, Overflow::Wrap), &[&a, &b], out);
        prop_assert_eq!(&plain.codes, &s0.codes);
    }
}
