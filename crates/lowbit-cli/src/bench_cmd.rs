//! `lowbit bench gemm`: times a quantized GEMM kernel the way a model sees
//! it and reports it against this machine's own roofline.
//!
//! The machine is measured first with the backend's JIT probes (DRAM read
//! bandwidth over a buffer larger than the last-level cache, f32 FMA peak),
//! both with the benchmark's thread count. The packed weights are then
//! copied until the copies exceed the last-level cache by 25%, and each call
//! uses the next copy, so weights come from DRAM as in real decoding.
//! Reported time is the median over the samples (at least 20 and 1 s).

use crate::args::{self, Spec};
use crate::gemm_args::{gemm_spec, GEMM_SPECS};
use crate::Failure;
use lowbit_llvm::probe::{
    fma_peak_gflops, llc_bytes, popcount_peak_gops, read_bandwidth_gbps, vnni_peak_gops,
};
use lowbit_llvm::{compile, Activations, GemmSpec, PackedWeights};
use std::time::{Duration, Instant};

/// `lowbit bench --help`.
pub const HELP: &str = "\
Benchmark a kernel against this machine's measured roofline.

Usage: lowbit bench gemm --m M --k K --n N --weight DTYPE [--group G]
           [--scale DTYPE] [--zero-point] [--tensor-scale T]
           --act DTYPE [--threads T]
           [--backend cpu] [--json]

Computes Y[n,m] = X[n,k] . W[m,k]^T with W quantized as asked:
  --weight DTYPE   weight codes: i1..i8, u1..u8, b1, f8E4M3FN, f8E5M2,
                   f4E2M1FN
  --group G        one scale per G elements along k (16 or a multiple of
                   32); without it, one scale per output row
  --scale DTYPE    scale type: f16 (default), f32, bf16, f8E8M0FNU (MXFP4:
                   --weight f4E2M1FN --group 32), f8E4M3FN (NVFP4: --group 16)
  --zero-point     integer weights get one zero point per scale
  --tensor-scale T an f32 scale multiplying every weight (NVFP4's second
                   level), folded into each group scale
  --act DTYPE      activation type: f32, f16, bf16; u8 or i8 with --weight
                   i8 runs the W8A8 kernel, with --weight i4 or u4 the
                   W4A8 kernel (exact i32 results, VNNI where present; no
                   scales on this path); b1 with --weight b1 runs the W1A1
                   popcount kernel (exact i32)
  --threads T      threads (default: all cores); the probes use T too
  --backend cpu    the only backend built in
  --samples S      at least S timed calls (default 20; at least 1 s total)
  --json           one JSON document instead of text

The weight working set rotates over copies exceeding the last-level cache.
Prints the median seconds, GFLOP/s (2*m*k*n; integer ops for W8A8/W4A8),
weight GB/s (packed codes, scales and zero points per call), and their
fractions of the measured DRAM read bandwidth and compute peak (f32 FMA,
int8 VNNI for W8A8/W4A8, or the xor+popcount step for W1A1, 2 binary ops per
bit pair). JSON keys: seconds_median, gflops,
weight_gbps, bandwidth_fraction, compute_fraction, machine {mem_gbps,
peak_gops}, plus compile_ms, samples, threads, copies, weight_bytes, spec,
target.
";

fn specs() -> Vec<Spec> {
    let mut v: Vec<Spec> = GEMM_SPECS
        .iter()
        .map(|s| Spec {
            long: s.long,
            short: s.short,
            takes_value: s.takes_value,
        })
        .collect();
    for (long, takes_value) in [
        ("threads", true),
        ("backend", true),
        ("samples", true),
        ("json", false),
        ("help", false),
    ] {
        v.push(Spec {
            long,
            short: if long == "help" { Some('h') } else { None },
            takes_value,
        });
    }
    v
}

/// Runs `lowbit bench` with the arguments after the command name.
pub fn main(argv: &[String]) -> Result<(), Failure> {
    let specs = specs();
    let a = args::parse(argv, &specs).map_err(Failure::usage)?;
    if a.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    match a.positional.first().map(String::as_str) {
        Some("gemm") => {}
        None => return Err(Failure::usage("missing benchmark name (only 'gemm')")),
        Some(w) => {
            return Err(Failure::usage(format!(
                "unknown benchmark '{w}' (only 'gemm')"
            )))
        }
    }
    if let Some(extra) = a.positional.get(1) {
        return Err(Failure::usage(format!("unexpected argument '{extra}'")));
    }
    match a.last("backend").unwrap_or("cpu") {
        "cpu" => {}
        b @ ("cranelift" | "gpu") => {
            return Err(Failure::msg(format!(
                "backend '{b}' is not built into this lowbit (available: cpu)"
            )))
        }
        b => return Err(Failure::usage(format!("unknown backend '{b}'"))),
    }
    let threads = match a.last("threads") {
        None => std::thread::available_parallelism().map_or(1, |t| t.get()),
        Some(t) => match t.parse::<usize>() {
            Ok(t) if t > 0 => t,
            _ => {
                return Err(Failure::usage(format!(
                    "--threads expects a positive integer, got '{t}'"
                )))
            }
        },
    };
    let min_samples = match a.last("samples") {
        None => 20,
        Some(s) => s.parse::<usize>().ok().filter(|&s| s > 0).ok_or_else(|| {
            Failure::usage(format!("--samples expects a positive integer, got '{s}'"))
        })?,
    };
    let spec = gemm_spec(&a, false)?;
    let n = match spec.n {
        lowbit_llvm::Dim::Static(n) => n,
        lowbit_llvm::Dim::Dynamic => return Err(Failure::usage("--n must be a number")),
    };
    check_memory(&spec, n)?;
    let r = bench(&spec, n, threads, min_samples).map_err(|e| Failure::msg(e.to_string()))?;
    if a.has("json") {
        println!("{}", r.json(&spec, threads));
    } else {
        print!("{}", r.text(&spec, threads));
    }
    Ok(())
}

