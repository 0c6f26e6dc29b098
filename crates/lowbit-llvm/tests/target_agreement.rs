//! One feature set, two readers: for the host and for named x86-64 targets,
//! the e-graph cost model's kernel choice and the CPU backend's kernel path
//! (what it reports and what the emitted assembly contains) must agree.

use lowbit_egraph::cost::estimate;
use lowbit_ir::target::{Int8Dot, Popcount, Target, VectorIsa};
use lowbit_ir::{IntSchedule, OpKind, Overflow, TensorType};
use lowbit_llvm::aot::{emit, emit_model, Emit, ModelKernel};
use lowbit_llvm::{CpuTarget, Dim, GemmSpec};
use lowbit_numerics::ElemType;

fn ty(shape: &[u64], e: &str) -> TensorType {
    TensorType::new(shape.to_vec(), e.parse().unwrap())
}

fn asm(spec: &GemmSpec, t: &CpuTarget) -> String {
    String::from_utf8(emit(spec, t, Emit::Asm).unwrap()).unwrap()
}

/// The cost model's kernel name for an integer matmul with `schedule`.
fn cost_kernel(t: &Target, a: &str, w: &str, schedule: IntSchedule) -> String {
    let (a, w, r) = (ty(&[16, 256], a), ty(&[256, 16], w), ty(&[16, 16], "i32"));
    let op = OpKind::MatMulInt {
        overflow: Overflow::Wrap,
        schedule,
    };
    estimate(t, &op, &r, &[&a, &w]).kernel
}

fn check(ir: &Target, cpu: &CpuTarget) {
    let name = &ir.name;
    assert_eq!(cpu.x86.as_ref(), ir.x86_features(), "{name}: feature sets");
    let paths = cpu.kernel_paths();

    let vnni_asm = asm(&GemmSpec::int8(16, 256, Dim::Static(4), ElemType::U8), cpu);
    let vnni_cost = cost_kernel(ir, "u8", "i8", IntSchedule::Direct);
    let vnni = paths.int8_dot == Int8Dot::Avx512Vnni;
    assert_eq!(
        vnni_asm.contains("vpdpbusd"),
        vnni,
        "{name}: W8A8 asm vs path"
    );
    assert_eq!(vnni_cost.contains("vpdpbusd"), vnni, "{name}: {vnni_cost}");

    // The instruction the shared kernel name promises is in the assembly.
    let promised = if vnni { "vpdpbusd" } else { "vpmaddwd" };
    assert!(vnni_cost.contains(promised), "{name}: {vnni_cost}");
    assert!(
        vnni_asm.contains(promised),
        "{name}: W8A8 asm lacks {promised}"
    );

    let pop_asm = asm(&GemmSpec::binary(16, 1024, Dim::Static(4)), cpu);
    let pop_cost = cost_kernel(ir, "b1", "b1", IntSchedule::BitSerial);
    let pop = paths.popcount == Popcount::Vpopcntdq;
    assert_eq!(
        pop_asm.contains("vpopcntd"),
        pop,
        "{name}: W1A1 asm vs path"
    );
    assert_eq!(pop_cost.contains("vpopcntdq"), pop, "{name}: {pop_cost}");

    if !pop {
        assert!(pop_cost.contains("vpshufb"), "{name}: {pop_cost}");
        assert!(
            pop_asm.contains("vpshufb"),
            "{name}: W1A1 asm lacks vpshufb"
        );
    }

    // The bit-serial WxAy kernel is the one the shared name describes:
    // vpandq + vpopcntq with VPOPCNTDQ, the vpshufb lookup without.
    let bs_asm = asm(
        &GemmSpec::bit_serial(
            16,
            1024,
            Dim::Static(4),
            "i2".parse().unwrap(),
            "u2".parse().unwrap(),
        ),
        cpu,
    );
    if pop {
        assert!(pop_cost.contains("vpandq+vpopcntq"), "{name}: {pop_cost}");
        for ins in ["vpandq", "vpopcntq"] {
            assert!(bs_asm.contains(ins), "{name}: W2A2 asm lacks {ins}");
        }
    } else {
        assert!(!bs_asm.contains("vpopcntq"), "{name}: W2A2 asm vs path");
        assert!(bs_asm.contains("vpshufb"), "{name}: W2A2 asm lacks vpshufb");
    }

    // AMX-INT8: the cost model prices `schedule = amx` as `tdpbusd` tiles
    // exactly where a model library gets the AMX kernel, and as
    // unavailable where the kernel is refused.
    let mut amx_spec = GemmSpec::int8(64, 256, Dim::Static(32), ElemType::U8);
    amx_spec.schedule = IntSchedule::Amx;
    let amx_cost = cost_kernel(ir, "u8", "i8", IntSchedule::Amx);
    let kernels = [ModelKernel {
        spec: &amx_spec,
        symbol: "k0".into(),
    }];
    let amx_asm = emit_model(&kernels, cpu, Emit::Asm).map(|b| String::from_utf8(b).unwrap());
    let amx = ir.x86_features().is_some_and(|f| f.amxint8);
    assert_eq!(amx_cost, "x86.amxint8.tdpbusd.u8xi8", "{name}");
    match amx_asm {
        Ok(asm) => {
            assert!(amx, "{name}: AMX kernel built without amxint8");
            assert!(asm.contains("tdpbusd"), "{name}: AMX asm lacks tdpbusd");
        }
        Err(e) => {
            assert!(!amx, "{name}: {e}");
            assert!(e.to_string().contains("AMX-INT8"), "{name}: {e}");
        }
    }

    // Float kernels: 512-bit registers exactly when the path is AVX-512.
    let f_asm = asm(
        &GemmSpec::new(16, 256, Dim::Static(4), "i4".parse().unwrap(), 32),
        cpu,
    );
    let avx512 = paths.vector == VectorIsa::Avx512;
    assert_eq!(f_asm.contains("%zmm"), avx512, "{name}: float asm vs path");
    assert_eq!(
        ir.x86_features()
            .map(|f| f.vector_isa() == VectorIsa::Avx512),
        Some(avx512)
    );
}

