//! `--backend cpu` against the interpreter on the graphs `cpu_run` maps:
//! fused float chains (bias, every activation, NVFP4 tensor scale, groups
//! of 16, batched activations) within the kernels' declared bound, integer
//! chains (activation zero point, `i32` bias, ReLU, `requant_dyadic`)
//! bit-exact, `qmatmul` epilogues, the fallbacks the summary names, and
//! the `quantize-activations` form on the block-dot kernel.

use super::*;
use lowbit::interp::run_function;
use lowbit::ir::testing::Rng;

fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn tt(shape: &[u64], e: &str) -> TensorType {
    TensorType::new(shape.to_vec(), e.parse::<ElemType>().unwrap())
}

fn konst(f: &mut Function, t: &Tensor) -> Value {
    let ty = TensorType::new(t.shape.clone(), t.elem);
    f.push(OpKind::constant_of(t, &ty), vec![], ty)
}

fn random_codes(rng: &mut Rng, e: ElemType, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| loop {
            let c = rng.next_u64() & e.code_mask();
            if e.decode(c).is_finite() {
                break c;
            }
        })
        .collect()
}

/// Runs `f` on both backends.
fn both(f: &Function, inputs: &[(String, Tensor)]) -> (CpuRun, Vec<(String, Tensor)>) {
    let cpu = run(f, inputs).unwrap_or_else(|e| panic!("cpu: {e}"));
    let want = run_function(f, inputs).unwrap_or_else(|e| panic!("interp: {e}"));
    (cpu, want)
}

/// The float chain's description: weights and what follows the matmul.
struct FloatCase {
    weight: &'static str,
    scale: &'static str,
    /// `None`: per output column with u8-style zero points when the
    /// weight is unsigned; `Some(g)`: blocks of `g` along k.
    group: Option<u64>,
    tensor_scale: Option<f32>,
    x_shape: Vec<u64>,
    m: u64,
    bias: bool,
    act: Option<OpKind>,
}

