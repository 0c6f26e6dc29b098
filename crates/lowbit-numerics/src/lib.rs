//! Bit-exact numerics for every element type lowbit knows.
//!
//! This crate is the single definition of how a value of an element type is
//! encoded into bits, decoded back, and rounded. The interpreter, constant
//! folding, weight packing and every frontend go through it.
//!
//! Invariants:
//! * A *code* is the raw bit pattern of one element, zero-extended into a
//!   `u64` (integers in two's complement truncated to their width).
//! * Decoding a code to `f64` is exact for every float format (formats are
//!   validated so that every value is an `f64`).
//! * Encoding rounds exactly once, in the requested [`Rounding`] mode (or
//!   stochastically, see [`StochasticRounding`]).
//!
//! Modules:
//! * [`mod@format`]: element types ([`ElemType`], [`FloatFormat`]) and the
//!   scalar encoder/decoder; special-value conventions follow `ml_dtypes`
//!   (documented on [`FloatFormat::encode`]).
//! * [`round`]: rounding modes and exact integer rounding.
//! * [`stochastic`]: seeded, reproducible stochastic rounding.
//! * [`convert`]: vectorized `f32` slice conversion ([`convert::Codec`]).
//! * [`block`]: MX and NVFP4 block-scaled tensors.
//! * [`pack`]: sub-byte packing, ONNX and GGUF layouts, bit-planes.
//!
//! # Examples
//!
//! Scalar encoding and decoding:
//! ```
//! use lowbit_numerics::{ElemType, Rounding};
//! let e4m3: ElemType = "f8E4M3FN".parse()?;
//! let code = e4m3.encode(0.3, Rounding::NearestEven, true);
//! assert_eq!(code, 0x2a);
//! assert_eq!(e4m3.decode(code), 0.3125);
//! // Saturating vs not: 1000 clamps to 448 or becomes NaN.
//! assert_eq!(e4m3.decode(e4m3.encode(1000.0, Rounding::NearestEven, true)), 448.0);
//! assert!(e4m3.decode(e4m3.encode(1000.0, Rounding::NearestEven, false)).is_nan());
//! // Custom formats: 3 exponent bits, 4 mantissa bits, bias 2, no infinities.
//! let custom: ElemType = "fE3M4B2FN".parse()?;
//! assert_eq!(custom.bits(), 8);
//! # Ok::<(), lowbit_numerics::FormatError>(())
//! ```
//!
//! Whole slices, vectorized:
//! ```
//! use lowbit_numerics::{convert::Codec, ElemType, EncodeOptions, Rounding};
//! let codec = Codec::new("f4E2M1FN".parse()?, EncodeOptions::new(Rounding::NearestEven, true));
//! let mut codes = [0u8; 4];
//! codec.encode(&[0.25, 1.2, -5.0, 100.0], &mut codes)?;
//! assert_eq!(codes, [0x0, 0x2, 0xe, 0x7]);
//! let mut back = [0f32; 4];
//! codec.decode(&codes, &mut back)?;
//! assert_eq!(back, [0.0, 1.0, -4.0, 6.0]);
//! # Ok::<(), lowbit_numerics::FormatError>(())
//! ```
//!
//! Block-scaled tensors:
//! ```
//! use lowbit_numerics::block::{dequantize, quantize, BlockFormat};
//! let xs: Vec<f32> = (0..64).map(|i| i as f32 / 8.0).collect();
//! let q = quantize(&BlockFormat::mxfp4(), &xs, &[2, 32], 1)?;
//! assert_eq!(q.scales.len(), 2); // one E8M0 scale per 32-element block
//! let back = dequantize(&q)?;
//! assert_eq!(back[8], 1.0);
//! # Ok::<(), lowbit_numerics::FormatError>(())
//! ```
//!
//! Packing and stochastic rounding:
//! ```
//! use lowbit_numerics::{pack, ElemType, StochasticRounding};
//! let mut bytes = [0u8; 2];
//! pack::pack_lsb(&[0x1, 0xe, 0x3], 4, &mut bytes)?;
//! assert_eq!(bytes, [0xe1, 0x03]);
//! let sr = StochasticRounding::new(7, 16)?;
//! let i4: ElemType = "i4".parse()?;
//! let c = sr.encode(&i4, 2.5, 0, true);
//! assert!(c == 2 || c == 3);
//! assert_eq!(c, sr.encode(&i4, 2.5, 0, true)); // same seed and index, same result
//! # Ok::<(), lowbit_numerics::FormatError>(())
//! ```
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
