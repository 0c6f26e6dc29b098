//! Every GEMM kernel against the reference interpreter: random specs and
//! shapes with ragged edges (m not a multiple of the 4-row tile, n not a
//! multiple of 4 columns, k not a multiple of the 32-element block or of the
//! group), each compared with `dequantize` + `transpose` + `matmul` (+ `add`,
//! `relu`) evaluated by `lowbit_interp::eval_op`, within the bound the
//! codegen module declares.

mod common;

use common::{t, Rng};
use lowbit_interp::eval_op;
use lowbit_ir::{BinaryOp, OpKind, Overflow, Tensor, TensorType};
use lowbit_llvm::{
    compile, Activation, Activations, CpuTarget, Dim, Epilogue, GemmKernel, GemmSpec,
    PackedWeights, TensorScale, WeightGranularity, WeightSpec,
};
use lowbit_numerics::{ElemType, Rounding};

/// A `[rows, cols]` tensor of `elem` with random codes `& mask`.
fn random_codes(rng: &mut Rng, elem: ElemType, rows: usize, cols: usize, mask: u64) -> Tensor {
    let codes = (0..rows * cols).map(|_| rng.next() & mask).collect();
    Tensor::new(elem, vec![rows as u64, cols as u64], codes).unwrap()
}

/// A random code of `elem` that decodes to a finite value.
fn finite_code(rng: &mut Rng, elem: ElemType) -> u64 {
    loop {
        let c = rng.next() & elem.code_mask();
        if elem.decode(c).is_finite() {
            return c;
        }
    }
}

struct Case {
    spec: GemmSpec,
    n: usize,
    wq: Tensor,
    scales: Tensor,
    zps: Option<Tensor>,
    x: Tensor,
    bias: Option<Vec<f32>>,
}

fn make_case(rng: &mut Rng, spec: GemmSpec, n: usize) -> Case {
    let (m, k) = (spec.m, spec.k);
    let wt = spec.weight.dtype;
    let wq = Tensor::new(
        wt,
        vec![m as u64, k as u64],
        (0..m * k).map(|_| finite_code(rng, wt)).collect(),
    )
    .unwrap();
    let sshape = spec.scale_shape();
    let ns: u64 = sshape.iter().product();
    let svals: Vec<f64> = (0..ns)
        .map(|_| {
            let v = 0.01 + 0.2 * rng.unit();
            if rng.below(5) == 0 {
                -v
            } else {
                v
            }
        })
        .collect();
    let scales = Tensor::from_f64(spec.weight.scale, sshape.clone(), &svals).unwrap();
    let zps = spec.weight.zero_point.then(|| {
        Tensor::new(
            wt,
            sshape.clone(),
            (0..ns).map(|_| rng.next() & wt.code_mask()).collect(),
        )
        .unwrap()
    });
    let xvals: Vec<f64> = (0..n * k).map(|_| rng.unit() * 2.0 - 1.0).collect();
    let x = Tensor::from_f64(spec.act, vec![n as u64, k as u64], &xvals).unwrap();
    let bias = spec
        .epilogue
        .bias
        .then(|| (0..m).map(|_| (rng.unit() - 0.5) as f32).collect());
    Case {
        spec,
        n,
        wq,
        scales,
        zps,
        x,
        bias,
    }
}

/// The interpreter's answer and, per output, `sum_j |x_j w_j| + |bias|`.
fn reference(c: &Case) -> (Vec<f64>, Vec<f64>) {
    let (m, k, n) = (c.spec.m as u64, c.spec.k as u64, c.n as u64);
    let mut ops: Vec<&Tensor> = vec![&c.wq, &c.scales];
    if let Some(z) = &c.zps {
        ops.push(z);
    }
    let deq = OpKind::Dequantize {
        granularity: c.spec.ir_granularity(),
    };
    let w_ty = TensorType::new(vec![m, k], ElemType::F32);
    let mut wd = eval_op(&deq, &ops, std::slice::from_ref(&w_ty))
        .unwrap()
        .remove(0);
    // NVFP4's second level: `mul` by a scalar f32 constant.
    if let Some(ts) = c.spec.weight.tensor_scale {
        let t = Tensor::from_f64(ElemType::F32, vec![], &[f64::from(ts.value())]).unwrap();
        wd = eval_op(
            &OpKind::Binary {
                op: BinaryOp::Mul,
                overflow: Overflow::Wrap,
            },
            &[&wd, &t],
            std::slice::from_ref(&w_ty),
        )
        .unwrap()
        .remove(0);
    }
    let wt = eval_op(
        &OpKind::Transpose { perm: vec![1, 0] },
        &[&wd],
        &[TensorType::new(vec![k, m], ElemType::F32)],
    )
    .unwrap()
    .remove(0);
    let out_ty = TensorType::new(vec![n, m], ElemType::F32);
    let mut y = eval_op(
        &OpKind::MatMul {
            overflow: Overflow::Wrap,
        },
        &[&c.x, &wt],
        std::slice::from_ref(&out_ty),
    )
    .unwrap()
    .remove(0);
    let bias_t = c.bias.as_ref().map(|b| {
        let v: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
        Tensor::from_f64(ElemType::F32, vec![m], &v).unwrap()
    });
    if let Some(b) = &bias_t {
        y = eval_op(
            &OpKind::Binary {
                op: BinaryOp::Add,
                overflow: Overflow::Wrap,
            },
            &[&y, b],
            std::slice::from_ref(&out_ty),
        )
        .unwrap()
        .remove(0);
    }
    if c.spec.epilogue.activation == Activation::Relu {
        y = eval_op(&OpKind::Relu, &[&y], std::slice::from_ref(&out_ty))
            .unwrap()
            .remove(0);
    }
    let xs = c.x.to_f64();
    let ws = wd.to_f64();
    let mut mags = vec![0f64; (n * m) as usize];
    for col in 0..n as usize {
        for r in 0..m as usize {
            let mut s: f64 = (0..k as usize)
                .map(|j| (xs[col * k as usize + j] * ws[r * k as usize + j]).abs())
                .sum();
            if let Some(b) = &c.bias {
                s += f64::from(b[r]).abs();
            }
            mags[col * m as usize + r] = s;
        }
    }
    (y.to_f64(), mags)
}

