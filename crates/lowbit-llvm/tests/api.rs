//! The library surface: unsupported specs, buffer-size and spec checks,
//! packing errors, the kernel cache, packed layouts in IR form, AOT output
//! for x86-64 and AArch64, and the machine probes.

use lowbit_ir::Tensor;
use lowbit_llvm::aot::{emit, Emit};
use lowbit_llvm::{
    compile, Activations, CpuError, CpuTarget, Dim, GemmSpec, PackedWeights, WeightGranularity,
};
use lowbit_numerics::ElemType;
use std::sync::Arc;

fn t(s: &str) -> ElemType {
    s.parse().unwrap()
}

fn q4(m: usize, k: usize, n: Dim) -> GemmSpec {
    GemmSpec::new(m, k, n, t("i4"), 32)
}

fn weights(spec: &GemmSpec) -> PackedWeights {
    let w = Tensor::new(
        spec.weight.dtype,
        vec![spec.m as u64, spec.k as u64],
        (0..spec.m * spec.k).map(|i| (i % 16) as u64).collect(),
    )
    .unwrap();
    let s = Tensor::from_f64(
        spec.weight.scale,
        spec.scale_shape(),
        &vec![0.5; spec.scale_shape().iter().product::<u64>() as usize],
    )
    .unwrap();
    PackedWeights::pack(spec, &w, &s, None).unwrap()
}

#[test]
fn unsupported_specs_name_op_dtype_layout_and_target() {
    let mut cases = vec![
        GemmSpec::new(8, 64, Dim::Dynamic, t("i16"), 32),
        GemmSpec::new(8, 64, Dim::Dynamic, t("f6E3M2FN"), 32),
        GemmSpec::new(8, 64, Dim::Dynamic, t("f8E4M3FNUZ"), 32),
        GemmSpec::new(8, 64, Dim::Dynamic, t("i4"), 48),
        GemmSpec::new(8, 64, Dim::Dynamic, t("i4"), 0),
        GemmSpec::new(0, 64, Dim::Dynamic, t("i4"), 32),
        GemmSpec::new(8, 64, Dim::Static(0), t("i4"), 32),
    ];
    let mut s = GemmSpec::new(8, 64, Dim::Dynamic, t("f8E5M2"), 32);
    s.weight.zero_point = true;
    cases.push(s);
    let mut s = GemmSpec::new(8, 64, Dim::Dynamic, t("i4"), 32);
    s.act = ElemType::I8;
    cases.push(s);
    let mut s = GemmSpec::new(8, 64, Dim::Dynamic, t("i4"), 32);
    s.weight.scale = t("f8E5M2");
    cases.push(s);
    let mut s = GemmSpec::new(8, 64, Dim::Dynamic, t("i4"), 32);
    s.weight.layout = Some(lowbit_ir::Layout {
        bit_planes: true,
        ..Default::default()
    });
    cases.push(s);
    for spec in cases {
        match compile(&spec) {
            Err(e @ CpuError::Unsupported { .. }) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "{msg}");
                assert!(msg.starts_with("unsupported on cpu target "), "{msg}");
                if let CpuError::Unsupported {
                    op, dtype, layout, ..
                } = &e
                {
                    assert_eq!(op, "gemm");
                    assert_eq!(dtype, &spec.weight.dtype.to_string());
                    assert!(layout.starts_with("#layout<"), "{layout}");
                }
            }
            other => panic!("{spec}: expected Unsupported, got {other:?}"),
        }
    }
}

