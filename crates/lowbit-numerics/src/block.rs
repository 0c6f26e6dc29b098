//! Block-scaled formats: OCP MX (MXFP8, MXFP6, MXFP4, MXINT8) and NVFP4.
//!
//! A tensor is cut into blocks of `block` consecutive elements along one
//! axis (the last block along the axis may be shorter); every block shares
//! one scale, and each element is stored as a code of the element type.
//!
//! * MX ([`ScaleRule::SharedExponent`], OCP Microscaling spec v1.0 §6.3):
//!   `shared_exp = floor(log2(max|x|)) - emax_elem`, clamped into the scale
//!   type's exponent range, stored in `f8E8M0FNU`; elements are
//!   `x / 2^shared_exp` rounded (nearest-even by default) and clamped to the
//!   element type's largest finite value. `emax_elem` is the exponent of the
//!   element type's largest binade (8 for E4M3, 15 for E5M2, 2 for E2M3,
//!   4 for E3M2, 2 for E2M1, 0 for INT8). A block of zeros gets the smallest
//!   scale. MXINT8 elements are `i8` codes with an implied scale of 2^-6
//!   (values -2 to 1 63/64), clamped symmetrically to ±127.
//! * NVFP4 ([`ScaleRule::Float`] with a tensor scale): a per-tensor `f32`
//!   scale `t = max|x| / (6 * 448)` (1 when the tensor has no non-zero finite
//!   value), per 16-element block an `f8E4M3FN` scale
//!   `s = encode(max|x_block| / 6 / t)` (nearest-even, saturating), and
//!   elements `encode_f4E2M1FN(x / (s * t))`. Dequantization is
//!   `decode(e) * s * t`.
//!
//! Arithmetic is in `f64` (exact for power-of-two scales), with one rounding
//! into the element type, and one into `f32` on dequantization.
//! A block holding a NaN or an infinity gets the scale type's NaN and zero
//! element codes, so it dequantizes to NaN (the MX spec's NaN scale).

use crate::format::{ElemType, FloatFormat, FormatError};
use crate::round::{Overflow, Rounding};
use std::fmt;
use std::str::FromStr;

/// How a block's scale is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScaleRule {
    /// A power of two from the block maximum's exponent (OCP MX).
    SharedExponent,
    /// `max|x| / max_elem` rounded into a float scale type (NVFP4 style),
    /// optionally relative to a per-tensor `f32` scale.
    Float {
        /// Whether a per-tensor `f32` scale is applied on top.
        tensor_scale: bool,
    },
}

/// A block-scaled format: element type, block size, scale type and rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockFormat {
    elem: ElemType,
    block: usize,
    scale: FloatFormat,
    rule: ScaleRule,
    /// Integer elements stand for `code * 2^-int_frac_bits`.
    int_frac_bits: u32,
    rounding: Rounding,
}

const PRESETS: [&str; 9] = [
    "mxfp8_e4m3",
    "mxfp8_e5m2",
    "mxfp6_e2m3",
    "mxfp6_e3m2",
    "mxfp4",
    "mxint8",
    "nvfp4",
    "mxfp8",
    "mxfp6",
];