#[test]
fn named_targets_agree_with_the_cost_model() {
    for name in [
        "x86-64-v3",
        "icelake-server",
        "cascadelake",
        "skylake-avx512",
        "alderlake",
        "x86-64-v3+avx512vnni",
        "sapphirerapids",
        "icelake-server+amxint8",
    ] {
        let ir: Target = name.parse().unwrap();
        check(&ir, &CpuTarget::from_target(&ir).unwrap());
        // `--cpu NAME` on the command line is the same target.
        let named = CpuTarget::named("x86_64", name).unwrap();
        assert_eq!(named, CpuTarget::from_target(&ir).unwrap(), "{name}");
    }
}

#[test]
fn native_is_the_host_target() {
    let host = CpuTarget::host().unwrap();
    if !host.triple.starts_with("x86_64") {
        return;
    }
    let native = CpuTarget::named("x86_64", "native").unwrap();
    assert_eq!(native.x86.as_ref(), Target::host().x86_features());
    check(&Target::host(), &native);
}

#[test]
fn gpu_targets_are_refused_and_unknown_cpus_take_the_portable_path() {
    let e = CpuTarget::from_target(&"sm_80".parse().unwrap()).unwrap_err();
    assert!(e.to_string().contains("GPU"), "{e}");
    let t = CpuTarget::named("x86_64", "znver5").unwrap();
    assert_eq!(t.kernel_paths().vector, VectorIsa::Portable);
    assert_eq!(t.cpu, "znver5");
}

#[test]
fn cpu_names_llvm_does_not_know_are_refused() {
    for (arch, cpu) in [("x86_64", "no-such-cpu"), ("aarch64", "no-such-cpu")] {
        let e = CpuTarget::named(arch, cpu).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "unknown CPU '{cpu}' for {arch}-unknown-linux-gnu: LLVM does not know it"
            )),
            "{e}"
        );
    }
    let e = CpuTarget::named("x86_64", "no-such-cpu")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lowbit knows the kernel features of x86-64"),
        "{e}"
    );
    // lowbit's own `model+feature` syntax reports the feature at fault.
    let e = CpuTarget::named("x86_64", "x86-64-v3+avx9")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown x86 feature 'avx9'"), "{e}");
    // Names LLVM knows pass, whether or not lowbit knows their features.
    for (arch, cpu) in [
        ("x86_64", "tigerlake"),
        ("aarch64", "neoverse-v1"),
        ("aarch64", "generic"),
    ] {
        let t = CpuTarget::named(arch, cpu).unwrap();
        assert_eq!(t.cpu, cpu);
    }
}
