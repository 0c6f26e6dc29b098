//! `lowbit compile MODEL --emit so|obj|asm|llvm`: a whole model compiled
//! ahead of time into a shared library (or one relocatable object to link
//! into a program, or that object as one assembly file, or its kernels and
//! data as LLVM IR with the C driver beside it) with a C entry point per
//! function — `int lowbit_<name>_run(const T0 *in0, ..., U0 *out0, ...)`
//! for the first, `lowbit_<name>_<function>_run` for each other — and a
//! header declaring them, the buffers' C types following the tensors'
//! element types (`float` for `f32`, `uint16_t` bits for `f16`/`bf16`,
//! `uint8_t` for `u8` and `b1` codes, `int8_t` for `i8`, `int32_t` for
//! `i32`; typedefs and element counts in the header).
//!
//! The matmuls map onto kernels through `cpu_run::map_plans`, exactly as
//! `lowbit run --backend cpu` maps them, fused chains included (float:
//! bias `add` and ReLU/GELU/SiLU in the kernel epilogue; W8A8/W4A8: the
//! activation zero point in the packed row offsets, `i32` bias, ReLU and
//! dyadic requantize to `i8`; W1A1; bit-serial WxAy with constant zero
//! points). Each mapped matmul becomes one kernel in an LLVM object; its
//! packed weights, scales, row offsets, bias and requantize arrays (padded
//! to `m_pad` as the kernel loads them) go, as soon as the matmul is
//! mapped, into a second object written directly
//! (`lowbit_llvm::data_object`), never into LLVM, so compiling holds one
//! layer's packed weights at a time (the memory rule: BENCHMARKS.md
//! "Memory"); both objects are linked into the library. The output
//! depends on the model only (no paths, times or hash order): compiling
//! twice gives the same bytes.
//!
//! A generated C driver prepares each kernel's activations the way
//! `GemmKernel::run*` does (float rows padded to `k_pad`, `f16`/`bf16`
//! widened to `f32`; `u8`/`i8` rows padded, `i8` with the sign bit
//! flipped; `b1` rows packed into bits; bit-serial activations into
//! bit-planes with their row sums) and calls the kernel on all rows, split
//! over `lowbit_<name>_set_threads` threads (default 1) in chunks of
//! whole 8-row tiles (4-panel groups for the block-dot kernel at n = 1,
//! 32-row panel pairs for the AMX kernels) that shrink towards the end
//! (past 8 columns equal chunks of about `m / (8 · threads)` rows), as
//! the JIT splits them (the
//! `quantize-activations` form, block-dot kernel, quantizes each
//! activation row per 32-block in the driver, bit for bit as the JIT
//! path); it does the ops around them that take a few lines
//! — f32 and i32 `add` (same shape, or a broadcast along the last
//! dimension or a scalar; i32 wrapping or saturating as the op says), f32
//! and i32 `relu`, `reshape` (an alias) — and is linked with the objects
//! by the system C compiler (`cc`, or `$CC`). A `qmatmul` requantize
//! epilogue (which the JIT runs on the interpreter) is C in the driver:
//! any deterministic rounding, saturating or wrapping, per tensor or per
//! output column, to `u8`/`i8`/`i32`.
//!
//! Threads: the kernels and the driver's loops over large tensors (per
//! element, row or 32-block; [`Gen::par_loop`]) run on a pool of worker
//! threads the library starts once and keeps asleep between calls (after
//! polling for the next one for up to 100 us; [`POOL_C`]); results do not depend on the number of threads.
//!
//! AMX: a `matmul_int {schedule = amx}` (the e-graph's choice for large
//! W8A8 and W4A8 matmuls on AMX-INT8 CPUs; 4-bit weights stay 4-bit in
//! the library) becomes the AMX-INT8 kernel (`codegen/amx.rs`) when the target CPU has AMX-INT8 (refused
//! otherwise, [`aot_supports`]): the driver packs its activations into
//! tiles as `GemmKernel::run_int` does and, before the function's first
//! kernel, asks Linux once per process for the AMX tile state
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); where Linux
//! refuses, the entry point returns 2 and computes nothing. The
//! `quantize-activations` form (block-dot kernel) with a static `n >= 8` (`i8`
//! weights: `n >= 9`) on such a target becomes the AMX block-dot kernel
//! (`codegen/amxdot.rs`, bit-identical to the `vpdpbusd` one, as the JIT
//! chooses: `lowbit_llvm::aot::blockdot_on_amx`), its rows split in whole
//! 32-row panel pairs, with the same request for the tile state; below 8
//! columns, on other CPUs (where the `vpdpbusd` kernel runs without any
//! request), or when `LOWBIT_BLOCKDOT_AMX=0` is set while compiling, the
//! `vpdpbusd` kernel.
//!
//! Limits: not stochastic rounding or blocked output scales; the pool
//! serves one kernel or loop at a time (callers on several threads take
//! turns for it); the copies into the caller's output buffers run on the
//! calling thread. Any other op, or a matmul that maps onto no kernel, is
//! refused, naming the op and why, and nothing is written.
//!
//! Accuracy: integer kernels are bit-exact (as `--backend cpu`); the
//! driver's `add`/`relu` are exact f32 (or i32) operations, equal to the
//! interpreter's, and its requantize is the interpreter's `quantize` of
//! the kernel's output (as the JIT run does); each float kernel (with its
//! epilogue) computes what the JIT's does, within the bound stated in
//! `lowbit_llvm::codegen`, whatever the number of threads.

use crate::cpu_run::{map_plans, DyadicParams, Plan};
use lowbit::interp::eval_op;
use lowbit::ir::{BinaryOp, Function, Granularity, Module, Op, OpKind, Tensor, Value};
use lowbit::numerics::{ElemType, Overflow, Rounding};
use lowbit_llvm::aot::{emit_model, Emit, ModelKernel};
use lowbit_llvm::data_object::DataWriter;
use lowbit_llvm::{CpuTarget, GemmSpec, PackedWeights, PLANE_BLOCK};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// What `--emit so`/`obj` builds before linking.
pub struct Artifacts {
    /// The kernels: an object file, or assembly text when compiled for
    /// `--emit asm`.
    pub object: Vec<u8>,
    /// The build directory, holding the constant data (packed weights,
    /// scales, biases) as `data.o`, or `data.s` for `--emit asm`, written
    /// one buffer at a time; removed when the artifacts are dropped.
    pub dir: BuildDir,
    /// The generated C driver (defines the entry point).
    pub driver: String,
    /// The C header declaring the entry point.
    pub header: String,
}

/// `name` turned into a C identifier fragment.
pub fn c_ident(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn label(f: &Function, op: Op) -> String {
    let name = f.op(op).kind.name();
    match f.op_spans.get(&op) {
        Some(sp) => format!("'{name}' at line {}", sp.line),
        None => format!(
            "'{name}' (op #{})",
            f.ops().iter().position(|&o| o == op).unwrap_or(0)
        ),
    }
}

fn constant_of(f: &Function, v: Value) -> Option<Tensor> {
    let d = f.op(f.def_op(v)?);
    if !matches!(d.kind, OpKind::Constant(_)) {
        return None;
    }
    eval_op(&d.kind, &[], &[f.ty(v).clone()])
        .ok()
        .map(|mut t| t.remove(0))
}

fn f32_bytes(t: &Tensor) -> Vec<u8> {
    t.codes
        .iter()
        .flat_map(|&c| (c as u32).to_le_bytes())
        .collect()
}

/// The C element type of an `elem` buffer at the entry point and in the
/// driver (`b1` codes one per byte, 0 or 1; `f16`/`bf16` bits), or `None`
/// when the driver has no buffers of that type.
fn c_type(elem: ElemType) -> Option<&'static str> {
    Some(match elem {
        ElemType::F32 => "float",
        ElemType::U8 | ElemType::Bipolar => "uint8_t",
        ElemType::I8 => "int8_t",
        ElemType::I32 => "int32_t",
        // The bits of each value.
        ElemType::F16 | ElemType::BF16 => "uint16_t",
        _ => return None,
    })
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Whether the driver can call `p`'s kernel: it prepares float kernels'
/// `f32` activations, the W8A8/W4A8 kernels' bytes, the W1A1 kernel's
/// bit rows and the bit-serial kernel's bit-planes; a `qmatmul`
/// requantize epilogue (the `quantize` the JIT runs on the interpreter)
/// only in the form [`quantize_form`] takes; the AMX-INT8 kernel
/// (`matmul_int {schedule = amx}`) only for a target CPU with AMX-INT8
/// (elsewhere it is refused with the reason: no direct kernel in its
/// place).
fn aot_supports(p: &Plan, target: &CpuTarget) -> Result<(), String> {
    if p.spec.is_amx() && !(target.has("amx-tile") && target.has("amx-int8")) {
        return Err(format!(
            "schedule amx needs a CPU with AMX-INT8 (amx-tile, amx-int8), not {}; \
             compile for one (--cpu native on such a host, --cpu sapphirerapids), or \
             optimize for a target without amxint8 (egraph{{target=...}}) or write schedule direct",
            target.describe()
        ));
    }
    if let Some((kind, _)) = &p.quantize {
        quantize_form(kind)?;
    }
    Ok(())
}

/// The `qmatmul` requantize epilogues the driver computes: any
/// deterministic rounding, saturating or wrapping, one scale per tensor
/// or per output column (the scale's and zero point's values are checked
/// at the call); returns the rounding and whether it saturates.
fn quantize_form(kind: &OpKind) -> Result<(Rounding, bool), String> {
    match kind {
        OpKind::Quantize {
            granularity: Granularity::PerTensor | Granularity::PerAxis { .. },
            rounding,
            saturate,
            stochastic: None,
        } => Ok((*rounding, *saturate)),
        OpKind::Quantize {
            stochastic: Some(_),
            ..
        } => Err("compiled libraries do not requantize with stochastic rounding".into()),
        _ => Err("compiled libraries requantize with per-tensor or per-column scales only".into()),
    }
}

/// C statements setting `int64_t r` to the finite `double q` (below 2^62
/// in magnitude, `a` = |q|) rounded to an integer as `rounding` says, as
/// `lowbit_numerics::round_f64_to_i128` does. Every double of 2^52 or
/// more is an integer already, and the `int64_t` conversion truncates
/// toward zero exactly.
fn c_round(rounding: Rounding) -> &'static str {
    match rounding {
        // Adding and subtracting 2^52 rounds to an integer, ties to even
        // (the default floating-point mode), exactly below 2^52.
        Rounding::NearestEven => {
            "if (a < 0x1p52) a = (a + 0x1p52) - 0x1p52; r = (int64_t)(q < 0 ? -a : a);"
        }
        // The fraction a - trunc(a) is exact.
        Rounding::NearestAway => {
            "int64_t t = (int64_t)a; if (a - (double)t >= 0.5) t++; r = q < 0 ? -t : t;"
        }
        Rounding::TowardZero => "r = (int64_t)q;",
        Rounding::Up => "r = (int64_t)q; if ((double)r < q) r++;",
        Rounding::Down => "r = (int64_t)q; if ((double)r > q) r--;",
    }
}