impl BlockFormat {
    /// Builds and validates a format. Integer elements must be signed and
    /// carry `int_frac_bits` fraction bits (MXINT8: 6); float elements must
    /// have `int_frac_bits == 0`. Element codes must fit in 8 bits.
    pub fn new(
        elem: ElemType,
        block: usize,
        scale: ElemType,
        rule: ScaleRule,
        int_frac_bits: u32,
    ) -> Result<BlockFormat, FormatError> {
        let name = format!("block format ({elem} x {block}, scale {scale})");
        if block == 0 {
            return Err(FormatError(format!("{name}: block size 0")));
        }
        if block > 1 << 20 {
            return Err(FormatError(format!(
                "{name}: block size {block} exceeds 2^20"
            )));
        }
        match elem {
            ElemType::Float(f) if f.bits() <= 8 && int_frac_bits == 0 => {
                if !f.is_signed() {
                    return Err(FormatError(format!(
                        "{name}: element type {elem} has no sign"
                    )));
                }
            }
            ElemType::Int {
                bits,
                signed: true,
            } if (2..=8).contains(&bits) && int_frac_bits < 64 => {}
            _ => {
                return Err(FormatError(format!(
                    "{name}: element type {elem} is not supported (a signed float of at most 8 bits, or a signed integer of 2 to 8 bits with fraction bits)"
                )))
            }
        }
        let ElemType::Float(sf) = scale else {
            return Err(FormatError(format!(
                "{name}: scale type {scale} cannot hold a fractional scale (use a float type such as f8E8M0FNU or f8E4M3FN)"
            )));
        };
        match rule {
            ScaleRule::SharedExponent => {
                if sf.man_bits() != 0 || sf.is_signed() || sf.has_subnormals() {
                    return Err(FormatError(format!(
                        "{name}: scale type {scale} cannot hold a shared exponent (needs an unsigned exponent-only type such as f8E8M0FNU)"
                    )));
                }
            }
            ScaleRule::Float { .. } => {
                if !(sf.max_finite() >= 1.0 && sf.min_positive() <= 1.0) {
                    return Err(FormatError(format!(
                        "{name}: scale type {scale} cannot hold a scale of 1"
                    )));
                }
            }
        }
        Ok(BlockFormat {
            elem,
            block,
            scale: sf,
            rule,
            int_frac_bits,
            rounding: Rounding::NearestEven,
        })
    }

    fn mx(elem: FloatFormat) -> BlockFormat {
        BlockFormat {
            elem: ElemType::Float(elem),
            block: 32,
            scale: FloatFormat::F8E8M0FNU,
            rule: ScaleRule::SharedExponent,
            int_frac_bits: 0,
            rounding: Rounding::NearestEven,
        }
    }

    /// MXFP8 with E4M3 elements.
    pub fn mxfp8_e4m3() -> BlockFormat {
        Self::mx(FloatFormat::F8E4M3FN)
    }
    /// MXFP8 with E5M2 elements.
    pub fn mxfp8_e5m2() -> BlockFormat {
        Self::mx(FloatFormat::F8E5M2)
    }
    /// MXFP6 with E2M3 elements.
    pub fn mxfp6_e2m3() -> BlockFormat {
        Self::mx(FloatFormat::F6E2M3FN)
    }
    /// MXFP6 with E3M2 elements.
    pub fn mxfp6_e3m2() -> BlockFormat {
        Self::mx(FloatFormat::F6E3M2FN)
    }
    /// MXFP4 (E2M1 elements).
    pub fn mxfp4() -> BlockFormat {
        Self::mx(FloatFormat::F4E2M1FN)
    }
    /// MXINT8 (`i8` elements with an implied scale of 2^-6).
    pub fn mxint8() -> BlockFormat {
        BlockFormat {
            elem: ElemType::I8,
            int_frac_bits: 6,
            ..Self::mx(FloatFormat::F8E4M3FN)
        }
    }
    /// NVFP4: E2M1 elements, 16-element blocks, E4M3 block scale, `f32`
    /// tensor scale.
    pub fn nvfp4() -> BlockFormat {
        BlockFormat {
            elem: ElemType::Float(FloatFormat::F4E2M1FN),
            block: 16,
            scale: FloatFormat::F8E4M3FN,
            rule: ScaleRule::Float { tensor_scale: true },
            int_frac_bits: 0,
            rounding: Rounding::NearestEven,
        }
    }

    /// The same format with another rounding mode for the elements.
    pub fn with_rounding(mut self, rounding: Rounding) -> BlockFormat {
        self.rounding = rounding;
        self
    }

    /// Element type.
    pub fn elem(&self) -> ElemType {
        self.elem
    }
    /// Elements per block.
    pub fn block(&self) -> usize {
        self.block
    }
    /// Scale type.
    pub fn scale(&self) -> FloatFormat {
        self.scale
    }
    /// Scale rule.
    pub fn rule(&self) -> ScaleRule {
        self.rule
    }
    /// Element rounding mode.
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    /// Largest element magnitude, in element units.
    fn elem_max(&self) -> f64 {
        match self.elem {
            ElemType::Float(f) => f.max_finite(),
            _ => {
                let hi = self.elem.int_range().map_or(1, |r| r.1);
                hi as f64 * pow2(-(self.int_frac_bits as i32))
            }
        }
    }

