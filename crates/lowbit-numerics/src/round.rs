//! Rounding modes and the exact integer rounding primitive every encoder uses.

use std::fmt;
use std::str::FromStr;

/// How a value that falls between two representable values is rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Rounding {
    /// Round to nearest, ties to even (IEEE default).
    #[default]
    NearestEven,
    /// Round to nearest, ties away from zero.
    NearestAway,
    /// Truncate toward zero.
    TowardZero,
    /// Toward +infinity.
    Up,
    /// Toward -infinity.
    Down,
}

impl Rounding {
    /// All deterministic rounding modes, in a fixed order.
    pub const ALL: [Rounding; 5] = [
        Rounding::NearestEven,
        Rounding::NearestAway,
        Rounding::TowardZero,
        Rounding::Up,
        Rounding::Down,
    ];

    /// The spelling used in the IR text format and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Rounding::NearestEven => "nearest_even",
            Rounding::NearestAway => "nearest_away",
            Rounding::TowardZero => "toward_zero",
            Rounding::Up => "up",
            Rounding::Down => "down",
        }
    }

    /// True when this mode, applied to a value of the given sign, never
    /// increases the magnitude (so overflow clamps to the largest finite value).
    pub fn truncates_magnitude(self, negative: bool) -> bool {
        matches!(
            (self, negative),
            (Rounding::TowardZero, _) | (Rounding::Down, false) | (Rounding::Up, true)
        )
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Rounding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Rounding::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown rounding mode '{s}' (expected one of nearest_even, nearest_away, toward_zero, up, down)"
                )
            })
    }
}

/// What happens to an integer result that does not fit its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Overflow {
    /// Two's complement wrap-around (keep the low bits).
    #[default]
    Wrap,
    /// Clamp to the type's range.
    Saturate,
}

impl Overflow {
    /// The spelling used in the IR text format.
    pub fn name(self) -> &'static str {
        match self {
            Overflow::Wrap => "wrap",
            Overflow::Saturate => "saturate",
        }
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Overflow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wrap" => Ok(Overflow::Wrap),
            "saturate" => Ok(Overflow::Saturate),
            _ => Err(format!(
                "unknown overflow mode '{s}' (expected wrap or saturate)"
            )),
        }
    }
}

/// One rounding decision: a deterministic mode, or stochastic rounding with
/// the given random bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoundSpec {
    /// A deterministic mode.
    Mode(Rounding),
    /// Round the magnitude up when the top `bits` bits of the discarded
    /// fraction plus the low `bits` bits of `random` carry out; `bits` is
    /// 1..=64.
    Stochastic {
        /// Random bits (only the low `bits` are used).
        random: u64,
        /// How many random bits take part.
        bits: u32,
    },
}

impl RoundSpec {
    /// Stochastic rounding with `bits` clamped into 1..=64, as the
    /// `encode_stochastic` entry points of every format promise.
    pub fn stochastic(random: u64, bits: u32) -> RoundSpec {
        RoundSpec::Stochastic {
            random,
            bits: bits.clamp(1, 64),
        }
    }
}

impl From<Rounding> for RoundSpec {
    fn from(mode: Rounding) -> RoundSpec {
        RoundSpec::Mode(mode)
    }
}

/// Every option of a conversion to a float format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EncodeOptions {
    /// Rounding mode.
    pub rounding: Rounding,
    /// Clamp overflows (and infinities) to the largest finite value.
    pub saturate: bool,
    /// Replace results that would be subnormal by zero.
    pub flush_subnormals: bool,
}

impl EncodeOptions {
    /// Options with the given mode and saturation, subnormals kept.
    pub fn new(rounding: Rounding, saturate: bool) -> EncodeOptions {
        EncodeOptions {
            rounding,
            saturate,
            flush_subnormals: false,
        }
    }
}

/// Rounds the magnitude `mant * 2^-shift` to an integer.
///
/// `negative` is the sign of the value the magnitude belongs to (directed
/// modes depend on it). Exact: no intermediate rounding happens.
pub fn round_shift_right(mant: u128, shift: u32, negative: bool, mode: Rounding) -> u128 {
    round_shift_right_spec(mant, shift, negative, RoundSpec::Mode(mode))
}

