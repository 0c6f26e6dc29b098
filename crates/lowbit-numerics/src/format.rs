//! Element types: integers of any width, bipolar `b1`, and parametric floats.
//!
//! Spellings follow MLIR (`i3`, `u4`, `f8E4M3FN`, `f6E3M2FN`, `bf16`, ...).
//! Custom floats are written `fE<e>M<m>[B<bias>][<kind>]`, where `<kind>` is
//! empty (IEEE-like: infinities and NaNs), `FN` (no infinities, NaN is the
//! all-ones pattern), `FNUZ` (no infinities, no negative zero, NaN is the
//! negative-zero pattern), `F` (finite only: no infinities, no NaN) or `FNU`
//! (unsigned, no zero, NaN is all ones). The bias defaults to `2^(e-1)-1`
//! (`2^(e-1)` for `FNUZ`). A custom format equal to a named one prints with
//! the name. Formats are limited to those whose every value is an `f64`
//! (at most 11 exponent and 52 mantissa bits, and a bias keeping the range
//! inside f64's); anything else is a [`FormatError`] naming the format.
//!
//! Conversion conventions (non-saturating encoding equals `ml_dtypes`'
//! casts, checked exhaustively by the tests):
//! * Overflow without saturation: infinity (IEEE kinds), NaN with the
//!   value's sign (`FN`), the single NaN (`FNUZ`, `FNU`), the largest finite
//!   value (finite-only `F` kinds, e.g. `f4E2M1FN`, `f6*`). Rounding modes
//!   that never increase the magnitude give the largest finite value.
//! * NaN input: the format's NaN (sign kept for IEEE/`FN`); finite-only
//!   formats give zero with the NaN's sign bit inverted, as `ml_dtypes` does.
//! * `f8E8M0FNU`: zero, negatives and NaN give NaN (0xff); values below
//!   2^-127 give 2^-127; ties round to the larger power of two (the
//!   significand 1.5 rounds to 2). `ml_dtypes` rounds every value in
//!   (2^-127, 1.5 * 2^-127) up to 2^-126 (an artifact of going through f32
//!   denormals); lowbit rounds those to nearest, 2^-127.
//! * Saturating (our choice; `ml_dtypes` has no such mode): infinities and
//!   overflows clamp to the largest finite value of that sign; NaN stays
//!   NaN; for `f8E8M0FNU` zero and negatives clamp to the smallest value.

use crate::round::{
    decompose, round_f64_to_i128_spec, round_shift_right_spec, EncodeOptions, Overflow, RoundSpec,
    Rounding,
};
use std::fmt;
use std::str::FromStr;

/// Why a format or element type is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormatError {}

/// Which special values a float format has and how they are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FloatKind {
    /// IEEE 754 style: the all-ones exponent encodes infinities and NaNs.
    Ieee,
    /// No infinities; only the all-ones exponent-and-mantissa pattern is NaN (`f8E4M3FN`).
    FiniteNan,
    /// No infinities, no negative zero; NaN is the negative-zero pattern (`f8E4M3FNUZ`).
    Fnuz,
    /// Finite only: no infinities and no NaN (`f4E2M1FN`, `f6E3M2FN`).
    Finite,
    /// Unsigned, no zero and no subnormals; all ones is NaN (`f8E8M0FNU`).
    UnsignedFiniteNan,
}

impl FloatKind {
    fn suffix(self) -> &'static str {
        match self {
            FloatKind::Ieee => "",
            FloatKind::FiniteNan => "FN",
            FloatKind::Fnuz => "FNUZ",
            FloatKind::Finite => "F",
            FloatKind::UnsignedFiniteNan => "FNU",
        }
    }
}

/// A binary floating-point format: sign (unless unsigned), exponent and mantissa fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FloatFormat {
    exp_bits: u8,
    man_bits: u8,
    bias: i32,
    kind: FloatKind,
}