struct Report {
    target: String,
    compile: Duration,
    llc: u64,
    copies: usize,
    weight_bytes: usize,
    mem_gbps: f64,
    peak_gflops: f64,
    peak_kind: &'static str,
    median: f64,
    min: f64,
    samples: usize,
    flops: f64,
}

impl Report {
    fn gflops(&self) -> f64 {
        self.flops / self.median / 1e9
    }
    fn weight_gbps(&self) -> f64 {
        self.weight_bytes as f64 / self.median / 1e9
    }

    fn text(&self, spec: &GemmSpec, threads: usize) -> String {
        let bits = self.weight_bytes as f64 * 8.0 / (spec.m * spec.k) as f64;
        format!(
            "{spec}\n\
             target: {} ({threads} threads)\n\
             kernel: JIT-compiled in {:.1} ms; weights {:.1} MB packed ({bits:.2} bits/weight), \
             {} copies rotated ({:.0} MB > LLC {:.0} MB)\n\
             machine: DRAM read {:.1} GB/s, {} {:.1} GOP/s (probes, {threads} threads, best of 5)\n\
             median: {:.6} s (min {:.6} s, {} samples)\n\
             GOP/s: {:.1} ({:.3} of peak)\n\
             weight GB/s: {:.1} ({:.3} of DRAM bandwidth)\n",
            self.target,
            self.compile.as_secs_f64() * 1e3,
            self.weight_bytes as f64 / 1e6,
            self.copies,
            (self.copies * self.weight_bytes) as f64 / 1e6,
            self.llc as f64 / 1e6,
            self.mem_gbps,
            self.peak_kind,
            self.peak_gflops,
            self.median,
            self.min,
            self.samples,
            self.gflops(),
            self.gflops() / self.peak_gflops,
            self.weight_gbps(),
            self.weight_gbps() / self.mem_gbps,
        )
    }

    fn json(&self, spec: &GemmSpec, threads: usize) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        format!(
            "{{\"seconds_median\": {:e}, \"gflops\": {:.3}, \"weight_gbps\": {:.3}, \
             \"bandwidth_fraction\": {:.4}, \"compute_fraction\": {:.4}, \
             \"machine\": {{\"mem_gbps\": {:.3}, \"peak_gops\": {:.3}, \"peak_kind\": \"{}\"}}, \
             \"compile_ms\": {:.3}, \"samples\": {}, \"threads\": {threads}, \"copies\": {}, \
             \"weight_bytes\": {}, \"spec\": \"{}\", \"target\": \"{}\"}}",
            self.median,
            self.gflops(),
            self.weight_gbps(),
            self.weight_gbps() / self.mem_gbps,
            self.gflops() / self.peak_gflops,
            self.mem_gbps,
            self.peak_gflops,
            self.peak_kind,
            self.compile.as_secs_f64() * 1e3,
            self.samples,
            self.copies,
            self.weight_bytes,
            esc(&spec.to_string()),
            esc(&self.target),
        )
    }
}

/// Bytes of the rotated weight copies (at least 1.25 x LLC).
fn rotation_bytes() -> usize {
    let llc = llc_bytes().unwrap_or(64 << 20);
    ((llc as f64 * 1.25) as usize).max(256 << 20)
}

