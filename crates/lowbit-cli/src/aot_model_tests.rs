//! Compiled models against the interpreter: each model is compiled with
//! [`compile_model`], linked as one object ([`link_object`]) with a small
//! generated C program holding the inputs, run, and its printed integer
//! outputs compared bit for bit with the interpreter's. Covers what the
//! lit tests (which take inputs from `.npy` files) cannot: `b1`
//! activations (W1A1), and `u8` activations passed to the kernel without a
//! copy, with a `reshape` of an integer result; and refusals.

use super::*;
use lowbit::interp::run_function;
use lowbit::ir::parser::parse_module;
use lowbit::ir::testing::Rng;

#[test]
fn c_identifiers_are_valid() {
    assert_eq!(c_ident("mlp"), "mlp");
    assert_eq!(c_ident("my-model.v2"), "my_model_v2");
    assert_eq!(c_ident("9lives"), "_9lives");
    assert_eq!(c_ident(""), "_");
}

fn host() -> CpuTarget {
    CpuTarget::host().expect("host target")
}

/// Integer values of `t` as the C program holds them (`b1` as its codes).
fn c_values(t: &Tensor) -> Vec<i128> {
    if t.elem == ElemType::Bipolar {
        t.codes.iter().map(|&c| i128::from(c as u8)).collect()
    } else {
        t.to_i128().expect("integer tensor")
    }
}

