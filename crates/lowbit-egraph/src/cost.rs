//! Cost models per target: estimated nanoseconds for one op, with the
//! kernel it would run and the weight layout that kernel wants.
//!
//! Estimates are rooflines, `max(bytes moved / bandwidth, work / rate)`
//! (plus a kernel-launch overhead on GPUs; integer matmuls on the CPU take
//! the sum, see below), where the rate depends on the
//! instruction class the schedule uses. x86-64 rates are per core at 3 GHz
//! with 20 GB/s of DRAM bandwidth, by feature set: f32 FMA (SSE2 8, AVX2 32,
//! AVX-512 64 flop/cycle), 8-bit multiply-accumulate (widened, `vpmaddwd` pairs:
//! AVX2 32, AVX-512 64; `vpdpbusd`: AVX-512 VNNI 128 MAC/cycle; AVX-VNNI
//! alone counts as no VNNI because the CPU backend has no 256-bit kernel;
//! AMX-INT8 `tdpbusd` tiles 400 MAC/cycle), popcount (`popcnt` 32,
//! `vpshufb` lookup AVX2 96 / AVX-512 128, VPOPCNTDQ 512 bit/cycle).
//!
//! Integer matmuls on the CPU (the W8A8/W4A8 `vpdpbusd` kernel and the
//! AMX-INT8 kernel) cost the weight stream *plus* the multiply-adds, not
//! the longer of the two: measured on the 2-core AMX host (BENCHMARKS.md,
//! "The e-graph chooses AMX"), W8A8 m = 4096, k = 14336 at 2 threads takes
//! 1.9 ms at n = 1 (the weight stream) and then, on `vpdpbusd` (128
//! MAC/cycle per core at 2.6 GHz), 2.6 - 2.7 ms at n = 4, 2.9 at 8, 3.0 at
//! 12, 3.8 at 16, 5.2 at 32, 13.2 at 128 and 50 at 512 (about 89 us per
//! activation row past its 6-row tiles); the AMX kernel computes whole
//! 32-row blocks of activation rows (2x2 tiles of 16 rows, zero rows past
//! n), so it takes about 2.8 ms from n = 1 to 16 (the weight stream plus
//! 0.9 ms: 410 MAC/cycle per core), 5.6 at 128 and 17.5 - 18.9 at 512 (30
//! us per row, 370 MAC/cycle per core; `tdpbusd`'s peak is 1024, the
//! kernel's tile loads and accumulator round trips take the rest). The
//! rate here is 400 MAC/cycle: with 20 GB/s and 128 MAC/cycle a
//! `vpdpbusd` row costs 0.052 of the weight stream, a 32-row AMX block
//! 0.53 of it, so AMX wins from about 10 rows. Measured: a tie at n = 8
//! (k = 14336: `vpdpbusd` 2.89 - 2.94 ms, AMX 2.77 - 2.89; k = 4096: 0.78 -
//! 0.82 and 0.80 - 0.81), AMX ahead by 6 - 10 % at 12 and 25 % at 16,
//! `vpdpbusd` ahead by 1 - 5 % at 4.
//!
//! 4-bit weights (W4A8; BENCHMARKS.md "amx4 helper" and "session 5
//! (lead)", m = 4096, k = 14336, 2 threads): the `vpdpbusd` kernel
//! decodes the nibbles once per column tile (wide tiles of 11 columns,
//! then one tile as wide as the rest of a static n), two instructions
//! per 128 weights: 1.05 ms at n = 1, 1.08 at 2, 1.49 at 4, 1.83 at 8,
//! 2.1 - 2.2 at 11, 2.5 at 16, 54 at 512. The AMX kernel streams the
//! 4-bit codes and splits them into byte tiles once per 256-row column
//! block, one step ahead of the tile loads that read them (the vector
//! work overlaps the `tdpbusd` chain): 1.43 - 1.55 ms from n = 1 to 16,
//! 2.0 at 32, 3.2 at 64, 15.8 at 512 (k = 4096: 0.47 - 0.52 to n = 8,
//! 5.0 at 512). The model charges the decodes at 64 weights per cycle
//! and the split at 128 (what it adds beyond the overlap), and the AMX
//! kernel's multiply-adds on whole 32-row blocks, which keeps `vpdpbusd`
//! up to 4 rows, takes AMX from 11 and leaves 8 to k (measured:
//! `vpdpbusd` ahead at 1 and 2, a tie at 4 (k = 4096: `vpdpbusd` 0.41 -
//! 0.43 against 0.46 ms), AMX 10 - 18 % ahead at 8 (k = 4096: 0.46
//! against 0.51 ms) and 30 - 40 % from 11) and puts the n = 512 ratio at
//! 3.57 (measured 3.2 - 3.5). Targets without `amxint8` (and GPUs)
//! cost `schedule = amx` as the op the CPU backend would leave to the
//! reference interpreter (1 ns per multiply-add), so it is never chosen
//! there.
//!
//! NVIDIA rates are the dense tensor-core figures of the A100 (sm_80), L40S (sm_89) and H100 SXM (sm_90) data
//! sheets, with operand tiles padded to the `mma` shape (f16 m16n8k16,
//! s8 m16n8k32, s4 m16n8k64, b1 m16n8k256). These are estimates to rank
//! schedules, not predictions of wall time; the figures are in one table
//! here so they can be calibrated against measurements.

