//! The ops the ONNX importer added: unary functions, pow/min/max,
//! log_softmax, reductions, concat, slice, gather, broadcast and conv2d.

mod common;
use common::*;
use lowbit_ir::{BinaryOp, OpKind, Overflow, ReduceOp, UnaryOp};

fn un(op: UnaryOp) -> OpKind {
    OpKind::Unary { op }
}
fn bin(op: BinaryOp) -> OpKind {
    OpKind::Binary {
        op,
        overflow: Overflow::Wrap,
    }
}

#[test]
fn unary_functions_round_once_to_the_result() {
    let x = t("f32", &[4], &[-2.0, -0.0, 0.25, 4.0]);
    let r = ok(un(UnaryOp::Neg), &[&x], ty("f32", &[4]));
    assert_eq!(vals(&r), [2.0, 0.0, -0.25, -4.0]);
    // -(-0.0) is +0.0: check the sign bit
    assert_eq!(r.codes[1], 0);
    let r = ok(un(UnaryOp::Sqrt), &[&x], ty("f32", &[4]));
    let v = vals(&r);
    assert!(v[0].is_nan());
    assert_eq!(v[1].to_bits(), (-0.0f64).to_bits(), "sqrt(-0) = -0");
    assert_eq!(&v[2..], [0.5, 2.0]);
    let r = ok(un(UnaryOp::Sigmoid), &[&x], ty("f32", &[4]));
    assert_eq!(
        vals(&r)[3],
        (1.0 / (1.0 + (-4.0f64).exp())) as f32 as f64,
        "sigmoid(4) rounded once to f32"
    );
    let big = t("f32", &[2], &[-1000.0, 1000.0]);
    let r = ok(un(UnaryOp::Sigmoid), &[&big], ty("f32", &[2]));
    assert_eq!(vals(&r), [0.0, 1.0], "no NaN in either tail");
    let r = ok(un(UnaryOp::Tanh), &[&x], ty("f16", &[4]));
    assert_eq!(vals(&r)[2], half::f16::from_f64(0.25f64.tanh()).to_f64());
    let r = ok(un(UnaryOp::Erf), &[&x], ty("f32", &[4]));
    assert_eq!(vals(&r)[3], 1.0);
    let r = ok(un(UnaryOp::Exp), &[&x], ty("f32", &[4]));
    assert_eq!(vals(&r)[1], 1.0);
}

#[test]
fn integer_neg_wraps_and_float_only_functions_reject_ints() {
    let x = t("i8", &[3], &[-128.0, 5.0, 0.0]);
    let r = ok(un(UnaryOp::Neg), &[&x], ty("i8", &[3]));
    assert_eq!(ints(&r), [-128, -5, 0]);
    err(
        un(UnaryOp::Sqrt),
        &[&x],
        ty("i8", &[3]),
        "float element type",
    );
}

#[test]
fn pow_min_max() {
    let a = t("f32", &[3], &[2.0, 9.0, f64::NAN]);
    let b = t("f32", &[], &[0.5]);
    let r = ok(bin(BinaryOp::Pow), &[&a, &b], ty("f32", &[3]));
    let v = vals(&r);
    assert_eq!(&v[..2], [2f64.sqrt() as f32 as f64, 3.0]);
    assert!(v[2].is_nan());
    let r = ok(bin(BinaryOp::Max), &[&a, &b], ty("f32", &[3]));
    let v = vals(&r);
    assert_eq!(&v[..2], [2.0, 9.0]);
    assert!(v[2].is_nan(), "NaN propagates through max");
    let r = ok(bin(BinaryOp::Min), &[&a, &b], ty("f32", &[3]));
    assert_eq!(&vals(&r)[..2], [0.5, 0.5]);
    let i = t("i4", &[3], &[-8.0, 7.0, 0.0]);
    let j = t("i4", &[1], &[1.0]);
    let r = ok(bin(BinaryOp::Min), &[&i, &j], ty("i4", &[3]));
    assert_eq!(ints(&r), [-8, 1, 0]);
    err(
        bin(BinaryOp::Pow),
        &[&i, &j],
        ty("i4", &[3]),
        "pow needs float",
    );
}

#[test]
fn log_softmax_matches_the_definition() {
    let x = t("f64", &[2, 3], &[1.0, 2.0, 3.0, 1000.0, 0.0, -1000.0]);
    let r = ok(OpKind::LogSoftmax { axis: 1 }, &[&x], ty("f64", &[2, 3]));
    let v = vals(&r);
    let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    for (j, got) in v[..3].iter().enumerate() {
        assert!((got - (j as f64 + 1.0 - lse)).abs() < 1e-15);
    }
    // no overflow for large inputs: the max is subtracted first
    assert_eq!(v[3], 0.0);
    assert_eq!(v[4], -1000.0);
}

