//! The thread CPU time of compiling one GEMM kernel (`lowbit bench`'s
//! `compile_ms` is wall time, which a busy shared machine inflates), split
//! into IR generation (`build_module`), the kernel pass pipeline (the
//! string below must match `jit.rs`'s `PIPELINE`), code generation to an
//! object, and the whole `GemmKernel::compile_uncached` (the rest of it is
//! loading the object), and the tile functions the module holds.
//!
//! Run with
//! `cargo run --release -p lowbit-llvm --example compile_cpu_time -- WEIGHT N GROUP [SCALE] [CPU]`,
//! `N` a number (static n) or `dyn` (a run-time n), e.g. `i4 dyn 32`
//! (q4_0-like, dynamic n), `i8 1 32` (q8_0-like decode), `GROUP` 0 for one
//! scale per row; `CPU` an LLVM CPU
//! name (`haswell`) builds the IR for it instead of the host (IR only: the
//! code could not run here). `m = 4096`, `k = 14336`; 7 compilations, the
//! first in the process pays LLVM's one-time setup and is left out.
//!
//! With `LOWBIT_DUMP_IR=FILE` the unoptimized module is written to FILE
//! (for `opt -passes=... -time-passes` and `llc -time-passes`).
//!
//! Limits: Linux only (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`); float
//! (dequant-fused) specs without zero points.

use inkwell::context::Context;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, RelocMode, Target, TargetTriple};
use inkwell::OptimizationLevel;
use lowbit_llvm::codegen::build_module;
use lowbit_llvm::{CpuTarget, Dim, GemmKernel, GemmSpec, WeightGranularity};
use lowbit_numerics::ElemType;

mod common;

use common::thread_cpu_ns;

/// `jit.rs`'s kernel pass pipeline.
const PIPELINE: &str =
    "function(sroa,early-cse,instcombine<no-verify-fixpoint>,simplifycfg,loop-mssa(licm),gvn,simplifycfg)";

fn median_ms(mut v: Vec<u64>) -> f64 {
    v.sort_unstable();
    v[v.len() / 2] as f64 * 1e-6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: compile_cpu_time WEIGHT N|dyn GROUP [SCALE] [CPU]";
    let weight: ElemType = args.first().ok_or(usage)?.parse()?;
    let n = match args.get(1).ok_or(usage)?.as_str() {
        "dyn" => Dim::Dynamic,
        s => Dim::Static(s.parse().map_err(|_| format!("N: cannot parse '{s}'"))?),
    };
    let group: usize = args.get(2).ok_or(usage)?.parse()?;
    // Group 0: one scale per row.
    let mut spec = GemmSpec::new(4096, 14336, n, weight, group.max(16));
    if group == 0 {
        spec.weight.granularity = WeightGranularity::PerChannel;
    }
    if let Some(s) = args.get(3) {
        spec.weight.scale = s.parse()?;
    }
    let target = match args.get(4) {
        Some(cpu) => CpuTarget::named("x86_64", cpu)?,
        None => CpuTarget::host()?,
    };
    let ctx = Context::create();
    let module = build_module(&ctx, &spec, &target)?;
    // The unoptimized IR, for `opt`/`llc -time-passes`.
    if let Ok(path) = std::env::var("LOWBIT_DUMP_IR") {
        module.print_to_file(&path).map_err(|e| e.to_string())?;
    }
    let tiles: Vec<String> = module
        .get_functions()
        .filter(|f| f.count_basic_blocks() > 0)
        .map(|f| f.get_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tile_"))
        .collect();
    let triple = TargetTriple::create(&target.triple);
    let machine = Target::from_triple(&triple)
        .map_err(|e| e.to_string())?
        .create_target_machine(
            &triple,
            &target.cpu,
            &target.features,
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or("no target machine")?;
    let (mut ir, mut opt, mut obj, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..7 {
        let t = thread_cpu_ns()?;
        let ctx = Context::create();
        let module = build_module(&ctx, &spec, &target)?;
        let ir_ns = thread_cpu_ns()? - t;
        let t = thread_cpu_ns()?;
        module.run_passes(PIPELINE, &machine, PassBuilderOptions::create())?;
        let opt_ns = thread_cpu_ns()? - t;
        let t = thread_cpu_ns()?;
        drop(machine.write_to_memory_buffer(&module, FileType::Object)?);
        let obj_ns = thread_cpu_ns()? - t;
        let t = thread_cpu_ns()?;
        if args.get(4).is_none() {
            drop(GemmKernel::compile_uncached(&spec, &target)?);
        }
        let all_ns = thread_cpu_ns()? - t;
        if i > 0 {
            ir.push(ir_ns);
            opt.push(opt_ns);
            obj.push(obj_ns);
            total.push(all_ns);
        }
    }
    // A named CPU's kernel is not loaded: no whole-compile figure.
    let whole = if args.get(4).is_none() {
        format!("{:.1} ms", median_ms(total))
    } else {
        "not loaded (not the host)".to_string()
    };
    println!(
        "{spec} on {}: tiles {tiles:?}; IR {:.1} ms, passes {:.1} ms, object {:.1} ms, whole compile {whole} (thread CPU, medians of 6)",
        target.cpu,
        median_ms(ir),
        median_ms(opt),
        median_ms(obj),
    );
    Ok(())
}
