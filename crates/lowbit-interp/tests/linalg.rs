//! matmul (2-D, batched with broadcast, float rounding, integer wrap and
//! saturate, b1, 64-bit exactness, a 4096-wide product) and gemm.

mod common;
use common::*;
use lowbit_ir::{OpKind, Overflow};

fn mm(ov: Overflow) -> OpKind {
    OpKind::MatMul { overflow: ov }
}
const W: Overflow = Overflow::Wrap;
const S: Overflow = Overflow::Saturate;

#[test]
fn float_matmul_2d() {
    let a = t("f32", &[2, 2], &[1., 2., 3., 4.]);
    let b = t("f32", &[2, 2], &[5., 6., 7., 8.]);
    assert_eq!(
        vals(&ok(mm(W), &[&a, &b], ty("f32", &[2, 2]))),
        [19., 22., 43., 50.]
    );
    let c = t("bf16", &[2, 3], &[1., 0., -1., 2., 1., 0.]);
    let d = t("f16", &[3, 1], &[0.5, 4., 2.]);
    assert_eq!(vals(&ok(mm(W), &[&c, &d], ty("f32", &[2, 1]))), [-1.5, 5.]);
}

#[test]
fn float_matmul_rounds_once_at_the_end() {
    // 1 + 2^-11 is a tie in f16 (rounds to 1); 1 + 2^-11 + 2^-11 = 1 + 2^-10 is
    // exact. Rounding after each step would give 1 in both cases.
    let e = 2f64.powi(-11);
    let a = t("f32", &[2, 3], &[1., e, 0., 1., e, e]);
    let b = t("f32", &[3, 1], &[1., 1., 1.]);
    let r = ok(mm(W), &[&a, &b], ty("f16", &[2, 1]));
    assert_eq!(vals(&r), [1., 1. + 2. * e]);
    // the sum starts from +0: a product of -0 gives +0
    let z = t("f32", &[1, 1], &[-0.0]);
    let o = t("f32", &[1, 1], &[1.]);
    assert_eq!(ok(mm(W), &[&z, &o], ty("f32", &[1, 1])).codes, [0]);
    // and overflow is per format
    let big = t("f32", &[1, 2], &[300., 300.]);
    let r = ok(
        mm(W),
        &[&big, &t("f32", &[2, 1], &[1., 1.])],
        ty("f8E4M3FN", &[1, 1]),
    );
    assert_eq!(r.codes, [0x7f]);
}

fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum();
        }
    }
    out
}

#[test]
fn batched_matmul_broadcasts_batch_dims() {
    // a: [2, 1, 2, 3], b: [3, 3, 2] -> [2, 3, 2, 2]
    let av: Vec<f64> = (0..12).map(|i| i as f64 - 5.).collect();
    let bv: Vec<f64> = (0..18).map(|i| (i % 7) as f64 * 0.5).collect();
    let a = t("f32", &[2, 1, 2, 3], &av);
    let b = t("f32", &[3, 3, 2], &bv);
    let r = vals(&ok(mm(W), &[&a, &b], ty("f32", &[2, 3, 2, 2])));
    for i in 0..2 {
        for j in 0..3 {
            let want = naive(&av[i * 6..i * 6 + 6], &bv[j * 6..j * 6 + 6], 2, 3, 2);
            let at = (i * 3 + j) * 4;
            assert_eq!(r[at..at + 4], want[..], "batch ({i}, {j})");
        }
    }
    // rank-2 b broadcasts against a batch of a
    let a = t("f32", &[2, 2, 2], &[1., 0., 0., 1., 1., 2., 3., 4.]);
    let b = t("f32", &[2, 2], &[5., 6., 7., 8.]);
    let r = ok(mm(W), &[&a, &b], ty("f32", &[2, 2, 2]));
    assert_eq!(vals(&r), [5., 6., 7., 8., 19., 22., 43., 50.]);
}

#[test]
fn ragged_row_blocks_and_column_tiles() {
    // m = 7 (a block of 4 plus 3 leftover rows), n = 300 (a full tile of
    // 256 plus a partial one); small integers keep every sum exact.
    let (m, k, n) = (7usize, 5usize, 300usize);
    let av: Vec<f64> = (0..m * k).map(|i| ((i * 3) % 7) as f64 - 3.).collect();
    let bv: Vec<f64> = (0..k * n).map(|i| ((i * 11) % 9) as f64 - 4.).collect();
    let want = naive(&av, &bv, m, k, n);
    let a = t("f32", &[m as u64, k as u64], &av);
    let b = t("f32", &[k as u64, n as u64], &bv);
    let r = ok(mm(W), &[&a, &b], ty("f32", &[m as u64, n as u64]));
    assert_eq!(vals(&r), want);
    let a = t("i4", &[m as u64, k as u64], &av);
    let b = t("i4", &[k as u64, n as u64], &bv);
    let r = ok(mm(W), &[&a, &b], ty("i16", &[m as u64, n as u64]));
    assert_eq!(vals(&r), want);
}