#[test]
fn buffer_sizes_are_checked_before_the_kernel_runs() {
    let spec = q4(8, 64, Dim::Dynamic);
    let k = compile(&spec).unwrap();
    let w = weights(&spec);
    let x = vec![1f32; 3 * 64];
    let mut y = vec![0f32; 3 * 8];
    k.run(x.as_slice(), &w, None, &mut y, 3, 1).unwrap();
    let size_err = |r: Result<(), CpuError>, buf: &str| match r {
        Err(CpuError::BufferSize { buffer, .. }) => assert_eq!(buffer, buf),
        other => panic!("expected a size error for {buf}, got {other:?}"),
    };
    size_err(k.run(&x[1..], &w, None, &mut y, 3, 1), "x");
    size_err(k.run(x.as_slice(), &w, None, &mut y[1..], 3, 1), "y");
    size_err(k.run(x.as_slice(), &w, None, &mut y, 4, 1), "x");
    // n * k overflowing usize is a size error too.
    size_err(k.run(x.as_slice(), &w, None, &mut y, usize::MAX, 1), "x");
    assert!(matches!(
        k.run(x.as_slice(), &w, Some(&[0.0; 8]), &mut y, 3, 1),
        Err(CpuError::SpecMismatch(_))
    ));
    let h: Vec<half::f16> = vec![half::f16::ONE; 3 * 64];
    assert!(matches!(
        k.run(Activations::F16(&h), &w, None, &mut y, 3, 1),
        Err(CpuError::SpecMismatch(_))
    ));
    let other = q4(8, 96, Dim::Dynamic);
    assert!(matches!(
        k.run(x.as_slice(), &weights(&other), None, &mut y, 3, 1),
        Err(CpuError::SpecMismatch(_))
    ));

    let mut biased = q4(8, 64, Dim::Static(3));
    biased.epilogue.bias = true;
    let kb = compile(&biased).unwrap();
    let wb = weights(&biased);
    assert!(matches!(
        kb.run(x.as_slice(), &wb, None, &mut y, 3, 1),
        Err(CpuError::SpecMismatch(_))
    ));
    size_err(
        kb.run(x.as_slice(), &wb, Some(&[0.0; 7]), &mut y, 3, 1),
        "bias",
    );
    size_err(
        kb.run(&x[..128], &wb, Some(&[0.0; 8]), &mut y[..16], 2, 1),
        "n (activation rows)",
    );
    kb.run(x.as_slice(), &wb, Some(&[0.0; 8]), &mut y, 3, 2)
        .unwrap();
}

#[test]
fn packing_checks_tensors_against_the_spec() {
    let mut spec = q4(4, 40, Dim::Dynamic);
    let w = Tensor::new(t("i4"), vec![4, 40], vec![1; 160]).unwrap();
    let s = Tensor::from_f64(ElemType::F16, vec![4, 2], &[1.0; 8]).unwrap();
    assert!(PackedWeights::pack(&spec, &w, &s, None).is_ok());
    let bad_w = Tensor::new(t("u4"), vec![4, 40], vec![1; 160]).unwrap();
    assert!(matches!(
        PackedWeights::pack(&spec, &bad_w, &s, None),
        Err(CpuError::BadWeights(_))
    ));
    let bad_s = Tensor::from_f64(ElemType::F16, vec![4, 1], &[1.0; 4]).unwrap();
    assert!(matches!(
        PackedWeights::pack(&spec, &w, &bad_s, None),
        Err(CpuError::BadWeights(_))
    ));
    let z = Tensor::new(t("i4"), vec![4, 2], vec![0; 8]).unwrap();
    assert!(PackedWeights::pack(&spec, &w, &s, Some(&z)).is_err());
    spec.weight.zero_point = true;
    assert!(PackedWeights::pack(&spec, &w, &s, None).is_err());
    assert!(PackedWeights::pack(&spec, &w, &s, Some(&z)).is_ok());
    match PackedWeights::from_raw(&spec, vec![0; 10], vec![0; 16], vec![0; 8]) {
        Err(CpuError::BufferSize {
            expected, got: 10, ..
        }) => assert_eq!(expected, 4 * 2 * 16),
        other => panic!("{other:?}"),
    }
}

