//! The ONNX importer on models built here with the protobuf types: names,
//! types, quantized weights staying quantized, external data, and one test
//! per class of bad input (each must be one clear line, never a panic).
//! Numerical agreement with onnxruntime is checked by lit-tests/onnx.

use lowbit_interp::run_function;
use lowbit_ir::{ElemType, Module, OpKind, Tensor};
use lowbit_onnx::proto::onnx::tensor_proto::{DataLocation, DataType};
use lowbit_onnx::proto::onnx::tensor_shape_proto::{dimension, Dimension};
use lowbit_onnx::proto::onnx::{
    attribute_proto::AttributeType, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use lowbit_onnx::{import_bytes, import_model};
use proptest::prelude::*;
use prost::Message;
use std::path::{Path, PathBuf};

fn value_info(name: &str, dt: DataType, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(if d >= 0 {
                dimension::Value::DimValue(d)
            } else {
                dimension::Value::DimParam("batch".into())
            }),
            ..Dimension::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dt as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..NodeProto::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        i: Some(v),
        r#type: Some(AttributeType::Int as i32),
        ..AttributeProto::default()
    }
}

fn f32_init(name: &str, dims: &[i64], vals: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: vals.to_vec(),
        ..TensorProto::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    opset: i64,
) -> ModelProto {
    ModelProto {
        ir_version: Some(10),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: Some("g".into()),
            initializer: inits,
            input: inputs,
            output: outputs,
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    }
}

/// `y = (x @ w) + b` with ONNX-style names.
fn linear() -> ModelProto {
    model(
        vec![
            node(
                "MatMul",
                "/fc/MatMul",
                &["input:0", "onnx::MatMul_1"],
                &["/fc/MatMul_output_0"],
            ),
            node(
                "Add",
                "/fc/Add",
                &["/fc/MatMul_output_0", "fc.bias"],
                &["logits"],
            ),
        ],
        vec![value_info("input:0", DataType::Float, &[1, 2])],
        vec![value_info("logits", DataType::Float, &[1, 3])],
        vec![
            f32_init("onnx::MatMul_1", &[2, 3], &[1., 2., 3., 4., 5., 6.]),
            f32_init("fc.bias", &[3], &[0.5, -0.5, 0.0]),
        ],
        17,
    )
}

fn import(m: &ModelProto) -> Result<Module, String> {
    import_bytes(&m.encode_to_vec(), None).map_err(|e| e.to_string())
}

fn import_err(m: &ModelProto) -> String {
    match import(m) {
        Ok(m) => panic!(
            "expected an error, imported:\n{}",
            lowbit_ir::printer::print_module(&m)
        ),
        Err(e) => {
            assert!(!e.contains('\n'), "not one line: {e}");
            e
        }
    }
}

#[test]
fn names_types_and_values_survive_import() {
    let m = import(&linear()).unwrap();
    let f = m.entry().unwrap();
    assert_eq!(f.params[0].0, "input:0");
    assert_eq!(f.outputs[0].0, "logits");
    let text = lowbit_ir::printer::print_module(&m);
    assert!(
        text.contains("func @main(%\"input:0\": tensor<1x2xf32>) -> (logits: tensor<1x3xf32>)"),
        "{text}"
    );
    // the printed IR parses back to the same module
    assert_eq!(lowbit_ir::parser::parse_module(&text).unwrap(), m);
    let x = Tensor::from_f64(ElemType::F32, vec![1, 2], &[1.0, -1.0]).unwrap();
    let out = run_function(f, &[("input:0".into(), x)]).unwrap();
    assert_eq!(
        out[0].1.to_f64(),
        [1.0 - 4.0 + 0.5, 2.0 - 5.0 - 0.5, 3.0 - 6.0]
    );
}

fn int4_weight_model(opset: i64) -> ModelProto {
    // int4 [4, 2] packed low nibble first: values 1, -2, 3, -4, 7, -8, 0, 5
    let codes: [u8; 8] = [1, 0xE, 3, 0xC, 7, 0x8, 0, 5];
    let raw: Vec<u8> = codes.chunks(2).map(|c| c[0] | (c[1] << 4)).collect();
    let w = TensorProto {
        name: Some("w".into()),
        dims: vec![4, 2],
        data_type: Some(DataType::Int4 as i32),
        raw_data: Some(raw.into()),
        ..TensorProto::default()
    };
    let mut dq = node("DequantizeLinear", "dq", &["w", "s"], &["wd"]);
    dq.attribute = vec![int_attr("axis", 0), int_attr("block_size", 3)];
    model(
        vec![dq, node("MatMul", "mm", &["x", "wd"], &["y"])],
        vec![value_info("x", DataType::Float, &[1, 4])],
        vec![value_info("y", DataType::Float, &[1, 2])],
        vec![w, f32_init("s", &[2, 2], &[0.5, 1.0, 2.0, 4.0])],
        opset,
    )
}

