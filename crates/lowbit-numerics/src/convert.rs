//! Bulk conversion between `f32` slices and the codes of any element type.
//!
//! A [`Codec`] is built once per (element type, options) and then converts
//! whole slices:
//! * Float encoding runs a branch-free integer algorithm on the `f32` bit
//!   pattern (one lane per element: split, pick the binade, round the
//!   mantissa in the requested mode, rebuild the code, patch specials). The
//!   same lane code is compiled three times — for AVX-512, for AVX2 and for
//!   the baseline target — and the widest one the CPU supports is chosen at
//!   run time with `std::arch` feature detection; LLVM vectorizes the loop.
//!   It covers every float format with at most 8 exponent and 23 mantissa
//!   bits (all named formats but `f64`); others use the scalar encoder.
//! * Decoding uses a 256-entry table for formats of at most 8 bits, and for
//!   wider ones (f16, bf16, tf32, f32) places the fields into an `f32` and
//!   rescales by a power of two, which is exact for every format whose
//!   values are all `f32`s; other formats decode through `f64`.
//! * Integer and `b1` element types use the scalar encoder and a table or
//!   the scalar decoder.
//!
//! Every path is bit-exact with the scalar [`FloatFormat::encode_with`] /
//! [`FloatFormat::decode`] (NaNs decode to the quiet NaN `0x7fc00000` with
//! the code's sign); the tests check that exhaustively for decoding and on
//! every rounding boundary for encoding. Decoding a value that is not an
//! `f32` (from `f64` or wide custom formats) rounds it to nearest even.

use crate::format::{ElemType, FloatFormat, FloatKind, FormatError};
use crate::round::{EncodeOptions, Rounding};

/// A code container: `u8`, `u16`, `u32` or `u64`.
pub trait Code: Copy + Default + Send + Sync + 'static {
    /// Width of the container in bits.
    const BITS: u32;
    /// Truncates a 64-bit code into the container.
    fn from_u64(c: u64) -> Self;
    /// Widens the container to 64 bits.
    fn to_u64(self) -> u64;
    /// Truncates a 32-bit code into the container.
    fn from_u32(c: u32) -> Self;
    /// Widens (or truncates, for `u64`) the container to 32 bits.
    fn to_u32(self) -> u32;
}

macro_rules! impl_code {
    ($t:ty, $b:expr) => {
        impl Code for $t {
            const BITS: u32 = $b;
            #[inline(always)]
            fn from_u64(c: u64) -> Self {
                c as $t
            }
            #[inline(always)]
            fn to_u64(self) -> u64 {
                self as u64
            }
            #[inline(always)]
            fn from_u32(c: u32) -> Self {
                c as $t
            }
            #[inline(always)]
            fn to_u32(self) -> u32 {
                self as u32
            }
        }
    };
}
impl_code!(u8, 8);
impl_code!(u16, 16);
impl_code!(u32, 32);
impl_code!(u64, 64);

/// Constants of the vector float encoder, all as 32-bit integers.
#[derive(Clone, Copy, Debug)]
struct EncParams {
    m: i32,
    emin: i32,
    emax: i32,
    max_code: u32,
    sign_bit: u32,
    /// Codes for NaN and for unclamped overflow, for + and - inputs.
    nan: [u32; 2],
    ovf: [u32; 2],
    saturate: bool,
    flush: bool,
    subnormals: bool,
    fnuz: bool,
    /// No zero, no negatives (FNU): zero and negatives give `nan` (or 0).
    unsigned: bool,
    /// Nearest-even shortcut (see `encode_lane_ne`), when the format allows.
    fast_ne: bool,
    /// `f32` bits of 2^emin: smaller magnitudes are (format) subnormals.
    small: u32,
    /// `f32` bits of 2^(emin - m + 23), whose ulp is the subnormal quantum.
    magic: u32,
    /// Added to `f32` bits to move the exponent to the format's bias.
    rebias: u32,
}

