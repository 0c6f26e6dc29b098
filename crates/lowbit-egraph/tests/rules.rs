//! One start => goal test per rule (and per blocked condition): the
//! optimized function has the expected ops and attributes, and equals the
//! input on the interpreter, bit for bit.

mod common;
use common::*;
use lowbit_ir::OpKind;

/// A `rows x cols` dense literal.
fn dense(cols: usize, vals: impl IntoIterator<Item = i64>) -> String {
    let v: Vec<String> = vals.into_iter().map(|x| x.to_string()).collect();
    let rows: Vec<String> = v
        .chunks(cols)
        .map(|r| format!("[{}]", r.join(", ")))
        .collect();
    format!("dense<[{}]>", rows.join(", "))
}

fn only(f: &lowbit_ir::Function, name: &str) -> OpKind {
    let ops: Vec<_> = f
        .ops()
        .iter()
        .filter(|&&o| f.op(o).kind.name() == name)
        .collect();
    assert_eq!(ops.len(), 1, "{}", text(f));
    f.op(*ops[0]).kind.clone()
}

const MLP_HEAD: &str = "module {
  func @main(%x: tensor<2x8xf32>) -> (y: tensor<2x4xf32>) {";

fn weights_i4() -> String {
    format!(
        "%w = constant {} : tensor<8x4xi4>\n    %s = constant dense<[0.5, 0.25, 0.125, 1.5]> : tensor<4xf32>\n    %d = dequantize %w, %s {{axis = 1}} : (tensor<8x4xi4>, tensor<4xf32>) -> tensor<8x4xf32>",
        dense(4, (0..32).map(|i| (i * 5 % 16) - 8))
    )
}

#[test]
fn fuse_dequant_rhs() {
    let src = format!(
        "{MLP_HEAD}\n    {}\n    %y = matmul %x, %d : (tensor<2x8xf32>, tensor<8x4xf32>) -> tensor<2x4xf32>\n    return %y\n  }}\n}}\n",
        weights_i4()
    );
    let f = parse(&src);
    let o = optimize(&f, &["fuse-dequant"], "x86-64-v3");
    assert_eq!(op_names(&o.function), ["qmatmul"]);
    let OpKind::QMatMul {
        weight_lhs,
        has_bias,
        ..
    } = only(&o.function, "qmatmul")
    else {
        unreachable!()
    };
    assert!(!weight_lhs && !has_bias);
    assert_eq!(o.report.ops[0].schedule, "dequant-fused");
    assert_same_on_interp(&f, &o.function, 1, 4);
}

#[test]
fn fuse_dequant_lhs() {
    let src = "module {
  func @main(%x: tensor<4x3xf16>) -> (y: tensor<2x3xf16>) {
    %w = constant dense<[[1, -2, 3, -4], [5, -6, 7, -8]]> : tensor<2x4xi8>
    %s = constant dense<0.5> : tensor<f16>
    %d = dequantize %w, %s : (tensor<2x4xi8>, tensor<f16>) -> tensor<2x4xf16>
    %y = matmul %d, %x : (tensor<2x4xf16>, tensor<4x3xf16>) -> tensor<2x3xf16>
    return %y
  }
}
";
    let f = parse(src);
    let o = optimize(&f, &["fuse-dequant"], "sm_80");
    let OpKind::QMatMul { weight_lhs, .. } = only(&o.function, "qmatmul") else {
        unreachable!()
    };
    assert!(weight_lhs);
    assert!(
        o.report.ops[0].kernel.contains("mma.m16n8k16"),
        "{:?}",
        o.report.ops[0]
    );
    assert_same_on_interp(&f, &o.function, 2, 4);
}

#[test]
fn fuse_bias_and_activation() {
    for (act, want) in [
        ("relu %a", "relu"),
        ("gelu %a", "gelu"),
        ("gelu %a {approximate = tanh}", "gelu_tanh"),
        ("silu %a", "silu"),
    ] {
        let src = format!(
            "{MLP_HEAD}\n    {}\n    %m = matmul %x, %d : (tensor<2x8xf32>, tensor<8x4xf32>) -> tensor<2x4xf32>\n    %b = constant dense<[0.5, -1.0, 2.0, 0.0]> : tensor<4xf32>\n    %a = add %m, %b : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>\n    %y = {act} : (tensor<2x4xf32>) -> tensor<2x4xf32>\n    return %y\n  }}\n}}\n",
            weights_i4()
        );
        let f = parse(&src);
        let o = optimize(&f, &["fuse-dequant"], "x86-64-v4");
        assert_eq!(op_names(&o.function), ["qmatmul"], "{}", text(&o.function));
        let OpKind::QMatMul {
            has_bias,
            activation,
            ..
        } = only(&o.function, "qmatmul")
        else {
            unreachable!()
        };
        assert!(has_bias);
        assert_eq!(activation.name(), want);
        assert_same_on_interp(&f, &o.function, 3, 4);
    }
}

#[test]
fn bias_is_not_fused_when_it_broadcasts_the_result_larger() {
    let src = format!(
        "{MLP_HEAD}\n    {}\n    %m = matmul %x, %d : (tensor<2x8xf32>, tensor<8x4xf32>) -> tensor<2x4xf32>\n    %b = constant dense<0.5> : tensor<3x2x4xf32>\n    %a = add %m, %b : (tensor<2x4xf32>, tensor<3x2x4xf32>) -> tensor<3x2x4xf32>\n    return %a\n  }}\n}}\n",
        weights_i4()
    )
    .replace("(y: tensor<2x4xf32>)", "(y: tensor<3x2x4xf32>)");
    let f = parse(&src);
    let o = optimize(&f, &["fuse-dequant"], "x86-64-v3");
    assert_eq!(op_names(&o.function), ["qmatmul", "add"]);
    assert_same_on_interp(&f, &o.function, 4, 2);
}

fn qdq_src(scale: &str) -> String {
    format!(
        "module {{
  func @main(%q: tensor<6xi8>) -> (r: tensor<6xi8>) {{
    %s = constant dense<{scale}> : tensor<f32>
    %z = constant dense<3> : tensor<i8>
    %d = dequantize %q, %s, %z : (tensor<6xi8>, tensor<f32>, tensor<i8>) -> tensor<6xf16>
    %r = quantize %d, %s, %z : (tensor<6xf16>, tensor<f32>, tensor<i8>) -> tensor<6xi8>
    return %r
  }}
}}
"
    )
}