fn run_kernel(kernel: &GemmKernel, c: &Case, threads: usize) -> Vec<f32> {
    let packed = PackedWeights::pack(&c.spec, &c.wq, &c.scales, c.zps.as_ref()).unwrap();
    let mut y = vec![f32::NAN; c.n * c.spec.m];
    let f32s: Vec<f32> = c.x.to_f64().iter().map(|&v| v as f32).collect();
    let f16s: Vec<half::f16> =
        c.x.codes
            .iter()
            .map(|&b| half::f16::from_bits(b as u16))
            .collect();
    let bf16s: Vec<half::bf16> =
        c.x.codes
            .iter()
            .map(|&b| half::bf16::from_bits(b as u16))
            .collect();
    let x = if c.spec.act == ElemType::F32 {
        Activations::F32(&f32s)
    } else if c.spec.act == ElemType::F16 {
        Activations::F16(&f16s)
    } else {
        Activations::BF16(&bf16s)
    };
    kernel
        .run(x, &packed, c.bias.as_deref(), &mut y, c.n, threads)
        .unwrap();
    y
}

fn check(c: &Case, got: &[f32]) {
    let (want, mags) = reference(c);
    let u = 2f64.powi(-24);
    // A tensor scale is folded into each group scale: one more rounding
    // of the weight, and one of the scale (see codegen's module docs).
    let extra = if c.spec.weight.tensor_scale.is_some() {
        2
    } else {
        0
    };
    // The float tiles sum k_pad/16 products per accumulator lane.
    let factor = (c.spec.k_pad() / 16 + 8 + extra) as f64;
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let tol = factor * u * mags[i];
        let ok = (g.is_nan() && w.is_nan())
            || (w.is_infinite() && f64::from(g) == w)
            || (f64::from(g) - w).abs() <= tol;
        assert!(
            ok,
            "{}: output {i} (col {}, row {}): got {g}, interpreter {w}, bound {tol}",
            c.spec,
            i / c.spec.m,
            i % c.spec.m
        );
    }
}

const WEIGHTS: &[&str] = &[
    "i4", "u4", "i8", "u8", "i2", "u2", "i3", "u3", "i5", "u6", "i7", "u1", "b1", "f8E4M3FN",
    "f8E5M2", "f4E2M1FN",
];

/// The targets the float tests run on: `None` (the host's best ISA,
/// through the cached JIT) and, on x86-64, an AVX2-only CPU (the
/// arithmetic decoders and AVX2 tiles).
fn host_and_avx2() -> Vec<Option<CpuTarget>> {
    let mut targets = vec![None];
    if CpuTarget::host().unwrap().triple.starts_with("x86_64") {
        targets.push(Some(CpuTarget::named("x86_64", "haswell").unwrap()));
    }
    targets
}

#[test]
fn random_specs_match_the_interpreter() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for case_no in 0..40 {
        let dtype = t(WEIGHTS[case_no % WEIGHTS.len()]);
        let is_int = matches!(dtype, ElemType::Int { .. });
        let granularity = if rng.below(4) == 0 {
            WeightGranularity::PerChannel
        } else {
            WeightGranularity::Group(rng.pick(&[32, 64, 128]))
        };
        let spec = GemmSpec {
            m: 1 + rng.below(13) as usize,
            k: 1 + rng.below(300) as usize,
            n: if rng.below(2) == 0 {
                Dim::Dynamic
            } else {
                Dim::Static(0)
            },
            weight: WeightSpec {
                dtype,
                granularity,
                scale: rng.pick(&[ElemType::F32, ElemType::F16, ElemType::BF16]),
                zero_point: is_int && rng.below(2) == 0,
                layout: None,
                tensor_scale: None,
            },
            act: rng.pick(&[ElemType::F32, ElemType::F32, ElemType::F16, ElemType::BF16]),
            epilogue: Epilogue {
                bias: rng.below(2) == 0,
                activation: if rng.below(3) == 0 {
                    Activation::Relu
                } else {
                    Activation::None
                },
                requantize: false,
            },
            schedule: Default::default(),
            act_quant: None,
        };
        let n = 1 + rng.below(10) as usize;
        let spec = GemmSpec {
            n: if spec.n == Dim::Dynamic {
                Dim::Dynamic
            } else {
                Dim::Static(n)
            },
            ..spec
        };
        let c = make_case(&mut rng, spec, n);
        let kernel = compile(&c.spec).unwrap_or_else(|e| panic!("{}: {e}", c.spec));
        let y1 = run_kernel(&kernel, &c, 1);
        check(&c, &y1);
        // Row splitting over threads does not change any result.
        let y2 = run_kernel(&kernel, &c, 2);
        assert_eq!(
            y1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            y2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{}",
            c.spec
        );
    }
}

/// Every weight type with the shapes the tiles split unevenly: m = 4t+3,
/// n = 4c+3, k one short of a block and one past a group.
/// Run on the host's best ISA (the cached JIT) and, on x86-64, also with
/// code for an AVX2-only CPU, which takes the arithmetic 4-bit decoder
/// instead of the AVX-512 table lookup.
#[test]
fn ragged_edges_every_weight_type() {
    let mut rng = Rng(42);
    let targets = host_and_avx2();
    for target in &targets {
        for (i, w) in WEIGHTS.iter().enumerate() {
            let dtype = t(w);
            let k = if i % 2 == 0 { 31 } else { 129 };
            let mut spec = GemmSpec::new(7, k, Dim::Dynamic, dtype, 64);
            spec.weight.zero_point = matches!(dtype, ElemType::Int { .. });
            spec.epilogue.bias = true;
            let c = make_case(&mut rng, spec, 7);
            let got = match target {
                None => run_kernel(&compile(&c.spec).unwrap(), &c, 2),
                Some(t) => run_kernel(&GemmKernel::compile_uncached(&c.spec, t).unwrap(), &c, 2),
            };
            check(&c, &got);
        }
    }
}

