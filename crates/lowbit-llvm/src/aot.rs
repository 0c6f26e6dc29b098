//! Ahead-of-time output of a GEMM kernel: LLVM IR text, assembly or an
//! object file, for the host or a named target (x86-64, AArch64).
//!
//! The object exports `lowbit_gemm` with the signature documented in
//! [`crate::codegen`]; weights are not embedded (pack them with
//! [`crate::PackedWeights`] and pass them at run time).

use crate::codegen::build_module;
use crate::error::CpuError;
use crate::jit::optimize;
use crate::spec::GemmSpec;
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
    optimize(&module, target)?;
    let file_type = match what {
        Emit::LlvmIr => return Ok(module.print_to_string().to_bytes().to_vec()),
        Emit::Asm => FileType::Assembly,
        Emit::Obj => FileType::Object,
    };
    let machine = target.machine(RelocMode::PIC)?;
    let buf = machine
        .write_to_memory_buffer(&module, file_type)
        .map_err(|e| CpuError::Llvm(format!("code generation for {}: {e}", target.describe())))?;
    Ok(buf.as_slice().to_vec())
}