#[test]
fn quantized_weights_stay_quantized() {
    let m = import(&int4_weight_model(21)).unwrap();
    let f = m.entry().unwrap();
    let kinds: Vec<&str> = f.ops().iter().map(|&o| f.op(o).kind.name()).collect();
    assert_eq!(kinds, ["constant", "constant", "dequantize", "matmul"]);
    let w = f.result(f.ops()[0]);
    assert_eq!(f.ty(w).to_string(), "tensor<4x2xi4>");
    // no float constant holds the weight's values
    assert!(f
        .ops()
        .iter()
        .all(|&o| !matches!(f.op(o).kind, OpKind::Constant(_))
            || f.ty(f.result(o)).elem != ElemType::F32
            || f.ty(f.result(o)).shape != [4, 2]));
    // blocked along axis 0 in blocks of 3 (the last block has one row)
    let x = Tensor::from_f64(ElemType::F32, vec![1, 4], &[1.0, 1.0, 1.0, 1.0]).unwrap();
    let out = run_function(f, &[("x".into(), x)]).unwrap();
    let col0 = (1.0 + 3.0 + 7.0) * 0.5 + 0.0 * 2.0;
    let col1 = (-2.0 - 4.0 - 8.0) * 1.0 + 5.0 * 4.0;
    assert_eq!(out[0].1.to_f64(), [col0, col1]);
}

#[test]
fn blocked_quantization_needs_opset_21() {
    // At opset 19 DequantizeLinear has no block_size: the 2-D scale is wrong.
    let e = import_err(&int4_weight_model(19));
    assert!(
        e.contains("node 'dq' (DequantizeLinear, domain ai.onnx, opset 19)"),
        "{e}"
    );
}

#[test]
fn truncated_and_corrupt_protobufs_are_errors() {
    let bytes = linear().encode_to_vec();
    for n in 0..bytes.len() {
        // Every prefix either imports (a prefix can be a valid message) or
        // fails with one line.
        if let Err(e) = import_bytes(&bytes[..n], None) {
            assert!(!e.to_string().contains('\n'));
        }
    }
    let e = import_bytes(&[0xFF, 0xFF, 0xFF], None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("not a valid ONNX model: the protobuf does not decode"),
        "{e}"
    );
    let e = import_bytes(&[], None).unwrap_err().to_string();
    assert_eq!(e, "not a valid ONNX model: it has no graph");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn flipped_bytes_never_panic(pos in 0usize..200, byte in any::<u8>()) {
        let mut bytes = int4_weight_model(21).encode_to_vec();
        let i = pos % bytes.len();
        bytes[i] = byte;
        let _ = import_bytes(&bytes, None);
    }
}

#[test]
fn unknown_op_names_node_domain_and_opset() {
    let mut m = linear();
    let g = m.graph.as_mut().unwrap();
    g.node[1].op_type = Some("FancyAdd".into());
    let e = import_err(&m);
    assert_eq!(
        e,
        "node '/fc/Add' (FancyAdd, domain ai.onnx, opset 17): unsupported operator"
    );
    let mut m = linear();
    m.graph.as_mut().unwrap().node[1].domain = Some("com.example".into());
    let e = import_err(&m);
    assert!(
        e.contains("domain com.example, opset none): unsupported operator domain 'com.example'"),
        "{e}"
    );
}

#[test]
fn unsupported_opsets_are_refused() {
    let mut m = linear();
    m.opset_import[0].version = Some(99);
    assert_eq!(
        import_err(&m),
        "node '/fc/MatMul' (MatMul, domain ai.onnx, opset 99): opset 99 of the default domain is not supported (lowbit knows opsets 13 to 28)"
    );
    m.opset_import[0].version = Some(11);
    assert!(import_err(&m).contains("opset 11 of the default domain is not supported"));
}

#[test]
fn missing_initializer_and_dangling_input() {
    let mut m = linear();
    m.graph.as_mut().unwrap().initializer.remove(0);
    assert_eq!(
        import_err(&m),
        "node '/fc/MatMul' (MatMul, domain ai.onnx, opset 17): input 'onnx::MatMul_1' is not produced by any earlier node, initializer or graph input"
    );
    let mut m = linear();
    m.graph.as_mut().unwrap().output[0].name = Some("nowhere".into());
    assert_eq!(
        import_err(&m),
        "graph output 'nowhere' is not produced by any node, initializer or input"
    );
}

#[test]
fn shape_mismatches_are_named() {
    let mut m = linear();
    m.graph.as_mut().unwrap().input[0] = value_info("input:0", DataType::Float, &[1, 5]);
    let e = import_err(&m);
    assert!(e.starts_with("node '/fc/MatMul' (MatMul, domain ai.onnx, opset 17): shape mismatch: inner dimensions differ"), "{e}");
    let mut m = linear();
    m.graph.as_mut().unwrap().output[0] = value_info("logits", DataType::Float, &[3, 1]);
    assert_eq!(
        import_err(&m),
        "graph output 'logits': shape mismatch: the graph declares shape [3, 1], the nodes compute tensor<1x3xf32>"
    );
    let mut m = linear();
    m.graph.as_mut().unwrap().input[0] = value_info("input:0", DataType::Float, &[-1, 2]);
    let e = import_err(&m);
    assert!(
        e.starts_with(
            "graph input 'input:0': dim 0 is symbolic ('batch'); lowbit needs static shapes"
        ),
        "{e}"
    );
    assert!(e.contains("make_dynamic_shape_fixed"), "{e}");
}

