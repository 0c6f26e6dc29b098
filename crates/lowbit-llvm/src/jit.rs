//! The library JIT: compile a [`GemmSpec`] on first use (LLVM to an
//! object for the host CPU, linked in memory by ORC LLJIT), keep it in an
//! in-memory cache — and on disk when `LOWBIT_CACHE_DIR` is set — keyed by
//! spec, target and compiler version, and run it on the caller's buffers.
//!
//! [`GemmKernel::run`] checks every buffer size against the spec before the
//! machine code sees a pointer, and splits the output rows over threads
//! (the persistent workers of `pool.rs`, one per requested thread, the
//! caller's thread included), which take aligned row chunks, shrinking
//! towards the end, from a shared counter.
//!
//! A W8A8 or W4A8 spec on the `amx` schedule (or [`GemmKernel::compile_amx`],
//! uncached) builds the AMX-INT8 kernel instead (`codegen/amx.rs`), where
//! the host has AMX-INT8 and Linux grants the tile state; it runs through
//! the same `run_int`/`run_requant` with the activations packed per call
//! into 1 KiB tiles (on the call's threads) and rows handed out in whole
//! 32-row panel pairs.
//!
//! A block-dot spec with a static `n >= 8` (`i4` weights; `n >= 9` for
//! `i8`) on an AMX-INT8 host (whose
//! target features include `amx-int8`, and where Linux grants the tile
//! state) builds the AMX block-dot kernel (`codegen/amxdot.rs`,
//! bit-identical to the `vpdpbusd` one, same buffers) unless
//! `LOWBIT_BLOCKDOT_AMX=0`; [`GemmKernel::uses_amx`] tells which was
//! built. `lowbit compile` makes the same choice for AMX-INT8 targets
//! ([`crate::aot::blockdot_on_amx`]).
//!
//! Limits: neither cache evicts (kernels are small).

use crate::codegen::{build_amx_module, build_module, KERNEL_SYMBOL};
use crate::disk_cache;
use crate::error::CpuError;
use crate::objjit::{self, LoadedObject};
use crate::pack::PackedWeights;
use crate::spec::{Dim, GemmSpec, INT_PANEL};
use crate::target::CpuTarget;
use half::{bf16, f16};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{FileType, RelocMode};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

type KernelFn = unsafe extern "C" fn(
    *const f32,
    *const u8,
    *const u8,
    *const u8,
    *const f32,
    *mut f32,
    i64,
    i64,
    i64,
);

/// The compiler identity that goes into cache keys: a kernel built by
/// another lowbit or LLVM version is never reused.
pub fn compiler_version() -> String {
    let (a, b, c) = inkwell::support::get_llvm_version();
    format!("lowbit {} llvm {a}.{b}.{c}", env!("CARGO_PKG_VERSION"))
}

/// Activations in one of the supported element types.
#[derive(Clone, Copy, Debug)]
pub enum Activations<'a> {
    /// `f32`.
    F32(&'a [f32]),
    /// `f16`.
    F16(&'a [f16]),
    /// `bf16`.
    BF16(&'a [bf16]),
    /// `u8` (W8A8 kernels).
    U8(&'a [u8]),
    /// `i8` (W8A8 kernels).
    I8(&'a [i8]),
    /// `b1` codes, one per element: 0 is -1, 1 is +1 (W1A1 kernels).
    B1(&'a [u8]),
    /// Integer codes of `elem` (1 to 8 bits, or `b1` for W1A1), one per
    /// byte, the code in the low bits (two's complement for signed types;
    /// higher bits are ignored, as the IR masks codes): bit-serial kernels.
    Codes(lowbit_numerics::ElemType, &'a [u8]),
}

impl Activations<'_> {
    fn len(&self) -> usize {
        match self {
            Activations::F32(x) => x.len(),
            Activations::F16(x) => x.len(),
            Activations::BF16(x) => x.len(),
            Activations::U8(x) => x.len(),
            Activations::I8(x) => x.len(),
            Activations::B1(x) => x.len(),
            Activations::Codes(_, x) => x.len(),
        }
    }

    fn elem(&self) -> lowbit_numerics::ElemType {
        match self {
            Activations::F32(_) => lowbit_numerics::ElemType::F32,
            Activations::F16(_) => lowbit_numerics::ElemType::F16,
            Activations::BF16(_) => lowbit_numerics::ElemType::BF16,
            Activations::U8(_) => lowbit_numerics::ElemType::U8,
            Activations::I8(_) => lowbit_numerics::ElemType::I8,
            Activations::B1(_) => lowbit_numerics::ElemType::Bipolar,
            Activations::Codes(e, _) => *e,
        }
    }

    fn get(&self, i: usize) -> f32 {
        match self {
            Activations::F32(x) => x[i],
            Activations::F16(x) => x[i].to_f32(),
            Activations::BF16(x) => x[i].to_f32(),
            Activations::U8(x) => f32::from(x[i]),
            Activations::I8(x) => f32::from(x[i]),
            Activations::B1(x) => {
                if x[i] & 1 == 1 {
                    1.0
                } else {
                    -1.0
                }
            }
            Activations::Codes(e, x) => e.decode_int(u64::from(x[i])).map_or(0.0, |v| v as f32),
        }
    }

    /// Bit-serial path: elements `start..start + out.len()` as code bytes
    /// (the planes are their low bits).
    fn codes_into(&self, start: usize, out: &mut [u8]) {
        let r = start..start + out.len();
        match self {
            Activations::U8(x) | Activations::B1(x) | Activations::Codes(_, x) => {
                out.copy_from_slice(&x[r])
            }
            Activations::I8(x) => {
                for (o, &v) in out.iter_mut().zip(&x[r]) {
                    *o = v as u8;
                }
            }
            // Float activations never reach the integer paths (the element
            // type is checked against the spec first).
            Activations::F32(_) | Activations::F16(_) | Activations::BF16(_) => out.fill(0),
        }
    }
}

impl<'a> From<&'a [f32]> for Activations<'a> {
    fn from(x: &'a [f32]) -> Self {
        Activations::F32(x)
    }
}

/// JIT-loaded machine code (unmapped on drop).
pub(crate) type JitCode = LoadedObject;

/// Builds a module with `build`, optimizes it for `target` and compiles it
/// to a relocatable object (the bytes `lowbit compile --emit obj` writes).
pub(crate) fn compile_object(
    target: &CpuTarget,
    build: impl for<'c> FnOnce(&'c Context) -> Result<Module<'c>, CpuError>,
) -> Result<Vec<u8>, CpuError> {
    let ctx = Context::create();
    let module = build(&ctx)?;
    optimize(&module, target)?;
    let machine = target.machine(RelocMode::PIC)?;
    let buf = machine
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| CpuError::Llvm(format!("code generation: {e}")))?;
    Ok(buf.as_slice().to_vec())
}

/// [`compile_object`] for the host, then loaded into this process; returns
/// the code and the addresses of `symbols`.
pub(crate) fn jit(
    target: &CpuTarget,
    symbols: &[&str],
    build: impl for<'c> FnOnce(&'c Context) -> Result<Module<'c>, CpuError>,
) -> Result<(JitCode, Vec<usize>), CpuError> {
    let object = compile_object(target, build)?;
    objjit::load(&object, symbols)
}

/// Where a kernel's machine code came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelOrigin {
    /// Compiled in this call.
    Compiled,
    /// Loaded from the on-disk cache.
    DiskCache,
    /// The disk cache entry was invalid (why): recompiled and rewritten.
    Rebuilt(String),
}