/// Constants of the arithmetic decoder for wide formats.
#[derive(Clone, Copy, Debug)]
struct DecParams {
    m: u32,
    mag_mask: u32,
    sign_shift: u32,
    signed: bool,
    scale: f32,
    kind: FloatKind,
    all_exp: u32,
}

#[derive(Clone, Debug)]
enum DecodePlan {
    Table(Box<[f32; 256]>),
    Fields(DecParams),
    Scalar,
}

/// A prepared converter between `f32` and one element type.
#[derive(Clone, Debug)]
pub struct Codec {
    elem: ElemType,
    opts: EncodeOptions,
    enc: Option<EncParams>,
    dec: DecodePlan,
}

/// The widest instruction set the bulk converters use on this CPU.
pub fn simd_level() -> &'static str {
    match level() {
        Level::Avx512 => "avx512",
        Level::Avx2 => "avx2",
        Level::Portable => "portable",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Avx512,
    Avx2,
    Portable,
}

pub(crate) fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512cd")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Level::Avx2;
        }
    }
    Level::Portable
}

impl Codec {
    /// Prepares conversions for `elem` with the given encoding options.
    pub fn new(elem: ElemType, opts: EncodeOptions) -> Codec {
        let (enc, dec) = match elem {
            ElemType::Float(f) => (enc_params(&f, &opts), dec_plan(&f)),
            _ if elem.bits() <= 8 => (None, DecodePlan::Table(table(&elem))),
            _ => (None, DecodePlan::Scalar),
        };
        Codec {
            elem,
            opts,
            enc,
            dec,
        }
    }

    /// The element type.
    pub fn elem(&self) -> ElemType {
        self.elem
    }

    /// The encoding options.
    pub fn options(&self) -> EncodeOptions {
        self.opts
    }

    /// Whether encoding uses the vector path (else the scalar encoder).
    pub fn is_vectorized(&self) -> bool {
        self.enc.is_some()
    }

    fn check<C: Code>(&self, what: &str, n_in: usize, n_out: usize) -> Result<(), FormatError> {
        if self.elem.bits() > C::BITS {
            return Err(FormatError(format!(
                "{what} {}: {}-bit codes do not fit a {}-bit container",
                self.elem,
                self.elem.bits(),
                C::BITS
            )));
        }
        if n_in != n_out {
            return Err(FormatError(format!(
                "{what} {}: {n_in} inputs but {n_out} outputs",
                self.elem
            )));
        }
        Ok(())
    }

    /// Encodes `xs` into `out` (same length; the container must hold the
    /// element's bits).
    pub fn encode<C: Code>(&self, xs: &[f32], out: &mut [C]) -> Result<(), FormatError> {
        self.check::<C>("encode to", xs.len(), out.len())?;
        match &self.enc {
            Some(p) => encode_dispatch(p, self.opts.rounding, xs, out),
            None => {
                for (x, o) in xs.iter().zip(out.iter_mut()) {
                    *o = C::from_u64(self.elem.encode_with(*x as f64, &self.opts));
                }
            }
        }
        Ok(())
    }

    /// Decodes `codes` into `out` (same length). Bits above the element's
    /// width are ignored.
    pub fn decode<C: Code>(&self, codes: &[C], out: &mut [f32]) -> Result<(), FormatError> {
        self.check::<C>("decode from", codes.len(), out.len())?;
        let mask = self.elem.code_mask();
        match &self.dec {
            DecodePlan::Table(t) => decode_table_dispatch(t, codes, out),
            DecodePlan::Fields(p) => decode_fields_dispatch(p, codes, out),
            DecodePlan::Scalar => {
                for (c, o) in codes.iter().zip(out.iter_mut()) {
                    *o = scalar_decode_f32(&self.elem, c.to_u64() & mask);
                }
            }
        }
        Ok(())
    }

    /// The scalar reference of [`Codec::decode`] for one code.
    pub fn decode_one(&self, code: u64) -> f32 {
        scalar_decode_f32(&self.elem, code & self.elem.code_mask())
    }
}

