//! Sub-byte packing: bit streams (LSB- or MSB-first), the ONNX and GGUF
//! byte layouts, and bit-plane decomposition for bit-serial kernels.
//!
//! * [`pack_lsb`]/[`unpack_lsb`]: element `i` occupies bits
//!   `[i*b, (i+1)*b)` of a little-endian bit stream (so with `b = 4` element
//!   0 is the low nibble of byte 0). This is ONNX's order for `int4`,
//!   `uint4`, `int2`, `uint2` and `float4e2m1` tensors.
//! * [`pack_msb`]/[`unpack_msb`]: the first element takes the most
//!   significant bits of byte 0.
//! * [`gguf`]: GGUF/ggml `Q4_0` and `Q8_0` blocks.
//! * [`split_bitplanes`]/[`merge_bitplanes`]: plane `p` holds bit `p` of
//!   every code, 64 codes per `u64` word (code `64*w + j` in bit `j` of word
//!   `w`), planes one after another.
//!
//! Codes are `u8`s whose bits above the width are ignored when packing;
//! unused bits of the last byte or word are zero. Only widths 1 to 8 are
//! handled here (the IR crate packs wider layouts itself).

use crate::format::{ElemType, FormatError};

fn check_bits(what: &str, bits: u32) -> Result<(), FormatError> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(FormatError(format!(
            "{what}: {bits} bits per code (expected 1 to 8)"
        )))
    }
}

/// Bytes needed to pack `n` codes of `bits` bits.
pub fn packed_len(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}

fn check_lens(what: &str, need: usize, have: usize) -> Result<(), FormatError> {
    if need != have {
        return Err(FormatError(format!(
            "{what}: buffer holds {have} bytes, {need} needed"
        )));
    }
    Ok(())
}

/// Packs `codes` LSB-first into `out` (exactly [`packed_len`] bytes).
pub fn pack_lsb(codes: &[u8], bits: u32, out: &mut [u8]) -> Result<(), FormatError> {
    check_bits("pack_lsb", bits)?;
    check_lens("pack_lsb", packed_len(codes.len(), bits), out.len())?;
    let mask = ((1u16 << bits) - 1) as u8;
    match bits {
        8 => out.copy_from_slice(codes),
        4 => {
            for (o, c) in out.iter_mut().zip(codes.chunks(2)) {
                let hi = c.get(1).copied().unwrap_or(0);
                *o = (c[0] & 0xf) | (hi << 4);
            }
        }
        2 | 1 => {
            let per = (8 / bits) as usize;
            for (o, c) in out.iter_mut().zip(codes.chunks(per)) {
                let mut b = 0u8;
                for (k, &v) in c.iter().enumerate() {
                    b |= (v & mask) << (k as u32 * bits);
                }
                *o = b;
            }
        }
        _ => {
            out.fill(0);
            let mut acc = 0u32;
            let mut nacc = 0u32;
            let mut j = 0;
            for &v in codes {
                acc |= ((v & mask) as u32) << nacc;
                nacc += bits;
                if nacc >= 8 {
                    out[j] = acc as u8;
                    j += 1;
                    acc >>= 8;
                    nacc -= 8;
                }
            }
            if nacc > 0 {
                out[j] = acc as u8;
            }
        }
    }
    Ok(())
}

/// Unpacks `out.len()` codes from an LSB-first stream.
pub fn unpack_lsb(packed: &[u8], bits: u32, out: &mut [u8]) -> Result<(), FormatError> {
    check_bits("unpack_lsb", bits)?;
    check_lens("unpack_lsb", packed_len(out.len(), bits), packed.len())?;
    let mask = ((1u16 << bits) - 1) as u8;
    match bits {
        8 => out.copy_from_slice(packed),
        4 => {
            for (c, &b) in out.chunks_mut(2).zip(packed) {
                c[0] = b & 0xf;
                if let Some(h) = c.get_mut(1) {
                    *h = b >> 4;
                }
            }
        }
        2 | 1 => {
            let per = (8 / bits) as usize;
            for (c, &b) in out.chunks_mut(per).zip(packed) {
                for (k, v) in c.iter_mut().enumerate() {
                    *v = (b >> (k as u32 * bits)) & mask;
                }
            }
        }
        _ => {
            let mut acc = 0u32;
            let mut nacc = 0u32;
            let mut src = packed.iter();
            for v in out.iter_mut() {
                if nacc < bits {
                    acc |= (src.next().copied().unwrap_or(0) as u32) << nacc;
                    nacc += 8;
                }
                *v = (acc as u8) & mask;
                acc >>= bits;
                nacc -= bits;
            }
        }
    }
    Ok(())
}

