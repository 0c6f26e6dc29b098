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
//! Limits: Rust, auto-vectorized (AVX-512 or AVX2 where the host has
//! them; the same source, so the same results: AVX-512 took n = 8,
//! k = 14336 from about 61 to 42 us on one thread of the shared 2-core
//! machine, `examples/blockdot_cpu_time.rs` with m = 16), rows split
//! over the kernels' worker pool for large calls; its cost is reported by
//! `lowbit bench` as `act_pack_seconds`.

use crate::spec::{GemmSpec, BLOCK};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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
    /// `i32 [n, k_pad / 32]`: `-offset · Σ codes` of each block (the
    /// packed weights are `w + offset`, [`GemmSpec::blockdot_offset`]).
    pub corrections: Vec<i32>,
}

/// Quantizes one row of `k` values into `codes` (`k_pad` long), `scales`
/// and `corrections` (`k_pad / 32` each). Written so that LLVM vectorizes
/// it: `max |x|` is an integer maximum of the sign-cleared bit patterns
/// (which order like the magnitudes, NaN patterns above infinity's), so a
/// block holds a NaN exactly when that maximum exceeds `0x7f80_0000`.
#[inline(always)]
fn quantize_row_body(
    x: &[f32],
    offset: i32,
    codes: &mut [i8],
    scales: &mut [f32],
    corrections: &mut [i32],
) {
    for (b, xb) in x.chunks(BLOCK).enumerate() {
        let top = xb
            .iter()
            .map(|v| v.to_bits() & 0x7fff_ffff)
            .fold(0u32, u32::max);
        let amax = if top > 0x7f80_0000 {
            f32::NAN
        } else {
            f32::from_bits(top)
        };
        let scale = amax / 127.0;
        let mut sum = 0i32;
        for (d, &v) in codes[b * BLOCK..].iter_mut().zip(xb) {
            let t = v / scale;
            // NaN quotients (0/0, inf/inf, NaN) give the zero point 0.
            let r = if t.is_nan() {
                0.0
            } else {
                (t.clamp(-128.0, 127.0) + ROUND) - ROUND
            };
            // SAFETY: `r` is an integer in [-128, 127] (finite, in range),
            // so the unchecked conversion is exact; it vectorizes where the
            // saturating `as` does not.
            let q: i32 = unsafe { r.to_int_unchecked() };
            sum += q;
            *d = q as i8;
        }
        scales[b] = scale;
        corrections[b] = -offset * sum;
    }
}

/// [`quantize_row_body`] compiled for AVX2 (8-lane division and rounding).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(
    x: &[f32],
    offset: i32,
    codes: &mut [i8],
    scales: &mut [f32],
    corrections: &mut [i32],
) {
    quantize_row_body(x, offset, codes, scales, corrections)
}

/// [`quantize_row_body`] compiled for AVX-512 (16-lane division and
/// rounding, mask registers for the NaN select).
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn quantize_row_avx512(
    x: &[f32],
    offset: i32,
    codes: &mut [i8],
    scales: &mut [f32],
    corrections: &mut [i32],
) {
    quantize_row_body(x, offset, codes, scales, corrections)
}

/// One row, with the widest vector code the host runs.
fn quantize_row(x: &[f32], offset: i32, (codes, scales, corrections): RowBufs) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
    {
        // SAFETY: the features were just detected.
        unsafe { quantize_row_avx512(x, offset, codes, scales, corrections) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were just detected.
        unsafe { quantize_row_avx2(x, offset, codes, scales, corrections) };
        return;
    }
    quantize_row_body(x, offset, codes, scales, corrections)
}

/// One row's output buffers: codes, scales, corrections.
type RowBufs<'b> = (&'b mut [i8], &'b mut [f32], &'b mut [i32]);

/// One row's output slices.
type RowOut<'a> = (&'a [f32], &'a mut [i8], &'a mut [f32], &'a mut [i32]);

/// Quantizes `x` (`n` rows of `spec.k` values, sizes already checked)
/// for `spec`'s block-dot kernel, rows split over `threads` threads (at
/// least 1) of the kernels' worker pool when there is enough work.
pub fn quantize_activations(spec: &GemmSpec, x: &[f32], n: usize, threads: usize) -> QuantizedActs {
    let (k, k_pad) = (spec.k, spec.k_pad());
    let nb = k_pad / BLOCK;
    let offset = spec.blockdot_offset();
    let mut out = QuantizedActs {
        codes: vec![0; n * k_pad],
        scales: vec![0.0; n * nb],
        corrections: vec![0; n * nb],
    };
    let rows: Vec<RowOut> = x
        .chunks(k)
        .zip(out.codes.chunks_mut(k_pad))
        .zip(out.scales.chunks_mut(nb))
        .zip(out.corrections.chunks_mut(nb))
        .map(|(((a, b), c), d)| (a, b, c, d))
        .take(n)
        .collect();
    // Below about 64 Ki elements waking a second thread costs more than it
    // saves.
    if threads <= 1 || n < 2 || n * k < (1 << 16) {
        for (xr, c, s, o) in rows {
            quantize_row(xr, offset, (c, s, o));
        }
        return out;
    }
    let slots: Vec<Mutex<Option<RowOut>>> = rows.into_iter().map(|r| Mutex::new(Some(r))).collect();
    let next = AtomicUsize::new(0);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = slots.get(i) else { break };
        // Each slot is taken by exactly one thread (the counter hands it
        // out once), so the lock is never contended.
        let row = slot.lock().ok().and_then(|mut g| g.take());
        if let Some((xr, c, s, o)) = row {
            quantize_row(xr, offset, (c, s, o));
        }
    };
    crate::pool::run_on(threads.min(n), &work);
    drop(slots);
    out
}