/// Dyadic requantization parameters (per output row `m`) for
/// [`GemmKernel::run_requant`].
#[derive(Clone, Debug)]
pub struct Requant<'a> {
    /// Integer multipliers `M`.
    pub multipliers: &'a [i32],
    /// Right shifts, 0 to 62.
    pub shifts: &'a [u32],
    /// Output zero point.
    pub zero_point: i8,
}

/// A compiled GEMM kernel.
pub struct GemmKernel {
    spec: GemmSpec,
    target: CpuTarget,
    func: KernelFn,
    compile_time: Duration,
    origin: KernelOrigin,
    /// The AMX-INT8 schedule: activations are packed into tiles per call.
    amx: bool,
    /// A block-dot spec on the AMX block-dot kernel (`codegen/amxdot.rs`).
    amx_dot: bool,
    _code: JitCode,
}

impl std::fmt::Debug for GemmKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GemmKernel")
            .field("spec", &self.spec)
            .field("target", &self.target.describe())
            .field("compile_time", &self.compile_time)
            .finish()
    }
}

/// The mid-level passes kernels need. The IR is vectorized and tiled by
/// construction, so only the cleanups matter: promote the accumulators to
/// registers (sroa), fold the unpacking (instcombine), hoist per-row and
/// per-group values (licm, gvn). This takes a few ms where `default<O3>`
/// took 40-50 ms, with the same inner loops.
const PIPELINE: &str =
    "function(sroa,early-cse,instcombine<no-verify-fixpoint>,simplifycfg,loop-mssa(licm),gvn,simplifycfg)";

/// Runs the kernel pass pipeline for `target` over `module`.
pub(crate) fn optimize(module: &Module, target: &CpuTarget) -> Result<(), CpuError> {
    let machine = target.machine(RelocMode::PIC)?;
    module
        .run_passes(PIPELINE, &machine, PassBuilderOptions::create())
        .map_err(|e| CpuError::Llvm(format!("optimization failed: {e}")))
}

type CacheKey = (GemmSpec, CpuTarget, String);

fn cache() -> &'static Mutex<HashMap<CacheKey, Arc<GemmKernel>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<GemmKernel>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The kernel for `spec` on the host CPU: compiled on first use (or loaded
/// from the on-disk cache when `LOWBIT_CACHE_DIR` is set), then taken from
/// the in-memory cache.
pub fn compile(spec: &GemmSpec) -> Result<Arc<GemmKernel>, CpuError> {
    let target = CpuTarget::host()?;
    let key = (spec.clone(), target.clone(), compiler_version());
    let mut map = cache()
        .lock()
        .map_err(|_| CpuError::Llvm("kernel cache lock poisoned".into()))?;
    if let Some(k) = map.get(&key) {
        return Ok(k.clone());
    }
    let dir = disk_cache::default_dir();
    let k = Arc::new(GemmKernel::compile_with_disk_cache(
        spec,
        &target,
        dir.as_deref(),
    )?);
    map.insert(key, k.clone());
    Ok(k)
}

/// Number of kernels in the in-memory cache.
pub fn cached_kernels() -> usize {
    cache().lock().map(|m| m.len()).unwrap_or(0)
}

impl GemmKernel {
    /// Compiles `spec` for `target` (which must be the host, or a CPU whose
    /// features the host has: the code runs in this process) without
    /// consulting any cache.
    pub fn compile_uncached(spec: &GemmSpec, target: &CpuTarget) -> Result<GemmKernel, CpuError> {
        GemmKernel::compile_with_disk_cache(spec, target, None)
    }

