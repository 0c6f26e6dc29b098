//! The kernels' epilogues against the reference interpreter: the float
//! activations (GELU, tanh GELU, SiLU) within the bound declared in
//! `codegen/epilogue.rs`, on values from the subnormals to `f32::MAX`,
//! NaN and ±inf, and inside random GEMMs whose k spans several passes; the
//! W8A8 `i32` bias, ReLU and dyadic requantization bit-exact against
//! `requant_dyadic(relu(add(matmul_int(x, w), bias)))`.

mod common;

use common::int_epilogue_reference;
use lowbit_interp::eval_op;
use lowbit_ir::testing::Rng;
use lowbit_ir::{BinaryOp, IntSchedule, OpKind, Overflow, Tensor, TensorType};
use lowbit_llvm::{
    compile, Activation, Activations, Dim, Epilogue, GemmSpec, PackedWeights, Requant,
    WeightGranularity, WeightSpec,
};
use lowbit_numerics::ElemType;

fn f32t() -> ElemType {
    ElemType::F32
}

fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The interpreter's activation op for `a`.
fn act_op(a: Activation) -> OpKind {
    match a {
        Activation::Gelu => OpKind::Gelu { tanh: false },
        Activation::GeluTanh => OpKind::Gelu { tanh: true },
        Activation::Silu => OpKind::Silu,
        Activation::Relu => OpKind::Relu,
        Activation::None => unreachable!("no op for the identity"),
    }
}

/// The spacing of f32 values at `|v|` (the smallest subnormal at 0).
fn ulp(v: f32) -> f64 {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return f64::from(f32::from_bits(1));
    }
    f64::from(f32::from_bits(a.to_bits() + 1)) - f64::from(a)
}

/// The declared bound of `codegen/epilogue.rs` for activation `a` of the
/// pre-activation value `x`, around the interpreter's result `want`.
fn act_bound(a: Activation, x: f64, want: f32) -> f64 {
    let extra = if a == Activation::GeluTanh {
        x.abs() * 2f64.powi(-50)
    } else {
        0.0
    };
    ulp(want) + extra
}

fn same(got: f32, want: f32) -> bool {
    (got.is_nan() && want.is_nan()) || got.to_bits() == want.to_bits() || got == want
}

/// Pre-activation values that cover the activations' regimes: both tails,
/// the erfc series/fraction switch, the exp cut-offs, subnormal results,
/// the largest finite values, signed zeros, NaN and the infinities.
fn probe_values(rng: &mut Rng) -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        -f32::from_bits(1),
        1e-30,
        -1e-30,
        2.828_427,
        -2.828_427,
        -5.5,
        -9.0,
        -10.3,
        -13.0,
        -14.5,
        -20.0,
        -87.0,
        -103.5,
        -110.0,
        3.0,
        10.0,
        80.0,
        1e20,
        -1e20,
    ];
    for _ in 0..400 {
        // Magnitudes from 2^-40 to 2^8, denser where the functions curve.
        let mag = 2f64.powf(-40.0 + 48.0 * unit(rng));
        let s = if rng.below(2) == 0 { -1.0 } else { 1.0 };
        v.push((s * mag) as f32);
    }
    for _ in 0..400 {
        v.push((-16.0 + 24.0 * unit(rng)) as f32);
    }
    v
}

