//! Errors of the CPU backend. Every failure is a value with a one-line
//! message; nothing a caller passes in can make the backend panic.

use std::fmt;

/// Why a CPU kernel could not be built or run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuError {
    /// The spec asks for something the CPU kernels do not do.
    Unsupported {
        /// The op (`gemm`, or the graph op at fault).
        op: String,
        /// The element type at fault.
        dtype: String,
        /// The weight layout involved.
        layout: String,
        /// The target (CPU name and vector ISA).
        target: String,
        /// What exactly is missing.
        reason: String,
    },
    /// A buffer passed to a kernel has the wrong size.
    BufferSize {
        /// Which buffer.
        buffer: &'static str,
        /// Elements (or bytes) the spec needs.
        expected: usize,
        /// Elements (or bytes) given.
        got: usize,
    },
    /// Packed weights built for another spec.
    SpecMismatch(String),
    /// Weight, scale or zero-point tensors that do not fit the spec.
    BadWeights(String),
    /// LLVM failed (target lookup, verification, code generation).
    Llvm(String),
    /// Writing an output file failed.
    Io(String),
}

impl fmt::Display for CpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuError::Unsupported {
                op,
                dtype,
                layout,
                target,
                reason,
            } => write!(
                f,
                "unsupported on cpu target {target}: '{op}' with {dtype} weights in {layout}: {reason}"
            ),
            CpuError::BufferSize {
                buffer,
                expected,
                got,
            } => write!(f, "buffer '{buffer}' has {got} elements, the kernel needs {expected}"),
            CpuError::SpecMismatch(m) => write!(f, "packed weights do not match the kernel: {m}"),
            CpuError::BadWeights(m) => write!(f, "bad weights: {m}"),
            CpuError::Llvm(m) => write!(f, "LLVM: {m}"),
            CpuError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CpuError {}

impl From<inkwell::builder::BuilderError> for CpuError {
    fn from(e: inkwell::builder::BuilderError) -> CpuError {
        CpuError::Llvm(format!("IR builder: {e}"))
    }
}