#[test]
fn packed_layouts_are_lowbit_ir_types() {
    let ty = |w: &str, g| GemmSpec::new(4, 40, Dim::Dynamic, t(w), g).packed_weight_type();
    assert_eq!(
        ty("i4", 32).to_string(),
        "tensor<4x64xi4, #layout<interleave=32>>"
    );
    assert_eq!(
        ty("u2", 32).to_string(),
        "tensor<4x64xu2, #layout<interleave=32>>"
    );
    assert_eq!(ty("i8", 32).to_string(), "tensor<4x64xi8>");
    assert_eq!(
        ty("i3", 64).to_string(),
        "tensor<4x64xi3, #layout<tile=1x32, bitplanes>>"
    );
    // The packed type checks out with the IR's own layout rules.
    for w in ["i4", "u2", "i8", "i3", "u7", "b1", "f8E4M3FN"] {
        let tt = ty(w, 32);
        tt.layout.check_fits(tt.elem, &tt.shape).unwrap();
    }
    let mut s = q4(4, 40, Dim::Dynamic);
    s.weight.granularity = WeightGranularity::PerChannel;
    assert_eq!(s.scale_shape(), vec![4]);
    // 64 codes of 4 bits + 1 f16 scale per 32 + nothing else: q4_0's 4.5 bits.
    let s = q4(1, 64, Dim::Dynamic);
    assert_eq!(s.weight_bytes() * 8, 64 * 9 / 2);
}

#[test]
fn kernels_are_cached_by_spec() {
    let spec = q4(12, 96, Dim::Dynamic);
    let a = compile(&spec).unwrap();
    let b = compile(&spec).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let c = compile(&q4(12, 96, Dim::Static(2))).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert!(lowbit_llvm::jit::cached_kernels() >= 2);
    assert!(lowbit_llvm::compiler_version().contains("llvm 22."));
}

#[test]
fn aot_output_for_x86_and_aarch64() {
    let spec = q4(8, 64, Dim::Dynamic);
    let x86 = CpuTarget::named("x86_64", "skylake-avx512").unwrap();
    let asm = String::from_utf8(emit(&spec, &x86, Emit::Asm).unwrap()).unwrap();
    assert!(asm.contains("lowbit_gemm:"), "{asm}");
    assert!(
        asm.contains("vfmadd") && asm.contains("zmm"),
        "no AVX-512 FMA"
    );
    let avx2 = CpuTarget::named("x86_64", "haswell").unwrap();
    let asm = String::from_utf8(emit(&spec, &avx2, Emit::Asm).unwrap()).unwrap();
    assert!(asm.contains("vfmadd") && asm.contains("ymm") && !asm.contains("zmm"));
    let arm = CpuTarget::named("aarch64", "generic").unwrap();
    let asm = String::from_utf8(emit(&spec, &arm, Emit::Asm).unwrap()).unwrap();
    assert!(asm.contains("fmla") && asm.contains(".4s"), "{asm}");
    let obj = emit(&spec, &arm, Emit::Obj).unwrap();
    assert_eq!(&obj[..4], b"\x7fELF");
    let ir = String::from_utf8(emit(&spec, &x86, Emit::LlvmIr).unwrap()).unwrap();
    assert!(ir.contains("define void @lowbit_gemm("), "{ir}");
    // Packed weights live in byte buffers of any alignment: every load of
    // codes must say so (an aligned `vmovdqa` on them once crashed).
    for w in ["i4", "i8", "u3", "f8E5M2"] {
        let spec = GemmSpec::new(8, 64, Dim::Dynamic, t(w), 32);
        let ir = String::from_utf8(emit(&spec, &x86, Emit::LlvmIr).unwrap()).unwrap();
        let loads: Vec<&str> = ir
            .lines()
            .filter(|l| l.contains("= load ") && !l.contains("float"))
            .collect();
        assert!(!loads.is_empty(), "{w}: no vector loads of codes");
        for l in loads {
            assert!(l.trim_end().ends_with("align 1"), "{w}: {l}");
        }
    }
    assert!(CpuTarget::named("riscv", "generic").is_err());
}

#[test]
fn probes_report_finite_positive_figures() {
    let bw = lowbit_llvm::probe::read_bandwidth_gbps(2, 8 << 20, 2).unwrap();
    assert!(bw.is_finite() && bw > 0.0, "{bw}");
    assert!(lowbit_llvm::probe::read_bandwidth_gbps(1, 16, 1).is_err());
}

