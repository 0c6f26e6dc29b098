//! Machine probes for roofline figures, JIT-compiled for the host like the
//! kernels so they use the same vector ISA:
//! * [`read_bandwidth_gbps`] — streaming read of a buffer larger than the
//!   last-level cache with `threads` threads (4 independent 64-byte loads
//!   per step, summed so nothing is optimized away), the best of two access
//!   patterns: each thread reads its part as one sequential stream, or as
//!   four concurrent streams (its four quarters side by side). The kernels
//!   stream several weight rows per thread at once, and one stream per
//!   core reads less than the memory system delivers (measured: a 4-panel
//!   block-dot decode read above the one-stream figure), so a one-stream
//!   probe would be a floor, not a roofline;
//! * [`fma_peak_gflops`] — 12 independent chains of 16-lane f32 FMAs per
//!   thread, register-resident;
//! * [`vnni_peak_gops`] — the same with 512-bit `vpdpbusd` (int8 dot
//!   products), where the host has AVX-512 VNNI;
//! * [`popcount_peak_gops`] — the same with the W1A1 step (xor, `vpopcntd`,
//!   add), where the host has AVX-512 VPOPCNTDQ;
//! * [`amx_peak_gops`] — 4 independent `tdpbusd` (16 x 16 x 64 int8 tile
//!   products into 2x2 accumulator tiles, register-resident) per step,
//!   where the host has AMX-INT8 and Linux grants the tile state.
//!
//! Each reports the best of `reps` runs, as hardware probes usually do; on a
//! shared machine the figure is what was available at that moment.

use crate::error::CpuError;
use crate::jit::{jit, JitCode};
use crate::target::CpuTarget;
use inkwell::attributes::AttributeLoc;
use inkwell::basic_block::BasicBlock;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::values::{BasicValue as _, BasicValueEnum, FunctionValue, VectorValue};
use inkwell::{AddressSpace, IntPredicate};
use std::time::Instant;

/// `lowbit_read(p, limit, stride, advance)`: sums the four 64-byte
/// vectors at `p + off + i * stride` (i in 0..4) for `off` = 0, `advance`,
/// ... while `off + advance <= limit`.
type ReadFn = unsafe extern "C" fn(*const f32, i64, i64, i64) -> f32;
type FmaFn = unsafe extern "C" fn(i64) -> f32;

/// Bytes one read-probe step consumes.
const READ_STEP: u64 = 256;
/// Independent FMA chains in the peak probe.
const CHAINS: usize = 12;
/// Lanes per FMA.
const FMA_LANES: u32 = 16;

struct Probes {
    read: ReadFn,
    fma: FmaFn,
    _code: JitCode,
}

fn set_attrs(ctx: &Context, f: FunctionValue, t: &CpuTarget) {
    for (k, v) in [
        ("target-cpu", t.cpu.as_str()),
        ("target-features", t.features.as_str()),
    ] {
        if !v.is_empty() {
            f.add_attribute(AttributeLoc::Function, ctx.create_string_attribute(k, v));
        }
    }
    if t.triple.starts_with("x86_64") {
        for (k, v) in [
            ("prefer-vector-width", "512"),
            ("min-legal-vector-width", "512"),
        ] {
            f.add_attribute(AttributeLoc::Function, ctx.create_string_attribute(k, v));
        }
    }
}

/// The four blocks of a counted-loop probe function.
fn loop_blocks<'c>(
    ctx: &'c Context,
    f: FunctionValue<'c>,
) -> (
    BasicBlock<'c>,
    BasicBlock<'c>,
    BasicBlock<'c>,
    BasicBlock<'c>,
) {
    (
        ctx.append_basic_block(f, "entry"),
        ctx.append_basic_block(f, "head"),
        ctx.append_basic_block(f, "body"),
        ctx.append_basic_block(f, "exit"),
    )
}