    /// Like [`GemmKernel::compile_uncached`], but first looks for the
    /// kernel in the on-disk cache `dir` (see [`crate::disk_cache`]); a
    /// missing or invalid entry is compiled and written back.
    pub fn compile_with_disk_cache(
        spec: &GemmSpec,
        target: &CpuTarget,
        dir: Option<&Path>,
    ) -> Result<GemmKernel, CpuError> {
        spec.check(&target.describe())?;
        if spec.is_amx() {
            amx_ready(spec, target)?;
        }
        let amx_dot = amx_blockdot(spec, target);
        let start = Instant::now();
        let key = format!(
            "{spec:?}|{}|{}|{}|{}{}",
            target.triple,
            target.cpu,
            target.features,
            compiler_version(),
            if amx_dot { "|amx-blockdot" } else { "" }
        );
        let mut origin = KernelOrigin::Compiled;
        if let Some(dir) = dir {
            match disk_cache::load(dir, &key) {
                disk_cache::Lookup::Hit(obj) => match objjit::load(&obj, &[KERNEL_SYMBOL]) {
                    Ok((code, addrs)) => {
                        return Ok(GemmKernel::new(
                            spec,
                            target,
                            code,
                            addrs[0],
                            start.elapsed(),
                            KernelOrigin::DiskCache,
                            amx_dot,
                        ))
                    }
                    Err(e) => origin = KernelOrigin::Rebuilt(format!("cached object: {e}")),
                },
                disk_cache::Lookup::Miss => {}
                disk_cache::Lookup::Invalid(why) => origin = KernelOrigin::Rebuilt(why),
            }
        }
        let object = compile_object(target, |ctx| {
            if spec.is_amx() || amx_dot {
                build_amx_module(ctx, spec, target)
            } else {
                build_module(ctx, spec, target)
            }
        })?;
        if let Some(dir) = dir {
            // A cache that cannot be written only costs a recompilation.
            let _ = disk_cache::store(dir, &key, &object);
        }
        let (code, addrs) = objjit::load(&object, &[KERNEL_SYMBOL])?;
        Ok(GemmKernel::new(
            spec,
            target,
            code,
            addrs[0],
            start.elapsed(),
            origin,
            amx_dot,
        ))
    }

    fn new(
        spec: &GemmSpec,
        target: &CpuTarget,
        code: JitCode,
        addr: usize,
        compile_time: Duration,
        origin: KernelOrigin,
        amx_dot: bool,
    ) -> GemmKernel {
        // SAFETY: the symbol is the function `codegen` emitted with exactly
        // this signature and the C calling convention.
        let func: KernelFn = unsafe { std::mem::transmute::<usize, KernelFn>(addr) };
        GemmKernel {
            spec: spec.clone(),
            target: target.clone(),
            func,
            compile_time,
            origin,
            amx: spec.is_amx(),
            amx_dot,
            _code: code,
        }
    }

    /// Compiles a W8A8 or W4A8 spec (`i8`, `i4` or `u4` weights, `u8` or
    /// `i8` activations, any W8A8 epilogue) for the host on the AMX-INT8 schedule (`tdpbusd` on
    /// 16x16 tiles, `codegen/amx.rs`) whatever its `schedule` says,
    /// without caching; [`compile`] does the same, cached, for a spec
    /// whose schedule is [`lowbit_ir::IntSchedule::Amx`]. Run it with
    /// [`GemmKernel::run_int`] or [`GemmKernel::run_requant`] on weights
    /// packed for the same shapes: the results are those of the direct
    /// schedule. Asks Linux for the AMX tile state first. `Unsupported`
    /// where the host has no AMX-INT8 (or is not Linux on x86-64) or for a
    /// spec that is not W8A8/W4A8.
    pub fn compile_amx(spec: &GemmSpec) -> Result<GemmKernel, CpuError> {
        let mut spec = spec.clone();
        spec.schedule = lowbit_ir::IntSchedule::Amx;
        GemmKernel::compile_uncached(&spec, &CpuTarget::host()?)
    }

    /// Whether the kernel runs on AMX tiles: the AMX W8A8/W4A8 schedule, or a
    /// block-dot spec the JIT put on the AMX block-dot kernel (a static
    /// `n >= 8`, `i8` `n >= 9`, on an AMX-INT8 host, see [`compile`]).
    pub fn uses_amx(&self) -> bool {
        self.amx || self.amx_dot
    }

    /// Where the machine code came from (compiled, or the disk cache).
    pub fn origin(&self) -> &KernelOrigin {
        &self.origin
    }

    /// The spec this kernel computes.
    pub fn spec(&self) -> &GemmSpec {
        &self.spec
    }

    /// The target it was compiled for.
    pub fn target(&self) -> &CpuTarget {
        &self.target
    }

    /// Wall time of IR generation, optimization and machine-code emission.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Checks what every call shares: weights for this spec, `n` against a
    /// static `n`, the activation type and the `x`/`y` sizes.
    fn check_call(
        &self,
        x: &Activations,
        weights: &PackedWeights,
        y_len: usize,
        n: usize,
    ) -> Result<(), CpuError> {
        let spec = &self.spec;
        let w = weights.spec();
        if (w.m, w.k, &w.weight, w.is_integer())
            != (spec.m, spec.k, &spec.weight, spec.is_integer())
        {
            return Err(CpuError::SpecMismatch(format!(
                "weights packed for {w}, kernel is {spec}"
            )));
        }
        if let Dim::Static(sn) = spec.n {
            if sn != n {
                return Err(CpuError::BufferSize {
                    buffer: "n (activation rows)",
                    expected: sn,
                    got: n,
                });
            }
        }
        if x.elem() != spec.act {
            return Err(CpuError::SpecMismatch(format!(
                "activations are {}, the kernel takes {}",
                x.elem(),
                spec.act
            )));
        }
        size("x", n.checked_mul(spec.k), x.len())?;
        size("y", n.checked_mul(spec.m), y_len)
    }