#[test]
fn quantize_of_dequantize_is_removed_only_when_exact() {
    let f = parse(&qdq_src("0.25"));
    let o = optimize(&f, &["qdq-cleanup"], "x86-64-v3");
    assert!(op_names(&o.function).is_empty(), "{}", text(&o.function));
    assert_same_on_interp(&f, &o.function, 5, 8);
    // 0.1 has a 52-bit odd factor: (q - z) * 0.1 rounds in f16.
    let f = parse(&qdq_src("0.1"));
    let o = optimize(&f, &["qdq-cleanup"], "x86-64-v3");
    assert_eq!(op_names(&o.function), ["dequantize", "quantize"]);
    let q = o.report.ops.iter().find(|r| r.op == "quantize").unwrap();
    assert_eq!(q.schedule, "fallback");
    let reason = q.reason.as_deref().unwrap();
    assert!(reason.contains("significand bits of f16"), "{reason}");
    assert_same_on_interp(&f, &o.function, 6, 8);
}

#[test]
fn stochastic_ops_are_opaque_to_rewrites() {
    // The exact pair above with stochastic rounding: no rule may touch it.
    let src = qdq_src("0.25").replace(
        "%r = quantize %d, %s, %z :",
        "%r = quantize %d, %s, %z {rounding = stochastic, seed = 3, random_bits = 8} :",
    );
    let f = parse(&src);
    let o = optimize(&f, &["qdq-cleanup", "integer-only"], "x86-64-v3");
    assert_eq!(
        op_names(&o.function),
        ["dequantize", "quantize"],
        "{}",
        text(&o.function)
    );
    assert!(o
        .function
        .ops()
        .iter()
        .any(|&op| o.function.op(op).kind.is_stochastic()));
    assert_same_on_interp(&f, &o.function, 5, 8);
}

#[test]
fn requantize_to_the_same_scale_is_removed() {
    let src = "module {
  func @main(%q: tensor<5xu8>) -> (r: tensor<5xu8>) {
    %s = constant dense<0.75> : tensor<f32>
    %z = constant dense<128> : tensor<u8>
    %r = requantize %q, %s, %z, %s, %z : (tensor<5xu8>, tensor<f32>, tensor<u8>, tensor<f32>, tensor<u8>) -> tensor<5xu8>
    return %r
  }
}
";
    let f = parse(src);
    let o = optimize(&f, &["qdq-cleanup"], "x86-64-v3");
    assert!(op_names(&o.function).is_empty());
    assert_same_on_interp(&f, &o.function, 7, 8);
}

/// requantize divides in f32 for f32 scales, so `(q − z)·s / s` is `q − z`
/// rounded to f32: the identity holds only while |q − z| ≤ 2^24.
#[test]
fn requantize_identity_needs_q_exact_in_the_quotient_format() {
    let src = |scale_ty: &str| {
        format!(
            "module {{
  func @main(%q: tensor<5xi32>) -> (r: tensor<5xi32>) {{
    %s = constant dense<0.75> : tensor<{scale_ty}>
    %z = constant dense<7> : tensor<i32>
    %r = requantize %q, %s, %z, %s, %z : (tensor<5xi32>, tensor<{scale_ty}>, tensor<i32>, tensor<{scale_ty}>, tensor<i32>) -> tensor<5xi32>
    return %r
  }}
}}
"
        )
    };
    let f = parse(&src("f32"));
    let o = optimize(&f, &["qdq-cleanup"], "x86-64-v3");
    assert_eq!(
        op_names(&o.function),
        ["requantize"],
        "{}",
        text(&o.function)
    );
    let r = o.report.ops.iter().find(|r| r.op == "requantize").unwrap();
    let reason = r.reason.as_deref().unwrap();
    assert!(reason.contains("significand bits of f32"), "{reason}");
    // Random i32 inputs do round: the rule was right to refuse.
    let q = lowbit_ir::Tensor::from_f64(
        lowbit_ir::ElemType::I32,
        vec![5],
        &[123_456_789.0, -2e9, 1.0, 16_777_217.0, 0.0],
    )
    .unwrap();
    let got = lowbit_interp::run_function(&f, &[("q".to_string(), q.clone())])
        .unwrap()
        .remove(0)
        .1;
    assert_ne!(got.to_i128(), q.to_i128());
    // With f64 scales the quotient is f64 and every i32 is exact.
    let f = parse(&src("f64"));
    let o = optimize(&f, &["qdq-cleanup"], "x86-64-v3");
    assert!(op_names(&o.function).is_empty(), "{}", text(&o.function));
    assert_same_on_interp(&f, &o.function, 7, 8);
}

#[test]
fn integer_casts() {
    let src = "module {
  func @main(%x: tensor<4xi4>, %y: tensor<4xi16>) -> (a: tensor<4xi16>, b: tensor<4xi16>, c: tensor<4xi16>) {
    %0 = cast %x : (tensor<4xi4>) -> tensor<4xi8>
    %1 = cast %0 : (tensor<4xi8>) -> tensor<4xi16>
    %2 = cast %y : (tensor<4xi16>) -> tensor<4xi16>
    %3 = cast %y : (tensor<4xi16>) -> tensor<4xi8>
    %4 = cast %3 : (tensor<4xi8>) -> tensor<4xi16>
    return %1, %2, %4
  }
}
";
    let f = parse(src);
    let o = optimize(&f, &["qdq-cleanup"], "x86-64-v3");
    // x -> i8 -> i16 collapses (i4 fits i8); y -> i16 disappears; y -> i8
    // -> i16 stays (the first cast wraps).
    assert_eq!(
        op_names(&o.function),
        ["cast", "cast", "cast"],
        "{}",
        text(&o.function)
    );
    let last = o.report.ops.iter().find(|r| r.name == "%2").unwrap();
    assert!(
        last.reason.as_deref().unwrap().contains("changes values"),
        "{last:?}"
    );
    assert_same_on_interp(&f, &o.function, 8, 8);
}

