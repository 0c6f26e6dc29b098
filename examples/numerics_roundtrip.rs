//! Round-trips one tensor through several element and block-scaled formats
//! and prints the error of each.
//!
//! Run: `cargo run -p lowbit-numerics --example numerics_roundtrip`

use lowbit_numerics::block::{dequantize, quantize, BlockFormat};
use lowbit_numerics::convert::Codec;
use lowbit_numerics::pack::gguf;
use lowbit_numerics::{ElemType, EncodeOptions, FormatError, Rounding, StochasticRounding};

/// A deterministic, roughly normal 8 x 256 weight-like tensor with a few outliers.
fn tensor() -> Vec<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..8 * 256)
        .map(|i| {
            let (u1, u2) = (uniform().max(1e-12), uniform());
            let g = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            let outlier = if i % 97 == 0 { 8.0 } else { 1.0 };
            (g * 0.05 * outlier) as f32
        })
        .collect()
}

struct Errors {
    rms: f64,
    max: f64,
    rel: f64,
}

fn errors(x: &[f32], y: &[f32]) -> Errors {
    let n = x.len() as f64;
    let se: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let sx: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    let max = x
        .iter()
        .zip(y)
        .map(|(a, b)| ((a - b) as f64).abs())
        .fold(0.0, f64::max);
    Errors {
        rms: (se / n).sqrt(),
        max,
        rel: (se / sx).sqrt(),
    }
}

fn print(name: &str, bits: f64, x: &[f32], y: &[f32]) {
    let e = errors(x, y);
    println!(
        "{name:<22} {bits:>6.2}  {:>10.3e}  {:>10.3e}  {:>8.4}%",
        e.rms,
        e.max,
        e.rel * 100.0
    );
}

fn main() -> Result<(), FormatError> {
    let x = tensor();
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    println!("tensor: 8 x 256 values, max |x| = {amax:.4}");
    println!(
        "{:<22} {:>6}  {:>10}  {:>10}  {:>9}",
        "format", "bits", "rms err", "max err", "rel rms"
    );
    // Plain element formats: a per-tensor scale maps max |x| onto the
    // format's largest value, then values are rounded to nearest even.
    for name in [
        "f16", "bf16", "f8E4M3FN", "f8E5M2", "f6E2M3FN", "f6E3M2FN", "f4E2M1FN",
    ] {
        let elem: ElemType = name.parse()?;
        let Some(f) = elem.float() else { continue };
        let scale = if f.bits() > 8 {
            1.0
        } else {
            amax / f.max_finite() as f32
        };
        let scaled: Vec<f32> = x.iter().map(|v| v / scale).collect();
        let codec = Codec::new(elem, EncodeOptions::new(Rounding::NearestEven, true));
        let mut codes = vec![0u32; x.len()];
        codec.encode(&scaled, &mut codes)?;
        let mut back = vec![0f32; x.len()];
        codec.decode(&codes, &mut back)?;
        back.iter_mut().for_each(|v| *v *= scale);
        print(name, elem.bits() as f64, &x, &back);
    }
    // Per-tensor symmetric int8 and int4.
    for (name, qmax) in [("i8 (per-tensor)", 127.0f32), ("i4 (per-tensor)", 7.0)] {
        let scale = amax / qmax;
        let back: Vec<f32> = x
            .iter()
            .map(|v| (v / scale).round_ties_even().clamp(-qmax, qmax) * scale)
            .collect();
        print(name, (2.0 * qmax + 1.0).log2().ceil() as f64, &x, &back);
    }
    // Stochastic rounding to f8E4M3FN (same scale as above).
    let f8: ElemType = "f8E4M3FN".parse()?;
    let scale = amax / 448.0;
    let sr = StochasticRounding::new(2024, 16)?;
    let back: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = sr.encode(&f8, (v / scale) as f64, i as u64, true);
            f8.decode(c) as f32 * scale
        })
        .collect();
    print("f8E4M3FN stochastic", 8.0, &x, &back);
    // Block-scaled formats, blocks along the rows (axis 1).
    for name in [
        "mxfp8_e4m3",
        "mxfp8_e5m2",
        "mxfp6_e2m3",
        "mxfp6_e3m2",
        "mxfp4",
        "mxint8",
        "nvfp4",
    ] {
        let f: BlockFormat = name.parse()?;
        let q = quantize(&f, &x, &[8, 256], 1)?;
        let back = dequantize(&q)?;
        let bits = f.elem().bits() as f64 + 8.0 / f.block() as f64;
        print(name, bits, &x, &back);
    }
    let q = gguf::quantize_q4_0(&x)?;
    print(
        "gguf q4_0",
        q.len() as f64 * 8.0 / x.len() as f64,
        &x,
        &gguf::dequantize_q4_0(&q, x.len())?,
    );
    let q = gguf::quantize_q8_0(&x)?;
    print(
        "gguf q8_0",
        q.len() as f64 * 8.0 / x.len() as f64,
        &x,
        &gguf::dequantize_q8_0(&q, x.len())?,
    );
    Ok(())
}