    /// `emax_elem`: the exponent of the element type's largest binade.
    pub fn elem_emax(&self) -> i32 {
        match self.elem {
            ElemType::Float(f) => f.emax(),
            _ => floor_log2(self.elem_max()),
        }
    }

    fn encode_elem(&self, v: f64) -> u8 {
        match self.elem {
            ElemType::Float(f) => f.encode(v, self.rounding, true) as u8,
            _ => {
                let hi = self.elem.int_range().map_or(0, |r| r.1);
                let r = crate::round::round_f64_to_i128(
                    v * pow2(self.int_frac_bits as i32),
                    self.rounding,
                );
                // Symmetric clamp: the most negative code is never produced.
                let r = r.clamp(-hi, hi);
                self.elem.encode_int(r, Overflow::Saturate) as u8
            }
        }
    }

    fn decode_elem(&self, c: u8) -> f64 {
        match self.elem {
            ElemType::Float(f) => f.decode(c as u64),
            _ => {
                self.elem.decode_int(c as u64).unwrap_or(0) as f64
                    * pow2(-(self.int_frac_bits as i32))
            }
        }
    }
}

impl fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in PRESETS {
            if let Ok(g) = p.parse::<BlockFormat>() {
                if g == *self {
                    return f.write_str(p);
                }
            }
        }
        write!(
            f,
            "block({} x {}, scale {}",
            self.elem, self.block, self.scale
        )?;
        if self.int_frac_bits != 0 {
            write!(f, ", 2^-{}", self.int_frac_bits)?;
        }
        if let ScaleRule::Float { tensor_scale: true } = self.rule {
            f.write_str(", tensor scale")?;
        }
        f.write_str(")")
    }
}

impl FromStr for BlockFormat {
    type Err = FormatError;
    /// `mxfp8_e4m3` (also `mxfp8`), `mxfp8_e5m2`, `mxfp6_e2m3` (also
    /// `mxfp6`), `mxfp6_e3m2`, `mxfp4`, `mxint8`, `nvfp4`.
    fn from_str(s: &str) -> Result<BlockFormat, FormatError> {
        Ok(match s {
            "mxfp8_e4m3" | "mxfp8" => Self::mxfp8_e4m3(),
            "mxfp8_e5m2" => Self::mxfp8_e5m2(),
            "mxfp6_e2m3" | "mxfp6" => Self::mxfp6_e2m3(),
            "mxfp6_e3m2" => Self::mxfp6_e3m2(),
            "mxfp4" => Self::mxfp4(),
            "mxint8" => Self::mxint8(),
            "nvfp4" => Self::nvfp4(),
            _ => {
                return Err(FormatError(format!(
                    "unknown block format '{s}' (expected one of {})",
                    PRESETS.join(", ")
                )))
            }
        })
    }
}

fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

fn floor_log2(x: f64) -> i32 {
    let (m, e) = crate::round::decompose(x);
    63 - m.leading_zeros() as i32 + e
}

/// A quantized tensor: one element code per input element (same row-major
/// order), and one scale code per block, in row-major order of the input
/// shape with the blocked axis's length replaced by the block count.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockQuantized {
    /// The format.
    pub format: BlockFormat,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// The axis blocks run along.
    pub axis: usize,
    /// Element codes.
    pub codes: Vec<u8>,
    /// Block scale codes (in the format's scale type).
    pub scales: Vec<u8>,
    /// The per-tensor scale (1 for formats without one).
    pub tensor_scale: f32,
}

impl BlockQuantized {
    /// Shape of the scale tensor.
    pub fn scale_shape(&self) -> Vec<usize> {
        let mut s = self.shape.clone();
        if let Some(a) = s.get_mut(self.axis) {
            *a = a.div_ceil(self.format.block);
        }
        s
    }
}

struct Geometry {
    outer: usize,
    len: usize,
    inner: usize,
    blocks: usize,
}

fn geometry(
    fmt: &BlockFormat,
    n: usize,
    shape: &[usize],
    axis: usize,
) -> Result<Geometry, FormatError> {
    if axis >= shape.len() {
        return Err(FormatError(format!(
            "{fmt}: axis {axis} is out of range for a rank-{} tensor",
            shape.len()
        )));
    }
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| FormatError(format!("{fmt}: shape {shape:?} overflows")))?;
    if count != n {
        return Err(FormatError(format!(
            "{fmt}: shape {shape:?} holds {count} elements but {n} were given"
        )));
    }
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    let len = shape[axis];
    Ok(Geometry {
        outer,
        len,
        inner,
        blocks: len.div_ceil(fmt.block),
    })
}

