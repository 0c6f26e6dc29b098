//! The AMX-INT8 W8A8 and W4A8 schedule (`GemmKernel::compile_amx`;
//! `i8`, `i4` and `u4` weights, the 4-bit ones split into B tiles in the
//! kernel's staging buffer) against the
//! interpreter's `matmul` to `i32`, bit for bit: ragged m (partial panels,
//! an odd number of panels, rows split between threads inside a panel),
//! n (not a multiple of the 32 activation rows a block takes) and k (not
//! a multiple of the 64-element tile depth), `u8` and `i8` activations;
//! the epilogues (bias, ReLU, requantize) through the IR-visible `amx`
//! schedule and the cached `compile`; the AMX peak probe; and the specs,
//! hosts and AOT builds it refuses. On a host without AMX-INT8 the kernel
//! runs are skipped with a message, only where `/proc/cpuinfo` agrees.

mod common;

use common::{
    assert_int_kernel_on_1_and_2_threads, int_epilogue_reference, int_reference, random_codes, t,
    Rng,
};
use lowbit_ir::IntSchedule;
use lowbit_llvm::{
    compile, Activation, Activations, CpuError, CpuTarget, Dim, Epilogue, GemmKernel, GemmSpec,
    PackedWeights, Requant,
};

/// Whether the host has AMX-INT8; where it has not, says so on stderr
/// (the tests that need it then check only the refusals).
fn has_amx() -> bool {
    let host = CpuTarget::host().unwrap();
    let llvm = host.has("amx-tile") && host.has("amx-int8");
    // So that the bit-exactness tests cannot skip silently where the CPU
    // has AMX: Linux lists it in /proc/cpuinfo, and LLVM must agree.
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let listed = info.contains(" amx_tile") && info.contains(" amx_int8");
        assert_eq!(
            llvm, listed,
            "LLVM's host features and /proc/cpuinfo disagree on AMX"
        );
    }
    if !llvm {
        eprintln!("skipping the AMX kernel runs: the host has no amx_int8");
    }
    llvm
}

#[test]
fn amx_w8a8_is_bit_exact() {
    amx_is_bit_exact("i8", 0xa3c5);
}

/// 4-bit weights stay 4-bit in memory and are split per k block into the
/// staging buffer; the k blocks of the big cases (k up to 1300, 8 steps
/// of 64 per block) cover a ragged last block.
#[test]
fn amx_w4a8_is_bit_exact() {
    amx_is_bit_exact("i4", 0x14a8);
    amx_is_bit_exact("u4", 0x04a8);
}

/// Random ragged shapes with `weight` codes, `u8` and `i8` activations,
/// static and dynamic n, on 1 and 2 threads, against the interpreter.
fn amx_is_bit_exact(weight: &str, seed: u64) {
    if !has_amx() {
        // Covered by `amx_refuses_what_it_cannot_run` on such hosts.
        return;
    }
    let mut rng = Rng(seed);
    for case_no in 0..18 {
        let act = if case_no % 2 == 0 { t("u8") } else { t("i8") };
        // The last cases span several row blocks (8 panel pairs), column
        // blocks (256 activation rows) and k blocks (512).
        let big = case_no >= 14;
        let m = 1 + rng.below(if big { 700 } else { 120 }) as usize;
        let k = 1 + rng.below(if big { 1300 } else { 1500 }) as usize;
        let n = 1 + rng.below(if big { 600 } else { 70 }) as usize;
        let dim = if case_no % 3 == 0 {
            Dim::Dynamic
        } else {
            Dim::Static(n)
        };
        let spec = GemmSpec::int(m, k, dim, t(weight), act);
        let w = random_codes(&mut rng, t(weight), m, k);
        let x = random_codes(&mut rng, act, n, k);
        let want = int_reference(&x, &w);
        let kernel = GemmKernel::compile_amx(&spec).unwrap();
        let packed = PackedWeights::pack_int(&spec, &w).unwrap();
        assert_int_kernel_on_1_and_2_threads(&kernel, &packed, &x, &want, &format!("{spec} n={n}"));
    }
}