impl FloatFormat {
    /// IEEE half precision.
    pub const F16: FloatFormat = FloatFormat::raw(5, 10, 15, FloatKind::Ieee);
    /// bfloat16.
    pub const BF16: FloatFormat = FloatFormat::raw(8, 7, 127, FloatKind::Ieee);
    /// NVIDIA TensorFloat-32 (19 significant bits).
    pub const TF32: FloatFormat = FloatFormat::raw(8, 10, 127, FloatKind::Ieee);
    /// IEEE single precision.
    pub const F32: FloatFormat = FloatFormat::raw(8, 23, 127, FloatKind::Ieee);
    /// IEEE double precision.
    pub const F64: FloatFormat = FloatFormat::raw(11, 52, 1023, FloatKind::Ieee);
    /// OCP FP8 E4M3 (no infinities).
    pub const F8E4M3FN: FloatFormat = FloatFormat::raw(4, 3, 7, FloatKind::FiniteNan);
    /// FP8 E4M3 with unsigned zero (Graphcore/AMD).
    pub const F8E4M3FNUZ: FloatFormat = FloatFormat::raw(4, 3, 8, FloatKind::Fnuz);
    /// OCP FP8 E5M2 (IEEE-like).
    pub const F8E5M2: FloatFormat = FloatFormat::raw(5, 2, 15, FloatKind::Ieee);
    /// FP8 E5M2 with unsigned zero.
    pub const F8E5M2FNUZ: FloatFormat = FloatFormat::raw(5, 2, 16, FloatKind::Fnuz);
    /// OCP MX FP6 E2M3.
    pub const F6E2M3FN: FloatFormat = FloatFormat::raw(2, 3, 1, FloatKind::Finite);
    /// OCP MX FP6 E3M2.
    pub const F6E3M2FN: FloatFormat = FloatFormat::raw(3, 2, 3, FloatKind::Finite);
    /// OCP MX FP4 E2M1.
    pub const F4E2M1FN: FloatFormat = FloatFormat::raw(2, 1, 1, FloatKind::Finite);
    /// OCP MX shared scale: unsigned powers of two.
    pub const F8E8M0FNU: FloatFormat = FloatFormat::raw(8, 0, 127, FloatKind::UnsignedFiniteNan);

