//! The AMX block-dot kernel (`codegen/amxdot.rs`) against the
//! interpreter (within the block-dot bound) and against the `vpdpbusd`
//! block-dot kernel (bit for bit), which the same host builds when its
//! target's features lack `amx-int8`: ragged m (not a multiple of 16, odd
//! and even panel counts) and k (not a multiple of 32), static n = 8, 9,
//! 16, 17, 24, 33 (every column-tile kind and remainder), `i4` and `i8`
//! weights, 1 and 2 threads; and which specs the JIT puts on AMX (a
//! static n >= 8 only), also with the `i4` codes centred without GFNI.
//! On a host without AMX-INT8 (or where Linux
//! refuses the tile state) the tests print why and check nothing.

mod common;

use common::{BlockdotCase, Rng};
use lowbit_llvm::{CpuTarget, Dim, GemmKernel, GemmSpec};
use lowbit_numerics::ElemType;

/// The host target, and the host without AMX (the `vpdpbusd` kernel's
/// target); `None` (after printing why) where the JIT does not put
/// block-dot specs on AMX here (no AMX-INT8, or the tile state refused).
fn targets() -> Option<(CpuTarget, CpuTarget)> {
    let host = CpuTarget::host().unwrap();
    if !(host.has("amx-tile") && host.has("amx-int8")) {
        eprintln!("skipped: the host has no AMX-INT8 ({})", host.describe());
        return None;
    }
    let mut vnni = host.clone();
    vnni.features = host
        .features
        .split(',')
        .filter(|f| !f.starts_with("+amx"))
        .collect::<Vec<_>>()
        .join(",");
    // Whether Linux grants the tile state: the AMX W8A8 kernel compiles
    // only then (independent of LOWBIT_BLOCKDOT_AMX).
    let w8a8 = GemmSpec::int8(16, 64, Dim::Static(16), ElemType::U8);
    if let Err(e) = GemmKernel::compile_amx(&w8a8) {
        eprintln!("skipped: no AMX tile state here: {e}");
        return None;
    }
    Some((host, vnni))
}

/// Whether `LOWBIT_BLOCKDOT_AMX=0` turned the AMX block-dot kernel off
/// in this process (then the tests that need it say so and stop).
fn switched_off() -> bool {
    let off = std::env::var_os("LOWBIT_BLOCKDOT_AMX").is_some_and(|v| v == "0");
    if off {
        eprintln!("LOWBIT_BLOCKDOT_AMX=0: the AMX block-dot kernel is off");
    }
    off
}

/// One random case: the AMX kernel within the bound of the interpreter
/// and bit-identical to the `vpdpbusd` kernel, on 1 and 2 threads.
fn check(
    rng: &mut Rng,
    (amx_t, vnni_t): &(CpuTarget, CpuTarget),
    (m, k, n): (usize, usize, usize),
    dim: Dim,
    wdt: &str,
) {
    let case = BlockdotCase::random(rng, m, k, n, dim, wdt);
    let amx = GemmKernel::compile_uncached(&case.spec, amx_t).unwrap();
    let vnni = GemmKernel::compile_uncached(&case.spec, vnni_t).unwrap();
    // A static n of at least 8 (i4) or 9 (i8) takes AMX; below that
    // (i8 n = 8 here) both kernels are `vpdpbusd`.
    let least = if wdt == "i8" { 9 } else { 8 };
    assert_eq!(amx.uses_amx(), n >= least, "{}", case.spec);
    assert!(!vnni.uses_amx(), "{}", case.spec);
    for threads in [1, 2] {
        let what = format!("threads={threads}");
        let y = case.run(&amx, threads);
        case.assert_within_bound(&y, &what);
        let y_vnni = case.run(&vnni, threads);
        for (i, (a, v)) in y.iter().zip(&y_vnni).enumerate() {
            assert_eq!(
                a.to_bits(),
                v.to_bits(),
                "{} {what}: y[{}, {}] = {a} (amx), {v} (vpdpbusd)",
                case.spec,
                i / m,
                i % m
            );
        }
    }
}