/// Packs `codes` MSB-first (element 0 in the top bits of byte 0).
pub fn pack_msb(codes: &[u8], bits: u32, out: &mut [u8]) -> Result<(), FormatError> {
    check_bits("pack_msb", bits)?;
    check_lens("pack_msb", packed_len(codes.len(), bits), out.len())?;
    let mask = ((1u16 << bits) - 1) as u32;
    out.fill(0);
    let mut acc = 0u32;
    let mut nacc = 0u32;
    let mut j = 0;
    for &v in codes {
        acc = (acc << bits) | (v as u32 & mask);
        nacc += bits;
        if nacc >= 8 {
            nacc -= 8;
            out[j] = (acc >> nacc) as u8;
            j += 1;
            acc &= (1u32 << nacc) - 1;
        }
    }
    if nacc > 0 {
        out[j] = (acc << (8 - nacc)) as u8;
    }
    Ok(())
}

/// Unpacks `out.len()` codes from an MSB-first stream.
pub fn unpack_msb(packed: &[u8], bits: u32, out: &mut [u8]) -> Result<(), FormatError> {
    check_bits("unpack_msb", bits)?;
    check_lens("unpack_msb", packed_len(out.len(), bits), packed.len())?;
    let mask = (1u32 << bits) - 1;
    let mut acc = 0u32;
    let mut nacc = 0u32;
    let mut src = packed.iter();
    for v in out.iter_mut() {
        if nacc < bits {
            acc = (acc << 8) | src.next().copied().unwrap_or(0) as u32;
            nacc += 8;
        }
        nacc -= bits;
        *v = ((acc >> nacc) & mask) as u8;
        acc &= (1u32 << nacc) - 1;
    }
    Ok(())
}

fn onnx_bits(elem: &ElemType) -> Result<u32, FormatError> {
    let ok = match elem {
        ElemType::Int { bits, .. } => matches!(bits, 2 | 4),
        ElemType::Float(f) => *f == crate::FloatFormat::F4E2M1FN,
        ElemType::Bipolar => false,
    };
    if ok {
        Ok(elem.bits())
    } else {
        Err(FormatError(format!(
            "ONNX packs no {elem} tensors (only int4, uint4, int2, uint2, float4e2m1)"
        )))
    }
}

/// Packs codes into ONNX TensorProto raw data (low bits first, last byte
/// zero-padded) for `int4`, `uint4`, `int2`, `uint2` and `f4E2M1FN`.
pub fn pack_onnx(elem: &ElemType, codes: &[u8]) -> Result<Vec<u8>, FormatError> {
    let bits = onnx_bits(elem)?;
    let mut out = vec![0u8; packed_len(codes.len(), bits)];
    pack_lsb(codes, bits, &mut out)?;
    Ok(out)
}

/// Unpacks `n` codes of ONNX raw data (see [`pack_onnx`]).
pub fn unpack_onnx(elem: &ElemType, raw: &[u8], n: usize) -> Result<Vec<u8>, FormatError> {
    let bits = onnx_bits(elem)?;
    let mut out = vec![0u8; n];
    unpack_lsb(raw, bits, &mut out).map_err(|e| FormatError(format!("ONNX {elem} data: {e}")))?;
    Ok(out)
}

/// `SPREAD[b]` has bit `k` of `b` in bit `8k`.
const SPREAD: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut k = 0;
        while k < 8 {
            t[b] |= (((b >> k) & 1) as u64) << (8 * k);
            k += 1;
        }
        b += 1;
    }
    t
};

/// Words per plane for `n` codes.
pub fn plane_words(n: usize) -> usize {
    n.div_ceil(64)
}

/// Splits `codes` into `bits` bit-planes of [`plane_words`] words each.
pub fn split_bitplanes(codes: &[u8], bits: u32, planes: &mut [u64]) -> Result<(), FormatError> {
    check_bits("split_bitplanes", bits)?;
    let words = plane_words(codes.len());
    if planes.len() != words * bits as usize {
        return Err(FormatError(format!(
            "split_bitplanes: {} words given, {} needed for {} codes of {bits} bits",
            planes.len(),
            words * bits as usize,
            codes.len()
        )));
    }
    for (w, chunk) in codes.chunks(64).enumerate() {
        let mut acc = [0u64; 8];
        for (g, eight) in chunk.chunks(8).enumerate() {
            let mut buf = [0u8; 8];
            buf[..eight.len()].copy_from_slice(eight);
            let x = u64::from_le_bytes(buf);
            for (p, a) in acc.iter_mut().enumerate().take(bits as usize) {
                // Gather bit p of each byte into one byte (see module docs).
                let y =
                    ((x >> p) & 0x0101_0101_0101_0101).wrapping_mul(0x0102_0408_1020_4080) >> 56;
                *a |= y << (8 * g);
            }
        }
        for (p, a) in acc.iter().enumerate().take(bits as usize) {
            planes[p * words + w] = *a;
        }
    }
    Ok(())
}