    /// Formats that have a name of their own, with that name.
    pub const NAMED: [(&'static str, FloatFormat); 13] = [
        ("f16", Self::F16),
        ("bf16", Self::BF16),
        ("tf32", Self::TF32),
        ("f32", Self::F32),
        ("f64", Self::F64),
        ("f8E4M3FN", Self::F8E4M3FN),
        ("f8E4M3FNUZ", Self::F8E4M3FNUZ),
        ("f8E5M2", Self::F8E5M2),
        ("f8E5M2FNUZ", Self::F8E5M2FNUZ),
        ("f6E2M3FN", Self::F6E2M3FN),
        ("f6E3M2FN", Self::F6E3M2FN),
        ("f4E2M1FN", Self::F4E2M1FN),
        ("f8E8M0FNU", Self::F8E8M0FNU),
    ];

    const fn raw(exp_bits: u8, man_bits: u8, bias: i32, kind: FloatKind) -> FloatFormat {
        FloatFormat {
            exp_bits,
            man_bits,
            bias,
            kind,
        }
    }

    /// The default bias for a kind: `2^(e-1) - 1`, or `2^(e-1)` for FNUZ.
    pub fn default_bias(exp_bits: u8, kind: FloatKind) -> i32 {
        let b = 1i32 << (exp_bits.clamp(1, 11) - 1);
        if kind == FloatKind::Fnuz {
            b
        } else {
            b - 1
        }
    }

    /// Builds and validates a format.
    pub fn new(
        exp_bits: u8,
        man_bits: u8,
        bias: i32,
        kind: FloatKind,
    ) -> Result<FloatFormat, FormatError> {
        let f = FloatFormat::raw(exp_bits, man_bits, bias, kind);
        let name = f.to_string();
        if exp_bits == 0 {
            return Err(FormatError(format!(
                "float format {name}: needs at least one exponent bit"
            )));
        }
        if exp_bits > 11 || man_bits > 52 {
            return Err(FormatError(format!(
                "float format {name}: at most 11 exponent and 52 mantissa bits are supported"
            )));
        }
        if kind == FloatKind::Ieee && (exp_bits < 2 || man_bits < 1) {
            return Err(FormatError(format!(
                "float format {name}: infinities and NaNs need at least 2 exponent bits and 1 mantissa bit"
            )));
        }
        if kind == FloatKind::FiniteNan && exp_bits + man_bits < 2 {
            return Err(FormatError(format!(
                "float format {name}: too narrow to reserve a NaN encoding"
            )));
        }
        if bias.unsigned_abs() > 4096 {
            return Err(FormatError(format!(
                "float format {name}: bias {bias} is out of range"
            )));
        }
        // Decoding to f64 must be exact: every finite value has to be an f64.
        if f.emax() > 1023 || f.emin() - (man_bits as i32) < -1074 {
            return Err(FormatError(format!(
                "float format {name}: bias {bias} puts values outside the f64 range (exponents {}..={})",
                f.emin() - man_bits as i32,
                f.emax()
            )));
        }
        Ok(f)
    }

    /// Exponent field width.
    pub fn exp_bits(&self) -> u8 {
        self.exp_bits
    }
    /// Mantissa (fraction) field width.
    pub fn man_bits(&self) -> u8 {
        self.man_bits
    }
    /// Exponent bias.
    pub fn bias(&self) -> i32 {
        self.bias
    }
    /// Special-value variant.
    pub fn kind(&self) -> FloatKind {
        self.kind
    }
    /// Whether there is a sign bit.
    pub fn is_signed(&self) -> bool {
        self.kind != FloatKind::UnsignedFiniteNan
    }
    /// Total storage width in bits.
    pub fn bits(&self) -> u32 {
        self.exp_bits as u32 + self.man_bits as u32 + self.is_signed() as u32
    }
    /// Whether infinities exist.
    pub fn has_inf(&self) -> bool {
        self.kind == FloatKind::Ieee
    }
    /// Whether NaN exists.
    pub fn has_nan(&self) -> bool {
        self.kind != FloatKind::Finite
    }
    /// Whether the all-zero exponent field encodes zero and subnormals.
    pub fn has_subnormals(&self) -> bool {
        self.kind != FloatKind::UnsignedFiniteNan
    }

    fn sign_bit(&self) -> u64 {
        if self.is_signed() {
            1u64 << (self.exp_bits + self.man_bits)
        } else {
            0
        }
    }

    /// Largest magnitude code (sign bit clear) that encodes a finite value.
    pub fn max_finite_code(&self) -> u64 {
        let all = (1u64 << (self.exp_bits + self.man_bits)) - 1;
        match self.kind {
            FloatKind::Ieee => all - (1u64 << self.man_bits),
            FloatKind::FiniteNan | FloatKind::UnsignedFiniteNan => all - 1,
            FloatKind::Fnuz | FloatKind::Finite => all,
        }
    }

    /// The canonical NaN code, if the format has NaN.
    pub fn nan_code(&self) -> Option<u64> {
        let all = (1u64 << (self.exp_bits + self.man_bits)) - 1;
        match self.kind {
            // quiet NaN: all-ones exponent, top mantissa bit set
            FloatKind::Ieee => Some(
                (((1u64 << self.exp_bits) - 1) << self.man_bits) | (1u64 << (self.man_bits - 1)),
            ),
            FloatKind::FiniteNan | FloatKind::UnsignedFiniteNan => Some(all),
            FloatKind::Fnuz => Some(self.sign_bit()),
            FloatKind::Finite => None,
        }
    }

    /// Positive infinity's code, if the format has infinities.
    pub fn inf_code(&self) -> Option<u64> {
        self.has_inf()
            .then(|| ((1u64 << self.exp_bits) - 1) << self.man_bits)
    }

    /// Decodes a code to its exact value.
    pub fn decode(&self, code: u64) -> f64 {
        let m = self.man_bits as u32;
        let sign = self.is_signed() && code & self.sign_bit() != 0;
        let mag = code & ((1u64 << (self.exp_bits as u32 + m)) - 1);
        let exp_field = (mag >> m) as i32;
        let frac = mag & ((1u64 << m) - 1);
        let all_exp = (1i32 << self.exp_bits) - 1;
        let v = match self.kind {
            FloatKind::Ieee if exp_field == all_exp => {
                if frac == 0 {
                    f64::INFINITY
                } else {
                    f64::NAN
                }
            }
            FloatKind::FiniteNan | FloatKind::UnsignedFiniteNan
                if mag == (1u64 << (self.exp_bits as u32 + m)) - 1 =>
            {
                f64::NAN
            }
            FloatKind::Fnuz if sign && mag == 0 => f64::NAN,
            FloatKind::UnsignedFiniteNan => {
                pow2(exp_field - self.bias) * (1.0 + frac as f64 * pow2(-(m as i32)))
            }
            _ if exp_field == 0 => frac as f64 * pow2(1 - self.bias - m as i32),
            _ => ((1u64 << m) | frac) as f64 * pow2(exp_field - self.bias - m as i32),
        };
        if sign {
            -v
        } else {
            v
        }
    }

    /// Encodes a value, rounding once in `mode`.
    ///
    /// With `saturate`, values beyond the largest finite value (infinities
    /// included) clamp to it; otherwise they become infinity where the format
    /// has one, else NaN where it has one, else the largest finite value.
    /// Directed modes that round toward zero give the largest finite value
    /// for finite overflows, as IEEE 754 does. NaN keeps its sign where the
    /// format's NaN has one; finite-only formats (`f4E2M1FN`, `f6*`) turn NaN
    /// into a zero whose sign is the inverse of the NaN's, as `ml_dtypes`
    /// does. See [`FloatFormat::encode_with`] for the full rules.
    pub fn encode(&self, x: f64, mode: Rounding, saturate: bool) -> u64 {
        self.encode_spec(x, RoundSpec::Mode(mode), saturate, false)
    }

    /// Encodes a value with every option spelled out.
    ///
    /// Rules beyond [`FloatFormat::encode`]:
    /// * Formats without zero (`f8E8M0FNU`): zero and negative values are
    ///   NaN, or the smallest value (code 0) when saturating; positive values
    ///   below the smallest value become the smallest value in every mode.
    /// * With `flush_subnormals`, a result that would be a non-zero subnormal
    ///   becomes zero of the same sign (positive zero for FNUZ formats).
    pub fn encode_with(&self, x: f64, opts: &EncodeOptions) -> u64 {
        self.encode_spec(
            x,
            RoundSpec::Mode(opts.rounding),
            opts.saturate,
            opts.flush_subnormals,
        )
    }

    /// Encodes a value with stochastic rounding: the magnitude is rounded up
    /// with probability `floor(f * 2^bits) / 2^bits`, where `f` is the
    /// fraction of the way from the lower to the upper neighbour, by adding
    /// the low `bits` bits of `random` below the kept bits and truncating.
    /// `bits` must be 1..=64 (it is clamped into that range).
    pub fn encode_stochastic(&self, x: f64, random: u64, bits: u32, saturate: bool) -> u64 {
        self.encode_spec(x, RoundSpec::stochastic(random, bits), saturate, false)
    }

    /// The code an overflow produces when the rounded result is not clamped.
    fn overflow_code(&self, sign: u64) -> u64 {
        match self.kind {
            FloatKind::Ieee => sign | (((1u64 << self.exp_bits) - 1) << self.man_bits),
            FloatKind::FiniteNan => sign | self.all_ones(),
            FloatKind::Fnuz => self.sign_bit(),
            FloatKind::UnsignedFiniteNan => self.all_ones(),
            FloatKind::Finite => sign | self.max_finite_code(),
        }
    }

    fn all_ones(&self) -> u64 {
        (1u64 << (self.exp_bits as u32 + self.man_bits as u32)) - 1
    }

    /// The encoder behind every public entry point.
    pub(crate) fn encode_spec(&self, x: f64, spec: RoundSpec, saturate: bool, flush: bool) -> u64 {
        let neg = x.is_sign_negative();
        let sign = if neg { self.sign_bit() } else { 0 };
        if x.is_nan() {
            return match self.kind {
                FloatKind::Ieee | FloatKind::FiniteNan => sign | self.nan_code().unwrap_or(0),
                FloatKind::Fnuz | FloatKind::UnsignedFiniteNan => self.nan_code().unwrap_or(0),
                // ml_dtypes' convention: the NaN's sign bit, inverted, on zero.
                FloatKind::Finite => {
                    if neg {
                        0
                    } else {
                        self.sign_bit()
                    }
                }
            };
        }
        if !self.is_signed() && (neg || x == 0.0) {
            return if saturate { 0 } else { self.all_ones() };
        }
        if x.is_infinite() {
            return if saturate {
                sign | self.max_finite_code()
            } else {
                self.overflow_code(sign)
            };
        }
        let truncating = match spec {
            RoundSpec::Mode(m) => m.truncates_magnitude(neg),
            RoundSpec::Stochastic { .. } => false,
        };
        let overflow = || {
            if saturate || truncating {
                sign | self.max_finite_code()
            } else {
                self.overflow_code(sign)
            }
        };
        if x == 0.0 {
            return if self.kind == FloatKind::Fnuz {
                0
            } else {
                sign
            };
        }
        let m = self.man_bits as i32;
        let (mant, e2) = decompose(x);
        // floor(log2 |x|)
        let lg = 63 - mant.leading_zeros() as i32 + e2;
        let emin = self.emin();
        let e = lg.max(emin);
        if e > self.emax() + 1 {
            return overflow();
        }
        // The binade's quantum is 2^(e - m); n = |x| / 2^(e - m) rounded.
        let shift = e - m - e2;
        let n: u128 = if shift <= 0 {
            (mant as u128) << (-shift) as u32
        } else {
            round_shift_right_spec(mant as u128, shift as u32, neg, spec)
        };
        // With subnormals, (e - emin) * 2^m + n is the magnitude code of
        // subnormals and normals alike (n includes the hidden bit for normals,
        // and a carry out of the mantissa bumps the exponent field). Without
        // them the hidden bit is implicit in every code, so it is taken off;
        // magnitudes below the smallest value clamp to it.
        let base = ((e - emin) as u128) << m;
        let mut code = if self.has_subnormals() {
            base + n
        } else {
            (base + n).saturating_sub(1u128 << m)
        };
        if code > self.max_finite_code() as u128 {
            return overflow();
        }
        if flush && self.has_subnormals() && code < (1u128 << m) {
            code = 0;
        }
        if code == 0 && self.kind == FloatKind::Fnuz {
            return 0;
        }
        sign | code as u64
    }

    /// Exponent of the smallest normal binade (`1 - bias`, or `-bias` when
    /// there are no subnormals).
    pub fn emin(&self) -> i32 {
        if self.has_subnormals() {
            1 - self.bias
        } else {
            -self.bias
        }
    }

    /// Exponent of the largest finite binade.
    pub fn emax(&self) -> i32 {
        (self.max_finite_code() >> self.man_bits) as i32 - self.bias
    }

    /// The largest finite value.
    pub fn max_finite(&self) -> f64 {
        self.decode(self.max_finite_code())
    }

    /// The smallest positive value (subnormal where the format has them).
    pub fn min_positive(&self) -> f64 {
        if self.has_subnormals() {
            self.decode(1)
        } else {
            self.decode(0)
        }
    }
}

fn pow2(e: i32) -> f64 {
    // Exact for every exponent a supported format can produce.
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (e + 1074))
    }
}