    /// Computes `y[n, m] = act(x[n, k] · Wᵀ + bias)` (float specs).
    /// `threads` = 0 uses every available core. Every size is checked first.
    pub fn run<'a>(
        &self,
        x: impl Into<Activations<'a>>,
        weights: &PackedWeights,
        bias: Option<&[f32]>,
        y: &mut [f32],
        n: usize,
        threads: usize,
    ) -> Result<(), CpuError> {
        let x = x.into();
        let spec = &self.spec;
        if spec.is_integer() {
            return Err(CpuError::SpecMismatch(
                "a W8A8 kernel writes i32 results: use run_int".into(),
            ));
        }
        self.check_call(&x, weights, y.len(), n)?;
        match (spec.epilogue.bias, bias) {
            (true, Some(b)) => size("bias", Some(spec.m), b.len())?,
            (false, None) => {}
            (true, None) => return Err(CpuError::SpecMismatch("the kernel needs a bias".into())),
            (false, Some(_)) => {
                return Err(CpuError::SpecMismatch(
                    "bias given but the kernel has no bias epilogue".into(),
                ))
            }
        }
        if n == 0 {
            return Ok(());
        }
        if spec.is_blockdot() {
            let Activations::F32(v) = x else {
                return Err(CpuError::SpecMismatch(
                    "the block-dot kernel quantizes f32 activations".into(),
                ));
            };
            let qt = if threads == 0 {
                std::thread::available_parallelism().map_or(1, |t| t.get())
            } else {
                threads
            };
            let q = crate::actquant::quantize_activations(spec, v, n, qt);
            self.launch(
                [
                    q.codes.as_ptr() as usize,
                    weights.codes().as_ptr() as usize,
                    weights.scales().as_ptr() as usize,
                    q.scales.as_ptr() as usize,
                    q.corrections.as_ptr() as usize,
                    y.as_mut_ptr() as usize,
                ],
                n,
                threads,
            );
            return Ok(());
        }
        let k_pad = spec.k_pad();
        let padded: Vec<f32>;
        let xp: *const f32 = match x {
            Activations::F32(v) if k_pad == spec.k => v.as_ptr(),
            _ => {
                let mut p = vec![0f32; n * k_pad];
                for (c, row) in p.chunks_mut(k_pad).enumerate() {
                    for (j, d) in row[..spec.k].iter_mut().enumerate() {
                        *d = x.get(c * spec.k + j);
                    }
                }
                padded = p;
                padded.as_ptr()
            }
        };
        let bias_p = bias.map_or(std::ptr::null(), |b| b.as_ptr());
        self.launch(
            [
                xp as usize,
                weights.codes().as_ptr() as usize,
                weights.scales().as_ptr() as usize,
                weights.zero_points().as_ptr() as usize,
                bias_p as usize,
                y.as_mut_ptr() as usize,
            ],
            n,
            threads,
        );
        Ok(())
    }

    /// Computes the exact `i32` product `y[n, m] = x[n, k] · Wᵀ` of a W8A8
    /// spec ([`GemmSpec::int8`]), wrapping on overflow like the
    /// interpreter's `matmul` to `i32`, of a W1A1 spec
    /// ([`GemmSpec::binary`]), or of a bit-serial spec without zero points
    /// ([`GemmSpec::bit_serial`]; activations as `Codes`, or `U8`/`I8`).
    pub fn run_int(
        &self,
        x: Activations,
        weights: &PackedWeights,
        y: &mut [i32],
        n: usize,
        threads: usize,
    ) -> Result<(), CpuError> {
        self.run_int_bias(x, weights, None, y, n, threads)
    }

    /// [`GemmKernel::run_int`] with the W8A8/W4A8 epilogue: `act(acc +
    /// bias[m])`, the `i32` bias added with wrapping and the ReLU (if the
    /// spec has one) as `max(v, 0)` — the interpreter's `relu(add(
    /// matmul_int(x, w), bias))` on `i32`. `bias` must be given exactly
    /// when `spec.epilogue.bias`.
    pub fn run_int_bias(
        &self,
        x: Activations,
        weights: &PackedWeights,
        bias: Option<&[i32]>,
        y: &mut [i32],
        n: usize,
        threads: usize,
    ) -> Result<(), CpuError> {
        if self.spec.epilogue.requantize {
            return Err(CpuError::SpecMismatch(
                "this kernel requantizes to i8: use run_requant".into(),
            ));
        }
        self.run_integer(
            x,
            weights,
            bias,
            (y.as_mut_ptr() as usize, y.len()),
            0,
            n,
            threads,
        )
    }

    /// Computes `y[n, m] = Σ_k (x[n, k] - za) · (W[m, k] - zw)` exactly,
    /// wrapping to `i32`, for a bit-serial spec with zero points
    /// (`weight.zero_point`); `zero_points` is `(za, zw)`, the IR's
    /// `matmul_int x, w, za, zw` operands as values.
    pub fn run_int_zero_points(
        &self,
        x: Activations,
        weights: &PackedWeights,
        zero_points: (i32, i32),
        y: &mut [i32],
        n: usize,
        threads: usize,
    ) -> Result<(), CpuError> {
        if !self.spec.is_bit_serial() || !self.spec.weight.zero_point {
            return Err(CpuError::SpecMismatch(format!(
                "zero points are taken by bit-serial kernels with zero points, not {}",
                self.spec
            )));
        }
        self.check_call(&x, weights, y.len(), n)?;
        self.run_bit_serial(x, weights, y.as_mut_ptr() as usize, zero_points, n, threads)
    }

    /// The bit-serial path after the checks: packs the activations into
    /// bit-planes with their column sums, then runs the kernel.
    fn run_bit_serial(
        &self,
        x: Activations,
        weights: &PackedWeights,
        y: usize,
        (za, zw): (i32, i32),
        n: usize,
        threads: usize,
    ) -> Result<(), CpuError> {
        let (planes, sums) = bit_plane_activations(&self.spec, &x, n, threads)?;
        let zps = [za, zw];
        self.launch(
            [
                planes.as_ptr() as usize,
                weights.codes().as_ptr() as usize,
                sums.as_ptr() as usize,
                weights.row_sums().as_ptr() as usize,
                zps.as_ptr() as usize,
                y,
            ],
            n,
            threads,
        );
        Ok(())
    }

    /// Computes `y[n, m] = clamp(round_half_even(acc * M[m] / 2^shift[m]) +
    /// zp, -128, 127)` as `i8`, `acc` being the exact `i32` product of
    /// [`GemmKernel::run_int`], for a W8A8 spec with
    /// `epilogue.requantize`. The arithmetic is exact in 64-bit integers.
    /// It equals the interpreter's `requantize` with input scale
    /// `M * 2^-shift`, output scale 1 and nearest-even rounding whenever
    /// the interpreter's quotient `acc * M * 2^-shift` is exact in its
    /// quotient format: `|acc * M| < 2^53` with `f64` scales, `< 2^24`
    /// with `f32` ones (beyond that the quotient rounds first).
    pub fn run_requant(
        &self,
        x: Activations,
        weights: &PackedWeights,
        rq: &Requant,
        y: &mut [i8],
        n: usize,
        threads: usize,
    ) -> Result<(), CpuError> {
        self.run_requant_bias(x, weights, None, rq, y, n, threads)
    }

    /// [`GemmKernel::run_requant`] of `act(acc + bias[m])` (see
    /// [`GemmKernel::run_int_bias`]): the interpreter's
    /// `requant_dyadic(relu(add(matmul_int(x, w), bias)))`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_requant_bias(
        &self,
        x: Activations,
        weights: &PackedWeights,
        bias: Option<&[i32]>,
        rq: &Requant,
        y: &mut [i8],
        n: usize,
        threads: usize,
    ) -> Result<(), CpuError> {
        let m = self.spec.m;
        if !self.spec.epilogue.requantize {
            return Err(CpuError::SpecMismatch(
                "this kernel has no requantize epilogue: use run_int".into(),
            ));
        }
        size("multipliers", Some(m), rq.multipliers.len())?;
        size("shifts", Some(m), rq.shifts.len())?;
        // Three arrays of m_pad i32 (multipliers, shifts, zero points; 0
        // for padding rows), so the kernel loads one panel's 16 rows of
        // each as a vector.
        let m_pad = self.spec.m_pad();
        let mut params = vec![0i32; 3 * m_pad];
        for (r, (&mult, &shift)) in rq.multipliers.iter().zip(rq.shifts).enumerate() {
            if shift > 62 {
                return Err(CpuError::BadWeights(format!(
                    "requantize shift {shift} of row {r} is out of 0..=62"
                )));
            }
            params[r] = mult;
            params[m_pad + r] = shift as i32;
            params[2 * m_pad + r] = i32::from(rq.zero_point);
        }
        self.run_integer(
            x,
            weights,
            bias,
            (y.as_mut_ptr() as usize, y.len()),
            params.as_ptr() as usize,
            n,
            threads,
        )
    }

    /// The integer paths' shared body: `y` is `(address, elements)`,
    /// `params` the three requantize arrays (or 0).
    #[allow(clippy::too_many_arguments)]
    fn run_integer(
        &self,
        x: Activations,
        weights: &PackedWeights,
        bias: Option<&[i32]>,
        y: (usize, usize),
        params: usize,
        n: usize,
        threads: usize,
    ) -> Result<(), CpuError> {
        let spec = &self.spec;
        if !spec.is_integer() {
            return Err(CpuError::SpecMismatch(
                "run_int and run_requant are for W8A8 and W1A1 kernels; this one takes float activations".into(),
            ));
        }
        self.check_call(&x, weights, y.1, n)?;
        match (spec.epilogue.bias, bias) {
            (true, Some(b)) => size("bias", Some(spec.m), b.len())?,
            (false, None) => {}
            (true, None) => return Err(CpuError::SpecMismatch("the kernel needs a bias".into())),
            (false, Some(_)) => {
                return Err(CpuError::SpecMismatch(
                    "bias given but the kernel has no bias epilogue".into(),
                ))
            }
        }
        let bias_p = bias.map_or(0, |b| b.as_ptr() as usize);
        if n == 0 {
            return Ok(());
        }
        if spec.is_bit_serial() {
            if spec.weight.zero_point {
                return Err(CpuError::SpecMismatch(
                    "this bit-serial kernel subtracts zero points: use run_int_zero_points".into(),
                ));
            }
            return self.run_bit_serial(x, weights, y.0, (0, 0), n, threads);
        }
        if let Activations::B1(v) | Activations::Codes(lowbit_numerics::ElemType::Bipolar, v) = x {
            // Pack each row's codes into LSB-first bits, padded with 0.
            let row = spec.row_bytes();
            let mut p = vec![0u8; n * row];
            for (c, dst) in p.chunks_mut(row).enumerate() {
                for (j, &b) in v[c * spec.k..(c + 1) * spec.k].iter().enumerate() {
                    dst[j / 8] |= (b & 1) << (j % 8);
                }
            }
            self.launch(
                [
                    p.as_ptr() as usize,
                    weights.codes().as_ptr() as usize,
                    0,
                    0,
                    0,
                    y.0,
                ],
                n,
                threads,
            );
            return Ok(());
        }
        let k_pad = spec.k_pad();
        // The kernel multiplies unsigned activation bytes: i8 activations
        // are offset by +128 (flipping the sign bit) and the kernel takes
        // 128 * sum(w) back off.
        let padded: Vec<u8>;
        let mut tiles: AmxTiles;
        let xp: *const u8 = match x {
            _ if self.amx => {
                tiles = AmxTiles::pack(spec, &x, n, threads);
                tiles.as_mut_ptr().cast_const()
            }
            Activations::U8(v) if k_pad == spec.k => v.as_ptr(),
            _ => {
                let mut p = vec![0u8; n * k_pad];
                for (c, row) in p.chunks_mut(k_pad).take(n).enumerate() {
                    let src = c * spec.k..(c + 1) * spec.k;
                    match x {
                        Activations::U8(v) => row[..spec.k].copy_from_slice(&v[src]),
                        Activations::I8(v) => {
                            for (d, &s) in row[..spec.k].iter_mut().zip(&v[src]) {
                                *d = (s as u8) ^ 0x80;
                            }
                        }
                        _ => {}
                    }
                }
                padded = p;
                padded.as_ptr()
            }
        };
        self.launch(
            [
                xp as usize,
                weights.codes().as_ptr() as usize,
                params,
                weights.row_offsets().as_ptr() as usize,
                bias_p,
                y.0,
            ],
            n,
            threads,
        );
        Ok(())
    }

    /// Runs the kernel over all rows on `threads` threads. `addrs` are the
    /// kernel's six buffer arguments, already checked against the spec.
    fn launch(&self, addrs: [usize; 6], n: usize, threads: usize) {
        let spec = &self.spec;
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |t| t.get())
        } else {
            threads
        };
        // Rows are handed out in chunks from a shared counter, shrinking
        // towards the end (`row_chunks`): on a shared machine a descheduled
        // thread then delays only its current chunk, not half the matrix,
        // and the threads finish close together. Chunks are whole granules
        // of the kernel's rows (`GemmSpec::row_granule`); both AMX
        // kernels' row blocks are whole panel pairs (a chunk that starts
        // inside one would compute the shared pair twice).
        let align = if self.amx || self.amx_dot {
            2 * INT_PANEL
        } else {
            spec.row_granule()
        };
        let func = self.func;
        let call = move |r0: usize, r1: usize| {
            // SAFETY: the caller checked every buffer against the spec (x
            // padded to k_pad, y = n*m, weights at packing); rows r0..r1 lie
            // in 0..m, and threads write disjoint rows of y.
            unsafe {
                func(
                    addrs[0] as *const f32,
                    addrs[1] as *const u8,
                    addrs[2] as *const u8,
                    addrs[3] as *const u8,
                    addrs[4] as *const f32,
                    addrs[5] as *mut f32,
                    n as i64,
                    r0 as i64,
                    r1 as i64,
                )
            }
        };
        // Past 8 columns a kernel reuses each chunk's weights across its
        // column tiles from cache (the VNNI kernel's k passes are sized
        // for it): such calls keep the equal chunks of about `m / (8 ·
        // threads)` rows (shrinking ones made a W8A8 n = 512 prefill 7 -
        // 9 % slower, m = 4096, k = 14336, 2 threads, alternating runs).
        // Decode-sized n streams its weights once and takes shrinking ones.
        let bounds = row_chunks(spec.m, threads, align, n <= 8);
        let chunks = bounds.len() - 1;
        let threads = threads.min(chunks);
        if threads <= 1 {
            call(0, spec.m);
            return;
        }
        let next = AtomicUsize::new(0);
        let work = || loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= chunks {
                break;
            }
            call(bounds[c], bounds[c + 1]);
        };
        crate::pool::run_on(threads, &work);
    }
}