/// Parameter `i` of a probe function.
fn param(f: FunctionValue<'_>, i: u32) -> Result<BasicValueEnum<'_>, CpuError> {
    f.get_nth_param(i)
        .ok_or_else(|| CpuError::Llvm("probe parameter".into()))
}

fn build<'c>(ctx: &'c Context, t: &CpuTarget) -> Result<Module<'c>, CpuError> {
    let m = ctx.create_module("lowbit_probes");
    let b = ctx.create_builder();
    let f32t = ctx.f32_type();
    let i64t = ctx.i64_type();
    let vf = f32t.vec_type(FMA_LANES);
    let ptr = ctx.ptr_type(AddressSpace::default());

    // float lowbit_read(const float *p, i64 limit, i64 stride, i64 advance)
    let f = m.add_function(
        "lowbit_read",
        f32t.fn_type(&[ptr.into(), i64t.into(), i64t.into(), i64t.into()], false),
        None,
    );
    set_attrs(ctx, f, t);
    let (entry, head, body, exit) = loop_blocks(ctx, f);
    let p = param(f, 0)?.into_pointer_value();
    let bytes = param(f, 1)?.into_int_value();
    let stride = param(f, 2)?.into_int_value();
    let advance = param(f, 3)?.into_int_value();
    b.position_at_end(entry);
    b.build_unconditional_branch(head)?;
    b.position_at_end(head);
    let off = b.build_phi(i64t, "off")?;
    let accs: Vec<_> = (0..4)
        .map(|_| b.build_phi(vf, "acc"))
        .collect::<Result<_, _>>()?;
    off.add_incoming(&[(&i64t.const_zero(), entry)]);
    for a in &accs {
        a.add_incoming(&[(&vf.const_zero(), entry)]);
    }
    let offv = off.as_basic_value().into_int_value();
    let next = b.build_int_add(offv, advance, "next")?;
    let more = b.build_int_compare(IntPredicate::SLE, next, bytes, "more")?;
    b.build_conditional_branch(more, body, exit)?;
    b.position_at_end(body);
    let mut news = Vec::new();
    for (i, a) in accs.iter().enumerate() {
        let so = b.build_int_mul(stride, i64t.const_int(i as u64, false), "so")?;
        let o = b.build_int_add(offv, so, "o")?;
        // SAFETY: the caller passes a buffer holding every vector the
        // loop reads (see `ReadFn`).
        let q = unsafe { b.build_in_bounds_gep(ctx.i8_type(), p, &[o], "q")? };
        let l = b.build_load(vf, q, "l")?;
        if let Some(inst) = l.as_instruction_value() {
            inst.set_alignment(64)
                .map_err(|e| CpuError::Llvm(e.to_string()))?;
        }
        let s = b.build_float_add(
            a.as_basic_value().into_vector_value(),
            l.into_vector_value(),
            "s",
        )?;
        news.push(s);
    }
    off.add_incoming(&[(&next, body)]);
    for (a, s) in accs.iter().zip(&news) {
        a.add_incoming(&[(s, body)]);
    }
    b.build_unconditional_branch(head)?;
    b.position_at_end(exit);
    let mut s: VectorValue = accs[0].as_basic_value().into_vector_value();
    for a in &accs[1..] {
        s = b.build_float_add(s, a.as_basic_value().into_vector_value(), "s")?;
    }
    let r = b.build_extract_element(s, ctx.i32_type().const_zero(), "r")?;
    b.build_return(Some(&r))?;

    // float lowbit_fma(i64 iters)
    let fma = Intrinsic::find("llvm.fma")
        .and_then(|i| i.get_declaration(&m, &[vf.into()]))
        .ok_or_else(|| CpuError::Llvm("llvm.fma is not available".into()))?;
    let f = m.add_function("lowbit_fma", f32t.fn_type(&[i64t.into()], false), None);
    set_attrs(ctx, f, t);
    let (entry, head, body, exit) = loop_blocks(ctx, f);
    let iters = param(f, 0)?.into_int_value();
    b.position_at_end(entry);
    let splat = |x: f64| {
        inkwell::types::VectorType::const_vector(&vec![f32t.const_float(x); FMA_LANES as usize])
    };
    let mul = splat(0.999_999);
    let add = splat(1e-7);
    b.build_unconditional_branch(head)?;
    b.position_at_end(head);
    let i = b.build_phi(i64t, "i")?;
    i.add_incoming(&[(&i64t.const_zero(), entry)]);
    let chains: Vec<_> = (0..CHAINS)
        .map(|_| b.build_phi(vf, "c"))
        .collect::<Result<_, _>>()?;
    for (n, c) in chains.iter().enumerate() {
        c.add_incoming(&[(&splat(1.0 + n as f64), entry)]);
    }
    let iv = i.as_basic_value().into_int_value();
    let more = b.build_int_compare(IntPredicate::SLT, iv, iters, "more")?;
    b.build_conditional_branch(more, body, exit)?;
    b.position_at_end(body);
    for c in &chains {
        let v = b
            .build_call(
                fma,
                &[c.as_basic_value().into(), mul.into(), add.into()],
                "f",
            )?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| CpuError::Llvm("llvm.fma returned no value".into()))?;
        c.add_incoming(&[(&v, body)]);
    }
    let next = b.build_int_add(iv, i64t.const_int(1, false), "next")?;
    i.add_incoming(&[(&next, body)]);
    b.build_unconditional_branch(head)?;
    b.position_at_end(exit);
    let mut s = chains[0].as_basic_value().into_vector_value();
    for c in &chains[1..] {
        s = b.build_float_add(s, c.as_basic_value().into_vector_value(), "s")?;
    }
    let r = b.build_extract_element(s, ctx.i32_type().const_zero(), "r")?;
    b.build_return(Some(&r))?;
    m.verify()
        .map_err(|e| CpuError::Llvm(format!("probe IR does not verify: {e}")))?;
    Ok(m)
}