/// Builds `act(add(matmul(x, [mul](dequantize(q, s[, z])[, t])), b))`
/// and returns it with its input and, per output, `sum |x w| + |b|`.
fn float_graph(rng: &mut Rng, c: &FloatCase) -> (Function, Vec<(String, Tensor)>, Vec<f64>) {
    let k = *c.x_shape.last().unwrap();
    let m = c.m;
    let we: ElemType = c.weight.parse().unwrap();
    let se: ElemType = c.scale.parse().unwrap();
    let mut f = Function::new("main");
    let x = f.add_param("x", tt(&c.x_shape, "f32"));
    let q = Tensor::new(we, vec![k, m], random_codes(rng, we, (k * m) as usize)).unwrap();
    let (gran, sshape) = match c.group {
        Some(g) => (
            Granularity::Blocked {
                blocks: vec![(0, g)],
            },
            vec![k.div_ceil(g), m],
        ),
        None => (Granularity::PerAxis { axis: 1 }, vec![m]),
    };
    let ns: u64 = sshape.iter().product();
    let sv: Vec<f64> = (0..ns).map(|_| 0.01 + 0.1 * unit(rng)).collect();
    let s = Tensor::from_f64(se, sshape.clone(), &sv).unwrap();
    let zp = (c.group.is_none() && matches!(we, ElemType::Int { signed: false, .. }))
        .then(|| Tensor::new(we, sshape.clone(), random_codes(rng, we, ns as usize)).unwrap());
    let mut deq_ops = vec![&q, &s];
    if let Some(z) = &zp {
        deq_ops.push(z);
    }
    let deq_kind = OpKind::Dequantize {
        granularity: gran.clone(),
    };
    let wt = tt(&[k, m], "f32");
    let mut wd = eval_op(&deq_kind, &deq_ops, std::slice::from_ref(&wt))
        .unwrap()
        .remove(0);
    let qv = konst(&mut f, &q);
    let sv_ = konst(&mut f, &s);
    let mut ops = vec![qv, sv_];
    if let Some(z) = &zp {
        ops.push(konst(&mut f, z));
    }
    let mut w = f.push(deq_kind, ops, wt.clone());
    let mul = OpKind::Binary {
        op: BinaryOp::Mul,
        overflow: Overflow::Wrap,
    };
    if let Some(t) = c.tensor_scale {
        let tt_ = Tensor::from_f64(ElemType::F32, vec![], &[f64::from(t)]).unwrap();
        wd = eval_op(&mul, &[&wd, &tt_], std::slice::from_ref(&wt))
            .unwrap()
            .remove(0);
        let tv = konst(&mut f, &tt_);
        w = f.push(mul, vec![w, tv], wt);
    }
    let mut out_shape = c.x_shape.clone();
    *out_shape.last_mut().unwrap() = m;
    let ot = tt(&out_shape, "f32");
    let mut y = f.push(
        OpKind::MatMul {
            overflow: Overflow::Wrap,
        },
        vec![x, w],
        ot.clone(),
    );
    let bv: Vec<f64> = (0..m).map(|_| 2.0 * unit(rng) - 1.0).collect();
    if c.bias {
        let b = Tensor::from_f64(ElemType::F32, vec![m], &bv).unwrap();
        let bc = konst(&mut f, &b);
        y = f.push(
            OpKind::Binary {
                op: BinaryOp::Add,
                overflow: Overflow::Wrap,
            },
            vec![y, bc],
            ot.clone(),
        );
    }
    if let Some(a) = &c.act {
        y = f.push(a.clone(), vec![y], ot);
    }
    f.outputs.push(("y".into(), y));
    let n: u64 = c.x_shape[..c.x_shape.len() - 1].iter().product();
    let xv: Vec<f64> = (0..n * k).map(|_| 2.0 * unit(rng) - 1.0).collect();
    let xt = Tensor::from_f64(ElemType::F32, c.x_shape.clone(), &xv).unwrap();
    let xs = xt.to_f64();
    let ws = wd.to_f64();
    let (k, m) = (k as usize, m as usize);
    let mags = (0..n as usize * m)
        .map(|i| {
            let (col, r) = (i / m, i % m);
            let dot: f64 = (0..k)
                .map(|j| (xs[col * k + j] * ws[j * m + r]).abs())
                .sum();
            dot + if c.bias { bv[r].abs() } else { 0.0 }
        })
        .collect();
    (f, vec![("x".into(), xt)], mags)
}

fn ulp(v: f32) -> f64 {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return f64::from(f32::from_bits(1));
    }
    f64::from(f32::from_bits(a.to_bits() + 1)) - f64::from(a)
}

