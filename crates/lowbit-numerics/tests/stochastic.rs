//! Stochastic rounding: unbiased within a statistical tolerance, and
//! reproducible from its seed regardless of chunking.

use lowbit_numerics::{ElemType, StochasticRounding};

/// Mean of `n` stochastic roundings of `x`, decoded.
fn mean(sr: &StochasticRounding, t: &ElemType, x: f64, n: u64) -> f64 {
    (0..n)
        .map(|i| t.decode(sr.encode(t, x, i, true)))
        .sum::<f64>()
        / n as f64
}

#[test]
fn unbiased_within_five_sigma() {
    let n = 20_000u64;
    let cases: [(&str, f64, f64, f64); 5] = [
        // (type, lower neighbour, upper neighbour, fraction of the way up)
        ("f8E4M3FN", 1.0, 1.125, 0.3),
        ("f8E4M3FN", -20.0, -18.0, 0.71875),
        ("f4E2M1FN", 4.0, 6.0, 0.1),
        ("bf16", 1.0, 1.0078125, 0.5),
        ("i4", 2.0, 3.0, 0.875),
    ];
    for (bits, seed) in [(8u32, 1u64), (16, 2), (32, 3)] {
        let sr = StochasticRounding::new(seed, bits).unwrap();
        for (name, lo, hi, f) in cases {
            let t: ElemType = name.parse().unwrap();
            let x = lo + (hi - lo) * f;
            // Rounding up happens with probability floor(f * 2^bits) / 2^bits.
            let p = (f * 2f64.powi(bits as i32)).floor() / 2f64.powi(bits as i32);
            let want = lo + (hi - lo) * p;
            let sigma = (hi - lo).abs() * (p * (1.0 - p) / n as f64).sqrt();
            let got = mean(&sr, &t, x, n);
            assert!(
                (got - want).abs() <= 5.0 * sigma + 1e-12,
                "{name} x={x} bits={bits}: mean {got}, expected {want} (sigma {sigma})"
            );
            // Every result is one of the two neighbours.
            for i in 0..100 {
                let v = t.decode(sr.encode(&t, x, i, true));
                assert!(v == lo || v == hi, "{name}: {v}");
            }
        }
    }
}

#[test]
fn few_random_bits_truncate_the_fraction() {
    // With 2 random bits a fraction of 0.2 (< 1/4) never rounds up.
    let sr = StochasticRounding::new(9, 2).unwrap();
    let t: ElemType = "f8E4M3FN".parse().unwrap();
    let x = 1.0 + 0.125 * 0.2;
    assert!((0..1000).all(|i| t.decode(sr.encode(&t, x, i, true)) == 1.0));
    // 0.75 rounds up exactly three times in four on average.
    let m = mean(&sr, &t, 1.0 + 0.125 * 0.75, 40_000);
    assert!((m - (1.0 + 0.125 * 0.75)).abs() < 0.003, "{m}");
}

#[test]
fn exact_values_never_move_and_overflow_respects_saturation() {
    let sr = StochasticRounding::new(3, 16).unwrap();
    let t: ElemType = "f8E4M3FN".parse().unwrap();
    for c in 0..0x7e {
        let v = t.decode(c);
        for i in 0..20 {
            assert_eq!(sr.encode(&t, v, i, false), c);
        }
    }
    // 460 lies between 448 (max) and the virtual 480: saturating keeps 448,
    // otherwise some draws overflow to NaN.
    let sat: Vec<u64> = (0..1000).map(|i| sr.encode(&t, 460.0, i, true)).collect();
    assert!(sat.iter().all(|&c| c == 0x7e));
    let nonsat: Vec<u64> = (0..1000).map(|i| sr.encode(&t, 460.0, i, false)).collect();
    let nans = nonsat.iter().filter(|&&c| c == 0x7f).count();
    assert!(nans > 250 && nans < 500, "{nans}");
    assert!(nonsat.iter().all(|&c| c == 0x7e || c == 0x7f));
}

#[test]
fn reproducible_from_the_seed_in_any_chunking() {
    let t: ElemType = "f6E3M2FN".parse().unwrap();
    let xs: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.037).sin() * 20.0).collect();
    let a = StochasticRounding::new(42, 12).unwrap();
    let mut one = vec![0u64; xs.len()];
    a.encode_f32_slice(&t, &xs, 0, true, &mut one).unwrap();
    let mut again = vec![0u64; xs.len()];
    a.encode_f32_slice(&t, &xs, 0, true, &mut again).unwrap();
    assert_eq!(one, again);
    let mut chunked = vec![0u64; xs.len()];
    for (k, (c, o)) in xs.chunks(37).zip(chunked.chunks_mut(37)).enumerate() {
        a.encode_f32_slice(&t, c, (k * 37) as u64, true, o).unwrap();
    }
    assert_eq!(one, chunked);
    let b = StochasticRounding::new(43, 12).unwrap();
    let mut other = vec![0u64; xs.len()];
    b.encode_f32_slice(&t, &xs, 0, true, &mut other).unwrap();
    assert_ne!(one, other);
    assert!(a
        .encode_f32_slice(&t, &xs, 0, true, &mut other[..10])
        .is_err());
}