use lowbit_ir::target::{Int8Dot, Popcount, Target, TargetKind, VectorIsa, X86Features};
use lowbit_ir::{ElemType, IntSchedule, OpKind, TensorType};

/// The estimate for one op.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Estimated time in nanoseconds.
    pub ns: f64,
    /// The kernel (instruction class) the estimate assumes.
    pub kernel: String,
    /// The weight layout that kernel wants (packed once, at compile time).
    pub layout: String,
    /// A degradation worth reporting (a missing feature, padding).
    pub note: Option<String>,
}

/// The schedule family of an op, as `explain` names it.
pub fn family(kind: &OpKind) -> &'static str {
    match kind {
        OpKind::QMatMul { .. } => "dequant-fused",
        OpKind::MatMulInt {
            schedule: IntSchedule::BitSerial,
            ..
        } => "bit-serial",
        OpKind::MatMulInt {
            schedule: IntSchedule::Amx,
            ..
        } => "amx",
        OpKind::MatMulInt { .. } | OpKind::RequantDyadic { .. } => "dyadic",
        _ => "float",
    }
}

/// Multiply-adds per cycle of the AMX-INT8 W8A8 kernel (measured 370 -
/// 410 per core, see the module docs).
const AMX_MACS_PER_CYCLE: f64 = 400.0;
/// Activation rows (and output rows) the AMX kernel computes at a time.
const AMX_ROWS: f64 = 32.0;
/// Activation rows of the AMX kernel's column blocks: 4-bit weights are
/// split into byte tiles once per column block (`codegen/amx.rs`).
const AMX_COL_ROWS: f64 = 256.0;
/// 4-bit weights the AMX kernel splits into bytes per cycle, as far as
/// the split adds time: it runs one step ahead of the first block's
/// tile loads and overlaps the `tdpbusd` chain, so only a remainder is
/// charged (module docs: W4A8 on AMX takes no longer than its weight
/// stream plus W8A8's tile work).
const AMX_SPLIT_PER_CYCLE: f64 = 128.0;
/// Sub-byte weights the `vpdpbusd` kernel decodes to bytes per cycle
/// (two instructions per 128 `i4`/`u4` weights).
const DECODE_PER_CYCLE: f64 = 64.0;
/// Columns of the `vpdpbusd` kernel's wide tile for 4-bit weights
/// (`codegen/vnni.rs`, `TILE_I4`).
const VNNI_I4_COLS: f64 = 11.0;

/// How often the `vpdpbusd` kernel decodes its sub-byte weights for
/// `rows` activation rows (a static n, as the graphs the e-graph sees
/// have): once per wide tile of [`VNNI_I4_COLS`] columns, and once for
/// the rest (one tile exactly that wide).
fn vnni_decodes(rows: f64) -> f64 {
    (rows / VNNI_I4_COLS).ceil().max(1.0)
}

struct Cpu {
    f: X86Features,
    ghz: f64,
    gbps: f64,
}

struct Gpu {
    sm: u32,
    gbps: f64,
    fp32_tflops: f64,
    f16_tc: f64,
    int8_tc: f64,
    int4_tc: Option<f64>,
    b1_tc: Option<f64>,
    launch_ns: f64,
}

fn gpu(sm: u32) -> Gpu {
    match sm {
        80 => Gpu {
            sm,
            gbps: 1555.0,
            fp32_tflops: 19.5,
            f16_tc: 312.0,
            int8_tc: 624.0,
            int4_tc: Some(1248.0),
            b1_tc: Some(4992.0),
            launch_ns: 2000.0,
        },
        89 => Gpu {
            sm,
            gbps: 864.0,
            fp32_tflops: 91.6,
            f16_tc: 362.0,
            int8_tc: 733.0,
            int4_tc: Some(733.0),
            b1_tc: None,
            launch_ns: 2000.0,
        },
        _ => Gpu {
            sm,
            gbps: 3350.0,
            fp32_tflops: 67.0,
            f16_tc: 989.0,
            int8_tc: 1979.0,
            int4_tc: None,
            b1_tc: None,
            launch_ns: 2000.0,
        },
    }
}

/// Matmul dimensions `(batch, m, k, n)` from the operand and result types.
fn dims(a: &TensorType, res: &TensorType) -> (f64, f64, f64, f64) {
    let r = res.rank();
    let m = res.shape.get(r.wrapping_sub(2)).copied().unwrap_or(1) as f64;
    let n = res.shape.last().copied().unwrap_or(1) as f64;
    let k = a.shape.last().copied().unwrap_or(1) as f64;
    let batch = res.num_elements() as f64 / (m * n).max(1.0);
    (batch, m, k, n)
}