/// Where a mapped matmul's packed buffers went in the data object (the
/// symbols' names), written as soon as the matmul was mapped so that only
/// one layer's packed weights exist at a time.
struct Bufs {
    codes: String,
    /// Float kernels: the scales, and the zero points if any.
    scales: Option<String>,
    zero_points: Option<String>,
    /// Bit-serial kernels: each weight row's sum.
    row_sums: Option<String>,
    /// W8A8/W4A8 kernels: the per-row offsets.
    row_offsets: Option<String>,
}

/// A [`Plan`] less its packed weights, which are in the data object.
struct Mapped {
    spec: GemmSpec,
    op: Op,
    x: Value,
    bias: Option<Value>,
    int_bias: Option<Vec<i32>>,
    requant: Option<DyadicParams>,
    quantize: Option<(OpKind, Vec<Value>)>,
    zero_points: Option<(i32, i32)>,
    /// `None` for a matmul no output depends on (nothing written).
    bufs: Option<Bufs>,
}

impl Mapped {
    /// Moves `p`'s fields out, writing its packed buffers to `data` when
    /// `live` (the plan's result is used).
    fn new(p: Plan, live: bool, data: &mut Data) -> Result<Mapped, String> {
        let bufs = if live {
            let w = packed(&p)?;
            let spec = &p.spec;
            let codes = data.add(w.codes())?;
            let mut b = Bufs {
                codes,
                scales: None,
                zero_points: None,
                row_sums: None,
                row_offsets: None,
            };
            if !spec.is_integer() {
                b.scales = Some(data.add(w.scales())?);
                if !w.zero_points().is_empty() {
                    b.zero_points = Some(data.add(w.zero_points())?);
                }
            } else if spec.is_bit_serial() {
                b.row_sums = Some(data.add(&i32_bytes(w.row_sums()))?);
            } else if !spec.is_binary() {
                b.row_offsets = Some(data.add(&i32_bytes(w.row_offsets()))?);
            }
            Some(b)
        } else {
            None
        };
        // `p` (its packed bytes) is dropped on return, before the next
        // layer is packed.
        Ok(Mapped {
            spec: p.spec,
            op: p.op,
            x: p.x,
            bias: p.bias,
            int_bias: p.int_bias,
            requant: p.requant,
            quantize: p.quantize,
            zero_points: p.zero_points,
            bufs,
        })
    }
}

/// `p`'s packed weights: the only place the AOT path reads them (plans
/// that pack on demand return them owned here).
fn packed(p: &Plan) -> Result<std::borrow::Cow<'_, PackedWeights>, String> {
    Ok(std::borrow::Cow::Owned(p.pack()?))
}

/// The data object being written and the symbol names handed out.
struct Data {
    sym: String,
    writer: DataWriter,
}

impl Data {
    /// Writes `bytes` as the next blob and returns its symbol.
    fn add(&mut self, bytes: &[u8]) -> Result<String, String> {
        let name = format!("{}_d{}", self.sym, self.writer.len());
        self.writer.add(&name, bytes).map_err(|e| e.to_string())?;
        Ok(name)
    }
}

struct Gen<'a> {
    f: &'a Function,
    sym: String,
    kernels: Vec<(String, GemmSpec)>,
    data: &'a mut Data,
    body: String,
    /// The C expression holding each run-time value, and its element type.
    vars: HashMap<Value, (String, ElemType)>,
    /// The mapped matmuls (keyed by the op whose result each computes).
    plans: HashMap<Op, Mapped>,
    /// Why each matmul the plans lack did not map.
    not_mapped: Vec<(String, String)>,
    tmp: usize,
    /// The functions of the driver loops split over threads
    /// ([`Gen::par_loop`]), defined before the entry point.
    loops: String,
    /// How many of them there are (their names' suffixes).
    nloops: usize,
    /// Whether a kernel of the function is the AMX-INT8 one (the entry
    /// point then asks for the tile state first).
    amx: bool,
    /// The CPU compiled for (which block-dot kernel a matmul takes).
    target: &'a CpuTarget,
}

/// Smallest share of a per-element driver loop (`add`, `relu`, the
/// activation conversions) handed to another thread: about 10 µs of work,
/// so that waking a worker costs less than the share saves; decode-size
/// vectors (a few thousand values) stay on the calling thread.
const ELEM_GRAIN: u64 = 32768;
/// [`ELEM_GRAIN`] for the requantize epilogue (a division, a rounding and
/// a clamp per value).
const QUANT_GRAIN: u64 = 8192;
/// [`ELEM_GRAIN`] for the per-block activation quantization of the
/// block-dot kernel, in 32-value blocks (a division per value).
const BLOCK_GRAIN: u64 = 64;

/// The grain, in rows of `k` values, of a per-row loop whose per-value
/// grain is `elems`.
fn rows_grain(elems: u64, k: usize) -> u64 {
    elems.div_ceil(k.max(1) as u64)
}