/// Row chunk boundaries for `threads` threads over `m` rows: `0`, then
/// increasing multiples of `align` (where below `m`), then `m`. With
/// `shrink`, chunk sizes shrink as the rows run out (each about the rest
/// over `2 · threads`, at least `align`): the first chunks are long (fewer
/// restarts of the code streams) and the last ones short, so the threads
/// finish close together. Measured against equal chunks of about `m / (8
/// · threads)` rows (block-dot decode m = 4096, k = 14336, n = 1, 2
/// threads, medians of 5 alternating runs, shared machine, load 2.0-2.9):
/// 1.14 against 1.18 ms alone, 1.09 against 1.10 ms with `pool.rs`
/// polling. Without `shrink`, those equal chunks.
pub(crate) fn row_chunks(m: usize, threads: usize, align: usize, shrink: bool) -> Vec<usize> {
    let align = align.max(1);
    let threads = threads.max(1);
    let equal = m.div_ceil(threads * 8).next_multiple_of(align).max(align);
    let mut bounds = vec![0];
    let mut at = 0;
    while at < m {
        let rest = m - at;
        let size = if shrink {
            rest.div_ceil(2 * threads).next_multiple_of(align)
        } else {
            equal
        };
        at += size.min(rest);
        bounds.push(at);
    }
    bounds
}