fn probes() -> Result<Probes, CpuError> {
    let t = CpuTarget::host()?;
    let (code, addrs) = jit(&t, &["lowbit_read", "lowbit_fma"], |ctx| build(ctx, &t))?;
    // SAFETY: the symbols were emitted above with exactly these signatures.
    let (read, fma) = unsafe {
        (
            std::mem::transmute::<usize, ReadFn>(addrs[0]),
            std::mem::transmute::<usize, FmaFn>(addrs[1]),
        )
    };
    Ok(Probes {
        read,
        fma,
        _code: code,
    })
}

/// Size of the last-level cache in bytes, from Linux sysfs (the largest
/// cache of CPU 0); `None` when unknown.
pub fn llc_bytes() -> Option<u64> {
    let mut best = None;
    for i in 0..8 {
        let p = format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size");
        let Ok(s) = std::fs::read_to_string(p) else {
            continue;
        };
        let s = s.trim();
        let (num, mul) = match s.chars().last() {
            Some('K') => (&s[..s.len() - 1], 1u64 << 10),
            Some('M') => (&s[..s.len() - 1], 1 << 20),
            Some('G') => (&s[..s.len() - 1], 1 << 30),
            _ => (s, 1),
        };
        if let Ok(v) = num.parse::<u64>() {
            best = best.max(Some(v * mul));
        }
    }
    best
}