/// A kernel whose output rows are `x · w_r` exactly (k = 1, power-of-two
/// weights): the activation sees exactly the values it is given, on every
/// tile shape (6 rows: the 2x4 and 4x1 tiles and the 1x1 tail).
#[test]
fn activations_match_the_interpreter_on_probe_values() {
    let mut rng = Rng::new(0xe41);
    let xs = probe_values(&mut rng);
    let n = xs.len();
    let m = 6usize;
    // i8 codes 1, -1, 2, 1, -2, 1 with f32 scales 1, 1, 0.5, 0.25, 1, -1.
    let codes: Vec<i64> = vec![1, -1, 2, 1, -2, 1];
    let scales = [1.0f64, 1.0, 0.5, 0.25, 1.0, -1.0];
    let wmul: Vec<f64> = codes
        .iter()
        .zip(scales)
        .map(|(&c, s)| c as f64 * s)
        .collect();
    for act in [
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
        Activation::Relu,
    ] {
        let spec = GemmSpec {
            m,
            k: 1,
            n: Dim::Dynamic,
            weight: WeightSpec {
                dtype: ElemType::I8,
                granularity: WeightGranularity::PerChannel,
                scale: f32t(),
                zero_point: false,
                layout: None,
                tensor_scale: None,
            },
            act: f32t(),
            epilogue: Epilogue {
                bias: false,
                activation: act,
                requantize: false,
            },
            schedule: IntSchedule::Direct,
            act_quant: None,
        };
        let wq = Tensor::new(
            ElemType::I8,
            vec![m as u64, 1],
            codes.iter().map(|&c| c as u8 as u64).collect(),
        )
        .unwrap();
        let s = Tensor::from_f64(f32t(), vec![m as u64], &scales).unwrap();
        let packed = PackedWeights::pack(&spec, &wq, &s, None).unwrap();
        let kernel = compile(&spec).unwrap();
        let mut y = vec![0f32; n * m];
        kernel
            .run(Activations::F32(&xs), &packed, None, &mut y, n, 2)
            .unwrap();
        // Pre-activation values, exactly as the interpreter's matmul
        // rounds them (a product by a power of two).
        let pre: Vec<f64> = (0..n * m)
            .map(|i| f64::from((f64::from(xs[i / m]) * wmul[i % m]) as f32))
            .collect();
        let pre_t = Tensor::from_f64(f32t(), vec![(n * m) as u64], &pre).unwrap();
        let want = eval_op(
            &act_op(act),
            &[&pre_t],
            &[TensorType::new(vec![(n * m) as u64], f32t())],
        )
        .unwrap()
        .remove(0)
        .to_f64();
        let mut identical = 0;
        for i in 0..n * m {
            let (g, w) = (y[i], want[i] as f32);
            identical += usize::from(same(g, w));
            let ok = same(g, w) || (f64::from(g) - f64::from(w)).abs() <= act_bound(act, pre[i], w);
            assert!(
                ok,
                "{}: x = {:e} (row {}): got {g:e}, interpreter {w:e}",
                act.name(),
                pre[i],
                i % m
            );
        }
        // Within 2^-30 of the exact value before one rounding, results
        // differ from the interpreter's only next to a rounding boundary
        // (about 2^-6 of values at most), except where the interpreter's
        // own `1 + tanh(u)` cancels (the tanh form's negative tail).
        let want_frac = if act == Activation::GeluTanh {
            0.9
        } else {
            0.98
        };
        assert!(
            identical as f64 >= want_frac * (n * m) as f64,
            "{}: only {identical} of {} outputs equal the interpreter's",
            act.name(),
            n * m
        );
    }
}

/// The interpreter's `act(matmul(x, transpose(dequantize(w, s))) + bias)`
/// and, per output, `sum |x w| + |bias|` and the pre-activation value.
fn float_reference(
    spec: &GemmSpec,
    n: usize,
    (x, wq, s, bias): (&Tensor, &Tensor, &Tensor, &[f32]),
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (m, k) = (spec.m as u64, spec.k as u64);
    let wd = eval_op(
        &OpKind::Dequantize {
            granularity: spec.ir_granularity(),
        },
        &[wq, s],
        &[TensorType::new(vec![m, k], f32t())],
    )
    .unwrap()
    .remove(0);
    let wt = eval_op(
        &OpKind::Transpose { perm: vec![1, 0] },
        &[&wd],
        &[TensorType::new(vec![k, m], f32t())],
    )
    .unwrap()
    .remove(0);
    let out = TensorType::new(vec![n as u64, m], f32t());
    let y = eval_op(
        &OpKind::MatMul {
            overflow: Overflow::Wrap,
        },
        &[x, &wt],
        std::slice::from_ref(&out),
    )
    .unwrap()
    .remove(0);
    let bv: Vec<f64> = bias.iter().map(|&b| f64::from(b)).collect();
    let bt = Tensor::from_f64(f32t(), vec![m], &bv).unwrap();
    let pre = eval_op(
        &OpKind::Binary {
            op: BinaryOp::Add,
            overflow: Overflow::Wrap,
        },
        &[&y, &bt],
        std::slice::from_ref(&out),
    )
    .unwrap()
    .remove(0);
    let post = eval_op(
        &act_op(spec.epilogue.activation),
        &[&pre],
        std::slice::from_ref(&out),
    )
    .unwrap()
    .remove(0);
    let (xs, ws) = (x.to_f64(), wd.to_f64());
    let (k, m) = (k as usize, m as usize);
    let mags = (0..n * m)
        .map(|i| {
            let (c, r) = (i / m, i % m);
            (0..k)
                .map(|j| (xs[c * k + j] * ws[r * k + j]).abs())
                .sum::<f64>()
                + f64::from(bias[r]).abs()
        })
        .collect();
    (post.to_f64(), mags, pre.to_f64())
}