#[test]
fn reshape_needs_a_constant_shape() {
    let m = model(
        vec![node("Reshape", "rs", &["x", "s"], &["y"])],
        vec![
            value_info("x", DataType::Float, &[2, 3]),
            value_info("s", DataType::Int64, &[2]),
        ],
        vec![value_info("y", DataType::Float, &[3, 2])],
        vec![],
        21,
    );
    assert_eq!(
        import_err(&m),
        "node 'rs' (Reshape, domain ai.onnx, opset 21): the shape input must be a constant (an initializer or computed from constants): lowbit needs static shapes"
    );
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lowbit-onnx-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn external(t: &mut TensorProto, location: &str, offset: usize, len: usize) {
    let kv = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.float_data.clear();
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = vec![
        kv("location", location.into()),
        kv("offset", offset.to_string()),
        kv("length", len.to_string()),
    ];
}

#[test]
fn external_data_is_read_next_to_the_model() {
    let dir = temp_dir("ext");
    let mut m = linear();
    let w: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut blob = vec![0xAAu8; 16];
    blob.extend(&w);
    std::fs::write(dir.join("weights.bin"), &blob).unwrap();
    external(
        &mut m.graph.as_mut().unwrap().initializer[0],
        "weights.bin",
        16,
        24,
    );
    let path = dir.join("model.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let module = import_model(&path).unwrap();
    let f = module.entry().unwrap();
    let x = Tensor::from_f64(ElemType::F32, vec![1, 2], &[1.0, 0.0]).unwrap();
    let out = run_function(f, &[("input:0".into(), x)]).unwrap();
    assert_eq!(out[0].1.to_f64(), [1.5, 1.5, 3.0]);

    // the same model from bytes alone has nowhere to look
    let e = import_bytes(&m.encode_to_vec(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("external file 'weights.bin', but the model was not loaded from a file"),
        "{e}"
    );

    std::fs::remove_file(dir.join("weights.bin")).unwrap();
    let e = import_model(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: initializer 'onnx::MatMul_1': external data file '",
            path.display()
        )),
        "{e}"
    );
    assert!(e.contains("weights.bin"), "{e}");

    std::fs::write(dir.join("weights.bin"), &blob[..20]).unwrap();
    let e = import_model(&path).unwrap_err().to_string();
    assert!(
        e.contains("offset 16 and length 24 run past its end (20 bytes)"),
        "{e}"
    );

    external(
        &mut m.graph.as_mut().unwrap().initializer[0],
        "../secret.bin",
        0,
        24,
    );
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let e = import_model(&path).unwrap_err().to_string();
    assert!(
        e.contains("must be a relative path inside the model's directory"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_model_file_is_named() {
    let e = import_model(Path::new("/nonexistent/m.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot read '/nonexistent/m.onnx'"), "{e}");
}

#[test]
fn shape_arithmetic_folds_and_vectors_matmul() {
    // Shape -> Gather -> Concat -> Reshape, and a rank-1 MatMul operand.
    let i64_init = |name: &str, v: &[i64]| TensorProto {
        name: Some(name.into()),
        dims: vec![v.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        int64_data: v.to_vec(),
        ..TensorProto::default()
    };
    let mut gather = node("Gather", "g", &["shape", "idx"], &["d0"]);
    gather.attribute = vec![int_attr("axis", 0)];
    let mut concat = node("Concat", "c", &["d0", "minus1"], &["target"]);
    concat.attribute = vec![int_attr("axis", 0)];
    let m = model(
        vec![
            node("Shape", "sh", &["x"], &["shape"]),
            gather,
            concat,
            node("Reshape", "rs", &["x", "target"], &["flat"]),
            node("MatMul", "mv", &["flat", "v"], &["y"]),
        ],
        vec![value_info("x", DataType::Float, &[2, 3, 2])],
        vec![value_info("y", DataType::Float, &[2])],
        vec![
            i64_init("idx", &[0]),
            i64_init("minus1", &[-1]),
            f32_init("v", &[6], &[1., 0., 0., 0., 0., 1.]),
        ],
        21,
    );
    let module = import(&m).unwrap();
    let f = module.entry().unwrap();
    let kinds: Vec<&str> = f.ops().iter().map(|&o| f.op(o).kind.name()).collect();
    // the shape computation is gone; the vector became a [6, 1] constant
    assert_eq!(kinds, ["reshape", "constant", "matmul", "reshape"]);
    let x = Tensor::from_f64(
        ElemType::F32,
        vec![2, 3, 2],
        &(0..12).map(f64::from).collect::<Vec<_>>(),
    )
    .unwrap();
    let out = run_function(f, &[("x".into(), x)]).unwrap();
    assert_eq!(out[0].1.shape, [2]);
    assert_eq!(out[0].1.to_f64(), [0.0 + 5.0, 6.0 + 11.0]);
}

#[test]
fn empty_initializers_with_huge_dims_do_not_overflow() {
    // Found by the fuzzer: the element count of [2^40, 2^40, 0] overflowed
    // before the 0 was seen.
    for dims in [vec![1i64 << 40, 1 << 40, 0], vec![0, 1 << 40, 1 << 40]] {
        let mut m = linear();
        let g = m.graph.as_mut().unwrap();
        g.initializer.push(TensorProto {
            name: Some("empty".into()),
            dims,
            data_type: Some(DataType::Float as i32),
            ..TensorProto::default()
        });
        g.node[1].input[1] = "empty".into();
        let _ = import(&m);
    }
}

#[test]
fn slicing_an_empty_dim_backwards_is_empty() {
    // Found by the fuzzer: clamping a negative-step start into an empty dim.
    let i64_init = |name: &str, v: i64| TensorProto {
        name: Some(name.into()),
        dims: vec![1],
        data_type: Some(DataType::Int64 as i32),
        int64_data: vec![v],
        ..TensorProto::default()
    };
    let m = model(
        vec![node("Slice", "sl", &["x", "st", "en", "ax", "sp"], &["y"])],
        vec![value_info("x", DataType::Float, &[0, 3])],
        vec![value_info("y", DataType::Float, &[0, 3])],
        vec![
            i64_init("st", -1),
            i64_init("en", -100),
            i64_init("ax", 0),
            i64_init("sp", -1),
        ],
        21,
    );
    let module = import(&m).unwrap();
    let f = module.entry().unwrap();
    assert_eq!(f.ty(f.outputs[0].1).to_string(), "tensor<0x3xf32>");
}

fn cast_to_bool_model(dt: DataType, n: i64) -> ModelProto {
    let mut c = node("Cast", "to_bool", &["x"], &["y"]);
    c.attribute
        .push(int_attr("to", DataType::Bool as i32 as i64));
    model(
        vec![c],
        vec![value_info("x", dt, &[n])],
        vec![value_info("y", DataType::Bool, &[n])],
        vec![],
        21,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any f32 bit pattern (NaNs, infinities, subnormals, ±0): true iff
    /// the value is not ±0.
    #[test]
    fn cast_f32_to_bool_is_nonzero(bits in prop::collection::vec(any::<u32>(), 1..16), zero in any::<bool>()) {
        let mut bits = bits;
        if zero {
            bits[0] &= 0x8000_0000;
        }
        let m = import(&cast_to_bool_model(DataType::Float, bits.len() as i64)).unwrap();
        let x = Tensor { elem: ElemType::F32, shape: vec![bits.len() as u64], codes: bits.iter().map(|&b| b as u64).collect() };
        let out = run_function(m.entry().unwrap(), &[("x".into(), x)]).unwrap();
        let want: Vec<u64> = bits.iter().map(|&b| (f32::from_bits(b) != 0.0 || f32::from_bits(b).is_nan()) as u64).collect();
        prop_assert_eq!(&out[0].1.codes, &want);
    }

    /// Every int8 and int64 edge: true iff nonzero (the minimum included).
    #[test]
    fn cast_ints_to_bool_is_nonzero(v in prop::collection::vec(any::<i64>(), 1..16)) {
        let mut v = v;
        v[0] = [i64::MIN, 0, -1, 1][v.len() % 4];
        for (dt, elem, bits) in [(DataType::Int64, ElemType::I64, 64), (DataType::Int8, ElemType::I8, 8)] {
            let m = import(&cast_to_bool_model(dt, v.len() as i64)).unwrap();
            let vals: Vec<i64> = v.iter().map(|&x| if bits == 8 { x as i8 as i64 } else { x }).collect();
            let codes = vals.iter().map(|&x| elem.encode_int(x as i128, lowbit_ir::Overflow::Wrap)).collect();
            let x = Tensor { elem, shape: vec![v.len() as u64], codes };
            let out = run_function(m.entry().unwrap(), &[("x".into(), x)]).unwrap();
            let want: Vec<u64> = vals.iter().map(|&x| (x != 0) as u64).collect();
            prop_assert_eq!(&out[0].1.codes, &want);
        }
    }
}

fn u8_init(name: &str, dims: &[i64], vals: &[u8]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Uint8 as i32),
        raw_data: Some(vals.to_vec().into()),
        ..TensorProto::default()
    }
}

/// `MatMulNBits` with K = 32, N = 2, block 16 and the given zero points
/// and g_idx initializers.
fn nbits_model(zp: Option<TensorProto>, g_idx: Option<TensorProto>) -> ModelProto {
    let mut inputs = vec!["a", "b", "s"];
    let mut inits = vec![
        u8_init("b", &[2, 2, 8], &[0x21; 32]),
        f32_init("s", &[4], &[0.5, 0.25, 1.0, 2.0]),
    ];
    match &zp {
        Some(z) => inputs.push(z.name()),
        None => inputs.push(""),
    }
    if let Some(g) = &g_idx {
        inputs.push(g.name());
    }
    let mut n = node("MatMulNBits", "mmnb", &inputs, &["y"]);
    n.domain = Some("com.microsoft".into());
    for (k, v) in [("K", 32), ("N", 2), ("bits", 4), ("block_size", 16)] {
        n.attribute.push(int_attr(k, v));
    }
    inits.extend(zp);
    inits.extend(g_idx);
    let mut m = model(
        vec![n],
        vec![value_info("a", DataType::Float, &[1, 32])],
        vec![value_info("y", DataType::Float, &[1, 2])],
        inits,
        21,
    );
    m.opset_import.push(OperatorSetIdProto {
        domain: Some("com.microsoft".into()),
        version: Some(1),
    });
    m
}

fn i32_init(name: &str, vals: &[i32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![vals.len() as i64],
        data_type: Some(DataType::Int32 as i32),
        int32_data: vals.to_vec(),
        ..TensorProto::default()
    }
}

#[test]
fn matmulnbits_float_zero_points_and_g_idx() {
    let ones = Tensor::from_f64(ElemType::F32, vec![1, 32], &[1.0; 32]).unwrap();
    let run = |m: &ModelProto| {
        let m = import(m).unwrap();
        run_function(m.entry().unwrap(), &[("a".into(), ones.clone())]).unwrap()[0]
            .1
            .to_f64()
    };
    // Codes alternate 1, 2 (byte 0x21), so each block of 16 sums to 24.
    let zp = f32_init("zp", &[4], &[1.0, 2.0, 0.5, 15.0]);
    let y = run(&nbits_model(Some(zp), None));
    assert_eq!(
        y,
        [
            (24.0 - 16.0) * 0.5 + (24.0 - 32.0) * 0.25,
            (24.0 - 8.0) + (24.0 - 240.0) * 2.0
        ]
    );
    // g_idx equal to i / 16 is the plain layout; swapping the groups swaps
    // which scales and zero points each half of K uses.
    let zp = f32_init("zp", &[4], &[1.0, 2.0, 3.0, 4.0]);
    let ident: Vec<i32> = (0..32).map(|i| i / 16).collect();
    let swapped: Vec<i32> = (0..32).map(|i| 1 - i / 16).collect();
    let plain = run(&nbits_model(Some(zp.clone()), None));
    assert_eq!(
        run(&nbits_model(Some(zp.clone()), Some(i32_init("g", &ident)))),
        plain
    );
    let y = run(&nbits_model(Some(zp), Some(i32_init("g", &swapped))));
    assert_eq!(
        y,
        [
            (24.0 - 32.0) * 0.25 + (24.0 - 16.0) * 0.5,
            (24.0 - 64.0) * 2.0 + (24.0 - 48.0)
        ]
    );
}

/// Where the importer made quantized data float: (op name, note node,
/// note op type), in op order.
fn notes_of(m: &Module) -> Vec<(String, String, String)> {
    let f = m.entry().unwrap();
    f.notes_in_order()
        .into_iter()
        .map(|(op, n)| {
            (
                f.op(op).kind.name().to_string(),
                n.node.clone(),
                n.op_type.clone(),
            )
        })
        .collect()
}

#[test]
fn float_codes_are_noted_and_only_then() {
    // Integral float zero points become u4 codes: nothing is made float.
    let zp = f32_init("zp", &[4], &[1.0, 2.0, 3.0, 15.0]);
    assert_eq!(notes_of(&import(&nbits_model(Some(zp), None)).unwrap()), []);
    let m = import(&nbits_model(None, None)).unwrap();
    assert_eq!(notes_of(&m), []);
    // A fractional one makes the codes float: the cast, the dequantize and
    // the matmul say so, naming the node and the first offending value.
    let zp = f32_init("zp", &[4], &[1.0, 2.0, 0.5, 15.0]);
    let m = import(&nbits_model(Some(zp), None)).unwrap();
    let mmnb = |op: &str| {
        (
            op.to_string(),
            "mmnb".to_string(),
            "MatMulNBits".to_string(),
        )
    };
    assert_eq!(
        notes_of(&m),
        [mmnb("cast"), mmnb("dequantize"), mmnb("matmul")]
    );
    let f = m.entry().unwrap();
    let why = &f.notes_in_order()[0].1.why;
    assert!(
        why.contains(
            "zero_points 'zp' are not integers in [0, 15] (e.g. 0.5 for column 1, block 0)"
        ),
        "{why}"
    );
    // The note survives printing and parsing back.
    let text = lowbit_ir::printer::print_module(&m);
    let back = lowbit_ir::parser::parse_module(&text).unwrap();
    assert_eq!(back, m);
    assert_eq!(notes_of(&back), notes_of(&m));
}

#[test]
fn cast_of_a_low_bit_constant_to_float_is_noted() {
    let cast_model = |dt: DataType, raw: Vec<u8>| {
        let w = TensorProto {
            name: Some("w".into()),
            dims: vec![2, 2],
            data_type: Some(dt as i32),
            raw_data: Some(raw.into()),
            ..TensorProto::default()
        };
        let mut c = node("Cast", "deq", &["w"], &["wf"]);
        c.attribute.push(int_attr("to", DataType::Float as i64));
        let mm = node("MatMul", "mm", &["a", "wf"], &["y"]);
        model(
            vec![c, mm],
            vec![value_info("a", DataType::Float, &[1, 2])],
            vec![value_info("y", DataType::Float, &[1, 2])],
            vec![w],
            21,
        )
    };
    let m = import(&cast_model(DataType::Int8, vec![1, 2, 3, 0xFF])).unwrap();
    assert_eq!(notes_of(&m), [("cast".into(), "deq".into(), "Cast".into())]);
    let n = m.entry().unwrap().notes_in_order()[0].1.clone();
    assert_eq!(n.what, "the i8 constant 'w' [2, 2]");
    // Wide integers (shape arithmetic, indices) are not quantized data.
    let m = import(&cast_model(DataType::Int32, vec![0; 16])).unwrap();
    assert_eq!(notes_of(&m), []);
}

/// `MatMul(a, (Cast(w) - zp) * s)` with an int8 `w` [2, 2] = [[1, 2], [3,
/// -1]] and float constants `zp` and `s` of the given shapes.
fn hand_dequant_model(zp: TensorProto, s: TensorProto) -> ModelProto {
    let w = TensorProto {
        name: Some("w".into()),
        dims: vec![2, 2],
        data_type: Some(DataType::Int8 as i32),
        raw_data: Some(vec![1, 2, 3, 0xFF].into()),
        ..TensorProto::default()
    };
    let mut c = node("Cast", "deq", &["w"], &["wf"]);
    c.attribute.push(int_attr("to", DataType::Float as i64));
    let nodes = vec![
        c,
        node("Sub", "center", &["wf", "zp"], &["wc"]),
        node("Mul", "scale", &["wc", "s"], &["wd"]),
        node("MatMul", "mm", &["a", "wd"], &["y"]),
    ];
    model(
        nodes,
        vec![value_info("a", DataType::Float, &[1, 2])],
        vec![value_info("y", DataType::Float, &[1, 2])],
        vec![w, zp, s],
        21,
    )
}

#[test]
fn hand_written_dequantization_with_zero_points_stays_quantized() {
    let a = Tensor::from_f64(ElemType::F32, vec![1, 2], &[1.0, 2.0]).unwrap();
    let run = |m: &Module| {
        run_function(m.entry().unwrap(), &[("a".into(), a.clone())]).unwrap()[0]
            .1
            .to_f64()
    };
    let ops = |m: &Module| -> Vec<&'static str> {
        let f = m.entry().unwrap();
        f.ops().iter().map(|&o| f.op(o).kind.name()).collect()
    };
    // Integer zero point 1 (scalar), per-row scales [0.5, 2]: the weight
    // (w - 1) * s by rows is [[0, 0.5], [4, -4]]; y = a . that.
    let m = import(&hand_dequant_model(
        f32_init("zp", &[], &[1.0]),
        f32_init("s", &[2, 1], &[0.5, 2.0]),
    ))
    .unwrap();
    assert_eq!(
        ops(&m),
        ["constant", "constant", "constant", "dequantize", "matmul"]
    );
    assert_eq!(notes_of(&m), []);
    assert_eq!(run(&m), [8.0, -7.5]);
    // A zero point outside int8 (200) or fractional keeps the float
    // arithmetic, noted; the result is the same arithmetic either way.
    for z in [200.0, 0.5] {
        let m = import(&hand_dequant_model(
            f32_init("zp", &[], &[z]),
            f32_init("s", &[], &[1.0]),
        ))
        .unwrap();
        assert!(ops(&m).contains(&"cast"), "{z}: {:?}", ops(&m));
        assert_eq!(notes_of(&m), [("cast".into(), "deq".into(), "Cast".into())]);
        let z = f64::from(z);
        let want = [1.0 - z + 2.0 * (3.0 - z), 2.0 - z + 2.0 * (-1.0 - z)];
        assert_eq!(run(&m), want);
    }
}

/// `QLinearMatMul` of a u8 `[2, 3]` input and a u8 `[3, 2]` weight with
/// the given a_scale, a_zero_point and b_scale initializers.
fn qlinear_model(a_s: TensorProto, a_z: TensorProto, b_s: TensorProto) -> ModelProto {
    let inputs = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"];
    let inits = vec![
        a_s,
        a_z,
        u8_init("b", &[3, 2], &[1, 2, 3, 4, 5, 6]),
        b_s,
        u8_init("bz", &[], &[1]),
        f32_init("ys", &[], &[0.5]),
        u8_init("yz", &[], &[10]),
    ];
    model(
        vec![node("QLinearMatMul", "qlmm", &inputs, &["y"])],
        vec![value_info("a", DataType::Uint8, &[2, 3])],
        vec![value_info("y", DataType::Uint8, &[2, 2])],
        inits,
        21,
    )
}

#[test]
fn qlinear_matmul_per_row_a_and_per_column_b() {
    // Row r of a is 1s minus its zero point; b minus 1 is [[0, 1], [2, 3],
    // [4, 5]] with column sums 6 and 9.
    let m = qlinear_model(
        f32_init("as", &[2], &[1.0, 0.25]),
        u8_init("az", &[2], &[0, 3]),
        f32_init("bs", &[1, 2], &[0.5, 1.0]),
    );
    let a = Tensor {
        elem: ElemType::U8,
        shape: vec![2, 3],
        codes: vec![1, 1, 1, 5, 5, 5],
    };
    let m = import(&m).unwrap();
    let y = run_function(m.entry().unwrap(), &[("a".into(), a)]).unwrap()[0]
        .1
        .to_f64();
    // y = round(acc · a_s[r] · b_s[c] / 0.5) + 10; row 1 is (5 - 3) = 2
    // times row 0's product. Row 1, column 1: 2·9·0.25·1/0.5 = 9.
    assert_eq!(y, [6.0 + 10.0, 18.0 + 10.0, 3.0 + 10.0, 9.0 + 10.0]);
    // Shapes that are neither one value nor one per row/column are named.
    let e = import_err(&qlinear_model(
        f32_init("as", &[3], &[1.0, 1.0, 1.0]),
        u8_init("az", &[], &[0]),
        f32_init("bs", &[], &[1.0]),
    ));
    assert!(
        e.contains("node 'qlmm'")
            && e.contains("a_scale of shape [3] must be one value or one per row of a"),
        "{e}"
    );
    let e = import_err(&qlinear_model(
        f32_init("as", &[], &[1.0]),
        u8_init("az", &[], &[0]),
        f32_init("bs", &[2, 1], &[1.0, 1.0]),
    ));
    assert!(
        e.contains("b_scale of shape [2, 1] must be one value or one per column of b"),
        "{e}"
    );
}

#[test]
fn matmulnbits_bad_zero_points_and_g_idx_are_named() {
    let bad = |zp, g| import_err(&nbits_model(zp, g));
    let e = bad(Some(f32_init("zp", &[3], &[1.0, 2.0, 3.0])), None);
    assert!(e.starts_with("node 'mmnb' (MatMulNBits, domain com.microsoft, opset 1): float zero_points must have 4 elements"), "{e}");
    let mut g: Vec<i32> = vec![0; 32];
    g[5] = 2;
    let e = bad(None, Some(i32_init("g", &g)));
    assert!(
        e.contains("node 'mmnb'") && e.contains("g_idx[5] = 2 is not a group index in [0, 2)"),
        "{e}"
    );
    let e = bad(None, Some(i32_init("g", &[0; 31])));
    assert!(
        e.contains("node 'mmnb'") && e.contains("g_idx must be int32 or int64 [32]"),
        "{e}"
    );
}

#[test]
fn norm_extra_outputs() {
    let ln = |op: &str, outs: &[&str], stash: Option<i64>| {
        let mut n = node(op, "norm", &["x", "g"], outs);
        n.attribute.extend(stash.map(|s| int_attr("stash_type", s)));
        let mut outputs = vec![value_info("y", DataType::Float, &[2, 2])];
        if outs.len() > 2 {
            outputs.push(value_info("inv", DataType::Float, &[2, 1]));
        }
        model(
            vec![n],
            vec![value_info("x", DataType::Float, &[2, 2])],
            outputs,
            vec![f32_init("g", &[2], &[1.0, 1.0])],
            23,
        )
    };
    let m = import(&ln("LayerNormalization", &["y", "", "inv"], None)).unwrap();
    let x = Tensor::from_f64(ElemType::F32, vec![2, 2], &[1.0, 3.0, -2.0, 2.0]).unwrap();
    let out = run_function(m.entry().unwrap(), &[("x".into(), x)]).unwrap();
    let inv = &out[1].1;
    assert_eq!(inv.shape, [2, 1]);
    let want = [1.0 / (1.0f64 + 1e-5).sqrt(), 1.0 / (4.0f64 + 1e-5).sqrt()];
    assert_eq!(inv.to_f64(), want.map(|v| v as f32 as f64));
    let e = import_err(&ln("RMSNormalization", &["y", "inv"], None));
    assert!(e.starts_with("node 'norm' (RMSNormalization, domain ai.onnx, opset 23): RMSNormalization has only one output"), "{e}");
    let e = import_err(&ln("LayerNormalization", &["y", "", "inv"], Some(7)));
    assert!(
        e.contains("node 'norm'") && e.contains("stash_type 7 is not a float type"),
        "{e}"
    );
}

/// Runs a one-input model on the interpreter and returns its outputs.
fn run_one(m: &ModelProto, x: Tensor) -> Vec<Tensor> {
    let m = import(m).unwrap();
    run_function(m.entry().unwrap(), &[("x".into(), x)])
        .unwrap()
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

fn f32_tensor(vals: &[f32]) -> Tensor {
    let v: Vec<f64> = vals.iter().map(|&v| v as f64).collect();
    Tensor::from_f64(ElemType::F32, vec![vals.len() as u64], &v).unwrap()
}

/// `DynamicQuantizeLinear` as onnxruntime computes it: the f32 scale
/// `(max − min) / 255`, the zero point `round(−min / scale)` and the codes
/// `round(x / scale) + zp`, every quotient an f32 division (here computed
/// with Rust's own f32 arithmetic), and scale 1 for an all-zero input.
#[test]
fn dynamic_quantize_linear_divides_in_f32() {
    let m = model(
        vec![node(
            "DynamicQuantizeLinear",
            "dql",
            &["x"],
            &["y", "s", "z"],
        )],
        vec![value_info("x", DataType::Float, &[6])],
        vec![
            value_info("y", DataType::Uint8, &[6]),
            value_info("s", DataType::Float, &[]),
            value_info("z", DataType::Uint8, &[]),
        ],
        vec![],
        21,
    );
    let (lo, hi) = (-3.7183f32, 5.1234f32);
    let s = (hi - lo) / 255.0;
    let zp = (-(lo / s)).round_ties_even().clamp(0.0, 255.0);
    // Values whose f32 quotient is a tie, and whose f64 quotient is not
    // (so an f64 division would round them the other way).
    let ties: Vec<f32> = [17.5f64, 100.5, 180.5, 3.5]
        .iter()
        .map(|k| ((k - zp as f64) * s as f64) as f32)
        .collect();
    let f64_codes_differ = ties
        .iter()
        .filter(|&&x| (x as f64 / s as f64).round_ties_even() != (x / s).round_ties_even() as f64)
        .count();
    assert!(f64_codes_differ > 0, "no discriminating tie among {ties:?}");
    let xs = [lo, hi, ties[0], ties[1], ties[2], ties[3]];
    let out = run_one(&m, f32_tensor(&xs));
    assert_eq!(out[1].to_f64(), [s as f64]);
    assert_eq!(out[2].to_i128().unwrap(), [zp as i128]);
    let want: Vec<i128> = xs
        .iter()
        .map(|&x| ((x / s).round_ties_even() + zp).clamp(0.0, 255.0) as i128)
        .collect();
    assert_eq!(out[0].to_i128().unwrap(), want);
    // All zeros: scale 1 (onnxruntime), zero point 0, codes 0.
    let out = run_one(&m, f32_tensor(&[0.0; 6]));
    assert_eq!(out[1].to_f64(), [1.0]);
    assert_eq!(out[2].to_i128().unwrap(), [0]);
    assert_eq!(out[0].to_i128().unwrap(), [0; 6]);
}

/// A float8 `y_zero_point` only names the output type: onnxruntime ignores
/// its value, and so does the importer (a misshapen one is still an error).
#[test]
fn quantize_linear_float8_zero_point_value_is_ignored() {
    let zp = |dims: &[i64], n: usize| TensorProto {
        name: Some("z".into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float8e4m3fn as i32),
        // E4M3FN code 0x40 is 2.0.
        int32_data: vec![0x40; n],
        ..TensorProto::default()
    };
    let m = |z: TensorProto| {
        model(
            vec![node("QuantizeLinear", "q", &["x", "s", "z"], &["y"])],
            vec![value_info("x", DataType::Float, &[4])],
            vec![value_info("y", DataType::Float8e4m3fn, &[4])],
            vec![f32_init("s", &[], &[0.1]), z],
            21,
        )
    };
    // 0.10625f32 / 0.1f32 is 1.0625 in f32: the E4M3 tie between 1 and
    // 1.125 goes to 1 (the exact quotient would give 1.125).
    let out = run_one(&m(zp(&[], 1)), f32_tensor(&[0.0, 1.0, 0.10625, -0.3]));
    let want: Vec<f64> = [0.0f32, 1.0, 0.10625, -0.3]
        .iter()
        .map(|&x| {
            let q = x / 0.1f32;
            let e = ElemType::Float(lowbit_numerics::FloatFormat::F8E4M3FN);
            e.decode(e.encode(q as f64, lowbit_numerics::Rounding::NearestEven, true))
        })
        .collect();
    assert_eq!(want[2], 1.0);
    assert_eq!(out[0].to_f64(), want);
    let e = import_err(&m(zp(&[2], 2)));
    assert!(
        e.contains("node 'q'") && e.contains("y_zero_point has shape [2] but y_scale has []"),
        "{e}"
    );
}

/// An initializer in `raw_data` (moved into the IR constant as bytes) and
/// the same tensor in a typed field (decoded to a `Tensor`) import to the
/// same module, reshaped by a `Reshape` (which shares the bytes) and used
/// directly: int4 with an odd count and set padding bits, int8, f16.
#[test]
fn raw_and_typed_initializers_import_alike() {
    // (type, dims, raw_data, int32_data, Reshape target)
    type Case = (DataType, Vec<i64>, Vec<u8>, Vec<i32>, Vec<i64>);
    let cases: [Case; 3] = [
        // 9 int4 codes, low nibble first; the last byte's high nibble is
        // padding, set here (ONNX says 0), which the IR clears.
        (
            DataType::Int4,
            vec![3, 3],
            vec![0x21, 0x43, 0x65, 0x87, 0xF9],
            vec![0x21, 0x43, 0x65, 0x87, 0x09],
            vec![9],
        ),
        (
            DataType::Int8,
            vec![5],
            vec![1, 0xFF, 0x80, 0x7F, 0],
            vec![1, -1, -128, 127, 0],
            vec![1, 5],
        ),
        (
            DataType::Float16,
            vec![3],
            vec![0x00, 0x3C, 0x00, 0xBC, 0x01, 0x7C],
            vec![0x3C00, 0xBC00, 0x7C01],
            vec![3, 1],
        ),
    ];
    for (dt, dims, raw, typed, new_shape) in cases {
        let build = |w: TensorProto| {
            let shape = TensorProto {
                name: Some("shape".into()),
                dims: vec![new_shape.len() as i64],
                data_type: Some(DataType::Int64 as i32),
                int64_data: new_shape.clone(),
                ..TensorProto::default()
            };
            model(
                vec![node("Reshape", "r", &["w", "shape"], &["y"])],
                vec![],
                vec![value_info("y", dt, &new_shape), value_info("w", dt, &dims)],
                vec![w, shape],
                21,
            )
        };
        let base = TensorProto {
            name: Some("w".into()),
            dims: dims.clone(),
            data_type: Some(dt as i32),
            ..TensorProto::default()
        };
        let from_raw = import(&build(TensorProto {
            raw_data: Some(raw.into()),
            ..base.clone()
        }))
        .unwrap();
        let from_typed = import(&build(TensorProto {
            int32_data: typed,
            ..base
        }))
        .unwrap();
        assert_eq!(from_raw, from_typed, "{dt:?}");
        assert_eq!(from_raw.entry().unwrap().ops().len(), 2, "{dt:?}");
    }
}