/// DRAM read bandwidth in GB/s (1e9 bytes/s) with `threads` threads over a
/// buffer of `bytes` (rounded down to whole steps per thread); best of `reps`
/// runs of each access pattern (one stream and four streams per thread, see
/// the module docs).
pub fn read_bandwidth_gbps(threads: usize, bytes: usize, reps: usize) -> Result<f64, CpuError> {
    let p = probes()?;
    let threads = threads.max(1);
    let per = (bytes / threads) as u64 / READ_STEP * READ_STEP;
    if per == 0 {
        return Err(CpuError::Llvm("read probe buffer too small".into()));
    }
    // 64-byte aligned, touched (so pages are mapped) with ones; backed by
    // huge pages where the packed weights are (`pack::huge_page_vec`), so
    // the kernels are compared with a probe reading the same kind of memory.
    let floats = per as usize / 4 * threads + 16;
    let buf = crate::pack::huge_page_vec(floats, 1.0f32);
    let base = buf.as_ptr() as usize;
    let base = base.div_ceil(64) * 64;
    let read = p.read;
    let mut best = 0f64;
    let mut sink = 0f32;
    // (limit, stride, advance): one stream of `per` bytes, 256 per step;
    // or four streams (the quarters of `per`, a multiple of 64 bytes
    // since `per` is one of 256), 64 bytes each per step. Both read
    // exactly `per` bytes.
    let quarter = (per / 4) as i64;
    let patterns = [(per as i64, 64, READ_STEP as i64), (quarter, quarter, 64)];
    for rep in 0..reps.max(1) * patterns.len() {
        let (limit, stride, advance) = patterns[rep % patterns.len()];
        let start = Instant::now();
        let sums: Vec<f32> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let addr = base + t * per as usize;
                    // SAFETY: [addr, addr + per) lies inside `buf` (it has
                    // 64 spare bytes for the alignment), which outlives the scope.
                    s.spawn(move || unsafe { read(addr as *const f32, limit, stride, advance) })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0.0)).collect()
        });
        let secs = start.elapsed().as_secs_f64();
        sink += sums.iter().sum::<f32>();
        best = best.max((per * threads as u64) as f64 / secs / 1e9);
    }
    std::hint::black_box(sink);
    Ok(best)
}

/// f32 FMA peak in GFLOP/s (2 flops per lane per FMA) with `threads`
/// threads; best of `reps`.
pub fn fma_peak_gflops(threads: usize, reps: usize) -> Result<f64, CpuError> {
    let p = probes()?;
    let threads = threads.max(1);
    let iters: i64 = 20_000_000;
    let fma = p.fma;
    let mut best = 0f64;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                // SAFETY: the probe takes a count only.
                s.spawn(move || std::hint::black_box(unsafe { fma(iters) }));
            }
        });
        let secs = start.elapsed().as_secs_f64();
        let flops = iters as f64 * (CHAINS as f64) * f64::from(FMA_LANES) * 2.0 * threads as f64;
        best = best.max(flops / secs / 1e9);
    }
    Ok(best)
}

type VnniFn = unsafe extern "C" fn(i64) -> i32;

/// Which integer peak a probe measures.
#[derive(Clone, Copy)]
enum IntPeak {
    /// `acc += vpdpbusd(a, b)`.
    Vnni,
    /// `acc += popcount(acc xor c)`: the W1A1 inner step.
    Popcount,
}