/// Refuses a benchmark whose working set (two weight copies or the
/// rotation, plus activations and outputs) would not fit in 80% of the
/// available memory, instead of aborting on allocation.
fn check_memory(spec: &GemmSpec, n: usize) -> Result<(), Failure> {
    let n_elems = n.saturating_mul(spec.k.max(spec.m));
    let need = spec
        .weight_bytes()
        .saturating_mul(2)
        .max(rotation_bytes())
        .saturating_add(n_elems.saturating_mul(16));
    match available_memory() {
        Some(avail) if need as u64 > avail / 10 * 8 => Err(Failure::msg(format!(
            "{spec}: the benchmark needs about {:.1} GB, more than 80% of the {:.1} GB available",
            need as f64 / 1e9,
            avail as f64 / 1e9
        ))),
        _ => Ok(()),
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// xorshift64*: benchmark data only needs to be arbitrary, not random.
fn fill(buf: &mut [u8], mut s: u64) {
    for chunk in buf.chunks_mut(8) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let v = s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Random packed weights with sane scales (0.01 .. 0.05) and in-range zero points.
fn random_weights(spec: &GemmSpec) -> Result<PackedWeights, lowbit_llvm::CpuError> {
    if spec.is_integer() {
        let mut codes = vec![0u8; spec.packed_weight_type().byte_size() as usize];
        fill(&mut codes, 0x9e37_79b9_7f4a_7c15);
        return PackedWeights::from_raw(spec, codes, Vec::new(), Vec::new());
    }
    let groups = spec.m * spec.groups_per_row();
    let mut codes = vec![0u8; spec.packed_weight_type().byte_size() as usize];
    fill(&mut codes, 0x9e37_79b9_7f4a_7c15);
    let scale = spec.weight.scale;
    let sb = (scale.bits() / 8) as usize;
    let mut scales = Vec::with_capacity(groups * sb);
    for i in 0..groups {
        let v = 0.01 + 0.04 * ((i * 7919) % 1000) as f64 / 1000.0;
        let c = scale.encode(v, lowbit::numerics::Rounding::NearestEven, true);
        scales.extend_from_slice(&c.to_le_bytes()[..sb]);
    }
    let mask = spec.weight.dtype.code_mask() as u8;
    let zps = if spec.weight.zero_point {
        let mut z = vec![0u8; groups];
        fill(&mut z, 0x1234_5678);
        z.iter().map(|b| b & mask).collect()
    } else {
        Vec::new()
    };
    PackedWeights::from_raw(spec, codes, scales, zps)
}

fn bench(
    spec: &GemmSpec,
    n: usize,
    threads: usize,
    min_samples: usize,
) -> Result<Report, lowbit_llvm::CpuError> {
    let kernel = compile(spec)?;
    let llc = llc_bytes().unwrap_or(64 << 20);
    let big = rotation_bytes();
    let mem_gbps = read_bandwidth_gbps(threads, big, 5)?;
    // The integer path is measured against the int8 dot-product peak.
    let special = if spec.is_binary() {
        popcount_peak_gops(threads, 5)?.map(|p| (p, "popcount peak"))
    } else if spec.is_integer() {
        vnni_peak_gops(threads, 5)?.map(|p| (p, "int8 VNNI peak"))
    } else {
        None
    };
    let (peak_gflops, peak_kind) = match special {
        Some(p) => p,
        None => (fma_peak_gflops(threads, 5)?, "f32 FMA peak"),
    };

    let first = random_weights(spec)?;
    let weight_bytes = first.byte_len();
    let copies = big.div_ceil(weight_bytes).max(2);
    let mut all = vec![first];
    for _ in 1..copies {
        all.push(all[0].clone());
    }
    let mut xb = vec![0u8; n * spec.k * 4];
    fill(&mut xb, 77);
    let x: Vec<f32> = xb
        .chunks(4)
        .map(|c| {
            (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect();
    let xh: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
    let xb16: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
    let act = if spec.act == lowbit::ElemType::F16 {
        Activations::F16(&xh)
    } else if spec.act == lowbit::ElemType::BF16 {
        Activations::BF16(&xb16)
    } else {
        Activations::F32(&x)
    };
    let xu: Vec<u8> = xb.iter().take(n * spec.k).copied().collect();
    let xbits: Vec<u8> = xu.iter().map(|b| b & 1).collect();
    let xi: Vec<i8> = xu.iter().map(|&b| b as i8).collect();
    let act = match spec.act {
        a if a == lowbit::ElemType::U8 => Activations::U8(&xu),
        a if a == lowbit::ElemType::I8 => Activations::I8(&xi),
        lowbit::ElemType::Bipolar => Activations::B1(&xbits),
        _ => act,
    };
    let mut y = vec![0f32; n * spec.m];
    let mut yi = vec![0i32; n * spec.m];
    let mut call = |w: &PackedWeights| {
        if spec.is_integer() {
            kernel.run_int(act, w, &mut yi, n, threads)
        } else {
            kernel.run(act, w, None, &mut y, n, threads)
        }
    };
    for w in all.iter().take(3) {
        call(w)?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while times.len() < min_samples || (start.elapsed().as_secs_f64() < 1.0 && times.len() < 10_000)
    {
        let w = &all[i % copies];
        let t = Instant::now();
        call(w)?;
        times.push(t.elapsed().as_secs_f64());
        i += 1;
    }
    std::hint::black_box((&y, &yi));
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(Report {
        target: kernel.target().describe(),
        compile: kernel.compile_time(),
        llc,
        copies,
        weight_bytes,
        mem_gbps,
        peak_gflops,
        peak_kind,
        median,
        min: times[0],
        samples: times.len(),
        flops: 2.0 * (spec.m * spec.k * n) as f64,
    })
}