/// Every float tile and both scale paths at once: m = 13 and 21 (8-row
/// tiles, a 4-row tile, a last row), k = 1125 (36 groups of 32: two full
/// runs of 16 scales and a last run of 4, decoded before the k loop; 71
/// groups of 16: a last run of 7), run-time n from 1 to 13 (the 4x8 tile's
/// shifted second half at n % 8 = 5, its skipped one at 4 and 12) and a
/// static 13, with a bias; 4-bit codes through the table lookup (i4,
/// NVFP4 with a tensor scale) and the arithmetic decoder (i8, and the
/// AVX2-only code's 2x4 and 4x1 tiles). Within the bound of the
/// interpreter, and 1 and 2 threads give the same bits. It fails if a
/// tile's epilogue loop stores a shifted column over the first half's, or
/// a row's partial last run of scales is decoded for the wrong row.
#[test]
fn partial_scale_runs_on_every_row_tile() {
    let mut rng = Rng(0x6b65_726e_0004);
    let targets = host_and_avx2();
    let e4m3 = t("f8E4M3FN");
    for (w, group) in [("i4", 32), ("i8", 32), ("f4E2M1FN", 16)] {
        for m in [13, 21] {
            for (n, dim) in [
                (1, Dim::Dynamic),
                (4, Dim::Dynamic),
                (5, Dim::Dynamic),
                (8, Dim::Dynamic),
                (12, Dim::Dynamic),
                (13, Dim::Dynamic),
                (13, Dim::Static(13)),
            ] {
                let mut spec = GemmSpec::new(m, 1125, dim, t(w), group);
                if group == 16 {
                    spec.weight.scale = e4m3;
                    spec.weight.tensor_scale = Some(TensorScale::new(0.75 / 448.0));
                }
                spec.epilogue.bias = true;
                let c = make_case(&mut rng, spec, n);
                for target in &targets {
                    let kernel = match target {
                        None => compile(&c.spec),
                        Some(t) => {
                            GemmKernel::compile_uncached(&c.spec, t).map(std::sync::Arc::new)
                        }
                    }
                    .unwrap_or_else(|e| panic!("{}: {e}", c.spec));
                    let y1 = run_kernel(&kernel, &c, 1);
                    check(&c, &y1);
                    let y2 = run_kernel(&kernel, &c, 2);
                    assert_eq!(
                        y1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        y2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{} (n = {n})",
                        c.spec
                    );
                }
            }
        }
    }
}

/// Integer codes times integer-valued activations with power-of-two scales
/// are exact in f32, so the kernel must reproduce the interpreter exactly.
#[test]
fn exact_when_every_product_is_representable() {
    let mut rng = Rng(7);
    for w in ["i4", "u8", "i3", "b1"] {
        let mut spec = GemmSpec::new(9, 100, Dim::Dynamic, t(w), 32);
        spec.weight.scale = ElemType::F32;
        spec.weight.zero_point = w != "b1";
        let mut c = make_case(&mut rng, spec, 5);
        let s: Vec<f64> = (0..c.scales.len())
            .map(|i| [0.5, 0.25, 2.0][i % 3])
            .collect();
        c.scales = Tensor::from_f64(ElemType::F32, c.scales.shape.clone(), &s).unwrap();
        let xv: Vec<f64> = (0..c.x.len()).map(|_| rng.below(9) as f64 - 4.0).collect();
        c.x = Tensor::from_f64(ElemType::F32, c.x.shape.clone(), &xv).unwrap();
        let kernel = compile(&c.spec).unwrap();
        let got = run_kernel(&kernel, &c, 2);
        let (want, _) = reference(&c);
        let got: Vec<f64> = got.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(got, want, "{w}");
    }
}

#[test]
fn nan_and_infinite_weights_propagate_like_the_interpreter() {
    let mut rng = Rng(9);
    for w in ["f8E4M3FN", "f8E5M2"] {
        let spec = GemmSpec::new(4, 40, Dim::Dynamic, t(w), 32);
        let mut c = make_case(&mut rng, spec, 2);
        // Row 1 gets a NaN; row 2 an infinity (E5M2 only) or the largest value.
        let nan = c.wq.elem.float().unwrap().nan_code().unwrap();
        c.wq.codes[40 + 3] = nan;
        c.wq.codes[80 + 5] =
            c.wq.elem
                .encode(f64::INFINITY, Rounding::NearestEven, false);
        let kernel = compile(&c.spec).unwrap();
        check(&c, &run_kernel(&kernel, &c, 1));
    }
}