/// Whether the AMX kernel for `spec` can run in this process on `target`:
/// the target has AMX-INT8 (and is the host: the code runs here) and
/// Linux grants the tile state.
fn amx_ready(spec: &GemmSpec, target: &CpuTarget) -> Result<(), CpuError> {
    let unsupported = |why: String| spec.unsupported(&target.describe(), why);
    if !(target.has("amx-tile") && target.has("amx-int8")) {
        return Err(unsupported(
            "the amx schedule needs AMX-INT8 (amx-tile, amx-int8)".into(),
        ));
    }
    request_amx().map_err(unsupported)
}

/// Whether the JIT builds the AMX block-dot kernel (`codegen/amxdot.rs`)
/// for `spec` on `target`: where [`blockdot_amx_fits`] says so and Linux
/// grants the tile state.
fn amx_blockdot(spec: &GemmSpec, target: &CpuTarget) -> bool {
    blockdot_amx_fits(spec, target) && request_amx().is_ok()
}

/// Whether a block-dot `spec` goes on the AMX block-dot kernel
/// (`codegen/amxdot.rs`) for `target`, the JIT's choice and `lowbit
/// compile`'s alike ([`crate::aot::blockdot_on_amx`]): a static `n` of at
/// least `amxdot::min_cols` (8 for `i4` weights, 9 for `i8`; below it,
/// and for a run-time `n`, the `vpdpbusd` kernel is faster or needed) and a target with AMX-INT8 (a
/// target without `amx-int8` in its features, the host's with it removed
/// included, keeps the `vpdpbusd` kernel). `LOWBIT_BLOCKDOT_AMX=0` in the
/// environment (read once per process) keeps the `vpdpbusd` kernel
/// everywhere, for comparisons. The JIT also needs the tile state
/// granted ([`amx_blockdot`]); an AOT driver asks for it at run time.
pub(crate) fn blockdot_amx_fits(spec: &GemmSpec, target: &CpuTarget) -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| blockdot_amx_allowed(std::env::var_os("LOWBIT_BLOCKDOT_AMX")))
        && spec.is_blockdot()
        && matches!(spec.n, Dim::Static(n) if n >= crate::codegen::amxdot::min_cols(spec.weight.dtype.bits()))
        && target.has("amx-tile")
        && target.has("amx-int8")
}