/// Decodes one code to `f32` the way every bulk path does: the exact value
/// rounded to nearest even, NaN as the quiet NaN with the code's sign.
pub fn scalar_decode_f32(elem: &ElemType, code: u64) -> f32 {
    let v = elem.decode(code);
    if v.is_nan() {
        f32::from_bits(0x7fc0_0000 | ((v.is_sign_negative() as u32) << 31))
    } else {
        v as f32
    }
}

fn table(elem: &ElemType) -> Box<[f32; 256]> {
    let mut t = Box::new([0f32; 256]);
    let mask = elem.code_mask();
    for (c, v) in t.iter_mut().enumerate() {
        *v = scalar_decode_f32(elem, c as u64 & mask);
    }
    t
}

fn enc_params(f: &FloatFormat, opts: &EncodeOptions) -> Option<EncParams> {
    if f.exp_bits() > 8 || f.man_bits() > 23 {
        return None;
    }
    let signed = f.is_signed();
    let sign_bit = if signed { 1u32 << (f.bits() - 1) } else { 0 };
    // Specials come from the scalar encoder, so both paths share them.
    let sc = |x: f64, sat: bool| f.encode(x, Rounding::NearestEven, sat) as u32;
    let (emin, m) = (f.emin(), f.man_bits() as i32);
    let fast_ne = f.has_subnormals() && emin >= -126 && emin - m + 23 <= 127;
    let f32_pow2 = |e: i32| {
        if (-126..=127).contains(&e) {
            ((e + 127) as u32) << 23
        } else {
            0
        }
    };
    Some(EncParams {
        fast_ne,
        small: f32_pow2(emin),
        magic: f32_pow2(emin - m + 23),
        rebias: ((f.bias() - 127) as u32).wrapping_shl(23),
        m: f.man_bits() as i32,
        emin: f.emin(),
        emax: f.emax(),
        max_code: f.max_finite_code() as u32,
        sign_bit,
        nan: [sc(f64::NAN, false), sc(-f64::NAN, false)],
        ovf: [sc(f64::INFINITY, false), sc(f64::NEG_INFINITY, false)],
        saturate: opts.saturate,
        flush: opts.flush_subnormals,
        subnormals: f.has_subnormals(),
        fnuz: f.kind() == FloatKind::Fnuz,
        unsigned: !signed,
    })
}

fn dec_plan(f: &FloatFormat) -> DecodePlan {
    if f.bits() <= 8 {
        return DecodePlan::Table(table(&ElemType::Float(*f)));
    }
    let fits_f32 = f.exp_bits() <= 8
        && f.man_bits() <= 23
        && f.has_subnormals()
        && f.emax() <= 127
        && f.emin() - f.man_bits() as i32 >= -149
        && (-126..=127).contains(&(127 - f.bias()));
    if !fits_f32 {
        return DecodePlan::Scalar;
    }
    let m = f.man_bits() as u32;
    let e = f.exp_bits() as u32;
    DecodePlan::Fields(DecParams {
        m,
        mag_mask: (1u32 << (e + m)) - 1,
        sign_shift: e + m,
        signed: f.is_signed(),
        scale: f32::from_bits(((127 - f.bias() + 127) as u32) << 23),
        kind: f.kind(),
        all_exp: (1u32 << e) - 1,
    })
}

const NE: u8 = 0;
const NA: u8 = 1;
const TZ: u8 = 2;
const UP: u8 = 3;
const DN: u8 = 4;