/// MXFP4 (`f4E2M1FN` with `f8E8M0FNU` scales per 32) and NVFP4 (`f8E4M3FN`
/// scales per 16 and an f32 tensor scale) on random ragged shapes, on the
/// host (AVX-512 table lookup where present) and an AVX2-only target
/// (arithmetic decoder). MX cases put the NaN code 0xFF in one group of
/// one row (that row must be NaN, as in the interpreter) and the subnormal
/// scale 2^-127 (code 0) in another.
#[test]
fn mxfp4_and_nvfp4_match_the_interpreter() {
    let mut rng = Rng(0x4d58_4650_3400_0001);
    let targets = host_and_avx2();
    let e8m0 = t("f8E8M0FNU");
    let e4m3 = t("f8E4M3FN");
    for case_no in 0..24 {
        let nv = case_no % 2 == 1;
        let k = rng.pick(&[1, 15, 16, 17, 31, 33, 48, 100, 257, 1100]);
        let n = 1 + rng.below(9) as usize;
        let mut spec = GemmSpec::new(
            1 + rng.below(11) as usize,
            k,
            if rng.below(2) == 0 {
                Dim::Dynamic
            } else {
                Dim::Static(n)
            },
            t("f4E2M1FN"),
            if nv { 16 } else { 32 },
        );
        spec.weight.scale = ElemType::F32;
        spec.act = rng.pick(&[ElemType::F32, ElemType::F16, ElemType::BF16]);
        spec.epilogue.bias = rng.below(2) == 0;
        let mut c = make_case(&mut rng, spec, n);
        let ns = c.scales.len();
        let gpr = c.spec.groups_per_row();
        let codes: Vec<u64> = if nv {
            c.spec.weight.scale = e4m3;
            c.spec.weight.tensor_scale = Some(TensorScale::new(
                (0.5 + rng.unit()) as f32 / 448.0 * if rng.below(4) == 0 { -1.0 } else { 1.0 },
            ));
            (0..ns).map(|_| finite_code(&mut rng, e4m3)).collect()
        } else {
            c.spec.weight.scale = e8m0;
            let mut codes: Vec<u64> = (0..ns).map(|_| 120 + rng.below(15)).collect();
            let last_row = (c.spec.m - 1) * gpr;
            codes[last_row + rng.below(gpr as u64) as usize] = 0xff;
            if gpr >= 2 && c.spec.m >= 2 {
                codes[0] = 0;
            }
            codes
        };
        c.scales = Tensor::new(c.spec.weight.scale, c.scales.shape.clone(), codes).unwrap();
        for target in &targets {
            let kernel = match target {
                None => compile(&c.spec),
                Some(t) => GemmKernel::compile_uncached(&c.spec, t).map(std::sync::Arc::new),
            }
            .unwrap_or_else(|e| panic!("{}: {e}", c.spec));
            let y = run_kernel(&kernel, &c, 2);
            check(&c, &y);
            if !nv {
                let m = c.spec.m;
                assert!(
                    (0..c.n).all(|col| y[col * m + m - 1].is_nan()),
                    "{}: the NaN scale did not reach its row",
                    c.spec
                );
            }
        }
    }
}

/// Power-of-two scales (one per row, E8M0's subnormal 2^-127 included;
/// E4M3 ones times a power-of-two tensor scale) with integer activations
/// make every product and sum exact: the kernels must equal the
/// interpreter bit for bit.
#[test]
fn microscaled_fp4_exact_with_power_of_two_scales() {
    let mut rng = Rng(11);
    for nv in [false, true] {
        let (group, scale) = if nv {
            (16, t("f8E4M3FN"))
        } else {
            (32, t("f8E8M0FNU"))
        };
        let mut spec = GemmSpec::new(6, 75, Dim::Dynamic, t("f4E2M1FN"), group);
        spec.weight.scale = ElemType::F32;
        let mut c = make_case(&mut rng, spec, 5);
        c.spec.weight.scale = scale;
        let gpr = c.spec.groups_per_row();
        let row_vals = [2f64.powi(-127), 0.5, 1.0, 2.0, 0.125, 4.0];
        let vals: Vec<f64> = (0..c.scales.len())
            .map(|i| {
                let v = row_vals[i / gpr];
                // E4M3 cannot hold 2^-127: its smallest power of two is 2^-9.
                if nv {
                    v.max(2f64.powi(-9))
                } else {
                    v
                }
            })
            .collect();
        c.scales = Tensor::from_f64(scale, c.scales.shape.clone(), &vals).unwrap();
        if nv {
            c.spec.weight.tensor_scale = Some(TensorScale::new(0.25));
        }
        let xv: Vec<f64> = (0..c.x.len()).map(|_| rng.below(9) as f64 - 4.0).collect();
        c.x = Tensor::from_f64(ElemType::F32, c.x.shape.clone(), &xv).unwrap();
        let got = run_kernel(&compile(&c.spec).unwrap(), &c, 2);
        let (want, _) = reference(&c);
        let got: Vec<f64> = got.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(got, want, "{}", c.spec);
        if !nv {
            assert!(
                (0..5).any(|col| got[col * 6] != 0.0),
                "the 2^-127 row is all zero: nothing tested"
            );
        }
    }
}

/// The interpreter's `matmul(x, transpose(w))` to `i32` (wrapping),
/// widened to compare with the kernels' results.
fn int_reference(x: &Tensor, w: &Tensor) -> Vec<i64> {
    common::int_reference(x, w)
        .into_iter()
        .map(i64::from)
        .collect()
}

fn run_int_case(kernel: &GemmKernel, x: &Tensor, w: &Tensor, threads: usize) -> Vec<i64> {
    let spec = kernel.spec();
    let packed = PackedWeights::pack_int(spec, w).unwrap();
    let n = x.shape[0] as usize;
    let mut y = vec![0i32; n * spec.m];
    let u: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
    let i: Vec<i8> = x.codes.iter().map(|&c| c as u8 as i8).collect();
    let acts = if spec.act == ElemType::U8 {
        Activations::U8(&u)
    } else {
        Activations::I8(&i)
    };
    kernel.run_int(acts, &packed, &mut y, n, threads).unwrap();
    y.into_iter().map(i64::from).collect()
}

/// W8A8 (VNNI on the host when it has it, and the portable dot product of
/// an AVX2-only CPU): bit-exact against the interpreter on ragged shapes.
#[test]
fn w8a8_is_bit_exact() {
    let mut rng = Rng(77);
    let host = CpuTarget::host().unwrap();
    for case_no in 0..16 {
        let act = if case_no % 2 == 0 {
            ElemType::U8
        } else {
            ElemType::I8
        };
        let (m, k, n) = (
            1 + rng.below(11) as usize,
            1 + rng.below(300) as usize,
            1 + rng.below(9) as usize,
        );
        let spec = GemmSpec::int8(m, k, Dim::Dynamic, act);
        let w = random_codes(&mut rng, ElemType::I8, m, k, 0xff);
        let x = random_codes(&mut rng, act, n, k, 0xff);
        let want = int_reference(&x, &w);
        let kernel = compile(&spec).unwrap();
        assert_eq!(run_int_case(&kernel, &x, &w, 2), want, "{spec}");
        if host.triple.starts_with("x86_64") && case_no < 6 {
            let t = CpuTarget::named("x86_64", "haswell").unwrap();
            let portable = GemmKernel::compile_uncached(&spec, &t).unwrap();
            assert_eq!(run_int_case(&portable, &x, &w, 1), want, "{spec} (avx2)");
        }
    }
}

