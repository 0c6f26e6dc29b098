//! Packing primitives against bit-by-bit reference implementations.

use lowbit_numerics::pack::{
    gguf, merge_bitplanes, pack_lsb, pack_msb, pack_onnx, packed_len, plane_words, split_bitplanes,
    unpack_lsb, unpack_msb, unpack_onnx,
};
use lowbit_numerics::ElemType;

fn codes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn bit(bytes: &[u8], t: usize, msb: bool) -> u8 {
    let b = bytes[t / 8];
    if msb {
        (b >> (7 - t % 8)) & 1
    } else {
        (b >> (t % 8)) & 1
    }
}

#[test]
fn lsb_and_msb_streams_match_the_bitwise_definition() {
    for bits in 1..=8u32 {
        for n in 0..80usize {
            let c = codes(n, (bits as u64) << 8 | n as u64);
            let mask = ((1u16 << bits) - 1) as u8;
            let mut lsb = vec![0xaau8; packed_len(n, bits)];
            let mut msb = vec![0x55u8; packed_len(n, bits)];
            pack_lsb(&c, bits, &mut lsb).unwrap();
            pack_msb(&c, bits, &mut msb).unwrap();
            let b = bits as usize;
            for (i, &v) in c.iter().enumerate() {
                for k in 0..b {
                    assert_eq!(
                        bit(&lsb, i * b + k, false),
                        (v >> k) & 1,
                        "lsb {bits} {n} {i}"
                    );
                    assert_eq!(
                        bit(&msb, i * b + k, true),
                        (v >> (b - 1 - k)) & 1,
                        "msb {bits} {n} {i}"
                    );
                }
            }
            // Padding is zero.
            for t in n * b..lsb.len() * 8 {
                assert_eq!(bit(&lsb, t, false), 0);
                assert_eq!(bit(&msb, t, true), 0);
            }
            let mut back = vec![0u8; n];
            unpack_lsb(&lsb, bits, &mut back).unwrap();
            assert_eq!(back, c.iter().map(|v| v & mask).collect::<Vec<_>>());
            unpack_msb(&msb, bits, &mut back).unwrap();
            assert_eq!(back, c.iter().map(|v| v & mask).collect::<Vec<_>>());
        }
    }
}

#[test]
fn bad_widths_and_lengths_are_errors() {
    let mut out = [0u8; 2];
    assert!(pack_lsb(&[1, 2, 3], 0, &mut out).is_err());
    assert!(pack_lsb(&[1, 2, 3], 9, &mut out).is_err());
    assert!(pack_lsb(&[1, 2, 3, 4, 5], 4, &mut out).is_err());
    assert!(unpack_msb(&[0u8; 3], 4, &mut out).is_err());
    let err = pack_onnx(&ElemType::I8, &[1]).unwrap_err();
    assert!(err.to_string().contains("i8"), "{err}");
    assert!(pack_onnx(&"u3".parse().unwrap(), &[1]).is_err());
    let mut planes = [0u64; 3];
    assert!(split_bitplanes(&[1; 65], 2, &mut planes).is_err());
    assert!(gguf::quantize_q4_0(&[0.0; 31]).is_err());
    assert!(gguf::dequantize_q8_0(&[0u8; 33], 32).is_err());
}

#[test]
fn onnx_int4_is_low_nibble_first() {
    let i4: ElemType = "i4".parse().unwrap();
    let codes: Vec<u8> = [1i128, -2, 3]
        .iter()
        .map(|&v| i4.encode_int(v, lowbit_numerics::Overflow::Wrap) as u8)
        .collect();
    let raw = pack_onnx(&i4, &codes).unwrap();
    assert_eq!(raw, [0xe1, 0x03]);
    assert_eq!(unpack_onnx(&i4, &raw, 3).unwrap(), codes);
    let u2: ElemType = "u2".parse().unwrap();
    assert_eq!(
        pack_onnx(&u2, &[1, 2, 3, 0, 1]).unwrap(),
        [0b00_11_10_01, 0b01]
    );
    let fp4 = ElemType::Float(lowbit_numerics::FloatFormat::F4E2M1FN);
    assert_eq!(pack_onnx(&fp4, &[0x7, 0xf]).unwrap(), [0xf7]);
}