fn int_only_src(sy: &str, k: u64, w_param: bool) -> String {
    let w = if w_param {
        String::new()
    } else {
        format!(
            "%wq = constant {} : tensor<{k}x4xi4>\n    ",
            dense(4, (0..k as i64 * 4).map(|i| (i * 7 % 16) - 8))
        )
    };
    let wp = if w_param {
        format!(", %wq: tensor<{k}x4xi4>")
    } else {
        String::new()
    };
    format!(
        "module {{
  func @main(%xq: tensor<2x{k}xi8>{wp}) -> (y: tensor<2x4xi8>) {{
    {w}%sx = constant dense<0.5> : tensor<f32>
    %zx = constant dense<-3> : tensor<i8>
    %sw = constant dense<0.75> : tensor<f32>
    %sy = constant dense<{sy}> : tensor<f32>
    %zy = constant dense<5> : tensor<i8>
    %x = dequantize %xq, %sx, %zx : (tensor<2x{k}xi8>, tensor<f32>, tensor<i8>) -> tensor<2x{k}xf32>
    %w = dequantize %wq, %sw : (tensor<{k}x4xi4>, tensor<f32>) -> tensor<{k}x4xf32>
    %m = matmul %x, %w : (tensor<2x{k}xf32>, tensor<{k}x4xf32>) -> tensor<2x4xf32>
    %y = quantize %m, %sy, %zy : (tensor<2x4xf32>, tensor<f32>, tensor<i8>) -> tensor<2x4xi8>
    return %y
  }}
}}
"
    )
}

#[test]
fn integer_only_with_dyadic_scales() {
    // sx * sw / sy = 0.375 / 3 = 1/8: multiplier 1, shift 3.
    let f = parse(&int_only_src("3.0", 16, false));
    let o = optimize(&f, &["integer-only"], "cascadelake");
    assert_eq!(
        op_names(&o.function),
        ["matmul_int", "requant_dyadic"],
        "{}",
        text(&o.function)
    );
    let OpKind::RequantDyadic {
        multiplier,
        shift,
        axis,
        ..
    } = only(&o.function, "requant_dyadic")
    else {
        unreachable!()
    };
    assert_eq!((multiplier, shift, axis), (vec![1], vec![3], None));
    let mm = o.report.ops.iter().find(|r| r.op == "matmul_int").unwrap();
    assert_eq!(mm.schedule, "dyadic");
    assert!(mm.kernel.contains("avx512vnni"), "{mm:?}");
    assert_same_on_interp(&f, &o.function, 9, 16);
    // sy = 0.15 is not dyadic relative to 0.375: blocked, with the reason.
    let f = parse(&int_only_src("0.15", 16, false));
    let o = optimize(&f, &["integer-only"], "cascadelake");
    assert_eq!(
        op_names(&o.function),
        ["dequantize", "dequantize", "matmul", "quantize"]
    );
    let q = o.report.ops.iter().find(|r| r.op == "quantize").unwrap();
    assert_eq!(q.schedule, "fallback");
    assert!(
        q.reason.as_deref().unwrap().contains("is not dyadic"),
        "{q:?}"
    );
    assert!(
        q.reason
            .as_deref()
            .unwrap()
            .contains("allow-approx-dyadic=true"),
        "{q:?}"
    );
}

/// The same graph with per-output-channel weight scales: `sw = [0.75, 1.5,
/// 3.0, 0.375]`, so the ratios `0.5 · sw / 3` are 1/8, 1/4, 1/2 and 1/16.
fn per_channel_src(sy: &str, saturate: bool) -> String {
    let sat = if saturate { "" } else { " {saturate = false}" };
    int_only_src(sy, 16, false)
        .replace(
            "%sw = constant dense<0.75> : tensor<f32>",
            "%sw = constant dense<[0.75, 1.5, 3.0, 0.375]> : tensor<4xf32>",
        )
        .replace(
            "%w = dequantize %wq, %sw : (tensor<16x4xi4>, tensor<f32>)",
            "%w = dequantize %wq, %sw {axis = 1} : (tensor<16x4xi4>, tensor<4xf32>)",
        )
        .replace(
            "%y = quantize %m, %sy, %zy :",
            &format!("%y = quantize %m, %sy, %zy{sat} :"),
        )
}

#[test]
fn integer_only_with_per_channel_weight_scales() {
    let f = parse(&per_channel_src("3.0", true));
    let o = optimize(&f, &["integer-only"], "cascadelake");
    assert_eq!(op_names(&o.function), ["matmul_int", "requant_dyadic"]);
    let OpKind::RequantDyadic {
        multiplier,
        shift,
        axis,
        ..
    } = only(&o.function, "requant_dyadic")
    else {
        unreachable!()
    };
    assert_eq!(
        (multiplier, shift, axis),
        (vec![1, 1, 1, 1], vec![3, 2, 1, 4], Some(1))
    );
    assert_same_on_interp(&f, &o.function, 21, 16);
}

#[test]
fn per_channel_scales_along_the_contraction_axis_are_blocked() {
    let src = int_only_src("3.0", 4, false)
        .replace(
            "%sw = constant dense<0.75> : tensor<f32>",
            "%sw = constant dense<[0.75, 1.5, 3.0, 0.375]> : tensor<4xf32>",
        )
        .replace(
            "%w = dequantize %wq, %sw : (tensor<4x4xi4>, tensor<f32>)",
            "%w = dequantize %wq, %sw {axis = 0} : (tensor<4x4xi4>, tensor<4xf32>)",
        );
    let f = parse(&src);
    let o = optimize(&f, &["integer-only"], "cascadelake");
    let q = o.report.ops.iter().find(|r| r.op == "quantize").unwrap();
    assert_eq!(q.schedule, "fallback");
    assert!(
        q.reason
            .as_deref()
            .unwrap()
            .contains("contraction or a batch axis"),
        "{q:?}"
    );
}

fn optimize_approx(f: &lowbit_ir::Function, target: &str) -> lowbit_egraph::Optimized {
    let mut cfg = lowbit_egraph::Config::new(target.parse().unwrap());
    cfg.rules = vec!["integer-only".into()];
    cfg.options.allow_approx_dyadic = true;
    let o = lowbit_egraph::optimize_function(f, &cfg).unwrap();
    assert!(lowbit_ir::verifier::verify_function(&o.function).is_empty());
    o
}