impl Gen<'_> {
    /// Emits a driver loop over the independent iterations `i` in
    /// `0..total`, split over the library's threads in shares of at least
    /// `grain` iterations (`lowbit_for`; every loop when the driver is
    /// built with `-DLOWBIT_SPLIT_ALL`). `body` names its buffers as
    /// `args` does: (name, C element type, `const` or not, the C
    /// expression of the buffer at the call). Each iteration must write
    /// only its own outputs, so the result is the same however the
    /// iterations are shared out, and the written buffers must be fresh
    /// ([`Gen::alloc`]): no other argument points into them (they are
    /// `restrict`).
    fn par_loop(&mut self, total: u64, grain: u64, args: &[(&str, &str, bool, &str)], body: &str) {
        let name = format!("{}_p{}", self.sym, self.nloops);
        self.nloops += 1;
        let mut decls = String::new();
        let mut exprs = Vec::new();
        for (i, (arg, ctype, is_const, expr)) in args.iter().enumerate() {
            let ty = if *is_const {
                format!("const {ctype}")
            } else {
                ctype.to_string()
            };
            // `restrict`: each loop writes fresh buffers of its own that
            // no other argument points into (as the `calloc`ed buffers
            // were known to the compiler when the loops were inline), so
            // it may vectorize stores to byte buffers.
            let _ = writeln!(decls, "  {ty} *restrict {arg} = ({ty} *)args[{i}];");
            exprs.push(*expr);
        }
        let _ = writeln!(
            self.loops,
            "static void {name}(const void *const *args, int64_t lo, int64_t hi) {{\n{decls}  for (size_t i = (size_t)lo; i < (size_t)hi; i++) {{\n{body}\n  }}\n}}"
        );
        let _ = writeln!(
            self.body,
            "  {{ const void *const args[] = {{{}}}; lowbit_for({name}, args, {total}, LOWBIT_GRAIN({grain})); }}",
            exprs.join(", ")
        );
    }

    fn data(&mut self, bytes: Vec<u8>) -> Result<String, String> {
        self.data.add(&bytes)
    }

    fn alloc(&mut self, elems: u64, ctype: &str) -> String {
        let v = format!("t{}", self.tmp);
        self.tmp += 1;
        let _ = writeln!(
            self.body,
            "  {ctype} *{v} = ({ctype} *)calloc({}, sizeof({ctype}));\n  if (!{v}) goto fail;\n  bufs[nbufs++] = {v};",
            elems.max(1)
        );
        v
    }

    fn var(&self, op: Op, v: Value) -> Result<(String, ElemType), String> {
        self.vars.get(&v).cloned().ok_or_else(|| {
            format!(
                "unsupported: {}: an operand is not a run-time value the driver computes",
                label(self.f, op)
            )
        })
    }

    /// An `f32` operand: computed, or a constant embedded as data.
    fn f32_operand(&mut self, op: Op, v: Value) -> Result<String, String> {
        self.operand(op, v, ElemType::F32)
    }

    /// An operand of `elem` (`f32` or `i32`): computed, or a constant
    /// embedded as data.
    fn operand(&mut self, op: Op, v: Value, elem: ElemType) -> Result<String, String> {
        if let Some((x, e)) = self.vars.get(&v) {
            if *e != elem {
                return Err(format!(
                    "unsupported: {}: an operand is {e}, the driver's code here takes {elem}",
                    label(self.f, op)
                ));
            }
            return Ok(x.clone());
        }
        let t = constant_of(self.f, v)
            .filter(|t| t.elem == elem)
            .ok_or_else(|| {
                format!(
                    "unsupported: {}: an operand is neither computed nor a {elem} constant",
                    label(self.f, op)
                )
            })?;
        Ok(if elem == ElemType::F32 {
            format!("((const float *){})", self.data(f32_bytes(&t))?)
        } else {
            let v: Vec<i32> = t.codes.iter().map(|&c| c as u32 as i32).collect();
            format!("((const int32_t *){})", self.data(i32_bytes(&v))?)
        })
    }

    /// Emits the kernel call of the plan that computes `end`'s result.
    fn kernel_call(&mut self, end: Op, p: &Mapped) -> Result<(), String> {
        let f = self.f;
        let bufs = p.bufs.as_ref().ok_or_else(|| {
            format!(
                "internal: {}: its weights were not written (thought unused)",
                label(f, end)
            )
        })?;
        let buf = |b: &Option<String>, what: &str| {
            b.clone().ok_or_else(|| {
                format!(
                    "internal: {}: the packed {what} were not written",
                    label(f, end)
                )
            })
        };
        let (x, xe) = self.var(p.op, p.x)?;
        let xt = f.ty(p.x);
        let n: u64 = xt.shape[..xt.rank().saturating_sub(1)].iter().product();
        let spec = &p.spec;
        let (m, k, k_pad) = (spec.m, spec.k, spec.k_pad());
        let kname = format!("{}_k{}", self.sym, self.kernels.len());
        self.kernels.push((kname.clone(), spec.clone()));
        let result = f.op(end).results[0];
        let re = if p.quantize.is_some() {
            ElemType::F32
        } else {
            f.ty(result).elem
        };
        let rtype = c_type(re).ok_or_else(|| {
            format!(
                "unsupported: {}: the kernel's result is {re}",
                label(f, end)
            )
        })?;
        let w = bufs.codes.clone();
        let call = if spec.is_blockdot() {
            // The quantize-activations form: each row quantized per
            // 32-block as `lowbit_llvm::actquant` does (and the
            // interpreter's absmax_scale + quantize): max|x| from the
            // sign-cleared bits (NaN above 0x7f800000), the scale and the
            // quotient divided in f32, NaN quotients to 0, others clamped
            // to [-128, 127] and rounded to even by adding and subtracting
            // 1.5 * 2^23; zeros past k. The kernel takes the codes, the
            // block scales and -offset * the block sums (its weights are
            // w + offset: 8 for i4, 128 for i8).
            if xe != ElemType::F32 {
                return Err(format!(
                    "unsupported: {}: quantized activations must be f32, not {xe}",
                    label(f, p.op)
                ));
            }
            let nb = k_pad / 32;
            let offset = spec.blockdot_offset();
            let xq = self.alloc(n * k_pad as u64, "int8_t");
            let xs = self.alloc(n * nb as u64, "float");
            let corr = self.alloc(n * nb as u64, "int32_t");
            // One iteration per (row, block).
            let body = format!(
                "    size_t r = i / {nb}, b = i % {nb};
    size_t j0 = b * 32, j1 = j0 + 32 < {k} ? j0 + 32 : {k};
    uint32_t top = 0;
    for (size_t j = j0; j < j1; j++) {{ uint32_t u; memcpy(&u, &x[r * {k} + j], 4); u &= 0x7fffffffu; if (u > top) top = u; }}
    if (top > 0x7f800000u) top = 0x7fc00000u;
    float amax, s; memcpy(&amax, &top, 4); s = amax / 127.0f;
    int32_t sum = 0;
    for (size_t j = j0; j < j1; j++) {{
      float t = x[r * {k} + j] / s; int32_t q = 0;
      if (t == t) {{ if (t < -128.0f) t = -128.0f; if (t > 127.0f) t = 127.0f; q = (int32_t)((t + 12582912.0f) - 12582912.0f); }}
      xq[r * {k_pad} + j] = (int8_t)q; sum += q;
    }}
    xs[i] = s; corr[i] = -{offset} * sum;"
            );
            self.par_loop(
                n * nb as u64,
                BLOCK_GRAIN,
                &[
                    ("x", "float", true, &x),
                    ("xq", "int8_t", false, &xq),
                    ("xs", "float", false, &xs),
                    ("corr", "int32_t", false, &corr),
                ],
                &body,
            );
            let s = buf(&bufs.scales, "scales")?;
            // The AMX block-dot kernel (same buffers and results) needs
            // the tile state: the entry point asks for it first.
            if lowbit_llvm::aot::blockdot_on_amx(spec, self.target) {
                self.amx = true;
            }
            format!("{xq}, {w}, {s}, {xs}, {corr}")
        } else if !spec.is_integer() {
            let s = buf(&bufs.scales, "scales")?;
            let z = bufs
                .zero_points
                .clone()
                .unwrap_or_else(|| "NULL".to_string());
            let bias = match p.bias {
                Some(b) => self.f32_operand(end, b)?,
                None => "NULL".into(),
            };
            let xp = if xe == ElemType::F16 || xe == ElemType::BF16 {
                // The kernel reads f32 (as `GemmKernel::run` converts
                // f16/bf16 activations): each value widened exactly, rows
                // padded to k_pad with zeros.
                let xp = self.alloc(n * k_pad as u64, "float");
                let widen = if xe == ElemType::BF16 {
                    "b = (uint32_t)h << 16;"
                } else {
                    // f16: sign, then subnormal (mantissa * 2^-24, exact
                    // in f32), inf/NaN, or rebiased normal.
                    "uint32_t e = (h >> 10) & 31u, mt = h & 1023u, sg = (uint32_t)(h >> 15) << 31; if (e == 0) { float v = (float)mt * 0x1p-24f; memcpy(&b, &v, 4); b |= sg; } else if (e == 31) b = sg | 0x7f800000u | (mt << 13); else b = sg | ((e + 112u) << 23) | (mt << 13);"
                };
                // Per row: the inner loop over a row has no divisions.
                self.par_loop(
                    n,
                    rows_grain(ELEM_GRAIN, k),
                    &[("x", "uint16_t", true, &x), ("xp", "float", false, &xp)],
                    &format!("    for (size_t j = 0; j < {k}; j++) {{ uint16_t h = x[i * {k} + j]; uint32_t b; {widen} memcpy(&xp[i * {k_pad} + j], &b, 4); }}"),
                );
                xp
            } else if k_pad == k {
                x
            } else {
                // The kernel reads rows of k_pad with zeros after k.
                let xp = self.alloc(n * k_pad as u64, "float");
                self.par_loop(
                    n,
                    rows_grain(ELEM_GRAIN, k),
                    &[("x", "float", true, &x), ("xp", "float", false, &xp)],
                    &format!("    memcpy(xp + i * {k_pad}, x + i * {k}, {k} * sizeof(float));"),
                );
                xp
            };
            format!("{xp}, {w}, {s}, {z}, {bias}")
        } else if spec.is_bit_serial() {
            // The activations as the kernel's bit-planes (per 512-element
            // block, `bits` planes of 64 bytes, element e of the block at
            // bit e % 8 of byte e / 8 of plane p holding its code's bit p;
            // `lowbit_llvm::bit_plane_activations`), zeros past k, and
            // each row's value sum (wrapping i32) for the zero-point terms.
            let bits = xe.bits() as usize;
            let row = k_pad / 8 * bits;
            let (block, plane) = (PLANE_BLOCK / 8 * bits, PLANE_BLOCK / 8);
            let xp = self.alloc(n * row as u64, "uint8_t");
            let sums = self.alloc(n, "int32_t");
            let mask = (1u32 << bits) - 1;
            // One iteration per row (each writes its own bytes).
            let body = format!(
                "    uint32_t sum = 0;
    for (size_t j = 0; j < {k}; j++) {{
      uint32_t c = (uint32_t)(uint8_t)x[i * {k} + j] & {mask}u;
      size_t e = j % {PLANE_BLOCK}, at = i * {row} + j / {PLANE_BLOCK} * {block} + e / 8;
      for (int p = 0; p < {bits}; p++) xp[at + (size_t)p * {plane}] |= (uint8_t)(((c >> p) & 1u) << (e % 8));
      sum += (uint32_t){};
    }}
    sums[i] = (int32_t)sum;",
                match xe {
                    ElemType::I8 => format!("(int32_t)x[i * {k} + j]"),
                    // u8: the code is the value.
                    _ => "c".to_string(),
                }
            );
            let xtype = c_type(xe).unwrap_or("uint8_t");
            self.par_loop(
                n,
                rows_grain(ELEM_GRAIN / 4, k),
                &[
                    ("x", xtype, true, &x),
                    ("xp", "uint8_t", false, &xp),
                    ("sums", "int32_t", false, &sums),
                ],
                &body,
            );
            let row_sums = buf(&bufs.row_sums, "row sums")?;
            let (za, zw) = p.zero_points.unwrap_or((0, 0));
            let zps = self.data(i32_bytes(&[za, zw]))?;
            format!("{xp}, {w}, {sums}, {row_sums}, {zps}")
        } else if spec.is_binary() {
            // One row of k_pad / 8 bytes per activation row, LSB first,
            // padded with 0 (as `GemmKernel::run_int` packs them).
            let row = k_pad / 8;
            let xp = self.alloc(n * row as u64, "uint8_t");
            self.par_loop(
                n,
                rows_grain(ELEM_GRAIN, k),
                &[("x", "uint8_t", true, &x), ("xp", "uint8_t", false, &xp)],
                &format!("    for (size_t j = 0; j < {k}; j++) xp[i * {row} + j / 8] |= (uint8_t)((x[i * {k} + j] & 1) << (j % 8));"),
            );
            format!("{xp}, {w}, NULL, NULL, NULL")
        } else {
            // The W8A8/W4A8 kernel multiplies unsigned bytes in rows of
            // k_pad: i8 activations go in with the sign bit flipped (+128,
            // which the packed row offsets take back off).
            let xp = if spec.is_amx() {
                // The AMX kernel reads them as 1 KiB A tiles (16 rows x 64
                // bytes; rows in groups of 16, each group's k in steps of
                // 64), zeros past n and k, 64-byte aligned, followed by
                // its accumulator buffer (`GemmSpec::amx_activation_bytes`,
                // as `GemmKernel::run_int` packs them).
                // Only the tiles are zero-filled (their padding is read);
                // the kernel writes each accumulator before reading it,
                // and zeroing them (4 MiB at m = 4096) cost about 0.15 ms
                // a call in the JIT.
                self.amx = true;
                let bytes = spec.amx_activation_bytes(n as usize);
                let tiles = (n as usize).next_multiple_of(32) * k_pad;
                let raw = format!("t{}", self.tmp);
                let xa = format!("t{}", self.tmp + 1);
                self.tmp += 2;
                let _ = writeln!(
                    self.body,
                    "  uint8_t *{raw} = (uint8_t *)malloc({});\n  if (!{raw}) goto fail;\n  bufs[nbufs++] = {raw};\n  uint8_t *{xa} = (uint8_t *)(((uintptr_t){raw} + 63) & ~(uintptr_t)63);\n  memset({xa}, 0, {tiles});",
                    bytes + 64
                );
                let flip = if xe == ElemType::I8 { " ^ 0x80" } else { "" };
                let xtype = c_type(xe).unwrap_or("uint8_t");
                let group = 16 * k_pad;
                self.par_loop(
                    n,
                    rows_grain(ELEM_GRAIN, k),
                    &[("x", xtype, true, &x), ("xa", "uint8_t", false, &xa)],
                    &format!("    uint8_t *d = xa + i / 16 * {group} + i % 16 * 64;\n    for (size_t j = 0; j < {k}; j++) d[j / 64 * 1024 + j % 64] = (uint8_t)((uint8_t)x[i * {k} + j]{flip});"),
                );
                xa
            } else if xe == ElemType::U8 && k_pad == k {
                x
            } else {
                let xp = self.alloc(n * k_pad as u64, "uint8_t");
                let flip = if xe == ElemType::I8 { " ^ 0x80" } else { "" };
                let xtype = c_type(xe).unwrap_or("uint8_t");
                self.par_loop(
                    n,
                    rows_grain(ELEM_GRAIN, k),
                    &[("x", xtype, true, &x), ("xp", "uint8_t", false, &xp)],
                    &format!("    for (size_t j = 0; j < {k}; j++) xp[i * {k_pad} + j] = (uint8_t)((uint8_t)x[i * {k} + j]{flip});"),
                );
                xp
            };
            let params = match &p.requant {
                // Three arrays of m_pad i32 (multipliers, shifts, zero
                // points; 0 in padding rows), as the kernel loads them.
                Some(rq) => {
                    let m_pad = spec.m_pad();
                    let mut v = vec![0i32; 3 * m_pad];
                    for (r, (&mult, &sh)) in rq.multipliers.iter().zip(&rq.shifts).enumerate() {
                        v[r] = mult;
                        v[m_pad + r] = sh as i32;
                        v[2 * m_pad + r] = i32::from(rq.zero_point);
                    }
                    self.data(i32_bytes(&v))?
                }
                None => "NULL".into(),
            };
            let offs = buf(&bufs.row_offsets, "row offsets")?;
            let bias = match &p.int_bias {
                Some(b) => self.data(i32_bytes(b))?,
                None => "NULL".into(),
            };
            format!("{xp}, {w}, {params}, {offs}, {bias}")
        };
        let y = self.alloc(n * m as u64, rtype);
        // All rows, split over the library's threads (`lowbit_call`) in
        // whole granules of the kernel's rows, as `GemmKernel::run` splits
        // them (the AMX block-dot kernel's: whole panel pairs).
        let granule = lowbit_llvm::aot::model_row_granule(spec, self.target);
        let _ = writeln!(
            self.body,
            "  lowbit_call({kname}, {call}, {y}, {n}, {m}, {granule});"
        );
        match &p.quantize {
            Some((kind, operands)) => {
                let q = self.quantize(end, kind, operands, &y, n * m as u64, m)?;
                self.vars.insert(result, q);
            }
            None => {
                self.vars.insert(result, (y, re));
            }
        }
        Ok(())
    }

    /// The `qmatmul` requantize epilogue on the kernel's `f32` result `y`
    /// (`elems` values, `m` per row), as the interpreter's `quantize`:
    /// the quotient `y / scale` in f32 (the quotient format of f32
    /// operands), rounded to an integer in the op's mode ([`c_round`]),
    /// NaN to 0, plus the zero point, clamped to the result type or
    /// wrapped modulo its size. Wrapping, a quotient of 2^62 or more (an
    /// f32 that large is a multiple of 2^39, so its low 32 bits are zero;
    /// the interpreter's beyond 2^117 and infinities wrap to 0 too) adds
    /// nothing to the zero point.
    fn quantize(
        &mut self,
        end: Op,
        kind: &OpKind,
        operands: &[Value],
        y: &str,
        elems: u64,
        m: usize,
    ) -> Result<(String, ElemType), String> {
        let f = self.f;
        let unsupported = |why: String| format!("unsupported: {}: {why}", label(f, end));
        let (rounding, saturate) = quantize_form(kind).map_err(unsupported)?;
        let rt = f.ty(f.op(end).results[0]);
        let (lo, hi) = match rt.elem {
            ElemType::U8 => (0i64, 255i64),
            ElemType::I8 => (-128, 127),
            ElemType::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
            e => {
                return Err(unsupported(format!(
                "the requantize epilogue writes {e}; compiled libraries quantize to u8, i8 or i32"
            )))
            }
        };
        let per_col = |t: &Tensor| -> Result<&'static str, String> {
            if t.codes.len() == 1 {
                Ok("0")
            } else if t.codes.len() == m {
                Ok("i % M")
            } else {
                Err(unsupported(format!(
                    "the requantize scale or zero point {} is not per tensor or per output column",
                    t.ty()
                )))
            }
        };
        let s = operands
            .first()
            .and_then(|&v| constant_of(f, v))
            .filter(|t| t.elem == ElemType::F32)
            .ok_or_else(|| unsupported("the requantize scale is not an f32 constant".into()))?;
        let si = per_col(&s)?;
        let sname = self.data(f32_bytes(&s))?;
        let (zname, zi) = match operands.get(1) {
            Some(&z) => {
                let t = constant_of(f, z)
                    .ok_or_else(|| unsupported("the output zero point is not a constant".into()))?;
                let vals: Vec<i32> = t
                    .to_i128()
                    .ok_or_else(|| unsupported("the output zero point is not integral".into()))?
                    .iter()
                    .map(|&v| v as i32)
                    .collect();
                let zi = per_col(&t)?;
                (self.data(i32_bytes(&vals))?, zi)
            }
            None => (self.data(i32_bytes(&[0]))?, "0"),
        };
        let ctype = c_type(rt.elem).unwrap_or("int32_t");
        let out = self.alloc(elems, ctype);
        let (huge, store) = if saturate {
            (
                "q > 0 ? INT64_C(0x4000000000000000) : -INT64_C(0x4000000000000000)".to_string(),
                format!("({ctype})(r < {lo}LL ? {lo}LL : r > {hi}LL ? {hi}LL : r)"),
            )
        } else {
            // The low bits of r, as the unsigned type of the result's
            // width, then that type (two's complement for signed ones).
            let bits = if rt.elem == ElemType::I32 { 32 } else { 8 };
            (
                "0".to_string(),
                format!("({ctype})(uint{bits}_t)(uint64_t)r"),
            )
        };
        let round = c_round(rounding);
        self.par_loop(
            elems,
            QUANT_GRAIN,
            &[
                ("y", "float", true, y),
                ("scale", "float", true, &sname),
                ("zp", "int32_t", true, &zname),
                ("out", ctype, false, &out),
            ],
            &format!("    const size_t M = {m}; (void)M;\n    double q = (double)(y[i] / scale[{si}]), a = q < 0 ? -q : q;\n    int64_t r;\n    if (q != q) r = 0;\n    else if (a >= 0x1p62) r = {huge};\n    else {{ {round} }}\n    r += zp[{zi}];\n    out[i] = {store};"),
        );
        Ok((out, rt.elem))
    }

    fn op(&mut self, op: Op) -> Result<(), String> {
        let f = self.f;
        if let Some(p) = self.plans.remove(&op) {
            return self.kernel_call(op, &p);
        }
        let d = f.op(op);
        let unsupported = |why: String| format!("unsupported: {}: {why}", label(f, op));
        match &d.kind {
            OpKind::MatMul { .. } | OpKind::MatMulInt { .. } | OpKind::QMatMul { .. } => {
                let me = label(f, op);
                let why = self
                    .not_mapped
                    .iter()
                    .rev()
                    .find(|(l, _)| *l == me)
                    .map_or_else(
                        || "it maps onto no CPU kernel".to_string(),
                        |(_, w)| w.clone(),
                    );
                return Err(unsupported(why));
            }
            OpKind::Reshape => {
                let x = self.var(op, d.operands[0])?;
                self.vars.insert(d.results[0], x);
                return Ok(());
            }
            OpKind::Constant(_) => return Ok(()),
            _ => {}
        }
        let re = f.ty(d.results[0]).elem;
        if re != ElemType::F32 && re != ElemType::I32 {
            return Err(unsupported(format!(
                "its result is {}; the driver's own code (add, relu) handles f32 and i32 values only",
                f.ty(d.results[0])
            )));
        }
        let ctype = c_type(re).unwrap_or("float");
        match &d.kind {
            OpKind::Binary {
                op: BinaryOp::Add,
                overflow,
            } => {
                let rt = f.ty(d.results[0]);
                let (a, b) = (d.operands[0], d.operands[1]);
                let (run, other) = if self.vars.contains_key(&a) {
                    (a, b)
                } else {
                    (b, a)
                };
                let x = self.operand(op, run, re)?;
                if f.ty(run).shape != rt.shape {
                    return Err(unsupported(
                        "the run-time operand is broadcast; only the other operand may be".into(),
                    ));
                }
                let ot = f.ty(other);
                let last = rt.shape.last().copied().unwrap_or(1);
                let o = self.operand(op, other, re)?;
                let n = rt.num_elements();
                let idx = if ot.shape == rt.shape {
                    "i".to_string()
                } else if ot.num_elements() == 1 {
                    "0".to_string()
                } else if ot.num_elements() == last
                    && ot.shape.iter().rev().skip(1).all(|&d| d == 1)
                {
                    format!("i % {last}")
                } else {
                    return Err(unsupported(format!(
                        "broadcasting {ot} to {rt} is not the last-dimension or scalar form the driver does"
                    )));
                };
                let y = self.alloc(n, ctype);
                let sum = match (re, overflow) {
                    (ElemType::F32, _) => format!("x[i] + o[{idx}]"),
                    // i32 in unsigned arithmetic: wraps modulo 2^32.
                    (_, Overflow::Wrap) => {
                        format!("(int32_t)((uint32_t)x[i] + (uint32_t)o[{idx}])")
                    }
                    _ => format!(
                        "(int32_t)(x[i] + (int64_t)o[{idx}] > INT32_MAX ? INT32_MAX : x[i] + (int64_t)o[{idx}] < INT32_MIN ? INT32_MIN : x[i] + (int64_t)o[{idx}])"
                    ),
                };
                self.par_loop(
                    n,
                    ELEM_GRAIN,
                    &[
                        ("x", ctype, true, &x),
                        ("o", ctype, true, &o),
                        ("y", ctype, false, &y),
                    ],
                    &format!("    y[i] = {sum};"),
                );
                self.vars.insert(d.results[0], (y, re));
            }
            OpKind::Relu => {
                let x = self.operand(op, d.operands[0], re)?;
                let n = f.ty(d.results[0]).num_elements();
                let y = self.alloc(n, ctype);
                // NaN passes through, as in the interpreter.
                let body = if re == ElemType::F32 {
                    "    float v = x[i]; y[i] = (v > 0.0f || v != v) ? v : 0.0f;"
                } else {
                    "    y[i] = x[i] > 0 ? x[i] : 0;"
                };
                self.par_loop(
                    n,
                    ELEM_GRAIN,
                    &[("x", ctype, true, &x), ("y", ctype, false, &y)],
                    body,
                );
                self.vars.insert(d.results[0], (y, re));
            }
            other => {
                return Err(unsupported(format!(
                    "'{}' has no CPU kernel or driver code (compiled libraries take the matmuls `lowbit run --backend cpu` maps, with their fused epilogues, f32 and i32 add and relu, and reshape)",
                    other.name()
                )))
            }
        }
        Ok(())
    }
}