#[test]
fn w8a8_specs_and_calls_are_checked() {
    let spec = GemmSpec::int8(8, 100, Dim::Dynamic, ElemType::U8);
    assert_eq!(spec.k_pad(), 128);
    assert_eq!(
        spec.to_string(),
        "gemm m=8 k=100 n=? weight=i8 act=u8 -> i32 (exact)"
    );
    let k = compile(&spec).unwrap();
    let w = Tensor::new(ElemType::I8, vec![8, 100], vec![1; 800]).unwrap();
    let packed = PackedWeights::pack_int(&spec, &w).unwrap();
    assert_eq!(packed.row_sums(), &[100; 8]);
    // Float packing and float calls are refused on the integer path.
    let s = Tensor::from_f64(ElemType::F32, vec![8], &[1.0; 8]).unwrap();
    assert!(matches!(
        PackedWeights::pack(&spec, &w, &s, None),
        Err(CpuError::BadWeights(_))
    ));
    let x = vec![2u8; 300];
    let mut y = vec![0i32; 24];
    k.run_int(Activations::U8(&x), &packed, &mut y, 3, 2)
        .unwrap();
    assert_eq!(y, vec![200; 24]);
    let mut yf = vec![0f32; 24];
    assert!(matches!(
        k.run(Activations::U8(&x), &packed, None, &mut yf, 3, 1),
        Err(CpuError::SpecMismatch(_))
    ));
    assert!(matches!(
        k.run_int(Activations::U8(&x[1..]), &packed, &mut y, 3, 1),
        Err(CpuError::BufferSize { buffer: "x", .. })
    ));
    let xi = vec![2i8; 300];
    assert!(matches!(
        k.run_int(Activations::I8(&xi), &packed, &mut y, 3, 1),
        Err(CpuError::SpecMismatch(_))
    ));
    let float = compile(&q4(8, 64, Dim::Dynamic)).unwrap();
    assert!(matches!(
        float.run_int(
            Activations::U8(&x[..192]),
            &weights(&q4(8, 64, Dim::Dynamic)),
            &mut y,
            3,
            1
        ),
        Err(CpuError::SpecMismatch(_))
    ));

    let mut bad = vec![
        GemmSpec::int8(8, 64, Dim::Dynamic, t("u4")),
        GemmSpec::int8(8, 64, Dim::Dynamic, t("i16")),
    ];
    // u8 weights do not fit vpdpbusd's signed operand; i4/u4 do.
    bad.push(GemmSpec::int(8, 64, Dim::Dynamic, t("u8"), ElemType::U8));
    bad.push(GemmSpec::int(8, 64, Dim::Dynamic, t("i2"), ElemType::I8));
    let mut s = GemmSpec::int(8, 64, Dim::Dynamic, t("i4"), ElemType::U8);
    s.weight.granularity = lowbit_llvm::WeightGranularity::Group(32);
    bad.push(s);
    let mut s = GemmSpec::int(8, 64, Dim::Dynamic, t("u4"), ElemType::U8);
    s.weight.layout = Some(lowbit_ir::Layout::default());
    bad.push(s);
    let mut s = GemmSpec::int8(8, 64, Dim::Dynamic, ElemType::U8);
    s.weight.zero_point = true;
    bad.push(s);
    // The W8A8 epilogue is i32 bias and ReLU only.
    let mut s = GemmSpec::int8(8, 64, Dim::Dynamic, ElemType::U8);
    s.epilogue.activation = lowbit_llvm::Activation::Silu;
    bad.push(s);
    for spec in bad {
        match compile(&spec) {
            Err(e @ CpuError::Unsupported { .. }) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "{msg}");
                assert!(msg.contains(&spec.weight.dtype.to_string()), "{msg}");
            }
            other => panic!("{spec}: expected Unsupported, got {other:?}"),
        }
    }
}

