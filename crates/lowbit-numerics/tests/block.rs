//! Block-scaled formats: the MX shared-exponent rule, NVFP4's two-level
//! scales, axis handling, special values and bad input.

use lowbit_numerics::block::{dequantize, quantize, BlockFormat, ScaleRule};
use lowbit_numerics::{ElemType, FloatFormat, Rounding};

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            // Vary magnitudes across blocks.
            (u * 2f64.powi((i / 32 % 9) as i32 - 4)) as f32
        })
        .collect()
}

fn floor_log2(x: f64) -> i32 {
    x.log2().floor() as i32
}

#[test]
fn mx_shared_exponent_follows_the_spec() {
    let cases = [
        ("mxfp8_e4m3", FloatFormat::F8E4M3FN, 8),
        ("mxfp8_e5m2", FloatFormat::F8E5M2, 15),
        ("mxfp6_e2m3", FloatFormat::F6E2M3FN, 2),
        ("mxfp6_e3m2", FloatFormat::F6E3M2FN, 4),
        ("mxfp4", FloatFormat::F4E2M1FN, 2),
    ];
    let xs = data(32 * 12, 5);
    for (name, elem, emax) in cases {
        let f: BlockFormat = name.parse().unwrap();
        assert_eq!(f.to_string(), name);
        assert_eq!(f.elem_emax(), emax, "{name}");
        let q = quantize(&f, &xs, &[12, 32], 1).unwrap();
        assert_eq!(q.scales.len(), 12);
        let back = dequantize(&q).unwrap();
        for b in 0..12 {
            let blk = &xs[b * 32..b * 32 + 32];
            let amax = blk.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
            let shared = floor_log2(amax) - emax;
            assert_eq!(q.scales[b] as i32, shared + 127, "{name} block {b}");
            let x = 2f64.powi(shared);
            for i in 0..32 {
                let want = elem.encode(blk[i] as f64 / x, Rounding::NearestEven, true);
                assert_eq!(
                    q.codes[b * 32 + i] as u64,
                    want,
                    "{name} block {b} elem {i}"
                );
                assert_eq!(back[b * 32 + i] as f64, elem.decode(want) * x);
                // Error bound: half a unit of the element's top binade, plus
                // what the spec's clamp to the largest element cuts off.
                let half_ulp = 2f64.powi(emax - elem.man_bits() as i32 - 1) * x;
                let clamp = (blk[i].abs() as f64 - elem.max_finite() * x).max(0.0);
                let err = (back[b * 32 + i] as f64 - blk[i] as f64).abs();
                assert!(
                    err <= half_ulp + clamp,
                    "{name}: {} -> {}",
                    blk[i],
                    back[b * 32 + i]
                );
            }
        }
    }
}

#[test]
fn mxint8_uses_an_implied_two_to_the_minus_six() {
    let f = BlockFormat::mxint8();
    let mut xs = vec![0f32; 32];
    xs[0] = 1.5; // floor(log2 1.5) - 0 = 0: X = 1
    xs[1] = -1.0 / 64.0;
    xs[2] = 0.3;
    xs[3] = -1.5;
    let q = quantize(&f, &xs, &[32], 0).unwrap();
    assert_eq!(q.scales, [127]);
    let i8s: Vec<i8> = q.codes.iter().map(|&c| c as i8).collect();
    assert_eq!(&i8s[..4], &[96, -1, 19, -96]);
    let back = dequantize(&q).unwrap();
    assert_eq!(back[0], 1.5);
    assert_eq!(back[2], 19.0 / 64.0);
    // Symmetric clamp: a value rounding to -128 stays at -127.
    let ys: Vec<f32> = (0..32).map(|i| if i == 0 { -1.999 } else { 0.0 }).collect();
    let q = quantize(&f, &ys, &[32], 0).unwrap();
    assert_eq!(q.codes[0] as i8, -127);
}

