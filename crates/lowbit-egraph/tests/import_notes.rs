//! Importer notes (quantized data made float at import) reach `explain`:
//! the ops of a noted class are `fallback` with the note as the reason,
//! the report lists the notes, and the extracted function keeps them.

mod common;

use common::{optimize, parse};
use lowbit_egraph::explain::{render_json, render_text};

const FLOAT_CODES: &str = r#"func @main(%a: tensor<2x32xf32>) -> (y: tensor<2x4xf32>) {
  %0 = constant dense<"0x0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"> : tensor<32x4xu4>
  %1 = constant dense<[[0.5, 0.25, 1.0, 2.0], [1.0, 1.0, 0.5, 0.5]]> : tensor<2x4xf32>
  %2 = constant dense<[[7.5, 8.0, 1.25, 0.0], [3.0, 2.5, 1.0, 0.5]]> : tensor<2x4xf32>
  %3 = cast %0 : (tensor<32x4xu4>) -> tensor<32x4xf32> note {node = "mmnb", op_type = "MatMulNBits", what = "the u4 weight codes", why = "fractional zero points"}
  %4 = dequantize %3, %1, %2 {axis = 0, block_size = 16} : (tensor<32x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<32x4xf32>
  %5 = matmul %a, %4 : (tensor<2x32xf32>, tensor<32x4xf32>) -> tensor<2x4xf32> note {node = "mmnb", op_type = "MatMulNBits", what = "the u4 weight codes", why = "fractional zero points"}
  return %5
}
"#;

#[test]
fn noted_ops_are_fallback_with_the_node_and_cause() {
    let f = parse(FLOAT_CODES);
    let o = optimize(&f, &["fuse-dequant"], "x86-64-v3");
    let r = &o.report;
    assert_eq!(r.dequantized.len(), 1, "one note, listed once");
    let want = "node 'mmnb' (MatMulNBits): the u4 weight codes dequantized to float at import: fractional zero points";
    let noted: Vec<(&str, &str)> = r
        .ops
        .iter()
        .filter(|op| !op.dequantized.is_empty())
        .map(|op| (op.op.as_str(), op.schedule.as_str()))
        .collect();
    // The matmul's class holds the fused qmatmul the cost model picks; it
    // reads float codes, so it is a fallback too.
    assert_eq!(noted, [("cast", "fallback"), ("qmatmul", "fallback")]);
    for op in r.ops.iter().filter(|op| !op.dequantized.is_empty()) {
        let reason = op.reason.as_deref().unwrap_or("");
        assert!(reason.starts_with(want), "{reason}");
    }
    let text = render_text(std::slice::from_ref(r));
    assert!(text.contains(&format!("  import note: {want}\n")), "{text}");
    let json = render_json("x86-64-v3", std::slice::from_ref(r));
    assert!(
        json.contains(r#""dequantized": [{"node": "mmnb", "op_type": "MatMulNBits", "what": "the u4 weight codes", "why": "fractional zero points"}]}], "functions""#),
        "{json}"
    );
    // The extracted function keeps the notes on the ops chosen for the
    // noted classes.
    let kept: Vec<&str> = o
        .function
        .notes_in_order()
        .into_iter()
        .map(|(op, _)| o.function.op(op).kind.name())
        .collect();
    assert_eq!(kept, ["cast", "qmatmul"]);
}

#[test]
fn without_notes_nothing_is_reported() {
    let src = FLOAT_CODES.replace(
        r#" note {node = "mmnb", op_type = "MatMulNBits", what = "the u4 weight codes", why = "fractional zero points"}"#,
        "",
    );
    let f = parse(&src);
    let o = optimize(&f, &["fuse-dequant"], "x86-64-v3");
    assert!(o.report.dequantized.is_empty());
    assert!(o
        .report
        .ops
        .iter()
        .all(|op| op.dequantized.is_empty() && op.schedule != "fallback" && op.reason.is_none()));
    let json = render_json("x86-64-v3", std::slice::from_ref(&o.report));
    assert!(!json.contains(r#""dequantized": [{"#), "{json}");
    assert!(o.function.op_notes.is_empty());
}
