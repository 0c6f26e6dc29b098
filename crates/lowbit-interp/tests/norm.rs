//! softmax, layer_norm and rms_norm against hand-computed values.

mod common;
use common::*;
use lowbit_ir::OpKind;

#[test]
fn softmax_last_axis() {
    let x = t("f32", &[1, 3], &[1., 2., 3.]);
    let r = ok(OpKind::Softmax { axis: -1 }, &[&x], ty("f32", &[1, 3]));
    let want = [0.09003057317038046, 0.24472847105479764, 0.6652409557748219];
    assert_eq!(vals(&r), want.map(|v| v as f32 as f64));
}

#[test]
fn softmax_is_stable_and_respects_the_axis() {
    let x = t("f32", &[2], &[1000., 1000.]);
    assert_eq!(
        vals(&ok(OpKind::Softmax { axis: 0 }, &[&x], ty("f32", &[2]))),
        [0.5, 0.5]
    );
    let x = t("f32", &[2, 2], &[1., 5., 1., 5.]);
    let r = ok(OpKind::Softmax { axis: 0 }, &[&x], ty("f32", &[2, 2]));
    assert_eq!(vals(&r), [0.5; 4]);
    let r = ok(OpKind::Softmax { axis: 1 }, &[&x], ty("f64", &[2, 2]));
    let (lo, hi) = (0.01798620996209156, 0.9820137900379085);
    let v = vals(&r);
    for (got, want) in v.iter().zip([lo, hi, lo, hi]) {
        assert!(ulps(*got, want) <= 2.0, "{got} vs {want}");
    }
    // a middle axis of a 3-D tensor: slices are strided
    let x = t("f32", &[1, 2, 2], &[0., 3., 0., 3.]);
    let r = ok(OpKind::Softmax { axis: -2 }, &[&x], ty("f32", &[1, 2, 2]));
    assert_eq!(vals(&r), [0.5; 4]);
    let nan = t("f32", &[3], &[1., f64::NAN, 2.]);
    let r = ok(OpKind::Softmax { axis: 0 }, &[&nan], ty("f32", &[3]));
    assert!(vals(&r).iter().all(|v| v.is_nan()));
    err(
        OpKind::Softmax { axis: 3 },
        &[&x],
        ty("f32", &[1, 2, 2]),
        "'softmax' op: axis 3 is out of range",
    );
    err(
        OpKind::Softmax { axis: -4 },
        &[&x],
        ty("f32", &[1, 2, 2]),
        "axis -4 is out of range for rank 3",
    );
}

fn ln(axis: i64, epsilon: f64) -> OpKind {
    OpKind::LayerNorm { axis, epsilon }
}

#[test]
fn layer_norm_with_gamma_and_beta() {
    // mean 2.5, biased variance 1.25
    let x = t("f32", &[1, 4], &[1., 2., 3., 4.]);
    let g = t("f32", &[4], &[1., 1., 2., 2.]);
    let b = t("f32", &[4], &[0., 0., 0., 1.]);
    let z = [
        -1.3416407864998738,
        -0.4472135954999579,
        0.4472135954999579,
        1.3416407864998738,
    ];
    let r = ok(ln(-1, 0.), &[&x, &g, &b], ty("f32", &[1, 4]));
    let want = [z[0], z[1], 2. * z[2], 2. * z[3] + 1.];
    assert_eq!(vals(&r), want.map(|v| v as f32 as f64));
    // without beta; epsilon is added to the variance
    let r = ok(ln(1, 0.75), &[&x, &g], ty("f64", &[1, 4]));
    // sqrt(1.25 + 0.75) = sqrt 2; (x - mean) * gamma = [-1.5, -0.5, 1, 3]
    let want = [-1.5, -0.5, 1.0, 3.0];
    let s2 = std::f64::consts::SQRT_2;
    for (i, got) in vals(&r).iter().enumerate() {
        let w = want[i] / s2;
        assert!(ulps(*got, w) <= 2.0, "{got} vs {w}");
    }
}

#[test]
fn layer_norm_over_two_dims_and_per_row() {
    let x = t("f32", &[2, 2], &[0., 2., 4., 6.]);
    let g = t("f32", &[2, 2], &[1.; 4]);
    // all four elements: mean 3, variance 5
    let r = ok(ln(0, 0.), &[&x, &g], ty("f64", &[2, 2]));
    let s5 = 5f64.sqrt();
    for (got, w) in vals(&r).iter().zip([-3. / s5, -1. / s5, 1. / s5, 3. / s5]) {
        assert!(ulps(*got, w) <= 2.0);
    }
    // per row: each row is [-1, 1]
    let g1 = t("f32", &[2], &[1., 1.]);
    let r = ok(ln(-1, 0.), &[&x, &g1], ty("f32", &[2, 2]));
    assert_eq!(vals(&r), [-1., 1., -1., 1.]);
    err(
        ln(-1, 0.),
        &[&x, &g],
        ty("f32", &[2, 2]),
        "'layer_norm' op: gamma (operand #1) has shape [2, 2] but the normalized dims are [2]",
    );
    let gi = t("i8", &[2], &[1., 1.]);
    err(
        ln(-1, 0.),
        &[&x, &gi],
        ty("f32", &[2, 2]),
        "gamma must have a float element type",
    );
}

#[test]
fn rms_norm_scales_by_the_root_mean_square() {
    let x = t("f32", &[1, 2], &[3., 4.]);
    let g = t("f32", &[2], &[1., 2.]);
    let r = ok(
        OpKind::RmsNorm {
            axis: -1,
            epsilon: 0.,
        },
        &[&x, &g],
        ty("f64", &[1, 2]),
    );
    let want = [0.848528137423857, 2. * 1.131370849898476];
    for (got, w) in vals(&r).iter().zip(want) {
        assert!(ulps(*got, w) <= 2.0, "{got} vs {w}");
    }
    // epsilon: mean square 12.5 + 3.5 = 16 -> divide by 4
    let r = ok(
        OpKind::RmsNorm {
            axis: -1,
            epsilon: 3.5,
        },
        &[&x, &g],
        ty("f32", &[1, 2]),
    );
    assert_eq!(vals(&r), [0.75, 2.]);
}