/// Most threads a library's kernels use (`<sym>_set_threads` clamps to it).
const MAX_THREADS: usize = 256;

/// The driver's thread pool, as C (`SYM` and `MAX_THREADS` replaced by
/// [`threading_code`]). Pooled work is a job of rows (a kernel's) or
/// independent iterations (a driver loop's, `lowbit_for`), taken in
/// chunks from a shared cursor by the caller and the workers that join
/// it. A chunk is the rest over twice the threads, rounded up to whole
/// granules (8-row tiles, the block-dot kernel's 4-panel groups at n = 1,
/// a loop's grain), as `GemmKernel::run` hands them out (`row_chunks`):
/// long chunks first (fewer restarts of the weight streams), short ones
/// last, so a thread descheduled on the shared machine delays only a
/// short chunk and the threads finish together. Each output element is computed
/// by exactly one call on the same buffers, so results do not depend on
/// the number of threads or on which thread ran a chunk. Work for one
/// thread (the count is 1, or there is one chunk) is one call on the
/// caller, without the pool.
///
/// Why it is shaped so: workers start on the first job that needs them
/// after `SYM_set_threads` (never more than the count asks, less the
/// caller) and then sleep on a condition variable between jobs, so a
/// decode-size call pays at most a wake-up, not a `pthread_create`/`join`,
/// per kernel. A worker that finished a job polls for the next one, and a
/// caller whose workers are still busy for their end, for at most 100 us
/// (`LOWBIT_SPIN_NS`: a spin hint per poll, the clock every 64) before
/// sleeping, so back-to-back calls (a model's layers follow each other
/// within microseconds) skip both wake-ups, and an idle pool holds no
/// core (the same bound as the JIT's pool, `lowbit_llvm` `pool.rs`).
/// One job holds the pool at a time (`lowbit_pool_lock`): callers on
/// several threads take turns, so at most the requested number of
/// threads compute pooled work. A job
/// offers `slots` places; the caller closes them when it has run out of
/// chunks and waits only for the workers that joined, so a worker that
/// wakes late never touches a finished job (which lives on the caller's
/// stack). Workers block every signal (signals go to the program's own
/// threads), are stopped and joined when the count changes and when the
/// library is unloaded or the program exits (a destructor); they are
/// named `lowbit-worker` (Linux) for `top` and debuggers. A child after
/// `fork` (taken while no other thread was inside a call) starts its own.
const POOL_C: &str = r#"typedef void (*lowbit_kernel)(const void *, const void *, const void *, const void *, const void *, void *, int64_t, int64_t, int64_t);
typedef void (*lowbit_loop)(const void *const *, int64_t, int64_t);
/* Builds with -DLOWBIT_SPLIT_ALL (the tests) split every driver loop,
   however small; otherwise a thread's share must be worth a wake-up. */