/// [`dims`] of a `qmatmul`: the contraction runs over whichever operand
/// is on the left (the weight when `weight_lhs`). Both cost models read it
/// this way.
fn qmatmul_dims(
    weight_lhs: bool,
    x: &TensorType,
    w: &TensorType,
    res: &TensorType,
) -> (f64, f64, f64, f64) {
    if weight_lhs {
        dims(w, res)
    } else {
        dims(x, res)
    }
}

/// Bytes a bit-serial matmul moves: both operands as `pa`/`pb` bit-planes
/// plus the result. The same on every target; only the bandwidth differs.
fn bit_plane_bytes((b, m, k, n): (f64, f64, f64, f64), pa: u32, pb: u32, res: &TensorType) -> f64 {
    (b * m * k * pa as f64 + k * n * pb as f64) / 8.0 + res.byte_size() as f64
}

fn bits(e: ElemType) -> u32 {
    e.bits()
}

fn bytes(ts: &[&TensorType]) -> f64 {
    ts.iter().map(|t| t.byte_size() as f64).sum()
}

fn layout_name(t: &TensorType) -> String {
    if t.layout.is_default() {
        format!("{} row-major", t.elem)
    } else {
        format!("{} {}", t.elem, t.layout)
    }
}

/// Estimates one op on a target. `operands` are the operand types.
pub fn estimate(
    target: &Target,
    kind: &OpKind,
    res: &TensorType,
    operands: &[&TensorType],
) -> Estimate {
    let amx = matches!(
        kind,
        OpKind::MatMulInt {
            schedule: IntSchedule::Amx,
            ..
        }
    );
    let amx_target = target.x86_features().is_some_and(|f| f.amxint8);
    if amx && !amx_target && operands.len() >= 2 {
        return amx_unavailable(target, res, operands);
    }
    match &target.kind {
        TargetKind::X86_64(f) => cpu_estimate(
            &Cpu {
                f: *f,
                ghz: 3.0,
                gbps: 20.0,
            },
            kind,
            res,
            operands,
        ),
        TargetKind::Nvidia(sm) => gpu_estimate(&gpu(sm.sm), kind, res, operands),
    }
}

/// Multiply-adds per nanosecond charged for `schedule = amx` on a target
/// without AMX-INT8: the CPU backend refuses the AMX kernel there and the
/// op runs on the reference interpreter, which does about one per
/// nanosecond (far slower than any kernel, so the schedule is never
/// chosen where it cannot run).
const INTERPRETER_MACS_PER_NS: f64 = 1.0;

/// `matmul_int {schedule = amx}` on a target that has no AMX-INT8 tiles.
fn amx_unavailable(target: &Target, res: &TensorType, ops: &[&TensorType]) -> Estimate {
    let (a, w) = (ops[0], ops[1]);
    let (b, m, k, n) = dims(a, res);
    let what = match &target.kind {
        TargetKind::X86_64(_) => format!("{target} has no amxint8 (AMX-INT8 tiles)"),
        TargetKind::Nvidia(_) => format!("{target} is a GPU: AMX-INT8 is an x86 CPU schedule"),
    };
    est(
        b * m * k * n / INTERPRETER_MACS_PER_NS,
        format!("x86.amxint8.tdpbusd.{}x{}", a.elem, w.elem),
        format!("{} (AMX B tiles, pre-packed)", w.elem),
        Some(format!(
            "schedule amx unavailable: {what}; the cpu backend refuses it and the op runs on the reference interpreter"
        )),
    )
}

/// The kernel-name suffix of a `qmatmul` requantize epilogue.
fn epilogue(requant: Option<&lowbit_ir::QRequant>, res: &TensorType) -> String {
    requant.map_or(String::new(), |r| {
        format!("+requant.{}->{}", r.float_type, res.elem)
    })
}

fn est(ns: f64, kernel: String, layout: String, note: Option<String>) -> Estimate {
    Estimate {
        ns,
        kernel,
        layout,
        note,
    }
}