/// Compiles `src`, runs it on `inputs` through a C program and returns
/// each output's printed values, with the interpreter's.
fn aot_and_interp(src: &str, inputs: &[(String, Tensor)]) -> (Vec<Vec<i128>>, Vec<Vec<i128>>) {
    let module = parse_module(src).expect("parses");
    let f = &module.functions[0];
    let a = compile_model(&module, "t", &host(), Emit::Obj).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!(
        "lowbit-aot-test-{}-{}",
        std::process::id(),
        f.ops().len() * 1000 + src.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    link_object(&a, &dir.join("libt.o"), &dir.join("libt.h")).unwrap();
    let mut c = String::from("#include <stdio.h>\n#include \"libt.h\"\nint main(void) {\n");
    let mut args = Vec::new();
    for (i, (_, t)) in inputs.iter().enumerate() {
        let vals: Vec<String> = c_values(t).iter().map(|v| v.to_string()).collect();
        c.push_str(&format!(
            "  static const lowbit_t_in{i}_t x{i}[] = {{{}}};\n",
            vals.join(", ")
        ));
        args.push(format!("x{i}"));
    }
    for i in 0..f.outputs.len() {
        c.push_str(&format!(
            "  static lowbit_t_out{i}_t y{i}[LOWBIT_T_OUT{i}_ELEMS];\n"
        ));
        args.push(format!("y{i}"));
    }
    c.push_str(&format!(
        "  if (lowbit_t_run({})) return 1;\n",
        args.join(", ")
    ));
    for i in 0..f.outputs.len() {
        c.push_str(&format!(
            "  for (int i = 0; i < LOWBIT_T_OUT{i}_ELEMS; i++) printf(\"%lld \", (long long)y{i}[i]);\n  printf(\"\\n\");\n"
        ));
    }
    c.push_str("  return 0;\n}\n");
    std::fs::write(dir.join("main.c"), c).unwrap();
    let exe = dir.join("main");
    let cc = std::process::Command::new("cc")
        .args(["-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(dir.join("main.c"))
        .arg(dir.join("libt.o"))
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = std::process::Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
    let got: Vec<Vec<i128>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    let want = run_function(f, inputs)
        .unwrap()
        .iter()
        .map(|(_, t)| t.to_i128().unwrap())
        .collect();
    (got, want)
}

fn random(rng: &mut Rng, e: ElemType, shape: &[u64]) -> Tensor {
    let n: u64 = shape.iter().product();
    let codes = (0..n).map(|_| rng.next_u64() & e.code_mask()).collect();
    Tensor::new(e, shape.to_vec(), codes).unwrap()
}

fn dense(t: &Tensor) -> String {
    let v = t.to_i128().unwrap();
    let cols = t.shape[1] as usize;
    let rows: Vec<String> = v
        .chunks(cols)
        .map(|r| {
            let r: Vec<String> = r.iter().map(|x| x.to_string()).collect();
            format!("[{}]", r.join(", "))
        })
        .collect();
    format!("[{}]", rows.join(", "))
}

#[test]
fn w1a1_model_is_bit_exact() {
    // k = 300: more than one 256-bit block, the last one partial.
    let mut rng = Rng::new(21);
    let w = random(&mut rng, ElemType::Bipolar, &[300, 5]);
    let x = random(&mut rng, ElemType::Bipolar, &[3, 300]);
    let src = format!(
        "module {{\n  func @main(%s: tensor<3x300xb1>) -> (y: tensor<3x5xi32>) {{\n    %w = constant dense<{}> : tensor<300x5xb1>\n    %y = matmul %s, %w : (tensor<3x300xb1>, tensor<300x5xb1>) -> tensor<3x5xi32>\n    return %y\n  }}\n}}\n",
        dense(&w)
    );
    let (got, want) = aot_and_interp(&src, &[("s".into(), x)]);
    assert_eq!(got, want);
}

#[test]
fn u8_model_with_zero_points_and_reshape_is_bit_exact() {
    // k = 64 (no padding: the input goes to the kernel as it is), a 3-D
    // activation, activation and weight zero points, an integer reshape.
    let mut rng = Rng::new(5);
    // Weights in -64..=63, so that w - 3 still fits the W8A8 kernel's i8
    // (else the matmul falls back to the bit-serial kernel).
    let w = random(
        &mut rng,
        ElemType::Int {
            bits: 7,
            signed: true,
        },
        &[64, 6],
    );
    let x = random(&mut rng, ElemType::U8, &[2, 2, 64]);
    let src = format!(
        "module {{\n  func @main(%u: tensor<2x2x64xu8>) -> (y: tensor<2x12xi32>) {{\n    %w = constant dense<{}> : tensor<64x6xi8>\n    %zx = constant dense<7> : tensor<u8>\n    %zw = constant dense<3> : tensor<i8>\n    %m = matmul_int %u, %w, %zx, %zw : (tensor<2x2x64xu8>, tensor<64x6xi8>, tensor<u8>, tensor<i8>) -> tensor<2x2x6xi32>\n    %y = reshape %m : (tensor<2x2x6xi32>) -> tensor<2x12xi32>\n    return %y\n  }}\n}}\n",
        dense(&w)
    );
    let (got, want) = aot_and_interp(&src, &[("u".into(), x)]);
    assert_eq!(got, want);
}

#[test]
fn bit_serial_models_are_bit_exact() {
    // k = 700: two 512-element plane blocks, the second partial.
    let mut rng = Rng::new(9);
    let u2 = ElemType::Int {
        bits: 2,
        signed: false,
    };
    let w = random(&mut rng, u2, &[700, 3]);
    let wb = random(&mut rng, ElemType::Bipolar, &[700, 4]);
    let a = random(&mut rng, ElemType::I8, &[3, 700]);
    let u = random(&mut rng, ElemType::U8, &[2, 700]);
    // i8 x u2 on the bit-serial schedule with zero points; b1 weights
    // times u8 activations (W1A8, bit-serial by type).
    let src = format!(
        "module {{\n  func @main(%a: tensor<3x700xi8>, %u: tensor<2x700xu8>) -> (y: tensor<3x3xi32>, z: tensor<2x4xi32>) {{\n    %w = constant dense<{}> : tensor<700x3xu2>\n    %za = constant dense<-5> : tensor<i8>\n    %zw = constant dense<1> : tensor<u2>\n    %y = matmul_int %a, %w, %za, %zw {{schedule = bit_serial}} : (tensor<3x700xi8>, tensor<700x3xu2>, tensor<i8>, tensor<u2>) -> tensor<3x3xi32>\n    %wb = constant dense<{}> : tensor<700x4xb1>\n    %z = matmul %u, %wb : (tensor<2x700xu8>, tensor<700x4xb1>) -> tensor<2x4xi32>\n    return %y, %z\n  }}\n}}\n",
        dense(&w),
        dense(&wb)
    );
    let (got, want) = aot_and_interp(&src, &[("a".into(), a), ("u".into(), u)]);
    assert_eq!(got, want);
}

#[test]
fn unsupported_ops_are_refused_by_name() {
    // An input type with no C buffer type.
    let src = "module {\n  func @main(%x: tensor<3x4xi2>) -> (y: tensor<3x2xi32>) {\n    %w = constant dense<[[1, 2], [3, 0], [2, 1], [0, 3]]> : tensor<4x2xu2>\n    %y = matmul_int %x, %w {schedule = bit_serial} : (tensor<3x4xi2>, tensor<4x2xu2>) -> tensor<3x2xi32>\n    return %y\n  }\n}\n";
    let m = parse_module(src).unwrap();
    let e = compile_model(&m, "t", &host(), Emit::Obj).err().unwrap();
    assert!(e.contains("input 'x' is tensor<3x4xi2>"), "{e}");
    // An i32 add of two run-time values is not a kernel epilogue, and the
    // driver adds f32 only.
    let src = "module {\n  func @main(%u: tensor<2x4xu8>) -> (y: tensor<2x2xi32>) {\n    %w = constant dense<[[1, 2], [3, 0], [2, 1], [0, 3]]> : tensor<4x2xi8>\n    %a = matmul %u, %w : (tensor<2x4xu8>, tensor<4x2xi8>) -> tensor<2x2xi32>\n    %b = matmul %u, %w : (tensor<2x4xu8>, tensor<4x2xi8>) -> tensor<2x2xi32>\n    %y = add %a, %b : (tensor<2x2xi32>, tensor<2x2xi32>) -> tensor<2x2xi32>\n    return %y\n  }\n}\n";
    let m = parse_module(src).unwrap();
    let e = compile_model(&m, "t", &host(), Emit::Obj).err().unwrap();
    assert!(
        e.contains("unsupported: 'add' at line 6") && e.contains("f32 values only"),
        "{e}"
    );
}