#ifdef LOWBIT_SPLIT_ALL
#define LOWBIT_GRAIN(g) 1
#else
#define LOWBIT_GRAIN(g) (g)
#endif
struct lowbit_job {
  lowbit_kernel kernel; /* a kernel job, else a driver loop */
  const void *a0, *a1, *a2, *a3, *a4;
  void *y;
  int64_t n;
  lowbit_loop loop;
  const void *const *v;
  /* Rows (or iterations) 0..total, in chunks of whole granules (but at
     total) taken from next; parts: twice the threads running it;
     equal: the size of every chunk (0: shrinking chunks). */
  int64_t total, granule, parts, next, equal;
};
/* How long a worker that finished a job, and a caller whose workers are
   still busy, poll before sleeping (ns): see the pool's docs. */
#define LOWBIT_SPIN_NS 100000
/* One poll of a bounded spin-wait started at *t0: a spin hint, and the
   clock every 64 polls; 0 once LOWBIT_SPIN_NS have passed. */
static int lowbit_spin(const struct timespec *t0, unsigned *polls) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
  if (++*polls % 64 != 0) return 1;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (t.tv_sec - t0->tv_sec) * 1000000000LL + (t.tv_nsec - t0->tv_nsec) < LOWBIT_SPIN_NS;
}
static int lowbit_threads = 1;
/* Held by the caller running a pooled job, and while the pool changes. */
static pthread_mutex_t lowbit_pool_lock = PTHREAD_MUTEX_INITIALIZER;
/* Guards the job hand-over below (held briefly). */
static pthread_mutex_t lowbit_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t lowbit_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t lowbit_done = PTHREAD_COND_INITIALIZER;
static struct lowbit_job *lowbit_cur;
static uint64_t lowbit_gen;
static int lowbit_slots, lowbit_busy, lowbit_stop;
/* Under lowbit_pool_lock: the running workers, and the process that
   started them. */
static pthread_t lowbit_workers[MAX_THREADS];
static int lowbit_started;
static pid_t lowbit_pool_pid;
/* Takes chunks of j until none is left. A chunk is the rest over
   parts, rounded up to whole granules (all the rest at the end): long
   chunks first, short ones last, so the threads finish together. The
   bounds follow from the rows taken before, whoever took them. */