/// [`round_shift_right`] for any [`RoundSpec`], stochastic included.
pub fn round_shift_right_spec(mant: u128, shift: u32, negative: bool, spec: RoundSpec) -> u128 {
    if shift == 0 {
        return mant;
    }
    let mode = match spec {
        RoundSpec::Mode(m) => m,
        RoundSpec::Stochastic { random, bits } => {
            let bits = bits.clamp(1, 64);
            let (q, rem) = if shift >= 128 {
                (0, mant)
            } else {
                (mant >> shift, mant & ((1u128 << shift) - 1))
            };
            // The top `bits` bits of the fraction rem / 2^shift.
            let top = if shift >= bits {
                let s = shift - bits;
                if s >= 128 {
                    0
                } else {
                    rem >> s
                }
            } else {
                rem << (bits - shift)
            };
            let r = if bits == 64 {
                random as u128
            } else {
                (random & ((1u64 << bits) - 1)) as u128
            };
            return q + ((top + r) >> bits);
        }
    };
    let (q, rem_nonzero, half_cmp) = if shift >= 128 {
        // Everything is fraction; the value is < 1/2 unless shift==128 and mant>=2^127.
        let half_cmp = if shift == 128 {
            mant.cmp(&(1u128 << 127))
        } else {
            std::cmp::Ordering::Less
        };
        (
            0u128,
            mant != 0,
            if mant == 0 {
                std::cmp::Ordering::Less
            } else {
                half_cmp
            },
        )
    } else {
        let q = mant >> shift;
        let rem = mant & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        (q, rem != 0, rem.cmp(&half))
    };
    if !rem_nonzero {
        return q;
    }
    let up = match mode {
        Rounding::TowardZero => false,
        Rounding::Up => !negative,
        Rounding::Down => negative,
        Rounding::NearestAway => half_cmp != std::cmp::Ordering::Less,
        Rounding::NearestEven => match half_cmp {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => q & 1 == 1,
        },
    };
    q + up as u128
}

/// Splits a finite, non-zero `f64` magnitude into `(mantissa, exponent)` with
/// `|x| = mantissa * 2^exponent` and `mantissa` an integer below 2^53.
pub fn decompose(x: f64) -> (u64, i32) {
    let bits = x.abs().to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    }
}

/// Rounds a finite `f64` to an integer (as `i128`) in the given mode.
/// Values beyond the `i128` range saturate.
pub fn round_f64_to_i128(x: f64, mode: Rounding) -> i128 {
    round_f64_to_i128_spec(x, RoundSpec::Mode(mode))
}

/// [`round_f64_to_i128`] for any [`RoundSpec`].
pub fn round_f64_to_i128_spec(x: f64, mode: RoundSpec) -> i128 {
    if x == 0.0 || x.is_nan() {
        return 0;
    }
    if x.is_infinite() || x.abs() >= 1.0e38 {
        return if x > 0.0 { i128::MAX } else { i128::MIN };
    }
    let neg = x < 0.0;
    let (m, e) = decompose(x);
    let mag = if e >= 0 {
        (m as u128) << e
    } else {
        round_shift_right_spec(m as u128, (-e) as u32, neg, mode)
    };
    if neg {
        -(mag as i128)
    } else {
        mag as i128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_follow_the_mode() {
        // 2.5 = 5 * 2^-1
        assert_eq!(round_shift_right(5, 1, false, Rounding::NearestEven), 2);
        assert_eq!(round_shift_right(7, 1, false, Rounding::NearestEven), 4);
        assert_eq!(round_shift_right(5, 1, false, Rounding::NearestAway), 3);
        assert_eq!(round_shift_right(5, 1, false, Rounding::TowardZero), 2);
        assert_eq!(round_shift_right(5, 1, false, Rounding::Up), 3);
        assert_eq!(round_shift_right(5, 1, true, Rounding::Up), 2);
        assert_eq!(round_shift_right(5, 1, true, Rounding::Down), 3);
        assert_eq!(round_shift_right(1, 200, false, Rounding::Up), 1);
        assert_eq!(round_shift_right(1, 200, false, Rounding::NearestEven), 0);
    }

    #[test]
    fn f64_to_int_rounding() {
        assert_eq!(round_f64_to_i128(-2.5, Rounding::NearestEven), -2);
        assert_eq!(round_f64_to_i128(-2.5, Rounding::NearestAway), -3);
        assert_eq!(round_f64_to_i128(-2.1, Rounding::Down), -3);
        assert_eq!(round_f64_to_i128(2.1, Rounding::Up), 3);
        assert_eq!(round_f64_to_i128(1e300, Rounding::Up), i128::MAX);
    }

    #[test]
    fn mode_names_round_trip() {
        for r in Rounding::ALL {
            assert_eq!(r.name().parse::<Rounding>().unwrap(), r);
        }
        assert!("bogus".parse::<Rounding>().is_err());
    }
}
