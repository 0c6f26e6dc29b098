//! Compiled models against the interpreter: each model is compiled with
//! [`compile_model`], linked as one object ([`link_object`]) with a small
//! generated C program holding the inputs, run, and its printed integer
//! outputs compared bit for bit with the interpreter's. Covers what the
//! lit tests (which take inputs from `.npy` files) cannot: `b1`
//! activations (W1A1), and `u8` activations passed to the kernel without a
//! copy, with a `reshape` of an integer result; and refusals. The thread
//! pool is checked by C programs of their own ([`pool_program`]: 1 – 8
//! threads, repeated and concurrent calls, worker counts and sleep, fork,
//! a ThreadSanitizer build where `cc -fsanitize=thread` works; and a
//! `dlopen`/`dlclose` of the library).

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

/// The values of `t` as C initializers (`b1` as its codes, `f16`/`bf16`
/// as their bits, `f32` in
/// Rust's shortest round-trip form, which C reads back exactly).
fn c_values(t: &Tensor) -> Vec<String> {
    match t.elem {
        // b1 codes; f16/bf16 bits.
        ElemType::Bipolar | ElemType::F16 | ElemType::BF16 => {
            t.codes.iter().map(|&c| c.to_string()).collect()
        }
        ElemType::F32 => t
            .codes
            .iter()
            .map(|&c| format!("{:?}f", f32::from_bits(c as u32)))
            .collect(),
        _ => t
            .to_i128()
            .expect("integer tensor")
            .iter()
            .map(|v| v.to_string())
            .collect(),
    }
}

/// Named tensors: a run's inputs or outputs.
type Named = [(String, Tensor)];

/// A reference run of a function.
type Backend = fn(&Function, &Named) -> Vec<(String, Tensor)>;

/// The interpreter's outputs.
fn interp(f: &Function, inputs: &Named) -> Vec<(String, Tensor)> {
    run_function(f, inputs).unwrap()
}

/// `lowbit run --backend cpu`'s outputs (the same kernels, JIT-compiled).
fn jit(f: &Function, inputs: &Named) -> Vec<(String, Tensor)> {
    crate::cpu_run::run(f, inputs).unwrap().outputs
}

/// Compiles `src`, runs it on `inputs` through a C program and returns
/// each output's printed values (integer outputs), with the interpreter's.
fn aot_and_interp(src: &str, inputs: &[(String, Tensor)]) -> (Vec<Vec<i128>>, Vec<Vec<i128>>) {
    aot_and(src, inputs, interp)
}

/// [`aot_and_interp`] with the `reference` outputs.
fn aot_and(
    src: &str,
    inputs: &[(String, Tensor)],
    reference: Backend,
) -> (Vec<Vec<i128>>, Vec<Vec<i128>>) {
    aot_function_and(src, 0, 1, inputs, reference)
}