/// Encodes one `f32` bit pattern; branch-free apart from loop-invariant
/// tests on `p` and `MODE`.
#[inline(always)]
fn encode_lane<const MODE: u8>(p: &EncParams, b: u32) -> u32 {
    let neg = b >> 31;
    let a = b & 0x7fff_ffff;
    let exp = (a >> 23) as i32;
    let frac = a & 0x007f_ffff;
    let ee = exp.max(1);
    let mant = frac | (((exp != 0) as u32) << 23);
    // floor(log2 |x|) = bit length of mant - 1 + ee - 150.
    let lg = 31 - mant.leading_zeros() as i32 + ee - 150;
    let e = lg.max(p.emin);
    let shift = e - p.m - ee + 150;
    let rs = shift.clamp(0, 31) as u32;
    let ls = (-shift).clamp(0, 31) as u32;
    let q = (mant >> rs) << ls;
    let rem = mant & ((1u32 << rs) - 1);
    let half = (1u32 << rs) >> 1;
    let inexact = rem != 0;
    let up = match MODE {
        NE => rem > half || (rem == half && inexact && q & 1 == 1),
        NA => inexact && rem >= half,
        TZ => false,
        UP => inexact && neg == 0,
        _ => inexact && neg == 1,
    };
    let n = q.wrapping_add(up as u32);
    let base = ((e - p.emin) as u32).wrapping_shl(p.m as u32);
    let mut mag = base.wrapping_add(n);
    if !p.subnormals {
        let hidden = 1u32 << p.m;
        mag = mag.saturating_sub(hidden);
    }
    finish::<MODE>(p, neg, a, e > p.emax + 1, mag)
}

/// Nearest-even for formats with subnormals whose range fits `f32`'s: the
/// format's subnormal range is rounded by the FPU (adding a constant whose
/// ulp is the format's subnormal quantum, in the default nearest-even
/// mode), and the normal range by rebiasing the exponent and adding the
/// round-to-nearest-even increment to the bit pattern.
#[inline(always)]
fn encode_lane_ne(p: &EncParams, b: u32) -> u32 {
    let neg = b >> 31;
    let a = b & 0x7fff_ffff;
    let s = 23 - p.m as u32;
    let sub = (f32::from_bits(a) + f32::from_bits(p.magic))
        .to_bits()
        .wrapping_sub(p.magic);
    let r = a.wrapping_add(p.rebias);
    let inc = if s == 0 {
        0
    } else {
        (1u32 << (s - 1)) - 1 + ((r >> s) & 1)
    };
    let norm = r.wrapping_add(inc) >> s;
    let is_small = a < p.small;
    let mag = if is_small { sub } else { norm };
    // Exponents far above the range make `norm` wrap; catch them first.
    let huge = !is_small && (a >> 23) as i32 - 127 > p.emax + 1;
    finish::<NE>(p, neg, a, huge, mag)
}

/// `v[neg]` as a select: indexing by a lane value would become a gather.
#[inline(always)]
fn pick(neg: u32, v: [u32; 2]) -> u32 {
    if neg == 1 {
        v[1]
    } else {
        v[0]
    }
}

/// Overflow, specials, flushing and the sign, shared by both lanes.
#[inline(always)]
fn finish<const MODE: u8>(p: &EncParams, neg: u32, a: u32, huge: bool, mag: u32) -> u32 {
    let mut mag = mag;
    let is_nan = a > 0x7f80_0000;
    let is_inf = a == 0x7f80_0000;
    let truncating = match MODE {
        TZ => true,
        UP => neg == 1,
        DN => neg == 0,
        _ => false,
    };
    let sign = if neg == 1 { p.sign_bit } else { 0 };
    let overflow = huge || mag > p.max_code;
    let clamped = sign | p.max_code;
    let ovf_code = if p.saturate || truncating {
        clamped
    } else {
        pick(neg, p.ovf)
    };
    if p.flush && p.subnormals && mag < (1u32 << p.m) {
        mag = 0;
    }
    let zero_result = mag == 0 && p.fnuz;
    let mut r = if zero_result { 0 } else { sign | mag };
    r = if overflow { ovf_code } else { r };
    r = if is_inf {
        if p.saturate {
            clamped
        } else {
            pick(neg, p.ovf)
        }
    } else {
        r
    };
    if p.unsigned {
        let bad = neg == 1 || a == 0;
        let fill = if p.saturate { 0 } else { p.nan[0] };
        r = if bad && !is_nan { fill } else { r };
    }
    if is_nan {
        pick(neg, p.nan)
    } else {
        r
    }
}