#[test]
fn axis_and_partial_blocks() {
    // 3 x 40 tensor blocked along axis 1 (40 = 32 + 8) must equal its
    // transpose blocked along axis 0.
    let xs = data(120, 9);
    let f = BlockFormat::mxfp4();
    let q = quantize(&f, &xs, &[3, 40], 1).unwrap();
    assert_eq!(q.scale_shape(), vec![3, 2]);
    let mut t = vec![0f32; 120];
    for r in 0..3 {
        for c in 0..40 {
            t[c * 3 + r] = xs[r * 40 + c];
        }
    }
    let qt = quantize(&f, &t, &[40, 3], 0).unwrap();
    assert_eq!(qt.scale_shape(), vec![2, 3]);
    for r in 0..3 {
        for k in 0..2 {
            assert_eq!(q.scales[r * 2 + k], qt.scales[k * 3 + r]);
        }
        for c in 0..40 {
            assert_eq!(q.codes[r * 40 + c], qt.codes[c * 3 + r]);
        }
    }
    let (a, b) = (dequantize(&q).unwrap(), dequantize(&qt).unwrap());
    for r in 0..3 {
        for c in 0..40 {
            assert_eq!(a[r * 40 + c], b[c * 3 + r]);
        }
    }
}

#[test]
fn nvfp4_two_level_scales() {
    let xs = data(64, 3);
    let f = BlockFormat::nvfp4();
    assert_eq!(f.block(), 16);
    let q = quantize(&f, &xs, &[64], 0).unwrap();
    let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
    assert_eq!(q.tensor_scale, (amax as f64 / (6.0 * 448.0)) as f32);
    let e4m3 = FloatFormat::F8E4M3FN;
    let fp4 = FloatFormat::F4E2M1FN;
    let back = dequantize(&q).unwrap();
    for b in 0..4 {
        let blk = &xs[b * 16..b * 16 + 16];
        let bmax = blk.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
        let sc = e4m3.encode(
            bmax / 6.0 / q.tensor_scale as f64,
            Rounding::NearestEven,
            true,
        );
        assert_eq!(q.scales[b] as u64, sc);
        let s = e4m3.decode(sc) * q.tensor_scale as f64;
        for i in 0..16 {
            let want = fp4.encode(blk[i] as f64 / s, Rounding::NearestEven, true);
            assert_eq!(q.codes[b * 16 + i] as u64, want);
            assert_eq!(back[b * 16 + i], (fp4.decode(want) * s) as f32);
        }
    }
}

#[test]
fn special_values() {
    let f = BlockFormat::mxfp8_e4m3();
    let mut xs = vec![0f32; 64];
    xs[40] = f32::NAN;
    xs[41] = 3.0;
    let q = quantize(&f, &xs, &[64], 0).unwrap();
    assert_eq!(q.scales, [0, 0xff]);
    let back = dequantize(&q).unwrap();
    assert!(back[..32].iter().all(|&v| v == 0.0));
    assert!(back[32..].iter().all(|v| v.is_nan()));
    xs[40] = f32::INFINITY;
    assert_eq!(quantize(&f, &xs, &[64], 0).unwrap().scales[1], 0xff);
    // NVFP4: an all-zero tensor has tensor scale 1; a NaN block gets the E4M3 NaN.
    let nv = BlockFormat::nvfp4();
    let z = quantize(&nv, &[0.0; 16], &[16], 0).unwrap();
    assert_eq!(z.tensor_scale, 1.0);
    assert!(dequantize(&z).unwrap().iter().all(|&v| v == 0.0));
    let mut ys = vec![1.0f32; 32];
    ys[0] = f32::NAN;
    let q = quantize(&nv, &ys, &[32], 0).unwrap();
    assert_eq!(q.scales[0], 0x7f);
    assert_eq!(q.tensor_scale, (1.0 / (6.0 * 448.0)) as f32);
    // Huge and tiny blocks stay within the E8M0 range.
    let big = vec![f32::MAX; 32];
    let q = quantize(&f, &big, &[32], 0).unwrap();
    assert_eq!(q.scales[0] as i32, 127 - 8 + 127);
    assert_eq!(
        dequantize(&q).unwrap()[0],
        f32::MAX.min(448.0 * 2f32.powi(119))
    );
    let tiny = vec![f32::from_bits(1); 32];
    let q = quantize(&f, &tiny, &[32], 0).unwrap();
    assert_eq!(q.scales[0], 0);
}