#[test]
fn approximate_dyadic_only_when_asked_and_within_one_unit() {
    // sx * sw / sy = 0.375 / 0.15 = 2.5 (not dyadic: 0.15 is not).
    let f = parse(&int_only_src("0.15", 16, false));
    let o = optimize_approx(&f, "cascadelake");
    assert_eq!(op_names(&o.function), ["matmul_int", "requant_dyadic"]);
    let OpKind::RequantDyadic {
        multiplier, shift, ..
    } = only(&o.function, "requant_dyadic")
    else {
        unreachable!()
    };
    // The constant is the f32 nearest 0.15.
    let r = 0.375 / (0.15f32 as f64);
    let got = multiplier[0] as f64 / 2f64.powi(shift[0] as i32);
    assert!(((got - r) / r).abs() <= 2f64.powi(-31) * 1.0001, "{got}");
    let rq = o
        .report
        .ops
        .iter()
        .find(|r| r.op == "requant_dyadic")
        .unwrap();
    assert_eq!(rq.schedule, "dyadic");
    let reason = rq.reason.as_deref().unwrap();
    assert!(
        reason.contains("approximate dyadic multiplier for 1 of 1"),
        "{reason}"
    );
    assert!(reason.contains("at most 1 unit"), "{reason}");
    let (compared, _) = compare_within(&f, &o.function, 31, 64, 1);
    assert_eq!(compared, 64);
}

/// The approximate multiplier's one-unit bound needs the output window
/// below 2^22 when the reference quotient is f32 (2^28 when it is f64).
#[test]
fn approximate_dyadic_window_depends_on_the_quotient_format() {
    let wide = |sy_ty: &str| {
        int_only_src("0.15", 16, false)
            .replace("(y: tensor<2x4xi8>)", "(y: tensor<2x4xi24>)")
            .replace("%zy = constant dense<5> : tensor<i8>", "%zy = constant dense<5> : tensor<i24>")
            .replace("%sy = constant dense<0.15> : tensor<f32>", &format!("%sy = constant dense<0.15> : tensor<{sy_ty}>"))
            .replace(
                "%y = quantize %m, %sy, %zy : (tensor<2x4xf32>, tensor<f32>, tensor<i8>) -> tensor<2x4xi8>",
                &format!("%y = quantize %m, %sy, %zy : (tensor<2x4xf32>, tensor<{sy_ty}>, tensor<i24>) -> tensor<2x4xi24>"),
            )
    };
    let f = parse(&wide("f32"));
    let o = optimize_approx(&f, "cascadelake");
    assert_eq!(
        op_names(&o.function),
        ["dequantize", "dequantize", "matmul", "quantize"],
        "{}",
        text(&o.function)
    );
    let q = o.report.ops.iter().find(|r| r.op == "quantize").unwrap();
    let reason = q.reason.as_deref().unwrap();
    assert!(
        reason.contains("f32 reference quotient") && reason.contains("< 2^22"),
        "{reason}"
    );
    let f = parse(&wide("f64"));
    let o = optimize_approx(&f, "cascadelake");
    assert_eq!(op_names(&o.function), ["matmul_int", "requant_dyadic"]);
    let (compared, _) = compare_within(&f, &o.function, 33, 64, 1);
    assert_eq!(compared, 64);
}

#[test]
fn approximate_dyadic_per_channel_mixes_exact_and_approximate_channels() {
    // sy = 0.6: ratios 0.5 * [0.75, 1.5, 3.0, 0.375] / 0.6 = 0.625, 1.25,
    // 2.5, 0.3125: 0.6 = 3 * 0.2 is not a dyadic divisor of any of them.
    let f = parse(&per_channel_src("0.6", true));
    let o = optimize_approx(&f, "icelake-server");
    let OpKind::RequantDyadic { multiplier, .. } = only(&o.function, "requant_dyadic") else {
        unreachable!()
    };
    assert_eq!(multiplier.len(), 4);
    let (compared, _) = compare_within(&f, &o.function, 32, 64, 1);
    assert_eq!(compared, 64);
    // A wrapping quantize is refused: one unit could become the whole range.
    let f = parse(&per_channel_src("0.6", false));
    let o = optimize_approx(&f, "icelake-server");
    let q = o.report.ops.iter().find(|r| r.op == "quantize").unwrap();
    assert_eq!(q.schedule, "fallback");
    assert!(
        q.reason.as_deref().unwrap().contains("non-saturating"),
        "{q:?}"
    );
}

#[test]
fn integer_only_needs_a_proven_accumulator_range() {
    // 2100000 * |x - zx| (<= 131) * |w| (<= 8) exceeds 2^31.
    let f = parse(&int_only_src("3.0", 2_100_000, true));
    let o = optimize(&f, &["integer-only"], "x86-64-v4");
    let q = o.report.ops.iter().find(|r| r.op == "quantize").unwrap();
    assert_eq!(q.schedule, "fallback");
    assert!(
        q.reason.as_deref().unwrap().contains("exceeds i32"),
        "{q:?}"
    );
}

fn low_bit_matmul() -> lowbit_ir::Function {
    parse(
        "module {
  func @main(%a: tensor<64x512xu2>, %b: tensor<512x64xi2>) -> (c: tensor<64x64xi32>) {
    %c = matmul %a, %b : (tensor<64x512xu2>, tensor<512x64xi2>) -> tensor<64x64xi32>
    return %c
  }
}
",
    )
}

#[test]
fn bit_serial_where_the_target_has_vector_popcount() {
    let f = low_bit_matmul();
    let o = optimize(&f, &["bit-serial"], "icelake-server");
    let OpKind::MatMulInt { schedule, .. } = only(&o.function, "matmul_int") else {
        unreachable!()
    };
    assert_eq!(schedule.name(), "bit_serial");
    assert_eq!(o.report.ops[0].schedule, "bit-serial");
    assert_same_on_interp(&f, &o.function, 10, 2);
    // Without VPOPCNTDQ the direct VNNI schedule wins, and explain says why.
    let o = optimize(&f, &["bit-serial"], "cascadelake");
    let OpKind::MatMulInt { schedule, .. } = only(&o.function, "matmul_int") else {
        unreachable!()
    };
    assert_eq!(schedule.name(), "direct");
    let r = o.report.ops[0].reason.as_deref().unwrap();
    assert!(
        r.contains("bit-serial not taken") && r.contains("no avx512vpopcntdq"),
        "{r}"
    );
    assert_same_on_interp(&f, &o.function, 11, 2);
}

