//! constant (through every layout), reshape, transpose and relayout.

mod common;
use common::*;
use lowbit_ir::{ConstData, Layout, OpKind, PackOrder, Tensor};

fn constant(bytes: Vec<u8>) -> OpKind {
    OpKind::Constant(ConstData::new(bytes))
}

#[test]
fn constant_decodes_packed_nibbles() {
    // i4 LSB-first: byte 0xF1 = [1, -1], byte 0x07 = [7, pad]
    let r = ok(constant(vec![0xf1, 0x07]), &[], ty("i4", &[3]));
    assert_eq!(ints(&r), [1, -1, 7]);
    let msb = ty("i4", &[3]).with_layout(Layout {
        pack: PackOrder::MsbFirst,
        ..Layout::default()
    });
    let r = ok(constant(vec![0x1f, 0x70]), &[], msb);
    assert_eq!(ints(&r), [1, -1, 7]);
    let f = ok(constant(vec![0x00, 0x3c, 0x00, 0xc0]), &[], ty("f16", &[2]));
    assert_eq!(vals(&f), [1., -2.]);
}

#[test]
fn constant_with_q4_0_interleave() {
    // byte j holds element j (low nibble) and element j + 16 (high nibble)
    let want: Vec<i128> = (0..32).map(|i| (i % 16) - 8).collect();
    let bytes: Vec<u8> = (0..16)
        .map(|j| ((want[j] as u8) & 0xf) | (((want[j + 16] as u8) & 0xf) << 4))
        .collect();
    let rt = ty("i4", &[32]).with_layout(Layout {
        interleave: Some(32),
        ..Layout::default()
    });
    assert_eq!(ints(&ok(constant(bytes), &[], rt)), want);
}

#[test]
fn constant_with_bit_planes_and_tiles() {
    // u2 [0, 1, 2, 3]: plane 0 = bits 0 = 0b1010, plane 1 = 0b1100
    let rt = ty("u2", &[4]).with_layout(Layout {
        bit_planes: true,
        ..Layout::default()
    });
    assert_eq!(
        ints(&ok(constant(vec![0b1010, 0b1100]), &[], rt)),
        [0, 1, 2, 3]
    );
    // i8 2x4 in 2x2 tiles: physical [0,1,4,5, 2,3,6,7]
    let rt = ty("i8", &[2, 4]).with_layout(Layout {
        tile: vec![2, 2],
        ..Layout::default()
    });
    let r = ok(constant(vec![0, 1, 4, 5, 2, 3, 6, 7]), &[], rt);
    assert_eq!(ints(&r), [0, 1, 2, 3, 4, 5, 6, 7]);
    // u3 with bit-planes over 2x6 tiles round-trips through the IR's encoder
    let layout = Layout {
        tile: vec![2, 6],
        bit_planes: true,
        pack: PackOrder::MsbFirst,
        interleave: None,
    };
    let vals_: Vec<f64> = (0..48).map(|i| ((i * 5) % 8) as f64).collect();
    let x = t("u3", &[4, 12], &vals_);
    let rt = ty("u3", &[4, 12]).with_layout(layout.clone());
    assert_eq!(ok(constant(x.to_bytes(&layout)), &[], rt), x);
}

#[test]
fn constant_errors_are_reported_not_panics() {
    err(
        constant(vec![0; 3]),
        &[],
        ty("f32", &[1]),
        "'constant' op: tensor<1xf32> needs 4 bytes of data, got 3",
    );
    let bad_tile = ty("i8", &[2, 3]).with_layout(Layout {
        tile: vec![2],
        ..Layout::default()
    });
    err(
        constant(vec![0; 6]),
        &[],
        bad_tile,
        "tile size 2 does not divide",
    );
    let x = t("f32", &[1], &[0.]);
    err(
        constant(vec![0; 4]),
        &[&x],
        ty("f32", &[1]),
        "'constant' op: expected 0 operands, got 1",
    );
}