#[test]
fn bad_formats_and_shapes_are_errors() {
    let e8m0 = ElemType::Float(FloatFormat::F8E8M0FNU);
    let fp4 = ElemType::Float(FloatFormat::F4E2M1FN);
    let err = |r: Result<BlockFormat, lowbit_numerics::FormatError>| r.unwrap_err().to_string();
    let m = err(BlockFormat::new(fp4, 0, e8m0, ScaleRule::SharedExponent, 0));
    assert!(m.contains("block size 0") && m.contains("f4E2M1FN"), "{m}");
    let m = err(BlockFormat::new(
        fp4,
        32,
        ElemType::I8,
        ScaleRule::SharedExponent,
        0,
    ));
    assert!(m.contains("scale type i8"), "{m}");
    let m = err(BlockFormat::new(
        fp4,
        32,
        ElemType::F16,
        ScaleRule::SharedExponent,
        0,
    ));
    assert!(m.contains("scale type f16"), "{m}");
    let tiny_scale: ElemType = "fE2M1B4F".parse().unwrap();
    let m = err(BlockFormat::new(
        fp4,
        16,
        tiny_scale,
        ScaleRule::Float {
            tensor_scale: false,
        },
        0,
    ));
    assert!(m.contains("cannot hold a scale of 1"), "{m}");
    let m = err(BlockFormat::new(
        ElemType::Bipolar,
        32,
        e8m0,
        ScaleRule::SharedExponent,
        0,
    ));
    assert!(m.contains("b1"), "{m}");
    let m = err(BlockFormat::new(
        ElemType::F16,
        32,
        e8m0,
        ScaleRule::SharedExponent,
        0,
    ));
    assert!(m.contains("f16"), "{m}");
    let m = "mxfp5".parse::<BlockFormat>().unwrap_err().to_string();
    assert!(m.contains("mxfp5"), "{m}");
    let f = BlockFormat::mxfp4();
    let m = quantize(&f, &[0.0; 10], &[3, 3], 0)
        .unwrap_err()
        .to_string();
    assert!(m.contains("mxfp4") && m.contains("9 elements"), "{m}");
    assert!(quantize(&f, &[0.0; 9], &[3, 3], 2).is_err());
    let mut q = quantize(&f, &[0.0; 9], &[3, 3], 1).unwrap();
    q.scales.pop();
    assert!(dequantize(&q).is_err());
    // A custom format: int4 elements with 2 fraction bits, 8-blocks, E8M0 scales.
    let c = BlockFormat::new("i4".parse().unwrap(), 8, e8m0, ScaleRule::SharedExponent, 2).unwrap();
    assert_eq!(c.elem_emax(), 0); // 7/4 = 1.75
    let q = quantize(&c, &[1.0, -0.5, 0.25, 1.75, 0.0, 0.0, 0.0, 0.0], &[8], 0).unwrap();
    assert_eq!(q.scales, [127]);
    assert_eq!(dequantize(&q).unwrap()[..4], [1.0, -0.5, 0.25, 1.75]);
}

