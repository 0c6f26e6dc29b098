//! Per-call activation quantization of the block-dot path
//! ([`crate::spec::ActQuant`]): `f32` rows into `i8` codes per 32-block,
//! the blocks' `f32` scales and the `i32` corrections the kernel starts
//! each block's dot product from.
//!
//! The codes and scales are the interpreter's results for
//! `absmax_scale {block = 32, qmax = 127}` followed by `quantize` to `i8`
//! (blocked along the last axis, nearest-even, saturating), bit for bit:
//! the scale is `max|x| / 127` divided in `f32` (a NaN in the block makes
//! it NaN), the quotient `x / scale` is divided in `f32`, a NaN quotient
//! gives code 0 (the zero point; an all-zero block has scale 0 and `0 / 0`),
//! others are clamped to `[-128, 127]` and rounded to nearest-even (both
//! bounds are integers, so clamping first changes nothing). `tests/blockdot.rs`
//! checks this against the interpreter, including zeros, subnormals, NaN
//! and infinities.
//!
//! Limits: scalar Rust over `n · k` elements, rows split over the caller's
//! threads; its cost is reported by `lowbit bench` as `act_pack_seconds`.

use crate::spec::{GemmSpec, BLOCK};

/// `2^23 + 2^22`: adding and subtracting it rounds an `f32` of magnitude
/// below `2^22` to an integer, nearest-even (the FPU's default mode).
const ROUND: f32 = 12_582_912.0;

/// Quantized activations for one kernel call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantizedActs {
    /// `i8 [n, k_pad]` codes, 0 after `k`.
    pub codes: Vec<i8>,
    /// `f32 [n, k_pad / 32]` block scales (0 for blocks past `k`).
    pub scales: Vec<f32>,
    /// `i32 [n, k_pad / 32]`: `-8 · Σ codes` of each block (the packed
    /// weights are `w + 8`).
    pub corrections: Vec<i32>,
}

/// Quantizes one row of `k` values into `codes` (`k_pad` long), `scales`
/// and `corrections` (`k_pad / 32` each).
fn quantize_row(x: &[f32], codes: &mut [i8], scales: &mut [f32], corrections: &mut [i32]) {
    for (b, xb) in x.chunks(BLOCK).enumerate() {
        let amax = xb.iter().fold(0f32, |m, &v| {
            if m.is_nan() || v.is_nan() {
                f32::NAN
            } else {
                m.max(v.abs())
            }
        });
        let scale = amax / 127.0;
        let mut sum = 0i32;
        for (d, &v) in codes[b * BLOCK..].iter_mut().zip(xb) {
            let t = v / scale;
            let q = if t.is_nan() {
                0
            } else {
                ((t.clamp(-128.0, 127.0) + ROUND) - ROUND) as i8
            };
            sum += i32::from(q);
            *d = q;
        }
        scales[b] = scale;
        corrections[b] = -8 * sum;
    }
}

/// Quantizes `x` (`n` rows of `spec.k` values, sizes already checked)
/// for `spec`'s block-dot kernel, rows split over `threads` threads (at
/// least 1).
pub fn quantize_activations(spec: &GemmSpec, x: &[f32], n: usize, threads: usize) -> QuantizedActs {
    let (k, k_pad) = (spec.k, spec.k_pad());
    let nb = k_pad / BLOCK;
    let mut out = QuantizedActs {
        codes: vec![0; n * k_pad],
        scales: vec![0.0; n * nb],
        corrections: vec![0; n * nb],
    };
    let rows_per = n.div_ceil(threads.max(1)).max(1);
    let work = x
        .chunks(k)
        .zip(out.codes.chunks_mut(k_pad))
        .zip(out.scales.chunks_mut(nb))
        .zip(out.corrections.chunks_mut(nb));
    if threads <= 1 || n < 2 {
        for (((xr, c), s), o) in work {
            quantize_row(xr, c, s, o);
        }
        return out;
    }
    let rows: Vec<_> = work.collect();
    std::thread::scope(|scope| {
        let mut rest = rows;
        while !rest.is_empty() {
            let take = rows_per.min(rest.len());
            let chunk: Vec<_> = rest.drain(..take).collect();
            scope.spawn(move || {
                for (((xr, c), s), o) in chunk {
                    quantize_row(xr, c, s, o);
                }
            });
        }
    });
    out
}