/// Every float chain maps onto one kernel with nothing left on the
/// interpreter, and agrees with it within the declared bound (the GEMM
/// bound of `lowbit_llvm::codegen`, times 1.2 under an activation, plus
/// the activation's own ulp and tanh-GELU terms).
#[test]
fn float_chains_match_the_interpreter() {
    let mut rng = Rng::new(0xf10a7);
    let gelu = OpKind::Gelu { tanh: false };
    let cases = vec![
        FloatCase {
            weight: "i4",
            scale: "f16",
            group: Some(16),
            tensor_scale: None,
            x_shape: vec![2, 3, 80],
            m: 13,
            bias: true,
            act: Some(gelu.clone()),
        },
        FloatCase {
            weight: "i4",
            scale: "f16",
            group: Some(32),
            tensor_scale: None,
            x_shape: vec![5, 70],
            m: 9,
            bias: true,
            act: Some(OpKind::Gelu { tanh: true }),
        },
        FloatCase {
            weight: "u8",
            scale: "f32",
            group: None,
            tensor_scale: None,
            x_shape: vec![1, 64],
            m: 10,
            bias: false,
            act: Some(OpKind::Silu),
        },
        FloatCase {
            weight: "f4E2M1FN",
            scale: "f8E4M3FN",
            group: Some(16),
            tensor_scale: Some(0.37),
            x_shape: vec![2, 2, 96],
            m: 7,
            bias: true,
            act: Some(OpKind::Relu),
        },
        FloatCase {
            weight: "f4E2M1FN",
            scale: "f8E4M3FN",
            group: Some(16),
            tensor_scale: Some(1.5),
            x_shape: vec![3, 48],
            m: 5,
            bias: false,
            act: None,
        },
        FloatCase {
            weight: "i8",
            scale: "bf16",
            group: Some(64),
            tensor_scale: None,
            x_shape: vec![6, 1100],
            m: 6,
            bias: true,
            act: Some(gelu),
        },
    ];
    for c in &cases {
        let (f, inputs, mags) = float_graph(&mut rng, c);
        let (cpu, want) = both(&f, &inputs);
        let what = format!("{} {:?} {:?}", c.weight, c.group, c.act);
        assert_eq!(cpu.on_cpu.len(), 1, "{what}: {}", cpu.summary());
        assert!(cpu.on_interp.is_empty(), "{what}: {}", cpu.summary());
        assert!(cpu.not_mapped.is_empty(), "{what}: {}", cpu.summary());
        let spec = &cpu.on_cpu[0].1;
        if c.tensor_scale.is_some() {
            assert!(spec.contains(" *"), "{spec}");
        }
        let (g, w) = (&cpu.outputs[0].1, &want[0].1);
        assert_eq!(g.shape, w.shape, "{what}");
        let k_pad = (c.x_shape.last().unwrap().div_ceil(32) * 32) as f64;
        let extra = if c.tensor_scale.is_some() { 2.0 } else { 0.0 };
        let factor = (k_pad / 32.0 + 8.0 + extra) * 2f64.powi(-24);
        let slope = if c.act.is_some() { 1.2 } else { 1.0 };
        for (i, (&a, &b)) in g.to_f64().iter().zip(&w.to_f64()).enumerate() {
            let tanh = if matches!(c.act, Some(OpKind::Gelu { tanh: true })) {
                mags[i] * 2f64.powi(-50)
            } else {
                0.0
            };
            let tol = slope * factor * mags[i] + ulp(b as f32) + tanh;
            assert!(
                (a - b).abs() <= tol,
                "{what}: output {i}: cpu {a}, interpreter {b}, bound {tol}"
            );
        }
    }
}

/// What follows the integer matmul.
#[derive(Clone, Copy)]
struct IntChain {
    zero_point: bool,
    bias: bool,
    relu: bool,
    /// Per-column multipliers (`true`), one for all (`false`), or none.
    requant: Option<bool>,
}