static void lowbit_work(struct lowbit_job *j) {
  int64_t r0 = __atomic_load_n(&j->next, __ATOMIC_RELAXED);
  while (r0 < j->total) {
    int64_t rest = j->total - r0;
    int64_t size = j->equal > 0 ? j->equal : ((rest + j->parts - 1) / j->parts + j->granule - 1) / j->granule * j->granule;
    if (size > rest) size = rest;
    if (!__atomic_compare_exchange_n(&j->next, &r0, r0 + size, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) continue;
    if (j->kernel) j->kernel(j->a0, j->a1, j->a2, j->a3, j->a4, j->y, j->n, r0, r0 + size);
    else j->loop(j->v, r0, r0 + size);
    r0 = __atomic_load_n(&j->next, __ATOMIC_RELAXED);
  }
}
static void *lowbit_worker(void *arg) {
  uint64_t seen = 0;
  (void)arg;
#ifdef __linux__
  /* Named for ps/top/debuggers (and the tests, which count them). */
  prctl(PR_SET_NAME, "lowbit-worker", 0, 0, 0);
#endif
  pthread_mutex_lock(&lowbit_mu);
  while (!lowbit_stop) {
    if (lowbit_gen != seen && lowbit_slots > 0) {
      struct lowbit_job *j = lowbit_cur;
      seen = lowbit_gen;
      lowbit_slots--;
      __atomic_store_n(&lowbit_busy, lowbit_busy + 1, __ATOMIC_RELAXED);
      pthread_mutex_unlock(&lowbit_mu);
      lowbit_work(j);
      pthread_mutex_lock(&lowbit_mu);
      __atomic_store_n(&lowbit_busy, lowbit_busy - 1, __ATOMIC_RELAXED);
      if (lowbit_busy == 0) pthread_cond_signal(&lowbit_done);
      /* The next job usually follows within microseconds: poll for it
         (bounded) rather than pay a wake-up. */
      pthread_mutex_unlock(&lowbit_mu);
      struct timespec t0;
      unsigned polls = 0;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      while (__atomic_load_n(&lowbit_gen, __ATOMIC_RELAXED) == seen && lowbit_spin(&t0, &polls)) {}
      pthread_mutex_lock(&lowbit_mu);
    } else {
      /* A job whose places are taken is not this worker's. */
      seen = lowbit_gen;
      pthread_cond_wait(&lowbit_wake, &lowbit_mu);
    }
  }
  pthread_mutex_unlock(&lowbit_mu);
  return NULL;
}
/* Under lowbit_pool_lock: stops and joins the workers. A child after
   fork has none (they stayed in the parent): it re-initializes the
   hand-over state instead. */
static void lowbit_pool_stop(void) {
  if (lowbit_pool_pid == getpid()) {
    pthread_mutex_lock(&lowbit_mu);
    lowbit_stop = 1;
    pthread_cond_broadcast(&lowbit_wake);
    pthread_mutex_unlock(&lowbit_mu);
    for (int i = 0; i < lowbit_started; i++) pthread_join(lowbit_workers[i], NULL);
    lowbit_stop = 0;
  } else if (lowbit_started > 0) {
    pthread_mutex_init(&lowbit_mu, NULL);
    pthread_cond_init(&lowbit_wake, NULL);
    pthread_cond_init(&lowbit_done, NULL);
    lowbit_slots = lowbit_busy = lowbit_stop = 0;
  }
  lowbit_started = 0;
}
__attribute__((destructor)) static void lowbit_pool_fini(void) {
  pthread_mutex_lock(&lowbit_pool_lock);
  lowbit_pool_stop();
  pthread_mutex_unlock(&lowbit_pool_lock);
}
__attribute__((visibility("default"))) int SYM_set_threads(int threads) {
  if (threads < 0) return -1;
  if (threads == 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    threads = c > 0 ? (int)c : 1;
  }
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  pthread_mutex_lock(&lowbit_pool_lock);
  if (threads != __atomic_load_n(&lowbit_threads, __ATOMIC_RELAXED)) {
    __atomic_store_n(&lowbit_threads, threads, __ATOMIC_RELAXED);
    lowbit_pool_stop();
  }
  pthread_mutex_unlock(&lowbit_pool_lock);
  return 0;
}
/* Runs every chunk of j, on up to the set number of threads. */
static void lowbit_run(struct lowbit_job *j) {
  int64_t t = __atomic_load_n(&lowbit_threads, __ATOMIC_RELAXED);
  /* Never more threads than granules. */
  int64_t most = (j->total + j->granule - 1) / j->granule;
  if (t > most) t = most;
  if (t <= 1) {
    /* One call over everything (a kernel streams its rows best so). */
    if (j->kernel) j->kernel(j->a0, j->a1, j->a2, j->a3, j->a4, j->y, j->n, 0, j->total);
    else if (j->total > 0) j->loop(j->v, 0, j->total);
    return;
  }
  pthread_mutex_lock(&lowbit_pool_lock);
  if (lowbit_pool_pid != getpid()) {
    lowbit_pool_stop();
    lowbit_pool_pid = getpid();
  }
  /* The count may have changed since t was read: never more workers
     than it now allows. */
  int64_t now = __atomic_load_n(&lowbit_threads, __ATOMIC_RELAXED);
  if (t > now) t = now;
  if (lowbit_started < t - 1) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* A worker that cannot be started leaves its share to the others. */
    while (lowbit_started < t - 1 && pthread_create(&lowbit_workers[lowbit_started], NULL, lowbit_worker, NULL) == 0) lowbit_started++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  int helpers = lowbit_started < t - 1 ? lowbit_started : (int)(t - 1);
  j->parts = 2 * (int64_t)(helpers + 1);
  /* Past 8 columns a kernel reuses a chunk's weights across its column
     tiles from cache: equal chunks of about total / (8 threads) rows
     (whole granules), as the JIT splits them. */
  if (j->kernel && j->n > 8) {
    int64_t parts8 = 8 * (int64_t)(helpers + 1);
    j->equal = ((j->total + parts8 - 1) / parts8 + j->granule - 1) / j->granule * j->granule;
  }
  if (helpers > 0) {
    pthread_mutex_lock(&lowbit_mu);
    lowbit_cur = j;
    __atomic_store_n(&lowbit_gen, lowbit_gen + 1, __ATOMIC_RELAXED);
    lowbit_slots = helpers;
    if (helpers == lowbit_started) pthread_cond_broadcast(&lowbit_wake);
    else for (int i = 0; i < helpers; i++) pthread_cond_signal(&lowbit_wake);
    pthread_mutex_unlock(&lowbit_mu);
  }
  lowbit_work(j);
  if (helpers > 0) {
    pthread_mutex_lock(&lowbit_mu);
    lowbit_slots = 0;
    if (lowbit_busy > 0) {
      /* The workers finish about when the caller does: poll (bounded)
         before sleeping. */
      struct timespec t0;
      unsigned polls = 0;
      pthread_mutex_unlock(&lowbit_mu);
      clock_gettime(CLOCK_MONOTONIC, &t0);
      while (__atomic_load_n(&lowbit_busy, __ATOMIC_RELAXED) > 0 && lowbit_spin(&t0, &polls)) {}
      pthread_mutex_lock(&lowbit_mu);
    }
    while (lowbit_busy > 0) pthread_cond_wait(&lowbit_done, &lowbit_mu);
    pthread_mutex_unlock(&lowbit_mu);
  }
  pthread_mutex_unlock(&lowbit_pool_lock);
}
/* A kernel on all m rows, in chunks of whole granules of rows (8-row
   tiles, or the kernel's row groups). */
static void lowbit_call(lowbit_kernel kernel, const void *a0, const void *a1, const void *a2, const void *a3, const void *a4, void *y, int64_t n, int64_t m, int64_t granule) {
  struct lowbit_job j = {kernel, a0, a1, a2, a3, a4, y, n, NULL, NULL, m, granule, 2, 0, 0};
  lowbit_run(&j);
}
/* A driver loop over total independent iterations, in chunks of at
   least grain iterations. */
static void lowbit_for(lowbit_loop loop, const void *const *v, int64_t total, int64_t grain) {
  struct lowbit_job j = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, loop, v, total, grain < 1 ? 1 : grain, 2, 0, 0};
  lowbit_run(&j);
}
"#;

/// The driver's threading code: `<sym>_set_threads`, the pool, and
/// `lowbit_call`/`lowbit_for`, which split kernels and driver loops over
/// it ([`POOL_C`]).
fn threading_code(sym: &str) -> String {
    POOL_C
        .replace("MAX_THREADS", &MAX_THREADS.to_string())
        .replace("SYM", sym)
}

/// The entry point's C name stem of each function: `lowbit_<name>` for
/// the first (entry point `lowbit_<name>_run`), `lowbit_<name>_<function>`
/// for the others; two functions whose names give the same C identifier
/// are refused.
fn entry_stems(module: &Module, name: &str) -> Result<Vec<String>, String> {
    let sym = format!("lowbit_{}", c_ident(name));
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut stems = Vec::new();
    for (i, f) in module.functions.iter().enumerate() {
        let stem = if i == 0 {
            sym.clone()
        } else {
            format!("{sym}_{}", c_ident(&f.name))
        };
        if let Some(other) = seen.insert(stem.clone(), &f.name) {
            return Err(format!(
                "functions @{other} and @{} would both have the C entry point {stem}_run",
                f.name
            ));
        }
        stems.push(stem);
    }
    Ok(stems)
}