/// [`aot_and`] for the module's function `func` (its entry point
/// `lowbit_t_<name>_run` unless it is the first), its kernels split over
/// `threads` threads.
fn aot_function_and(
    src: &str,
    func: usize,
    threads: usize,
    inputs: &[(String, Tensor)],
    reference: Backend,
) -> (Vec<Vec<i128>>, Vec<Vec<i128>>) {
    let module = parse_module(src).expect("parses");
    let f = &module.functions[func];
    let stem = if func == 0 {
        "lowbit_t".to_string()
    } else {
        format!("lowbit_t_{}", c_ident(&f.name))
    };
    let upper = stem.to_uppercase();
    let a = compile_model(&module, "t", &host(), Emit::Obj).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!(
        "lowbit-aot-test-{}-{}",
        std::process::id(),
        f.ops().len() * 1000 + src.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    link_object(&a, &dir.join("libt.o"), &dir.join("libt.h")).unwrap();
    let mut c = String::from(
        "#include <stdio.h>\n#include <string.h>\n#include \"libt.h\"\nint main(void) {\n",
    );
    let mut args = Vec::new();
    for (i, (_, t)) in inputs.iter().enumerate() {
        let vals = c_values(t);
        c.push_str(&format!(
            "  static const {stem}_in{i}_t x{i}[] = {{{}}};\n",
            vals.join(", ")
        ));
        args.push(format!("x{i}"));
    }
    for i in 0..f.outputs.len() {
        c.push_str(&format!(
            "  static {stem}_out{i}_t y{i}[{upper}_OUT{i}_ELEMS];\n"
        ));
        args.push(format!("y{i}"));
    }
    c.push_str(&format!(
        "  if (lowbit_t_set_threads({threads})) return 1;\n  if ({stem}_run({})) return 1;\n",
        args.join(", ")
    ));
    for (i, (_, v)) in f.outputs.iter().enumerate() {
        // f32 outputs as their bits.
        let print = if f.ty(*v).elem == ElemType::F32 {
            format!("{{ uint32_t b; memcpy(&b, &y{i}[i], 4); printf(\"%u \", b); }}")
        } else {
            format!("printf(\"%lld \", (long long)y{i}[i]);")
        };
        c.push_str(&format!(
            "  for (int i = 0; i < {upper}_OUT{i}_ELEMS; i++) {print}\n  printf(\"\\n\");\n"
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
    let want = reference(f, inputs)
        .iter()
        .map(|(_, t)| match t.elem {
            ElemType::F32 => t.codes.iter().map(|&c| i128::from(c)).collect(),
            _ => t.to_i128().unwrap(),
        })
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
fn qmatmul_requantize_epilogue_equals_the_jit() {
    // The e-graph's qmatmul with bias, SiLU and a requantize to i8 (per
    // tensor scale, zero point 3): the driver's quantize equals the one
    // the JIT run does on the interpreter, on the same kernel output.
    let mut rng = Rng::new(17);
    let w = random(
        &mut rng,
        ElemType::Int {
            bits: 4,
            signed: true,
        },
        &[40, 6],
    );
    let x: Vec<u64> = (0..2 * 40)
        .map(|i| u64::from((((i * 37) % 41) as f32 / 8.0 - 2.5).to_bits()))
        .collect();
    let x = Tensor::new(ElemType::F32, vec![2, 40], x).unwrap();
    // i8 saturates at 127, u8 at 0 (SiLU goes down to -0.28).
    for (scale, out) in [("0.005", "i8"), ("0.02", "u8"), ("0.001", "i32")] {
        let src = format!(
            "module {{\n  func @main(%x: tensor<2x40xf32>) -> (q: tensor<2x6x{out}>) {{\n    %w = constant dense<{}> : tensor<40x6xi4>\n    %s = constant dense<[0.05, 0.1, 0.02, 0.03, 0.07, 0.04]> : tensor<6xf32>\n    %b = constant dense<[0.5, -0.25, 0.125, 1.0, -1.0, 0.0]> : tensor<6xf32>\n    %os = constant dense<{scale}> : tensor<f32>\n    %oz = constant dense<3> : tensor<{out}>\n    %q = qmatmul %x, %w, %s, %b, %os, %oz {{axis = 1, dequant_type = f32, bias = true, activation = silu, requant_type = f32, out_zero_point = true}} : (tensor<2x40xf32>, tensor<40x6xi4>, tensor<6xf32>, tensor<6xf32>, tensor<f32>, tensor<{out}>) -> tensor<2x6x{out}>\n    return %q\n  }}\n}}\n",
            dense(&w)
        );
        let (got, want) = aot_and(&src, &[("x".into(), x.clone())], jit);
        assert_eq!(got, want, "{out}");
        let (_, exact) = aot_and(&src, &[("x".into(), x.clone())], interp);
        // Within one unit of the interpreter (the kernel's f32 sum is
        // within its bound of the exact one).
        for (g, e) in got[0].iter().zip(&exact[0]) {
            assert!((g - e).abs() <= 1, "{out}: {g} vs {e}");
        }
    }
}

#[test]
fn half_activations_equal_the_jit() {
    // f16 and bf16 inputs (their bits in uint16_t), widened to f32 by the
    // driver as `GemmKernel::run` does: normals, subnormals, signed zeros;
    // ragged k = 40.
    let mut rng = Rng::new(3);
    let w = random(&mut rng, ElemType::I8, &[40, 5]);
    for half in ["f16", "bf16"] {
        let e: ElemType = half.parse().unwrap();
        let codes: Vec<u64> = (0..120u64)
            .map(|i| match i % 6 {
                0 => 0x8000,
                1 => 0x0001 + i,
                _ => loop {
                    let c = rng.next_u64() & 0xffff;
                    // Finite values of a moderate size.
                    if e.decode(c).is_finite() && e.decode(c).abs() < 100.0 {
                        break c;
                    }
                },
            })
            .collect();
        let x = Tensor::new(e, vec![3, 40], codes).unwrap();
        let src = format!(
            "module {{\n  func @main(%x: tensor<3x40x{half}>) -> (y: tensor<3x5xf32>) {{\n    %w = constant dense<{}> : tensor<40x5xi8>\n    %s = constant dense<[0.5, 0.25, 0.125, 1.0, 2.0]> : tensor<5xf32>\n    %d = dequantize %w, %s {{axis = 1}} : (tensor<40x5xi8>, tensor<5xf32>) -> tensor<40x5xf32>\n    %y = matmul %x, %d : (tensor<3x40x{half}>, tensor<40x5xf32>) -> tensor<3x5xf32>\n    return %y\n  }}\n}}\n",
            dense(&w)
        );
        let (got, want) = aot_and(&src, &[("x".into(), x)], jit);
        assert_eq!(got, want, "{half}");
    }
}

#[test]
fn driver_i32_add_and_relu_are_bit_exact() {
    // Two matmuls' i32 results added in the driver (not a kernel
    // epilogue: the bias is not a constant), wrapping, then a saturating
    // add of constants at both ends of i32, then a ReLU.
    let src = "module {\n  func @main(%u: tensor<2x4xu8>) -> (y: tensor<2x2xi32>) {\n    %w = constant dense<[[1, 2], [3, -4], [2, 1], [-7, 3]]> : tensor<4x2xi8>\n    %w2 = constant dense<[[5, -2], [3, 0], [-2, 1], [0, 3]]> : tensor<4x2xi8>\n    %a = matmul %u, %w : (tensor<2x4xu8>, tensor<4x2xi8>) -> tensor<2x2xi32>\n    %b = matmul %u, %w2 : (tensor<2x4xu8>, tensor<4x2xi8>) -> tensor<2x2xi32>\n    %s = add %a, %b : (tensor<2x2xi32>, tensor<2x2xi32>) -> tensor<2x2xi32>\n    %c = constant dense<[[2147483000, -2147483000], [2147480000, 5]]> : tensor<2x2xi32>\n    %w3 = add %s, %c : (tensor<2x2xi32>, tensor<2x2xi32>) -> tensor<2x2xi32>\n    %t = add %w3, %c {overflow = saturate} : (tensor<2x2xi32>, tensor<2x2xi32>) -> tensor<2x2xi32>\n    %y = relu %t : (tensor<2x2xi32>) -> tensor<2x2xi32>\n    return %y\n  }\n}\n";
    let u = Tensor::new(
        ElemType::U8,
        vec![2, 4],
        vec![255, 200, 3, 0, 17, 250, 255, 255],
    )
    .unwrap();
    let (got, want) = aot_and_interp(src, &[("u".into(), u)]);
    assert_eq!(got, want);
}

#[test]
fn unsupported_ops_are_refused_by_name() {
    // An input type with no C buffer type.
    let src = "module {\n  func @main(%x: tensor<3x4xi2>) -> (y: tensor<3x2xi32>) {\n    %w = constant dense<[[1, 2], [3, 0], [2, 1], [0, 3]]> : tensor<4x2xu2>\n    %y = matmul_int %x, %w {schedule = bit_serial} : (tensor<3x4xi2>, tensor<4x2xu2>) -> tensor<3x2xi32>\n    return %y\n  }\n}\n";
    let m = parse_module(src).unwrap();
    let e = compile_model(&m, "t", &host(), Emit::Obj).err().unwrap();
    assert!(e.contains("input 'x' is tensor<3x4xi2>"), "{e}");
    // A u8 add is not in the driver (f32 and i32 only).
    let src = "module {\n  func @main(%u: tensor<2x4xu8>) -> (y: tensor<2x4xu8>) {\n    %y = add %u, %u : (tensor<2x4xu8>, tensor<2x4xu8>) -> tensor<2x4xu8>\n    return %y\n  }\n}\n";
    let m = parse_module(src).unwrap();
    let e = compile_model(&m, "t", &host(), Emit::Obj).err().unwrap();
    assert!(
        e.contains("unsupported: 'add' at line 3") && e.contains("f32 and i32 values only"),
        "{e}"
    );
}

/// A two-layer model on the AMX-INT8 kernel: `i8` activations with a zero
/// point, ragged shapes (37 rows, k = 130, m = 70: a half panel pair), the
/// bias, ReLU and per-column requantize epilogue, then `u8` weights less
/// 128 (packed as `i8`).
fn amx_model(rng: &mut Rng) -> String {
    amx_model_of(rng, ("i8", 0), ("u8", 128))
}

/// [`amx_model`] with the first layer's weights of type `w1.0` less the
/// zero point `w1.1` and the second's `w2`.
fn amx_model_of(rng: &mut Rng, w1t: (&str, u64), w2t: (&str, u64)) -> String {
    let (e1, e2): (ElemType, ElemType) = (w1t.0.parse().unwrap(), w2t.0.parse().unwrap());
    let w1 = random(rng, e1, &[130, 70]);
    let w2 = random(rng, e2, &[70, 50]);
    let b1: Vec<String> = (0..70)
        .map(|i| (i * 7919 % 5000 - 2500).to_string())
        .collect();
    let mult: Vec<String> = (0..70).map(|i| (1000 + i * 37).to_string()).collect();
    let shift: Vec<String> = (0..70).map(|i| (18 + i % 4).to_string()).collect();
    format!(
        "module {{\n  func @main(%xq: tensor<37x130xi8>) -> (y: tensor<37x50xi32>) {{\n    %w1 = constant dense<{}> : tensor<130x70x{t1}>\n    %zx = constant dense<-3> : tensor<i8>\n    %zw = constant dense<{z1}> : tensor<{t1}>\n    %a = matmul_int %xq, %w1, %zx, %zw {{schedule = amx}} : (tensor<37x130xi8>, tensor<130x70x{t1}>, tensor<i8>, tensor<{t1}>) -> tensor<37x70xi32>\n    %b1 = constant dense<[{}]> : tensor<70xi32>\n    %ab = add %a, %b1 : (tensor<37x70xi32>, tensor<70xi32>) -> tensor<37x70xi32>\n    %ar = relu %ab : (tensor<37x70xi32>) -> tensor<37x70xi32>\n    %zh = constant dense<-5> : tensor<i8>\n    %h = requant_dyadic %ar, %zh {{axis = 1, multiplier = [{}], shift = [{}]}} : (tensor<37x70xi32>, tensor<i8>) -> tensor<37x70xi8>\n    %w2 = constant dense<{}> : tensor<70x50x{t2}>\n    %za = constant dense<0> : tensor<i8>\n    %zu = constant dense<{z2}> : tensor<{t2}>\n    %y = matmul_int %h, %w2, %za, %zu {{schedule = amx}} : (tensor<37x70xi8>, tensor<70x50x{t2}>, tensor<i8>, tensor<{t2}>) -> tensor<37x50xi32>\n    return %y\n  }}\n}}\n",
        dense(&w1),
        b1.join(", "),
        mult.join(", "),
        shift.join(", "),
        dense(&w2),
        t1 = w1t.0,
        z1 = w1t.1,
        t2 = w2t.0,
        z2 = w2t.1,
    )
}

#[test]
fn amx_models_run_on_amx_cpus_and_are_refused_elsewhere() {
    let mut rng = Rng::new(0xa4a);
    let src = amx_model(&mut rng);
    let m = parse_module(&src).unwrap();
    // Any host can compile for a CPU with AMX-INT8: both matmuls (the
    // first with its epilogue) are AMX kernels, and the driver asks for
    // the tile state.
    let spr = CpuTarget::named("x86_64", "sapphirerapids").unwrap();
    let a = compile_model(&m, "t", &spr, Emit::Asm).unwrap_or_else(|e| panic!("{e}"));
    let asm = String::from_utf8_lossy(&a.object);
    assert!(
        asm.matches("tdpbusd").count() >= 2,
        "no tdpbusd in the kernels"
    );
    assert!(a.driver.contains("lowbit_amx_ready() != 0) return 2;"));
    assert!(a.header.contains("Returns 2, computing nothing"));
    // A CPU without it: refused, naming the op.
    let v4 = CpuTarget::named("x86_64", "x86-64-v4").unwrap();
    let e = compile_model(&m, "t", &v4, Emit::Obj).err().unwrap();
    assert!(
        e.contains("'matmul_int' at line 6")
            && e.contains("schedule amx needs a CPU with AMX-INT8"),
        "{e}"
    );
    let xq = random(&mut rng, ElemType::I8, &[37, 130]);
    if host().has("amx-tile") && host().has("amx-int8") {
        for threads in [1, 3] {
            let (got, want) =
                aot_function_and(&src, 0, threads, &[("xq".into(), xq.clone())], interp);
            assert_eq!(got, want, "{threads} threads");
        }
    } else {
        let e = compile_model(&m, "t", &host(), Emit::Obj).err().unwrap();
        assert!(e.contains("needs a CPU with AMX-INT8"), "{e}");
    }
}

/// 4-bit weights on the AMX kernel stay 4-bit in the library: `i4`
/// with the epilogue, then `u4` less 8 (packed as `i4`); the kernels
/// split the nibbles (`vgf2p8affineqb` on a CPU with GFNI) and the
/// results are the interpreter's on AMX-INT8 hosts.
#[test]
fn amx_models_keep_4_bit_weights_4_bit() {
    let mut rng = Rng::new(0xa44);
    let src = amx_model_of(&mut rng, ("i4", 0), ("u4", 8));
    let m = parse_module(&src).unwrap();
    let spr = CpuTarget::named("x86_64", "sapphirerapids").unwrap();
    let a = compile_model(&m, "t", &spr, Emit::Asm).unwrap_or_else(|e| panic!("{e}"));
    let asm = String::from_utf8_lossy(&a.object);
    assert!(
        asm.matches("tdpbusd").count() >= 2,
        "no tdpbusd in the kernels"
    );
    assert!(asm.contains("vgf2p8affineqb"), "no nibble split");
    let xq = random(&mut rng, ElemType::I8, &[37, 130]);
    if host().has("amx-tile") && host().has("amx-int8") {
        for threads in [1, 3] {
            let (got, want) =
                aot_function_and(&src, 0, threads, &[("xq".into(), xq.clone())], interp);
            assert_eq!(got, want, "{threads} threads");
        }
    }
}

#[test]
fn every_function_gets_an_entry_point() {
    // Two functions sharing nothing but the library: @main (W8A8, ragged
    // k = 37) and @second.layer (W4A8, then an i32 add of a second
    // input), each run through its own entry point and compared with the
    // interpreter.
    let mut rng = Rng::new(9);
    let w = random(&mut rng, ElemType::I8, &[37, 5]);
    let w2 = random(
        &mut rng,
        ElemType::Int {
            bits: 4,
            signed: true,
        },
        &[20, 3],
    );
    let src = format!(
        "module {{\n  func @main(%x: tensor<2x37xu8>) -> (y: tensor<2x5xi32>) {{\n    %w = constant dense<{}> : tensor<37x5xi8>\n    %y = matmul %x, %w : (tensor<2x37xu8>, tensor<37x5xi8>) -> tensor<2x5xi32>\n    return %y\n  }}\n  func @second.layer(%a: tensor<3x20xi8>, %b: tensor<3x3xi32>) -> (z: tensor<3x3xi32>) {{\n    %w = constant dense<{}> : tensor<20x3xi4>\n    %m = matmul %a, %w : (tensor<3x20xi8>, tensor<20x3xi4>) -> tensor<3x3xi32>\n    %z = add %m, %b : (tensor<3x3xi32>, tensor<3x3xi32>) -> tensor<3x3xi32>\n    return %z\n  }}\n}}\n",
        dense(&w),
        dense(&w2)
    );
    let x = random(&mut rng, ElemType::U8, &[2, 37]);
    let (got, want) = aot_function_and(&src, 0, 1, &[("x".into(), x)], interp);
    assert_eq!(got, want);
    let a = random(&mut rng, ElemType::I8, &[3, 20]);
    let b = random(&mut rng, ElemType::I32, &[3, 3]);
    let (got, want) = aot_function_and(&src, 1, 1, &[("a".into(), a), ("b".into(), b)], interp);
    assert_eq!(got, want);
    // Both entry points are in the one header.
    let m = parse_module(&src).unwrap();
    let art = compile_model(&m, "t", &host(), Emit::Obj).unwrap();
    assert!(
        art.header
            .contains("int lowbit_t_run(const uint8_t *in0_x, int32_t *out0_y);"),
        "{}",
        art.header
    );
    assert!(
        art.header.contains("int lowbit_t_second_layer_run(const int8_t *in0_a, const int32_t *in1_b, int32_t *out0_z);"),
        "{}",
        art.header
    );
    assert!(art
        .header
        .contains("#define LOWBIT_T_SECOND_LAYER_IN1_ELEMS 9"));
}

#[test]
fn functions_with_the_same_c_name_are_refused() {
    let f = |name: &str| {
        format!("  func @{name}(%x: tensor<2xi32>) -> (y: tensor<2xi32>) {{\n    %y = relu %x : (tensor<2xi32>) -> tensor<2xi32>\n    return %y\n  }}\n")
    };
    let src = format!("module {{\n{}{}{}}}\n", f("main"), f("a.b"), f("a_b"));
    let m = parse_module(&src).unwrap();
    let e = compile_model(&m, "t", &host(), Emit::Obj).err().unwrap();
    assert!(
        e.contains("functions @a.b and @a_b would both have the C entry point lowbit_t_a_b_run"),
        "{e}"
    );
}

#[test]
fn compiling_twice_gives_the_same_bytes() {
    // The object, driver and header (and the data written beside them)
    // depend on the model only: no paths, times or hash-map order.
    let mut rng = Rng::new(3);
    let w = random(&mut rng, ElemType::I8, &[40, 9]);
    let src = format!(
        "module {{\n  func @main(%x: tensor<2x40xi8>) -> (y: tensor<2x9xi32>) {{\n    %w = constant dense<{}> : tensor<40x9xi8>\n    %b = constant dense<[1, 2, 3, 4, 5, 6, 7, 8, 9]> : tensor<9xi32>\n    %m = matmul %x, %w : (tensor<2x40xi8>, tensor<40x9xi8>) -> tensor<2x9xi32>\n    %y = add %m, %b : (tensor<2x9xi32>, tensor<9xi32>) -> tensor<2x9xi32>\n    return %y\n  }}\n}}\n",
        dense(&w)
    );
    let m = parse_module(&src).unwrap();
    let build = || {
        let a = compile_model(&m, "t", &host(), Emit::Obj).unwrap();
        let data = std::fs::read(a.dir.path.join("data.o")).unwrap();
        (a.object.clone(), a.driver.clone(), a.header.clone(), data)
    };
    let (first, second) = (build(), build());
    assert!(!first.3.is_empty());
    assert!(first == second, "two compiles of one model differ");
}

#[test]
fn kernels_split_over_threads_give_the_same_answer() {
    // Ragged m = 37 (8-row chunks, the last one 5 rows): a float kernel
    // with a bias and ReLU epilogue against the JIT (bit for bit, as
    // single-threaded), and a W8A8 kernel against the interpreter, on 1,
    // 2, 3 and 8 threads (more threads than chunks for the small m).
    let mut rng = Rng::new(17);
    let w = random(&mut rng, ElemType::I8, &[40, 37]);
    let b: Vec<String> = (0..37).map(|i| format!("{}.5", i as i64 - 18)).collect();
    let float = format!(
        "module {{\n  func @main(%x: tensor<3x40xf32>) -> (y: tensor<3x37xf32>) {{\n    %w = constant dense<{}> : tensor<40x37xi8>\n    %s = constant dense<0.125> : tensor<f32>\n    %d = dequantize %w, %s : (tensor<40x37xi8>, tensor<f32>) -> tensor<40x37xf32>\n    %m = matmul %x, %d : (tensor<3x40xf32>, tensor<40x37xf32>) -> tensor<3x37xf32>\n    %b = constant dense<[{}]> : tensor<37xf32>\n    %a = add %m, %b : (tensor<3x37xf32>, tensor<37xf32>) -> tensor<3x37xf32>\n    %y = relu %a : (tensor<3x37xf32>) -> tensor<3x37xf32>\n    return %y\n  }}\n}}\n",
        dense(&w),
        b.join(", ")
    );
    let x: Vec<u64> = (0..120)
        .map(|i| u64::from(((i as f32 - 60.0) * 0.37).to_bits()))
        .collect();
    let x = Tensor::new(ElemType::F32, vec![3, 40], x).unwrap();
    let int = format!(
        "module {{\n  func @main(%x: tensor<3x40xu8>) -> (y: tensor<3x37xi32>) {{\n    %w = constant dense<{}> : tensor<40x37xi8>\n    %y = matmul %x, %w : (tensor<3x40xu8>, tensor<40x37xi8>) -> tensor<3x37xi32>\n    return %y\n  }}\n}}\n",
        dense(&w)
    );
    let u = random(&mut rng, ElemType::U8, &[3, 40]);
    for threads in [1, 2, 3, 8] {
        let (got, want) = aot_function_and(&float, 0, threads, &[("x".into(), x.clone())], jit);
        assert_eq!(got, want, "float, {threads} threads");
        let (got, want) = aot_function_and(&int, 0, threads, &[("x".into(), u.clone())], interp);
        assert_eq!(got, want, "W8A8, {threads} threads");
    }
}

#[test]
fn requantize_roundings_and_wrapping_equal_the_interpreter() {
    // Small integer activations and weights with unit scales: the float
    // kernel's sums are exact integers, so the driver's requantize must
    // equal the interpreter's bit for bit. Output scales 2 and 4 make odd
    // sums ties (and quarters), 0.5 and 0.125 push past the i8 range
    // (saturated or wrapped), per column and per tensor, zero point 3 / -2.
    let mut rng = Rng::new(23);
    let w = random(
        &mut rng,
        ElemType::Int {
            bits: 4,
            signed: true,
        },
        &[40, 6],
    );
    let x: Vec<u64> = (0..3 * 40)
        .map(|_| u64::from(((rng.next_u64() % 7) as f32 - 3.0).to_bits()))
        .collect();
    let x = Tensor::new(ElemType::F32, vec![3, 40], x).unwrap();
    for rounding in ["nearest_even", "nearest_away", "toward_zero", "up", "down"] {
        for saturate in [true, false] {
            for (out, os, oz, axis) in [
                (
                    "i8",
                    "dense<[2.0, 4.0, 0.5, 2.0, 0.125, 4.0]> : tensor<6xf32>",
                    "dense<[3, -2, 3, 0, 1, -2]> : tensor<6xi8>",
                    ", out_axis = 1",
                ),
                (
                    "u8",
                    "dense<2.0> : tensor<f32>",
                    "dense<3> : tensor<u8>",
                    "",
                ),
                (
                    "i32",
                    "dense<0.25> : tensor<f32>",
                    "dense<-2> : tensor<i32>",
                    "",
                ),
            ] {
                let oshape = if axis.is_empty() { "f32" } else { "6xf32" };
                let zshape = if axis.is_empty() {
                    out.to_string()
                } else {
                    format!("6x{out}")
                };
                let src = format!(
                    "module {{\n  func @main(%x: tensor<3x40xf32>) -> (q: tensor<3x6x{out}>) {{\n    %w = constant dense<{}> : tensor<40x6xi4>\n    %s = constant dense<1.0> : tensor<6xf32>\n    %os = constant {os}\n    %oz = constant {oz}\n    %q = qmatmul %x, %w, %s, %os, %oz {{axis = 1, dequant_type = f32, requant_type = f32{axis}, out_zero_point = true, rounding = {rounding}, saturate = {saturate}}} : (tensor<3x40xf32>, tensor<40x6xi4>, tensor<6xf32>, tensor<{oshape}>, tensor<{zshape}>) -> tensor<3x6x{out}>\n    return %q\n  }}\n}}\n",
                    dense(&w)
                );
                let (got, want) = aot_and_interp(&src, &[("x".into(), x.clone())]);
                assert_eq!(got, want, "{out} {rounding} saturate={saturate}");
            }
        }
    }
}

/// C declarations of `inputs` as static arrays `{prefix}{i}`, typed by the
/// entry point `stem`'s typedefs.
fn c_arrays(stem: &str, prefix: &str, inputs: &Named) -> String {
    let mut c = String::new();
    for (i, (_, t)) in inputs.iter().enumerate() {
        c.push_str(&format!(
            "static const {stem}_in{i}_t {prefix}{i}[] = {{{}}};\n",
            c_values(t).join(", ")
        ));
    }
    c
}

/// A C program exercising the library's thread pool on `f` (entry point
/// `stem`) with two input sets: it takes each set's outputs with one
/// thread as the reference, then, for 1 to 8 threads, calls three times
/// per set and requires the same bytes; checks that the library never
/// runs more than `threads - 1` workers (threads named `lowbit-worker` in
/// `/proc/self/task`, once they have run), that they sleep between calls (state S, polled for
/// up to 2 s, far past the pool's 100 us poll window: a worker that
/// spins on never is), that setting one thread joins
/// them all; then two threads call at once (one
/// per set) while the main thread keeps changing the count; then a
/// child after `fork` starts its own workers (not under
/// ThreadSanitizer); finally it
/// prints the reference outputs of both sets (f32 as their bits).
fn pool_program(f: &Function, stem: &str, sets: [&Named; 2]) -> String {
    let upper = stem.to_uppercase();
    let nin = f.params.len();
    let nout = f.outputs.len();
    let ins = |p: &str| (0..nin).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let outs = |p: &str| (0..nout).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let mut c = String::from(
        "#include <dirent.h>\n#include <pthread.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <sys/wait.h>\n#include <unistd.h>\n#include \"libt.h\"\n",
    );
    c.push_str(&c_arrays(stem, "a", sets[0]));
    c.push_str(&c_arrays(stem, "b", sets[1]));
    let mut out_params = Vec::new();
    for i in 0..nout {
        c.push_str(&format!(
            "static {stem}_out{i}_t ra{i}[{upper}_OUT{i}_ELEMS], rb{i}[{upper}_OUT{i}_ELEMS];\n"
        ));
        out_params.push(format!("{stem}_out{i}_t *y{i}"));
    }
    let (ys, (a, b)) = (outs("y"), (ins("a"), ins("b")));
    c.push_str(&format!(
        "static int run(int set, {}) {{\n  return set ? {stem}_run({}, {}) : {stem}_run({}, {});\n}}\n",
        out_params.join(", "),
        b.join(", "),
        ys.join(", "),
        a.join(", "),
        ys.join(", ")
    ));
    // One call, compared with the set's reference (0: the same bytes).
    c.push_str("static int check(int set) {\n");
    for i in 0..nout {
        c.push_str(&format!(
            "  static __thread {stem}_out{i}_t y{i}[{upper}_OUT{i}_ELEMS];\n"
        ));
    }
    c.push_str(&format!("  if (run(set, {})) return 1;\n", ys.join(", ")));
    for i in 0..nout {
        c.push_str(&format!(
            "  if (memcmp(y{i}, set ? rb{i} : ra{i}, sizeof y{i})) return 1;\n"
        ));
    }
    c.push_str("  return 0;\n}\n");
    c.push_str(
        r#"/* The library's workers (named lowbit-worker): how many there are, and
   how many of them are not asleep (state S). */
static int workers(int *awake) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int n = 0;
  if (!d) return -1;
  *awake = 0;
  while ((e = readdir(d))) {
    char path[300], buf[512], *p;
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    if (strcmp(buf, "lowbit-worker\n") != 0) continue;
    n++;
    snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
    f = fopen(path, "r");
    if (!f) continue;
    got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    p = strrchr(buf, ')');
    if (p && p[1] == ' ' && p[2] != 'S') ++*awake;
  }
  closedir(d);
  return n;
}
/* Whether every worker sleeps within 2 s. */
static int asleep(void) {
  for (int tries = 0; tries < 200; tries++) {
    int awake;
    workers(&awake);
    if (awake == 0) return 1;
    usleep(10000);
  }
  return 0;
}
struct caller { int set, fails; };
static void *calls(void *p) {
  struct caller *c = p;
  for (int i = 0; i < 30; i++) c->fails += check(c->set);
  return NULL;
}
int main(void) {
  int awake;
"#,
    );
    c.push_str(&format!(
        "  if (SET(1) || run(0, {}) || run(1, {})) return 1;\n",
        outs("ra").join(", "),
        outs("rb").join(", ")
    ));
    c.push_str(
        r#"  for (int t = 1; t <= 8; t++) {
    if (SET(t)) return 1;
    for (int call = 0; call < 3; call++)
      for (int set = 0; set < 2; set++)
        if (check(set)) { fprintf(stderr, "differs: %d threads, call %d, input set %d\n", t, call, set); return 1; }
    int n = workers(&awake);
    if (n < 0 || n > t - 1) { fprintf(stderr, "%d workers for %d threads\n", n, t); return 1; }
    if (!asleep()) { fprintf(stderr, "a worker does not sleep between calls (%d threads)\n", t); return 1; }
  }
  if (SET(1) || workers(&awake) != 0) { fprintf(stderr, "the workers were not joined\n"); return 1; }
  struct caller c[2] = {{0, 0}, {1, 0}};
  pthread_t th[2];
  if (SET(3)) return 1;
  for (int i = 0; i < 2; i++) if (pthread_create(&th[i], NULL, calls, &c[i])) return 1;
  for (int i = 0; i < 40; i++) { if (SET(1 + i % 4)) return 1; usleep(500); }
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  if (c[0].fails || c[1].fails) { fprintf(stderr, "concurrent calls differ: %d and %d\n", c[0].fails, c[1].fails); return 1; }
#ifndef __SANITIZE_THREAD__
  /* A child after fork has none of the parent's workers: it starts its
     own (at most 2 for 3 threads) and computes the same. */
  if (SET(3) || check(0)) return 1;
  pid_t child = fork();
  if (child == 0) {
    if (check(0) || check(1)) _exit(1);
    /* A worker is named when it first runs (it may not have yet). */
    for (int tries = 0; tries < 200 && workers(&awake) != 2; tries++) usleep(10000);
    _exit(workers(&awake) == 2 ? 0 : 2);
  }
  int status;
  if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) { fprintf(stderr, "the forked child's calls failed\n"); return 1; }
  if (check(1)) return 1;
#endif
"#,
    );
    for (i, (_, v)) in f.outputs.iter().enumerate() {
        let print = |r: &str| {
            if f.ty(*v).elem == ElemType::F32 {
                format!("{{ uint32_t u; memcpy(&u, &{r}{i}[i], 4); printf(\"%u \", u); }}")
            } else {
                format!("printf(\"%lld \", (long long){r}{i}[i]);")
            }
        };
        for r in ["ra", "rb"] {
            c.push_str(&format!(
                "  for (int i = 0; i < {upper}_OUT{i}_ELEMS; i++) {}\n  printf(\"\\n\");\n",
                print(r)
            ));
        }
    }
    c.push_str("  return 0;\n}\n");
    c.replace("SET(", "lowbit_t_set_threads(")
}

/// Builds `program` (a `main.c`) against the compiled `a` in its build
/// directory with `cc` and `flags` (the driver compiled from source), runs
/// it and returns its standard output, or `None` if `cc` cannot build
/// with `flags` at all (checked on an empty program first).
fn build_and_run(a: &Artifacts, program: &str, flags: &[&str]) -> Option<String> {
    in_build_dir(a, |dir| {
        let probe = dir.join("probe.c");
        std::fs::write(&probe, "int main(void) { return 0; }\n").unwrap();
        let ok = std::process::Command::new("cc")
            .args(flags)
            .arg("-o")
            .arg(dir.join("probe"))
            .arg(&probe)
            .output()
            .is_ok_and(|o| o.status.success())
            && std::process::Command::new(dir.join("probe"))
                .output()
                .is_ok_and(|o| o.status.success());
        if !ok {
            return Ok(None);
        }
        std::fs::write(dir.join("libt.h"), &a.header).unwrap();
        std::fs::write(dir.join("main.c"), program).unwrap();
        let exe = dir.join("main");
        let cc = std::process::Command::new("cc")
            .args(["-Wall", "-Werror", "-pthread"])
            .args(flags)
            .arg("-I")
            .arg(dir)
            .arg("-o")
            .arg(&exe)
            .args(["main.c", "driver.c", "model.o", "data.o"].map(|f| dir.join(f)))
            .output()
            .unwrap();
        assert!(
            cc.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&cc.stderr)
        );
        let out = std::process::Command::new(&exe).output().unwrap();
        assert!(
            out.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Some(String::from_utf8(out.stdout).unwrap()))
    })
    .unwrap()
}

/// `rows` rows of `cols` positive block scales as IR dense literals
/// (`[a, b, ...]` each): `0.01 + ((r · cols + c) mod modulus) · step`.
fn scale_rows(rows: usize, cols: usize, modulus: usize, step: f64) -> Vec<String> {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (0..cols)
                .map(|c| format!("{}", 0.01 + ((r * cols + c) % modulus) as f64 * step))
                .collect();
            format!("[{}]", row.join(", "))
        })
        .collect()
}