/// Builds `requant_dyadic(relu(add(matmul_int(x, w, zx, zw), b)))` (each
/// step optional) over `x` of `x_shape`, `w` of type `weight.0` and
/// `zw = weight.1` (with `c.zero_point`).
fn int_graph(
    rng: &mut Rng,
    (act, weight): (&str, (&str, u64)),
    x_shape: &[u64],
    m: u64,
    c: IntChain,
    big_multiplier: bool,
) -> (Function, Vec<(String, Tensor)>) {
    let k = *x_shape.last().unwrap();
    let ae: ElemType = act.parse().unwrap();
    let we: ElemType = weight.0.parse().unwrap();
    let mut f = Function::new("main");
    let x = f.add_param("x", TensorType::new(x_shape.to_vec(), ae));
    let w = Tensor::new(
        we,
        vec![k, m],
        (0..k * m)
            .map(|_| rng.next_u64() & we.code_mask())
            .collect(),
    )
    .unwrap();
    let wv = konst(&mut f, &w);
    let mut out_shape = x_shape.to_vec();
    *out_shape.last_mut().unwrap() = m;
    let acc_t = TensorType::new(out_shape.clone(), ElemType::I32);
    let mut ops = vec![x, wv];
    if c.zero_point {
        let zx = Tensor::new(ae, vec![], vec![rng.next_u64() & 0xff]).unwrap();
        let zw = Tensor::new(we, vec![], vec![weight.1]).unwrap();
        ops.push(konst(&mut f, &zx));
        ops.push(konst(&mut f, &zw));
    }
    let mut y = f.push(
        OpKind::MatMulInt {
            overflow: Overflow::Wrap,
            schedule: lowbit::ir::IntSchedule::Direct,
        },
        ops,
        acc_t.clone(),
    );
    if c.bias {
        let b = Tensor::new(
            ElemType::I32,
            vec![1, m],
            (0..m)
                .map(|i| match i % 3 {
                    0 => u64::from((i32::MAX - 7) as u32),
                    1 => u64::from((rng.next_u64() as i32 >> 10) as u32),
                    _ => u64::from((i32::MIN + 3) as u32),
                })
                .collect(),
        )
        .unwrap();
        let bv = konst(&mut f, &b);
        y = f.push(
            OpKind::Binary {
                op: BinaryOp::Add,
                overflow: Overflow::Wrap,
            },
            vec![bv, y],
            acc_t.clone(),
        );
    }
    if c.relu {
        y = f.push(OpKind::Relu, vec![y], acc_t.clone());
    }
    if let Some(per_col) = c.requant {
        let ch = if per_col { m as usize } else { 1 };
        let mut multiplier: Vec<i64> = (0..ch).map(|_| 1 + rng.below(1 << 20) as i64).collect();
        if big_multiplier {
            multiplier[0] = 1 << 40;
        }
        let shift: Vec<u32> = (0..ch).map(|_| 12 + rng.below(20) as u32).collect();
        let zp = Tensor::new(ElemType::I8, vec![], vec![(-3i8) as u8 as u64]).unwrap();
        let zv = konst(&mut f, &zp);
        y = f.push(
            OpKind::RequantDyadic {
                multiplier,
                shift,
                axis: per_col.then_some(out_shape.len() as u32 - 1),
                rounding: Rounding::NearestEven,
                saturate: true,
            },
            vec![y, zv],
            TensorType::new(out_shape.clone(), ElemType::I8),
        );
    }
    f.outputs.push(("y".into(), y));
    let n: u64 = x_shape.iter().product();
    let xt = Tensor::new(
        ae,
        x_shape.to_vec(),
        (0..n).map(|_| rng.next_u64() & 0xff).collect(),
    )
    .unwrap();
    (f, vec![("x".into(), xt)])
}

/// Integer chains run as one W8A8 kernel, bit-exact, on 2-D and batched
/// activations, one k pass and several.
#[test]
fn integer_chains_are_bit_exact_on_one_kernel() {
    let mut rng = Rng::new(0x1e7);
    let chains = [
        IntChain {
            zero_point: true,
            bias: true,
            relu: true,
            requant: Some(true),
        },
        IntChain {
            zero_point: true,
            bias: false,
            relu: false,
            requant: Some(false),
        },
        IntChain {
            zero_point: false,
            bias: true,
            relu: true,
            requant: None,
        },
        IntChain {
            zero_point: true,
            bias: true,
            relu: false,
            requant: None,
        },
        IntChain {
            zero_point: false,
            bias: false,
            relu: true,
            requant: Some(true),
        },
    ];
    let shapes: [&[u64]; 3] = [&[2, 3, 70], &[5, 4200], &[1, 129]];
    for (i, c) in chains.iter().enumerate() {
        for shape in shapes {
            for act in ["u8", "i8"] {
                let (f, inputs) =
                    int_graph(&mut rng, (act, ("i8", 0)), shape, 7 + i as u64, *c, false);
                let (cpu, want) = both(&f, &inputs);
                assert_eq!(cpu.outputs[0].1, want[0].1, "{act} {shape:?} chain {i}");
                assert_eq!(cpu.on_cpu.len(), 1, "{}", cpu.summary());
                assert!(cpu.on_interp.is_empty(), "{}", cpu.summary());
                assert!(cpu.not_mapped.is_empty(), "{}", cpu.summary());
            }
        }
    }
}