/// One function's part of the header and driver.
struct Entry {
    /// The comment block describing the entry point.
    doc: String,
    /// The element-count macros and buffer typedefs.
    sizes: String,
    /// The prototype.
    proto: String,
    /// The C definition, after the functions of its threaded loops.
    definition: String,
    /// Whether it calls the AMX-INT8 kernel (the driver then defines
    /// [`AMX_C`]).
    amx: bool,
}

/// The driver's request for the AMX tile state, defined when a kernel is
/// the AMX-INT8 one: Linux wants each process to ask before its first
/// tile instruction (which faults otherwise); the permission covers all
/// of the process's threads, so it is asked once. Returns 0 when granted.
const AMX_C: &str = r#"#ifdef __linux__
#include <sys/syscall.h>
#endif
/* arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18), once
   per process: 0 when Linux grants the AMX tile state, -1 otherwise. */
static int lowbit_amx_ready(void) {
  static int state; /* 0: not asked yet, 1: granted, -1: refused */
  int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
  if (s == 0) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    s = syscall(SYS_arch_prctl, 0x1023, 18) == 0 ? 1 : -1;
#else
    s = -1;
#endif
    __atomic_store_n(&state, s, __ATOMIC_RELEASE);
  }
  return s == 1 ? 0 : -1;
}
"#;

/// Compiles every function of the module (see [`entry_stems`] for the
/// entry points' names) into an object (or, with `what` = [`Emit::Asm`],
/// assembly; with [`Emit::LlvmIr`], LLVM IR text), with the driver and the
/// header. The packed data goes to the build directory as it is packed.
pub fn compile_model(
    module: &Module,
    name: &str,
    target: &CpuTarget,
    what: Emit,
) -> Result<Artifacts, String> {
    if module.functions.is_empty() {
        return Err("the model has no function".into());
    }
    let stems = entry_stems(module, name)?;
    let sym = format!("lowbit_{}", c_ident(name));
    let dir = BuildDir::new()?;
    let writer = match what {
        Emit::Asm => DataWriter::assembly(&dir.path.join("data.s")),
        Emit::LlvmIr => DataWriter::llvm_ir(&dir.path.join("data.ll")),
        Emit::Obj => DataWriter::object(&dir.path.join("data.o"), &target.triple),
    }
    .map_err(|e| e.to_string())?;
    let mut data = Data {
        sym: sym.clone(),
        writer,
    };
    let mut kernels = Vec::new();
    let mut entries = Vec::new();
    for (f, stem) in module.functions.iter().zip(&stems) {
        entries.push(compile_function(f, stem, &mut data, &mut kernels, target)?);
    }
    let docs: String = entries.iter().map(|e| e.doc.as_str()).collect();
    let sizes: String = entries.iter().map(|e| e.sizes.as_str()).collect();
    let protos: String = entries.iter().map(|e| format!("{};\n", e.proto)).collect();
    let header = format!(
        "{docs}/* int {sym}_set_threads(int threads): later calls (of every entry point\n * above) split their kernels' output rows, and their driver loops over\n * large tensors (activation conversion and quantization, add, relu,\n * requantize), over `threads` threads, the calling thread included (0:\n * one per online CPU, at most {MAX_THREADS}); the default is 1. Results are the\n * same, bit for bit, for any count. The library keeps up to `threads - 1`\n * worker threads, started by the first call that needs them; after a\n * call they poll for the next one for up to 100 us, then sleep (taking\n * no CPU time) until it comes; a worker that cannot be started\n * leaves its share to the others. Changing the count stops and joins\n * the workers (after a call on another thread that is using them);\n * unloading the library or leaving the program stops them too, and a\n * child process after fork() starts its own (fork while no other thread\n * is inside a call).\n * Entry points may be called from several threads at once: the workers\n * serve one kernel or loop at a time and the callers take turns, so at\n * most `threads` threads compute split work at once (each caller's\n * unsplit work runs on that caller). Returns 0, or -1 for a negative\n * count. Link with -pthread where the C library needs it.\n */\n#ifndef {guard}_H\n#define {guard}_H\n#include <stdint.h>\n{sizes}#ifdef __cplusplus\nextern \"C\" {{\n#endif\n{protos}int {sym}_set_threads(int threads);\n#ifdef __cplusplus\n}}\n#endif\n#endif\n",
        guard = sym.to_uppercase(),
    );
    let mut driver = String::from(
        "/* Generated by lowbit: the driver of a compiled model. */\n#include <pthread.h>\n#include <signal.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n#include <time.h>\n#include <unistd.h>\n#ifdef __linux__\n#include <sys/prctl.h>\n#endif\n",
    );
    driver.push_str(&threading_code(&sym));
    if entries.iter().any(|e| e.amx) {
        driver.push_str(AMX_C);
    }
    for (k, _) in &kernels {
        // Every kernel has the same six buffer arguments (their element
        // types differ by kernel; see `lowbit_llvm::codegen`).
        let _ = writeln!(driver, "void {k}(const void *, const void *, const void *, const void *, const void *, void *, int64_t, int64_t, int64_t);");
    }
    for i in 0..data.writer.len() {
        let _ = writeln!(driver, "extern const uint8_t {sym}_d{i}[];");
    }
    for e in &entries {
        driver.push_str(&e.definition);
    }
    let kernels: Vec<ModelKernel> = kernels
        .iter()
        .map(|(s, spec)| ModelKernel {
            spec,
            symbol: s.clone(),
        })
        .collect();
    data.writer.finish().map_err(|e| e.to_string())?;
    let object = emit_model(&kernels, target, what).map_err(|e| e.to_string())?;
    Ok(Artifacts {
        object,
        dir,
        driver,
        header,
    })
}

/// Compiles `f` into the entry point `<sym>_run`: its kernels are added to
/// `kernels`, its constant data written to `data`.
fn compile_function(
    f: &Function,
    sym: &str,
    data: &mut Data,
    kernels: &mut Vec<(String, GemmSpec)>,
    target: &CpuTarget,
) -> Result<Entry, String> {
    // Values some output depends on (every operand counted): a mapped
    // matmul outside them needs no weights in the library.
    let mut live: HashSet<Value> = f.outputs.iter().map(|(_, v)| *v).collect();
    for &op in f.ops().iter().rev() {
        let d = f.op(op);
        if d.results.iter().any(|r| live.contains(r)) {
            live.extend(d.operands.iter().copied());
        }
    }
    // The same mapping as `lowbit run --backend cpu`, less the plans the
    // driver cannot call (those are refused below, with the reason). Each
    // accepted plan's packed weights go to the data object at once and
    // are dropped, so one layer's packed weights exist at a time.
    let mut not_mapped = Vec::new();
    let mut write_error = None;
    let plans = map_plans(f, &mut not_mapped, |p| {
        aot_supports(&p, target)?;
        let end = p.fused.last().copied().unwrap_or(p.op);
        let used = f.op(end).results.iter().any(|r| live.contains(r));
        Mapped::new(p, used, data).inspect_err(|e| {
            write_error.get_or_insert(e.clone());
        })
    });
    if let Some(e) = write_error {
        return Err(e);
    }
    // Walk back from the outputs: a mapped matmul (chain) needs only its
    // activation and run-time bias.
    let mut needed: HashSet<Value> = f.outputs.iter().map(|(_, v)| *v).collect();
    for &op in f.ops().iter().rev() {
        let d = f.op(op);
        if !d.results.iter().any(|r| needed.contains(r)) {
            continue;
        }
        match plans.get(&op) {
            Some(p) => {
                needed.insert(p.x);
                needed.extend(p.bias);
            }
            None => needed.extend(d.operands.iter().copied()),
        }
    }
    let mut g = Gen {
        f,
        sym: sym.to_string(),
        kernels: Vec::new(),
        data,
        body: String::new(),
        vars: HashMap::new(),
        plans,
        not_mapped,
        tmp: 0,
        loops: String::new(),
        nloops: 0,
        amx: false,
        target,
    };
    let mut params = Vec::new();
    let mut doc = String::new();
    // Element counts as macros, so callers can size their buffers, and
    // each buffer's C element type as a typedef.
    let mut sizes = String::new();
    let mut io_type = |what: &str, i: usize, t: &lowbit::ir::TensorType, ctype: &str| {
        let _ = writeln!(
            sizes,
            "#define {}_{}{i}_ELEMS {}\ntypedef {ctype} {sym}_{}{i}_t;",
            sym.to_uppercase(),
            what.to_uppercase(),
            t.num_elements(),
            what
        );
    };
    for (i, (pname, v)) in f.params.iter().enumerate() {
        let t = f.ty(*v);
        let ctype = c_type(t.elem).ok_or_else(|| {
            format!(
                "unsupported: input '{pname}' is {t}; compiled libraries take f32, f16, bf16, u8, i8, i32 or b1 inputs"
            )
        })?;
        let c = format!("in{i}_{}", c_ident(pname));
        let _ = writeln!(
            doc,
            " *   {c}: input '{pname}', {t}, row-major {ctype}{}",
            match t.elem {
                ElemType::Bipolar => " codes (0 or 1, one per byte)",
                ElemType::F16 | ElemType::BF16 => " (the values' bits)",
                _ => "",
            }
        );
        io_type("in", i, t, ctype);
        params.push(format!("const {ctype} *{c}"));
        g.vars.insert(*v, (c, t.elem));
    }
    for &op in f.ops() {
        if f.op(op).results.iter().any(|r| needed.contains(r)) {
            g.op(op)?;
        }
    }
    for (i, (oname, v)) in f.outputs.iter().enumerate() {
        let t = f.ty(*v);
        let c = format!("out{i}_{}", c_ident(oname));
        let (src, e) = g.vars.get(v).cloned().ok_or_else(|| {
            format!("unsupported: output '{oname}' is not computed at run time (a constant)")
        })?;
        let ctype = c_type(e).ok_or_else(|| format!("unsupported: output '{oname}' is {t}"))?;
        let _ = writeln!(doc, " *   {c}: output '{oname}', {t}, row-major {ctype}");
        io_type("out", i, t, ctype);
        let _ = writeln!(
            g.body,
            "  memcpy({c}, {src}, {} * sizeof({ctype}));",
            t.num_elements()
        );
        params.push(format!("{ctype} *{c}"));
    }
    let proto = format!("int {sym}_run({})", params.join(", "));
    let (amx_doc, amx_check) = if g.amx {
        (
            " * Returns 2, computing nothing, where Linux refuses the AMX tile state\n * its AMX-INT8 kernels need (arch_prctl ARCH_REQ_XCOMP_PERM).\n",
            "  if (lowbit_amx_ready() != 0) return 2;\n",
        )
    } else {
        ("", "")
    };
    let doc = format!(
        "/* Generated by lowbit compile from function @{fname}.\n * {proto}\n{doc} * Returns 0 on success, non-zero if memory for intermediates ran out.\n{amx_doc} * The weights are packed into the compiled code; calls are thread-safe.\n */\n",
        fname = f.name,
    );
    let definition = format!(
        "{}__attribute__((visibility(\"default\"))) {proto} {{\n{amx_check}  void *bufs[{}];\n  size_t nbufs = 0;\n  int rc = 0;\n{}  goto done;\nfail:\n  rc = 1;\ndone:\n  while (nbufs > 0) free(bufs[--nbufs]);\n  return rc;\n}}\n",
        g.loops,
        g.tmp.max(1),
        g.body
    );
    kernels.append(&mut g.kernels);
    Ok(Entry {
        doc,
        sizes,
        proto,
        definition,
        amx: g.amx,
    })
}

