//! The lowbit graph IR.
//!
//! A [`Module`] holds [`Function`]s; a function is one block of tensor ops in
//! SSA form. Values and ops are typed `u32` ids into per-function arenas
//! ([`Value`], [`Op`]); the op order lives in a separate list, apart from the
//! data-flow graph. Every value has a [`TensorType`]: a static shape, an
//! [`ElemType`] of any bit width, and a [`Layout`] that says how the elements
//! are laid out in memory (packing order, tiles, interleave, bit-planes).
//!
//! Quantization is explicit: `quantize`/`dequantize`/`requantize` ops take
//! their scales and zero points as tensor operands, with a [`Granularity`]
//! (per tensor, per axis, or blocked along any axes).
//!
//! The text format (`.lbir`) is printed by [`printer`] and read by [`parser`];
//! `parse(print(m)) == m` for every module. [`verifier`] checks a module and
//! reports every error at once.
#![deny(missing_docs)]

pub mod diag;
pub mod entity;
pub mod function;
pub mod ops;
pub mod parser;
pub mod printer;
pub mod source;
pub mod target;
pub mod tensor;
pub mod testing;
pub mod types;
pub mod verifier;

pub use diag::{Diagnostic, Severity, Span};
pub use entity::{Arena, EntityId};
pub use function::{Function, Module, OpData, OpNote, ValueData, ValueDef};
pub use function::{Op, Value};
pub use lowbit_numerics::{ElemType, FloatFormat, FloatKind, Overflow, Rounding};

pub use ops::{
    Activation, Attr, BinaryOp, ConstData, Granularity, IntSchedule, OpKind, QRequant, ReduceOp,
    UnaryOp,
};
pub use tensor::Tensor;
pub use types::{Layout, PackOrder, TensorType};