/// `i32 lowbit_vnni(i64 iters)` (or `lowbit_popcount`): `CHAINS`
/// independent chains of the step.
fn build_int_chains<'c>(
    ctx: &'c Context,
    t: &CpuTarget,
    kind: IntPeak,
) -> Result<Module<'c>, CpuError> {
    let m = ctx.create_module("lowbit_vnni_probe");
    let b = ctx.create_builder();
    let i64t = ctx.i64_type();
    let i32t = ctx.i32_type();
    let v16 = i32t.vec_type(16);
    let (name, intrinsic, types): (_, _, Vec<inkwell::types::BasicTypeEnum>) = match kind {
        IntPeak::Vnni => ("lowbit_vnni", "llvm.x86.avx512.vpdpbusd.512", vec![]),
        IntPeak::Popcount => ("lowbit_popcount", "llvm.ctpop", vec![v16.into()]),
    };
    let dp = Intrinsic::find(intrinsic)
        .and_then(|i| i.get_declaration(&m, &types))
        .ok_or_else(|| CpuError::Llvm(format!("{intrinsic} is not available")))?;
    let f = m.add_function(name, i32t.fn_type(&[i64t.into()], false), None);
    set_attrs(ctx, f, t);
    let (entry, head, body, exit) = loop_blocks(ctx, f);
    let iters = param(f, 0)?.into_int_value();
    b.position_at_end(entry);
    let bytes = |x: u64| {
        inkwell::types::VectorType::const_vector(&vec![ctx.i8_type().const_int(x, false); 64])
    };
    let (xa, xb) = (bytes(3), bytes(5));
    b.build_unconditional_branch(head)?;
    b.position_at_end(head);
    let i = b.build_phi(i64t, "i")?;
    i.add_incoming(&[(&i64t.const_zero(), entry)]);
    let chains: Vec<_> = (0..CHAINS)
        .map(|_| b.build_phi(v16, "c"))
        .collect::<Result<_, _>>()?;
    for (n, c) in chains.iter().enumerate() {
        let init = inkwell::types::VectorType::const_vector(&[i32t.const_int(n as u64, false); 16]);
        c.add_incoming(&[(&init, entry)]);
    }
    let iv = i.as_basic_value().into_int_value();
    let more = b.build_int_compare(IntPredicate::SLT, iv, iters, "more")?;
    b.build_conditional_branch(more, body, exit)?;
    b.position_at_end(body);
    let mask = inkwell::types::VectorType::const_vector(&[i32t.const_int(0x5a5a_5a5a, false); 16]);
    for c in &chains {
        let acc = c.as_basic_value().into_vector_value();
        let v = match kind {
            IntPeak::Vnni => b
                .build_call(dp, &[acc.into(), xa.into(), xb.into()], "d")?
                .try_as_basic_value()
                .basic()
                .ok_or_else(|| CpuError::Llvm("vpdpbusd returned no value".into()))?,
            IntPeak::Popcount => {
                let d = b.build_xor(acc, mask, "x")?;
                let p = b
                    .build_call(dp, &[d.into()], "p")?
                    .try_as_basic_value()
                    .basic()
                    .ok_or_else(|| CpuError::Llvm("ctpop returned no value".into()))?;
                b.build_int_add(acc, p.into_vector_value(), "a")?.into()
            }
        };
        c.add_incoming(&[(&v, body)]);
    }
    let next = b.build_int_add(iv, i64t.const_int(1, false), "next")?;
    i.add_incoming(&[(&next, body)]);
    b.build_unconditional_branch(head)?;
    b.position_at_end(exit);
    let mut s = chains[0].as_basic_value().into_vector_value();
    for c in &chains[1..] {
        s = b.build_int_add(s, c.as_basic_value().into_vector_value(), "s")?;
    }
    let r = b.build_extract_element(s, i32t.const_zero(), "r")?;
    b.build_return(Some(&r))?;
    m.verify()
        .map_err(|e| CpuError::Llvm(format!("probe IR does not verify: {e}")))?;
    Ok(m)
}

/// int8 dot-product peak in GOP/s (a multiply and an add per byte pair)
/// with `threads` threads, `vpdpbusd` on 512-bit registers; best of
/// `reps`. `None` when the host has no AVX-512 VNNI.
pub fn vnni_peak_gops(threads: usize, reps: usize) -> Result<Option<f64>, CpuError> {
    let t = CpuTarget::host()?;
    if t.kernel_paths().int8_dot != lowbit_ir::target::Int8Dot::Avx512Vnni {
        return Ok(None);
    }
    int_peak(&t, IntPeak::Vnni, threads, reps).map(Some)
}

/// Binary-op peak in GOP/s of the W1A1 step (xor, popcount, add on 512
/// bits: one multiply and one add per bit pair) with `threads` threads;
/// best of `reps`. `None` when the host has no AVX-512 VPOPCNTDQ.
pub fn popcount_peak_gops(threads: usize, reps: usize) -> Result<Option<f64>, CpuError> {
    let t = CpuTarget::host()?;
    if t.kernel_paths().popcount != lowbit_ir::target::Popcount::Vpopcntdq {
        return Ok(None);
    }
    int_peak(&t, IntPeak::Popcount, threads, reps).map(Some)
}