#[test]
fn blockdot_decode_splits_in_panel_groups() {
    // The block-dot kernel at n = 1 is split in whole 4-panel groups (64
    // rows), the last chunk ragged: m = 200 gives chunks of 64, 64, 64
    // and 8 rows on 2, 3 and 8 threads (8 runs on 4, one per group).
    // Every count must equal the JIT bit for bit (k = 70: a partial last
    // block).
    let mut rng = Rng::new(59);
    let i4 = ElemType::Int {
        bits: 4,
        signed: true,
    };
    let w = random(&mut rng, i4, &[70, 200]);
    let scales = scale_rows(3, 200, 13, 0.003);
    let src = format!(
        "module {{
  func @main(%x: tensor<1x70xf32>) -> (y: tensor<1x200xf32>) {{
    %sx = absmax_scale %x {{block = 32, qmax = 127}} : (tensor<1x70xf32>) -> tensor<1x3xf32>
    %qx = quantize %x, %sx {{axis = 1, block_size = 32}} : (tensor<1x70xf32>, tensor<1x3xf32>) -> tensor<1x70xi8>
    %xq = dequantize %qx, %sx {{axis = 1, block_size = 32}} : (tensor<1x70xi8>, tensor<1x3xf32>) -> tensor<1x70xf32>
    %w = constant dense<{}> : tensor<70x200xi4>
    %s = constant dense<[{}]> : tensor<3x200xf16>
    %d = dequantize %w, %s {{axis = 0, block_size = 32}} : (tensor<70x200xi4>, tensor<3x200xf16>) -> tensor<70x200xf32>
    %y = matmul %xq, %d : (tensor<1x70xf32>, tensor<70x200xf32>) -> tensor<1x200xf32>
    return %y
  }}
}}
",
        dense(&w),
        scales.join(", ")
    );
    let x: Vec<u64> = (0..70)
        .map(|i| u64::from(((i as f32 - 33.0) * 0.21).to_bits()))
        .collect();
    let x = Tensor::new(ElemType::F32, vec![1, 70], x).unwrap();
    for threads in [1, 2, 3, 8] {
        let (got, want) = aot_function_and(&src, 0, threads, &[("x".into(), x.clone())], jit);
        assert_eq!(got, want, "{threads} threads");
    }
}