/// Whether the value of `LOWBIT_BLOCKDOT_AMX` lets block-dot specs run on
/// AMX: unset, or anything but `0`.
fn blockdot_amx_allowed(value: Option<std::ffi::OsString>) -> bool {
    value.is_none_or(|v| v != "0")
}

/// Activations packed for the AMX kernel (`codegen/amx.rs`): `u8` rows
/// (`i8` offset by +128) as 1 KiB A tiles `[n_pad / 16][k_pad / 64][16][64]`
/// with `n_pad = n` rounded up to 32 and zeros after `n` and `k`, in a
/// 64-byte aligned buffer so that every tile is 16 whole cache lines;
/// then the kernel's accumulator buffer, `ACC_BYTES_PER_PAIR` for each
/// panel pair of the weights (written before it is read, so it is the
/// vector's spare capacity, not zero-filled: zeroing its 4 MiB at m = 4096
/// took about 0.15 ms a call, 20 % of an n = 8, k = 4096 call).
struct AmxTiles {
    buf: Vec<u8>,
    start: usize,
}

impl AmxTiles {
    /// Packs `n` rows of `k` activations (checked by the caller) on
    /// `threads` threads (0: all cores), each taking whole 16-row groups.
    fn pack(spec: &GemmSpec, x: &Activations, n: usize, threads: usize) -> AmxTiles {
        let (k, k_pad) = (spec.k, spec.k_pad());
        let steps = k_pad / 64;
        let mut buf: Vec<u8> = Vec::with_capacity(spec.amx_activation_bytes(n) + 64);
        let start = buf.as_ptr().align_offset(64).min(64);
        // Zeros where the kernel reads padding (rows past n, k past k);
        // the accumulators after the tiles stay in the spare capacity.
        buf.resize(start + n.next_multiple_of(32) * k_pad, 0);
        let group_bytes = 16 * k_pad;
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |t| t.get())
        } else {
            threads
        };
        let groups = n.div_ceil(16);
        let per = groups.div_ceil(threads.max(1)).max(1);
        // One 16-row group: row j's 64-byte pieces go to tiles (g, s).
        let pack_group = |g: usize, dst: &mut [u8]| {
            for j in 0..16.min(n - g * 16) {
                let row = (g * 16 + j) * k;
                for s in 0..steps {
                    let lo = s * 64;
                    let len = 64.min(k.saturating_sub(lo));
                    let at = s * 1024 + j * 64;
                    let d = &mut dst[at..at + len];
                    let src = row + lo..row + lo + len;
                    match x {
                        Activations::U8(v) => d.copy_from_slice(&v[src]),
                        Activations::I8(v) => {
                            for (d, &s) in d.iter_mut().zip(&v[src]) {
                                *d = (s as u8) ^ 0x80;
                            }
                        }
                        _ => {}
                    }
                }
            }
        };
        let dst = &mut buf[start..start + groups * group_bytes];
        std::thread::scope(|sc| {
            let mut chunks = dst.chunks_mut(per * group_bytes).enumerate();
            let first = chunks.next();
            for (i, chunk) in chunks {
                let pack_group = &pack_group;
                sc.spawn(move || {
                    for (gi, d) in chunk.chunks_mut(group_bytes).enumerate() {
                        pack_group(i * per + gi, d);
                    }
                });
            }
            if let Some((_, chunk)) = first {
                for (gi, d) in chunk.chunks_mut(group_bytes).enumerate() {
                    pack_group(gi, d);
                }
            }
        });
        AmxTiles { buf, start }
    }

    /// The tiles, then the accumulator buffer (the vector's capacity
    /// covers both; the kernel writes the latter).
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr().wrapping_add(self.start)
    }
}