#[test]
fn reshape_keeps_row_major_order() {
    let x = t("u5", &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let r = ok(OpKind::Reshape, &[&x], ty("u5", &[3, 1, 2]));
    assert_eq!(r.codes, x.codes);
    err(
        OpKind::Reshape,
        &[&x],
        ty("u5", &[4]),
        "'reshape' op: cannot reshape [2, 3] (6 elements) to [4] (4 elements)",
    );
    err(OpKind::Reshape, &[&x], ty("u6", &[6]), "must not change");
}

#[test]
fn transpose_permutes_dims() {
    let x = t("i8", &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let r = ok(
        OpKind::Transpose { perm: vec![1, 0] },
        &[&x],
        ty("i8", &[3, 2]),
    );
    assert_eq!(ints(&r), [1, 4, 2, 5, 3, 6]);
    // 3-D: result dim i is operand dim perm[i]
    let v: Vec<f64> = (0..24).map(|i| i as f64).collect();
    let x = t("f32", &[2, 3, 4], &v);
    let r = ok(
        OpKind::Transpose {
            perm: vec![2, 0, 1],
        },
        &[&x],
        ty("f32", &[4, 2, 3]),
    );
    let got = vals(&r);
    for i in 0..4 {
        for j in 0..2 {
            for k in 0..3 {
                assert_eq!(got[(i * 2 + j) * 3 + k], v[(j * 3 + k) * 4 + i]);
            }
        }
    }
    err(
        OpKind::Transpose {
            perm: vec![0, 0, 1],
        },
        &[&x],
        ty("f32", &[2, 2, 3]),
        "not a permutation",
    );
    err(
        OpKind::Transpose { perm: vec![1, 0] },
        &[&x],
        ty("f32", &[3, 2]),
        "not a permutation",
    );
    err(
        OpKind::Transpose {
            perm: vec![0, 2, 1],
        },
        &[&x],
        ty("f32", &[2, 3, 4]),
        "should have shape [2, 4, 3]",
    );
}

#[test]
fn relayout_is_the_identity_on_values() {
    let x = t(
        "i4",
        &[2, 32],
        &(0..64).map(|i| (i % 16) as f64 - 8.).collect::<Vec<_>>(),
    );
    let rt = ty("i4", &[2, 32]).with_layout(Layout {
        interleave: Some(32),
        tile: vec![1, 32],
        ..Layout::default()
    });
    let r = ok(OpKind::Relayout, &[&x], rt.clone());
    assert_eq!(r, x);
    // and a constant in that layout reads back the same values
    let bytes = x.to_bytes(&rt.layout);
    assert_eq!(ok(constant(bytes), &[], rt), x);
    let bad = ty("i8", &[2, 32]).with_layout(Layout {
        interleave: Some(32),
        ..Layout::default()
    });
    let y = t("i8", &[2, 32], &[0.; 64]);
    err(
        OpKind::Relayout,
        &[&y],
        bad,
        "'relayout' op: interleave needs an element type that packs several per byte",
    );
}

#[test]
fn malformed_operand_tensors_are_errors() {
    let bad = Tensor {
        elem: el("f32"),
        shape: vec![2, 2],
        codes: vec![0; 3],
    };
    err(
        OpKind::Relu,
        &[&bad],
        ty("f32", &[2, 2]),
        "'relu' op: operand #0 has 3 elements but its shape [2, 2] needs 4",
    );
    let huge = Tensor {
        elem: el("f32"),
        shape: vec![u64::MAX, 4],
        codes: vec![],
    };
    err(OpKind::Relu, &[&huge], ty("f32", &[2]), "too many elements");
    // broadcasting two modest operands into an enormous result
    let a = t("f32", &[1 << 20, 1], &vec![0.; 1 << 20]);
    let b = t("f32", &[1, 1 << 20], &vec![0.; 1 << 20]);
    let add = OpKind::Binary {
        op: lowbit_ir::BinaryOp::Add,
        overflow: lowbit_ir::Overflow::Wrap,
    };
    err(
        add,
        &[&a, &b],
        ty("f32", &[1 << 20, 1 << 20]),
        "more than the interpreter's limit",
    );
}