#[test]
fn bit_serial_is_blocked_for_wide_operands() {
    let f = parse(
        "module {
  func @main(%a: tensor<2x3xi16>, %b: tensor<3x2xi16>) -> (c: tensor<2x2xi32>) {
    %c = matmul %a, %b : (tensor<2x3xi16>, tensor<3x2xi16>) -> tensor<2x2xi32>
    return %c
  }
}
",
    );
    let o = optimize(&f, &["bit-serial"], "icelake-server");
    let r = o.report.ops[0].reason.as_deref().unwrap();
    assert!(r.contains("at most 8 bits"), "{r}");
}

#[test]
fn transposed_weights_fold_into_the_constant() {
    let src = format!(
        "module {{
  func @main(%x: tensor<2x8xf32>) -> (y: tensor<2x4xf32>) {{
    %w = constant {} : tensor<4x8xi4>
    %s = constant dense<[0.5, 0.25, 0.125, 1.5]> : tensor<4xf32>
    %d = dequantize %w, %s {{axis = 0}} : (tensor<4x8xi4>, tensor<4xf32>) -> tensor<4x8xf32>
    %t = transpose %d {{perm = [1, 0]}} : (tensor<4x8xf32>) -> tensor<8x4xf32>
    %y = matmul %x, %t : (tensor<2x8xf32>, tensor<8x4xf32>) -> tensor<2x4xf32>
    return %y
  }}
}}
",
        dense(8, (0..32).map(|i| (i * 3 % 16) - 8))
    );
    let f = parse(&src);
    let o = optimize(&f, &["layout", "fuse-dequant"], "x86-64-v3");
    assert_eq!(op_names(&o.function), ["qmatmul"], "{}", text(&o.function));
    let OpKind::QMatMul { granularity, .. } = only(&o.function, "qmatmul") else {
        unreachable!()
    };
    assert_eq!(granularity, lowbit_ir::Granularity::PerAxis { axis: 1 });
    assert_same_on_interp(&f, &o.function, 12, 4);
}

#[test]
fn output_is_deterministic() {
    let f = parse(&int_only_src("3.0", 16, false));
    let a = optimize(&f, &["integer-only", "bit-serial", "fuse-dequant"], "sm_80");
    let b = optimize(&f, &["integer-only", "bit-serial", "fuse-dequant"], "sm_80");
    assert_eq!(text(&a.function), text(&b.function));
    assert_eq!(
        lowbit_egraph::explain::render_json("sm_80", &[a.report]),
        lowbit_egraph::explain::render_json("sm_80", &[b.report])
    );
}

#[test]
fn limits_are_reported() {
    let f = parse(&int_only_src("3.0", 16, false));
    let mut cfg = lowbit_egraph::Config::new("x86-64-v3".parse().unwrap());
    cfg.iter_limit = 1;
    let o = lowbit_egraph::optimize_function(&f, &cfg).unwrap();
    assert_eq!(o.report.stop_reason, "iteration limit (1)");
    cfg.rules = vec!["nope".into()];
    let e = lowbit_egraph::optimize_function(&f, &cfg).unwrap_err();
    assert!(e.0.contains("unknown rule set 'nope'"), "{e}");
}

/// `quantize(relu(qmatmul(..) + b), sy, zy)` ⇒ one `qmatmul` with bias,
/// activation and a requantize epilogue carrying the quantize's
/// attributes; per-column output scales, a zero point, rounding down and
/// wrapping all survive, bit for bit.
#[test]
fn fuse_requant_epilogue() {
    let src = format!(
        "module {{\n  func @main(%x: tensor<2x8xf32>) -> (y: tensor<2x4xi8>) {{\n    {}\n    %m = matmul %x, %d : (tensor<2x8xf32>, tensor<8x4xf32>) -> tensor<2x4xf32>\n    %b = constant dense<[0.5, -1.0, 2.0, 0.0]> : tensor<4xf32>\n    %a = add %m, %b : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>\n    %r = relu %a : (tensor<2x4xf32>) -> tensor<2x4xf32>\n    %sy = constant dense<[0.01, 0.02, 0.03, 0.1]> : tensor<4xf32>\n    %zy = constant dense<[1, -2, 3, 0]> : tensor<4xi8>\n    %y = quantize %r, %sy, %zy {{axis = 1, rounding = down, saturate = false}} : (tensor<2x4xf32>, tensor<4xf32>, tensor<4xi8>) -> tensor<2x4xi8>\n    return %y\n  }}\n}}\n",
        weights_i4()
    );
    let f = parse(&src);
    for target in ["x86-64-v3", "icelake-server", "sm_80"] {
        let o = optimize(&f, &["fuse-dequant"], target);
        assert_eq!(op_names(&o.function), ["qmatmul"], "{}", text(&o.function));
        let OpKind::QMatMul {
            has_bias,
            activation,
            requant: Some(rq),
            ..
        } = only(&o.function, "qmatmul")
        else {
            panic!("no requant epilogue: {}", text(&o.function))
        };
        assert!(has_bias);
        assert_eq!(activation.name(), "relu");
        assert_eq!(rq.granularity, lowbit_ir::Granularity::PerAxis { axis: 1 });
        assert_eq!(rq.rounding, lowbit_ir::Rounding::Down);
        assert!(!rq.saturate && rq.has_zero_point);
        assert_eq!(rq.float_type.to_string(), "f32");
        let op = &o.report.ops[0];
        assert_eq!(op.schedule, "dequant-fused");
        assert!(op.kernel.ends_with("+requant.f32->i8"), "{op:?}");
        // The unfused quantize is an alternative in the same class.
        assert!(op.alternatives.iter().any(|a| a.op == "quantize"), "{op:?}");
        let printed = text(&o.function);
        assert!(
            printed.contains("requant_type = f32") && printed.contains("out_axis = 1"),
            "{printed}"
        );
        assert_same_on_interp(&f, &o.function, 31, 16);
    }
}

