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
use lowbit_llvm::actquant::quantize_activations;
use lowbit_llvm::bench::{random_weights, rotation_bytes, BenchActivations, Rotation};
use lowbit_llvm::jit::bit_plane_activations;
use lowbit_llvm::probe::{
    amx_peak_gops, fma_peak_gflops, llc_bytes, popcount_peak_gops, read_bandwidth_gbps,
    vnni_peak_gops,
};
use lowbit_llvm::{compile, Activations, GemmSpec, PackedWeights};
use std::time::{Duration, Instant};

/// `lowbit bench --help`.
pub const HELP: &str = "\
Benchmark a kernel against this machine's measured roofline.

Usage: lowbit bench gemm --m M --k K --n N --weight DTYPE [--group G]
           [--scale DTYPE] [--zero-point] [--tensor-scale T]
           --act DTYPE [--schedule direct|bit-serial|amx] [--act-quant i8:32]
           [--threads T] [--backend cpu] [--json]

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
  --schedule S     integer weights and activations: direct (default,
                   W8A8/W4A8) or bit-serial: i1..i8/u1..u8 (or b1) weights
                   times i1..i8/u1..u8 activations by AND-popcounts of
                   bit-planes (exact i32; --zero-point gives both operands
                   a per-tensor zero point), or amx: --weight i8, i4 or
                   u4 with u8 or i8 activations on AMX-INT8 tiles
                   (tdpbusd, 4-bit weights split into byte tiles per k
                   block; where the host has AMX), measured against the AMX peak probe
                   and also reported against the VNNI peak
  --act-quant i8:32  opt-in (the IR's quantize-activations pass): f32
                   activations are quantized per call to i8 per 32-block
                   (scale max|x|/127) and multiplied with vpdpbusd; i4
                   or i8 weights, --group 32 (or a multiple), f16
                   scales. Not
                   the exact f32 product: measured against the int8 VNNI
                   peak, and the per-call quantization time is printed
                   (act_pack_seconds; the median includes it)
  --threads T      threads (default: all cores); the probes use T too
  --backend cpu    the only backend built in
  --samples S      at least S timed calls (default 20; at least 1 s total)
  --json           one JSON document instead of text

The weight working set rotates over copies exceeding the last-level cache.
Prints the median seconds, GFLOP/s (2*m*k*n; integer ops for W8A8/W4A8),
weight GB/s (packed codes, scales and zero points per call), and their
fractions of the measured DRAM read bandwidth and compute peak (f32 FMA,
int8 VNNI for W8A8/W4A8, or the xor+popcount step for W1A1 and bit-serial,
2 binary ops per bit pair: 2*m*k*n*x*y for x-bit weights and y-bit
activations; int8 AMX tdpbusd for --schedule amx; bit-serial also
prints the per-call activation packing time, which the median includes), and the fraction of the attainable roofline:
the longer of weight bytes / bandwidth and operations / peak, over the
median time. JSON keys: seconds_median, gflops,
weight_gbps, bandwidth_fraction, compute_fraction, machine {mem_gbps,
peak_gops}, plus roofline_fraction, bound (memory or compute),
compile_ms, samples, threads, copies, weight_bytes, spec, target;
--schedule amx adds vnni_peak_gops and vnni_fraction.
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
    /// Bit-serial: median seconds of packing the activations (per call).
    act_pack: Option<f64>,
    /// AMX: the int8 VNNI peak, the other roof the same work could use.
    vnni_peak: Option<f64>,
}

