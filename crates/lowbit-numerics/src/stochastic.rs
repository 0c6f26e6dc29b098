//! Seeded, reproducible stochastic rounding.
//!
//! Element `i` of a stream draws its random bits from a counter-based hash of
//! `(seed, i)`, so a result depends only on the seed and the element's index:
//! the same call gives the same codes on any machine, in any chunking, and
//! in parallel. The rounding itself adds `bits` random bits below the kept
//! bits and truncates (as hardware stochastic rounding does), so the
//! probability of rounding the magnitude up is `floor(f * 2^bits) / 2^bits`
//! for a value a fraction `f` of the way from its lower to its upper
//! neighbour: unbiased when `f` has at most `bits` bits, and biased toward
//! zero by less than `2^-bits` of a unit in the last place otherwise.
//! The hash (SplitMix64's finalizer) is not cryptographic.

use crate::format::{ElemType, FormatError};

/// A seeded stochastic rounding stream with a declared number of random bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StochasticRounding {
    seed: u64,
    bits: u32,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl StochasticRounding {
    /// A stream with `bits` random bits per element (1 to 64).
    pub fn new(seed: u64, bits: u32) -> Result<StochasticRounding, FormatError> {
        if !(1..=64).contains(&bits) {
            return Err(FormatError(format!(
                "stochastic rounding: {bits} random bits requested (expected 1 to 64)"
            )));
        }
        Ok(StochasticRounding { seed, bits })
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Random bits per element.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The random bits element `index` uses (the low `bits` bits are set).
    pub fn random(&self, index: u64) -> u64 {
        let h = mix(self
            .seed
            .wrapping_add(mix(index.wrapping_add(0x9e37_79b9_7f4a_7c15))));
        h >> (64 - self.bits)
    }

    /// Encodes element `index` of the stream.
    pub fn encode(&self, elem: &ElemType, x: f64, index: u64, saturate: bool) -> u64 {
        elem.encode_stochastic(x, self.random(index), self.bits, saturate)
    }

    /// Encodes `xs` as elements `first_index..` of the stream into `out`.
    pub fn encode_f32_slice(
        &self,
        elem: &ElemType,
        xs: &[f32],
        first_index: u64,
        saturate: bool,
        out: &mut [u64],
    ) -> Result<(), FormatError> {
        if xs.len() != out.len() {
            return Err(FormatError(format!(
                "stochastic encode to {elem}: {} inputs but room for {} codes",
                xs.len(),
                out.len()
            )));
        }
        for (i, (x, o)) in xs.iter().zip(out.iter_mut()).enumerate() {
            *o = self.encode(
                elem,
                *x as f64,
                first_index.wrapping_add(i as u64),
                saturate,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_out_of_range_are_errors() {
        assert!(StochasticRounding::new(1, 0).is_err());
        assert!(StochasticRounding::new(1, 65).is_err());
        let s = StochasticRounding::new(1, 64).unwrap();
        assert_ne!(s.random(0), s.random(1));
    }

    #[test]
    fn random_bits_stay_in_width() {
        let s = StochasticRounding::new(7, 5).unwrap();
        let mut seen = [false; 32];
        for i in 0..1000 {
            let r = s.random(i);
            assert!(r < 32);
            seen[r as usize] = true;
        }
        assert!(seen.iter().all(|&b| b), "all 32 values should appear");
    }
}