/// The W4A8 packed layout is an IR layout: 16-row panels of 8-element
/// k-groups with nibbles `j, j + 4` in byte `j`, readable back with
/// lowbit-ir's own `Tensor::from_bytes`; row sums skip the padding.
#[test]
fn w4a8_packing_is_the_ir_layout() {
    let (m, k) = (19, 70);
    let spec = GemmSpec::int(m, k, Dim::Dynamic, t("i4"), ElemType::U8);
    let ty = spec.packed_weight_type();
    assert_eq!(ty.shape, vec![32, 128]);
    assert_eq!(
        spec.packed_layout(),
        lowbit_ir::Layout {
            tile: vec![16, 8],
            interleave: Some(8),
            ..Default::default()
        }
    );
    let codes: Vec<u64> = (0..m * k).map(|i| (i * 7 % 16) as u64).collect();
    let w = Tensor::new(t("i4"), vec![m as u64, k as u64], codes.clone()).unwrap();
    let packed = PackedWeights::pack_int(&spec, &w).unwrap();
    assert_eq!(packed.codes().len(), 32 * 128 / 2);
    // Row 1, elements 0 and 4 share byte 4 of the first tile (row 1's
    // bytes are 4..8): low nibble element 0, high nibble element 4.
    assert_eq!(u64::from(packed.codes()[4]), codes[k] | (codes[k + 4] << 4));
    let back = Tensor::from_bytes(&ty, packed.codes()).unwrap();
    for r in 0..32 {
        for j in 0..128 {
            let want = if r < m && j < k { codes[r * k + j] } else { 0 };
            assert_eq!(back.codes[r * 128 + j], want, "({r}, {j})");
        }
    }
    let sext = |c: u64| if c >= 8 { c as i32 - 16 } else { c as i32 };
    let sums: Vec<i32> = (0..m)
        .map(|r| codes[r * k..(r + 1) * k].iter().map(|&c| sext(c)).sum())
        .collect();
    assert_eq!(packed.row_sums(), &sums[..]);
}

#[test]
fn vnni_probe_runs_where_the_host_has_vnni() {
    let host = CpuTarget::host().unwrap();
    match lowbit_llvm::probe::vnni_peak_gops(1, 1).unwrap() {
        Some(p) => assert!(host.has("avx512vnni") && p.is_finite() && p > 0.0),
        None => assert!(!host.has("avx512vnni")),
    }
}

#[test]
fn w1a1_specs_are_checked() {
    let spec = GemmSpec::binary(4, 600, Dim::Dynamic);
    assert_eq!(spec.k_pad(), 1024);
    assert_eq!(spec.packed_weight_type().to_string(), "tensor<4x1024xb1>");
    assert_eq!(spec.weight_bytes(), 4 * 128);
    let mut s = GemmSpec::binary(4, 64, Dim::Dynamic);
    s.weight.dtype = ElemType::I8;
    let mut t2 = GemmSpec::binary(4, 64, Dim::Dynamic);
    t2.epilogue.bias = true;
    for spec in [s, t2] {
        assert!(
            matches!(compile(&spec), Err(CpuError::Unsupported { .. })),
            "{spec}"
        );
    }
    let host = CpuTarget::host().unwrap();
    match lowbit_llvm::probe::popcount_peak_gops(1, 1).unwrap() {
        Some(p) => assert!(host.has("avx512vpopcntdq") && p.is_finite() && p > 0.0),
        None => assert!(!host.has("avx512vpopcntdq")),
    }
}

