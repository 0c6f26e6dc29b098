//! Conversions between decoded values and codes that several ops share, and
//! the element-type checks every op starts with.
//!
//! All rounding is delegated to `lowbit-numerics`; this module only decides
//! which value is rounded (see the crate docs for the conventions).

use crate::shape::fmt_shape;
use lowbit_ir::{ElemType, FloatFormat, Overflow, Rounding, Tensor, TensorType};
use lowbit_numerics::round::{decompose, round_f64_to_i128_spec, round_shift_right_spec};
use lowbit_numerics::RoundSpec;

/// Decodes every element to `f64` (exact for floats).
pub(crate) fn floats(t: &Tensor) -> Vec<f64> {
    t.codes.iter().map(|&c| t.elem.decode(c)).collect()
}

/// Decodes every element of an integral tensor exactly.
pub(crate) fn ints(t: &Tensor) -> Vec<i128> {
    t.codes
        .iter()
        .map(|&c| t.elem.decode_int(c).unwrap_or(0))
        .collect()
}

/// Encodes a real result nearest-even without saturation (arithmetic ops).
pub(crate) fn encode_arith(elem: ElemType, v: f64) -> u64 {
    elem.encode(v, Rounding::NearestEven, false)
}

/// `2^117`: every finite `f64` at least this large is a multiple of `2^64`.
const WRAPS_TO_ZERO: f64 = (1u128 << 117) as f64;

/// The code of `round(v) + zp` in an integral type (see the crate docs:
/// NaN counts as 0; `b1` takes the sign of `v + zp` without rounding).
pub(crate) fn int_code(
    v: f64,
    zp: i128,
    elem: ElemType,
    mode: impl Into<RoundSpec>,
    ov: Overflow,
) -> u64 {
    let mode = mode.into();
    if elem == ElemType::Bipolar {
        let s = if zp != 0 { v + zp as f64 } else { v };
        return (s.is_nan() || s >= 0.0) as u64;
    }
    let r = if v.is_nan() {
        0
    } else if v.is_infinite() || v.abs() >= WRAPS_TO_ZERO {
        match ov {
            Overflow::Saturate if v > 0.0 => i128::MAX,
            Overflow::Saturate => i128::MIN,
            // A multiple of 2^64 has all-zero low bits.
            Overflow::Wrap => 0,
        }
    } else {
        round_f64_to_i128_spec(v, mode)
    };
    elem.encode_int(r.saturating_add(zp), ov)
}

/// The code of an exact integer in an integral type.
pub(crate) fn int_to_int_code(v: i128, elem: ElemType, ov: Overflow) -> u64 {
    if elem == ElemType::Bipolar {
        return (v >= 0) as u64;
    }
    elem.encode_int(v, ov)
}

/// Encodes `x` into a float format with a rounding mode or stochastic bits.
pub(crate) fn encode_float_spec(f: FloatFormat, x: f64, mode: RoundSpec, saturate: bool) -> u64 {
    match mode {
        RoundSpec::Mode(m) => f.encode(x, m, saturate),
        RoundSpec::Stochastic { random, bits } => f.encode_stochastic(x, random, bits, saturate),
    }
}

/// Rounds an exact integer once into a float format. Integers of up to 53
/// bits are exact in `f64`; wider ones are first rounded to the target's
/// precision at their binade (an exact `f64` afterwards), so no second
/// rounding happens.
pub(crate) fn int_to_float_code(
    v: i128,
    f: FloatFormat,
    mode: impl Into<RoundSpec>,
    saturate: bool,
) -> u64 {
    let mode = mode.into();
    let mag = v.unsigned_abs();
    if mag < (1u128 << 53) {
        return encode_float_spec(f, v as f64, mode, saturate);
    }
    let e = 127 - mag.leading_zeros() as i32; // floor(log2 |v|)
    let m = f.man_bits() as i32;
    let emin = if f.has_subnormals() {
        1 - f.bias()
    } else {
        -f.bias()
    };
    // The quantum of |v|'s binade in the target (subnormal binades share emin).
    let q = (e.max(emin) - m).max(0);
    let n = round_shift_right_spec(mag, q as u32, v < 0, mode);
    // n < 2^54 and q < 128: n * 2^q is an exact f64.
    let x = n as f64 * 2f64.powi(q);
    // x is a value of the format or beyond its range, so this only
    // decides overflow; the one rounding happened above.
    encode_float_spec(f, if v < 0 { -x } else { x }, mode, saturate)
}