fn cpu_estimate(c: &Cpu, kind: &OpKind, res: &TensorType, ops: &[&TensorType]) -> Estimate {
    let f = &c.f;
    let isa = if f.avx512 {
        "avx512"
    } else if f.avx2 {
        "avx2"
    } else {
        "sse2"
    };
    let lanes = f.vector_bits() as f64 / 32.0;
    let fma_fpc = if f.avx512 {
        64.0
    } else if f.avx2 && f.fma {
        32.0
    } else {
        8.0
    };
    let mem = |ts: &[&TensorType]| (bytes(ts) + res.byte_size() as f64) / c.gbps;
    let cycles = |work: f64, per_cycle: f64| work / (per_cycle * c.ghz);
    let elementwise = |cost_per_elem: f64| {
        let n = res.num_elements() as f64;
        cycles(n * cost_per_elem, lanes).max(mem(ops))
    };
    match kind {
        OpKind::Constant(_) | OpKind::Reshape | OpKind::MarkOutliers { .. } => {
            est(0.0, "none".into(), "-".into(), None)
        }
        OpKind::MatMul { .. } | OpKind::Gemm { .. } if ops.len() >= 2 => {
            let (b, m, k, n) = dims(ops[0], res);
            let integral = ops[0].elem.is_integral();
            let rate = if integral { lanes } else { fma_fpc };
            let ns = cycles(2.0 * b * m * n * k, rate).max(mem(ops));
            let kernel = if integral {
                format!("x86.{isa}.int-mul-add.{}x{}", ops[0].elem, ops[1].elem)
            } else {
                format!("x86.{isa}.fma.f64-exact")
            };
            est(ns, kernel, layout_name(ops[1]), None)
        }
        OpKind::QMatMul {
            dequant_type,
            weight_lhs,
            requant,
            ..
        } => {
            let (x, w) = (ops[0], ops[1]);
            let (b, m, k, n) = qmatmul_dims(*weight_lhs, x, w, res);
            // The weight is decoded once per tile of 8 activation rows, one
            // vector of elements per cycle (shift/mask/convert on two ports).
            let deq_rate = lanes;
            let deq = cycles(w.num_elements() as f64 * (b * m / 8.0).ceil(), deq_rate);
            // The requantize epilogue works on the accumulator tile in
            // registers: divide, round, add, clamp, narrow.
            let epi = requant
                .as_ref()
                .map_or(0.0, |_| cycles(res.num_elements() as f64 * 4.0, lanes));
            let ns = (cycles(2.0 * b * m * n * k, fma_fpc) + deq + epi).max(mem(ops));
            est(
                ns,
                format!(
                    "x86.{isa}.dequant-fused.{}->{dequant_type}.fma{}",
                    w.elem,
                    epilogue(requant.as_ref(), res)
                ),
                format!(
                    "{} (packed as stored, decoded in registers)",
                    layout_name(w)
                ),
                None,
            )
        }
        OpKind::MatMulInt { schedule, .. } if ops.len() >= 2 => {
            let (a, w) = (ops[0], ops[1]);
            let (b, m, k, n) = dims(a, res);
            let macs = b * m * n * k;
            let (pa, pb) = (bits(a.elem), bits(w.elem));
            match schedule {
                IntSchedule::Direct => {
                    let (rate, kernel) = if pa <= 8 && pb <= 8 {
                        // The path the CPU backend takes on these
                        // features (one table for both, in lowbit-ir).
                        let rate = match (f.int8_dot(), f.vector_isa()) {
                            (Int8Dot::Avx512Vnni, _) => 128.0,
                            (Int8Dot::Widen, VectorIsa::Avx512) => 64.0,
                            (Int8Dot::Widen, VectorIsa::Avx2Fma) => 32.0,
                            (Int8Dot::Widen, VectorIsa::Portable) => 4.0,
                        };
                        (rate, f.int8_dot_kernel())
                    } else {
                        (lanes / 2.0, "vpmulld")
                    };
                    // Sub-byte weights are decoded to bytes once per column
                    // tile (module docs).
                    let widen = if pb < 8 {
                        cycles(
                            w.num_elements() as f64 * vnni_decodes(b * m),
                            DECODE_PER_CYCLE,
                        )
                    } else {
                        0.0
                    };
                    let note = (f.int8_dot() == Int8Dot::Widen && pa <= 8 && pb <= 8).then(|| {
                        if f.avxvnni {
                            "AVX-VNNI only: the cpu backend's vpdpbusd kernel needs AVX-512 VNNI; bytes widened and multiplied in pairs by vpmaddwd".into()
                        } else {
                            "no VNNI: bytes widened and multiplied in pairs by vpmaddwd".into()
                        }
                    });
                    // The weight stream plus the multiply-adds (see the
                    // module docs for the measurements).
                    est(
                        cycles(macs, rate) + widen + mem(ops),
                        format!("x86.{kernel}.{}x{}", a.elem, w.elem),
                        format!("{} (4x16 VNNI interleave, pre-packed)", w.elem),
                        note,
                    )
                }
                // Targets with `amxint8` only ([`estimate`] costs the
                // others): whole 32-row blocks of activation rows (2x2
                // tiles of 16), output rows in 32-row panel pairs, k in
                // 64-byte tile rows, at the measured rate, plus the weight
                // stream (module docs).
                IntSchedule::Amx => {
                    let rows = b * m;
                    let padded = pad(rows, AMX_ROWS) * pad(n, AMX_ROWS) * pad(k, 64.0);
                    // 4-bit weights: split into byte tiles once per
                    // column block of activation rows (module docs).
                    let split = if pb == 4 {
                        cycles(
                            w.num_elements() as f64 * (rows / AMX_COL_ROWS).ceil(),
                            AMX_SPLIT_PER_CYCLE,
                        )
                    } else {
                        0.0
                    };
                    let note = (rows % AMX_ROWS != 0.0).then(|| {
                        format!(
                            "{rows} activation row(s) computed as {} (whole blocks of {AMX_ROWS} rows on AMX tiles)",
                            pad(rows, AMX_ROWS)
                        )
                    });
                    est(
                        cycles(padded, AMX_MACS_PER_CYCLE) + split + mem(ops),
                        format!("x86.amxint8.tdpbusd.{}x{}", a.elem, w.elem),
                        if pb == 4 {
                            format!(
                                "{} (16x8 nibble panels, pre-packed; split into AMX B tiles per k block)",
                                w.elem
                            )
                        } else {
                            format!("{} (AMX B tiles: the 16x4 VNNI panels, pre-packed)", w.elem)
                        },
                        note,
                    )
                }
                IntSchedule::BitSerial => {
                    let (rate, note) = match (f.popcount(), f.vector_isa()) {
                        (Popcount::Vpopcntdq, _) => (512.0, None),
                        (Popcount::Lookup, VectorIsa::Avx512) => (
                            128.0,
                            Some("no avx512vpopcntdq: popcount by vpshufb nibble lookup"),
                        ),
                        (Popcount::Lookup, VectorIsa::Avx2Fma) => (
                            96.0,
                            Some("no avx512vpopcntdq: popcount by vpshufb nibble lookup"),
                        ),
                        (Popcount::Lookup, VectorIsa::Portable) => {
                            (32.0, Some("no vector popcount: scalar popcnt"))
                        }
                    };
                    let kernel = f.popcount_kernel();
                    let planes = (pa * pb) as f64;
                    let pack = cycles(b * m * k * pa as f64, lanes * 8.0);
                    let moved = bit_plane_bytes((b, m, k, n), pa, pb, res);
                    let ns = (cycles(planes * macs, rate) + pack).max(moved / c.gbps);
                    est(
                        ns,
                        format!("x86.{kernel}.{pa}x{pb}-planes"),
                        format!("{} bit-planes (pre-packed)", w.elem),
                        note.map(String::from),
                    )
                }
            }
        }
        OpKind::Dequantize { .. } | OpKind::Quantize { .. } | OpKind::Requantize { .. } => est(
            elementwise(4.0),
            format!("x86.{isa}.{}", kind.name()),
            "-".into(),
            None,
        ),
        OpKind::Gelu { .. }
        | OpKind::Silu
        | OpKind::Softmax { .. }
        | OpKind::LayerNorm { .. }
        | OpKind::RmsNorm { .. } => est(
            elementwise(12.0),
            format!("x86.{isa}.{}", kind.name()),
            "-".into(),
            None,
        ),
        OpKind::Transpose { .. } | OpKind::Relayout => est(
            mem(ops) * 2.0,
            format!("x86.{isa}.copy"),
            layout_name(res),
            None,
        ),
        _ => est(
            elementwise(1.0),
            format!("x86.{isa}.{}", kind.name()),
            "-".into(),
            None,
        ),
    }
}

