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
//!
//! Speed: [`quantize`] computes each block's scale, divides the block by it
//! in `f64` exactly as the reference does, narrows the quotient to `f32`
//! with round-to-odd (which keeps every later rounding into a format of at
//! most 22 significand bits exact: the quotient can neither land on nor
//! cross one of the element type's rounding boundaries), then encodes whole
//! runs of blocks with the vectorized [`Codec`]. Integer elements are
//! rounded in `f64` in the same loop. [`dequantize`] reads a 256-entry `f64`
//! table of element values and multiplies by the block and tensor scales in
//! the reference's order. Both are bit-identical to the element-by-element
//! [`quantize_reference`] / [`dequantize_reference`] (tested on random,
//! boundary and special data); element types whose values leave the `f32`
//! range by far (custom biases) use the reference path.

use crate::convert::Codec;
use crate::format::{ElemType, FloatFormat, FormatError};
use crate::round::{EncodeOptions, Overflow, Rounding};
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

/// The element-by-element reference of [`quantize`]: every element goes
/// through the scalar `f64` encoder. Slow; kept as the oracle the fast path
/// is tested against.
pub fn quantize_reference(
    fmt: &BlockFormat,
    data: &[f32],
    shape: &[usize],
    axis: usize,
) -> Result<BlockQuantized, FormatError> {
    let g = geometry(fmt, data.len(), shape, axis)?;
    let mut codes = vec![0u8; data.len()];
    let mut scales = vec![0u8; g.outer * g.blocks * g.inner];
    let elem_max = fmt.elem_max();
    let tensor_scale = tensor_scale_of(fmt, data, elem_max);
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
                let (scode, scale) = block_scale(fmt, amax, elem_max, tensor_scale);
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

/// The element-by-element reference of [`dequantize`] (scalar decoder per
/// element); the oracle the fast path is tested against.
pub fn dequantize_reference(q: &BlockQuantized) -> Result<Vec<f32>, FormatError> {
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

/// Elements per bulk `Codec::encode` call on contiguous blocks (whole blocks
/// are gathered up to about this many, so the scratch stays in L1).
const CHUNK: usize = 4096;

/// Narrows `y` to `f32` rounding to odd: truncate toward zero, and set the
/// last bit when anything was cut off. A later rounding of the result to a
/// format with at least two fewer significand bits (and a range well inside
/// `f32`'s) equals rounding `y` itself, in every rounding mode.
#[inline(always)]
fn round_to_odd_f32(y: f64) -> f32 {
    let t = y as f32;
    let back = t as f64;
    let mut b = t.to_bits();
    // Nearest rounding went away from zero: step back toward zero (the bit
    // pattern is sign-magnitude, so one less is one ulp smaller).
    b -= (back.abs() > y.abs()) as u32;
    b |= (back != y) as u32;
    f32::from_bits(b)
}

/// Largest `|x|` as `f32` bits (sign cleared); values at or above
/// `0x7f80_0000` mean the block holds an infinity or a NaN.
#[inline(always)]
fn abs_bits_max(xs: &[f32]) -> u32 {
    xs.iter()
        .fold(0u32, |m, x| m.max(x.to_bits() & 0x7fff_ffff))
}

/// What the fast path needs to encode and decode elements.
struct FastPlan {
    /// Float elements: the bulk encoder; `None` for integer elements.
    codec: Option<Codec>,
    /// Integer elements: `2^int_frac_bits` and the symmetric clamp.
    int_mul: f64,
    int_hi: f64,
    int_mask: u64,
    /// SharedExponent scales are powers of two: multiply by the exact
    /// reciprocal instead of dividing.
    pow2: bool,
}

impl FastPlan {
    fn new(fmt: &BlockFormat) -> Option<FastPlan> {
        let pow2_scales = fmt.rule == ScaleRule::SharedExponent;
        match fmt.elem {
            ElemType::Float(f) => {
                // Round-to-odd through f32 needs the element grid well inside
                // f32's normal range (two spare bits at the bottom, no
                // overflow of the quotient's f32 image before saturation).
                if f.min_positive() < 2f64.powi(-120) || f.max_finite() > 2f64.powi(120) {
                    return None;
                }
                let codec = Codec::new(fmt.elem, EncodeOptions::new(fmt.rounding, true));
                // NaN blocks and zero scales write code 0, which must be +0.
                if f.encode(0.0, fmt.rounding, true) != 0 {
                    return None;
                }
                Some(FastPlan {
                    codec: Some(codec),
                    int_mul: 1.0,
                    int_hi: 0.0,
                    int_mask: 0,
                    pow2: pow2_scales,
                })
            }
            _ => Some(FastPlan {
                codec: None,
                int_mul: pow2(fmt.int_frac_bits as i32),
                int_hi: fmt.elem.int_range().map_or(0, |r| r.1) as f64,
                int_mask: fmt.elem.code_mask(),
                pow2: pow2_scales,
            }),
        }
    }

    /// Rounds `v` (already in integer units) the way `round_f64_to_i128`
    /// does, then clamps symmetrically; exact for every finite `v`.
    #[inline(always)]
    fn int_code(&self, v: f64, mode: Rounding) -> u8 {
        let r = match mode {
            Rounding::NearestEven => v.round_ties_even(),
            Rounding::NearestAway => v.round(),
            Rounding::TowardZero => v.trunc(),
            Rounding::Up => v.ceil(),
            Rounding::Down => v.floor(),
        };
        (r.clamp(-self.int_hi, self.int_hi) as i64 as u64 & self.int_mask) as u8
    }
}

/// One block's scale code and the `f64` scale its elements are divided
/// by, from the block's largest magnitude `amax` (finite blocks only).
/// The one statement of the scale rules, shared by [`quantize`] and
/// [`quantize_reference`]; the tests pin it against known spec values,
/// so the reference stays an independent oracle for the element path.
fn block_scale(fmt: &BlockFormat, amax: f64, elem_max: f64, tensor_scale: f32) -> (u8, f64) {
    match fmt.rule {
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
    }
}

fn tensor_scale_of(fmt: &BlockFormat, data: &[f32], elem_max: f64) -> f32 {
    match fmt.rule {
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
    }
}

/// One element of a strided block: its scaled `f32` (floats) or code
/// (integers), as [`scale_run`] computes them.
#[inline(always)]
fn scale_one(plan: &FastPlan, mode: Rounding, x: f32, scale: f64, f: &mut f32, c: &mut u8) {
    if scale <= 0.0 {
        *f = 0.0;
        *c = 0;
    } else if plan.codec.is_some() {
        *f = if plan.pow2 {
            round_to_odd_f32(x as f64 * (1.0 / scale))
        } else {
            round_to_odd_f32(x as f64 / scale)
        };
    } else {
        *c = plan.int_code(x as f64 / scale * plan.int_mul, mode);
    }
}

/// Scales one run of elements into `f32` (floats) or codes (integers).
/// `scale` is 0 for blocks that get zero codes (non-finite or zero scale).
fn scale_run(plan: &FastPlan, mode: Rounding, xs: &[f32], scale: f64, f: &mut [f32], c: &mut [u8]) {
    if scale <= 0.0 {
        f.fill(0.0);
        c.fill(0);
        return;
    }
    use crate::convert::{level, Level};
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: level() checked the features at run time.
        Level::Avx512 => unsafe { scale_mv::avx512(plan, mode, xs, scale, f, c) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: level() checked the features at run time.
        Level::Avx2 => unsafe { scale_mv::avx2(plan, mode, xs, scale, f, c) },
        _ => scale_mv::portable(plan, mode, xs, scale, f, c),
    }
}

// The same loops compiled per instruction set (rounding to integers and
// f64 <-> f32 conversions only vectorize with SSE4.1 and up).
mod scale_mv {
    use super::*;
    #[cfg(target_arch = "x86_64")]
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/CD.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512cd,avx2,fma")]
    pub unsafe fn avx512(
        p: &FastPlan,
        m: Rounding,
        xs: &[f32],
        s: f64,
        f: &mut [f32],
        c: &mut [u8],
    ) {
        scale_loop(p, m, xs, s, f, c)
    }
    #[cfg(target_arch = "x86_64")]
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(p: &FastPlan, m: Rounding, xs: &[f32], s: f64, f: &mut [f32], c: &mut [u8]) {
        scale_loop(p, m, xs, s, f, c)
    }
    pub fn portable(p: &FastPlan, m: Rounding, xs: &[f32], s: f64, f: &mut [f32], c: &mut [u8]) {
        scale_loop(p, m, xs, s, f, c)
    }
}

#[inline(always)]
fn scale_loop(
    plan: &FastPlan,
    mode: Rounding,
    xs: &[f32],
    scale: f64,
    f: &mut [f32],
    c: &mut [u8],
) {
    if plan.codec.is_some() {
        if plan.pow2 {
            // Exact: the reciprocal of a power of two is one, and the
            // product cannot leave the f64 normal range.
            let inv = 1.0 / scale;
            for (x, o) in xs.iter().zip(f.iter_mut()) {
                *o = round_to_odd_f32(*x as f64 * inv);
            }
        } else {
            for (x, o) in xs.iter().zip(f.iter_mut()) {
                *o = round_to_odd_f32(*x as f64 / scale);
            }
        }
        return;
    }
    let (hi, mask) = (plan.int_hi, plan.int_mask);
    // The reference computes (x / scale) * 2^frac: for power-of-two scales
    // multiplying by the exact reciprocal is the same value.
    let (mul, div) = if plan.pow2 {
        (plan.int_mul / scale, 1.0)
    } else {
        (plan.int_mul, scale)
    };
    macro_rules! run {
        ($round:expr) => {
            for (x, o) in xs.iter().zip(c.iter_mut()) {
                let v = if plan.pow2 {
                    *x as f64 * mul
                } else {
                    *x as f64 / div * mul
                };
                // |r| <= hi < 2^8 after the clamp: i32 holds it.
                let r: f64 = $round(v);
                *o = (r.clamp(-hi, hi) as i32 as u64 & mask) as u8;
            }
        };
    }
    match mode {
        Rounding::NearestEven => run!(f64::round_ties_even),
        Rounding::NearestAway => run!(f64::round),
        Rounding::TowardZero => run!(f64::trunc),
        Rounding::Up => run!(f64::ceil),
        Rounding::Down => run!(f64::floor),
    }
}

/// Quantizes `data` (row-major, of `shape`) in blocks along `axis`.
pub fn quantize(
    fmt: &BlockFormat,
    data: &[f32],
    shape: &[usize],
    axis: usize,
) -> Result<BlockQuantized, FormatError> {
    let g = geometry(fmt, data.len(), shape, axis)?;
    let Some(plan) = FastPlan::new(fmt) else {
        return quantize_reference(fmt, data, shape, axis);
    };
    let mut codes = vec![0u8; data.len()];
    let mut scales = vec![0u8; g.outer * g.blocks * g.inner];
    let elem_max = fmt.elem_max();
    let tensor_scale = tensor_scale_of(fmt, data, elem_max);
    let nan_scale = fmt.scale.nan_code().unwrap_or(0) as u8;
    let mode = fmt.rounding;
    // A block's scale code and the divisor for its elements (0: zero codes).
    let scale_of = |bits: u32| -> (u8, f64) {
        if bits >= 0x7f80_0000 {
            return (nan_scale, 0.0);
        }
        block_scale(fmt, f32::from_bits(bits) as f64, elem_max, tensor_scale)
    };
    if g.inner == 1 {
        // Blocks are consecutive runs of the flat array (row by row, the
        // last block of a row possibly short): scale runs of whole blocks
        // into a scratch buffer and bulk-encode each run.
        let cap = CHUNK.max(fmt.block);
        let mut buf = vec![0f32; cap.min(data.len())];
        let (mut run_start, mut pos) = (0usize, 0usize);
        let mut s_at = 0usize;
        for o in 0..g.outer {
            for k in 0..g.blocks {
                let start = o * g.len + k * fmt.block;
                let end = o * g.len + ((k + 1) * fmt.block).min(g.len);
                if pos + (end - start) > buf.len() {
                    flush(&plan, &buf[..pos], &mut codes[run_start..start])?;
                    run_start = start;
                    pos = 0;
                }
                let xs = &data[start..end];
                let (sc, scale) = scale_of(abs_bits_max(xs));
                scales[s_at] = sc;
                s_at += 1;
                let n = end - start;
                scale_run(
                    &plan,
                    mode,
                    xs,
                    scale,
                    &mut buf[pos..pos + n],
                    &mut codes[start..end],
                );
                pos += n;
            }
        }
        flush(&plan, &buf[..pos], &mut codes[run_start..run_start + pos])?;
    } else {
        // Blocks are strided: walk a block's rows, each a contiguous run of
        // `inner` elements with one scale per position.
        let mut amax = vec![0u32; g.inner];
        let mut blk_scale = vec![0f64; g.inner];
        let mut row = vec![0f32; g.inner];
        for o in 0..g.outer {
            for k in 0..g.blocks {
                let start = k * fmt.block;
                let end = (start + fmt.block).min(g.len);
                amax.fill(0);
                for a in start..end {
                    let at = (o * g.len + a) * g.inner;
                    for (m, x) in amax.iter_mut().zip(&data[at..at + g.inner]) {
                        *m = (*m).max(x.to_bits() & 0x7fff_ffff);
                    }
                }
                let s0 = (o * g.blocks + k) * g.inner;
                for i in 0..g.inner {
                    let (sc, scale) = scale_of(amax[i]);
                    scales[s0 + i] = sc;
                    blk_scale[i] = scale;
                }
                for a in start..end {
                    let at = (o * g.len + a) * g.inner;
                    let xs = &data[at..at + g.inner];
                    let cs = &mut codes[at..at + g.inner];
                    for (((x, s), f), c) in xs
                        .iter()
                        .zip(&blk_scale)
                        .zip(row.iter_mut())
                        .zip(cs.iter_mut())
                    {
                        scale_one(&plan, mode, *x, *s, f, c);
                    }
                    flush(&plan, &row, cs)?;
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

/// Encodes a run of scaled float elements (integers were written already).
fn flush(plan: &FastPlan, buf: &[f32], out: &mut [u8]) -> Result<(), FormatError> {
    match &plan.codec {
        Some(c) => c.encode(buf, out),
        None => Ok(()),
    }
}

/// Dequantizes a block-quantized tensor back to `f32` (row-major).
pub fn dequantize(q: &BlockQuantized) -> Result<Vec<f32>, FormatError> {
    let fmt = &q.format;
    let g = geometry(fmt, q.codes.len(), &q.shape, q.axis)?;
    if q.scales.len() != g.outer * g.blocks * g.inner {
        return dequantize_reference(q);
    }
    let mut lut = [0f64; 256];
    for (c, v) in lut.iter_mut().enumerate() {
        *v = fmt.decode_elem(c as u8);
    }
    let mut slut = [0f64; 256];
    for (c, v) in slut.iter_mut().enumerate() {
        *v = fmt.scale.decode(c as u64);
    }
    let t = q.tensor_scale as f64;
    let mut out = vec![0f32; q.codes.len()];
    // Same products in the same order as the reference: (elem * s) * t.
    if g.inner == 1 {
        let mut s_at = 0;
        for o in 0..g.outer {
            for k in 0..g.blocks {
                let start = o * g.len + k * fmt.block;
                let end = o * g.len + ((k + 1) * fmt.block).min(g.len);
                let s = slut[q.scales[s_at] as usize];
                s_at += 1;
                for (o, &c) in out[start..end].iter_mut().zip(&q.codes[start..end]) {
                    *o = (lut[c as usize] * s * t) as f32;
                }
            }
        }
    } else {
        for o in 0..g.outer {
            for a in 0..g.len {
                let at = (o * g.len + a) * g.inner;
                let s0 = (o * g.blocks + a / fmt.block) * g.inner;
                let ss = &q.scales[s0..s0 + g.inner];
                let cs = &q.codes[at..at + g.inner];
                for ((o, &c), &sc) in out[at..at + g.inner].iter_mut().zip(cs).zip(ss) {
                    *o = (lut[c as usize] * slut[sc as usize] * t) as f32;
                }
            }
        }
    }
    Ok(out)
}
