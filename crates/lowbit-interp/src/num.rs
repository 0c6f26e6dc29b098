//! Conversions between decoded values and codes that several ops share, and
//! the element-type checks every op starts with.
//!
//! All rounding is delegated to `lowbit-numerics`; this module only decides
//! which value is rounded (see the crate docs for the conventions).

use crate::shape::fmt_shape;
use lowbit_ir::{ElemType, FloatFormat, Overflow, Rounding, Tensor, TensorType};
use lowbit_numerics::round::{round_f64_to_i128_spec, round_shift_right_spec};
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
}