#[test]
fn pooled_calls_are_identical_for_any_thread_count() {
    // Every loop the driver splits over the pool, on ragged shapes
    // (m = 37: chunks of whole granules, 8 rows or 16 on the panel
    // layouts, the last one ragged; k = 70, 40, 37, 300 and
    // 700: padded rows, partial blocks): the block-dot kernel's
    // per-block activation quantization (k = 70: a partial last block;
    // set A's first row starts with a zero block), the float kernel's row
    // padding, an f32 add and ReLU, a requantize epilogue, f16 widening,
    // the W8A8 byte conversion and a saturating i32 add, W1A1 bit rows and
    // W1A8 bit-planes. The driver is built with -DLOWBIT_SPLIT_ALL so that
    // these small loops are split too. Both input sets' 1-thread results
    // equal the JIT's bit for bit; the program checks every thread count,
    // repeated and concurrent calls (see `pool_program`).
    let mut rng = Rng::new(41);
    let i4 = ElemType::Int {
        bits: 4,
        signed: true,
    };
    let w4 = random(&mut rng, i4, &[70, 37]);
    let s4 = scale_rows(3, 37, 11, 0.004);
    let w8 = random(&mut rng, ElemType::I8, &[70, 37]);
    let wq = random(&mut rng, i4, &[70, 37]);
    let wh = random(&mut rng, ElemType::I8, &[40, 37]);
    let wa = random(&mut rng, ElemType::I8, &[37, 37]);
    let wa2 = random(&mut rng, ElemType::I8, &[37, 37]);
    let wb = random(&mut rng, ElemType::Bipolar, &[300, 37]);
    let wu = random(&mut rng, ElemType::Bipolar, &[700, 37]);
    let col = |scale: f64| -> String {
        let v: Vec<String> = (0..37)
            .map(|c| format!("{}", scale * (1.0 + (c % 5) as f64)))
            .collect();
        format!("[{}]", v.join(", "))
    };
    let src = format!(
        "module {{
  func @main(%x: tensor<5x70xf32>, %h: tensor<3x40xf16>, %a: tensor<3x37xi8>, %s: tensor<3x300xb1>, %u: tensor<2x700xu8>) -> (yb: tensor<5x37xf32>, yf: tensor<5x37xf32>, q: tensor<5x37xi8>, yh: tensor<3x37xf32>, ya: tensor<3x37xi32>, ys: tensor<3x37xi32>, yu: tensor<2x37xi32>) {{
    %sx = absmax_scale %x {{block = 32, qmax = 127}} : (tensor<5x70xf32>) -> tensor<5x3xf32>
    %qx = quantize %x, %sx {{axis = 1, block_size = 32}} : (tensor<5x70xf32>, tensor<5x3xf32>) -> tensor<5x70xi8>
    %xq = dequantize %qx, %sx {{axis = 1, block_size = 32}} : (tensor<5x70xi8>, tensor<5x3xf32>) -> tensor<5x70xf32>
    %w4 = constant dense<{}> : tensor<70x37xi4>
    %s4 = constant dense<[{}]> : tensor<3x37xf16>
    %d4 = dequantize %w4, %s4 {{axis = 0, block_size = 32}} : (tensor<70x37xi4>, tensor<3x37xf16>) -> tensor<70x37xf32>
    %yb = matmul %xq, %d4 : (tensor<5x70xf32>, tensor<70x37xf32>) -> tensor<5x37xf32>
    %w8 = constant dense<{}> : tensor<70x37xi8>
    %s8 = constant dense<{}> : tensor<37xf32>
    %d8 = dequantize %w8, %s8 {{axis = 1}} : (tensor<70x37xi8>, tensor<37xf32>) -> tensor<70x37xf32>
    %m8 = matmul %x, %d8 : (tensor<5x70xf32>, tensor<70x37xf32>) -> tensor<5x37xf32>
    %sum = add %m8, %yb : (tensor<5x37xf32>, tensor<5x37xf32>) -> tensor<5x37xf32>
    %yf = relu %sum : (tensor<5x37xf32>) -> tensor<5x37xf32>
    %wq = constant dense<{}> : tensor<70x37xi4>
    %sq = constant dense<{}> : tensor<37xf32>
    %os = constant dense<0.05> : tensor<f32>
    %oz = constant dense<3> : tensor<i8>
    %q = qmatmul %x, %wq, %sq, %os, %oz {{axis = 1, dequant_type = f32, requant_type = f32, out_zero_point = true}} : (tensor<5x70xf32>, tensor<70x37xi4>, tensor<37xf32>, tensor<f32>, tensor<i8>) -> tensor<5x37xi8>
    %wh = constant dense<{}> : tensor<40x37xi8>
    %sh = constant dense<{}> : tensor<37xf32>
    %dh = dequantize %wh, %sh {{axis = 1}} : (tensor<40x37xi8>, tensor<37xf32>) -> tensor<40x37xf32>
    %yh = matmul %h, %dh : (tensor<3x40xf16>, tensor<40x37xf32>) -> tensor<3x37xf32>
    %wa = constant dense<{}> : tensor<37x37xi8>
    %wa2 = constant dense<{}> : tensor<37x37xi8>
    %ma = matmul %a, %wa : (tensor<3x37xi8>, tensor<37x37xi8>) -> tensor<3x37xi32>
    %ma2 = matmul %a, %wa2 : (tensor<3x37xi8>, tensor<37x37xi8>) -> tensor<3x37xi32>
    %ya = add %ma, %ma2 {{overflow = saturate}} : (tensor<3x37xi32>, tensor<3x37xi32>) -> tensor<3x37xi32>
    %wb = constant dense<{}> : tensor<300x37xb1>
    %ys = matmul %s, %wb : (tensor<3x300xb1>, tensor<300x37xb1>) -> tensor<3x37xi32>
    %wu = constant dense<{}> : tensor<700x37xb1>
    %yu = matmul %u, %wu : (tensor<2x700xu8>, tensor<700x37xb1>) -> tensor<2x37xi32>
    return %yb, %yf, %q, %yh, %ya, %ys, %yu
  }}
}}
",
        dense(&w4),
        s4.join(", "),
        dense(&w8),
        col(0.01),
        dense(&wq),
        col(0.02),
        dense(&wh),
        col(0.125),
        dense(&wa),
        dense(&wa2),
        dense(&wb),
        dense(&wu),
    );
    let set = |rng: &mut Rng, zero_block: bool| -> Vec<(String, Tensor)> {
        let x: Vec<u64> = (0..5 * 70)
            .map(|i| {
                let v = if zero_block && i < 32 {
                    0.0
                } else {
                    (rng.next_u64() % 2001) as f32 / 500.0 - 2.0
                };
                u64::from(v.to_bits())
            })
            .collect();
        let h: Vec<u64> = (0..3 * 40)
            .map(|_| {
                let f16 = ElemType::F16;
                loop {
                    let c = rng.next_u64() & 0xffff;
                    if f16.decode(c).is_finite() && f16.decode(c).abs() < 100.0 {
                        break c;
                    }
                }
            })
            .collect();
        vec![
            (
                "x".into(),
                Tensor::new(ElemType::F32, vec![5, 70], x).unwrap(),
            ),
            (
                "h".into(),
                Tensor::new(ElemType::F16, vec![3, 40], h).unwrap(),
            ),
            ("a".into(), random(rng, ElemType::I8, &[3, 37])),
            ("s".into(), random(rng, ElemType::Bipolar, &[3, 300])),
            ("u".into(), random(rng, ElemType::U8, &[2, 700])),
        ]
    };
    let (sa, sb) = (set(&mut rng, true), set(&mut rng, false));
    let module = parse_module(&src).unwrap_or_else(|e| panic!("{e:?}"));
    let f = &module.functions[0];
    let a = compile_model(&module, "t", &host(), Emit::Obj).unwrap_or_else(|e| panic!("{e}"));
    // Every loop goes through the pool: the block quantization, row
    // padding (twice: two float kernels read x), f32 add and ReLU,
    // requantize, widening, byte conversion (twice), i32 add, bit rows,
    // bit-planes.
    let loops = a.driver.matches("lowbit_for(lowbit_t_p").count();
    assert_eq!(loops, 12, "{}", a.driver);
    let program = pool_program(f, "lowbit_t", [&sa, &sb]);
    // The reference: the JIT's outputs for set A, then set B, per output.
    let (ja, jb) = (jit(f, &sa), jit(f, &sb));
    let mut want = Vec::new();
    for ((_, ta), (_, tb)) in ja.iter().zip(&jb) {
        for t in [ta, tb] {
            let v: Vec<i128> = match t.elem {
                ElemType::F32 => t.codes.iter().map(|&c| i128::from(c)).collect(),
                _ => t.to_i128().unwrap(),
            };
            want.push(v);
        }
    }
    let parse = |s: String| -> Vec<Vec<i128>> {
        s.lines()
            .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let got = build_and_run(&a, &program, &[DRIVER_OPT, "-DLOWBIT_SPLIT_ALL"]).expect("cc builds");
    assert_eq!(parse(got), want, "split loops");
    // The driver as lowbit builds it (large-tensor loops stay unsplit
    // here; the kernels still use the pool).
    let got = build_and_run(&a, &program, &[DRIVER_OPT]).expect("cc builds");
    assert_eq!(parse(got), want, "default build");
    // ThreadSanitizer, where the toolchain has it (the kernels' object is
    // not instrumented; the pool and the driver's loops are).
    match build_and_run(
        &a,
        &program,
        &["-O1", "-g", "-fsanitize=thread", "-DLOWBIT_SPLIT_ALL"],
    ) {
        Some(got) => assert_eq!(parse(got), want, "ThreadSanitizer build"),
        None => eprintln!("cc -fsanitize=thread does not work here: no ThreadSanitizer run"),
    }
}