/// A fresh temporary directory, removed with everything in it on drop.
pub struct BuildDir {
    /// Its path.
    pub path: std::path::PathBuf,
}

impl BuildDir {
    fn new() -> Result<BuildDir, String> {
        // Process id and a per-process counter: unique among concurrent
        // compiles (tests compile in parallel threads).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lowbit-aot-{}-{n}", std::process::id()));
        // A leftover of an earlier process with the same id.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(BuildDir { path })
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs `build` in `a`'s build directory once it holds the kernels'
/// object (`model.o`, or `model.s`) and the driver (`driver.c`) beside the
/// data (`data.o` or `data.s`).
fn in_build_dir<T>(
    a: &Artifacts,
    build: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, String> {
    let dir = &a.dir.path;
    let (obj, drv) = (dir.join("model.o"), dir.join("driver.c"));
    std::fs::write(&obj, &a.object).map_err(|e| format!("cannot write {}: {e}", obj.display()))?;
    std::fs::write(&drv, &a.driver).map_err(|e| format!("cannot write {}: {e}", drv.display()))?;
    build(dir)
}

/// Copies the file `from` to `out` atomically, streaming (a library holds
/// all the weights: it is never read into memory whole).
fn copy_out(from: &Path, out: &Path) -> Result<(), String> {
    let mut src =
        std::fs::File::open(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    crate::output::write_atomic_with(out, |w| std::io::copy(&mut src, w).map(|_| ()))
}

/// The optimization level the driver is compiled at: `-O3`, because the
/// driver's loops run over ranges known only at run time (a thread's
/// share), which GCC at `-O2` (its "very cheap" vectorizer cost model)
/// leaves scalar: a relu or the activation quantization ran so, 8 %
/// slower per call of a decode model than the inline loops of fixed
/// length it had before (BENCHMARKS.md, "AOT libraries on a persistent
/// thread pool").
/// Floating-point semantics are the same at every level (no fast-math).
const DRIVER_OPT: &str = "-O3";

/// Runs the system C compiler (`$CC`, else `cc`) with `args`.
fn run_cc(what: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let o = Command::new(&cc).args(args).output().map_err(|e| {
        format!("--emit {what} needs a C compiler and linker: cannot run '{cc}': {e}")
    })?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the {what} with '{cc}' failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Links `a` into the shared library `out` with the system C compiler and
/// writes the header to `header`; both appear whole or not at all.
pub fn link_shared(a: &Artifacts, out: &Path, header: &Path) -> Result<(), String> {
    in_build_dir(a, |dir| {
        let so = dir.join("model.so");
        run_cc(
            "so",
            &[
                "-shared".as_ref(),
                "-pthread".as_ref(),
                "-fPIC".as_ref(),
                DRIVER_OPT.as_ref(),
                "-o".as_ref(),
                so.as_os_str(),
                dir.join("driver.c").as_os_str(),
                dir.join("model.o").as_os_str(),
                dir.join("data.o").as_os_str(),
            ],
        )?;
        crate::output::write_atomic(header, a.header.as_bytes())?;
        copy_out(&so, out)
    })
}

/// Builds one relocatable object `out` (the driver compiled by the system
/// C compiler, then merged with the kernels' object by a relocatable link,
/// `cc -r`) and writes the header to `header`. The entry point is the only
/// symbol of default visibility; kernels and weights are hidden, so a
/// program links the object directly (`cc main.c model.o`).
pub fn link_object(a: &Artifacts, out: &Path, header: &Path) -> Result<(), String> {
    in_build_dir(a, |dir| {
        let (drv_o, merged) = (dir.join("driver.o"), dir.join("merged.o"));
        run_cc(
            "obj",
            &[
                "-c".as_ref(),
                "-pthread".as_ref(),
                "-fPIC".as_ref(),
                DRIVER_OPT.as_ref(),
                "-o".as_ref(),
                drv_o.as_os_str(),
                dir.join("driver.c").as_os_str(),
            ],
        )?;
        run_cc(
            "obj",
            &[
                "-r".as_ref(),
                "-nostdlib".as_ref(),
                "-o".as_ref(),
                merged.as_os_str(),
                drv_o.as_os_str(),
                dir.join("model.o").as_os_str(),
                dir.join("data.o").as_os_str(),
            ],
        )?;
        crate::output::write_atomic(header, a.header.as_bytes())?;
        copy_out(&merged, out)
    })
}

/// Writes one assembly file `out`: the driver compiled to assembly by the
/// system C compiler (`cc -S`), then the kernels' and weights' assembly
/// (`a.object` compiled with [`Emit::Asm`]); the header goes to `header`.
/// `cc -c out` assembles it into the object `--emit obj` writes.
pub fn write_assembly(a: &Artifacts, out: &Path, header: &Path) -> Result<(), String> {
    in_build_dir(a, |dir| {
        let drv_s = dir.join("driver.s");
        run_cc(
            "asm",
            &[
                "-S".as_ref(),
                "-pthread".as_ref(),
                "-fPIC".as_ref(),
                DRIVER_OPT.as_ref(),
                "-o".as_ref(),
                drv_s.as_os_str(),
                dir.join("driver.c").as_os_str(),
            ],
        )?;
        let text =
            std::fs::read(&drv_s).map_err(|e| format!("cannot read {}: {e}", drv_s.display()))?;
        let data_s = dir.join("data.s");
        let mut data = std::fs::File::open(&data_s)
            .map_err(|e| format!("cannot read {}: {e}", data_s.display()))?;
        crate::output::write_atomic(header, a.header.as_bytes())?;
        crate::output::write_atomic_with(out, |w| {
            w.write_all(&text)?;
            w.write_all(b"\n# lowbit: kernels and packed weights\n")?;
            w.write_all(&a.object)?;
            w.write_all(b"\n")?;
            std::io::copy(&mut data, w).map(|_| ())
        })
    })
}

/// Writes `--emit llvm`: the kernels' LLVM IR (`a.object`, compiled with
/// [`Emit::LlvmIr`]) followed by the packed data as `hidden constant`
/// globals to `out`, the C driver (which defines the entry points and
/// passes the data to the kernels) to `driver`, the header to `header`.
/// `llc -relocation-model=pic out` and `cc -c driver` build what `--emit
/// obj` links into one object.
pub fn write_llvm(a: &Artifacts, out: &Path, driver: &Path, header: &Path) -> Result<(), String> {
    let data_ll = a.dir.path.join("data.ll");
    let mut data = std::fs::File::open(&data_ll)
        .map_err(|e| format!("cannot read {}: {e}", data_ll.display()))?;
    crate::output::write_atomic(header, a.header.as_bytes())?;
    crate::output::write_atomic(driver, a.driver.as_bytes())?;
    crate::output::write_atomic_with(out, |w| {
        w.write_all(&a.object)?;
        w.write_all(b"\n; lowbit: packed weights, scales and biases (read by the C driver)\n")?;
        std::io::copy(&mut data, w).map(|_| ())
    })
}

#[cfg(test)]
#[path = "aot_model_tests.rs"]
mod tests;