/// Random GEMMs with a bias and each activation, k up to 2.5 passes of the
/// float kernels (the activation must wait for the last pass), ragged m, n.
/// Bound: the GEMM bound of `codegen` times the activations' largest slope
/// (below 1.2), plus the activation's own bound.
#[test]
fn activations_in_random_gemms_match_the_interpreter() {
    let mut rng = Rng::new(0x05ee_dac7);
    let acts = [Activation::Gelu, Activation::GeluTanh, Activation::Silu];
    for case_no in 0..18 {
        let act = acts[case_no % 3];
        let (m, k, n) = (
            1 + rng.below(11),
            // Odd cases: several 1024-element k passes.
            if case_no % 2 == 0 {
                1 + rng.below(300)
            } else {
                1025 + rng.below(1600)
            },
            // Every other pair: n >= 4, where the passes are taken.
            if case_no % 4 < 2 {
                1 + rng.below(9)
            } else {
                4 + rng.below(6)
            },
        );
        let dtype: ElemType = ["i4", "i8", "u4"][rng.below(3)].parse().unwrap();
        let spec = GemmSpec {
            m,
            k,
            n: Dim::Static(n),
            weight: WeightSpec {
                dtype,
                granularity: WeightGranularity::Group(32),
                scale: ElemType::F16,
                zero_point: false,
                layout: None,
                tensor_scale: None,
            },
            act: f32t(),
            epilogue: Epilogue {
                bias: true,
                activation: act,
                requantize: false,
            },
            schedule: IntSchedule::Direct,
            act_quant: None,
        };
        let wq = Tensor::new(
            dtype,
            vec![m as u64, k as u64],
            (0..m * k)
                .map(|_| rng.next_u64() & dtype.code_mask())
                .collect(),
        )
        .unwrap();
        let sv: Vec<f64> = (0..m * spec.groups_per_row())
            .map(|_| 0.002 + 0.05 * unit(&mut rng))
            .collect();
        let s = Tensor::from_f64(ElemType::F16, spec.scale_shape(), &sv).unwrap();
        let xv: Vec<f64> = (0..n * k)
            .map(|_| f64::from((4.0 * unit(&mut rng) - 2.0) as f32))
            .collect();
        let x = Tensor::from_f64(f32t(), vec![n as u64, k as u64], &xv).unwrap();
        let bias: Vec<f32> = (0..m)
            .map(|_| (8.0 * unit(&mut rng) - 4.0) as f32)
            .collect();
        let (want, mags, pre) = float_reference(&spec, n, (&x, &wq, &s, &bias));
        let packed = PackedWeights::pack(&spec, &wq, &s, None).unwrap();
        let kernel = compile(&spec).unwrap();
        let xf: Vec<f32> = xv.iter().map(|&v| v as f32).collect();
        let mut y = vec![0f32; n * m];
        kernel
            .run(Activations::F32(&xf), &packed, Some(&bias), &mut y, n, 2)
            .unwrap();
        let gemm_factor = (spec.k_pad() / 32 + 8) as f64 * 2f64.powi(-24);
        for i in 0..n * m {
            let w = want[i] as f32;
            let tol = 1.2 * gemm_factor * mags[i] + act_bound(act, pre[i], w);
            assert!(
                (f64::from(y[i]) - want[i]).abs() <= tol,
                "{spec}: output {i}: got {}, interpreter {}, bound {tol}",
                y[i],
                want[i]
            );
        }
    }
}

