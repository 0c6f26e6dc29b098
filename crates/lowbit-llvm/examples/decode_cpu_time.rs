//! The CPU time of a float GEMM kernel call with its weights read from
//! DRAM: the weights rotate over copies larger than the last-level cache
//! (as `lowbit bench gemm`), and each call is timed in process CPU time
//! divided by the thread count, which leaves out the time the threads were
//! descheduled. On a busy shared machine this disturbs the DRAM-bound
//! figure much less than wall time (other processes still share the
//! memory bus, so it is not a quiet-machine figure either).
//!
//! Run with
//! `cargo run --release -p lowbit-llvm --example decode_cpu_time -- WEIGHT GROUP [SCALE] [THREADS] [M] [K]`,
//! e.g. `i4 32` (q4_0-like decode, n = 1), `f4E2M1FN 32 f8E8M0FNU`
//! (MXFP4), `f8E4M3FN 0 f32` (per-channel); 2 threads, `m = 4096`,
//! `k = 14336` unless given.
//!
//! It also prints the process's `AnonHugePages` (whether the packed
//! weights got transparent huge pages, see `lowbit_llvm::pack`).
//!
//! Limits: Linux only (`clock_gettime`, `/proc`); n = 1, f32 activations,
//! no zero points; the CPU time of a thread that waits for the others at
//! the end of a call counts only while it runs.

use lowbit_llvm::bench::{BenchActivations, Rotation};
use lowbit_llvm::{compile, Dim, GemmSpec, WeightGranularity};
use lowbit_numerics::ElemType;

mod common;

use common::{arg, now_ns, MONOTONIC, PROCESS_CPUTIME};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: decode_cpu_time WEIGHT GROUP [SCALE] [THREADS] [M] [K]";
    let weight: ElemType = arg(&args, 0, "WEIGHT")?.ok_or(usage)?;
    let group: usize = arg(&args, 1, "GROUP")?.ok_or(usage)?;
    let scale: ElemType = arg(&args, 2, "SCALE")?.unwrap_or(ElemType::F16);
    let threads: usize = arg(&args, 3, "THREADS")?.unwrap_or(2);
    let m: usize = arg(&args, 4, "M")?.unwrap_or(4096);
    let k: usize = arg(&args, 5, "K")?.unwrap_or(14336);
    let mut spec = GemmSpec::new(m, k, Dim::Static(1), weight, group.max(16));
    if group == 0 {
        spec.weight.granularity = WeightGranularity::PerChannel;
    }
    spec.weight.scale = scale;
    let kernel = compile(&spec)?;
    let mut rot = Rotation::for_spec(&spec)?;
    let acts = BenchActivations::new(1, k);
    let mut y = vec![0f32; m];
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    let len = rot.len();
    for i in 0..(3 * len).max(60) {
        let w = rot.next_copy();
        let (c0, t0) = (now_ns(PROCESS_CPUTIME)?, now_ns(MONOTONIC)?);
        kernel.run(acts.get(ElemType::F32), w, None, &mut y, 1, threads)?;
        let (c1, t1) = (now_ns(PROCESS_CPUTIME)?, now_ns(MONOTONIC)?);
        // The first pass over the copies warms the pool and the pages.
        if i >= len {
            cpu.push((c1 - c0) as f64 / threads as f64 * 1e-9);
            wall.push((t1 - t0) as f64 * 1e-9);
        }
    }
    // Whether the packed weights got transparent huge pages (see `pack`).
    let smaps = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let huge = smaps
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .unwrap_or("AnonHugePages: unknown");
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    let (c, w) = (cpu[cpu.len() / 2], wall[wall.len() / 2]);
    let bytes = spec.weight_bytes() as f64;
    println!(
        "{spec} threads={threads}: CPU time per thread median {:.3} ms ({:.2} GB/s), wall median {:.3} ms ({:.2} GB/s), {} calls; {}",
        c * 1e3,
        bytes / c / 1e9,
        w * 1e3,
        bytes / w / 1e9,
        cpu.len(),
        huge.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    Ok(())
}