impl fmt::Display for FloatFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((name, _)) = Self::NAMED.iter().find(|(_, g)| g == self) {
            return f.write_str(name);
        }
        write!(f, "fE{}M{}", self.exp_bits, self.man_bits)?;
        if self.bias != Self::default_bias(self.exp_bits, self.kind) {
            write!(f, "B{}", self.bias)?;
        }
        f.write_str(self.kind.suffix())
    }
}

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElemType {
    /// Two's complement (`signed`) or unsigned integer of 1 to 64 bits.
    Int {
        /// Width in bits.
        bits: u8,
        /// Signedness.
        signed: bool,
    },
    /// One bit encoding -1 (code 0) or +1 (code 1).
    Bipolar,
    /// A floating-point format.
    Float(FloatFormat),
}

impl ElemType {
    /// `f32`.
    pub const F32: ElemType = ElemType::Float(FloatFormat::F32);
    /// `f16`.
    pub const F16: ElemType = ElemType::Float(FloatFormat::F16);
    /// `bf16`.
    pub const BF16: ElemType = ElemType::Float(FloatFormat::BF16);
    /// `i8`.
    pub const I8: ElemType = ElemType::Int {
        bits: 8,
        signed: true,
    };
    /// `u8`.
    pub const U8: ElemType = ElemType::Int {
        bits: 8,
        signed: false,
    };
    /// `i32`.
    pub const I32: ElemType = ElemType::Int {
        bits: 32,
        signed: true,
    };
    /// `i64`.
    pub const I64: ElemType = ElemType::Int {
        bits: 64,
        signed: true,
    };