/// W8A8 and W4A8 (`i8`, `i4`, `u4` weights x `u8`, `i8` activations) on
/// the panel tiles: ragged m (partial 16-row panels, split between two
/// threads at rows that are not panel bounds), ragged n (6-column tiles and
/// tail columns) and ragged k (across several 2048-element k passes for
/// 4-bit weights; `i8`'s 4096-element passes: `w8a8_across_k_chunks` and
/// `static_tiles.rs`), against the interpreter bit for bit; the first cases also on
/// an AVX2-only CPU (no VNNI, no GFNI).
#[test]
fn w8a8_w4a8_panels_are_bit_exact() {
    let mut rng = Rng(4242);
    let host = CpuTarget::host().unwrap();
    let types = [t("i8"), t("i4"), t("u4")];
    for case_no in 0..24 {
        let wt = types[case_no % 3];
        let act = if (case_no / 3) % 2 == 0 {
            ElemType::U8
        } else {
            ElemType::I8
        };
        let (m, k, n) = (
            1 + rng.below(90) as usize,
            1 + rng.below(2600) as usize,
            1 + rng.below(15) as usize,
        );
        let spec = GemmSpec::int(m, k, Dim::Dynamic, wt, act);
        let mask = wt.code_mask();
        let w = random_codes(&mut rng, wt, m, k, mask);
        let x = random_codes(&mut rng, act, n, k, 0xff);
        let want = int_reference(&x, &w);
        let kernel = compile(&spec).unwrap();
        assert_eq!(run_int_case(&kernel, &x, &w, 2), want, "{spec}");
        assert_eq!(run_int_case(&kernel, &x, &w, 1), want, "{spec} (1 thread)");
        if host.triple.starts_with("x86_64") && case_no < 6 {
            let t = CpuTarget::named("x86_64", "haswell").unwrap();
            let portable = GemmKernel::compile_uncached(&spec, &t).unwrap();
            assert_eq!(run_int_case(&portable, &x, &w, 1), want, "{spec} (avx2)");
        }
    }
}

/// `matmul_int x, w, zx, zw` (per-tensor zero points) on the kernels:
/// `w - zw` packed as `i4`, `zx` folded into the row offsets, for `u8` and
/// `i8` activations, against the interpreter's `matmul_int`.
#[test]
fn matmul_int_zero_points_fold_into_the_packing() {
    use lowbit_ir::IntSchedule;
    let mut rng = Rng(777);
    for (act, zx, (m, k, n)) in [
        (ElemType::U8, 200i64, (21, 333, 8)),
        (ElemType::I8, -77, (5, 1500, 7)),
    ] {
        let (wt, zw) = (t("u4"), 8u64);
        let w = random_codes(&mut rng, wt, m, k, 15);
        let x = random_codes(&mut rng, act, n, k, 0xff);
        let w_t = eval_op(
            &OpKind::Transpose { perm: vec![1, 0] },
            &[&w],
            &[TensorType::new(vec![k as u64, m as u64], wt)],
        )
        .unwrap()
        .remove(0);
        let zx_t = Tensor::new(act, vec![], vec![(zx as u64) & 0xff]).unwrap();
        let zw_t = Tensor::new(wt, vec![], vec![zw]).unwrap();
        let want: Vec<i64> = eval_op(
            &OpKind::MatMulInt {
                overflow: Overflow::Wrap,
                schedule: IntSchedule::Direct,
            },
            &[&x, &w_t, &zx_t, &zw_t],
            &[TensorType::new(vec![n as u64, m as u64], ElemType::I32)],
        )
        .unwrap()
        .remove(0)
        .to_i128()
        .unwrap()
        .into_iter()
        .map(|v| v as i64)
        .collect();
        // u4 - 8 spans -8..=7: i4 codes.
        let centered = Tensor::new(
            t("i4"),
            w.shape.clone(),
            w.codes.iter().map(|&c| c.wrapping_sub(zw) & 15).collect(),
        )
        .unwrap();
        let spec = GemmSpec::int(m, k, Dim::Dynamic, t("i4"), act);
        let packed = PackedWeights::pack_int_centered(&spec, &centered, zx).unwrap();
        let u: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
        let i: Vec<i8> = u.iter().map(|&b| b as i8).collect();
        let acts = if act == ElemType::U8 {
            Activations::U8(&u)
        } else {
            Activations::I8(&i)
        };
        let mut y = vec![0i32; n * m];
        compile(&spec)
            .unwrap()
            .run_int(acts, &packed, &mut y, n, 2)
            .unwrap();
        let got: Vec<i64> = y.into_iter().map(i64::from).collect();
        assert_eq!(got, want, "{spec} zx={zx}");
    }
}

/// The W4A8 sums wrap like the interpreter's too, across k passes.
#[test]
fn w4a8_wraps_like_the_interpreter() {
    // |sum| = 255 * 8 * k (i4) or 255 * 15 * k (u4) > 2^31; n = 5 walks
    // k in passes.
    let (m, k, n) = (3, 1_100_000, 5);
    for (wt, code) in [(t("i4"), 8u64), (t("u4"), 15)] {
        let spec = GemmSpec::int(m, k, Dim::Static(n), wt, ElemType::U8);
        let w = Tensor::new(wt, vec![m as u64, k as u64], vec![code; m * k]).unwrap();
        let x = Tensor::new(ElemType::U8, vec![n as u64, k as u64], vec![255; n * k]).unwrap();
        let want = int_reference(&x, &w);
        let exact = 255 * k as i64 * if wt == t("i4") { -8 } else { 15 };
        assert_ne!(want[0], exact, "the sum must overflow i32");
        assert_eq!(run_int_case(&compile(&spec).unwrap(), &x, &w, 2), want);
    }
}