fn int_peak(t: &CpuTarget, kind: IntPeak, threads: usize, reps: usize) -> Result<f64, CpuError> {
    let name = match kind {
        IntPeak::Vnni => "lowbit_vnni",
        IntPeak::Popcount => "lowbit_popcount",
    };
    let (_code, addrs) = jit(t, &[name], |ctx| build_int_chains(ctx, t, kind))?;
    // SAFETY: the symbol was emitted above with exactly this signature.
    let probe = unsafe { std::mem::transmute::<usize, VnniFn>(addrs[0]) };
    let threads = threads.max(1);
    let iters: i64 = 20_000_000;
    // vpdpbusd: 64 byte pairs x 2 ops; popcount step: 512 bit pairs x 2.
    let per_step = match kind {
        IntPeak::Vnni => 128.0,
        IntPeak::Popcount => 1024.0,
    };
    let mut best = 0f64;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                // SAFETY: the probe takes a count only.
                s.spawn(move || std::hint::black_box(unsafe { probe(iters) }));
            }
        });
        let secs = start.elapsed().as_secs_f64();
        let ops = iters as f64 * CHAINS as f64 * per_step * threads as f64;
        best = best.max(ops / secs / 1e9);
    }
    Ok(best)
}

type AmxFn = unsafe extern "C" fn(i64);

/// int8 tile-product peak in GOP/s (a multiply and an add per byte pair)
/// with `threads` threads, `tdpbusd` on four independent accumulator tiles
/// (the AMX kernel's 2x2 block without its loads); best of `reps`. `None`
/// when the host has no AMX-INT8; an error when Linux refuses the tile
/// state.
pub fn amx_peak_gops(threads: usize, reps: usize) -> Result<Option<f64>, CpuError> {
    let t = CpuTarget::host()?;
    if !(t.has("amx-tile") && t.has("amx-int8")) {
        return Ok(None);
    }
    crate::jit::request_amx().map_err(CpuError::Llvm)?;
    let (_code, addrs) = jit(&t, &["lowbit_amx"], |ctx| build_amx_probe(ctx, &t))?;
    // SAFETY: the symbol was emitted below with exactly this signature.
    let probe = unsafe { std::mem::transmute::<usize, AmxFn>(addrs[0]) };
    let threads = threads.max(1);
    let iters: i64 = 200_000;
    let mut best = 0f64;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                // SAFETY: the probe takes a count only; the process holds
                // the AMX tile permission (requested above).
                s.spawn(move || unsafe { probe(iters) });
            }
        });
        let secs = start.elapsed().as_secs_f64();
        // 4 tile products of 16 x 16 x 64 byte pairs, 2 ops each.
        let ops = iters as f64 * 4.0 * (16 * 16 * 64 * 2) as f64 * threads as f64;
        best = best.max(ops / secs / 1e9);
    }
    Ok(Some(best))
}

