//! Ahead-of-time output of a GEMM kernel: LLVM IR text, assembly or an
//! object file, for the host or a named target (x86-64, AArch64).
//!
//! The object exports `lowbit_gemm` with the signature documented in
//! [`crate::codegen`]; weights are not embedded (pack them with
//! [`crate::PackedWeights`] and pass them at run time).

use crate::codegen::{build_amx_module, build_module};
use crate::error::CpuError;
use crate::jit::optimize;
use crate::spec::{GemmSpec, INT_PANEL};
use crate::target::CpuTarget;
use inkwell::context::Context;
use inkwell::targets::{FileType, RelocMode};

/// What to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// Optimized LLVM IR text.
    LlvmIr,
    /// Target assembly text.
    Asm,
    /// Relocatable object file.
    Obj,
}

/// Compiles `spec` for `target` and returns the requested output's bytes.
pub fn emit(spec: &GemmSpec, target: &CpuTarget, what: Emit) -> Result<Vec<u8>, CpuError> {
    spec.check(&target.describe())?;
    let ctx = Context::create();
    let module = build_module(&ctx, spec, target)?;
    finish(&module, target, what)
}

/// One kernel of a whole-model object: `spec` exported under `symbol`.
pub struct ModelKernel<'a> {
    /// The kernel's spec (checked here against the target).
    pub spec: &'a GemmSpec,
    /// The exported name of its entry point (signature of
    /// [`crate::codegen::KERNEL_SYMBOL`]).
    pub symbol: String,
}

/// Whether a whole-model object ([`emit_model`]) builds `spec` as the AMX
/// block-dot kernel (`codegen/amxdot.rs`, bit-identical to the `vpdpbusd`
/// one, same buffers) for `target`: the JIT's choice (a block-dot spec
/// with a static `n >= 8` (`i4`; `n >= 9` for `i8`) on a target with `amx-tile` and `amx-int8`,
/// unless `LOWBIT_BLOCKDOT_AMX=0` was set when compiling), without the
/// JIT's request for the tile state, which the model's driver makes at
/// run time (the library may run on another machine than the compiler).
/// Its driver then splits the rows in whole 32-row panel pairs
/// ([`model_row_granule`]). Other targets and shapes keep the `vpdpbusd`
/// kernel, which runs on any AVX-512 VNNI CPU.
pub fn blockdot_on_amx(spec: &GemmSpec, target: &CpuTarget) -> bool {
    crate::jit::blockdot_amx_fits(spec, target)
}

/// The rows a thread's chunk of a whole-model kernel call is a whole
/// multiple of (but at `m`): [`GemmSpec::row_granule`], except for the
/// AMX block-dot kernel ([`blockdot_on_amx`]), whose row blocks are whole
/// 32-row panel pairs as in the JIT (a chunk ending inside a pair would
/// make two threads compute that pair).
pub fn model_row_granule(spec: &GemmSpec, target: &CpuTarget) -> usize {
    if blockdot_on_amx(spec, target) {
        2 * INT_PANEL
    } else {
        spec.row_granule()
    }
}

/// Builds one relocatable object holding several kernels under their own
/// names, each of hidden visibility: the object is meant to be linked into
/// a shared library (or program) whose driver calls them (AMX-INT8
/// kernels included, on a target with `amx-tile` and `amx-int8`: the
/// driver packs their activation tiles, [`GemmSpec::amx_activation_bytes`],
/// and asks Linux for the tile state; and the AMX block-dot kernel where
/// [`blockdot_on_amx`] says so, whose driver asks for the tile state too). Read-only data
/// (pre-packed weights) is not part of it: the driver passes those buffers
/// in, and they go into their own object ([`crate::data_object`]), so
/// LLVM never holds a copy of the weights.
pub fn emit_model_object(kernels: &[ModelKernel], target: &CpuTarget) -> Result<Vec<u8>, CpuError> {
    emit_model(kernels, target, Emit::Obj)
}

/// [`emit_model_object`]'s module as an object, assembly text or LLVM IR.
pub fn emit_model(
    kernels: &[ModelKernel],
    target: &CpuTarget,
    what: Emit,
) -> Result<Vec<u8>, CpuError> {
    use inkwell::GlobalVisibility;
    let ctx = Context::create();
    let module = ctx.create_module("lowbit_model");
    module.set_triple(&inkwell::targets::TargetTriple::create(&target.triple));
    for k in kernels {
        k.spec.check(&target.describe())?;
        // The AMX kernel's callers pack activations into tiles and ask
        // Linux for the tile state: a model's driver does both.
        let km = if k.spec.is_amx() {
            if !(target.has("amx-tile") && target.has("amx-int8")) {
                return Err(k.spec.unsupported(
                    &target.describe(),
                    "the amx schedule needs a CPU with AMX-INT8 (amx-tile, amx-int8)",
                ));
            }
            build_amx_module(&ctx, k.spec, target)?
        } else if blockdot_on_amx(k.spec, target) {
            // The AMX block-dot kernel: the `vpdpbusd` kernel's buffers
            // and results; the driver asks for the tile state and splits
            // rows in whole panel pairs.
            build_amx_module(&ctx, k.spec, target)?
        } else {
            build_module(&ctx, k.spec, target)?
        };
        let f = km
            .get_function(crate::codegen::KERNEL_SYMBOL)
            .ok_or_else(|| CpuError::Llvm("kernel module lacks its entry point".into()))?;
        f.as_global_value().set_name(&k.symbol);
        f.as_global_value().set_visibility(GlobalVisibility::Hidden);
        // Internal tile functions of different kernels share names; the
        // linker renames those local symbols apart.
        module
            .link_in_module(km)
            .map_err(|e| CpuError::Llvm(format!("linking kernel {}: {e}", k.symbol)))?;
    }
    finish(&module, target, what)
}

/// Optimizes a built module and returns it as `what` (LLVM IR text, or
/// assembly / an object file from `target`'s machine).
fn finish(
    module: &inkwell::module::Module<'_>,
    target: &CpuTarget,
    what: Emit,
) -> Result<Vec<u8>, CpuError> {
    optimize(module, target)?;
    let file_type = match what {
        Emit::LlvmIr => return Ok(module.print_to_string().to_bytes().to_vec()),
        Emit::Asm => FileType::Assembly,
        Emit::Obj => FileType::Object,
    };
    let machine = target.machine(RelocMode::PIC)?;
    let buf = machine
        .write_to_memory_buffer(module, file_type)
        .map_err(|e| CpuError::Llvm(format!("code generation for {}: {e}", target.describe())))?;
    Ok(buf.as_slice().to_vec())
}