/// Rebuilds `out.len()` codes from `bits` bit-planes (inverse of
/// [`split_bitplanes`]).
pub fn merge_bitplanes(planes: &[u64], bits: u32, out: &mut [u8]) -> Result<(), FormatError> {
    check_bits("merge_bitplanes", bits)?;
    let words = plane_words(out.len());
    if planes.len() != words * bits as usize {
        return Err(FormatError(format!(
            "merge_bitplanes: {} words given, {} needed for {} codes of {bits} bits",
            planes.len(),
            words * bits as usize,
            out.len()
        )));
    }
    for (w, chunk) in out.chunks_mut(64).enumerate() {
        for (g, eight) in chunk.chunks_mut(8).enumerate() {
            let mut x = 0u64;
            for p in 0..bits as usize {
                let byte = (planes[p * words + w] >> (8 * g)) & 0xff;
                x |= SPREAD[byte as usize] << p;
            }
            let bytes = x.to_le_bytes();
            eight.copy_from_slice(&bytes[..eight.len()]);
        }
    }
    Ok(())
}

pub mod gguf {
    //! GGUF (ggml) `Q4_0` and `Q8_0` blocks of 32 elements.
    //!
    //! `Q4_0`: an `f16` scale `d` (little-endian) then 16 bytes; byte `j`
    //! holds element `j` in its low nibble and element `j + 16` in its high
    //! nibble; the value is `(q - 8) * d`. Quantization follows ggml's
    //! reference: `d = x_max / -8` where `x_max` is the first element of
    //! largest magnitude, `q = min(15, trunc(x / d + 8.5))` in `f32`.
    //!
    //! `Q8_0`: an `f16` scale then 32 `i8`; `d = max|x| / 127`,
    //! `q = round_half_away(x / d)`.

    use crate::format::FormatError;
    use half::f16;

    /// Elements per block.
    pub const BLOCK: usize = 32;
    /// Bytes per `Q4_0` block.
    pub const Q4_0_BYTES: usize = 18;
    /// Bytes per `Q8_0` block.
    pub const Q8_0_BYTES: usize = 34;

    fn check_len(what: &str, n: usize) -> Result<(), FormatError> {
        if !n.is_multiple_of(BLOCK) {
            return Err(FormatError(format!(
                "{what}: {n} elements is not a multiple of the {BLOCK}-element block"
            )));
        }
        Ok(())
    }

    fn check_bytes(what: &str, n: usize, per: usize, have: usize) -> Result<(), FormatError> {
        check_len(what, n)?;
        if have != n / BLOCK * per {
            return Err(FormatError(format!(
                "{what}: {have} bytes for {n} elements ({} expected)",
                n / BLOCK * per
            )));
        }
        Ok(())
    }

    /// Quantizes `xs` (a multiple of 32 long) to `Q4_0` blocks.
    pub fn quantize_q4_0(xs: &[f32]) -> Result<Vec<u8>, FormatError> {
        check_len("GGUF Q4_0", xs.len())?;
        let mut out = Vec::with_capacity(xs.len() / BLOCK * Q4_0_BYTES);
        for b in xs.chunks(BLOCK) {
            let mut amax = 0f32;
            let mut max = 0f32;
            for &v in b {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
            for j in 0..BLOCK / 2 {
                let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
                out.push(q(b[j]) | (q(b[j + BLOCK / 2]) << 4));
            }
        }
        Ok(out)
    }

    /// Dequantizes `n` elements of `Q4_0` data.
    pub fn dequantize_q4_0(data: &[u8], n: usize) -> Result<Vec<f32>, FormatError> {
        check_bytes("GGUF Q4_0", n, Q4_0_BYTES, data.len())?;
        let mut out = vec![0f32; n];
        for (blk, o) in data.chunks(Q4_0_BYTES).zip(out.chunks_mut(BLOCK)) {
            let d = f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
            for j in 0..BLOCK / 2 {
                let b = blk[2 + j];
                o[j] = ((b & 0xf) as i32 - 8) as f32 * d;
                o[j + BLOCK / 2] = ((b >> 4) as i32 - 8) as f32 * d;
            }
        }
        Ok(out)
    }

    /// Quantizes `xs` (a multiple of 32 long) to `Q8_0` blocks.
    pub fn quantize_q8_0(xs: &[f32]) -> Result<Vec<u8>, FormatError> {
        check_len("GGUF Q8_0", xs.len())?;
        let mut out = Vec::with_capacity(xs.len() / BLOCK * Q8_0_BYTES);
        for b in xs.chunks(BLOCK) {
            let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
            for &v in b {
                out.push((v * id).round() as i8 as u8);
            }
        }
        Ok(out)
    }

    /// Dequantizes `n` elements of `Q8_0` data.
    pub fn dequantize_q8_0(data: &[u8], n: usize) -> Result<Vec<f32>, FormatError> {
        check_bytes("GGUF Q8_0", n, Q8_0_BYTES, data.len())?;
        let mut out = vec![0f32; n];
        for (blk, o) in data.chunks(Q8_0_BYTES).zip(out.chunks_mut(BLOCK)) {
            let d = f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
            for (v, &q) in o.iter_mut().zip(&blk[2..]) {
                *v = q as i8 as f32 * d;
            }
        }
        Ok(out)
    }
}
