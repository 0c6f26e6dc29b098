//! lowbit's CPU backend: quantized GEMM/GEMV kernels lowered to LLVM IR with
//! inkwell (LLVM 22), JIT-compiled in process or emitted ahead of time.
//!
//! * [`GemmSpec`] — what to compute: `Y[n, m] = act(X[n, k] · Wᵀ + bias)`
//!   with `W` quantized (1- to 8-bit integers, `b1`, `f8E4M3FN`, `f8E5M2`,
//!   `f4E2M1FN`; per-channel or 32-multiple groups; f32/f16/bf16 scales;
//!   optional zero points) and f32/f16/bf16 activations, dequantized in
//!   registers; or the exact integer paths: W8A8 ([`GemmSpec::int8`],
//!   `vpdpbusd`, optional dyadic requantization to `i8`), W1A1
//!   ([`GemmSpec::binary`], xor + popcount) and bit-serial WxAy
//!   ([`GemmSpec::bit_serial`], and + popcount over bit-planes). Specs the kernels cannot run
//!   give [`CpuError::Unsupported`].
//! * Opt-in activation quantization ([`GemmSpec::blockdot`],
//!   [`ActQuant`]): `q4_0` weights times `f32` activations quantized per
//!   call to `i8` per 32-block (the IR's `quantize-activations` form), an
//!   exact `vpdpbusd` dot per block and an `f32` sum (`codegen/blockdot.rs`,
//!   [`actquant`]); in the JIT on an AMX-INT8 host and in whole-model
//!   objects for an AMX-INT8 target ([`aot::blockdot_on_amx`]) with a
//!   static `n >= 8` (`i8`: `n >= 9`), AMX tile dots per block instead, bit-identical
//!   (`codegen/amxdot.rs`).
//! * [`PackedWeights`] — weights pre-packed into the layout the kernel reads
//!   ([`GemmSpec::packed_layout`], a lowbit-ir `Layout`).
//! * [`compile`] / [`GemmKernel::run`] — the library JIT with its in-memory
//!   and on-disk caches ([`disk_cache`]); buffer sizes are checked before
//!   any machine code runs.
//! * [`aot::emit`] — LLVM IR, assembly or object output for a target.
//! * [`data_object`] — read-only data (packed weights) streamed into an ELF
//!   object, assembly or LLVM IR beside the AOT kernels.
//! * [`bench`](mod@bench) — benchmark inputs: arbitrary weights rotated over more
//!   memory than the last-level cache (`lowbit bench`, `benches/gemm.rs`).
//! * [`probe`] — small JIT-compiled probes of the machine's memory read
//!   bandwidth and FMA peak, for roofline figures.
//!
//! Float results are within the bound stated in [`codegen`] of the
//! reference interpreter's.
#![deny(missing_docs)]

pub mod actquant;
pub mod aot;
pub mod bench;
pub mod codegen;
pub mod data_object;
pub mod disk_cache;
pub mod error;
pub mod jit;
mod objjit;
pub mod pack;
mod pool;
pub mod probe;
pub mod spec;
pub mod target;

pub use error::CpuError;
pub use jit::{compile, compiler_version, Activations, GemmKernel, KernelOrigin, Requant};
pub use pack::PackedWeights;
pub use spec::{
    ActQuant, Activation, Dim, Epilogue, GemmSpec, TensorScale, WeightGranularity, WeightSpec,
    PLANE_BLOCK,
};
pub use target::{CpuTarget, KernelPaths};