/// A real number kept exactly: `±n · 2^e` with `1 ≤ n < 2^127`, or an
/// `f64` for the values that need no more (zero, infinities, NaN).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ExactReal {
    /// `(-1)^neg · n · 2^e`.
    Parts {
        /// The sign.
        neg: bool,
        /// The integer magnitude, at least 1 and below 2^127.
        n: u128,
        /// The power of two.
        e: i32,
    },
    /// A zero, infinite or NaN value (any `f64`, in fact).
    Float(f64),
}

impl ExactReal {
    /// `d · s` exactly, for `|d| < 2^64` (the difference of two codes of
    /// one integral type always is).
    pub(crate) fn int_times(d: i128, s: f64) -> ExactReal {
        if d == 0 || !s.is_finite() || s == 0.0 || d.unsigned_abs() >= 1 << 64 {
            // Zero, infinite or NaN products are exact in f64 (the last
            // case cannot happen for codes; it stays an f64 product).
            return ExactReal::Float(d as f64 * s);
        }
        let (m, e) = decompose(s);
        ExactReal::Parts {
            neg: (d < 0) != (s < 0.0),
            // < 2^64 · 2^53.
            n: d.unsigned_abs() * m as u128,
            e,
        }
    }

    /// `d · s` exactly for `f64` values.
    pub(crate) fn float_times(d: f64, s: f64) -> ExactReal {
        if !d.is_finite() || d == 0.0 || !s.is_finite() || s == 0.0 {
            return ExactReal::Float(d * s);
        }
        let ((md, ed), (ms, es)) = (decompose(d), decompose(s));
        ExactReal::Parts {
            neg: (d < 0.0) != (s < 0.0),
            // < 2^106.
            n: md as u128 * ms as u128,
            e: ed + es,
        }
    }

    /// `self / den` rounded once, nearest-even, to `t` (a format whose
    /// values are all `f64`s, e.g. `f32` or `f64`), as an `f64`. IEEE
    /// special cases: a zero divisor gives a signed infinity, an infinite
    /// one a signed zero, NaN gives NaN.
    pub(crate) fn divide(self, den: f64, t: FloatFormat) -> f64 {
        let (neg, n, e) = match self {
            ExactReal::Float(v) => return to_format(t, v / den),
            ExactReal::Parts { neg, n, e } => (neg, n, e),
        };
        let neg = neg != den.is_sign_negative();
        let signed = |m: f64| if neg { -m } else { m };
        if den.is_nan() {
            return f64::NAN;
        }
        if den == 0.0 {
            return signed(f64::INFINITY);
        }
        if den.is_infinite() {
            return signed(0.0);
        }
        let (md, ed) = decompose(den);
        // Scale the numerator to 127 bits: the integer quotient then has at
        // least 127 − 53 = 74 bits, far more than `t`'s 53 + 2.
        let l = n.leading_zeros() - 1;
        let num = n << l;
        let (q, rem) = (num / md as u128, num % md as u128);
        // A non-zero remainder is a sticky bit below the quotient's last
        // bit; at least 20 bits are shifted out below, so bit 0 serves.
        let q = q | (rem != 0) as u128;
        let qe = e - l as i32 - ed; // value = q · 2^qe (up to the sticky bit)
        let lead = qe + 127 - q.leading_zeros() as i32; // floor(log2 value)
        let man = t.man_bits() as i32;
        // The unit of the result's binade (subnormal binades share emin).
        let unit = lead.max(t.emin()) - man;
        let shift = (unit - qe) as u32;
        let r = round_shift_right_spec(q, shift, neg, RoundSpec::Mode(Rounding::NearestEven));
        // r ≤ 2^(man + 1) ≤ 2^53: exact as an f64, and r · 2^unit is a
        // value of `t` unless it overflows, which `to_format` turns into ∞.
        signed(to_format(t, ldexp(r as f64, unit)))
    }
}

