//! Benchmark inputs shared by `lowbit bench gemm` and the criterion
//! benches (`benches/gemm.rs`): arbitrary packed weights and activations
//! for a spec, and weight copies rotated over more memory than the
//! last-level cache, so that each call reads its weights from DRAM as in
//! real decoding.
//!
//! The data is deterministic (xorshift) and only needs to be arbitrary:
//! scales lie in 0.01 .. 0.05, zero points in range, activations in
//! -0.5 .. 0.5 (floats) or over all byte values (integers). Limits: the
//! rotation holds whole copies in memory (at least 256 MiB; callers with
//! little memory should check [`rotation_bytes`] first).

use crate::error::CpuError;
use crate::jit::Activations;
use crate::pack::PackedWeights;
use crate::probe::llc_bytes;
use crate::spec::GemmSpec;
use lowbit_numerics::{ElemType, Rounding};

/// Bytes the rotated weight copies should span: 1.25 x the last-level
/// cache, at least 256 MiB (64 MiB assumed where the LLC is unknown).
pub fn rotation_bytes() -> usize {
    let llc = llc_bytes().unwrap_or(64 << 20);
    ((llc as f64 * 1.25) as usize).max(256 << 20)
}

/// Fills `buf` with xorshift64* bytes from `seed`.
pub fn fill(buf: &mut [u8], mut seed: u64) {
    for chunk in buf.chunks_mut(8) {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let v = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Arbitrary packed weights for `spec`, with sane scales (0.01 .. 0.05)
/// and in-range zero points.
pub fn random_weights(spec: &GemmSpec) -> Result<PackedWeights, CpuError> {
    let mut codes = vec![0u8; spec.packed_weight_type().byte_size() as usize];
    fill(&mut codes, 0x9e37_79b9_7f4a_7c15);
    if spec.is_integer() {
        return PackedWeights::from_raw(spec, codes, Vec::new(), Vec::new());
    }
    // Block-dot scales: one f16 per padded row and 32-block.
    let groups = if spec.is_blockdot() {
        spec.m_pad() * (spec.k_pad() / crate::spec::BLOCK)
    } else {
        spec.m * spec.groups_per_row()
    };
    let scale = spec.weight.scale;
    let sb = (scale.bits() / 8) as usize;
    let mut scales = Vec::with_capacity(groups * sb);
    for i in 0..groups {
        let v = 0.01 + 0.04 * ((i * 7919) % 1000) as f64 / 1000.0;
        let c = scale.encode(v, Rounding::NearestEven, true);
        scales.extend_from_slice(&c.to_le_bytes()[..sb]);
    }
    let mask = spec.weight.dtype.code_mask() as u8;
    let zps = if spec.weight.zero_point {
        let mut z = vec![0u8; groups];
        fill(&mut z, 0x1234_5678);
        z.iter().map(|b| b & mask).collect()
    } else {
        Vec::new()
    };
    PackedWeights::from_raw(spec, codes, scales, zps)
}

/// Copies of one set of packed weights spanning at least `bytes`
/// (at least two copies); [`Rotation::next_copy`] cycles through them.
pub struct Rotation {
    copies: Vec<PackedWeights>,
    next: usize,
}

impl Rotation {
    /// Copies of `w` until they span `bytes`.
    pub fn new(w: PackedWeights, bytes: usize) -> Rotation {
        let count = bytes.div_ceil(w.byte_len().max(1)).max(2);
        let mut copies = Vec::with_capacity(count);
        for _ in 1..count {
            copies.push(w.clone());
        }
        copies.push(w);
        Rotation { copies, next: 0 }
    }

    /// Random weights for `spec` rotated over [`rotation_bytes`].
    pub fn for_spec(spec: &GemmSpec) -> Result<Rotation, CpuError> {
        Ok(Rotation::new(random_weights(spec)?, rotation_bytes()))
    }

    /// Number of copies.
    pub fn len(&self) -> usize {
        self.copies.len()
    }

    /// Always false: a rotation holds at least two copies.
    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }

    /// Bytes of one copy (codes, scales, zero points).
    pub fn copy_bytes(&self) -> usize {
        self.copies[0].byte_len()
    }

    /// The next copy, cycling.
    pub fn next_copy(&mut self) -> &PackedWeights {
        let i = self.next;
        self.next = (i + 1) % self.copies.len();
        &self.copies[i]
    }
}

/// Arbitrary activations `[n, k]` in every element type the kernels take.
pub struct BenchActivations {
    f32s: Vec<f32>,
    f16s: Vec<half::f16>,
    bf16s: Vec<half::bf16>,
    u8s: Vec<u8>,
    i8s: Vec<i8>,
    bits: Vec<u8>,
}

impl BenchActivations {
    /// `n * k` values of each type.
    pub fn new(n: usize, k: usize) -> BenchActivations {
        let mut xb = vec![0u8; n * k * 4];
        fill(&mut xb, 77);
        let f32s: Vec<f32> = xb
            .chunks(4)
            .map(|c| {
                (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) >> 8) as f32 / (1u32 << 24) as f32
                    - 0.5
            })
            .collect();
        let u8s: Vec<u8> = xb[..n * k].to_vec();
        BenchActivations {
            f16s: f32s.iter().map(|&v| half::f16::from_f32(v)).collect(),
            bf16s: f32s.iter().map(|&v| half::bf16::from_f32(v)).collect(),
            i8s: u8s.iter().map(|&b| b as i8).collect(),
            bits: u8s.iter().map(|b| b & 1).collect(),
            u8s,
            f32s,
        }
    }

    /// The bytes as codes of the integer type `elem` (bit-serial kernels).
    pub fn codes(&self, elem: ElemType) -> Activations<'_> {
        Activations::Codes(elem, &self.u8s)
    }

    /// The activations of type `act` (f32 for a type the kernels lack).
    pub fn get(&self, act: ElemType) -> Activations<'_> {
        match act {
            ElemType::Bipolar => Activations::B1(&self.bits),
            a if a == ElemType::U8 => Activations::U8(&self.u8s),
            a if a == ElemType::I8 => Activations::I8(&self.i8s),
            a if a == ElemType::F16 => Activations::F16(&self.f16s),
            a if a == ElemType::BF16 => Activations::BF16(&self.bf16s),
            _ => Activations::F32(&self.f32s),
        }
    }
}