#[test]
fn matmul_shape_errors() {
    let a = t("f32", &[2, 3], &[0.; 6]);
    let v = t("f32", &[3], &[0.; 3]);
    err(
        mm(W),
        &[&a, &v],
        ty("f32", &[2]),
        "'matmul' op: operands must have rank 2 or more",
    );
    err(
        mm(W),
        &[&a, &a],
        ty("f32", &[2, 3]),
        "contraction dims differ",
    );
    let b = t("f32", &[3, 4], &[0.; 12]);
    err(
        mm(W),
        &[&a, &b],
        ty("f32", &[2, 5]),
        "should have shape [2, 4]",
    );
    let x = t("f32", &[2, 2, 3], &[0.; 12]);
    let y = t("f32", &[3, 3, 4], &[0.; 36]);
    err(
        mm(W),
        &[&x, &y],
        ty("f32", &[2, 2, 4]),
        "shapes [2] and [3] do not broadcast",
    );
    let i = t("i8", &[3, 4], &[0.; 12]);
    err(
        mm(W),
        &[&a, &i],
        ty("f32", &[2, 4]),
        "must both be float or both integral, got f32 and i8",
    );
    let ii = t("i8", &[4, 3], &[0.; 12]);
    err(
        mm(W),
        &[&ii, &i],
        ty("f32", &[4, 4]),
        "integral operands need an integral result",
    );
}

#[test]
fn int_matmul_wraps_or_saturates_the_exact_sum() {
    let a = t("i8", &[1, 2], &[100., 100.]);
    let b = t("i8", &[2, 1], &[2., 1.]);
    assert_eq!(ints(&ok(mm(W), &[&a, &b], ty("i8", &[1, 1]))), [44]);
    assert_eq!(ints(&ok(mm(S), &[&a, &b], ty("i8", &[1, 1]))), [127]);
    assert_eq!(ints(&ok(mm(W), &[&a, &b], ty("i32", &[1, 1]))), [300]);
    // intermediate sums beyond the range do not matter, only the total
    let a = t("i8", &[1, 3], &[127., 127., -128.]);
    let b = t("i8", &[3, 1], &[127., 1., 1.]);
    assert_eq!(
        ints(&ok(mm(S), &[&a, &b], ty("i16", &[1, 1]))),
        [127 * 127 + 127 - 128]
    );
    // i3 x u5 -> i8
    let a = t("i3", &[2, 2], &[-4., 3., 1., -1.]);
    let b = t("u5", &[2, 2], &[31., 0., 2., 5.]);
    assert_eq!(
        ints(&ok(mm(W), &[&a, &b], ty("i8", &[2, 2]))),
        [-118, 15, 29, -5]
    );
    assert_eq!(
        ints(&ok(mm(S), &[&a, &b], ty("i8", &[2, 2]))),
        [-118, 15, 29, -5]
    );
    assert_eq!(
        ints(&ok(mm(S), &[&a, &b], ty("i4", &[2, 2]))),
        [-8, 7, 7, -5]
    );
}

#[test]
fn b1_matmul_counts_agreements() {
    // +1 = code 1, -1 = code 0
    let a = codes("b1", &[2, 3], &[1, 0, 1, 0, 0, 0]); // [[+,-,+],[-,-,-]]
    let b = codes("b1", &[3, 2], &[1, 1, 0, 1, 1, 0]); // [[+,+],[-,+],[+,-]]
    let r = ok(mm(W), &[&a, &b], ty("i32", &[2, 2]));
    assert_eq!(ints(&r), [3, -1, -1, -1]);
    // b1 x i8 is integral too
    let c = t("i8", &[3, 1], &[5., -7., 2.]);
    assert_eq!(ints(&ok(mm(W), &[&a, &c], ty("i32", &[2, 1]))), [14, 0]);
}