/// Where integer-only is blocked (a non-dyadic scale ratio), the quantize
/// still fuses as a float requantize epilogue, and explain keeps the
/// integer-only reason.
#[test]
fn requant_epilogue_when_integer_only_is_blocked() {
    let f = parse(&int_only_src("0.15", 16, false));
    let o = optimize(&f, &["fuse-dequant", "integer-only"], "cascadelake");
    assert_eq!(
        op_names(&o.function),
        ["dequantize", "qmatmul"],
        "{}",
        text(&o.function)
    );
    let q = o.report.ops.iter().find(|r| r.op == "qmatmul").unwrap();
    assert_eq!(q.schedule, "dequant-fused");
    assert!(q.kernel.contains("+requant.f32->i8"), "{q:?}");
    assert!(
        q.reason.as_deref().unwrap().contains("is not dyadic"),
        "{q:?}"
    );
    assert_same_on_interp(&f, &o.function, 32, 16);
    // With a dyadic ratio the integer path wins on a VNNI target.
    let f = parse(&int_only_src("3.0", 16, false));
    let o = optimize(&f, &["fuse-dequant", "integer-only"], "cascadelake");
    assert_eq!(op_names(&o.function), ["matmul_int", "requant_dyadic"]);
    assert_same_on_interp(&f, &o.function, 33, 16);
}

/// `x : [4, 256] f16` with columns 2 and 9 marked as outliers, times an i8
/// weight with per-column f16 scales and a zero point.
fn mixed_src(mark: bool) -> (String, Vec<f64>) {
    let wv: Vec<i64> = (0..256 * 128).map(|i| (i * 37 % 255) - 127).collect();
    let scales = [0.5, 0.25, 0.125, 1.5, 0.75, 0.0625, 2.0, 0.375];
    let zp = [1, -2, 0, 3, -1, 0, 2, -3];
    let w: Vec<f64> = wv
        .iter()
        .enumerate()
        .map(|(i, &q)| (q - zp[i % 128 % 8]) as f64 * scales[i % 128 % 8])
        .collect();
    let x = if mark {
        "%xm = mark_outliers %x {columns = [2, 9]} : (tensor<4x256xf16>) -> tensor<4x256xf16>\n    "
    } else {
        ""
    };
    let xv = if mark { "%xm" } else { "%x" };
    let sd = (0..128)
        .map(|i| format!("{:?}", scales[i % 8]))
        .collect::<Vec<_>>()
        .join(", ");
    let zd = (0..128)
        .map(|i| zp[i % 8].to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let src = format!(
        "module {{
  func @main(%x: tensor<4x256xf16>) -> (y: tensor<4x128xf16>) {{
    {x}%w = constant {} : tensor<256x128xi8>
    %s = constant dense<[{sd}]> : tensor<128xf16>
    %z = constant dense<[{zd}]> : tensor<128xi8>
    %d = dequantize %w, %s, %z {{axis = 1}} : (tensor<256x128xi8>, tensor<128xf16>, tensor<128xi8>) -> tensor<256x128xf16>
    %y = matmul {xv}, %d : (tensor<4x256xf16>, tensor<256x128xf16>) -> tensor<4x128xf16>
    return %y
  }}
}}
",
        dense(128, wv.iter().copied()),
    );
    (src, w)
}

/// Marked outlier columns: the matmul splits into a qmatmul over the 254
/// regular columns and a float matmul over the 2 outliers (their weight
/// rows dequantized once into an f16 constant), joined by an add that
/// explain names `mixed` with its bound; the result stays within the
/// declared bound of the reference.
#[test]
fn mixed_decomposition_splits_marked_outliers() {
    let (src, w) = mixed_src(true);
    let f = parse(&src);
    // On sm_80 the cost model charges a launch per kernel: three kernels
    // lose to dequantize + tensor-core matmul, and explain says so.
    let o = optimize(&f, &["mixed-decomposition", "fuse-dequant"], "sm_80");
    let mm = o.report.ops.iter().find(|r| r.op == "matmul").unwrap();
    assert_eq!(mm.schedule, "fallback");
    assert!(mm
        .reason
        .as_deref()
        .unwrap()
        .contains("mixed: LLM.int8()-style"));
    assert!(mm.alternatives.iter().any(|a| a.op == "qmatmul"), "{mm:?}");
    assert_same_on_interp(&f, &o.function, 40, 4);
    for target in ["x86-64-v4", "icelake-server", "x86-64-v3"] {
        let o = optimize(&f, &["mixed-decomposition", "fuse-dequant"], target);
        let mut names = op_names(&o.function);
        names.sort();
        // The float part's sum is an add or, folded by fuse-bias, the
        // qmatmul's bias.
        names.retain(|n| *n != "add");
        assert_eq!(
            names,
            ["gather", "gather", "matmul", "qmatmul"],
            "{}",
            text(&o.function)
        );
        let printed = text(&o.function);
        assert!(printed.contains("tensor<2x128xf16>"), "{printed}");
        assert!(printed.contains("tensor<254x128xi8>"), "{printed}");
        let add = o.report.ops.last().unwrap();
        assert_eq!(add.schedule, "mixed", "{add:?}");
        let reason = add.reason.as_deref().unwrap();
        assert!(reason.contains("mixed: LLM.int8()-style"), "{reason}");
        assert!(reason.contains("outlier column(s) [2, 9]"), "{reason}");
        let (compared, worst) = mixed_bound_holds(&f, &o.function, &w, (256, 128), 41, 8);
        assert_eq!(compared, 8);
        // The decomposition does round differently (the bound is not vacuous).
        assert!(worst > 0.0, "never differed from the reference");
    }
}

/// Without the mark the matmul fuses as usual; with the mark but without
/// the mixed rule set, dequant fusion is blocked and explain says why.
#[test]
fn outlier_mark_is_required_and_respected() {
    let (src, _) = mixed_src(false);
    let f = parse(&src);
    let o = optimize(&f, &["mixed-decomposition", "fuse-dequant"], "x86-64-v4");
    assert_eq!(op_names(&o.function), ["qmatmul"]);
    assert_same_on_interp(&f, &o.function, 42, 8);
    let (src, _) = mixed_src(true);
    let f = parse(&src);
    let o = optimize(&f, &["fuse-dequant"], "x86-64-v4");
    assert_eq!(
        op_names(&o.function),
        ["mark_outliers", "dequantize", "matmul"]
    );
    let mm = o.report.ops.iter().find(|r| r.op == "matmul").unwrap();
    assert_eq!(mm.schedule, "fallback");
    assert!(
        mm.reason
            .as_deref()
            .unwrap()
            .contains("marks outlier columns [2, 9]"),
        "{mm:?}"
    );
    assert_same_on_interp(&f, &o.function, 43, 8);
}

