//! run_function: input matching and checking, op order, outputs, and errors
//! from malformed functions.

mod common;
use common::*;
use lowbit_interp::{run_function, run_function_with_stats, InterpError};
use lowbit_ir::{BinaryOp, Function, Granularity, OpKind, Overflow, Rounding, Span, Tensor};

fn add() -> OpKind {
    OpKind::Binary {
        op: BinaryOp::Add,
        overflow: Overflow::Wrap,
    }
}

/// Appends a constant holding `c`, typed as the tensor itself is.
fn konst(f: &mut Function, c: &Tensor) -> lowbit_ir::Value {
    let ty = c.ty();
    f.push(OpKind::constant_of(c, &ty), vec![], ty)
}

/// y = relu(x + c), z = x (an output may be a parameter)
fn simple() -> Function {
    let mut f = Function::new("main");
    let x = f.add_param("x", ty("f32", &[2]));
    let c = t("f32", &[2], &[1., -5.]);
    let cv = konst(&mut f, &c);
    let s = f.push(add(), vec![x, cv], ty("f32", &[2]));
    let y = f.push(OpKind::Relu, vec![s], ty("f32", &[2]));
    f.outputs.push(("y".into(), y));
    f.outputs.push(("z".into(), x));
    f
}

fn input(name: &str, t: Tensor) -> (String, Tensor) {
    (name.to_string(), t)
}

#[test]
fn runs_ops_in_order_and_names_outputs() {
    let f = simple();
    let out = run_function(&f, &[input("x", t("f32", &[2], &[2., 3.]))]).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, "y");
    assert_eq!(vals(&out[0].1), [3., 0.]);
    assert_eq!(out[1].0, "z");
    assert_eq!(vals(&out[1].1), [2., 3.]);
}

#[test]
fn a_quantized_linear_layer_end_to_end() {
    // y = x @ dequantize(wq, s, per-column) + b, with a value used twice
    let mut f = Function::new("main");
    let x = f.add_param("x", ty("f32", &[1, 2]));
    let wq = t("i4", &[2, 2], &[1., -2., 3., 7.]);
    let w = konst(&mut f, &wq);
    let s = t("f32", &[2], &[0.5, 0.25]);
    let sv = konst(&mut f, &s);
    let dw = f.push(
        OpKind::Dequantize {
            granularity: Granularity::PerAxis { axis: 1 },
        },
        vec![w, sv],
        ty("f32", &[2, 2]),
    );
    let mm = f.push(
        OpKind::MatMul {
            overflow: Overflow::Wrap,
        },
        vec![x, dw],
        ty("f32", &[1, 2]),
    );
    let y = f.push(add(), vec![mm, mm], ty("f32", &[1, 2]));
    let q = f.push(
        OpKind::Quantize {
            granularity: Granularity::PerTensor,
            rounding: Rounding::NearestEven,
            saturate: true,
            stochastic: None,
        },
        vec![y, sv],
        ty("u8", &[1, 2]),
    );
    f.outputs.push(("y".into(), y));
    f.outputs.push(("q".into(), q));
    // dw = [[0.5, -0.5], [1.5, 1.75]]; x = [2, 4] -> mm = [7, 6] -> y = [14, 12]
    let out = run_function(&f, &[input("x", t("f32", &[1, 2], &[2., 4.]))]);
    let err = out.unwrap_err();
    // the per-tensor quantize was given a 2-element scale: reported, op named
    assert!(
        err.to_string()
            .starts_with("'quantize' op: the scale has shape [2]"),
        "{err}"
    );
    // fix the scale: a scalar constant
    let one = t("f32", &[], &[0.5]);
    let ops: Vec<_> = f.ops().to_vec();
    let last = *ops.last().unwrap();
    let c = f.insert_op_before(
        last,
        OpKind::constant_of(&one, &ty("f32", &[])),
        vec![],
        vec![ty("f32", &[])],
    );
    let cv = f.result(c);
    f.op_mut(last).operands[1] = cv;
    let out = run_function(&f, &[input("x", t("f32", &[1, 2], &[2., 4.]))]).unwrap();
    assert_eq!(vals(&out[0].1), [14., 12.]);
    assert_eq!(ints(&out[1].1), [28, 24]);
}

#[test]
fn functions_without_parameters_run() {
    let mut f = Function::new("consts");
    let a = t("i3", &[3], &[3., -4., 1.]);
    let av = konst(&mut f, &a);
    let s = f.push(
        OpKind::Binary {
            op: BinaryOp::Mul,
            overflow: Overflow::Saturate,
        },
        vec![av, av],
        ty("i3", &[3]),
    );
    f.outputs.push(("s".into(), s));
    let out = run_function(&f, &[]).unwrap();
    assert_eq!(ints(&out[0].1), [3, 3, 1]);
    let e = run_function(&f, &[input("x", t("f32", &[1], &[0.]))]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "input 'x': function @consts has no such parameter (parameters: none)"
    );
}