    /// A signed integer type; `bits` must be 1..=64.
    pub fn int(bits: u8) -> Result<ElemType, FormatError> {
        Self::checked_int(bits, true)
    }
    /// An unsigned integer type; `bits` must be 1..=64.
    pub fn uint(bits: u8) -> Result<ElemType, FormatError> {
        Self::checked_int(bits, false)
    }
    fn checked_int(bits: u8, signed: bool) -> Result<ElemType, FormatError> {
        if (1..=64).contains(&bits) {
            Ok(ElemType::Int { bits, signed })
        } else {
            Err(FormatError(format!(
                "integer width {bits} is out of range (1 to 64 bits)"
            )))
        }
    }

    /// Storage width of one element in bits.
    pub fn bits(&self) -> u32 {
        match self {
            ElemType::Int { bits, .. } => *bits as u32,
            ElemType::Bipolar => 1,
            ElemType::Float(f) => f.bits(),
        }
    }
    /// Mask selecting the code bits.
    pub fn code_mask(&self) -> u64 {
        let b = self.bits();
        if b >= 64 {
            u64::MAX
        } else {
            (1u64 << b) - 1
        }
    }
    /// True for `i<N>`/`u<N>`.
    pub fn is_int(&self) -> bool {
        matches!(self, ElemType::Int { .. })
    }
    /// True for integers and `b1` (types whose values are integers).
    pub fn is_integral(&self) -> bool {
        matches!(self, ElemType::Int { .. } | ElemType::Bipolar)
    }
    /// True for float formats.
    pub fn is_float(&self) -> bool {
        matches!(self, ElemType::Float(_))
    }
    /// The float format, if any.
    pub fn float(&self) -> Option<FloatFormat> {
        match self {
            ElemType::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Inclusive value range of an integral type (`b1` is -1..=1).
    pub fn int_range(&self) -> Option<(i128, i128)> {
        match *self {
            ElemType::Int { bits, signed: true } => {
                Some((-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1))
            }
            ElemType::Int {
                bits,
                signed: false,
            } => Some((0, (1i128 << bits) - 1)),
            ElemType::Bipolar => Some((-1, 1)),
            ElemType::Float(_) => None,
        }
    }

    /// Decodes an integral code to its value.
    pub fn decode_int(&self, code: u64) -> Option<i128> {
        match *self {
            ElemType::Int { bits, signed } => {
                let c = code & self.code_mask();
                if signed && bits < 128 && (c >> (bits - 1)) & 1 == 1 {
                    Some(c as i128 - (1i128 << bits))
                } else {
                    Some(c as i128)
                }
            }
            ElemType::Bipolar => Some(if code & 1 == 1 { 1 } else { -1 }),
            ElemType::Float(_) => None,
        }
    }

    /// Decodes any code to `f64` (exact for floats; integers beyond 2^53 round).
    pub fn decode(&self, code: u64) -> f64 {
        match self {
            ElemType::Float(f) => f.decode(code),
            _ => self.decode_int(code).unwrap_or(0) as f64,
        }
    }

    /// Encodes an integer value; out-of-range values wrap or saturate.
    /// For floats the value is converted with nearest-even rounding.
    pub fn encode_int(&self, v: i128, overflow: Overflow) -> u64 {
        match *self {
            ElemType::Int { .. } => {
                let (lo, hi) = self.int_range().unwrap_or((0, 0));
                let v = match overflow {
                    Overflow::Saturate => v.clamp(lo, hi),
                    Overflow::Wrap => v,
                };
                (v as u128 as u64) & self.code_mask()
            }
            ElemType::Bipolar => (v >= 0) as u64,
            ElemType::Float(f) => f.encode(v as f64, Rounding::NearestEven, false),
        }
    }

    /// Encodes a real value, rounding once in `mode`. For integers, NaN is 0
    /// and out-of-range values saturate when `saturate` is set, else wrap
    /// (exactly: the low bits of the rounded integer, however large);
    /// infinities clamp to the range in both cases.
    /// `b1` encodes the sign (zero counts as +1).
    pub fn encode(&self, x: f64, mode: Rounding, saturate: bool) -> u64 {
        self.encode_spec(x, RoundSpec::Mode(mode), saturate, false)
    }

    /// [`ElemType::encode`] with every option; `flush_subnormals` only
    /// affects float formats.
    pub fn encode_with(&self, x: f64, opts: &EncodeOptions) -> u64 {
        self.encode_spec(
            x,
            RoundSpec::Mode(opts.rounding),
            opts.saturate,
            opts.flush_subnormals,
        )
    }

    /// [`ElemType::encode`] with stochastic rounding (see
    /// [`FloatFormat::encode_stochastic`]; integers round up with
    /// probability equal to the fraction's top `bits` bits).
    pub fn encode_stochastic(&self, x: f64, random: u64, bits: u32, saturate: bool) -> u64 {
        self.encode_spec(x, RoundSpec::stochastic(random, bits), saturate, false)
    }

    pub(crate) fn encode_spec(&self, x: f64, spec: RoundSpec, saturate: bool, flush: bool) -> u64 {
        match self {
            ElemType::Float(f) => f.encode_spec(x, spec, saturate, flush),
            ElemType::Bipolar => (!x.is_sign_negative() || x == 0.0) as u64,
            ElemType::Int { .. } => {
                if x.is_infinite() {
                    let v = if x > 0.0 { i128::MAX } else { i128::MIN };
                    return self.encode_int(v, Overflow::Saturate);
                }
                if !saturate && x.abs() >= 18446744073709551616.0 {
                    // |x| >= 2^64 is an integer m * 2^e with e >= 12: wrapping
                    // keeps only bits that the shift may leave in range.
                    let (m, e) = decompose(x);
                    let low = if e >= 64 { 0 } else { m << e };
                    let low = if x < 0.0 { low.wrapping_neg() } else { low };
                    return low & self.code_mask();
                }
                let v = round_f64_to_i128_spec(x, spec);
                self.encode_int(
                    v,
                    if saturate {
                        Overflow::Saturate
                    } else {
                        Overflow::Wrap
                    },
                )
            }
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElemType::Int { bits, signed } => {
                write!(f, "{}{}", if *signed { 'i' } else { 'u' }, bits)
            }
            ElemType::Bipolar => f.write_str("b1"),
            ElemType::Float(g) => g.fmt(f),
        }
    }
}

impl FromStr for ElemType {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<ElemType, FormatError> {
        if s == "b1" {
            return Ok(ElemType::Bipolar);
        }
        if let Some((_, f)) = FloatFormat::NAMED.iter().find(|(n, _)| *n == s) {
            return Ok(ElemType::Float(*f));
        }
        let unknown = || FormatError(format!("unknown element type '{s}'"));
        if let Some(rest) = s.strip_prefix('i').or_else(|| s.strip_prefix('u')) {
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                let bits: u32 = rest.parse().map_err(|_| unknown())?;
                let signed = s.starts_with('i');
                if !(1..=64).contains(&bits) {
                    return Err(FormatError(format!(
                        "element type '{s}': integer width {bits} is out of range (1 to 64 bits)"
                    )));
                }
                return Ok(ElemType::Int {
                    bits: bits as u8,
                    signed,
                });
            }
        }
        if let Some(rest) = s.strip_prefix("fE") {
            return parse_custom_float(s, rest).map(ElemType::Float);
        }
        Err(unknown())
    }
}

fn take_number(s: &str) -> (Option<i64>, &str) {
    let neg = s.starts_with('-');
    let body = if neg { &s[1..] } else { s };
    let n = body.bytes().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return (None, s);
    }
    let v: Option<i64> = body[..n].parse().ok();
    (v.map(|v| if neg { -v } else { v }), &body[n..])
}