/// `%x1 @ dequantize(%w)` and `%x2 @ dequantize(%w)` on x86-64-v4 at
/// 64x64: alone, each matmul is cheaper fused (qmatmul 3413 ns against
/// matmul + dequantize 2731 + 1024 ns), so tree extraction fuses both; but
/// the dequantized weight is shared, and materializing it once for two
/// plain matmuls costs less than decoding it inside two qmatmuls. The
/// extraction counts the shared class once and takes the unfused pair.
#[test]
fn extraction_counts_a_shared_subterm_once() {
    let w = dense(64, (0..64 * 64).map(|i| (i * 7 % 255) - 127));
    let body = |two: bool| {
        let (sig, second) = if two {
            (
                "(%x1: tensor<64x64xf32>, %x2: tensor<64x64xf32>) -> (y1: tensor<64x64xf32>, y2: tensor<64x64xf32>)",
                "\n    %y2 = matmul %x2, %d : (tensor<64x64xf32>, tensor<64x64xf32>) -> tensor<64x64xf32>\n    return %y1, %y2",
            )
        } else {
            (
                "(%x1: tensor<64x64xf32>) -> (y1: tensor<64x64xf32>)",
                "\n    return %y1",
            )
        };
        format!(
            "module {{
  func @main{sig} {{
    %w = constant {w} : tensor<64x64xi8>
    %s = constant dense<0.5> : tensor<f32>
    %d = dequantize %w, %s : (tensor<64x64xi8>, tensor<f32>) -> tensor<64x64xf32>
    %y1 = matmul %x1, %d : (tensor<64x64xf32>, tensor<64x64xf32>) -> tensor<64x64xf32>{second}
  }}
}}
"
        )
    };
    // One user: fused, as tree extraction would choose.
    let single = optimize(&parse(&body(false)), &["fuse-dequant"], "x86-64-v4");
    assert_eq!(op_names(&single.function), ["qmatmul"]);
    let fused = single.report.ops[0].alternatives[0].cost;
    let unfused = single.report.ops[0].alternatives[1].cost;
    assert_eq!(single.report.ops[0].alternatives[1].op, "matmul");
    assert!(fused < unfused, "{:?}", single.report.ops[0]);

    // Two users of the same dequantized weight: unfused, one dequantize.
    let f = parse(&body(true));
    let o = optimize(&f, &["fuse-dequant"], "x86-64-v4");
    assert_eq!(
        op_names(&o.function),
        ["dequantize", "matmul", "matmul"],
        "{}",
        text(&o.function)
    );
    // Tree cost would charge the dequantize twice; the chosen program
    // costs less than both fused alternatives, which tree extraction takes.
    assert!(o.report.total_cost < 2.0 * fused, "{:?}", o.report);
    let mm = &o.report.ops[1];
    assert_eq!(mm.op, "matmul");
    assert!(mm.alternatives.iter().any(|a| a.op == "qmatmul"), "{mm:?}");
    // Deterministic: the same input gives the same program and report.
    let again = optimize(&f, &["fuse-dequant"], "x86-64-v4");
    assert_eq!(text(&again.function), text(&o.function));
    assert_eq!(again.report, o.report);
    assert_same_on_interp(&f, &o.function, 51, 2);
}

/// `rows` `u8` activation rows times a constant `k x m` weight of `wt`
/// (`matmul_int`, with zero points `za`, `zw` when given).
fn w8a8_src(rows: u64, k: u64, m: u64, wt: &str, zp: Option<(i64, i64)>) -> String {
    let (lo, span) = if wt.starts_with('u') {
        (0, 256)
    } else {
        (-128, 256)
    };
    // 8-, 4- or 2-bit codes.
    let narrow = match wt.as_bytes().last() {
        Some(b'4') => 16,
        Some(b'2') => 64,
        _ => 1,
    };
    let (span, lo) = (span / narrow, lo / narrow);
    let w = dense(
        m as usize,
        (0..k * m).map(|i| lo + (i as i64 * 37 + 11) % span),
    );
    let (zdefs, zops, ztys) = match zp {
        Some((za, zw)) => (
            format!(
                "%za = constant dense<{za}> : tensor<u8>\n    %zw = constant dense<{zw}> : tensor<{wt}>\n    "
            ),
            ", %za, %zw",
            format!(", tensor<u8>, tensor<{wt}>"),
        ),
        None => (String::new(), "", String::new()),
    };
    format!(
        "module {{
  func @main(%x: tensor<{rows}x{k}xu8>) -> (y: tensor<{rows}x{m}xi32>) {{
    %w = constant {w} : tensor<{k}x{m}x{wt}>
    {zdefs}%y = matmul_int %x, %w{zops} : (tensor<{rows}x{k}xu8>, tensor<{k}x{m}x{wt}>{ztys}) -> tensor<{rows}x{m}xi32>
    return %y
  }}
}}
"
    )
}

fn int_schedule(f: &lowbit_ir::Function) -> &'static str {
    let OpKind::MatMulInt { schedule, .. } = only(f, "matmul_int") else {
        unreachable!()
    };
    schedule.name()
}

#[test]
fn amx_for_many_rows_on_amx_targets_only() {
    let f = parse(&w8a8_src(64, 128, 64, "i8", None));
    let o = optimize(&f, &["amx"], "sapphirerapids");
    assert_eq!(int_schedule(&o.function), "amx", "{}", text(&o.function));
    let op = &o.report.ops[0];
    assert_eq!(op.schedule, "amx");
    assert_eq!(op.kernel, "x86.amxint8.tdpbusd.u8xi8");
    // The rejected direct schedule is listed with its (higher) cost.
    let direct = op
        .alternatives
        .iter()
        .find(|a| a.schedule == "dyadic")
        .unwrap_or_else(|| panic!("{op:?}"));
    assert!(direct.cost > op.alternatives[0].cost, "{op:?}");
    assert_eq!(op.alternatives[0].schedule, "amx");
    assert_same_on_interp(&f, &o.function, 21, 2);
    // The same CPU without AMX keeps the direct schedule and says why.
    for t in ["icelake-server", "x86-64-v3", "sm_90"] {
        let o = optimize(&f, &["amx"], t);
        assert_eq!(int_schedule(&o.function), "direct", "{t}");
        let r = o.report.ops[0].reason.as_deref().unwrap_or_default();
        assert!(
            r.contains("amx not taken") && r.contains("schedule amx unavailable"),
            "{t}: {r}"
        );
    }
    let o = optimize(&f, &["amx"], "icelake-server+amxint8");
    assert_eq!(int_schedule(&o.function), "amx");
}