#[test]
fn amx_kernel_is_bit_identical_to_vpdpbusd_and_within_the_bound() {
    let Some(targets) = targets() else { return };
    if switched_off() {
        return;
    }
    let mut rng = Rng(0xa3c5_0d07_1e55_0001);
    // Column tiles: 8 (two panels), 9 and 16 (one panel), 16 + 1,
    // 16 + 8, 16 + 16 + 1; odd and even panel counts, m and k ragged; odd
    // and even block counts (one block, fewer blocks than the pipeline is
    // deep, more than the rings hold).
    for &(m, k, n) in &[
        (21usize, 45usize, 8usize),
        (50, 257, 8),
        (33, 20, 8),
        (19, 1000, 8),
        (16, 64, 9),
        (37, 100, 16),
        (70, 96, 17),
        (48, 128, 17),
        (29, 31, 17),
        (200, 333, 24),
        (45, 77, 33),
    ] {
        for wdt in ["i4", "i8"] {
            check(&mut rng, &targets, (m, k, n), Dim::Static(n), wdt);
        }
    }
}

/// The `i4` codes centred without GFNI (the unsigned nibbles minus 8
/// instead of one affine map per nibble vector): a host target with
/// `gfni` removed from its features still takes the AMX kernel and stays
/// bit-identical to `vpdpbusd`.
#[test]
fn centred_nibbles_without_gfni_are_bit_identical() {
    let Some((amx, vnni)) = targets() else { return };
    if switched_off() {
        return;
    }
    let mut no_gfni = amx.clone();
    no_gfni.features = amx
        .features
        .split(',')
        .filter(|f| *f != "+gfni")
        .collect::<Vec<_>>()
        .join(",");
    assert!(!no_gfni.has("gfni") && no_gfni.has("amx-int8"));
    let mut rng = Rng(0xa3c5_0d07_1e55_0002);
    for &(m, k, n) in &[(50usize, 257usize, 8usize), (37, 100, 16), (45, 77, 33)] {
        check(
            &mut rng,
            &(no_gfni.clone(), vnni.clone()),
            (m, k, n),
            Dim::Static(n),
            "i4",
        );
    }
}

#[test]
fn fewer_columns_and_run_time_n_keep_vpdpbusd() {
    let Some((host, _)) = targets() else { return };
    if switched_off() {
        return;
    }
    for dim in [Dim::Static(1), Dim::Static(7), Dim::Dynamic] {
        let spec = GemmSpec::blockdot(32, 64, dim);
        let kernel = GemmKernel::compile_uncached(&spec, &host).unwrap();
        assert!(!kernel.uses_amx(), "{spec}");
    }
    let spec = GemmSpec::blockdot(32, 64, Dim::Static(8));
    let kernel = GemmKernel::compile_uncached(&spec, &host).unwrap();
    assert!(kernel.uses_amx(), "{spec}");
    // `i8` weights: `vpdpbusd` at n = 8 (faster there from DRAM), AMX
    // from 9 columns.
    for (n, amx) in [(8, false), (9, true)] {
        let mut spec = GemmSpec::blockdot(32, 64, Dim::Static(n));
        spec.weight.dtype = lowbit_numerics::ElemType::I8;
        let kernel = GemmKernel::compile_uncached(&spec, &host).unwrap();
        assert_eq!(kernel.uses_amx(), amx, "{spec}");
    }
}

/// With `LOWBIT_BLOCKDOT_AMX=0` (read once per process) a static n >= 8
/// stays on `vpdpbusd`; unset, it runs on AMX. Run by itself and, by
/// `environment_switch_keeps_vpdpbusd`, in a child process with the
/// variable set.
#[test]
fn amx_follows_the_environment_switch() {
    let Some((host, _)) = targets() else { return };
    let off = switched_off();
    let spec = GemmSpec::blockdot(32, 64, Dim::Static(8));
    let kernel = GemmKernel::compile_uncached(&spec, &host).unwrap();
    assert_eq!(kernel.uses_amx(), !off, "LOWBIT_BLOCKDOT_AMX off: {off}");
}

#[test]
fn environment_switch_keeps_vpdpbusd() {
    if targets().is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "amx_follows_the_environment_switch",
            "--nocapture",
        ])
        .env("LOWBIT_BLOCKDOT_AMX", "0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}