fn parse_custom_float(full: &str, rest: &str) -> Result<FloatFormat, FormatError> {
    let bad = || {
        FormatError(format!(
            "malformed float type '{full}' (expected fE<e>M<m>[B<bias>][FN|FNUZ|F|FNU])"
        ))
    };
    let (e, rest) = take_number(rest);
    let rest = rest.strip_prefix('M').ok_or_else(bad)?;
    let (m, rest) = take_number(rest);
    let (e, m) = (e.ok_or_else(bad)?, m.ok_or_else(bad)?);
    let (bias, rest) = match rest.strip_prefix('B') {
        Some(r) => {
            let (b, r) = take_number(r);
            (Some(b.ok_or_else(bad)?), r)
        }
        None => (None, rest),
    };
    let kind = match rest {
        "" => FloatKind::Ieee,
        "FN" => FloatKind::FiniteNan,
        "FNUZ" => FloatKind::Fnuz,
        "F" => FloatKind::Finite,
        "FNU" => FloatKind::UnsignedFiniteNan,
        _ => return Err(bad()),
    };
    if !(0..=64).contains(&e) || !(0..=64).contains(&m) {
        return Err(FormatError(format!(
            "float type '{full}': field widths out of range"
        )));
    }
    let bias = match bias {
        Some(b) => i32::try_from(b).map_err(|_| bad())?,
        None => FloatFormat::default_bias(e as u8, kind),
    };
    FloatFormat::new(e as u8, m as u8, bias, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for s in [
            "i1",
            "i3",
            "u4",
            "i64",
            "u64",
            "b1",
            "f16",
            "bf16",
            "tf32",
            "f32",
            "f8E4M3FN",
            "f8E4M3FNUZ",
            "f8E5M2",
            "f8E5M2FNUZ",
            "f6E2M3FN",
            "f6E3M2FN",
            "f4E2M1FN",
            "f8E8M0FNU",
            "fE3M4",
            "fE3M4B2FN",
            "fE5M3FNUZ",
            "fE2M2F",
        ] {
            let t: ElemType = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        // custom spelling of a named format prints as the name
        assert_eq!(
            "fE4M3FN".parse::<ElemType>().unwrap().to_string(),
            "f8E4M3FN"
        );
        assert_eq!(
            "fE2M1F".parse::<ElemType>().unwrap().to_string(),
            "f4E2M1FN"
        );
    }

    #[test]
    fn bad_spellings_are_errors() {
        for s in ["i0", "i65", "u", "x8", "fE0M3", "fE1M2", "fE4M3Q", "f7"] {
            assert!(s.parse::<ElemType>().is_err(), "{s}");
        }
    }

    #[test]
    fn impossible_formats_name_themselves() {
        for (s, why) in [
            ("fE0M3", "at least one exponent bit"),
            ("fE0M3FN", "at least one exponent bit"),
            ("fE1M2", "infinities and NaNs need"),
            ("fE3M0", "infinities and NaNs need"),
            ("fE12M3", "at most 11 exponent"),
            ("fE4M60", "52 mantissa bits"),
            ("fE8M3B-5000", "out of range"),
            ("fE8M3B-2000", "outside the f64 range"),
            ("fE11M52FN", "outside the f64 range"),
            ("fE8M3B-1000", "outside the f64 range"),
            ("fE4M3B99999999999", "malformed"),
            ("fE4M3X", "malformed"),
            ("fE-1M3", "field widths out of range"),
        ] {
            let err = s.parse::<ElemType>().unwrap_err().to_string();
            assert!(err.contains(why), "{s}: {err}");
            let name = &s[..4];
            assert!(err.contains(name), "{s}: {err}");
        }
        let err = FloatFormat::new(0, 3, 0, FloatKind::Ieee).unwrap_err();
        assert!(err.to_string().contains("fE0M3"), "{err}");
    }

    #[test]
    fn known_values() {
        let e4m3 = FloatFormat::F8E4M3FN;
        assert_eq!(e4m3.decode(0x7e), 448.0);
        assert!(e4m3.decode(0x7f).is_nan());
        assert_eq!(e4m3.decode(0x01), 2f64.powi(-9));
        assert_eq!(e4m3.encode(448.0, Rounding::NearestEven, false), 0x7e);
        assert_eq!(e4m3.encode(1000.0, Rounding::NearestEven, true), 0x7e);
        assert_eq!(e4m3.encode(-1000.0, Rounding::NearestEven, true), 0xfe);
        assert_eq!(e4m3.encode(1000.0, Rounding::NearestEven, false), 0x7f);
        let fp4 = FloatFormat::F4E2M1FN;
        let vals: Vec<f64> = (0..8).map(|c| fp4.decode(c)).collect();
        assert_eq!(vals, [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(fp4.encode(5.0, Rounding::NearestEven, false), 0x6);
        assert_eq!(fp4.encode(0.25, Rounding::NearestEven, false), 0x0);
        assert_eq!(fp4.encode(0.75, Rounding::NearestEven, false), 0x2);
        let e8m0 = FloatFormat::F8E8M0FNU;
        assert_eq!(e8m0.decode(127), 1.0);
        assert_eq!(e8m0.decode(0), 2f64.powi(-127));
        assert!(e8m0.decode(255).is_nan());
        assert_eq!(e8m0.encode(4.0, Rounding::NearestEven, false), 129);
        let f16 = FloatFormat::F16;
        assert_eq!(f16.encode(65520.0, Rounding::NearestEven, false), 0x7c00);
        assert_eq!(f16.encode(65520.0, Rounding::TowardZero, false), 0x7bff);
    }

    #[test]
    fn f16_and_bf16_agree_with_half_on_every_code() {
        for c in 0..=u16::MAX {
            let h = half::f16::from_bits(c).to_f64();
            let b = half::bf16::from_bits(c).to_f64();
            let (dh, db) = (
                FloatFormat::F16.decode(c as u64),
                FloatFormat::BF16.decode(c as u64),
            );
            assert!(h.to_bits() == dh.to_bits() || (h.is_nan() && dh.is_nan()));
            assert!(b.to_bits() == db.to_bits() || (b.is_nan() && db.is_nan()));
            if !h.is_nan() {
                assert_eq!(
                    FloatFormat::F16.encode(h, Rounding::NearestEven, false),
                    c as u64
                );
            }
        }
    }

    #[test]
    fn f32_encode_matches_hardware_rounding() {
        let xs = [
            1.0f64 / 3.0,
            1e-40,
            1e-45,
            3.4e38,
            3.5e38,
            -0.1,
            1e-46,
            7e-46,
        ];
        for x in xs {
            assert_eq!(
                FloatFormat::F32.encode(x, Rounding::NearestEven, false),
                (x as f32).to_bits() as u64,
                "{x}"
            );
        }
    }

    #[test]
    fn ints_wrap_and_saturate() {
        let i4 = ElemType::int(4).unwrap();
        assert_eq!(i4.encode_int(9, Overflow::Wrap), 9);
        assert_eq!(i4.decode_int(9), Some(-7));
        assert_eq!(i4.encode_int(9, Overflow::Saturate), 7);
        assert_eq!(i4.encode_int(-9, Overflow::Saturate), 8);
        assert_eq!(i4.encode(2.5, Rounding::NearestEven, true), 2);
        let u64t = ElemType::uint(64).unwrap();
        assert_eq!(u64t.decode_int(u64::MAX), Some(u64::MAX as i128));
    }
}