#[test]
fn few_rows_keep_the_direct_schedule() {
    let f = parse(&w8a8_src(1, 128, 64, "i8", None));
    let o = optimize(&f, &["amx"], "sapphirerapids");
    assert_eq!(int_schedule(&o.function), "direct");
    let r = o.report.ops[0].reason.as_deref().unwrap();
    assert!(
        r.contains("amx not taken") && r.contains("computed as 32"),
        "{r}"
    );
    assert_same_on_interp(&f, &o.function, 22, 2);
}

#[test]
fn amx_takes_centered_u8_weights_and_i8_zero_points() {
    // u8 weights less 128 are i8: the kernel packs them so.
    let f = parse(&w8a8_src(48, 128, 60, "u8", Some((3, 128))));
    let o = optimize(&f, &["amx"], "sapphirerapids");
    assert_eq!(int_schedule(&o.function), "amx", "{}", text(&o.function));
    assert_same_on_interp(&f, &o.function, 23, 3);
    // Less 0 they span 0..255: not i8, so no AMX (and explain says so).
    let f = parse(&w8a8_src(40, 70, 33, "u8", Some((3, 0))));
    let o = optimize(&f, &["amx"], "sapphirerapids");
    assert_eq!(int_schedule(&o.function), "direct");
    let r = o.report.ops[0].reason.as_deref().unwrap();
    assert!(
        r.contains("amx: the weights less their zero point 0 span [0, 255]"),
        "{r}"
    );
    // 2-bit weights are not the kernel's.
    let f = parse(&w8a8_src(40, 70, 33, "i2", None));
    let o = optimize(&f, &["amx"], "sapphirerapids");
    assert_eq!(int_schedule(&o.function), "direct");
    let r = o.report.ops[0].reason.as_deref().unwrap();
    assert!(r.contains("8-bit or 4-bit weights, not i2"), "{r}");
}

/// W4A8: `i4`, `u4` and `u4` less 8 take `schedule = amx` for many rows
/// on an AMX target (the kernel keeps them 4-bit and splits them into
/// byte tiles), the direct schedule for one row; exact either way.
#[test]
fn amx_takes_4_bit_weights() {
    for (wt, zp) in [("i4", None), ("u4", None), ("u4", Some((5, 8)))] {
        let f = parse(&w8a8_src(64, 128, 64, wt, zp));
        let o = optimize(&f, &["amx"], "sapphirerapids");
        assert_eq!(int_schedule(&o.function), "amx", "{}", text(&o.function));
        assert_eq!(
            o.report.ops[0].kernel,
            format!("x86.amxint8.tdpbusd.u8x{wt}")
        );
        assert_same_on_interp(&f, &o.function, 25, 2);
        let f = parse(&w8a8_src(1, 128, 64, wt, zp));
        let o = optimize(&f, &["amx"], "sapphirerapids");
        assert_eq!(int_schedule(&o.function), "direct", "{wt}");
        assert_same_on_interp(&f, &o.function, 26, 2);
    }
}

#[test]
fn amx_needs_a_constant_weight_and_offers_direct_back() {
    let f = parse(
        "module {
  func @main(%x: tensor<64x64xu8>, %w: tensor<64x64xi8>) -> (y: tensor<64x64xi32>) {
    %y = matmul %x, %w : (tensor<64x64xu8>, tensor<64x64xi8>) -> tensor<64x64xi32>
    return %y
  }
}
",
    );
    let o = optimize(&f, &["amx", "bit-serial"], "sapphirerapids");
    assert_ne!(int_schedule(&o.function), "amx");
    let r = o.report.ops[0].reason.as_deref().unwrap_or_default();
    assert!(r.contains("not a constant"), "{r}");
    // An explicit amx op on a target without AMX goes back to direct.
    let src =
        w8a8_src(64, 128, 64, "i8", None).replace("%w : (tensor", "%w {schedule = amx} : (tensor");
    let f = parse(&src);
    assert_eq!(int_schedule(&f), "amx");
    let o = optimize(&f, &["amx"], "icelake-server");
    assert_eq!(int_schedule(&o.function), "direct");
    assert_same_on_interp(&f, &o.function, 24, 2);
    // Without the rule the op stays as written (costed as unavailable).
    let o = optimize(&f, &["bit-serial"], "icelake-server");
    assert_eq!(int_schedule(&o.function), "amx");
    let r = o.report.ops[0].reason.as_deref().unwrap();
    assert!(r.contains("schedule amx unavailable"), "{r}");
}

/// Random W8A8 and W4A8 matmuls (ragged shapes, `u8`/`i8`/`i4`/`u4`
/// weights with zero points) on an AMX target: whichever schedule is extracted, the result is the
/// interpreter's bit for bit, and both are extracted over the seeds.
#[test]
fn random_w8a8_matmuls_are_exact_either_way() {
    let mut seen = std::collections::BTreeSet::new();
    let mut rng = Rng(77);
    for _ in 0..32 {
        let rows = 1 + rng.next() % 48;
        let k = 1 + rng.next() % 90;
        let m = 1 + rng.next() % 40;
        let src = match rng.next() % 4 {
            0 => w8a8_src(rows, k, m, "i8", None),
            1 => w8a8_src(rows, k, m, "u8", Some(((rng.next() % 256) as i64, 128))),
            // W4A8: 4-bit weights, u4 less 8.
            2 => w8a8_src(rows, k, m, "i4", None),
            _ => w8a8_src(rows, k, m, "u4", Some(((rng.next() % 256) as i64, 8))),
        };
        let f = parse(&src);
        let o = optimize(&f, &["amx", "bit-serial"], "sapphirerapids");
        seen.insert(int_schedule(&o.function));
        assert_same_on_interp(&f, &o.function, rows * 1000 + k, 2);
    }
    assert!(seen.contains("amx") && seen.contains("direct"), "{seen:?}");
}