/// 4-bit weights and weight zero points: `i4` as it is, `u4 - 8` (fits
/// `i4`) on the W4A8 kernel, `u8 - 128` (fits `i8`) on W8A8, each with an
/// activation zero point in the row offsets and the fused bias, ReLU and
/// requantize; `u8` weights without a zero point (not `i8`) go to the
/// bit-serial kernel. All on one kernel, bit-exact.
#[test]
fn integer_chains_with_weight_zero_points_pick_the_kernel() {
    let mut rng = Rng::new(0x4a8);
    let full = IntChain {
        zero_point: true,
        bias: true,
        relu: true,
        requant: Some(true),
    };
    let acc = IntChain {
        zero_point: true,
        bias: true,
        relu: true,
        requant: None,
    };
    let cases = [
        (("u8", ("i4", 0)), full, "weight=i4"),
        (("i8", ("u4", 8)), full, "weight=i4"),
        (("u8", ("u4", 8)), acc, "weight=i4"),
        (("i8", ("u8", 128)), acc, "weight=i8"),
        (("u8", ("u8", 128)), full, "weight=i8"),
        (
            ("u8", ("u8", 0)),
            IntChain {
                zero_point: false,
                bias: false,
                relu: false,
                requant: None,
            },
            "bit-serial",
        ),
    ];
    for (types, c, kernel) in cases {
        for shape in [&[3u64, 2100][..], &[13, 70]] {
            let (f, inputs) = int_graph(&mut rng, types, shape, 21, c, false);
            let (cpu, want) = both(&f, &inputs);
            assert_eq!(cpu.outputs[0].1, want[0].1, "{types:?} {shape:?}");
            assert_eq!(cpu.on_cpu.len(), 1, "{}", cpu.summary());
            assert!(cpu.on_cpu[0].1.contains(kernel), "{}", cpu.summary());
            assert!(cpu.on_interp.is_empty(), "{}", cpu.summary());
            assert!(cpu.not_mapped.is_empty(), "{}", cpu.summary());
        }
    }
}

/// A multiplier the kernel cannot take leaves `requant_dyadic` on the
/// interpreter (the summary says why) while the rest of the chain stays
/// on the kernel; a value with a second use ends the chain there.
#[test]
fn chains_shorten_where_an_op_does_not_fit() {
    let mut rng = Rng::new(0x5407);
    let c = IntChain {
        zero_point: false,
        bias: true,
        relu: true,
        requant: Some(true),
    };
    let (f, inputs) = int_graph(&mut rng, ("u8", ("i8", 0)), &[3, 100], 6, c, true);
    let (cpu, want) = both(&f, &inputs);
    assert_eq!(cpu.outputs[0].1, want[0].1);
    assert_eq!(cpu.on_interp, vec![("requant_dyadic".to_string(), 1)]);
    assert_eq!(cpu.not_mapped.len(), 1, "{}", cpu.summary());
    assert!(cpu.not_mapped[0].0.contains("requant_dyadic"));
    assert!(
        cpu.not_mapped[0].1.contains("below 2^31"),
        "{}",
        cpu.summary()
    );
    assert!(cpu.on_cpu[0].1.contains("relu"), "{}", cpu.summary());

    // The accumulator is also an output: nothing fuses into the matmul.
    let c = IntChain {
        zero_point: false,
        bias: true,
        relu: false,
        requant: None,
    };
    let (mut f, inputs) = int_graph(&mut rng, ("i8", ("i8", 0)), &[2, 64], 5, c, false);
    let acc = f.op(f.def_op(f.outputs[0].1).unwrap()).operands[1];
    f.outputs.push(("acc".into(), acc));
    let (cpu, want) = both(&f, &inputs);
    assert_eq!(cpu.outputs, want);
    assert_eq!(cpu.on_interp, vec![("add".to_string(), 1)]);
}