/// W8A8 and W4A8 (`i8`, `i4`, `u4` weights) with an `i32` bias (values
/// near the i32 limits, so the wrapping add matters), ReLU and
/// requantization, in every combination, on ragged shapes (partial weight
/// panels, so the bias's masked load matters; wide and narrow tiles), one
/// k pass and several (k beyond a pass with n >= 4): bit-exact.
#[test]
fn w8a8_w4a8_bias_relu_requantize_are_bit_exact() {
    let mut rng = Rng::new(0xb1a5);
    let shapes = [
        (7usize, 300usize, 5usize),
        (5, 4200, 6),
        (9, 65, 1),
        (4, 129, 4),
        (70, 600, 13),
    ];
    let i4 = ElemType::Int {
        bits: 4,
        signed: true,
    };
    let u4 = ElemType::Int {
        bits: 4,
        signed: false,
    };
    for (case_no, &(m, k, n)) in shapes.iter().enumerate() {
        for (act_ty, w_ty) in [
            (ElemType::U8, ElemType::I8),
            (ElemType::I8, ElemType::I8),
            (ElemType::U8, i4),
            (ElemType::I8, u4),
        ] {
            for (bias_on, relu, requant) in [
                (true, false, false),
                (true, true, false),
                (false, true, false),
                (true, false, true),
                (true, true, true),
                (false, true, true),
            ] {
                let mut spec = GemmSpec::int(m, k, Dim::Dynamic, w_ty, act_ty);
                spec.epilogue = Epilogue {
                    bias: bias_on,
                    activation: if relu {
                        Activation::Relu
                    } else {
                        Activation::None
                    },
                    requantize: requant,
                };
                let w = Tensor::new(
                    w_ty,
                    vec![m as u64, k as u64],
                    (0..m * k)
                        .map(|_| rng.next_u64() & w_ty.code_mask())
                        .collect(),
                )
                .unwrap();
                let x = Tensor::new(
                    act_ty,
                    vec![n as u64, k as u64],
                    (0..n * k).map(|_| rng.next_u64() & 0xff).collect(),
                )
                .unwrap();
                let bias: Vec<i32> = (0..m)
                    .map(|r| match (r + case_no) % 4 {
                        0 => i32::MAX - rng.below(1000) as i32,
                        1 => i32::MIN + rng.below(1000) as i32,
                        _ => rng.next_u64() as i32 >> 12,
                    })
                    .collect();
                let mults: Vec<i32> = (0..m).map(|_| 1 + rng.below(1 << 20) as i32).collect();
                let shifts: Vec<u32> = (0..m).map(|_| 8 + rng.below(30) as u32).collect();
                let zp = -5i8;
                let want = int_epilogue_reference(
                    &x,
                    &w,
                    IntSchedule::Direct,
                    bias_on.then_some(&bias[..]),
                    relu,
                    requant.then_some((&mults[..], &shifts[..], zp)),
                );
                let kernel = compile(&spec).unwrap();
                let packed = PackedWeights::pack_int(&spec, &w).unwrap();
                let u: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
                let i: Vec<i8> = u.iter().map(|&b| b as i8).collect();
                let acts = || {
                    if act_ty == ElemType::U8 {
                        Activations::U8(&u)
                    } else {
                        Activations::I8(&i)
                    }
                };
                let bias_arg = bias_on.then_some(&bias[..]);
                let got: Vec<i128> = if requant {
                    let rq = Requant {
                        multipliers: &mults,
                        shifts: &shifts,
                        zero_point: zp,
                    };
                    let mut y = vec![0i8; n * m];
                    kernel
                        .run_requant_bias(acts(), &packed, bias_arg, &rq, &mut y, n, 2)
                        .unwrap();
                    y.iter().map(|&v| i128::from(v)).collect()
                } else {
                    let mut y = vec![0i32; n * m];
                    kernel
                        .run_int_bias(acts(), &packed, bias_arg, &mut y, n, 2)
                        .unwrap();
                    y.iter().map(|&v| i128::from(v)).collect()
                };
                assert_eq!(got, want, "{spec} (n = {n})");
            }
        }
    }
}

/// The W8A8 epilogue takes only ReLU; the bias argument must match the spec.
#[test]
fn w8a8_epilogue_is_checked() {
    let mut spec = GemmSpec::int8(4, 64, Dim::Dynamic, ElemType::U8);
    spec.epilogue.activation = Activation::Gelu;
    let e = compile(&spec).expect_err("GELU on i32 must be refused");
    assert!(e.to_string().contains("ReLU"), "{e}");
    spec.epilogue.activation = Activation::None;
    spec.epilogue.bias = true;
    let k = compile(&spec).unwrap();
    let w = Tensor::new(ElemType::I8, vec![4, 64], vec![1; 256]).unwrap();
    let packed = PackedWeights::pack_int(&spec, &w).unwrap();
    let x = vec![1u8; 64];
    let mut y = vec![0i32; 4];
    let missing = k.run_int(Activations::U8(&x), &packed, &mut y, 1, 1);
    assert!(missing.unwrap_err().to_string().contains("needs a bias"));
    let short = k.run_int_bias(Activations::U8(&x), &packed, Some(&[1, 2]), &mut y, 1, 1);
    assert!(short.is_err());
    k.run_int_bias(
        Activations::U8(&x),
        &packed,
        Some(&[1, 2, 3, -100]),
        &mut y,
        1,
        1,
    )
    .unwrap();
    assert_eq!(y, vec![65, 66, 67, -36]);
}