#[inline(always)]
fn encode_loop<const MODE: u8, C: Code>(p: &EncParams, xs: &[f32], out: &mut [C]) {
    if MODE == NE && p.fast_ne {
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            *o = C::from_u32(encode_lane_ne(p, x.to_bits()));
        }
        return;
    }
    for (x, o) in xs.iter().zip(out.iter_mut()) {
        *o = C::from_u32(encode_lane::<MODE>(p, x.to_bits()));
    }
}

// Generic parameter lists are spelled out per use, so each wrapper names them.
mod enc_mv {
    use super::*;
    #[cfg(target_arch = "x86_64")]
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/CD.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512cd,avx2,fma,bmi2")]
    pub unsafe fn avx512<const MODE: u8, C: Code>(p: &EncParams, xs: &[f32], out: &mut [C]) {
        encode_loop::<MODE, C>(p, xs, out)
    }
    #[cfg(target_arch = "x86_64")]
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma,bmi2")]
    pub unsafe fn avx2<const MODE: u8, C: Code>(p: &EncParams, xs: &[f32], out: &mut [C]) {
        encode_loop::<MODE, C>(p, xs, out)
    }
    pub fn portable<const MODE: u8, C: Code>(p: &EncParams, xs: &[f32], out: &mut [C]) {
        encode_loop::<MODE, C>(p, xs, out)
    }
}