#[test]
fn input_errors_name_the_input() {
    let f = simple();
    let e = run_function(&f, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "input 'x': missing (expected a tensor<2xf32>)"
    );
    let e = run_function(&f, &[input("x", t("f32", &[3], &[0.; 3]))]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "input 'x': expected tensor<2xf32>, got tensor<3xf32>"
    );
    let e = run_function(&f, &[input("x", t("f16", &[2], &[0.; 2]))]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "input 'x': expected tensor<2xf32>, got tensor<2xf16>"
    );
    let e = run_function(
        &f,
        &[
            input("x", t("f32", &[2], &[0.; 2])),
            input("w", t("f32", &[2], &[0.; 2])),
        ],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "input 'w': function @main has no such parameter (parameters: x)"
    );
    let x = t("f32", &[2], &[0.; 2]);
    let e = run_function(&f, &[input("x", x.clone()), input("x", x)]).unwrap_err();
    assert_eq!(e.to_string(), "input 'x': given more than once");
    let bad = Tensor {
        elem: el("i4"),
        shape: vec![2],
        codes: vec![1, 0x30],
    };
    let mut g = Function::new("main");
    let p = g.add_param("q", ty("i4", &[2]));
    g.outputs.push(("q".into(), p));
    let e = run_function(&g, &[input("q", bad)]).unwrap_err();
    assert!(
        matches!(e, InterpError::Input { ref name, .. } if name == "q"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("element 1 has code 0x30, wider than 4 bits"),
        "{e}"
    );
}

#[test]
fn run_time_errors_carry_the_op_and_its_position() {
    let mut f = Function::new("main");
    let a = f.add_param("a", ty("i8", &[2]));
    let b = f.add_param("b", ty("i8", &[2]));
    let d = f.push(
        OpKind::Binary {
            op: BinaryOp::Div,
            overflow: Overflow::Wrap,
        },
        vec![a, b],
        ty("i8", &[2]),
    );
    let op = f.ops()[0];
    f.op_spans.insert(op, Span { line: 3, col: 10 });
    f.outputs.push(("d".into(), d));
    let e = run_function(
        &f,
        &[
            input("a", t("i8", &[2], &[1., 2.])),
            input("b", t("i8", &[2], &[1., 0.])),
        ],
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "'div' op: integer division by zero");
    assert_eq!(e.span(), Some(Span { line: 3, col: 10 }));
    assert_eq!(
        e.to_diagnostic().render("m.lbir"),
        "m.lbir:3:10: error: 'div' op: integer division by zero"
    );
}

#[test]
fn unverified_functions_give_errors_not_panics() {
    // an op reading a value defined after it
    let mut f = Function::new("main");
    let x = f.add_param("x", ty("f32", &[2]));
    let r = f.push(OpKind::Relu, vec![x], ty("f32", &[2]));
    let first = f.ops()[0];
    f.insert_op_before(first, OpKind::Relu, vec![r], vec![ty("f32", &[2])]);
    f.outputs.push(("r".into(), r));
    let e = run_function(&f, &[input("x", t("f32", &[2], &[1., 2.]))]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "'relu' op: operand #0 is not defined before this op"
    );
    // a result type that disagrees with the operands
    let mut g = Function::new("main");
    let x = g.add_param("x", ty("f32", &[2]));
    let y = g.push(add(), vec![x, x], ty("f32", &[3]));
    g.outputs.push(("y".into(), y));
    let e = run_function(&g, &[input("x", t("f32", &[2], &[1., 2.]))]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("'add' op: result type tensor<3xf32>"),
        "{e}"
    );
    // wrong operand count
    let mut h = Function::new("main");
    let x = h.add_param("x", ty("f32", &[2]));
    let y = h.push(add(), vec![x], ty("f32", &[2]));
    h.outputs.push(("y".into(), y));
    let e = run_function(&h, &[input("x", t("f32", &[2], &[1., 2.]))]).unwrap_err();
    assert_eq!(e.to_string(), "'add' op: expected 2 operands, got 1");
    // an op with no result
    let mut k = Function::new("main");
    let x = k.add_param("x", ty("f32", &[2]));
    k.append_op(OpKind::Relu, vec![x], vec![]);
    let e = run_function(&k, &[input("x", t("f32", &[2], &[1., 2.]))]).unwrap_err();
    assert_eq!(e.to_string(), "'relu' op: expected 1 result type, got 0");
}

#[test]
fn intermediates_are_freed_after_their_last_use() {
    // 200 chained adds on a 64k-element tensor: x, the running value and the
    // new result are all that is ever alive.
    let n = 1 << 16;
    let mut f = Function::new("main");
    let x = f.add_param("x", ty("i32", &[n]));
    let mut v = x;
    for _ in 0..200 {
        v = f.push(add(), vec![v, x], ty("i32", &[n]));
    }
    // a dead op whose result nobody reads is never kept
    f.push(OpKind::Relu, vec![x], ty("i32", &[n]));
    f.outputs.push(("y".into(), v));
    let xs: Vec<f64> = (0..n).map(|i| (i % 1000) as f64).collect();
    let (out, stats) = run_function_with_stats(&f, &[input("x", t("i32", &[n], &xs))]).unwrap();
    let got = ints(&out[0].1);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, 201 * (i as i128 % 1000));
    }
    assert_eq!(stats.peak_live_tensors, 3);
    assert_eq!(stats.peak_live_elements, 3 * n as usize);
}
