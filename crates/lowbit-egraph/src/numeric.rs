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
//!
//! When the scale ratio is not dyadic, [`approx_dyadic`] picks a HAWQ-V3
//! multiplier `m ∈ [2^30, 2^31]` and shift with `|m / 2^shift − r| ≤
//! 2^-31 · r`. The rule that uses it (only when asked to) proves a bound of
//! one unit in the last place of the quantized output; see
//! `rules::integer_only`.

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

/// `round(a · 2^t / b)` to nearest (ties up), exactly; `None` when it
/// does not fit `u128` or `b` is zero.
pub fn round_ratio(a: u128, b: u128, t: i32) -> Option<u128> {
    if b == 0 {
        return None;
    }
    let (q1, r1) = (a / b, a % b);
    if t >= 0 {
        // Long division, one bit of the quotient per step of the shift.
        let (mut q, mut r) = (q1, r1);
        for _ in 0..t {
            q = q.checked_mul(2)?;
            r = r.checked_mul(2)?;
            if r >= b {
                q += 1;
                r -= b;
            }
        }
        Some(if r.checked_mul(2)? >= b { q + 1 } else { q })
    } else {
        let s = t.unsigned_abs();
        if s >= 128 {
            return Some(0);
        }
        // floor(a / (b 2^s)) = floor(floor(a / b) / 2^s); the fraction's
        // comparison with 1/2 needs the dropped bits and the remainder.
        let q = q1 >> s;
        let low = q1 & ((1u128 << s) - 1);
        let half = 1u128 << (s - 1);
        // At exactly half (low == half, r1 == 0) ties go up.
        Some(if low >= half { q + 1 } else { q })
    }
}

/// A HAWQ-V3 dyadic approximation of `num / den`: `(multiplier, shift)`
/// with `multiplier / 2^shift` within `2^-31` of the ratio, relatively
/// (`multiplier ∈ [2^30, 2^31]` before a negative shift is folded into
/// it). `None` when the multiplier would reach `2^62` or the shift 127.
pub fn approx_dyadic(num: &Dyadic, den: &Dyadic) -> Option<(u64, u32)> {
    let bits = |x: u128| 128 - x.leading_zeros() as i32;
    let mut t = 30 - (bits(num.odd) - bits(den.odd));
    let mut m = round_ratio(num.odd, den.odd, t)?;
    for _ in 0..4 {
        if m > 1 << 31 {
            t -= 1;
        } else if m < 1 << 30 {
            t += 1;
        } else {
            break;
        }
        m = round_ratio(num.odd, den.odd, t)?;
    }
    if !(1u128 << 30..=1u128 << 31).contains(&m) {
        return None;
    }
    // ratio = m / 2^t · 2^(num.exp − den.exp).
    let shift = t as i64 - (num.exp as i64 - den.exp as i64);
    if shift < 0 {
        let m = m.checked_shl(shift.unsigned_abs() as u32)?;
        (m < 1 << 62).then_some((m as u64, 0))
    } else {
        (shift <= 126).then_some((m as u64, shift as u32))
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
    fn approximate_multipliers_are_within_two_to_the_minus_31() {
        for (n, d) in [
            (0.375, 0.15),
            (0.1, 0.3),
            (1.0, 3.0),
            (0.7, 0.011),
            (5e-5, 7.0),
            (3e9, 0.7),
        ] {
            let (num, den) = (Dyadic::of(n).unwrap(), Dyadic::of(d).unwrap());
            let (m, s) = approx_dyadic(&num, &den).unwrap();
            let r = n / d;
            let got = m as f64 / 2f64.powi(s as i32);
            assert!(
                ((got - r) / r).abs() <= 2f64.powi(-31) * 1.0001,
                "{n}/{d}: {m}/2^{s}"
            );
            assert!(m < 1 << 62);
        }
        // 1/3 = 0x55555555.55.. / 2^32: rounds down to 1431655765 / 2^32.
        let (m, s) = approx_dyadic(&Dyadic::of(1.0).unwrap(), &Dyadic::of(3.0).unwrap()).unwrap();
        assert_eq!((m, s), (1431655765, 32));
        assert_eq!(round_ratio(7, 2, 0), Some(4));
        assert_eq!(round_ratio(5, 3, -1), Some(1));
        assert_eq!(round_ratio(7, 3, -1), Some(1));
        assert_eq!(round_ratio(1, 0, 3), None);
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
