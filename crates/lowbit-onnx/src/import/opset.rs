//! Operator versions: which version of an operator a node runs, given the
//! model's opset imports.
//!
//! ONNX versions each operator separately: a model importing opset `N` of a
//! domain runs, for each operator, the newest version whose `since_version`
//! is at most `N`. The tables below list every `since_version` of each
//! supported operator, written from the ONNX operator documentation
//! (Operators.md and the `onnx.defs` schemas of onnx 1.23, whose newest
//! default-domain opset is 28) and onnxruntime's ContribOperators.md for
//! `com.microsoft`. A default-domain opset outside
//! [`MIN_OPSET`]`..=`[`MAX_OPSET`] is refused, because an operator may have
//! changed in a version lowbit does not know.

/// The oldest default-domain opset lowbit imports.
pub const MIN_OPSET: i64 = 13;
/// The newest default-domain opset lowbit knows (onnx 1.23).
pub const MAX_OPSET: i64 = 28;
/// The newest `com.microsoft` opset lowbit knows.
pub const MAX_MS_OPSET: i64 = 1;

/// `(op_type, since_versions)` for the default domain (`""` / `ai.onnx`).
const DEFAULT_DOMAIN: &[(&str, &[i64])] = &[
    ("Add", &[1, 6, 7, 13, 14]),
    ("Cast", &[1, 6, 9, 13, 19, 21, 23, 24, 25, 28]),
    ("CastLike", &[15, 19, 21, 23, 24, 25]),
    ("Concat", &[1, 4, 11, 13]),
    ("Constant", &[1, 9, 11, 12, 13, 19, 21, 23, 24, 25]),
    ("Conv", &[1, 11, 22]),
    ("ConvInteger", &[10]),
    ("DequantizeLinear", &[10, 13, 19, 21, 23, 24, 25, 28]),
    ("Div", &[1, 6, 7, 13, 14]),
    ("DynamicQuantizeLinear", &[11]),
    ("Erf", &[9, 13]),
    ("Expand", &[8, 13]),
    ("Flatten", &[1, 9, 11, 13, 21, 23, 24, 25]),
    ("Gather", &[1, 11, 13]),
    ("Gelu", &[20]),
    ("Gemm", &[1, 6, 7, 9, 11, 13]),
    ("Identity", &[1, 13, 14, 16, 19, 21, 23, 24, 25]),
    ("LayerNormalization", &[17]),
    ("LogSoftmax", &[1, 11, 13]),
    ("MatMul", &[1, 9, 13]),
    ("MatMulInteger", &[10]),
    ("Mul", &[1, 6, 7, 13, 14]),
    ("Neg", &[1, 6, 13]),
    ("Pow", &[1, 7, 12, 13, 15]),
    ("QLinearMatMul", &[10, 21]),
    ("QuantizeLinear", &[10, 13, 19, 21, 23, 24, 25, 28]),
    ("RMSNormalization", &[23]),
    ("Relu", &[1, 6, 13, 14]),
    ("Reshape", &[1, 5, 13, 14, 19, 21, 23, 24, 25]),
    ("Shape", &[1, 13, 15, 19, 21, 23, 24, 25]),
    ("Sigmoid", &[1, 6, 13]),
    ("Slice", &[1, 10, 11, 13]),
    ("Softmax", &[1, 11, 13]),
    ("Sqrt", &[1, 6, 13]),
    ("Squeeze", &[1, 11, 13, 21, 23, 24, 25]),
    ("Sub", &[1, 6, 7, 13, 14]),
    ("Tanh", &[1, 6, 13]),
    ("Transpose", &[1, 13, 21, 23, 24, 25]),
    ("Unsqueeze", &[1, 11, 13, 21, 23, 24, 25]),
];

/// `(op_type, since_versions)` for `com.microsoft`.
const MICROSOFT_DOMAIN: &[(&str, &[i64])] = &[("MatMulNBits", &[1])];

/// A node's domain, normalized: `""` for the default domain.
pub fn normalize_domain(domain: &str) -> &str {
    if domain == "ai.onnx" {
        ""
    } else {
        domain
    }
}

/// The operator version a node runs, or why it cannot be imported.
///
/// `opset` is the model's imported version of the node's domain (`None`
/// when the model does not import the domain).
pub fn resolve(domain: &str, op_type: &str, opset: Option<i64>) -> Result<i64, String> {
    let domain = normalize_domain(domain);
    let (table, lo, hi, shown) = match domain {
        "" => (DEFAULT_DOMAIN, MIN_OPSET, MAX_OPSET, "the default domain"),
        "com.microsoft" => (MICROSOFT_DOMAIN, 1, MAX_MS_OPSET, "com.microsoft"),
        other => return Err(format!("unsupported operator domain '{other}'")),
    };
    let Some(opset) = opset else {
        return Err(format!("the model does not import an opset for {shown}"));
    };
    if !(lo..=hi).contains(&opset) {
        return Err(format!(
            "opset {opset} of {shown} is not supported (lowbit knows opsets {lo} to {hi})"
        ));
    }
    let Some((_, versions)) = table.iter().find(|(name, _)| *name == op_type) else {
        return Err("unsupported operator".to_string());
    };
    versions
        .iter()
        .copied()
        .filter(|&v| v <= opset)
        .max()
        .ok_or_else(|| format!("{op_type} does not exist in opset {opset} of {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_run_the_newest_version_not_after_the_opset() {
        assert_eq!(resolve("", "QuantizeLinear", Some(20)), Ok(19));
        assert_eq!(resolve("", "QuantizeLinear", Some(21)), Ok(21));
        assert_eq!(resolve("ai.onnx", "QuantizeLinear", Some(28)), Ok(28));
        assert_eq!(resolve("", "MatMul", Some(28)), Ok(13));
        assert_eq!(resolve("", "MatMulInteger", Some(13)), Ok(10));
        assert_eq!(resolve("", "Reshape", Some(13)), Ok(13));
        assert_eq!(resolve("", "Reshape", Some(14)), Ok(14));
        assert_eq!(resolve("com.microsoft", "MatMulNBits", Some(1)), Ok(1));
    }

    #[test]
    fn unknown_versions_and_ops_are_refused() {
        let e = resolve("", "MatMul", Some(29)).unwrap_err();
        assert!(
            e.contains("opset 29 of the default domain is not supported"),
            "{e}"
        );
        let e = resolve("", "MatMul", Some(12)).unwrap_err();
        assert!(e.contains("lowbit knows opsets 13 to 28"), "{e}");
        assert_eq!(
            resolve("", "Gelu", Some(19)).unwrap_err(),
            "Gelu does not exist in opset 19 of the default domain"
        );
        assert_eq!(
            resolve("", "LSTM", Some(21)).unwrap_err(),
            "unsupported operator"
        );
        assert!(resolve("com.example", "Foo", Some(1))
            .unwrap_err()
            .contains("unsupported operator domain 'com.example'"));
        assert!(resolve("com.microsoft", "MatMulNBits", None)
            .unwrap_err()
            .contains("does not import an opset for com.microsoft"));
    }

    #[test]
    fn tables_are_sorted_and_cover_opset_13() {
        for (name, versions) in DEFAULT_DOMAIN.iter().chain(MICROSOFT_DOMAIN) {
            assert!(versions.windows(2).all(|w| w[0] < w[1]), "{name}");
        }
        assert!(DEFAULT_DOMAIN.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