#[test]
fn disk_cache_hits_and_rebuilds_corrupt_or_stale_entries() {
    use lowbit_llvm::{GemmKernel, KernelOrigin};
    let dir = std::env::temp_dir().join(format!("lowbit-kcache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let host = CpuTarget::host().unwrap();
    let spec = q4(8, 64, Dim::Dynamic);
    let w = weights(&spec);
    let x: Vec<f32> = (0..2 * 64).map(|i| (i % 7) as f32 - 3.0).collect();
    let run = |k: &GemmKernel| {
        let mut y = vec![0f32; 2 * 8];
        k.run(x.as_slice(), &w, None, &mut y, 2, 1).unwrap();
        y
    };
    let first = GemmKernel::compile_with_disk_cache(&spec, &host, Some(&dir)).unwrap();
    assert_eq!(first.origin(), &KernelOrigin::Compiled);
    let again = GemmKernel::compile_with_disk_cache(&spec, &host, Some(&dir)).unwrap();
    assert_eq!(again.origin(), &KernelOrigin::DiskCache);
    assert_eq!(run(&first), run(&again));

    // Corrupt the single entry: detected, rebuilt, rewritten.
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1);
    let path = entries[0].path();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let rebuilt = GemmKernel::compile_with_disk_cache(&spec, &host, Some(&dir)).unwrap();
    assert!(
        matches!(rebuilt.origin(), KernelOrigin::Rebuilt(why) if why.contains("checksum")),
        "{:?}",
        rebuilt.origin()
    );
    assert_eq!(run(&rebuilt), run(&first));
    let healed = GemmKernel::compile_with_disk_cache(&spec, &host, Some(&dir)).unwrap();
    assert_eq!(healed.origin(), &KernelOrigin::DiskCache);

    // Another spec's entry under this spec's file name is stale.
    let other = q4(8, 96, Dim::Dynamic);
    GemmKernel::compile_with_disk_cache(&other, &host, Some(&dir)).unwrap();
    let other_entry = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| *p != path)
        .unwrap();
    std::fs::copy(&other_entry, &path).unwrap();
    let stale = GemmKernel::compile_with_disk_cache(&spec, &host, Some(&dir)).unwrap();
    assert!(
        matches!(stale.origin(), KernelOrigin::Rebuilt(why) if why.contains("another spec")),
        "{:?}",
        stale.origin()
    );
    assert_eq!(run(&stale), run(&first));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn requantize_epilogue_calls_are_checked() {
    use lowbit_llvm::Requant;
    let mut spec = GemmSpec::int8(4, 64, Dim::Dynamic, ElemType::U8);
    spec.epilogue.requantize = true;
    assert!(
        spec.to_string().ends_with("-> i8 (dyadic requantize)"),
        "{spec}"
    );
    let k = compile(&spec).unwrap();
    let w = Tensor::new(ElemType::I8, vec![4, 64], vec![1; 256]).unwrap();
    let packed = PackedWeights::pack_int(&spec, &w).unwrap();
    let x = vec![3u8; 128];
    let mut y = vec![0i8; 8];
    let ok = Requant {
        multipliers: &[1, 1, 1, 1],
        shifts: &[0, 1, 2, 8],
        zero_point: 0,
    };
    k.run_requant(Activations::U8(&x), &packed, &ok, &mut y, 2, 2)
        .unwrap();
    // acc = 64 * 3 = 192: 192 saturates, 96, 48, 0.75 rounds to 1.
    assert_eq!(y, vec![127, 96, 48, 1, 127, 96, 48, 1]);
    let bad_shift = Requant {
        shifts: &[0, 1, 63, 0],
        ..ok.clone()
    };
    assert!(matches!(
        k.run_requant(Activations::U8(&x), &packed, &bad_shift, &mut y, 2, 1),
        Err(CpuError::BadWeights(m)) if m.contains("63")
    ));
    let short = Requant {
        multipliers: &[1, 1],
        ..ok.clone()
    };
    assert!(matches!(
        k.run_requant(Activations::U8(&x), &packed, &short, &mut y, 2, 1),
        Err(CpuError::BufferSize {
            buffer: "multipliers",
            ..
        })
    ));
    let mut yi = vec![0i32; 8];
    assert!(matches!(
        k.run_int(Activations::U8(&x), &packed, &mut yi, 2, 1),
        Err(CpuError::SpecMismatch(_))
    ));
    let mut float = q4(4, 64, Dim::Dynamic);
    float.epilogue.requantize = true;
    let mut bin = GemmSpec::binary(4, 64, Dim::Dynamic);
    bin.epilogue.requantize = true;
    for s in [float, bin] {
        assert!(
            matches!(compile(&s), Err(CpuError::Unsupported { .. })),
            "{s}"
        );
    }
}
