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

/// `matmul_int {schedule = amx}` with 4-bit weights stays 4-bit on the
/// AMX kernel: `i4` as it is, `u4` as it is, `u4 - 8` as `i4`, each with
/// an activation zero point (where given), the fused bias, ReLU and
/// requantize, bit-exact; on a host without AMX-INT8 the chain is left
/// to the interpreter with the reason (and still gives its result).
#[test]
fn amx_schedule_keeps_4_bit_weights_4_bit() {
    let mut rng = Rng::new(0xa34);
    let amx_host = lowbit::ir::target::Target::host()
        .x86_features()
        .is_some_and(|f| f.amxint8);
    let chain = |zero_point, requant| IntChain {
        zero_point,
        bias: true,
        relu: true,
        requant,
    };
    let cases = [
        (("u8", ("i4", 0)), chain(false, Some(true)), "weight=i4"),
        (("i8", ("u4", 0)), chain(false, None), "weight=u4"),
        (("u8", ("u4", 8)), chain(true, Some(true)), "weight=i4"),
        (("i8", ("i4", 0)), chain(true, None), "weight=i4"),
    ];
    for (types, c, kernel) in cases {
        for shape in [&[3u64, 1100][..], &[45, 70]] {
            let (mut f, inputs) = int_graph(&mut rng, types, shape, 37, c, false);
            let mm = f
                .ops()
                .iter()
                .copied()
                .find(|&o| matches!(f.op(o).kind, OpKind::MatMulInt { .. }))
                .unwrap();
            f.op_mut(mm).kind = OpKind::MatMulInt {
                overflow: Overflow::Wrap,
                schedule: IntSchedule::Amx,
            };
            let (cpu, want) = both(&f, &inputs);
            assert_eq!(cpu.outputs[0].1, want[0].1, "{types:?} {shape:?}");
            if amx_host {
                assert_eq!(cpu.on_cpu.len(), 1, "{}", cpu.summary());
                let what = &cpu.on_cpu[0].1;
                assert!(
                    what.contains(kernel) && what.contains("amx"),
                    "{}",
                    cpu.summary()
                );
                assert!(cpu.on_interp.is_empty(), "{}", cpu.summary());
            } else {
                assert!(cpu.on_cpu.is_empty(), "{}", cpu.summary());
                assert!(cpu.summary().contains("AMX-INT8"), "{}", cpu.summary());
            }
        }
    }
}

/// `matmul_int {schedule = amx}` (what the e-graph's `amx` rule makes)
/// with `u8` weights less 128 that all fit `i4` (values 120..=135): they
/// are packed as `i4` (half the memory of `i8`), and the result is the
/// interpreter's bit for bit; on a host without AMX-INT8 the op is left
/// to the interpreter with the reason.
#[test]
fn amx_schedule_packs_narrow_centered_weights_as_i4() {
    let mut rng = Rng::new(0xa3c);
    let (rows, k, m) = (37u64, 130u64, 45u64);
    let mut f = Function::new("main");
    let x = f.add_param("x", tt(&[rows, k], "u8"));
    let w = Tensor::new(
        ElemType::U8,
        vec![k, m],
        (0..k * m).map(|_| 120 + rng.below(16) as u64).collect(),
    )
    .unwrap();
    let wv = konst(&mut f, &w);
    let zx = konst(&mut f, &Tensor::new(ElemType::U8, vec![], vec![9]).unwrap());
    let zw = konst(
        &mut f,
        &Tensor::new(ElemType::U8, vec![], vec![128]).unwrap(),
    );
    let y = f.push(
        OpKind::MatMulInt {
            overflow: Overflow::Wrap,
            schedule: IntSchedule::Amx,
        },
        vec![x, wv, zx, zw],
        tt(&[rows, m], "i32"),
    );
    f.outputs.push(("y".into(), y));
    let xt = Tensor::new(
        ElemType::U8,
        vec![rows, k],
        (0..rows * k).map(|_| rng.next_u64() & 0xff).collect(),
    )
    .unwrap();
    let (cpu, want) = both(&f, &[("x".into(), xt)]);
    assert_eq!(cpu.outputs[0].1, want[0].1);
    if lowbit::ir::target::Target::host()
        .x86_features()
        .is_some_and(|f| f.amxint8)
    {
        assert_eq!(cpu.on_cpu.len(), 1, "{}", cpu.summary());
        assert!(
            cpu.on_cpu[0].1.contains("weight=i4") && cpu.on_cpu[0].1.contains("amx"),
            "{}",
            cpu.summary()
        );
    } else {
        assert!(cpu.on_cpu.is_empty(), "{}", cpu.summary());
        assert!(cpu.summary().contains("AMX-INT8"), "{}", cpu.summary());
    }
}