/// `void lowbit_amx(i64 iters)`: configure 8 tiles of 16 x 64 bytes, zero
/// them, `iters` times 4 `tdpbusd` (accumulators 0..4, operands 4..8),
/// release the tiles.
fn build_amx_probe<'c>(ctx: &'c Context, t: &CpuTarget) -> Result<Module<'c>, CpuError> {
    let m = ctx.create_module("lowbit_amx_probe");
    let b = ctx.create_builder();
    let i64t = ctx.i64_type();
    let i8t = ctx.i8_type();
    let call = |name: &str, args: &[inkwell::values::BasicMetadataValueEnum<'c>]| {
        let f = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(&m, &[]))
            .ok_or_else(|| CpuError::Llvm(format!("{name} is not available")))?;
        b.build_call(f, args, "")?;
        Ok::<(), CpuError>(())
    };
    let tmm =
        |x: u64| -> inkwell::values::BasicMetadataValueEnum<'c> { i8t.const_int(x, false).into() };
    let f = m.add_function(
        "lowbit_amx",
        ctx.void_type().fn_type(&[i64t.into()], false),
        None,
    );
    set_attrs(ctx, f, t);
    let (entry, head, body, exit) = loop_blocks(ctx, f);
    let iters = param(f, 0)?.into_int_value();
    b.position_at_end(entry);
    // Palette 1, tiles 0..8 of 16 rows x 64 bytes (as `codegen/amx.rs`).
    let mut cfg = [0u64; 64];
    cfg[0] = 1;
    for t in 0..8 {
        cfg[16 + 2 * t] = 64;
        cfg[48 + t] = 16;
    }
    let v64 = i8t.vec_type(64);
    let cfg_p = b.build_alloca(v64, "tilecfg")?;
    let bytes: Vec<_> = cfg.iter().map(|&x| i8t.const_int(x, false)).collect();
    b.build_store(cfg_p, inkwell::types::VectorType::const_vector(&bytes))?
        .set_alignment(64)
        .map_err(|e| CpuError::Llvm(format!("tile config alignment: {e}")))?;
    call("llvm.x86.ldtilecfg", &[cfg_p.into()])?;
    for x in 0..8 {
        call("llvm.x86.tilezero", &[tmm(x)])?;
    }
    b.build_unconditional_branch(head)?;
    b.position_at_end(head);
    let i = b.build_phi(i64t, "i")?;
    i.add_incoming(&[(&i64t.const_zero(), entry)]);
    let iv = i.as_basic_value().into_int_value();
    let more = b.build_int_compare(IntPredicate::SLT, iv, iters, "more")?;
    b.build_conditional_branch(more, body, exit)?;
    b.position_at_end(body);
    for (acc, a, w) in [(0, 4, 6), (1, 4, 7), (2, 5, 6), (3, 5, 7)] {
        call("llvm.x86.tdpbusd", &[tmm(acc), tmm(a), tmm(w)])?;
    }
    let next = b.build_int_add(iv, i64t.const_int(1, false), "next")?;
    i.add_incoming(&[(&next, body)]);
    b.build_unconditional_branch(head)?;
    b.position_at_end(exit);
    call("llvm.x86.tilerelease", &[])?;
    b.build_return(None)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both read patterns visit every 64-byte vector of the part exactly
    /// once: over a buffer whose vectors hold their index in lane 0, the
    /// probe's sum is the sum of the indices (a pattern that skipped or
    /// repeated a vector, or read past the part, would sum differently).
    #[test]
    fn both_read_patterns_read_each_vector_once() {
        let p = probes().unwrap();
        let per: u64 = 64 * 1024;
        let vectors = (per / 64) as usize;
        // 16 f32 per vector, one spare vector past the part (holding a
        // large value that must not be read) and room for 64-byte alignment.
        let mut buf = vec![0f32; (vectors + 2) * 16];
        let base = (buf.as_ptr() as usize).div_ceil(64) * 64;
        let skip = (base - buf.as_ptr() as usize) / 4;
        for v in 0..=vectors {
            buf[skip + v * 16] = if v < vectors { v as f32 } else { 1e9 };
        }
        let want = (vectors * (vectors - 1) / 2) as f32;
        let quarter = (per / 4) as i64;
        for (limit, stride, advance) in [(per as i64, 64, READ_STEP as i64), (quarter, quarter, 64)]
        {
            // SAFETY: the part [base, base + per) and the spare vector lie
            // inside `buf`.
            let got = unsafe { (p.read)(base as *const f32, limit, stride, advance) };
            assert_eq!(got, want, "limit {limit} stride {stride} advance {advance}");
        }
    }
}