/// Inputs that stress the fast path: random magnitudes, element-grid points
/// and midpoints scaled by each block's power of two and nudged by one `f32`
/// ulp either way, f32 subnormals, zeros, and NaN/infinite/zero blocks.
fn hard_data(n: usize, seed: u64, grid: &[f64]) -> Vec<f32> {
    let mut xs = data(n, seed);
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for (i, x) in xs.iter_mut().enumerate() {
        let r = next();
        let blk = i / 16;
        let e = (blk % 13) as i32 * 7 - 40;
        let g = grid[(r >> 8) as usize % grid.len()] * 2f64.powi(e);
        let v = match r % 11 {
            0..=2 => g as f32,
            3 => f32::from_bits((g as f32).to_bits().wrapping_add(1)),
            4 => f32::from_bits((g as f32).to_bits().saturating_sub(1)),
            5 => f32::from_bits((r >> 40) as u32 & 0x807f_ffff), // subnormal
            6 => 0.0,
            7 => -0.0,
            _ => *x,
        };
        *x = if r & (1 << 20) != 0 { -v } else { v };
        match (blk % 29, i % 16) {
            (5, 3) => *x = f32::NAN,
            (7, 9) => *x = f32::INFINITY,
            (11, 0) => *x = f32::NEG_INFINITY,
            (13, _) => *x = 0.0,
            (17, 1) => *x = f32::MAX,
            (19, _) => *x = f32::from_bits(1 + (i as u32 % 3)),
            _ => {}
        }
    }
    xs
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn fast_path_is_bit_exact_with_the_reference() {
    use lowbit_numerics::block::{dequantize_reference, quantize_reference};
    let e8m0 = ElemType::Float(FloatFormat::F8E8M0FNU);
    let mut formats: Vec<BlockFormat> = [
        "mxfp8_e4m3",
        "mxfp8_e5m2",
        "mxfp6_e2m3",
        "mxfp6_e3m2",
        "mxfp4",
        "mxint8",
        "nvfp4",
    ]
    .iter()
    .map(|n| n.parse().unwrap())
    .collect();
    formats.push(
        BlockFormat::new("i4".parse().unwrap(), 8, e8m0, ScaleRule::SharedExponent, 2).unwrap(),
    );
    formats.push(
        BlockFormat::new(
            ElemType::Float(FloatFormat::F8E4M3FN),
            16,
            ElemType::F16,
            ScaleRule::Float {
                tensor_scale: false,
            },
            0,
        )
        .unwrap(),
    );
    formats.push(
        BlockFormat::new(
            "i8".parse().unwrap(),
            32,
            ElemType::Float(FloatFormat::F8E4M3FN),
            ScaleRule::Float { tensor_scale: true },
            3,
        )
        .unwrap(),
    );
    // Outside the fast path's range: falls back to the reference.
    formats.push(
        BlockFormat::new(
            "fE5M2B130".parse().unwrap(),
            32,
            e8m0,
            ScaleRule::SharedExponent,
            0,
        )
        .unwrap(),
    );
    let shapes: [(&[usize], usize); 5] = [
        (&[32 * 40 + 7], 0),
        (&[3, 45], 1),
        (&[45, 3], 0),
        (&[2, 37, 5], 1),
        (&[4, 16 * 20], 1),
    ];
    let mut checked = 0;
    for base in formats {
        let grid: Vec<f64> = match base.elem() {
            ElemType::Float(f) => {
                let vals: Vec<f64> = (0..1u64 << f.bits())
                    .map(|c| f.decode(c))
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .collect();
                let mut g = vals.clone();
                g.extend(vals.windows(2).map(|w| (w[0] + w[1]) / 2.0));
                g
            }
            _ => (0..512).map(|k| k as f64 / 2.0 / 64.0).collect(),
        };
        for mode in Rounding::ALL {
            let f = base.with_rounding(mode);
            for (si, (shape, axis)) in shapes.iter().enumerate() {
                let n: usize = shape.iter().product();
                let xs = hard_data(n, 7 + si as u64, &grid);
                let fast = quantize(&f, &xs, shape, *axis).unwrap();
                let slow = quantize_reference(&f, &xs, shape, *axis).unwrap();
                assert_eq!(fast.scales, slow.scales, "{f} {mode} {shape:?}");
                assert_eq!(fast.tensor_scale.to_bits(), slow.tensor_scale.to_bits());
                for (j, x) in xs.iter().enumerate() {
                    assert_eq!(
                        fast.codes[j],
                        slow.codes[j],
                        "{f} {mode} {shape:?} element {j}: x = {x:e} ({:#x})",
                        x.to_bits()
                    );
                }
                let (a, b) = (
                    dequantize(&fast).unwrap(),
                    dequantize_reference(&slow).unwrap(),
                );
                assert!(same_bits(&a, &b), "{f} {mode} {shape:?} dequantize");
                // Arbitrary codes and scales (all 256 byte values) decode alike.
                let mut q = fast.clone();
                for (j, c) in q.codes.iter_mut().enumerate() {
                    *c = (j * 37 + si) as u8;
                }
                for (j, c) in q.scales.iter_mut().enumerate() {
                    *c = (j * 11 + 100) as u8;
                }
                let (a, b) = (dequantize(&q).unwrap(), dequantize_reference(&q).unwrap());
                assert!(
                    same_bits(&a, &b),
                    "{f} {mode} {shape:?} dequantize arbitrary codes"
                );
                checked += n;
            }
        }
    }
    assert!(checked > 100_000);
}