/// Quantizes `data` (row-major, of `shape`) in blocks along `axis`.
pub fn quantize(
    fmt: &BlockFormat,
    data: &[f32],
    shape: &[usize],
    axis: usize,
) -> Result<BlockQuantized, FormatError> {
    let g = geometry(fmt, data.len(), shape, axis)?;
    let mut codes = vec![0u8; data.len()];
    let mut scales = vec![0u8; g.outer * g.blocks * g.inner];
    let elem_max = fmt.elem_max();
    let tensor_scale = match fmt.rule {
        ScaleRule::Float { tensor_scale: true } => {
            let amax = data
                .iter()
                .filter(|v| v.is_finite())
                .fold(0f32, |a, v| a.max(v.abs()));
            let t = (amax as f64 / (elem_max * fmt.scale.max_finite())) as f32;
            if t > 0.0 && t.is_finite() {
                t
            } else {
                1.0
            }
        }
        _ => 1.0,
    };
    let nan_scale = fmt.scale.nan_code().unwrap_or(0) as u8;
    let mut idx = Vec::with_capacity(fmt.block);
    for o in 0..g.outer {
        for k in 0..g.blocks {
            for i in 0..g.inner {
                idx.clear();
                let start = k * fmt.block;
                let end = (start + fmt.block).min(g.len);
                idx.extend((start..end).map(|a| (o * g.len + a) * g.inner + i));
                let s_at = (o * g.blocks + k) * g.inner + i;
                if idx.iter().any(|&j| !data[j].is_finite()) {
                    scales[s_at] = nan_scale;
                    continue;
                }
                let amax = idx.iter().fold(0f64, |a, &j| a.max(data[j].abs() as f64));
                let (scode, scale) = match fmt.rule {
                    ScaleRule::SharedExponent => {
                        let (lo, hi) = (fmt.scale.emin(), fmt.scale.emax());
                        let e = if amax == 0.0 {
                            lo
                        } else {
                            (floor_log2(amax) - fmt.elem_emax()).clamp(lo, hi)
                        };
                        ((e - lo) as u8, pow2(e))
                    }
                    ScaleRule::Float { .. } => {
                        let want = amax / elem_max / tensor_scale as f64;
                        let c = fmt.scale.encode(want, Rounding::NearestEven, true);
                        (c as u8, fmt.scale.decode(c) * tensor_scale as f64)
                    }
                };
                scales[s_at] = scode;
                for &j in &idx {
                    codes[j] = if scale > 0.0 {
                        fmt.encode_elem(data[j] as f64 / scale)
                    } else {
                        fmt.encode_elem(0.0)
                    };
                }
            }
        }
    }
    Ok(BlockQuantized {
        format: *fmt,
        shape: shape.to_vec(),
        axis,
        codes,
        scales,
        tensor_scale,
    })
}

/// Dequantizes a block-quantized tensor back to `f32` (row-major).
pub fn dequantize(q: &BlockQuantized) -> Result<Vec<f32>, FormatError> {
    let fmt = &q.format;
    let g = geometry(fmt, q.codes.len(), &q.shape, q.axis)?;
    if q.scales.len() != g.outer * g.blocks * g.inner {
        return Err(FormatError(format!(
            "{fmt}: {} scales given, {} expected for shape {:?} along axis {}",
            q.scales.len(),
            g.outer * g.blocks * g.inner,
            q.shape,
            q.axis
        )));
    }
    let mut out = vec![0f32; q.codes.len()];
    for o in 0..g.outer {
        for a in 0..g.len {
            let k = a / fmt.block;
            for i in 0..g.inner {
                let s = fmt
                    .scale
                    .decode(q.scales[(o * g.blocks + k) * g.inner + i] as u64);
                let j = (o * g.len + a) * g.inner + i;
                let v = fmt.decode_elem(q.codes[j]) * s * q.tensor_scale as f64;
                out[j] = v as f32;
            }
        }
    }
    Ok(out)
}