#[test]
fn sixty_four_bit_products_are_exact() {
    let a = codes("u64", &[1, 2], &[1 << 63, 1 << 63]);
    let b = codes("u64", &[2, 1], &[4, 4]);
    assert_eq!(ok(mm(W), &[&a, &b], ty("u64", &[1, 1])).codes, [0]); // 2^66 mod 2^64
    assert_eq!(ok(mm(S), &[&a, &b], ty("u64", &[1, 1])).codes, [u64::MAX]);
    let m = i64::MIN as u64;
    let x = i64::MAX as u64;
    let a = codes("i64", &[1, 2], &[m, x]);
    let b = codes("i64", &[2, 1], &[m, x]);
    // 2^126 + (2^63-1)^2: low 64 bits are 1
    assert_eq!(ints(&ok(mm(W), &[&a, &b], ty("i64", &[1, 1]))), [1]);
    assert_eq!(
        ints(&ok(mm(S), &[&a, &b], ty("i64", &[1, 1]))),
        [i64::MAX as i128]
    );
    // huge partial products that cancel exactly
    let a = codes("i64", &[1, 2], &[m, m]);
    let b = codes("i64", &[2, 1], &[x, (-(i64::MAX)) as u64]);
    assert_eq!(ints(&ok(mm(S), &[&a, &b], ty("i64", &[1, 1]))), [0]);
    let a = codes("i64", &[1, 2], &[m, m]);
    let b = codes("i64", &[2, 1], &[1, 1]);
    assert_eq!(
        ints(&ok(mm(S), &[&a, &b], ty("i64", &[1, 1]))),
        [i64::MIN as i128]
    );
    assert_eq!(ints(&ok(mm(W), &[&a, &b], ty("i64", &[1, 1]))), [0]);
}

#[test]
fn wide_matmul_is_fast_and_exact() {
    // [8, 4096] x [4096, 4096]: the shape of a decode step through a
    // 4096x4096 weight. Values are small integers so f32 sums are exact and
    // an independent computation can be compared bit for bit.
    let (m, k, n) = (8usize, 4096usize, 4096usize);
    let av: Vec<f64> = (0..m * k).map(|i| ((i * 7) % 13) as f64 - 6.).collect();
    let bv: Vec<f64> = (0..k * n).map(|i| ((i * 5) % 11) as f64 - 5.).collect();
    let a = t("f32", &[m as u64, k as u64], &av);
    let b = t("f32", &[k as u64, n as u64], &bv);
    let start = std::time::Instant::now();
    let r = ok(mm(W), &[&a, &b], ty("f32", &[m as u64, n as u64]));
    let secs = start.elapsed().as_secs_f64();
    let got = vals(&r);
    for &(i, j) in &[(0, 0), (3, 17), (7, 4095), (5, 2048)] {
        let want: f64 = (0..k).map(|kk| av[i * k + kk] * bv[kk * n + j]).sum();
        assert_eq!(got[i * n + j], want, "({i}, {j})");
    }
    assert!(secs < 20.0, "took {secs} s");
    // the same product in i8 -> i32
    let ai = t("i8", &[m as u64, k as u64], &av);
    let bi = t("i8", &[k as u64, n as u64], &bv);
    let r = ok(mm(W), &[&ai, &bi], ty("i32", &[m as u64, n as u64]));
    assert_eq!(vals(&r), got);
}

fn gemm(trans_a: bool, trans_b: bool, alpha: f64, beta: f64) -> OpKind {
    OpKind::Gemm {
        trans_a,
        trans_b,
        alpha,
        beta,
        overflow: W,
    }
}

#[test]
fn float_gemm_with_transposes_and_bias() {
    // op(a) = [[1,2,3],[4,5,6]] stored transposed; op(b) = [[1,0],[0,1],[1,1]]
    // stored transposed. op(a) op(b) = [[4,5],[10,11]].
    let a = t("f32", &[3, 2], &[1., 4., 2., 5., 3., 6.]);
    let b = t("f32", &[2, 3], &[1., 0., 1., 0., 1., 1.]);
    let c = t("f32", &[2], &[1., -2.]);
    let r = ok(gemm(true, true, 2., 0.5), &[&a, &b, &c], ty("f32", &[2, 2]));
    assert_eq!(vals(&r), [8.5, 9., 20.5, 21.]);
    let r = ok(gemm(true, true, 1., 1.), &[&a, &b], ty("f32", &[2, 2]));
    assert_eq!(vals(&r), [4., 5., 10., 11.]);
    let c = t("f32", &[2, 1], &[100., 200.]);
    let r = ok(gemm(true, true, 1., -1.), &[&a, &b, &c], ty("f16", &[2, 2]));
    assert_eq!(vals(&r), [-96., -95., -190., -189.]);
    let bad = t("f32", &[3], &[0.; 3]);
    err(
        gemm(true, true, 1., 1.),
        &[&a, &b, &bad],
        ty("f32", &[2, 2]),
        "'gemm' op: c of shape [3] does not broadcast to [2, 2]",
    );
    err(
        gemm(false, true, 1., 1.),
        &[&a, &b],
        ty("f32", &[3, 2]),
        "contraction dims differ",
    );
}