#[test]
fn reductions_keep_dims_and_propagate_nan() {
    let x = t("f32", &[2, 3], &[1.0, -5.0, 3.0, 4.0, f64::NAN, 0.0]);
    let kind = |op, axes: Vec<u32>| OpKind::Reduce { op, axes };
    let r = ok(kind(ReduceOp::Max, vec![1]), &[&x], ty("f32", &[2, 1]));
    let v = vals(&r);
    assert_eq!(v[0], 3.0);
    assert!(v[1].is_nan());
    let r = ok(kind(ReduceOp::Min, vec![0]), &[&x], ty("f32", &[1, 3]));
    let v = vals(&r);
    assert_eq!(v[0], 1.0);
    assert!(v[1].is_nan());
    assert_eq!(v[2], 0.0);
    let q = t("u8", &[2, 2], &[7.0, 255.0, 0.0, 9.0]);
    let r = ok(kind(ReduceOp::Max, vec![0, 1]), &[&q], ty("u8", &[1, 1]));
    assert_eq!(ints(&r), [255]);
    err(
        kind(ReduceOp::Max, vec![2]),
        &[&q],
        ty("u8", &[1, 1]),
        "out of range",
    );
}

#[test]
fn concat_slice_gather_broadcast() {
    let a = t("i4", &[2, 1], &[1.0, -2.0]);
    let b = t("i4", &[2, 2], &[3.0, 4.0, 5.0, 6.0]);
    let r = ok(OpKind::Concat { axis: -1 }, &[&a, &b], ty("i4", &[2, 3]));
    assert_eq!(ints(&r), [1, 3, 4, -2, 5, 6]);
    err(
        OpKind::Concat { axis: 0 },
        &[&a, &b],
        ty("i4", &[4, 1]),
        "does not join",
    );

    let x = t("f32", &[2, 4], &[0., 1., 2., 3., 4., 5., 6., 7.]);
    let s = OpKind::Slice {
        starts: vec![1, 3],
        steps: vec![1, -2],
    };
    let r = ok(s.clone(), &[&x], ty("f32", &[1, 2]));
    assert_eq!(vals(&r), [7., 5.]);
    err(s, &[&x], ty("f32", &[1, 3]), "leave the operand dim");

    let idx = t("i64", &[3], &[-1.0, 0.0, 1.0]);
    let r = ok(OpKind::Gather { axis: 1 }, &[&x, &idx], ty("f32", &[2, 3]));
    assert_eq!(vals(&r), [3., 0., 1., 7., 4., 5.]);
    let idx2 = t("i32", &[2, 1], &[1.0, 0.0]);
    let r = ok(
        OpKind::Gather { axis: 0 },
        &[&x, &idx2],
        ty("f32", &[2, 1, 4]),
    );
    assert_eq!(vals(&r), [4., 5., 6., 7., 0., 1., 2., 3.]);
    let bad = t("i64", &[1], &[4.0]);
    err(
        OpKind::Gather { axis: 1 },
        &[&x, &bad],
        ty("f32", &[2, 1]),
        "index 4",
    );

    let row = t("u4", &[3], &[1.0, 2.0, 15.0]);
    let r = ok(OpKind::Broadcast, &[&row], ty("u4", &[2, 3]));
    assert_eq!(ints(&r), [1, 2, 15, 1, 2, 15]);
    err(OpKind::Broadcast, &[&row], ty("u4", &[2, 2]), "broadcast");
}

fn conv(strides: [u64; 2], pads: [u64; 4], dilations: [u64; 2], group: u64) -> OpKind {
    OpKind::Conv2d {
        strides,
        pads,
        dilations,
        group,
        overflow: Overflow::Wrap,
    }
}

#[test]
fn conv2d_padding_stride_groups() {
    // 1x1x3x3 input, 1x1x2x2 all-ones kernel, pad 1 on every side, stride 2
    let x = t("f32", &[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let w = t("f32", &[1, 1, 2, 2], &[1., 1., 1., 1.]);
    let r = ok(
        conv([2, 2], [1, 1, 1, 1], [1, 1], 1),
        &[&x, &w],
        ty("f32", &[1, 1, 2, 2]),
    );
    assert_eq!(vals(&r), [1., 5., 11., 28.]);
    // dilation 2 on a 3x3 input picks the corners
    let r = ok(
        conv([1, 1], [0; 4], [2, 2], 1),
        &[&x, &w],
        ty("f32", &[1, 1, 1, 1]),
    );
    assert_eq!(vals(&r), [1. + 3. + 7. + 9.]);
    // two groups, integer operands, bias
    let x = t("i8", &[1, 2, 1, 1], &[3.0, -4.0]);
    let w = t("i8", &[2, 1, 1, 1], &[2.0, 5.0]);
    let b = t("i32", &[2], &[1.0, 100.0]);
    let r = ok(
        conv([1, 1], [0; 4], [1, 1], 2),
        &[&x, &w, &b],
        ty("i32", &[1, 2, 1, 1]),
    );
    assert_eq!(ints(&r), [7, 80]);
    err(
        conv([1, 1], [0; 4], [1, 1], 1),
        &[&x, &w],
        ty("i32", &[1, 2, 1, 1]),
        "channels do not match",
    );
}