/// Asks Linux for the AMX tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`), once per process; without it the first tile
/// instruction faults.
pub(crate) fn request_amx() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        {
            extern "C" {
                fn syscall(number: i64, ...) -> i64;
            }
            const SYS_ARCH_PRCTL: i64 = 158;
            const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
            const XFEATURE_XTILEDATA: i64 = 18;
            // SAFETY: arch_prctl with these arguments only changes this
            // process's permitted XSAVE state; no memory is passed.
            let r = unsafe { syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
            if r == 0 {
                Ok(())
            } else {
                Err(format!(
                    "arch_prctl(ARCH_REQ_XCOMP_PERM) refused the AMX tile state: {}",
                    std::io::Error::last_os_error()
                ))
            }
        }
        #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
        {
            Err("AMX needs Linux on x86-64".to_string())
        }
    })
    .clone()
}

/// The activation operand of a bit-serial kernel call: `x` (`n` rows of
/// `spec.k` codes, already checked against the spec) packed into bit-planes
/// like the weights (`[n, k_pad / 512, planes, 64 bytes]`), and each row's
/// value sum (wrapping `i32`) for the `b1` and zero-point corrections;
/// rows are split over `threads` threads (0: all cores). Public so that
/// benchmarks can time this per-call step on its own.
pub fn bit_plane_activations(
    spec: &GemmSpec,
    x: &Activations,
    n: usize,
    threads: usize,
) -> Result<(Vec<u8>, Vec<i32>), CpuError> {
    if !spec.is_bit_serial() || x.elem() != spec.act {
        return Err(CpuError::SpecMismatch(format!(
            "{} activations are not the bit-serial operand of {spec}",
            x.elem()
        )));
    }
    size("x", n.checked_mul(spec.k), x.len())?;
    let (k, bits) = (spec.k, spec.act_planes());
    let row = spec.k_pad() / 8 * bits;
    let mut planes = vec![0u8; n * row];
    let mut sums = vec![0i32; n];
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |t| t.get())
    } else {
        threads
    };
    let per = n.div_ceil(threads.max(1)).max(1);
    let pack = |c0: usize, dsts: &mut [u8], sums: &mut [i32]| {
        let mut codes = vec![0u8; k];
        for (i, (dst, sum)) in dsts.chunks_mut(row).zip(sums).enumerate() {
            x.codes_into((c0 + i) * k, &mut codes);
            crate::pack::pack_planes(&codes, bits, dst);
            *sum = crate::pack::plane_row_sum(dst, spec.act);
        }
    };
    // The caller's thread packs the first group (the only one when
    // decoding: no thread is spawned), spawned threads the others.
    std::thread::scope(|s| {
        let mut groups = planes.chunks_mut(per * row).zip(sums.chunks_mut(per));
        let first = groups.next();
        for (g, (dsts, sums)) in groups.enumerate() {
            let pack = &pack;
            s.spawn(move || pack((g + 1) * per, dsts, sums));
        }
        if let Some((dsts, sums)) = first {
            pack(0, dsts, sums);
        }
    });
    Ok((planes, sums))
}

/// A buffer-size check: `expected` is `None` when the size overflows.
fn size(buffer: &'static str, expected: Option<usize>, got: usize) -> Result<(), CpuError> {
    match expected {
        Some(e) if e == got => Ok(()),
        Some(e) => Err(CpuError::BufferSize {
            buffer,
            expected: e,
            got,
        }),
        None => Err(CpuError::BufferSize {
            buffer,
            expected: usize::MAX,
            got,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::row_chunks;

    /// The chunks cover `0..m` once, in order; every boundary but `m` is
    /// a multiple of `align`; sizes never grow, start above `align` where
    /// there are many rows and end at `align` or less.
    #[test]
    fn row_chunks_cover_the_rows_in_shrinking_aligned_pieces() {
        for m in [0usize, 1, 7, 8, 63, 64, 65, 1000, 1100, 4096, 4097, 14336] {
            for threads in [1usize, 2, 3, 8] {
                for align in [8usize, 16, 32, 64] {
                    for shrink in [true, false] {
                        let b = row_chunks(m, threads, align, shrink);
                        let case =
                            format!("m {m}, {threads} threads, align {align}, {shrink}: {b:?}");
                        assert_eq!(b.first(), Some(&0), "{case}");
                        assert_eq!(b.last(), Some(&m), "{case}");
                        assert!(b.windows(2).all(|w| w[0] < w[1]), "{case}");
                        assert!(b[..b.len() - 1].iter().all(|x| x % align == 0), "{case}");
                        let sizes: Vec<usize> = b.windows(2).map(|w| w[1] - w[0]).collect();
                        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{case}");
                        if shrink {
                            assert!(sizes.last().is_none_or(|&s| s <= align), "{case}");
                            if m >= 4 * threads * align {
                                assert!(sizes[0] > align, "{case}");
                            }
                        } else if let Some((last, rest)) = sizes.split_last() {
                            // Equal chunks of about m / (8 threads), the
                            // last one what is left.
                            let want = m.div_ceil(threads * 8).next_multiple_of(align);
                            assert!(rest.iter().all(|&s| s == want), "{case}");
                            assert!(*last <= want.max(align), "{case}");
                        }
                    }
                }
            }
        }
    }
}