#[test]
fn integer_gemm_is_exact_and_needs_unit_alpha_beta() {
    let a = t("i8", &[2, 2], &[1., 2., 3., 4.]);
    let b = t("i8", &[2, 2], &[1., 1., 1., 1.]);
    let c = t("i32", &[2, 1], &[100., -100.]);
    let r = ok(
        gemm(false, false, 1., 1.),
        &[&a, &b, &c],
        ty("i32", &[2, 2]),
    );
    assert_eq!(ints(&r), [103, 103, -93, -93]);
    let r = ok(gemm(true, false, 1., 1.), &[&a, &b, &c], ty("i8", &[2, 2]));
    assert_eq!(ints(&r), [104, 104, -94, -94]);
    err(
        gemm(false, false, 2., 1.),
        &[&a, &b, &c],
        ty("i32", &[2, 2]),
        "alpha = beta = 1",
    );
    let cf = t("f32", &[2, 1], &[0., 0.]);
    err(
        gemm(false, false, 1., 1.),
        &[&a, &b, &cf],
        ty("i32", &[2, 2]),
        "c has element type f32",
    );
    let sat = OpKind::Gemm {
        trans_a: false,
        trans_b: false,
        alpha: 1.,
        beta: 1.,
        overflow: S,
    };
    let c = t("i32", &[], &[120.]);
    assert_eq!(
        ints(&ok(sat, &[&a, &b, &c], ty("i8", &[2, 2]))),
        [123, 123, 127, 127]
    );
}

/// The full 4096³ product (about 69 G multiply-adds): slow in any
/// reference, so run on demand with `cargo test -- --ignored`.
#[test]
#[ignore]
fn square_4096_matmul() {
    let n = 4096usize;
    let av: Vec<f64> = (0..n * n).map(|i| ((i * 7) % 13) as f64 - 6.).collect();
    let bv: Vec<f64> = (0..n * n).map(|i| ((i * 5) % 11) as f64 - 5.).collect();
    let a = t("f32", &[n as u64, n as u64], &av);
    let b = t("f32", &[n as u64, n as u64], &bv);
    let start = std::time::Instant::now();
    let r = ok(mm(W), &[&a, &b], ty("f32", &[n as u64, n as u64]));
    eprintln!("4096^3 f32 matmul: {:.1} s", start.elapsed().as_secs_f64());
    let got = vals(&r);
    for &(i, j) in &[(0, 0), (4095, 4095), (1234, 777)] {
        let want: f64 = (0..n).map(|kk| av[i * n + kk] * bv[kk * n + j]).sum();
        assert_eq!(got[i * n + j], want, "({i}, {j})");
    }
}

/// Timing of an `N`x`N` square product (env `N`, default 1024), f32 and i8;
/// on demand with `cargo test -- --ignored --nocapture`.
#[test]
#[ignore]
fn timed_square_matmul() {
    let n: usize = std::env::var("N").map_or(1024, |v| v.parse().unwrap());
    let av: Vec<f64> = (0..n * n).map(|i| ((i * 7) % 13) as f64 - 6.).collect();
    let a = t("f32", &[n as u64, n as u64], &av);
    for elem in ["f32", "i8"] {
        let a = if elem == "i8" {
            t("i8", &[n as u64, n as u64], &av)
        } else {
            a.clone()
        };
        let rt = if elem == "i8" { "i32" } else { "f32" };
        let start = std::time::Instant::now();
        let r = ok(mm(W), &[&a, &a], ty(rt, &[n as u64, n as u64]));
        eprintln!(
            "1024^3 {elem} matmul: {:.2} s",
            start.elapsed().as_secs_f64()
        );
        let want: f64 = (0..n).map(|kk| av[5 * n + kk] * av[kk * n + 9]).sum();
        assert_eq!(vals(&r)[5 * n + 9], want);
    }
}