#[test]
fn unloading_the_library_joins_its_workers() {
    // The library as `--emit so` builds it, loaded with dlopen: a call on
    // 4 threads starts 3 workers (m = 69: 5 granules of 16 rows), and
    // dlclose runs the library's destructor, which joins them before
    // the code they run is unmapped.
    let mut rng = Rng::new(29);
    let w = random(&mut rng, ElemType::I8, &[40, 69]);
    let src = format!(
        "module {{\n  func @main(%x: tensor<3x40xu8>) -> (y: tensor<3x69xi32>) {{\n    %w = constant dense<{}> : tensor<40x69xi8>\n    %y = matmul %x, %w : (tensor<3x40xu8>, tensor<40x69xi8>) -> tensor<3x69xi32>\n    return %y\n  }}\n}}\n",
        dense(&w)
    );
    let module = parse_module(&src).unwrap();
    let a = compile_model(&module, "t", &host(), Emit::Obj).unwrap_or_else(|e| panic!("{e}"));
    let dir = a.dir.path.clone();
    link_shared(&a, &dir.join("libt.so"), &dir.join("libt.h")).unwrap();
    let program = r#"#include <dirent.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* Threads of this process named lowbit-worker. */
static int workers(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int n = 0;
  if (!d) return -1;
  while ((e = readdir(d))) {
    char path[300], buf[64] = {0};
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(buf, sizeof buf, f) && strcmp(buf, "lowbit-worker\n") == 0) n++;
    fclose(f);
  }
  closedir(d);
  return n;
}
int main(int argc, char **argv) {
  static uint8_t x[3 * 40];
  static int32_t y[3 * 69];
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
  int (*set)(int) = (int (*)(int))dlsym(lib, "lowbit_t_set_threads");
  int (*run)(const uint8_t *, int32_t *) = (int (*)(const uint8_t *, int32_t *))dlsym(lib, "lowbit_t_run");
  if (!set || !run || set(4) || run(x, y)) { fprintf(stderr, "cannot call the library\n"); return 1; }
  /* A worker is named when it first runs (it may not have yet). */
  for (int tries = 0; tries < 200 && workers() != 3; tries++) usleep(10000);
  if (workers() != 3) { fprintf(stderr, "%d workers before dlclose, not 3\n", workers()); return 1; }
  if (dlclose(lib)) { fprintf(stderr, "%s\n", dlerror()); return 1; }
  if (workers() != 0) { fprintf(stderr, "%d workers after dlclose\n", workers()); return 1; }
  return 0;
}
"#;
    std::fs::write(dir.join("main.c"), program).unwrap();
    let exe = dir.join("main");
    let cc = std::process::Command::new("cc")
        .args(["-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(dir.join("main.c"))
        .arg("-ldl")
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = std::process::Command::new(&exe)
        .arg(dir.join("libt.so"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `quantize-activations` form on `n` rows of `k` `f32` activations
/// times a `q4_0` (`i4`) or `q8_0` (`i8`) weight of `k x m` with `f16`
/// scales per 32-block; and, for the interpreter only, the module
/// computing its dequantized activations (`@xhat`) and weights (`@dw`),
/// whose products give the declared bound.
fn blockdot_model(rng: &mut Rng, n: usize, k: usize, m: usize, weight: &str) -> (String, String) {
    let e = ElemType::Int {
        bits: if weight == "i4" { 4 } else { 8 },
        signed: true,
    };
    let w = random(rng, e, &[k as u64, m as u64]);
    let nb = k.div_ceil(32);
    let scales = scale_rows(nb, m, 29, 0.0021).join(", ");
    let quant = format!(
        "    %sx = absmax_scale %x {{block = 32, qmax = 127}} : (tensor<{n}x{k}xf32>) -> tensor<{n}x{nb}xf32>
    %qx = quantize %x, %sx {{axis = 1, block_size = 32}} : (tensor<{n}x{k}xf32>, tensor<{n}x{nb}xf32>) -> tensor<{n}x{k}xi8>
    %xq = dequantize %qx, %sx {{axis = 1, block_size = 32}} : (tensor<{n}x{k}xi8>, tensor<{n}x{nb}xf32>) -> tensor<{n}x{k}xf32>
"
    );
    let deq = format!(
        "    %w = constant dense<{}> : tensor<{k}x{m}x{weight}>
    %s = constant dense<[{scales}]> : tensor<{nb}x{m}xf16>
    %d = dequantize %w, %s {{axis = 0, block_size = 32}} : (tensor<{k}x{m}x{weight}>, tensor<{nb}x{m}xf16>) -> tensor<{k}x{m}xf32>
",
        dense(&w)
    );
    let main = format!(
        "module {{\n  func @main(%x: tensor<{n}x{k}xf32>) -> (y: tensor<{n}x{m}xf32>) {{\n{quant}{deq}    %y = matmul %xq, %d : (tensor<{n}x{k}xf32>, tensor<{k}x{m}xf32>) -> tensor<{n}x{m}xf32>\n    return %y\n  }}\n}}\n"
    );
    let parts = format!(
        "module {{\n  func @xhat(%x: tensor<{n}x{k}xf32>) -> (xq: tensor<{n}x{k}xf32>) {{\n{quant}    return %xq\n  }}\n  func @dw() -> (d: tensor<{k}x{m}xf32>) {{\n{deq}    return %d\n  }}\n}}\n"
    );
    (main, parts)
}

/// The gap from `|v|` to the next `f32` (the least subnormal at 0 and
/// for non-finite values).
fn ulp(v: f32) -> f64 {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return f64::from(f32::from_bits(1));
    }
    f64::from(f32::from_bits(a.to_bits() + 1)) - f64::from(a)
}

/// Whether this process lets block-dot specs on AMX (`lowbit_llvm`'s
/// `LOWBIT_BLOCKDOT_AMX`, `0` keeps the `vpdpbusd` kernel).
fn blockdot_amx_allowed() -> bool {
    std::env::var_os("LOWBIT_BLOCKDOT_AMX").is_none_or(|v| v != "0")
}

#[test]
fn blockdot_models_take_the_amx_kernel_on_amx_cpus() {
    // n = 8 (i4) or 9 (i8) and 17 on a CPU with AMX-INT8: the AMX
    // block-dot kernel (`tdpbssd` for i4, `tdpbsud` for i8 in the
    // assembly), and the driver asks for the tile state; one column
    // fewer and n = 4 there, and n = 8 on a CPU without AMX
    // (icelake-server), the `vpdpbusd` kernel with no request.
    let mut rng = Rng::new(0xb10c);
    let spr = CpuTarget::named("x86_64", "sapphirerapids").unwrap();
    let icx = CpuTarget::named("x86_64", "icelake-server").unwrap();
    for (weight, dot, least) in [("i4", "tdpbssd", 8), ("i8", "tdpbsud", 9)] {
        for (n, target, amx) in [
            (least, &spr, true),
            (17, &spr, true),
            (least - 1, &spr, false),
            (4, &spr, false),
            (8, &icx, false),
        ] {
            let amx = amx && blockdot_amx_allowed();
            let (src, _) = blockdot_model(&mut rng, n, 70, 40, weight);
            let m = parse_module(&src).unwrap();
            let a = compile_model(&m, "t", target, Emit::Asm).unwrap_or_else(|e| panic!("{e}"));
            let asm = String::from_utf8_lossy(&a.object);
            let what = format!("{weight}, n = {n}, {}", target.describe());
            assert_eq!(asm.contains(dot), amx, "{what}: {dot}");
            assert_eq!(asm.contains("ldtilecfg"), amx, "{what}: ldtilecfg");
            assert_eq!(!asm.contains("vpdpbusd"), amx, "{what}: vpdpbusd");
            assert_eq!(
                a.driver.contains("lowbit_amx_ready() != 0) return 2;"),
                amx,
                "{what}: tile state request"
            );
            // Row chunks: whole panel pairs on AMX, panels (n > 1) else.
            let granule = if amx { ", 32);" } else { ", 16);" };
            assert!(
                a.driver
                    .lines()
                    .any(|l| l.contains("lowbit_call(") && l.ends_with(granule)),
                "{what}: granule"
            );
        }
    }
}

#[test]
fn amx_blockdot_models_equal_the_jit_on_any_thread_count() {
    // Ragged shapes on the AMX block-dot kernel where the host has
    // AMX-INT8 (else the `vpdpbusd` one, checked the same way): k = 100
    // (a partial last block, k_pad past it), m = 200 (13 panels: the
    // last panel pair is half one; chunks of whole pairs, the last
    // ragged), n = 8 (shrinking chunks) and 17 (a 16-column tile and a
    // 1-column one; equal chunks), one activation block all zeros (scale
    // 0). Each is bit-identical to `lowbit run --backend cpu` on 1, 2 and
    // 3 threads and within the block-dot bound of
    // `lowbit_llvm::codegen` of the interpreter:
    // `(k_pad/32 + 8) · 2^-24 · Σ_j |x̂_j · w_j|` (plus the result's ulp).
    let mut rng = Rng::new(0xa3d07);
    let (k, m) = (100, 200);
    for weight in ["i4", "i8"] {
        for n in [8, 17] {
            let (src, parts) = blockdot_model(&mut rng, n, k, m, weight);
            let x: Vec<u64> = (0..n * k)
                .map(|i| {
                    let (r, j) = (i / k, i % k);
                    // Row 3's second block is all zeros.
                    let v = if r == 3 && (32..64).contains(&j) {
                        0.0
                    } else {
                        ((i * 37 % 101) as f32 - 50.0) * 0.013 * (1 + r % 3) as f32
                    };
                    u64::from(v.to_bits())
                })
                .collect();
            let x = Tensor::new(ElemType::F32, vec![n as u64, k as u64], x).unwrap();
            let inputs = [("x".to_string(), x.clone())];
            // The magnitudes Σ_j |x̂_j · w_j| from the interpreter's
            // dequantized operands.
            let pm = parse_module(&parts).unwrap();
            let xhat = run_function(&pm.functions[0], &inputs).unwrap()[0]
                .1
                .to_f64();
            let dw = run_function(&pm.functions[1], &[]).unwrap()[0].1.to_f64();
            let mags: Vec<f64> = (0..n * m)
                .map(|o| {
                    let (r, c) = (o / m, o % m);
                    (0..k)
                        .map(|j| (xhat[r * k + j] * dw[j * m + c]).abs())
                        .sum()
                })
                .collect();
            let main = parse_module(&src).unwrap();
            let want = interp(&main.functions[0], &inputs)[0].1.to_f64();
            let k_pad = k.div_ceil(32) * 32;
            let factor = (k_pad as f64 / 32.0 + 8.0) * 2f64.powi(-24);
            for threads in [1, 2, 3] {
                let what = format!("{weight}, n = {n}, {threads} threads");
                let (got, jit_out) = aot_function_and(&src, 0, threads, &inputs, jit);
                assert_eq!(got, jit_out, "{what}: against the JIT");
                for (i, (&g, &b)) in got[0].iter().zip(&want).enumerate() {
                    let a = f64::from(f32::from_bits(g as u32));
                    let tol = factor * mags[i] + ulp(b as f32);
                    assert!(
                        (a - b).abs() <= tol,
                        "{what}: output {i}: compiled {a}, interpreter {b}, bound {tol}"
                    );
                }
            }
        }
    }
}