#[test]
fn bitplanes_round_trip_and_match_the_definition() {
    for bits in 1..=8u32 {
        for n in [0usize, 1, 7, 8, 63, 64, 65, 200] {
            let c: Vec<u8> = codes(n, n as u64 + 99)
                .iter()
                .map(|v| v & ((1u16 << bits) - 1) as u8)
                .collect();
            let words = plane_words(n);
            let mut planes = vec![u64::MAX; words * bits as usize];
            split_bitplanes(&c, bits, &mut planes).unwrap();
            for p in 0..bits as usize {
                for w in 0..words {
                    for j in 0..64 {
                        let i = w * 64 + j;
                        let want = if i < n { (c[i] >> p) & 1 } else { 0 };
                        assert_eq!(
                            (planes[p * words + w] >> j) & 1,
                            want as u64,
                            "{bits} {n} p{p} i{i}"
                        );
                    }
                }
            }
            let mut back = vec![0xffu8; n];
            merge_bitplanes(&planes, bits, &mut back).unwrap();
            assert_eq!(back, c);
        }
    }
}

#[test]
fn gguf_q4_0_layout_and_values() {
    // Largest magnitude is -8 at index 3: d = -8 / -8 = 1.
    let mut xs = [0f32; 32];
    for (i, x) in xs.iter_mut().enumerate() {
        *x = (i as f32 - 16.0) * 0.45;
    }
    xs[3] = -8.0;
    let q = gguf::quantize_q4_0(&xs).unwrap();
    assert_eq!(q.len(), gguf::Q4_0_BYTES);
    assert_eq!(
        u16::from_le_bytes([q[0], q[1]]),
        half::f16::from_f32(1.0).to_bits()
    );
    for j in 0..16 {
        let lo = (q[2 + j] & 0xf) as i32;
        let hi = (q[2 + j] >> 4) as i32;
        // q = min(15, trunc(x / d + 8.5)) with d = 1.
        let want = |x: f32| ((x + 8.5) as i32).min(15);
        assert_eq!(lo, want(xs[j]), "element {j}");
        assert_eq!(hi, want(xs[j + 16]), "element {}", j + 16);
    }
    let back = gguf::dequantize_q4_0(&q, 32).unwrap();
    assert_eq!(back[3], -8.0);
    for (x, y) in xs.iter().zip(&back) {
        assert!(
            (x - y).abs() <= 0.5 + 1e-6 || (*x >= 7.0 && *y == 7.0),
            "{x} -> {y}"
        );
    }
    // All-zero blocks give d = 0 and codes 8.
    let z = gguf::quantize_q4_0(&[0.0; 32]).unwrap();
    assert!(z[2..].iter().all(|&b| b == 0x88));
}

#[test]
fn gguf_q8_0_values() {
    let xs: Vec<f32> = (0..64)
        .map(|i| ((i * 37 % 64) as f32 - 31.5) / 10.0)
        .collect();
    let q = gguf::quantize_q8_0(&xs).unwrap();
    assert_eq!(q.len(), 2 * gguf::Q8_0_BYTES);
    let back = gguf::dequantize_q8_0(&q, 64).unwrap();
    for (b, chunk) in xs.chunks(32).enumerate() {
        let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = half::f16::from_f32(amax / 127.0).to_f32();
        for (i, x) in chunk.iter().enumerate() {
            let code = q[b * gguf::Q8_0_BYTES + 2 + i] as i8;
            assert_eq!(code, (x * (1.0 / (amax / 127.0))).round() as i8);
            assert!((back[b * 32 + i] - x).abs() <= d * 0.5 + amax * 2e-3);
        }
    }
}
