//! Bit-exact numerics for every element type lowbit knows.
//!
//! This crate is the single definition of how a value of an element type is
//! encoded into bits, decoded back, and rounded. The interpreter, constant
//! folding, weight packing and every frontend go through it.
//!
//! Invariants:
//! * A *code* is the raw bit pattern of one element, zero-extended into a
//!   `u64` (integers in two's complement truncated to their width).
//! * Decoding a code to `f64` is exact for every float format (all formats
//!   have at most 11 exponent and 52 mantissa bits).
//! * Encoding rounds exactly once, in the requested [`Rounding`] mode.
#![deny(missing_docs)]

pub mod block;
pub mod convert;
pub mod format;
pub mod pack;
pub mod round;
pub mod stochastic;

pub use format::{ElemType, FloatFormat, FloatKind, FormatError};
pub use round::{EncodeOptions, Overflow, RoundSpec, Rounding};
pub use stochastic::StochasticRounding;