fn encode_mode<const MODE: u8, C: Code>(p: &EncParams, xs: &[f32], out: &mut [C]) {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: level() checked the features at run time.
        Level::Avx512 => unsafe { enc_mv::avx512::<MODE, C>(p, xs, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: level() checked the features at run time.
        Level::Avx2 => unsafe { enc_mv::avx2::<MODE, C>(p, xs, out) },
        _ => enc_mv::portable::<MODE, C>(p, xs, out),
    }
}

fn encode_dispatch<C: Code>(p: &EncParams, mode: Rounding, xs: &[f32], out: &mut [C]) {
    match mode {
        Rounding::NearestEven => encode_mode::<NE, C>(p, xs, out),
        Rounding::NearestAway => encode_mode::<NA, C>(p, xs, out),
        Rounding::TowardZero => encode_mode::<TZ, C>(p, xs, out),
        Rounding::Up => encode_mode::<UP, C>(p, xs, out),
        Rounding::Down => encode_mode::<DN, C>(p, xs, out),
    }
}

#[inline(always)]
fn decode_table_loop<C: Code>(t: &[f32; 256], codes: &[C], out: &mut [f32]) {
    for (c, o) in codes.iter().zip(out.iter_mut()) {
        *o = t[(c.to_u32() & 0xff) as usize];
    }
}

#[inline(always)]
fn decode_fields_lane(p: &DecParams, c: u32) -> f32 {
    let mag = c & p.mag_mask;
    let neg = p.signed && (c >> p.sign_shift) & 1 == 1;
    let sign = (neg as u32) << 31;
    let v = f32::from_bits(mag << (23 - p.m)) * p.scale;
    let exp = mag >> p.m;
    let is_nan = match p.kind {
        FloatKind::Ieee => exp == p.all_exp && mag & ((1 << p.m) - 1) != 0,
        FloatKind::FiniteNan | FloatKind::UnsignedFiniteNan => mag == p.mag_mask,
        FloatKind::Fnuz => neg && mag == 0,
        FloatKind::Finite => false,
    };
    let is_inf = p.kind == FloatKind::Ieee && exp == p.all_exp && !is_nan;
    let bits = if is_nan {
        0x7fc0_0000
    } else if is_inf {
        0x7f80_0000
    } else {
        v.to_bits()
    };
    f32::from_bits(bits | sign)
}

#[inline(always)]
fn decode_fields_loop<C: Code>(p: &DecParams, codes: &[C], out: &mut [f32]) {
    for (c, o) in codes.iter().zip(out.iter_mut()) {
        *o = decode_fields_lane(p, c.to_u32());
    }
}

macro_rules! dispatch2 {
    ($mv:ident, $loop:ident, $p:ty) => {
        mod $mv {
            use super::*;
            #[cfg(target_arch = "x86_64")]
            /// # Safety
            /// The CPU must support AVX-512 F/BW/VL/CD.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512cd,avx2,fma,bmi2")]
            pub unsafe fn avx512<C: Code>(p: &$p, codes: &[C], out: &mut [f32]) {
                $loop::<C>(p, codes, out)
            }
            #[cfg(target_arch = "x86_64")]
            /// # Safety
            /// The CPU must support AVX2.
            #[target_feature(enable = "avx2,fma,bmi2")]
            pub unsafe fn avx2<C: Code>(p: &$p, codes: &[C], out: &mut [f32]) {
                $loop::<C>(p, codes, out)
            }
            pub fn portable<C: Code>(p: &$p, codes: &[C], out: &mut [f32]) {
                $loop::<C>(p, codes, out)
            }
        }
    };
}
dispatch2!(dec_table_mv, decode_table_loop, [f32; 256]);
dispatch2!(dec_fields_mv, decode_fields_loop, DecParams);

fn decode_table_dispatch<C: Code>(t: &[f32; 256], codes: &[C], out: &mut [f32]) {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: level() checked the features at run time.
        Level::Avx512 => unsafe { dec_table_mv::avx512(t, codes, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: level() checked the features at run time.
        Level::Avx2 => unsafe { dec_table_mv::avx2(t, codes, out) },
        _ => dec_table_mv::portable(t, codes, out),
    }
}

fn decode_fields_dispatch<C: Code>(p: &DecParams, codes: &[C], out: &mut [f32]) {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: level() checked the features at run time.
        Level::Avx512 => unsafe { dec_fields_mv::avx512(p, codes, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: level() checked the features at run time.
        Level::Avx2 => unsafe { dec_fields_mv::avx2(p, codes, out) },
        _ => dec_fields_mv::portable(p, codes, out),
    }
}

/// Runs the encoder at a chosen level (for tests and benches); falls back to
/// the portable path when the CPU lacks the level.
#[doc(hidden)]
pub fn encode_at_level<C: Code>(
    codec: &Codec,
    level_name: &str,
    xs: &[f32],
    out: &mut [C],
) -> Result<(), FormatError> {
    codec.check::<C>("encode to", xs.len(), out.len())?;
    let Some(p) = &codec.enc else {
        return codec.encode(xs, out);
    };
    let want = match level_name {
        "avx512" => Level::Avx512,
        "avx2" => Level::Avx2,
        _ => Level::Portable,
    };
    let have = level();
    let usable = match (want, have) {
        (Level::Avx512, Level::Avx512) => Level::Avx512,
        (Level::Avx2, Level::Avx512 | Level::Avx2) => Level::Avx2,
        _ => Level::Portable,
    };
    macro_rules! go {
        ($m:expr) => {
            match usable {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: level() checked the features at run time.
                Level::Avx512 => unsafe { enc_mv::avx512::<{ $m }, C>(p, xs, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: level() checked the features at run time.
                Level::Avx2 => unsafe { enc_mv::avx2::<{ $m }, C>(p, xs, out) },
                _ => enc_mv::portable::<{ $m }, C>(p, xs, out),
            }
        };
    }
    match codec.opts.rounding {
        Rounding::NearestEven => go!(NE),
        Rounding::NearestAway => go!(NA),
        Rounding::TowardZero => go!(TZ),
        Rounding::Up => go!(UP),
        Rounding::Down => go!(DN),
    }
    Ok(())
}