/// `qmatmul` with each activation runs the activation in the kernel; with
/// a requantize epilogue the kernel's f32 result is quantized on the
/// interpreter (and the summary says so), within one unit of the
/// interpreter's result.
#[test]
fn qmatmul_epilogues() {
    let mut rng = Rng::new(0x9a);
    let (n, k, m) = (3u64, 96u64, 11u64);
    for act in [
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
        Activation::Relu,
    ] {
        for requant in [false, true] {
            let mut f = Function::new("main");
            let x = f.add_param("x", tt(&[n, k], "f32"));
            let q = Tensor::new(
                "i4".parse::<ElemType>().unwrap(),
                vec![k, m],
                random_codes(
                    &mut rng,
                    "i4".parse::<ElemType>().unwrap(),
                    (k * m) as usize,
                ),
            )
            .unwrap();
            let sv: Vec<f64> = (0..3 * m).map(|_| 0.05 + 0.1 * unit(&mut rng)).collect();
            let s = Tensor::from_f64(ElemType::F16, vec![3, m], &sv).unwrap();
            let bv: Vec<f64> = (0..m).map(|_| unit(&mut rng) - 0.5).collect();
            let b = Tensor::from_f64(ElemType::F32, vec![m], &bv).unwrap();
            let mut ops = vec![x, konst(&mut f, &q), konst(&mut f, &s), konst(&mut f, &b)];
            let rq = requant.then_some(QRequant {
                float_type: ElemType::F32,
                granularity: Granularity::PerTensor,
                rounding: Rounding::NearestEven,
                saturate: true,
                has_zero_point: true,
            });
            if requant {
                let os = Tensor::from_f64(ElemType::F32, vec![], &[0.02]).unwrap();
                let oz = Tensor::new(ElemType::I8, vec![], vec![5]).unwrap();
                ops.push(konst(&mut f, &os));
                ops.push(konst(&mut f, &oz));
            }
            let rt = tt(&[n, m], if requant { "i8" } else { "f32" });
            let y = f.push(
                OpKind::QMatMul {
                    granularity: Granularity::Blocked {
                        blocks: vec![(0, 32)],
                    },
                    dequant_type: ElemType::F32,
                    has_zero_point: false,
                    has_bias: true,
                    weight_lhs: false,
                    activation: act,
                    requant: rq,
                },
                ops,
                rt,
            );
            f.outputs.push(("y".into(), y));
            let xv: Vec<f64> = (0..n * k).map(|_| 2.0 * unit(&mut rng) - 1.0).collect();
            let xt = Tensor::from_f64(ElemType::F32, vec![n, k], &xv).unwrap();
            let (cpu, want) = both(&f, &[("x".into(), xt)]);
            assert!(cpu.not_mapped.is_empty(), "{}", cpu.summary());
            assert!(
                cpu.on_cpu[0].1.contains(act.name()),
                "{act:?}: {}",
                cpu.summary()
            );
            let (g, w) = (cpu.outputs[0].1.to_f64(), want[0].1.to_f64());
            if requant {
                assert_eq!(
                    cpu.on_interp,
                    vec![("quantize (qmatmul requantize epilogue)".to_string(), 1)]
                );
                assert!(cpu.on_cpu[0].1.contains("then quantize on the interpreter"));
                for (a, b) in g.iter().zip(&w) {
                    assert!((a - b).abs() <= 1.0, "{act:?}: cpu {a}, interpreter {b}");
                }
            } else {
                assert!(cpu.on_interp.is_empty(), "{}", cpu.summary());
                for (a, b) in g.iter().zip(&w) {
                    // |x w| sums stay below k · 1 · 8 · 0.15; a loose
                    // multiple of the declared bound.
                    let tol = 1.2 * 11.0 * 2f64.powi(-24) * 120.0 + ulp(*b as f32);
                    assert!((a - b).abs() <= tol, "{act:?}: cpu {a}, interpreter {b}");
                }
            }
        }
    }
}

/// Decoding a weight straight into its transpose from the constant's bytes
/// gives the transpose of the decoded constant, for sub-byte types with odd
/// sizes (codes straddling bytes), bytes and wider floats.
#[test]
fn transposed_constants_match_decode_then_transpose() {
    let mut rng = Rng::new(7);
    let fp8 = ElemType::Float(lowbit::numerics::FloatFormat::F8E4M3FN);
    for (e, shape) in [
        ("i4".parse().unwrap(), [3u64, 5]),
        ("u3".parse().unwrap(), [7, 3]),
        ("u2".parse().unwrap(), [5, 5]),
        ("i8".parse().unwrap(), [4, 9]),
        (ElemType::F16, [3, 2]),
        (fp8, [5, 7]),
    ] {
        let n = (shape[0] * shape[1]) as usize;
        let t = Tensor::new(e, shape.to_vec(), random_codes(&mut rng, e, n)).unwrap();
        let mut f = Function::new("t");
        let v = konst(&mut f, &t);
        let got = transposed_constant_of(&f, v).unwrap();
        assert_eq!(got, transpose(&t), "{e}");
    }
}