/// `schedule = amx` never runs on another kernel in its place: `u8`
/// weights up to 127 with no zero point are `i8` and take it; up to 255
/// they do not fit `i8`, and `u4` activations are not the kernel's, so
/// those ops stay on the interpreter (same answer) with the reason.
#[test]
fn amx_schedule_is_the_amx_kernel_or_none() {
    let mut rng = Rng::new(0xa3d);
    let amx_host = lowbit::ir::target::Target::host()
        .x86_features()
        .is_some_and(|f| f.amxint8);
    for (act, wmax, why) in [
        ("u8", 128, None),
        (
            "u8",
            256,
            Some("the amx schedule takes i8, i4 or u4 weights (W8A8/W4A8): these u8 weights less 0 span"),
        ),
        (
            "u4",
            128,
            Some("the amx schedule multiplies u8 or i8 activations, not u4"),
        ),
    ] {
        let (rows, k, m) = (33u64, 70u64, 20u64);
        let ae: ElemType = act.parse().unwrap();
        let mut f = Function::new("main");
        let x = f.add_param("x", TensorType::new(vec![rows, k], ae));
        let w = Tensor::new(
            ElemType::U8,
            vec![k, m],
            (0..k * m).map(|_| rng.below(wmax) as u64).collect(),
        )
        .unwrap();
        let wv = konst(&mut f, &w);
        let y = f.push(
            OpKind::MatMulInt {
                overflow: Overflow::Wrap,
                schedule: IntSchedule::Amx,
            },
            vec![x, wv],
            tt(&[rows, m], "i32"),
        );
        f.outputs.push(("y".into(), y));
        let xt = Tensor::new(
            ae,
            vec![rows, k],
            (0..rows * k)
                .map(|_| rng.next_u64() & ae.code_mask())
                .collect(),
        )
        .unwrap();
        let (cpu, want) = both(&f, &[("x".into(), xt)]);
        assert_eq!(cpu.outputs[0].1, want[0].1, "{act} {wmax}");
        match why {
            None if amx_host => {
                assert_eq!(cpu.on_cpu.len(), 1, "{}", cpu.summary());
                assert!(cpu.on_cpu[0]
                    .1
                    .contains("weight=i8 act=u8 -> i32 (exact, amx)"));
            }
            None => assert!(cpu.summary().contains("AMX-INT8"), "{}", cpu.summary()),
            Some(why) => {
                assert!(cpu.on_cpu.is_empty(), "{}", cpu.summary());
                assert!(cpu.summary().contains(why), "{}", cpu.summary());
            }
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

/// The first op of `f` of the kind `is` accepts.
fn find_op(f: &Function, is: impl Fn(&OpKind) -> bool) -> Op {
    *f.ops().iter().find(|&&o| is(&f.op(o).kind)).unwrap()
}

/// The old decoded path's weights: the constant decoded to codes and
/// transposed to the kernel's `[m, k]`.
fn decoded_weights(f: &Function, mm: Op) -> Tensor {
    transpose(&constant_of(f, f.op(mm).operands[1]).unwrap())
}

/// Packing straight from the constant's bytes (`Plan::pack`, what `run`
/// and `compile` use) gives exactly the bytes of packing the decoded,
/// transposed codes (the old path), for every weight type the float
/// kernels take (so every packed layout: bytes, interleaved nibbles, bit
/// planes), odd sizes whose sub-byte codes straddle bytes (k*m*bits not a
/// multiple of 8), per-column scales with zero points and blocks of 16 and
/// 32.
#[test]
fn float_byte_packing_equals_the_decoded_path() {
    let mut rng = Rng::new(0xb17e);
    let types = [
        "i1", "u1", "i2", "u2", "i3", "u3", "i4", "u4", "i5", "u6", "i7", "i8", "u8", "b1",
        "f8E4M3FN", "f8E5M2", "f4E2M1FN",
    ];
    for we in types {
        for (k, m, group) in [(37u64, 5u64, None), (70, 3, Some(32)), (33, 7, Some(16))] {
            let c = FloatCase {
                weight: we,
                scale: "f32",
                group,
                tensor_scale: None,
                x_shape: vec![1, k],
                m,
                bias: false,
                act: None,
            };
            let (f, _, _) = float_graph(&mut rng, &c);
            let mm = find_op(&f, |k| matches!(k, OpKind::MatMul { .. }));
            let plan = plan_matmul(&f, mm).unwrap_or_else(|e| panic!("{we}: {e}"));
            let deq = f.def_op(f.op(mm).operands[1]).unwrap();
            let dops = &f.op(deq).operands;
            let s = constant_of(&f, dops[1]).unwrap();
            let z = dops.get(2).map(|&z| constant_of(&f, z).unwrap());
            let (s, z) = match group {
                Some(_) => (transpose(&s), z.as_ref().map(transpose)),
                None => (s, z),
            };
            let q = transpose(&constant_of(&f, dops[0]).unwrap());
            let want = PackedWeights::pack(&plan.spec, &q, &s, z.as_ref()).unwrap();
            let got = plan.pack().unwrap();
            let what = format!("{we} k={k} m={m} group={group:?}");
            assert_eq!(got.codes(), want.codes(), "{what}");
            assert_eq!(got.scales(), want.scales(), "{what}");
            assert_eq!(got.zero_points(), want.zero_points(), "{what}");
            assert_eq!(z.is_some(), !got.zero_points().is_empty(), "{what}");
        }
    }
}

/// A weight constant in a non-default layout (MSB-first codes) packs like
/// its decoded codes too (re-encoded to the default layout when packed).
#[test]
fn byte_packing_of_other_layouts_equals_the_decoded_path() {
    let mut rng = Rng::new(0x1a70);
    for (we, k, m) in [("i4", 37u64, 5u64), ("u3", 33, 3)] {
        let e: ElemType = we.parse().unwrap();
        let mut f = Function::new("main");
        let x = f.add_param("x", tt(&[1, k], "f32"));
        let q = Tensor::new(e, vec![k, m], random_codes(&mut rng, e, (k * m) as usize)).unwrap();
        let msb = Layout {
            pack: lowbit::ir::PackOrder::MsbFirst,
            ..Layout::default()
        };
        let qt = TensorType::new(vec![k, m], e).with_layout(msb);
        let qv = f.push(OpKind::constant_of(&q, &qt), vec![], qt);
        let sv: Vec<f64> = (0..m).map(|_| 0.01 + 0.1 * unit(&mut rng)).collect();
        let s = Tensor::from_f64(ElemType::F32, vec![m], &sv).unwrap();
        let svv = konst(&mut f, &s);
        let w = f.push(
            OpKind::Dequantize {
                granularity: Granularity::PerAxis { axis: 1 },
            },
            vec![qv, svv],
            tt(&[k, m], "f32"),
        );
        let mm = f.push(
            OpKind::MatMul {
                overflow: Overflow::Wrap,
            },
            vec![x, w],
            tt(&[1, m], "f32"),
        );
        let mm = f.def_op(mm).unwrap();
        let plan = plan_matmul(&f, mm).unwrap_or_else(|e| panic!("{we}: {e}"));
        assert_eq!(constant_of(&f, qv).unwrap(), q);
        let want = PackedWeights::pack(&plan.spec, &transpose(&q), &s, None).unwrap();
        assert_eq!(plan.pack().unwrap().codes(), want.codes(), "{we}");
    }
}

/// The same for the integer kernels: W8A8/W4A8 weights as they are and
/// centered by a weight zero point (`u4` and `u2` into `i4`, `u4` into
/// `i8`, with an activation zero point in the row offsets), bit-serial
/// weights of odd widths (with and without zero points), `b1` weights under `i8`
/// activations (W1A8) and `b1` x `b1` (W1A1), at an odd `k`.
#[test]
fn integer_byte_packing_equals_the_decoded_path() {
    let mut rng = Rng::new(0x1b17);
    let plain = IntChain {
        zero_point: false,
        bias: false,
        relu: false,
        requant: None,
    };
    let zp = IntChain {
        zero_point: true,
        ..plain
    };
    let cases = [
        (("u8", ("i8", 0)), plain, "weight=i8", false),
        (("i8", ("i4", 0)), plain, "weight=i4", false),
        (("u8", ("u4", 0)), plain, "weight=u4", false),
        (("u8", ("u4", 8)), zp, "weight=i4", true),
        (("i8", ("u4", 12)), zp, "weight=i8", true),
        (("u8", ("i3", 0)), plain, "bit-serial", false),
        (("u8", ("u2", 1)), zp, "weight=i4", true),
        (("u3", ("u2", 1)), zp, "bit-serial", false),
        (("i4", ("i5", 3)), zp, "bit-serial", false),
        (("i8", ("b1", 0)), plain, "bit-serial", false),
        (("b1", ("b1", 0)), plain, "b1", false),
    ];
    for (types, chain, kernel, center) in cases {
        let (f, _) = int_graph(&mut rng, types, &[2, 37], 9, chain, false);
        let mm = find_op(&f, |k| matches!(k, OpKind::MatMulInt { .. }));
        let plan = plan_matmul(&f, mm).unwrap_or_else(|e| panic!("{types:?}: {e}"));
        assert!(
            plan.spec.to_string().contains(kernel),
            "{types:?}: {}",
            plan.spec
        );
        let q = decoded_weights(&f, mm);
        let scalar = |i: usize| {
            let t = constant_of(&f, f.op(mm).operands[i]).unwrap();
            t.to_i128().unwrap()[0]
        };
        let want = match center {
            false => PackedWeights::pack_int(&plan.spec, &q),
            true => {
                // The old `center`: values less zw, in the chosen type,
                // and zx in the row offsets.
                let (zx, zw) = (scalar(2) as i64, scalar(3));
                let e = plan.spec.weight.dtype;
                let vals: Vec<u64> = q
                    .to_i128()
                    .unwrap()
                    .iter()
                    .map(|&v| (v - zw) as u64 & e.code_mask())
                    .collect();
                let c = Tensor::new(e, q.shape.clone(), vals).unwrap();
                PackedWeights::pack_int_centered(&plan.spec, &c, zx)
            }
        }
        .unwrap();
        let got = plan.pack().unwrap();
        assert_eq!(got.codes(), want.codes(), "{types:?}");
        assert_eq!(got.row_sums(), want.row_sums(), "{types:?}");
        assert_eq!(got.row_offsets(), want.row_offsets(), "{types:?}");
    }
}

/// Constant bytes that log each read (`as_ref`) and their drop, so a test
/// sees when a run lets go of a weight.
struct Logged {
    name: &'static str,
    bytes: Vec<u8>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl AsRef<[u8]> for Logged {
    fn as_ref(&self) -> &[u8] {
        self.log.lock().unwrap().push(format!("read {}", self.name));
        &self.bytes
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.log.lock().unwrap().push(format!("drop {}", self.name));
    }
}

/// `run_owned` packs each layer's weights when it gets there and lets go
/// of a layer's constants (weights and scales) before it packs the next
/// layer: "drop q0" and "drop s0" come before the last read of "q1". A
/// run that packed every weight first, or kept the constants to its end,
/// logs the drops after all reads. The result still equals the
/// interpreter's within the float bound.
#[test]
fn run_owned_drops_each_layers_constants_before_the_next_layer() {
    let mut rng = Rng::new(0xd20f);
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let i4: ElemType = "i4".parse().unwrap();
    let dims = [48u64, 40, 24];
    let names = [("q0", "s0"), ("q1", "s1")];
    let mut f = Function::new("main");
    let mut y = f.add_param("x", tt(&[2, dims[0]], "f32"));
    for (l, &(qn, sn)) in names.iter().enumerate() {
        let (k, m) = (dims[l], dims[l + 1]);
        let q = Tensor::new(i4, vec![k, m], random_codes(&mut rng, i4, (k * m) as usize)).unwrap();
        let sv: Vec<f64> = (0..m).map(|_| 0.01 + 0.1 * unit(&mut rng)).collect();
        let s = Tensor::from_f64(ElemType::F32, vec![m], &sv).unwrap();
        let mut konst_logged = |name, t: &Tensor| {
            let data = ConstData::from_shared(Logged {
                name,
                bytes: t.to_bytes(&Layout::default()),
                log: log.clone(),
            });
            f.push(OpKind::Constant(data), vec![], t.ty())
        };
        let (qv, sv) = (konst_logged(qn, &q), konst_logged(sn, &s));
        let w = f.push(
            OpKind::Dequantize {
                granularity: Granularity::PerAxis { axis: 1 },
            },
            vec![qv, sv],
            tt(&[k, m], "f32"),
        );
        y = f.push(
            OpKind::MatMul {
                overflow: Overflow::Wrap,
            },
            vec![y, w],
            tt(&[2, m], "f32"),
        );
    }
    f.outputs.push(("y".into(), y));
    let xv: Vec<f64> = (0..2 * dims[0])
        .map(|_| 2.0 * unit(&mut rng) - 1.0)
        .collect();
    let inputs = vec![(
        "x".to_string(),
        Tensor::from_f64(ElemType::F32, vec![2, dims[0]], &xv).unwrap(),
    )];
    let want = run_function(&f, &inputs).unwrap();
    log.lock().unwrap().clear();
    let cpu = run_owned(f, inputs).unwrap();
    assert_eq!(cpu.on_cpu.len(), 2, "{}", cpu.summary());
    for (a, b) in cpu.outputs[0].1.to_f64().iter().zip(want[0].1.to_f64()) {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "cpu {a}, interpreter {b}"
        );
    }
    let log = log.lock().unwrap();
    let at = |e: &str| log.iter().position(|l| l == e);
    let last_q1_read = log.iter().rposition(|l| l == "read q1").unwrap();
    for e in ["drop q0", "drop s0"] {
        let i = at(e).unwrap_or_else(|| panic!("no '{e}' in {log:?}"));
        assert!(i < last_q1_read, "'{e}' after the last 'read q1': {log:?}");
    }
    assert!(at("drop q1").is_some_and(|i| i > last_q1_read), "{log:?}");
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
