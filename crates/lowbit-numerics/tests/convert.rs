//! The bulk converters against the scalar encoder and decoder: every code
//! decoded, and encoding on inputs that hit every rounding boundary of the
//! 8- and 16-bit formats, at every instruction-set level this CPU has.

use lowbit_numerics::convert::{encode_at_level, simd_level, Codec};
use lowbit_numerics::{ElemType, EncodeOptions, Rounding};

const FLOATS: [&str; 16] = [
    "f4E2M1FN",
    "f6E2M3FN",
    "f6E3M2FN",
    "f8E4M3FN",
    "f8E4M3FNUZ",
    "f8E5M2",
    "f8E5M2FNUZ",
    "f8E8M0FNU",
    "f16",
    "bf16",
    "tf32",
    "f32",
    "fE3M4",
    "fE5M7B20",
    "fE2M2F",
    "fE4M4FNU",
];

/// f32 inputs: every 16-bit prefix combined with low halves that sit on,
/// next to and between the rounding points of formats with up to 10
/// mantissa bits, plus pseudo-random patterns.
fn inputs(dense: bool) -> Vec<f32> {
    let lows: &[u32] = if dense {
        &[0, 1, 0x0fff, 0x1000, 0x1001, 0x7fff, 0x8000, 0x8001, 0xffff]
    } else {
        &[0, 0x1000, 0x8000]
    };
    let mut v = Vec::new();
    for hi in 0..=0xffffu32 {
        for &lo in lows {
            v.push(f32::from_bits(hi << 16 | lo));
        }
    }
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..if dense { 100_000 } else { 10_000 } {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.push(f32::from_bits((s >> 32) as u32));
    }
    v
}

fn levels() -> Vec<&'static str> {
    match simd_level() {
        "avx512" => vec!["avx512", "avx2", "portable"],
        "avx2" => vec!["avx2", "portable"],
        _ => vec!["portable"],
    }
}

#[test]
fn bulk_decode_matches_scalar_on_every_code() {
    for name in FLOATS.iter().copied().chain(["i4", "u8", "i8", "b1", "u3"]) {
        let elem: ElemType = name.parse().unwrap();
        let codec = Codec::new(elem, EncodeOptions::default());
        let n: u64 = if elem.bits() <= 16 {
            1 << elem.bits()
        } else {
            1 << 20
        };
        let step = if elem.bits() <= 16 {
            1
        } else {
            (1u64 << elem.bits()) / n
        };
        let codes: Vec<u32> = (0..n).map(|i| (i * step + (i % 7)) as u32).collect();
        let mut out = vec![0f32; codes.len()];
        codec.decode(&codes, &mut out).unwrap();
        for (c, o) in codes.iter().zip(&out) {
            let want = codec.decode_one(*c as u64);
            assert_eq!(o.to_bits(), want.to_bits(), "{name}: code {c:#x}");
            if !want.is_nan() {
                assert_eq!(
                    want as f64,
                    elem.decode(*c as u64),
                    "{name}: {c:#x} not exact"
                );
            }
        }
        if elem.bits() <= 8 {
            let c8: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
            let mut o8 = vec![0f32; c8.len()];
            codec.decode(&c8, &mut o8).unwrap();
            assert_eq!(
                o8.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn bulk_encode_matches_scalar_in_every_mode() {
    let dense = inputs(true);
    let sparse = inputs(false);
    for name in FLOATS {
        let elem: ElemType = name.parse().unwrap();
        for mode in Rounding::ALL {
            for (saturate, flush) in [(false, false), (true, false), (false, true), (true, true)] {
                let opts = EncodeOptions {
                    rounding: mode,
                    saturate,
                    flush_subnormals: flush,
                };
                let codec = Codec::new(elem, opts);
                assert!(codec.is_vectorized(), "{name}");
                // The full input set once per format, a lighter one otherwise.
                let xs = if mode == Rounding::NearestEven && !saturate && !flush {
                    &dense
                } else {
                    &sparse
                };
                let want: Vec<u32> = xs
                    .iter()
                    .map(|&x| elem.encode_with(x as f64, &opts) as u32)
                    .collect();
                for level in levels() {
                    let mut got = vec![0u32; xs.len()];
                    encode_at_level(&codec, level, xs, &mut got).unwrap();
                    for i in 0..xs.len() {
                        assert_eq!(
                            got[i], want[i],
                            "{name} {mode} sat={saturate} flush={flush} {level}: x = {:e} ({:#010x})",
                            xs[i], xs[i].to_bits()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn containers_and_lengths_are_checked() {
    let codec = Codec::new("f16".parse().unwrap(), EncodeOptions::default());
    let mut small = [0u8; 4];
    let err = codec.encode(&[1.0; 4], &mut small).unwrap_err();
    assert!(err.to_string().contains("f16"), "{err}");
    let mut out = [0u16; 3];
    assert!(codec.encode(&[1.0; 4], &mut out).is_err());
    let mut ok = [0u16; 4];
    codec.encode(&[1.0, -2.0, 0.5, 65504.0], &mut ok).unwrap();
    assert_eq!(ok, [0x3c00, 0xc000, 0x3800, 0x7bff]);
}

#[test]
fn ints_go_through_the_scalar_encoder() {
    let codec = Codec::new(
        "i4".parse().unwrap(),
        EncodeOptions::new(Rounding::NearestEven, true),
    );
    let mut out = [0u8; 5];
    codec
        .encode(&[2.5, -9.0, 7.4, f32::NAN, 100.0], &mut out)
        .unwrap();
    assert_eq!(out, [2, 8, 7, 0, 7]);
}