/// Sums beyond i32 wrap exactly as the interpreter's `overflow = wrap`.
#[test]
fn w8a8_wraps_like_the_interpreter() {
    let (m, k, n) = (3, 70_000, 2);
    let spec = GemmSpec::int8(m, k, Dim::Static(n), ElemType::U8);
    let w = Tensor::new(ElemType::I8, vec![m as u64, k as u64], vec![0x80; m * k]).unwrap();
    let x = Tensor::new(ElemType::U8, vec![n as u64, k as u64], vec![255; n * k]).unwrap();
    let want = int_reference(&x, &w);
    assert_ne!(
        want[0],
        -(255 * 128 * k as i64),
        "the sum must overflow i32"
    );
    assert_eq!(run_int_case(&compile(&spec).unwrap(), &x, &w, 2), want);
}

/// k spanning several of the kernel's k passes (4096 elements each), with the i8
/// offset correction, which must come off exactly once.
#[test]
fn w8a8_across_k_chunks() {
    let mut rng = Rng(2024);
    let (m, k) = (5, 64 * 64 * 2 + 37);
    for (act, n) in [(ElemType::I8, 6), (ElemType::U8, 6), (ElemType::I8, 1)] {
        let spec = GemmSpec::int8(m, k, Dim::Dynamic, act);
        let w = random_codes(&mut rng, ElemType::I8, m, k, 0xff);
        let x = random_codes(&mut rng, act, n, k, 0xff);
        let want = int_reference(&x, &w);
        assert_eq!(
            run_int_case(&compile(&spec).unwrap(), &x, &w, 2),
            want,
            "{act}"
        );
    }
}

/// Long k (the float tiles take it in one pass): the bias joins once and
/// ReLU applies to the whole sum, for groups of 32 and 128 and per-channel
/// scales, through the 4x4 tile with a 1-column tail (n = 5) and the 4x1
/// decoding tile (n = 2).
#[test]
fn float_kernels_long_k_bias_and_relu() {
    let mut rng = Rng(99);
    for (w, gran) in [
        ("i4", WeightGranularity::Group(32)),
        ("u8", WeightGranularity::Group(128)),
        ("f8E4M3FN", WeightGranularity::PerChannel),
        ("i3", WeightGranularity::Group(64)),
    ] {
        let mut spec = GemmSpec::new(6, 2500, Dim::Dynamic, t(w), 32);
        spec.weight.granularity = gran;
        spec.weight.zero_point = w == "u8";
        spec.epilogue = Epilogue {
            bias: true,
            activation: Activation::Relu,
            requantize: false,
        };
        for n in [5, 2] {
            let c = make_case(&mut rng, spec.clone(), n);
            check(&c, &run_kernel(&compile(&c.spec).unwrap(), &c, 2));
        }
    }
}

/// The float tiles decode scales 16 at a time: group counts around
/// multiples of 16 (a full last run, one scale past it, a short one; two
/// scales per block with groups of 16), every scale type, ragged m, and n
/// covering the 4x4 tile, its 1-column tail and the decoding tile.
#[test]
fn scale_runs_and_tiles_match_the_interpreter() {
    let mut rng = Rng(0x5ca1_e516);
    let e8m0 = t("f8E8M0FNU");
    let e4m3 = t("f8E4M3FN");
    let cases: &[(&str, usize, ElemType, usize)] = &[
        ("i4", 32, ElemType::F16, 512),
        ("i4", 32, ElemType::F16, 513),
        ("i8", 32, ElemType::F32, 539),
        ("u4", 64, ElemType::BF16, 1056),
        ("i4", 32, ElemType::F16, 1057),
        ("f4E2M1FN", 32, e8m0, 545),
        ("f4E2M1FN", 16, e4m3, 257),
        ("f4E2M1FN", 16, e4m3, 511),
        ("f8E4M3FN", 32, ElemType::F32, 1000),
    ];
    for (i, &(w, group, scale, k)) in cases.iter().enumerate() {
        let dtype = t(w);
        for n in [1, 4, 5, 8, 9] {
            let m = [5, 9, 13][(i + n) % 3];
            let mut spec = GemmSpec::new(m, k, Dim::Dynamic, dtype, group);
            spec.weight.scale = ElemType::F32;
            spec.weight.zero_point = matches!(dtype, ElemType::Int { signed: false, .. });
            spec.epilogue.bias = n % 2 == 1;
            let mut c = make_case(&mut rng, spec, n);
            if scale != ElemType::F32 {
                c.spec.weight.scale = scale;
                if scale == e4m3 {
                    c.spec.weight.tensor_scale = Some(TensorScale::new(0.0125));
                }
                let ns = c.scales.len();
                let codes: Vec<u64> = if scale == e8m0 {
                    (0..ns).map(|_| 120 + rng.below(15)).collect()
                } else {
                    (0..ns)
                        .map(|_| {
                            let v = 0.01 + 0.05 * rng.unit();
                            scale.encode(v, Rounding::NearestEven, true)
                        })
                        .collect()
                };
                c.scales = Tensor::new(scale, c.scales.shape.clone(), codes).unwrap();
            }
            let kernel = compile(&c.spec).unwrap_or_else(|e| panic!("{}: {e}", c.spec));
            check(&c, &run_kernel(&kernel, &c, 2));
        }
    }
}

