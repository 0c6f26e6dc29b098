//! The thread CPU time of one float GEMM kernel call on one thread: a
//! measure of the kernel's own cost that a busy shared machine disturbs
//! less than wall time (time spent descheduled is not counted). The same
//! packed weights are used every call, so with a small `m` they stay in
//! cache and the figure is the decode loop's ceiling; `lowbit bench` is the
//! DRAM-bound measurement.
//!
//! Run with
//! `cargo run --release -p lowbit-llvm --example kernel_cpu_time -- WEIGHT N GROUP [SCALE] [M]`,
//! e.g. `i4 1 32` (q4_0-like decode), `f4E2M1FN 1 16 f8E4M3FN` (NVFP4
//! without a tensor scale); `k = 14336`, `m = 4096` unless given. `N`
//! written `dN` (`d1`, `d8`) runs a kernel compiled for a run-time n
//! (`Dim::Dynamic`) with n = N.
//!
//! Limits: Linux only (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`); float
//! activations; no zero points.

use lowbit_llvm::{compile, Activations, Dim, GemmSpec, PackedWeights};
use lowbit_numerics::{ElemType, Rounding};

mod common;

use common::{arg, thread_cpu_ns};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: kernel_cpu_time WEIGHT N GROUP [SCALE] [M]";
    let weight: ElemType = arg(&args, 0, "WEIGHT")?.ok_or(usage)?;
    let n_arg: String = arg(&args, 1, "N")?.ok_or(usage)?;
    let (dynamic, n_text) = match n_arg.strip_prefix('d') {
        Some(rest) => (true, rest),
        None => (false, n_arg.as_str()),
    };
    let n: usize = n_text
        .parse()
        .map_err(|_| format!("N: cannot parse '{n_arg}'"))?;
    let group: usize = arg(&args, 2, "GROUP")?.ok_or(usage)?;
    let scale: ElemType = arg(&args, 3, "SCALE")?.unwrap_or(ElemType::F16);
    let m: usize = arg(&args, 4, "M")?.unwrap_or(4096);
    let k = 14336;
    let mut spec = GemmSpec::new(
        m,
        k,
        if dynamic {
            Dim::Dynamic
        } else {
            Dim::Static(n)
        },
        weight,
        group,
    );
    spec.weight.scale = scale;
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
    let scale_bytes = (scale.bits() / 8) as usize;
    let mut scales = Vec::new();
    for i in 0..m * spec.groups_per_row() {
        let v = 0.01 + 0.04 * ((i * 7919) % 1000) as f64 / 1000.0;
        let c = scale.encode(v, Rounding::NearestEven, true);
        scales.extend_from_slice(&c.to_le_bytes()[..scale_bytes]);
    }
    let packed = PackedWeights::from_raw(&spec, codes, scales, Vec::new())?;
    let x: Vec<f32> = (0..n * k)
        .map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5)
        .collect();
    let mut y = vec![0f32; n * m];

    let mut times = Vec::new();
    for _ in 0..60 {
        let t = thread_cpu_ns()?;
        kernel.run(Activations::F32(&x), &packed, None, &mut y, n, 1)?;
        times.push(thread_cpu_ns()? - t);
    }
    times.sort_unstable();
    let median = times[times.len() / 2] as f64 * 1e-9;
    let gflop = 2.0 * (m * k * n) as f64 / 1e9;
    println!(
        "{spec} (n = {n}): thread CPU time median {:.3} ms, min {:.3} ms; {:.1} GFLOP/s, {:.1} GB/s of weights at the median",
        median * 1e3,
        times[0] as f64 * 1e-6,
        gflop / median,
        packed.byte_len() as f64 / median / 1e9
    );
    Ok(())
}