impl Report {
    fn gflops(&self) -> f64 {
        self.flops / self.median / 1e9
    }
    fn weight_gbps(&self) -> f64 {
        self.weight_bytes as f64 / self.median / 1e9
    }
    /// The attainable time on this machine's measured roofline: the
    /// weight bytes at the DRAM probe's bandwidth or the operations at the
    /// compute probe's peak, whichever is longer.
    fn roofline_seconds(&self) -> f64 {
        let mem = self.weight_bytes as f64 / (self.mem_gbps * 1e9);
        let compute = self.flops / (self.peak_gflops * 1e9);
        mem.max(compute)
    }
    /// Fraction of the attainable roofline reached by the median call.
    fn roofline_fraction(&self) -> f64 {
        self.roofline_seconds() / self.median
    }
    /// Which roof bounds this kernel here.
    fn bound(&self) -> &'static str {
        let mem = self.weight_bytes as f64 / (self.mem_gbps * 1e9);
        if mem >= self.flops / (self.peak_gflops * 1e9) {
            "memory"
        } else {
            "compute"
        }
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
             weight GB/s: {:.1} ({:.3} of DRAM bandwidth)\n\
             roofline: {:.3} of attainable ({:.6} s, {}-bound)\n{}",
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
            self.roofline_fraction(),
            self.roofline_seconds(),
            self.bound(),
            match self.act_pack {
                Some(t) => format!(
                    "{}: {t:.6} s per call ({:.3} of the median)\n",
                    if spec.is_blockdot() {
                        "activation quantization"
                    } else {
                        "activation bit-planes"
                    },
                    t / self.median
                ),
                None => String::new(),
            } + &match self.vnni_peak {
                Some(p) => format!(
                    "int8 VNNI peak: {p:.1} GOP/s; this kernel is {:.3} of it\n",
                    self.gflops() / p
                ),
                None => String::new(),
            },
        )
    }

    fn json(&self, spec: &GemmSpec, threads: usize) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        format!(
            "{{\"seconds_median\": {:e}, \"gflops\": {:.3}, \"weight_gbps\": {:.3}, \
             \"bandwidth_fraction\": {:.4}, \"compute_fraction\": {:.4}, \
             \"roofline_fraction\": {:.4}, \"bound\": \"{}\", \
             \"machine\": {{\"mem_gbps\": {:.3}, \"peak_gops\": {:.3}, \"peak_kind\": \"{}\"}}, \
             \"compile_ms\": {:.3}, \"samples\": {}, \"threads\": {threads}, \"copies\": {}, \
             \"weight_bytes\": {}, \"spec\": \"{}\", \"target\": \"{}\"{}}}",
            self.median,
            self.gflops(),
            self.weight_gbps(),
            self.weight_gbps() / self.mem_gbps,
            self.gflops() / self.peak_gflops,
            self.roofline_fraction(),
            self.bound(),
            self.mem_gbps,
            self.peak_gflops,
            self.peak_kind,
            self.compile.as_secs_f64() * 1e3,
            self.samples,
            self.copies,
            self.weight_bytes,
            esc(&spec.to_string()),
            esc(&self.target),
            match self.act_pack {
                Some(t) => format!(", \"act_pack_seconds\": {t:e}"),
                None => String::new(),
            } + &match self.vnni_peak {
                Some(p) => format!(
                    ", \"vnni_peak_gops\": {p:.3}, \"vnni_fraction\": {:.4}",
                    self.gflops() / p
                ),
                None => String::new(),
            },
        )
    }
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
    let special = if spec.is_binary() || spec.is_bit_serial() {
        popcount_peak_gops(threads, 5)?.map(|p| (p, "popcount peak"))
    } else if spec.is_amx() {
        // The kernel compiled, so the host has AMX-INT8.
        amx_peak_gops(threads, 5)?.map(|p| (p, "int8 AMX peak"))
    } else if spec.is_integer() || spec.is_blockdot() {
        // Block-dot (--act-quant): its products are int8 vpdpbusd too.
        vnni_peak_gops(threads, 5)?.map(|p| (p, "int8 VNNI peak"))
    } else {
        None
    };
    let vnni_peak = if spec.is_amx() {
        vnni_peak_gops(threads, 5)?
    } else {
        None
    };
    let (peak_gflops, peak_kind) = match special {
        Some(p) => p,
        None => (fma_peak_gflops(threads, 5)?, "f32 FMA peak"),
    };

    let mut rotation = Rotation::new(random_weights(spec)?, big);
    let (weight_bytes, copies) = (rotation.copy_bytes(), rotation.len());
    let xs = BenchActivations::new(n, spec.k);
    let act = if spec.is_bit_serial() {
        xs.codes(spec.act)
    } else {
        xs.get(spec.act)
    };
    // Bit-serial zero points: arbitrary small values (the kernel's cost
    // does not depend on them).
    let zps = spec.weight.zero_point.then_some((3, 1));
    let mut y = vec![0f32; n * spec.m];
    let mut yi = vec![0i32; n * spec.m];
    let mut call = |w: &PackedWeights| {
        if let Some(z) = zps {
            kernel.run_int_zero_points(act, w, z, &mut yi, n, threads)
        } else if spec.is_integer() {
            kernel.run_int(act, w, &mut yi, n, threads)
        } else {
            kernel.run(act, w, None, &mut y, n, threads)
        }
    };
    for _ in 0..3 {
        call(rotation.next_copy())?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_samples || (start.elapsed().as_secs_f64() < 1.0 && times.len() < 10_000)
    {
        let w = rotation.next_copy();
        let t = Instant::now();
        call(w)?;
        times.push(t.elapsed().as_secs_f64());
    }
    std::hint::black_box((&y, &yi));
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let act_pack = if spec.is_bit_serial() {
        let mut t = Vec::new();
        for _ in 0..5 {
            let s = Instant::now();
            std::hint::black_box(bit_plane_activations(spec, &act, n, threads)?);
            t.push(s.elapsed().as_secs_f64());
        }
        t.sort_by(f64::total_cmp);
        Some(t[t.len() / 2])
    } else if let (true, Activations::F32(v)) = (spec.is_blockdot(), act) {
        let mut t = Vec::new();
        for _ in 0..5 {
            let s = Instant::now();
            std::hint::black_box(quantize_activations(spec, v, n, threads.max(1)));
            t.push(s.elapsed().as_secs_f64());
        }
        t.sort_by(f64::total_cmp);
        Some(t[t.len() / 2])
    } else {
        None
    };
    // Bit-serial: one and-popcount pair of ops per bit pair per plane pair.
    let planes = if spec.is_bit_serial() {
        (spec.weight.dtype.bits() * spec.act.bits()) as f64
    } else {
        1.0
    };
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
        flops: 2.0 * (spec.m * spec.k * n) as f64 * planes,
        act_pack,
        vnni_peak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(weight_bytes: usize, flops: f64, median: f64) -> Report {
        Report {
            target: "t".into(),
            compile: Duration::from_millis(1),
            llc: 1 << 20,
            copies: 2,
            weight_bytes,
            mem_gbps: 20.0,
            peak_gflops: 400.0,
            peak_kind: "f32 FMA peak",
            median,
            min: median,
            samples: 20,
            flops,
            act_pack: None,
            vnni_peak: None,
        }
    }

    /// The attainable time is the longer roof: 33 MB at 20 GB/s (1.65 ms)
    /// against 0.117 GFLOP at 400 GFLOP/s for n = 1, 0.94 GFLOP (2.35 ms)
    /// for n = 8.
    #[test]
    fn roofline_fraction_uses_the_binding_roof() {
        let n1 = report(33_000_000, 2.0 * 4096.0 * 14336.0, 0.0033);
        assert_eq!(n1.bound(), "memory");
        assert!((n1.roofline_fraction() - 0.5).abs() < 1e-9);
        let n8 = report(33_000_000, 16.0 * 4096.0 * 14336.0, 0.0047);
        assert_eq!(n8.bound(), "compute");
        let want = 16.0 * 4096.0 * 14336.0 / 400e9 / 0.0047;
        assert!((n8.roofline_fraction() - want).abs() < 1e-9);
    }

    /// An AMX run also reports itself against the VNNI peak: 0.1 TOP in
    /// 0.05 s is 2000 GOP/s, 0.4 of a 5000 GOP/s AMX peak and 1.25 of a
    /// 1600 GOP/s VNNI peak.
    #[test]
    fn amx_reports_both_int8_peaks() {
        let mut r = report(1000, 1e11, 0.05);
        r.peak_gflops = 5000.0;
        r.peak_kind = "int8 AMX peak";
        r.vnni_peak = Some(1600.0);
        let mut spec = GemmSpec::int8(8, 64, lowbit_llvm::Dim::Static(4), lowbit::ElemType::U8);
        spec.schedule = lowbit::ir::IntSchedule::Amx;
        let j = r.json(&spec, 2);
        assert!(j.contains("\"compute_fraction\": 0.4000"), "{j}");
        assert!(j.contains("\"vnni_peak_gops\": 1600.000"), "{j}");
        assert!(j.contains("\"vnni_fraction\": 1.2500"), "{j}");
        assert!(j.contains("act=u8 -> i32 (exact, amx)"), "{j}");
        let t = r.text(&spec, 2);
        assert!(
            t.contains("int8 VNNI peak: 1600.0 GOP/s; this kernel is 1.250 of it"),
            "{t}"
        );
        assert!(!report(1000, 1e11, 0.05).json(&spec, 2).contains("vnni"));
    }

    /// The JSON keeps every INTERFACES.md key and adds the roofline ones.
    #[test]
    fn json_keeps_the_interface_keys() {
        let i4: lowbit::ElemType = "i4".parse().unwrap();
        let spec = GemmSpec::new(8, 64, lowbit_llvm::Dim::Static(1), i4, 32);
        let j = report(1000, 1024.0, 1e-6).json(&spec, 2);
        for key in [
            "\"seconds_median\"",
            "\"gflops\"",
            "\"weight_gbps\"",
            "\"bandwidth_fraction\"",
            "\"compute_fraction\"",
            "\"machine\": {\"mem_gbps\"",
            "\"peak_gops\"",
            "\"roofline_fraction\"",
            "\"bound\": \"memory\"",
        ] {
            assert!(j.contains(key), "{key} missing from {j}");
        }
    }
}