fn pad(x: f64, to: f64) -> f64 {
    (x / to).ceil() * to
}

fn gpu_estimate(g: &Gpu, kind: &OpKind, res: &TensorType, ops: &[&TensorType]) -> Estimate {
    let sm = format!("sm_{}", g.sm);
    let mem = |ts: &[&TensorType]| (bytes(ts) + res.byte_size() as f64) / g.gbps;
    // Tera-ops per second are ops per picosecond: ops / (T * 1e3) ns.
    let at = |ops: f64, tops: f64| ops / (tops * 1e3);
    let kernel_time = |work: f64| g.launch_ns + work;
    let is16 = |e: ElemType| e == ElemType::F16 || e == ElemType::BF16;
    let mma = |(b, m, k, n): (f64, f64, f64, f64), kk: f64| {
        let padded = b * pad(m, 16.0) * pad(n, 8.0) * pad(k, kk);
        let note =
            (k % kk != 0.0).then(|| format!("k = {k} padded to {} for the mma tile", pad(k, kk)));
        (2.0 * padded, note)
    };
    match kind {
        OpKind::Constant(_) | OpKind::Reshape | OpKind::MarkOutliers { .. } => {
            est(0.0, "none".into(), "-".into(), None)
        }
        OpKind::MatMul { .. } | OpKind::Gemm { .. } if ops.len() >= 2 => {
            let d = dims(ops[0], res);
            let (b, m, k, n) = d;
            let (work, kernel, note) = if is16(ops[0].elem) && is16(ops[1].elem) {
                let (w, note) = mma(d, 16.0);
                (at(w, g.f16_tc), format!("{sm}.mma.m16n8k16.f16"), note)
            } else {
                (
                    at(2.0 * b * m * n * k, g.fp32_tflops),
                    format!("{sm}.fma.f32"),
                    Some(format!(
                        "{} x {} operands: CUDA-core FMA (tensor cores would change the numerics)",
                        ops[0].elem, ops[1].elem
                    )),
                )
            };
            est(
                kernel_time(work.max(mem(ops))),
                kernel,
                layout_name(ops[1]),
                note,
            )
        }
        OpKind::QMatMul {
            dequant_type,
            weight_lhs,
            requant,
            ..
        } => {
            let (x, w) = (ops[0], ops[1]);
            let rq = epilogue(requant.as_ref(), res);
            let d = qmatmul_dims(*weight_lhs, x, w, res);
            let (b, m, k, n) = d;
            let (work, kernel, note) = if is16(*dequant_type) && is16(x.elem) {
                let (wk, note) = mma(d, 16.0);
                (
                    at(wk, g.f16_tc),
                    format!(
                        "{sm}.dequant-fused.{}->{dequant_type}.mma.m16n8k16{rq}",
                        w.elem
                    ),
                    note,
                )
            } else {
                (
                    at(2.0 * b * m * n * k, g.fp32_tflops),
                    format!("{sm}.dequant-fused.{}->{dequant_type}.fma{rq}", w.elem),
                    Some(format!(
                        "{} activations / {dequant_type} weights: CUDA-core FMA, not tensor cores",
                        x.elem
                    )),
                )
            };
            let deq = at(
                w.num_elements() as f64 * (b * m / 64.0).ceil() * 4.0,
                g.fp32_tflops,
            );
            let deq = deq
                + requant
                    .as_ref()
                    .map_or(0.0, |_| at(res.num_elements() as f64 * 4.0, g.fp32_tflops));
            est(
                kernel_time((work + deq).max(mem(ops))),
                kernel,
                format!("{} (ldmatrix tiles, decoded in registers)", layout_name(w)),
                note,
            )
        }
        OpKind::MatMulInt { schedule, .. } if ops.len() >= 2 => {
            let (a, w) = (ops[0], ops[1]);
            let d = dims(a, res);
            let (b, m, k, n) = d;
            let (pa, pb) = (bits(a.elem), bits(w.elem));
            match schedule {
                // `Amx` does not get here: [`estimate`] costs it as
                // unavailable on GPUs.
                IntSchedule::Direct | IntSchedule::Amx => {
                    let (work, kernel, note) = match g.int4_tc {
                        Some(r) if pa <= 4 && pb <= 4 => {
                            let (wk, note) = mma(d, 64.0);
                            (at(wk, r), format!("{sm}.mma.m16n8k64.s4"), note)
                        }
                        _ if pa <= 8 && pb <= 8 => {
                            let (wk, note) = mma(d, 32.0);
                            let note = if pa <= 4 && pb <= 4 {
                                Some(format!("{sm} has no int4 tensor-core rate: widened to s8"))
                            } else {
                                note
                            };
                            (at(wk, g.int8_tc), format!("{sm}.mma.m16n8k32.s8"), note)
                        }
                        _ => (
                            at(2.0 * b * m * n * k, g.fp32_tflops / 2.0),
                            format!("{sm}.imad.s32"),
                            Some(format!("{pa}x{pb}-bit operands: no tensor-core shape")),
                        ),
                    };
                    est(
                        kernel_time(work.max(mem(ops))),
                        kernel,
                        format!("{} (ldmatrix tiles, pre-packed)", w.elem),
                        note,
                    )
                }
                IntSchedule::BitSerial => {
                    let planes = (pa * pb) as f64;
                    let (work, kernel, note) = match g.b1_tc {
                        Some(r) => {
                            let (wk, note) = mma(d, 256.0);
                            (
                                at(planes * wk, r),
                                format!("{sm}.mma.m16n8k256.b1.and.popc"),
                                note,
                            )
                        }
                        None => (
                            at(planes * 2.0 * b * m * n * k / 32.0, g.fp32_tflops / 2.0),
                            format!("{sm}.lop3+popc"),
                            Some(format!(
                                "{sm} has no b1 tensor-core mma: popcount on CUDA cores"
                            )),
                        ),
                    };
                    let moved = bit_plane_bytes((b, m, k, n), pa, pb, res);
                    est(
                        kernel_time(work.max(moved / g.gbps)),
                        kernel,
                        format!("{} bit-planes (pre-packed)", w.elem),
                        note,
                    )
                }
            }
        }
        OpKind::Transpose { .. } | OpKind::Relayout => est(
            kernel_time(mem(ops) * 2.0),
            format!("{sm}.copy"),
            layout_name(res),
            None,
        ),
        _ => est(
            kernel_time(mem(ops)),
            format!("{sm}.{}", kind.name()),
            "-".into(),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lowbit_ir::{Activation, Granularity, Overflow};

    fn t(shape: &[u64], e: &str) -> TensorType {
        TensorType::new(shape.to_vec(), e.parse().unwrap())
    }

    fn mmi(s: IntSchedule) -> OpKind {
        OpKind::MatMulInt {
            overflow: Overflow::Wrap,
            schedule: s,
        }
    }

    /// The W8A8 matmul of `rows` activation rows with an `m x k` weight.
    fn w8a8(rows: u64, k: u64, m: u64) -> (TensorType, TensorType, TensorType) {
        (t(&[rows, k], "u8"), t(&[k, m], "i8"), t(&[rows, m], "i32"))
    }

    #[test]
    fn amx_wins_from_about_ten_rows_on_amx_targets() {
        let spr: Target = "sapphirerapids".parse().unwrap();
        for k in [4096, 14336] {
            let cost = |rows, s| {
                let (a, w, r) = w8a8(rows, k, 4096);
                estimate(&spr, &mmi(s), &r, &[&a, &w])
            };
            // As measured on the AMX host: vpdpbusd up to 4 rows, a tie
            // at 8, AMX from 12 (BENCHMARKS.md).
            for rows in [1, 4, 8] {
                let (d, x) = (
                    cost(rows, IntSchedule::Direct),
                    cost(rows, IntSchedule::Amx),
                );
                assert!(d.ns < x.ns, "k={k} rows={rows}: {} vs {}", d.ns, x.ns);
                assert!(x.note.unwrap().contains("computed as 32"));
            }
            for rows in [12, 16, 32, 64, 128, 512] {
                let (d, x) = (
                    cost(rows, IntSchedule::Direct),
                    cost(rows, IntSchedule::Amx),
                );
                assert!(x.ns < d.ns, "k={k} rows={rows}: {} vs {}", x.ns, d.ns);
                assert_eq!(x.kernel, "x86.amxint8.tdpbusd.u8xi8");
            }
            // Prefill: about the measured 2.6 - 2.9x.
            let ratio = cost(512, IntSchedule::Direct).ns / cost(512, IntSchedule::Amx).ns;
            assert!((2.4..3.2).contains(&ratio), "k={k}: {ratio}");
            assert!(cost(512, IntSchedule::Amx).note.is_none());
        }
    }

    /// W4A8 on the AMX target: the decode of the `vpdpbusd` kernel's
    /// column tiles and the AMX kernel's split, calibrated on the
    /// measurements in the module docs.
    #[test]
    fn amx_takes_4_bit_weights_from_about_ten_rows() {
        let spr: Target = "sapphirerapids".parse().unwrap();
        for k in [4096, 14336] {
            for wt in ["i4", "u4"] {
                let cost = |rows, s| {
                    let (a, _, r) = w8a8(rows, k, 4096);
                    let w = t(&[k, 4096], wt);
                    estimate(&spr, &mmi(s), &r, &[&a, &w])
                };
                // Measured: vpdpbusd ahead at 1 and 2 rows, a tie at 4
                // (k = 4096: vpdpbusd 4 % ahead), AMX 10 - 18 % ahead at
                // 8 and more from 11. The model keeps vpdpbusd to 4 rows,
                // takes AMX from 11 and leaves 8 to the k (it charges the
                // AMX kernel whole 32-row blocks).
                for rows in [1, 2, 4] {
                    let (d, x) = (
                        cost(rows, IntSchedule::Direct),
                        cost(rows, IntSchedule::Amx),
                    );
                    assert!(d.ns < x.ns, "{wt} k={k} rows={rows}: {} vs {}", d.ns, x.ns);
                }
                for rows in [11, 16, 32, 64, 512] {
                    let (d, x) = (
                        cost(rows, IntSchedule::Direct),
                        cost(rows, IntSchedule::Amx),
                    );
                    assert!(x.ns < d.ns, "{wt} k={k} rows={rows}: {} vs {}", x.ns, d.ns);
                    assert_eq!(x.kernel, format!("x86.amxint8.tdpbusd.u8x{wt}"));
                }
                // Prefill: about the measured 3.2 - 3.5x.
                let ratio = cost(512, IntSchedule::Direct).ns / cost(512, IntSchedule::Amx).ns;
                assert!((2.9..4.2).contains(&ratio), "{wt} k={k}: {ratio}");
                // The split is charged: 4-bit weights cost more on AMX than
                // their stream alone would (the same weights as i8, less
                // the other half of the stream).
                let (a, w8, r) = w8a8(512, k, 4096);
                let x8 = estimate(&spr, &mmi(IntSchedule::Amx), &r, &[&a, &w8]).ns;
                let stream_half = (k * 4096 / 2) as f64 / 20.0;
                assert!(cost(512, IntSchedule::Amx).ns > x8 - stream_half);
            }
        }
    }

    #[test]
    fn amx_is_unavailable_without_the_feature() {
        let (a, w, r) = w8a8(512, 4096, 4096);
        for (name, why) in [
            ("icelake-server", "has no amxint8"),
            ("x86-64-v3", "has no amxint8"),
            ("sm_90", "is a GPU"),
        ] {
            let tgt: Target = name.parse().unwrap();
            let direct = estimate(&tgt, &mmi(IntSchedule::Direct), &r, &[&a, &w]);
            let amx = estimate(&tgt, &mmi(IntSchedule::Amx), &r, &[&a, &w]);
            assert!(
                amx.ns > 10.0 * direct.ns,
                "{name}: {} vs {}",
                amx.ns,
                direct.ns
            );
            let note = amx.note.unwrap();
            assert!(
                note.contains("schedule amx unavailable") && note.contains(why),
                "{note}"
            );
        }
        // The same CPU with the feature added takes it.
        let tgt: Target = "icelake-server+amxint8".parse().unwrap();
        let direct = estimate(&tgt, &mmi(IntSchedule::Direct), &r, &[&a, &w]);
        let amx = estimate(&tgt, &mmi(IntSchedule::Amx), &r, &[&a, &w]);
        assert!(amx.ns < direct.ns);
    }

    #[test]
    fn vnni_and_popcount_change_the_ranking() {
        let (a, w, r) = (
            t(&[64, 4096], "u2"),
            t(&[4096, 4096], "u2"),
            t(&[64, 4096], "i32"),
        );
        let cost = |tgt: &str, s| estimate(&tgt.parse().unwrap(), &mmi(s), &r, &[&a, &w]).ns;
        // Two-bit operands: 4 plane pairs at 512 bit/cycle beat VNNI's 128 MAC/cycle.
        assert!(
            cost("icelake-server", IntSchedule::BitSerial)
                < cost("icelake-server", IntSchedule::Direct)
        );
        // Without VPOPCNTDQ the lookup popcount loses to VNNI.
        assert!(
            cost("cascadelake", IntSchedule::BitSerial) > cost("cascadelake", IntSchedule::Direct)
        );
        let e = estimate(
            &"cascadelake".parse().unwrap(),
            &mmi(IntSchedule::BitSerial),
            &r,
            &[&a, &w],
        );
        assert!(e.note.unwrap().contains("no avx512vpopcntdq"));
    }

    #[test]
    fn fused_dequant_moves_fewer_bytes_than_materializing() {
        let (x, w4, s) = (t(&[1, 4096], "f32"), t(&[4096, 4096], "i4"), t(&[], "f32"));
        let w32 = t(&[4096, 4096], "f32");
        let r = t(&[1, 4096], "f32");
        let tgt: Target = "x86-64-v3".parse().unwrap();
        let q = OpKind::QMatMul {
            granularity: Granularity::PerTensor,
            dequant_type: ElemType::F32,
            has_zero_point: false,
            has_bias: false,
            weight_lhs: false,
            activation: Activation::None,
            requant: None,
        };
        let fused = estimate(&tgt, &q, &r, &[&x, &w4, &s]).ns;
        let deq = estimate(
            &tgt,
            &OpKind::Dequantize {
                granularity: Granularity::PerTensor,
            },
            &w32,
            &[&w4, &s],
        )
        .ns;
        let mm = estimate(
            &tgt,
            &OpKind::MatMul {
                overflow: Overflow::Wrap,
            },
            &r,
            &[&x, &w32],
        )
        .ns;
        assert!(fused * 4.0 < deq + mm, "{fused} vs {deq} + {mm}");
    }

    #[test]
    fn gpu_levels_differ_in_low_bit_support() {
        let (a, w, r) = (
            t(&[128, 4096], "i4"),
            t(&[4096, 4096], "i4"),
            t(&[128, 4096], "i32"),
        );
        let e80 = estimate(
            &"sm_80".parse().unwrap(),
            &mmi(IntSchedule::Direct),
            &r,
            &[&a, &w],
        );
        assert!(e80.kernel.contains("m16n8k64.s4"), "{}", e80.kernel);
        let e90 = estimate(
            &"sm_90".parse().unwrap(),
            &mmi(IntSchedule::Direct),
            &r,
            &[&a, &w],
        );
        assert!(e90.kernel.contains("s8") && e90.note.unwrap().contains("no int4"));
        let b90 = estimate(
            &"sm_90".parse().unwrap(),
            &mmi(IntSchedule::BitSerial),
            &r,
            &[&a, &w],
        );
        assert!(b90.note.unwrap().contains("no b1 tensor-core"));
        let odd = t(&[128, 30], "i8");
        let e = estimate(
            &"sm_80".parse().unwrap(),
            &mmi(IntSchedule::Direct),
            &t(&[128, 16], "i32"),
            &[&odd, &t(&[30, 16], "i8")],
        );
        assert!(e.note.unwrap().contains("k = 30 padded to 32"));
    }
}