/// Several 8-row decode tiles and a partial last one (m = 8t + 1..7), k not
/// a multiple of the block or the group, group counts not a multiple of 16,
/// on 1 and 2 threads (row chunks of whole 8-row tiles: the same bits),
/// with the decode tile (n = 1), the wide tiles and their tails (n = 5, 9),
/// and on x86-64 also for an AVX2-only CPU (4-row tiles).
#[test]
fn many_row_tiles_match_the_interpreter() {
    let mut rng = Rng(0x7173_d0c5);
    let targets = host_and_avx2();
    let e8m0 = t("f8E8M0FNU");
    let cases: &[(&str, usize, usize, usize)] = &[
        ("i4", 32, 27, 1000),
        ("i8", 32, 43, 300),
        ("u2", 64, 19, 161),
        ("i3", 32, 33, 95),
        ("f4E2M1FN", 32, 21, 700),
        ("f4E2M1FN", 16, 17, 250),
        ("f8E4M3FN", 0, 30, 129),
    ];
    for target in &targets {
        for (i, &(w, group, m, k)) in cases.iter().enumerate() {
            let dtype = t(w);
            for n in [1, 5, 9] {
                let mut spec = GemmSpec::new(m, k, Dim::Dynamic, dtype, group.max(16));
                if group == 0 {
                    spec.weight.granularity = WeightGranularity::PerChannel;
                }
                spec.weight.scale = ElemType::F32;
                spec.weight.zero_point = i == 2;
                spec.epilogue.bias = n == 5;
                let mut c = make_case(&mut rng, spec, n);
                if dtype == t("f4E2M1FN") && group == 32 {
                    // MXFP4: power-of-two scales.
                    c.spec.weight.scale = e8m0;
                    let codes = (0..c.scales.len()).map(|_| 120 + rng.below(15)).collect();
                    c.scales = Tensor::new(e8m0, c.scales.shape.clone(), codes).unwrap();
                }
                let kernel = match target {
                    None => compile(&c.spec).unwrap(),
                    Some(t) => {
                        std::sync::Arc::new(GemmKernel::compile_uncached(&c.spec, t).unwrap())
                    }
                };
                let y1 = run_kernel(&kernel, &c, 1);
                check(&c, &y1);
                let y2 = run_kernel(&kernel, &c, 2);
                assert_eq!(
                    y1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    y2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} on {target:?}",
                    c.spec
                );
            }
        }
    }
}

fn run_binary_case(kernel: &GemmKernel, x: &Tensor, w: &Tensor) -> Vec<i64> {
    let spec = kernel.spec();
    let packed = PackedWeights::pack_int(spec, w).unwrap();
    let n = x.shape[0] as usize;
    let mut y = vec![0i32; n * spec.m];
    let codes: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
    kernel
        .run_int(Activations::B1(&codes), &packed, &mut y, n, 2)
        .unwrap();
    y.into_iter().map(i64::from).collect()
}

/// W1A1 by popcount (VPOPCNTDQ on the host when it has it, and the
/// portable popcount of an AVX2-only CPU): bit-exact against the
/// interpreter's b1 matmul, on ragged shapes and across k passes.
#[test]
fn w1a1_popcount_is_bit_exact() {
    let mut rng = Rng(5150);
    let host = CpuTarget::host().unwrap();
    let shapes = [
        (1, 1, 1),
        (7, 513, 5),
        (4, 1000, 9),
        (3, 70_000, 2),
        (9, 64, 4),
    ];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        let spec = GemmSpec::binary(m, k, Dim::Dynamic);
        let w = random_codes(&mut rng, ElemType::Bipolar, m, k, 1);
        let x = random_codes(&mut rng, ElemType::Bipolar, n, k, 1);
        let want = int_reference(&x, &w);
        assert_eq!(
            run_binary_case(&compile(&spec).unwrap(), &x, &w),
            want,
            "{spec}"
        );
        if host.triple.starts_with("x86_64") && i < 3 {
            let t = CpuTarget::named("x86_64", "haswell").unwrap();
            let k2 = GemmKernel::compile_uncached(&spec, &t).unwrap();
            assert_eq!(run_binary_case(&k2, &x, &w), want, "{spec} (avx2)");
        }
    }
}

