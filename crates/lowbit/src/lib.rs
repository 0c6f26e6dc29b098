//! lowbit: a compiler for low-precision neural-network kernels.
//!
//! This crate gathers the lowbit libraries under one name:
//! * [`ir`] — element types of any bit width, layouts, ops, the module
//!   arenas, the `.lbir` text format (printer and parser) and the verifier;
//! * [`numerics`] — bit-exact encode/decode and rounding of every number
//!   format;
//! * [`interp`] — the reference interpreter, which defines what every op
//!   computes and is the oracle for passes and backends;
//! * [`opt`] — the pass manager, textual pipelines and the built-in passes;
//! * [`egraph`] — the equality-saturation optimizer (fused quantized ops,
//!   schedule choice per target, explain);
//! * [`onnx`] — ONNX `TensorProto` (`.pb`) and NumPy `.npy` tensor I/O.
//!
//! The most used types are re-exported at the top level.
#![deny(missing_docs)]

pub use lowbit_egraph as egraph;
pub use lowbit_interp as interp;
pub use lowbit_ir as ir;
pub use lowbit_numerics as numerics;
pub use lowbit_onnx as onnx;
pub use lowbit_opt as opt;

pub use lowbit_ir::{
    Diagnostic, ElemType, Function, Layout, Module, OpKind, Tensor, TensorType, Value,
};
pub use lowbit_opt::PassManager;