/// A spec on the IR's `amx` schedule goes through the cached `compile`
/// with its epilogue: bias (near the i32 limits, so the wrapping add
/// matters), ReLU and dyadic requantization in several combinations, on
/// ragged shapes across row, column and k blocks, static and dynamic n,
/// one and two threads: bit-exact against the interpreter.
#[test]
fn amx_epilogues_are_bit_exact() {
    if !has_amx() {
        return;
    }
    let mut rng = Rng(0x5eed_a3c5);
    let combos = [
        (true, false, false),
        (true, true, false),
        (false, true, false),
        (true, false, true),
        (false, true, true),
        (true, true, true),
    ];
    // Each combination with i8, i4 and u4 weights.
    let cases = combos
        .iter()
        .flat_map(|&c| ["i8", "i4", "u4"].map(move |w| (c, w)));
    for (case_no, ((bias_on, relu, requant), weight)) in cases.enumerate() {
        let act = if case_no % 2 == 0 { t("u8") } else { t("i8") };
        let big = case_no >= 12;
        let m = 1 + rng.below(if big { 600 } else { 90 }) as usize;
        let k = 1 + rng.below(1200) as usize;
        let n = 1 + rng.below(if big { 400 } else { 60 }) as usize;
        let mut spec = GemmSpec::int(
            m,
            k,
            if case_no % 3 == 0 {
                Dim::Dynamic
            } else {
                Dim::Static(n)
            },
            t(weight),
            act,
        );
        spec.schedule = IntSchedule::Amx;
        spec.epilogue = Epilogue {
            bias: bias_on,
            activation: if relu {
                Activation::Relu
            } else {
                Activation::None
            },
            requantize: requant,
        };
        let w = random_codes(&mut rng, t(weight), m, k);
        let x = random_codes(&mut rng, act, n, k);
        let bias: Vec<i32> = (0..m)
            .map(|r| match r % 3 {
                0 => i32::MAX - rng.below(1 << 20) as i32,
                1 => i32::MIN + rng.below(1 << 20) as i32,
                _ => rng.next() as i32 >> 12,
            })
            .collect();
        let mults: Vec<i32> = (0..m).map(|_| 1 + rng.below(1 << 20) as i32).collect();
        let shifts: Vec<u32> = (0..m).map(|_| 8 + rng.below(30) as u32).collect();
        let zp = 3i8;
        let want = int_epilogue_reference(
            &x,
            &w,
            IntSchedule::Amx,
            bias_on.then_some(&bias[..]),
            relu,
            requant.then_some((&mults[..], &shifts[..], zp)),
        );
        let kernel = compile(&spec).unwrap();
        assert_eq!(kernel.spec().schedule, IntSchedule::Amx);
        let packed = PackedWeights::pack_int(&spec, &w).unwrap();
        let u: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
        let i: Vec<i8> = u.iter().map(|&b| b as i8).collect();
        let acts = || {
            if act == t("u8") {
                Activations::U8(&u)
            } else {
                Activations::I8(&i)
            }
        };
        let bias_arg = bias_on.then_some(&bias[..]);
        for threads in [1, 2] {
            let got: Vec<i128> = if requant {
                let rq = Requant {
                    multipliers: &mults,
                    shifts: &shifts,
                    zero_point: zp,
                };
                let mut y = vec![0i8; n * m];
                kernel
                    .run_requant_bias(acts(), &packed, bias_arg, &rq, &mut y, n, threads)
                    .unwrap();
                y.iter().map(|&v| i128::from(v)).collect()
            } else {
                let mut y = vec![0i32; n * m];
                kernel
                    .run_int_bias(acts(), &packed, bias_arg, &mut y, n, threads)
                    .unwrap();
                y.iter().map(|&v| i128::from(v)).collect()
            };
            assert_eq!(got, want, "{spec} n={n}, {threads} threads");
        }
    }
}

#[test]
fn amx_probe_runs_where_the_host_has_amx() {
    let amx = has_amx();
    match lowbit_llvm::probe::amx_peak_gops(1, 1).unwrap() {
        Some(p) => assert!(amx && p.is_finite() && p > 0.0),
        None => assert!(!amx),
    }
}

#[test]
fn amx_refuses_what_it_cannot_run() {
    let unsupported = |spec: &GemmSpec| {
        matches!(
            GemmKernel::compile_amx(spec),
            Err(CpuError::Unsupported { .. })
        )
    };
    // 2-bit weights, float and b1 activations are not on this schedule,
    // whatever the host.
    assert!(unsupported(&GemmSpec::int(
        64,
        64,
        Dim::Dynamic,
        t("i2"),
        t("u8")
    )));
    assert!(unsupported(&GemmSpec::new(
        64,
        64,
        Dim::Dynamic,
        t("i8"),
        32
    )));
    assert!(unsupported(&GemmSpec::binary(64, 64, Dim::Dynamic)));
    // Neither is an AOT object (its caller packs activations into tiles).
    let mut plain = GemmSpec::int8(64, 64, Dim::Dynamic, t("u8"));
    plain.schedule = IntSchedule::Amx;
    let host = CpuTarget::host().unwrap();
    let e = lowbit_llvm::aot::emit(&plain, &host, lowbit_llvm::aot::Emit::Obj);
    assert!(matches!(e, Err(CpuError::Unsupported { .. })), "{e:?}");
    // A W8A8 spec, with or without an epilogue, compiles exactly where the
    // host has AMX-INT8.
    let mut biased = plain.clone();
    biased.epilogue = Epilogue {
        bias: true,
        ..Epilogue::default()
    };
    assert_eq!(!unsupported(&plain), has_amx());
    // So does a W4A8 one (i4 and u4 weights).
    for w in ["i4", "u4"] {
        let spec = GemmSpec::int(64, 64, Dim::Dynamic, t(w), t("i8"));
        assert_eq!(!unsupported(&spec), has_amx(), "{w}");
    }
    assert_eq!(!unsupported(&biased), has_amx());
    assert_eq!(
        !matches!(compile(&plain), Err(CpuError::Unsupported { .. })),
        has_amx()
    );
}