/// The dyadic requantize epilogue against the interpreter's `requantize`
/// (input scale M * 2^-shift per output column, output scale 1, nearest
/// even, saturating), with ties, shift 0 and clamping among the rows.
#[test]
fn w8a8_dyadic_requantize_matches_the_interpreter() {
    use lowbit_ir::Granularity;
    use lowbit_llvm::Requant;
    use lowbit_numerics::Rounding;
    let mut rng = Rng(31337);
    let f64t = ElemType::Float(lowbit_numerics::FloatFormat::F64);
    // Two weight panels (the second partial) and a 6-column tile plus a
    // tail column for the 4-bit weights.
    for (act, wt, (m, k, n)) in [
        (ElemType::U8, ElemType::I8, (9, 300, 5)),
        (ElemType::I8, ElemType::I8, (9, 300, 5)),
        (ElemType::U8, t("i4"), (19, 301, 7)),
        (ElemType::I8, t("u4"), (19, 77, 7)),
        (ElemType::I8, t("i4"), (35, 130, 13)),
    ] {
        let mut spec = GemmSpec::int(m, k, Dim::Dynamic, wt, act);
        spec.epilogue.requantize = true;
        // Row 0 of w picks x[c][0] alone; x[0][0] = 5 and x[1][0] = 7
        // halve to the ties 2.5 and 3.5 (nearest even: 2 and 4).
        let mask = wt.code_mask();
        let mut wc: Vec<u64> = (0..m * k).map(|_| rng.next() & mask).collect();
        wc[..k].fill(0);
        wc[0] = 1;
        let w = Tensor::new(wt, vec![m as u64, k as u64], wc).unwrap();
        let mut xc: Vec<u64> = (0..n * k).map(|_| rng.next() & 0xff).collect();
        (xc[0], xc[k]) = (5, 7);
        let x = Tensor::new(act, vec![n as u64, k as u64], xc).unwrap();
        let mut mults: Vec<i32> = (0..m).map(|_| 1 + rng.below(1 << 20) as i32).collect();
        let mut shifts: Vec<u32> = (0..m).map(|_| 10 + rng.below(25) as u32).collect();
        (mults[0], shifts[0]) = (1, 1); // acc / 2: ties on odd sums
        (mults[1], shifts[1]) = (3, 0); // no shift: saturates
        (mults[2], shifts[2]) = (-(1 << 19), 20); // negative scale
        let zp = -3i8;

        let w_t = eval_op(
            &OpKind::Transpose { perm: vec![1, 0] },
            &[&w],
            &[TensorType::new(vec![k as u64, m as u64], wt)],
        )
        .unwrap()
        .remove(0);
        let acc = eval_op(
            &OpKind::MatMul {
                overflow: Overflow::Wrap,
            },
            &[&x, &w_t],
            &[TensorType::new(vec![n as u64, m as u64], ElemType::I32)],
        )
        .unwrap()
        .remove(0);
        let s_in: Vec<f64> = mults
            .iter()
            .zip(&shifts)
            .map(|(&mu, &s)| f64::from(mu) * 2f64.powi(-(s as i32)))
            .collect();
        let s_in = Tensor::from_f64(f64t, vec![m as u64], &s_in).unwrap();
        let zp_in = Tensor::new(ElemType::I32, vec![m as u64], vec![0; m]).unwrap();
        let s_out = Tensor::from_f64(f64t, vec![], &[1.0]).unwrap();
        let zp_out = Tensor::from_f64(ElemType::I8, vec![], &[f64::from(zp)]).unwrap();
        let want = eval_op(
            &OpKind::Requantize {
                in_granularity: Granularity::PerAxis { axis: 1 },
                out_granularity: Granularity::PerTensor,
                rounding: Rounding::NearestEven,
                saturate: true,
            },
            &[&acc, &s_in, &zp_in, &s_out, &zp_out],
            &[TensorType::new(vec![n as u64, m as u64], ElemType::I8)],
        )
        .unwrap()
        .remove(0)
        .to_i128()
        .unwrap();

        let kernel = compile(&spec).unwrap();
        let packed = PackedWeights::pack_int(&spec, &w).unwrap();
        let u: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
        let i: Vec<i8> = u.iter().map(|&b| b as i8).collect();
        let acts = if act == ElemType::U8 {
            Activations::U8(&u)
        } else {
            Activations::I8(&i)
        };
        let rq = Requant {
            multipliers: &mults,
            shifts: &shifts,
            zero_point: zp,
        };
        let mut y = vec![0i8; n * m];
        kernel
            .run_requant(acts, &packed, &rq, &mut y, n, 2)
            .unwrap();
        let got: Vec<i128> = y.iter().map(|&v| i128::from(v)).collect();
        assert_eq!(got, want, "{spec}");
        assert!(
            got.contains(&127) || got.contains(&-128),
            "no row saturated"
        );
        // The two ties, with zero point -3.
        assert_eq!((got[0], got[m]), (2 - 3, 4 - 3));
    }
}

/// Float kernels with a static n whose column walk needs no narrow tile
/// (8 and 12 columns: the 4x8 tile, then 4x4; AVX2's 2x4), the only tiles
/// such a kernel compiles besides 1x1 for the tail rows: ragged m and k
/// against the interpreter, on the host and an AVX2-only CPU.
#[test]
fn static_n_float_tiles_match_the_interpreter() {
    let mut rng = Rng(808);
    let host = CpuTarget::host().unwrap();
    let mut targets = vec![host.clone()];
    if host.triple.starts_with("x86_64") {
        targets.push(CpuTarget::named("x86_64", "haswell").unwrap());
    }
    for target in &targets {
        for (wt, n) in [("i4", 8), ("i8", 8), ("u4", 12)] {
            let (m, k) = (1 + rng.below(40) as usize, 1 + rng.below(700) as usize);
            let spec = GemmSpec::new(m, k, Dim::Static(n), t(wt), 32);
            let c = make_case(&mut rng, spec, n);
            let kernel = GemmKernel::compile_uncached(&c.spec, target).unwrap();
            check(&c, &run_kernel(&kernel, &c, 2));
        }
    }
}

/// Float kernels with a run-time n: one kernel per spec runs every n from
/// 1 to 20, so every remainder of the 8-column tile meets the last columns
/// (n % 8 >= 4 takes the 4x8 tile with its second half shifted back onto
/// computed columns, or skipped at n % 8 = 4; fewer the one-column
/// tiles), over ragged m (full 8-row blocks, 4-7 tail rows taken one row
/// at a time, 1-3 tail rows) and k (partial blocks and groups), with and
/// without bias and ReLU, against the interpreter, on the host and an
/// AVX2-only CPU; 1 and 2 threads give the same bits.
#[test]
fn dynamic_n_every_column_remainder_matches_the_interpreter() {
    let mut rng = Rng(0xd1a_c015);
    let host = CpuTarget::host().unwrap();
    let mut targets = vec![host.clone()];
    if host.triple.starts_with("x86_64") {
        targets.push(CpuTarget::named("x86_64", "haswell").unwrap());
    }
    let cases: &[(&str, usize, usize, usize)] =
        &[("i4", 32, 21, 300), ("i8", 32, 13, 95), ("u4", 64, 30, 161)];
    for target in &targets {
        for (i, &(w, group, m, k)) in cases.iter().enumerate() {
            let mut spec = GemmSpec::new(m, k, Dim::Dynamic, t(w), group);
            spec.epilogue.bias = i != 1;
            if i == 2 {
                spec.epilogue.activation = Activation::Relu;
                spec.weight.zero_point = true;
            }
            let kernel = GemmKernel::compile_uncached(&spec, target).unwrap();
            for n in 1..=20 {
                let c = make_case(&mut rng, spec.clone(), n);
                let y1 = run_kernel(&kernel, &c, 1);
                check(&c, &y1);
                let y2 = run_kernel(&kernel, &c, 2);
                assert_eq!(
                    y1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    y2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} n = {n} on {}",
                    c.spec,
                    target.cpu
                );
            }
        }
    }
}
