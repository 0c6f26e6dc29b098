//! Exactness arguments for the integer-only rewrite.
//!
//! A positive finite scale is `odd · 2^exp` ([`Dyadic`]). Multiples
//! `d · s` of a scale, for integers `|d| ≤ dmax`, are all exactly
//! representable in a float format with `p` significand bits when
//! `dmax · odd < 2^p`, the smallest step `2^exp` is representable, and the
//! largest multiple does not overflow ([`exact_multiples`]): every such
//! value `j · 2^exp` with `|j| < 2^p` then has a unit in the last place of
//! at most `2^exp`. This is what lets `quantize(matmul(dequantize(x),
//! dequantize(w)))` be replaced by an integer matmul and a dyadic
//! requantization *bit-exactly*: every float step of the unfused graph is
//! exact, and the only rounding left is the final one, which
//! `requant_dyadic` performs exactly with the same mode.

use lowbit_ir::{ElemType, Rounding};
use lowbit_numerics::round::round_shift_right;

/// The exact `round(v / 2^shift)` in the given mode (the semantics of
/// `requant_dyadic`).
pub fn round_div_pow2(v: i128, shift: u32, mode: Rounding) -> i128 {
    let mag = round_shift_right(v.unsigned_abs(), shift, v < 0, mode);
    if v < 0 {
        -(mag as i128)
    } else {
        mag as i128
    }
}

/// A positive number `odd · 2^exp` with `odd` odd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dyadic {
    /// The odd integer factor.
    pub odd: u128,
    /// The power of two.
    pub exp: i32,
}

impl Dyadic {
    /// Decomposes a positive finite `f64`; `None` for zero, negative, NaN
    /// or infinite values.
    pub fn of(x: f64) -> Option<Dyadic> {
        if !(x.is_finite() && x > 0.0) {
            return None;
        }
        let bits = x.to_bits();
        let e = ((bits >> 52) & 0x7ff) as i32;
        let frac = bits & ((1u64 << 52) - 1);
        let (mut m, mut exp) = if e == 0 {
            (frac, -1074)
        } else {
            (frac | (1 << 52), e - 1075)
        };
        let tz = m.trailing_zeros();
        m >>= tz;
        exp += tz as i32;
        Some(Dyadic {
            odd: m as u128,
            exp,
        })
    }

    /// The exact product, if the odd factors' product fits.
    pub fn mul(&self, o: &Dyadic) -> Option<Dyadic> {
        Some(Dyadic {
            odd: self.odd.checked_mul(o.odd)?,
            exp: self.exp.checked_add(o.exp)?,
        })
    }

    /// `self / o` when it is itself dyadic (`o.odd` divides `self.odd`).
    pub fn div(&self, o: &Dyadic) -> Option<Dyadic> {
        if !self.odd.is_multiple_of(o.odd) {
            return None;
        }
        Some(Dyadic {
            odd: self.odd / o.odd,
            exp: self.exp.checked_sub(o.exp)?,
        })
    }

    /// `j · 2^exp` as an `f64`, when that is exact.
    pub fn times_f64(&self, j: u128) -> Option<f64> {
        let m = j.checked_mul(self.odd)?;
        if m >= 1 << 53 {
            return None;
        }
        let v = (m as f64) * 2f64.powi(self.exp);
        (v.is_finite() && v != 0.0 || m == 0).then_some(v)
    }

    /// The value as an `f64` (approximate only for huge odd factors).
    pub fn value(&self) -> f64 {
        self.odd as f64 * 2f64.powi(self.exp)
    }
}

fn representable(e: ElemType, v: f64) -> bool {
    let code = e.encode(v, Rounding::NearestEven, false);
    e.decode(code) == v
}

/// Checks that `d · s` is exactly representable in `e` for every integer
/// `|d| ≤ dmax`; the error says which condition fails.
pub fn exact_multiples(e: ElemType, s: &Dyadic, dmax: u128) -> Result<(), String> {
    let Some(f) = e.float() else {
        return Err(format!("{e} is not a float type"));
    };
    if dmax == 0 {
        return Ok(());
    }
    let p = f.man_bits() as u32 + 1;
    let need = dmax.checked_mul(s.odd).ok_or("the products overflow")?;
    if need >= 1u128 << p {
        return Err(format!(
            "|values| up to {dmax} times a scale with a {}-bit odd factor need more than the {p} significand bits of {e}",
            128 - s.odd.leading_zeros()
        ));
    }
    let step = Dyadic { odd: 1, exp: s.exp };
    let smallest = step
        .times_f64(1)
        .ok_or("the scale's step is out of range")?;
    if !representable(e, smallest) {
        return Err(format!("the step 2^{} underflows {e}", s.exp));
    }
    let largest = s
        .times_f64(dmax)
        .ok_or("the largest multiple is out of range")?;
    if !representable(e, largest) || !representable(e, -largest) {
        return Err(format!("{largest} overflows {e}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decomposes_scales() {
        assert_eq!(Dyadic::of(0.75), Some(Dyadic { odd: 3, exp: -2 }));
        assert_eq!(Dyadic::of(8.0), Some(Dyadic { odd: 1, exp: 3 }));
        assert_eq!(Dyadic::of(0.0), None);
        assert_eq!(Dyadic::of(-1.0), None);
        let t = Dyadic::of(0.1).unwrap();
        assert_eq!(t.value(), 0.1);
        let r = Dyadic::of(0.75)
            .unwrap()
            .mul(&Dyadic::of(0.5).unwrap())
            .unwrap()
            .div(&Dyadic::of(3.0).unwrap())
            .unwrap();
        assert_eq!(r, Dyadic { odd: 1, exp: -3 });
        assert!(Dyadic::of(0.5)
            .unwrap()
            .div(&Dyadic::of(3.0).unwrap())
            .is_none());
    }

    #[test]
    fn exact_multiples_in_formats() {
        let s = Dyadic::of(0.25).unwrap();
        assert!(exact_multiples(ElemType::F32, &s, 1 << 23).is_ok());
        let e = exact_multiples(ElemType::F32, &s, 1 << 24).unwrap_err();
        assert!(e.contains("24 significand bits"), "{e}");
        // 0.1 has a 52-bit odd factor: never exact in f32 beyond d = 0.
        assert!(exact_multiples(ElemType::F32, &Dyadic::of(0.1).unwrap(), 1).is_err());
        assert!(exact_multiples(ElemType::F16, &Dyadic::of(3.0).unwrap(), 300).is_ok());
        let e =
            exact_multiples(ElemType::F16, &Dyadic::of(2f64.powi(-30)).unwrap(), 2).unwrap_err();
        assert!(e.contains("underflows"), "{e}");
        let e = exact_multiples(ElemType::F16, &Dyadic::of(1024.0).unwrap(), 1000).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
    }

    #[test]
    fn dyadic_rounding_modes() {
        assert_eq!(round_div_pow2(5, 1, Rounding::NearestEven), 2);
        assert_eq!(round_div_pow2(7, 1, Rounding::NearestEven), 4);
        assert_eq!(round_div_pow2(-5, 1, Rounding::NearestAway), -3);
        assert_eq!(round_div_pow2(-5, 1, Rounding::Down), -3);
        assert_eq!(round_div_pow2(-5, 1, Rounding::TowardZero), -2);
    }
}