/// `x · 2^k` for a normal `x`: exact whenever the result is an `f64` (the
/// steps before the last keep a normal value; the last rounds at most once).
fn ldexp(mut x: f64, mut k: i32) -> f64 {
    // 2^±1000 are normal f64s; one step per 1000 binades.
    while k > 1000 {
        x *= f64::from_bits((1023 + 1000) << 52);
        k -= 1000;
        if x.is_infinite() {
            return x;
        }
    }
    while k < -1000 {
        x *= f64::from_bits((1023 - 1000) << 52);
        k += 1000;
    }
    x * f64::from_bits(((1023 + k) as u64) << 52)
}

/// Rounds an `f64` nearest-even to `t` (`f32` or `f64` in practice) and
/// decodes it back: `x` itself when `t` is `f64`.
pub(crate) fn to_format(t: FloatFormat, x: f64) -> f64 {
    if t == FloatFormat::F64 {
        x
    } else if t == FloatFormat::F32 {
        x as f32 as f64
    } else {
        t.decode(t.encode(x, Rounding::NearestEven, false))
    }
}

/// Fails unless `t` has a float element type.
pub(crate) fn want_float(what: &str, elem: ElemType) -> Result<(), String> {
    if elem.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must have a float element type, got {elem}"))
    }
}

/// Fails unless `rt` has exactly `shape`.
pub(crate) fn want_shape(rt: &TensorType, shape: &[u64]) -> Result<(), String> {
    if rt.shape == shape {
        Ok(())
    } else {
        Err(format!(
            "result type {rt} should have shape {}",
            fmt_shape(shape)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_floats_wrap_to_zero_and_saturate_to_the_edge() {
        let i8t = ElemType::I8;
        let ne = Rounding::NearestEven;
        assert_eq!(WRAPS_TO_ZERO, 2f64.powi(117));
        assert_eq!(int_code(1e300, 0, i8t, ne, Overflow::Wrap), 0);
        assert_eq!(int_code(f64::INFINITY, 3, i8t, ne, Overflow::Wrap), 3);
        assert_eq!(int_code(-1e300, 0, i8t, ne, Overflow::Saturate), 0x80);
        // 2^64 + 5 is exact in i128 and wraps to 5
        assert_eq!(
            int_code(2f64.powi(64) + 4096.0, 0, i8t, ne, Overflow::Wrap),
            0
        );
        assert_eq!(int_code(300.0, 0, i8t, ne, Overflow::Wrap), 300 - 256);
        assert_eq!(int_code(f64::NAN, 0, i8t, ne, Overflow::Saturate), 0);
    }

    #[test]
    fn wide_ints_round_once_to_float() {
        // 2^60 + 2^36 + 1 is just above the f32 midpoint 2^60 + 2^36: it must
        // round up; going through f64 first would land on the tie and round
        // to even (down).
        let v: i128 = (1 << 60) + (1 << 36) + 1;
        let code = int_to_float_code(v, FloatFormat::F32, Rounding::NearestEven, false);
        let want = ((1u64 << 60) as f32 + 2f32.powi(37)).to_bits() as u64;
        assert_eq!(code, want);
        // Directed rounding of a 64-bit value into f64.
        let v: i128 = (1 << 62) + 1;
        let up = int_to_float_code(v, FloatFormat::F64, Rounding::Up, false);
        assert_eq!(f64::from_bits(up), 2f64.powi(62) + 1024.0);
        let down = int_to_float_code(-v, FloatFormat::F64, Rounding::Up, false);
        assert_eq!(f64::from_bits(down), -(2f64.powi(62)));
        // u64::MAX into f16 overflows to infinity without saturation.
        let inf = int_to_float_code(
            u64::MAX as i128,
            FloatFormat::F16,
            Rounding::NearestEven,
            false,
        );
        assert_eq!(inf, 0x7c00);
    }

    /// A small deterministic generator (xorshift), so the checks below
    /// cover many operand pairs without a dev-dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// A finite f64 with a random sign, significand and an exponent in
        /// `-e..e`.
        fn f64(&mut self, e: i32) -> f64 {
            let m = 1.0 + (self.next() >> 12) as f64 / (1u64 << 52) as f64;
            let k = (self.next() % (2 * e as u64)) as i32 - e;
            let v = m * 2f64.powi(k);
            if self.next() & 1 == 1 {
                -v
            } else {
                v
            }
        }
    }

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn exact_division_is_ieee_division_in_f64_and_f32() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..200_000 {
            // Wide exponents reach the subnormal and overflow ranges.
            let (a, b) = (r.f64(if i % 2 == 0 { 60 } else { 1100 }), r.f64(60));
            let got = ExactReal::float_times(a, 1.0).divide(b, FloatFormat::F64);
            assert!(same(got, a / b), "{a:e} / {b:e}: {got:e} vs {:e}", a / b);
            let (a32, b32) = (r.f64(140) as f32, r.f64(140) as f32);
            let want = a32 / b32;
            let got = ExactReal::float_times(a32 as f64, 1.0).divide(b32 as f64, FloatFormat::F32);
            assert!(
                same(got, want as f64),
                "{a32:e} / {b32:e}: {got:e} vs {want:e}"
            );
        }
        // Specials follow IEEE.
        let one = ExactReal::float_times(-1.5, 2.0);
        assert!(same(one.divide(0.0, FloatFormat::F32), f64::NEG_INFINITY));
        assert!(same(one.divide(-0.0, FloatFormat::F32), f64::INFINITY));
        assert!(same(one.divide(f64::INFINITY, FloatFormat::F32), -0.0));
        assert!(one.divide(f64::NAN, FloatFormat::F64).is_nan());
        assert!(same(
            ExactReal::float_times(3e38, 1.0).divide(0.5, FloatFormat::F32),
            f64::INFINITY
        ));
        let zero = ExactReal::int_times(0, -2.0);
        assert!(same(zero.divide(3.0, FloatFormat::F32), -0.0));
        assert!(zero.divide(0.0, FloatFormat::F32).is_nan());
    }

    #[test]
    fn exact_products_round_once() {
        // d / 3 with d = 3 (2^60 + 2^36) + 1 lies 1/3 above the f32
        // midpoint 2^60 + 2^36, so it rounds up to 2^60 + 2^37. Rounding d
        // to f64 first (it has 62 bits) lands exactly on the midpoint, which
        // then ties to even, 2^60.
        let d: i128 = 3 * ((1 << 60) + (1 << 36)) + 1;
        let got = ExactReal::int_times(d, 1.0).divide(3.0, FloatFormat::F32);
        assert_eq!(got, 2f64.powi(60) + 2f64.powi(37));
        assert_eq!((d as f64 / 3.0) as f32 as f64, 2f64.powi(60));
        // A power-of-two scale: the quotient is d · 2^k rounded once, which
        // int_to_float_code (tested above) computes independently.
        let mut r = Rng(77);
        for _ in 0..20_000 {
            let d = (r.next() as i64 as i128) >> (r.next() % 64);
            let k = (r.next() % 200) as i32 - 100;
            let s = 2f64.powi(k);
            for t in [FloatFormat::F32, FloatFormat::F64] {
                let got = ExactReal::int_times(d, s).divide(1.0, t);
                let code = int_to_float_code(d, t, Rounding::NearestEven, false);
                let want = t.decode(code) * s;
                assert!(same(got, to_format(t, want)), "{d} * 2^{k} in {t}");
            }
        }
    }
}