/// `matmul(x[n, k], dequantize(w [k, m], s f16 [ceil(k/32), m]))` (`w` of
/// type `wt`) after the `pipeline` (a `quantize-activations` form), with
/// its input.
fn act_quant_graph(
    rng: &mut Rng,
    (n, k, m): (u64, u64, u64),
    wt: &str,
    pipeline: &str,
) -> (Function, Vec<(String, Tensor)>) {
    let mut f = Function::new("main");
    let x = f.add_param("x", tt(&[n, k], "f32"));
    let we: ElemType = wt.parse().unwrap();
    let w = Tensor::new(we, vec![k, m], random_codes(rng, we, (k * m) as usize)).unwrap();
    let sv: Vec<f64> = (0..k.div_ceil(32) * m)
        .map(|_| 0.01 + 0.05 * unit(rng))
        .collect();
    let s = Tensor::from_f64(ElemType::F16, vec![k.div_ceil(32), m], &sv).unwrap();
    let (wv, sv) = (konst(&mut f, &w), konst(&mut f, &s));
    let d = f.push(
        OpKind::Dequantize {
            granularity: Granularity::Blocked {
                blocks: vec![(0, 32)],
            },
        },
        vec![wv, sv],
        tt(&[k, m], "f32"),
    );
    let y = f.push(
        OpKind::MatMul {
            overflow: Overflow::Wrap,
        },
        vec![x, d],
        tt(&[n, m], "f32"),
    );
    f.outputs.push(("y".into(), y));
    let mut module = lowbit::ir::Module { functions: vec![f] };
    lowbit::PassManager::parse(pipeline)
        .unwrap()
        .run(&mut module, &mut std::io::sink())
        .unwrap();
    let xv: Vec<f64> = (0..n * k).map(|_| 4.0 * unit(rng) - 2.0).collect();
    let xt = Tensor::from_f64(ElemType::F32, vec![n, k], &xv).unwrap();
    (module.functions.remove(0), vec![("x".into(), xt)])
}

#[test]
fn quantized_activations_run_on_the_block_dot_kernel() {
    let mut rng = Rng::new(41);
    for ((n, k, m), wt) in [
        ((1, 45, 21), "i4"),
        ((3, 100, 16), "i8"),
        ((8, 70, 37), "i4"),
        ((17, 257, 5), "i8"),
    ] {
        for (pipeline, blockdot) in [
            ("quantize-activations", true),
            // Other block sizes and widths are still the graph's values,
            // on the float kernel (over the dequantized activation).
            ("quantize-activations{block=16}", false),
            ("quantize-activations{bits=4}", false),
        ] {
            let (f, inputs) = act_quant_graph(&mut rng, (n, k, m), wt, pipeline);
            let (cpu, want) = both(&f, &inputs);
            let summary = cpu.summary();
            assert_eq!(
                summary.contains("quantized to i8 per 32-block"),
                blockdot,
                "{pipeline} n={n} k={k} m={m}: {summary}"
            );
            assert!(!summary.contains("not on a CPU kernel"), "{summary}");
            let (got, want) = (cpu.outputs[0].1.to_f64(), want[0].1.to_f64());
            // Both bounds (block-dot and float) are below
            // (k_pad/16 + 8) 2^-24 sum|x̂ w|, and sum|x̂ w| <= k * 2 * wmax * 0.06.
            let wmax = if wt == "i8" { 128.0 } else { 8.0 };
            let bound =
                ((k.div_ceil(16) + 8) as f64) * 2f64.powi(-24) * (k as f64 * 2.0 * wmax * 0.06);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= bound,
                    "{pipeline} n={n} k={k} m={m}: {g} vs {w}"
                );
            }
        }
    }
}
