//! The thread CPU time of one block-dot kernel call (opt-in activation
//! quantization, `codegen/blockdot.rs`) on one thread, with the same
//! packed weights every call: with a small `m` they stay in L2 and the
//! figure is the kernel's compute ceiling (cycles per 16-row panel and
//! 32-block at the printed clock), which `lowbit bench gemm --act-quant`
//! (weights from DRAM) cannot separate from memory stalls.
//!
//! Run with
//! `cargo run --release -p lowbit-llvm --example blockdot_cpu_time -- WEIGHT N [M] [GHZ]`,
//! `WEIGHT` `i4` (q4_0) or `i8` (q8_0); `m = 128` (0.9 MiB of `i4`
//! codes), a 3.4 GHz clock for the cycle figure and `k = 14336` unless
//! given. `COPIES` > 1 rotates the calls over that many copies of the
//! weights (e.g. `i4 8 4096 3.5 14336 20`: 660 MB, more than the LLC),
//! so the figure includes the waits on DRAM, still on one thread.
//! The time includes the per-call activation quantization.
//!
//! `N` written `dN` (`d8`) runs a kernel compiled for a run-time n. The
//! thread CPU time of compiling the kernel is printed too.
//!
//! Limits: Linux only (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`); the
//! clock is an assumption, not measured.

use lowbit_llvm::{compile, Activations, CpuTarget, Dim, GemmKernel, GemmSpec, PackedWeights};
use lowbit_numerics::{ElemType, Rounding};

mod common;

use common::{arg, thread_cpu_ns};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: blockdot_cpu_time WEIGHT N [M] [GHZ] [K] [COPIES]";
    let weight: ElemType = arg(&args, 0, "WEIGHT")?.ok_or(usage)?;
    let n_arg: String = arg(&args, 1, "N")?.ok_or(usage)?;
    let (dynamic, n_text) = match n_arg.strip_prefix('d') {
        Some(rest) => (true, rest),
        None => (false, n_arg.as_str()),
    };
    let n: usize = n_text
        .parse()
        .map_err(|_| format!("N: cannot parse '{n_arg}'"))?;
    let m: usize = arg(&args, 2, "M")?.unwrap_or(128);
    let ghz: f64 = arg(&args, 3, "GHZ")?.unwrap_or(3.4);
    let k: usize = arg(&args, 4, "K")?.unwrap_or(14336);
    let copies: usize = arg(&args, 5, "COPIES")?.unwrap_or(1).max(1);
    let mut spec = GemmSpec::blockdot(
        m,
        k,
        if dynamic {
            Dim::Dynamic
        } else {
            Dim::Static(n)
        },
    );
    spec.weight.dtype = weight;
    // The second of two uncached compilations (the first pays LLVM's
    // one-time set-up).
    let target = CpuTarget::host()?;
    let mut compile_ns = 0;
    for _ in 0..2 {
        let t = thread_cpu_ns()?;
        GemmKernel::compile_uncached(&spec, &target)?;
        compile_ns = thread_cpu_ns()? - t;
    }
    let kernel = compile(&spec)?;

    // Arbitrary codes (every byte value), scales 0.01 .. 0.05.
    let mut codes = vec![0u8; spec.packed_weight_type().byte_size() as usize];
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for c in codes.iter_mut() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        *c = (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
    }
    let mut scales = Vec::new();
    for i in 0..m * spec.groups_per_row() {
        let v = 0.01 + 0.04 * ((i * 7919) % 1000) as f64 / 1000.0;
        let c = ElemType::F16.encode(v, Rounding::NearestEven, true);
        scales.extend_from_slice(&c.to_le_bytes()[..2]);
    }
    let packed = (0..copies)
        .map(|_| PackedWeights::from_raw(&spec, codes.clone(), scales.clone(), Vec::new()))
        .collect::<Result<Vec<_>, _>>()?;
    let x: Vec<f32> = (0..n * k)
        .map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5)
        .collect();
    let mut y = vec![0f32; n * m];

    let mut times = Vec::new();
    for i in 0..200 {
        let t = thread_cpu_ns()?;
        kernel.run(
            Activations::F32(&x),
            &packed[i % copies],
            None,
            &mut y,
            n,
            1,
        )?;
        times.push(thread_cpu_ns()? - t);
    }
    times.sort_unstable();
    let median = times[times.len() / 2] as f64 * 1e-9;
    let panel_blocks = (m.div_ceil(16) * k.div_ceil(32)) as f64;
    println!(
        "{weight} m={m} k={k} n={n_arg}: thread CPU time median {:.1} us, min {:.1} us; {:.1} cycles per panel-block at {ghz} GHz (median), {:.1} GB/s of weights; compile {:.1} ms CPU",
        median * 1e6,
        times[0] as f64 * 1e-3,
        median * ghz * 1e9 / panel_blocks,
        packed[0].byte_len() as f64 / median / 1e9,
        compile_ns as f64 * 1e-6
    );
    Ok(())
}
