//! Weight pre-packing: logical quantized weights (the operands of the IR's
//! `dequantize`) into the bytes a kernel reads.
//!
//! Codes go through lowbit-ir's own [`Tensor::to_bytes`] with the spec's
//! [`GemmSpec::packed_layout`] on the padded shape `[m, k_pad]`, so the
//! packed form is exactly what the IR type `GemmSpec::packed_weight_type`
//! says. Scales are stored row-major in their own element type
//! (little-endian), zero points one code per byte.
//! The packed codes start on a 64-byte boundary (a copy into aligned
//! memory when wrapped), so the kernels' 64-byte loads never straddle two
//! cache lines.
//!
//! W8A8/W4A8 weights (`i8`, `i4`, `u4`) go the same way into the panel
//! layouts of [`GemmSpec::packed_layout`] on `[m_pad, k_pad]`. Each padded
//! row also gets the `i32` the kernel adds to its outputs:
//! `-(o + zx) * sum(w)`, with `o = 128` when `i8` activations are offset
//! to `u8` (else 0) and `zx` an activation zero point (`matmul_int`'s,
//! see [`PackedWeights::pack_int_centered`]); wrapping, like the sums.
//!
//! [`PackedWeights::pack_with`] and [`PackedWeights::pack_int_with`] take
//! the codes from a closure instead of a `Tensor` (a model's constant
//! read in place: no `u64` per weight) and give the same bytes as `pack`
//! and `pack_int_centered`; rows and columns past the weights are code 0.
//!
//! Packed codes of 2 MiB or more are kept in memory advised for
//! transparent huge pages (Linux `madvise(MADV_HUGEPAGE)` before the pages
//! are touched, see `huge_page_vec`): a decode call streams every weight
//! once, and with 4 KiB pages each row stream needs a page walk per page;
//! measured 5 – 6 % less CPU time per q4_0/q8_0 decode call (BENCHMARKS.md,
//! "decode layout"). Elsewhere, or where the kernel declines, the advice is a
//! no-op and the buffer is an ordinary copy.
//!
//! Bit-serial specs store each 512-element block of a row as its bit-planes
//! (64 bytes each, LSB-first); `pack_planes` writes that layout fast (8
//! elements per 8x8 bit transpose) for weights at pack time and for activations at
//! each call, and equals `Tensor::to_bytes` with the spec's layout.

use crate::error::CpuError;
use crate::spec::{GemmSpec, WeightGranularity, BLOCK, INT_PANEL, PLANE_BLOCK};
use lowbit_ir::{Tensor, TensorType};

/// Weights packed for one kernel spec. The byte buffers' sizes are checked
/// against the spec when built, so the kernel never reads past them.
#[derive(Clone, Debug)]
pub struct PackedWeights {
    spec: GemmSpec,
    codes: AlignedBytes,
    scales: Vec<u8>,
    zero_points: Vec<u8>,
    /// Integer path: the sum of each row's weights (wrapping): W8A8/W4A8
    /// for the row offsets, `m_pad` entries (0 for padding rows);
    /// bit-serial for the zero-point correction.
    row_sums: Vec<i32>,
    /// Integer path: what the kernel adds to each row's outputs (see the
    /// module docs); `m_pad` entries, so the kernel reads whole panels.
    row_offsets: Vec<i32>,
}

/// A byte buffer starting on a 64-byte boundary (a cache line; one
/// AVX-512 vector). The system allocator returns large `Vec<u8>`s 16 bytes
/// into a line, which makes every 64-byte weight load of a kernel straddle
/// two lines (measured: the W8A8 prefill tile loses about a tenth of its
/// speed to it). Buffers of [`HUGE_PAGE_MIN`] bytes or more are also
/// advised for transparent huge pages (see the module docs), clones too.
struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

/// One cache line of bytes.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl AlignedBytes {
    /// A copy of `bytes` (zero-filled to whole lines).
    fn copy_of(bytes: &[u8]) -> AlignedBytes {
        let mut lines = huge_page_vec(bytes.len().div_ceil(64), Line([0; 64]));
        for (line, chunk) in lines.iter_mut().zip(bytes.chunks(64)) {
            line.0[..chunk.len()].copy_from_slice(chunk);
        }
        AlignedBytes {
            lines,
            len: bytes.len(),
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `Line` is 64 initialized bytes with no padding, so the
        // vector is `64 * lines.len() >= len` contiguous initialized bytes.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Clone for AlignedBytes {
    /// A copy in memory advised like the original (a derived clone would
    /// allocate it plainly).
    fn clone(&self) -> AlignedBytes {
        AlignedBytes::copy_of(self.as_slice())
    }
}

impl std::fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

/// Buffers from this size on are advised for transparent huge pages.
const HUGE_PAGE_MIN: usize = 2 << 20;

/// `len` elements of `fill` in a buffer whose whole 2 MiB-aligned pages
/// are advised for transparent huge pages before they are first touched
/// (Linux; elsewhere, or below [`HUGE_PAGE_MIN`] bytes, a plain vector).
/// The advice is a hint: where huge pages are off or unavailable the
/// kernel uses 4 KiB pages and nothing else changes.
pub(crate) fn huge_page_vec<T: Copy>(len: usize, fill: T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    advise_huge_pages(&v, len);
    v.resize(len, fill);
    v
}

/// Advises the whole 2 MiB pages inside the first `len` elements of `v`'s
/// (not yet touched) allocation for transparent huge pages.
fn advise_huge_pages<T>(v: &Vec<T>, len: usize) {
    let bytes = len * std::mem::size_of::<T>();
    if bytes < HUGE_PAGE_MIN || v.capacity() < len {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        /// `MADV_HUGEPAGE` (Linux).
        const MADV_HUGEPAGE: i32 = 14;
        let page = 2usize << 20;
        let p = v.as_ptr() as usize;
        let start = p.div_ceil(page) * page;
        let end = (p + bytes) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside `v`'s allocation; the
            // advice changes how its pages are backed, never its contents.
            // A failure (huge pages off, an old kernel) leaves 4 KiB pages,
            // so the result is not needed.
            let _ = unsafe { madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE) };
        }
    }
}

fn want(
    what: &str,
    t: &Tensor,
    elem: lowbit_numerics::ElemType,
    shape: &[u64],
) -> Result<(), CpuError> {
    if t.elem != elem || t.shape != shape {
        return Err(CpuError::BadWeights(format!(
            "{what} must be {}, got {}",
            TensorType::new(shape.to_vec(), elem),
            t.ty()
        )));
    }
    if t.codes.len() as u64 != shape.iter().product::<u64>() {
        return Err(CpuError::BadWeights(format!(
            "{what} has {} elements for shape {shape:?}",
            t.codes.len()
        )));
    }
    Ok(())
}

impl PackedWeights {
    /// Packs `weights` (`[m, k]` codes of the spec's weight type), `scales`
    /// (shape [`GemmSpec::scale_shape`], the spec's scale type) and the
    /// optional `zero_points` (the scales' shape, the weight type).
    pub fn pack(
        spec: &GemmSpec,
        weights: &Tensor,
        scales: &Tensor,
        zero_points: Option<&Tensor>,
    ) -> Result<PackedWeights, CpuError> {
        spec.check("(packing)")?;
        let (m, k) = (spec.m, spec.k);
        want("weights", weights, spec.weight.dtype, &[m as u64, k as u64])?;
        PackedWeights::pack_with(spec, |r, c| weights.codes[r * k + c], scales, zero_points)
    }

    /// [`PackedWeights::pack`] with the weight codes read through `code`
    /// instead of taken from a tensor: `code(r, c)` is the code of row `r`
    /// (output column) and column `c` of the `[m, k]` weights.
    /// A caller reading them straight from a constant's bytes never holds
    /// a `u64` per weight (8 bytes per element, 16 times an `i4` weight):
    /// the codes go into the packed layout as they are read
    /// (`lowbit_ir::tensor::pack_codes`). Equal to `pack` of those codes.
    pub fn pack_with(
        spec: &GemmSpec,
        code: impl Fn(usize, usize) -> u64,
        scales: &Tensor,
        zero_points: Option<&Tensor>,
    ) -> Result<PackedWeights, CpuError> {
        spec.check("(packing)")?;
        if spec.is_integer() {
            return Err(CpuError::BadWeights(
                "W8A8 specs take no scales: use PackedWeights::pack_int (or pack_int_with)".into(),
            ));
        }
        let sshape = spec.scale_shape();
        want("scales", scales, spec.weight.scale, &sshape)?;
        match (spec.weight.zero_point, zero_points) {
            (true, Some(z)) => want("zero points", z, spec.weight.dtype, &sshape)?,
            (false, None) => {}
            (true, None) => return Err(CpuError::BadWeights("the spec needs zero points".into())),
            (false, Some(_)) => {
                return Err(CpuError::BadWeights(
                    "zero points given but the spec has none".into(),
                ))
            }
        }
        if spec.is_blockdot() {
            return pack_blockdot(spec, &code, scales);
        }
        let codes = padded_codes(spec, &code);
        let sb = spec.scale_bytes();
        let scales: Vec<u8> = scales
            .codes
            .iter()
            .flat_map(|&c| c.to_le_bytes().into_iter().take(sb))
            .collect();
        let zero_points = zero_points
            .map(|z| z.codes.iter().map(|&c| c as u8).collect())
            .unwrap_or_default();
        PackedWeights::from_raw(spec, codes, scales, zero_points)
    }

    /// [`PackedWeights::pack_int_centered`] with the (centered) weight
    /// codes read through `code` (`code(r, c)`, as in
    /// [`PackedWeights::pack_with`]); no tensor-sized code vector is built
    /// (the bit-serial layout goes one row at a time).
    pub fn pack_int_with(
        spec: &GemmSpec,
        code: impl Fn(usize, usize) -> u64,
        act_zero_point: i64,
    ) -> Result<PackedWeights, CpuError> {
        spec.check("(packing)")?;
        if act_zero_point != 0 && !spec.is_vnni() {
            return Err(CpuError::BadWeights(
                "only the W8A8/W4A8 kernels take an activation zero point".into(),
            ));
        }
        if !spec.is_integer() {
            return Err(CpuError::BadWeights(
                "pack_int_with is for integer specs; float specs use PackedWeights::pack_with"
                    .into(),
            ));
        }
        if spec.is_bit_serial() {
            let (m, k) = (spec.m, spec.k);
            let row = spec.row_bytes();
            let mut codes = vec![0u8; m * row];
            let mut bytes = vec![0u8; k];
            for (r, dst) in codes.chunks_mut(row).enumerate() {
                for (c, b) in bytes.iter_mut().enumerate() {
                    *b = code(r, c) as u8;
                }
                pack_planes(&bytes, spec.weight_planes(), dst);
            }
            return PackedWeights::from_raw(spec, codes, Vec::new(), Vec::new());
        }
        let codes = padded_codes(spec, &code);
        let mut p = PackedWeights::from_raw(spec, codes, Vec::new(), Vec::new())?;
        if spec.is_vnni() {
            p.row_offsets = row_offsets(spec, &p.row_sums, act_zero_point);
        }
        Ok(p)
    }

    /// Packs `i8`/`i4`/`u4` weights `[m, k]` for a W8A8/W4A8 spec
    /// ([`GemmSpec::int`]), or `b1` weights for a W1A1 spec
    /// ([`GemmSpec::binary`]).
    pub fn pack_int(spec: &GemmSpec, weights: &Tensor) -> Result<PackedWeights, CpuError> {
        PackedWeights::pack_int_centered(spec, weights, 0)
    }

    /// [`PackedWeights::pack_int`] for `matmul_int x, w, zx, zw` with
    /// per-tensor zero points: `weights` are the centered codes `w - zw`
    /// (the caller picks a weight type they fit), and the kernel takes
    /// `zx * sum(w - zw)` off each row, so it computes
    /// `sum((x - zx) * (w - zw))`, wrapping like the interpreter.
    pub fn pack_int_centered(
        spec: &GemmSpec,
        weights: &Tensor,
        act_zero_point: i64,
    ) -> Result<PackedWeights, CpuError> {
        spec.check("(packing)")?;
        if act_zero_point != 0 && !spec.is_vnni() {
            return Err(CpuError::BadWeights(
                "only the W8A8/W4A8 kernels take an activation zero point".into(),
            ));
        }
        if !spec.is_integer() {
            return Err(CpuError::BadWeights(
                "pack_int is for W8A8 specs; float specs use PackedWeights::pack".into(),
            ));
        }
        let (m, k) = (spec.m, spec.k);
        want("weights", weights, spec.weight.dtype, &[m as u64, k as u64])?;
        PackedWeights::pack_int_with(spec, |r, c| weights.codes[r * k + c], act_zero_point)
    }

    /// Wraps already packed bytes (for benchmarks and loaders), checking
    /// every size against the spec.
    pub fn from_raw(
        spec: &GemmSpec,
        codes: Vec<u8>,
        scales: Vec<u8>,
        zero_points: Vec<u8>,
    ) -> Result<PackedWeights, CpuError> {
        spec.check("(packing)")?;
        let nscales = if spec.is_integer() {
            0
        } else {
            spec.m * spec.groups_per_row()
        };
        let scale_bytes = if spec.is_blockdot() {
            spec.blockdot_scale_bytes()
        } else {
            nscales * spec.scale_bytes()
        };
        let checks = [
            (
                "weight codes (bytes)",
                spec.m_pad() * spec.row_bytes(),
                codes.len(),
            ),
            ("scales (bytes)", scale_bytes, scales.len()),
            (
                "zero points (bytes)",
                if spec.weight.zero_point { nscales } else { 0 },
                zero_points.len(),
            ),
        ];
        for (buffer, expected, got) in checks {
            if expected != got {
                return Err(CpuError::BufferSize {
                    buffer,
                    expected,
                    got,
                });
            }
        }
        let row_sums = if spec.is_vnni() {
            panel_row_sums(spec, &codes)
        } else if spec.is_bit_serial() {
            codes
                .chunks(spec.row_bytes())
                .map(|row| plane_row_sum(row, spec.weight.dtype))
                .collect()
        } else {
            Vec::new()
        };
        Ok(PackedWeights {
            spec: spec.clone(),
            codes: AlignedBytes::copy_of(&codes),
            scales,
            zero_points,
            row_offsets: if spec.is_vnni() {
                row_offsets(spec, &row_sums, 0)
            } else {
                Vec::new()
            },
            row_sums,
        })
    }

    /// The spec these weights were packed for.
    pub fn spec(&self) -> &GemmSpec {
        &self.spec
    }

    /// The IR type of the packed codes.
    pub fn ir_type(&self) -> TensorType {
        self.spec.packed_weight_type()
    }

    /// Packed codes.
    pub fn codes(&self) -> &[u8] {
        self.codes.as_slice()
    }

    /// Scales, row-major, little-endian in the spec's scale type.
    pub fn scales(&self) -> &[u8] {
        &self.scales
    }

    /// Zero-point codes, one byte each (empty without zero points).
    pub fn zero_points(&self) -> &[u8] {
        &self.zero_points
    }

    /// Integer path: each row's weight sum (empty otherwise).
    pub fn row_sums(&self) -> &[i32] {
        &self.row_sums[..self.row_sums.len().min(self.spec.m)]
    }

    /// W8A8/W4A8 path: what the kernel adds to each (padded) row's
    /// outputs, `m_pad` values (the kernel's row-offset operand; public
    /// so that ahead-of-time compiled models embed it).
    pub fn row_offsets(&self) -> &[i32] {
        &self.row_offsets
    }

    /// Total bytes (what a kernel call streams from memory).
    pub fn byte_len(&self) -> usize {
        // The integer kernels read one i32 per row: the offset (W8A8/W4A8)
        // or the weight sum (bit-serial).
        let per_row = self.row_offsets.len().max(self.row_sums.len());
        self.codes.len + self.scales.len() + self.zero_points.len() + 4 * per_row
    }
}

/// The `[m, k]` weight codes `code(r, c)` (masked to the weight type)
/// packed into [`GemmSpec::packed_weight_type`], rows and columns past the
/// weights holding code 0 (finite in every float format, 0 in every
/// integer one, and they meet zero activations).
fn padded_codes(spec: &GemmSpec, code: &impl Fn(usize, usize) -> u64) -> Vec<u8> {
    let ty = spec.packed_weight_type();
    let (m, k, k_pad) = (spec.m, spec.k, ty.shape[1] as usize);
    let mask = spec.weight.dtype.code_mask();
    lowbit_ir::tensor::pack_codes(&ty.shape, spec.weight.dtype, &ty.layout, |i| {
        let (r, c) = (i / k_pad, i % k_pad);
        if r < m && c < k {
            code(r, c) & mask
        } else {
            0
        }
    })
}

/// Block-dot weights (`i4` or `i8` codes `[m, k]`, f16 scales
/// `[m, ceil(k / g)]`): codes as `u4` `c ^ 8` (the value plus 8) in the
/// W4A8 panel layout, or `u8` `c ^ 0x80` in the W8A8 one, on
/// `[m_pad, k_pad]`, padded with value 0; scales re-laid out per
/// 16-row panel and 32-element block, `[m_pad / 16, k_pad / 32, 16]` f16
/// (the block's group scale; 0 for padding rows), so a panel's scales for
/// one block are one 32-byte load.
/// The codes `code(r, c)` are read as in [`padded_codes`] (no tensor-sized
/// copy).
fn pack_blockdot(
    spec: &GemmSpec,
    code: &impl Fn(usize, usize) -> u64,
    scales: &Tensor,
) -> Result<PackedWeights, CpuError> {
    let (m, k, k_pad) = (spec.m, spec.k, spec.k_pad());
    // Two's complement plus the offset is the code with its top bit
    // flipped; padding holds the value 0 (the offset itself).
    let offset = spec.blockdot_offset() as u64;
    let mask = spec.weight.dtype.code_mask();
    let ty = spec.packed_weight_type();
    let codes = lowbit_ir::tensor::pack_codes(&ty.shape, ty.elem, &ty.layout, |i| {
        let (r, c) = (i / k_pad, i % k_pad);
        if r < m && c < k {
            (code(r, c) & mask) ^ offset
        } else {
            offset
        }
    });
    let blocks = k_pad / BLOCK;
    let per_group = match spec.weight.granularity {
        WeightGranularity::Group(g) => g / BLOCK,
        WeightGranularity::PerChannel => blocks,
    };
    let groups = spec.groups_per_row();
    let mut out = vec![0u8; spec.blockdot_scale_bytes()];
    for r in 0..m {
        let (panel, lane) = (r / INT_PANEL, r % INT_PANEL);
        for b in 0..blocks {
            let g = (b / per_group).min(groups - 1);
            let code = scales.codes[r * groups + g] as u16;
            let at = ((panel * blocks + b) * INT_PANEL + lane) * 2;
            out[at..at + 2].copy_from_slice(&code.to_le_bytes());
        }
    }
    PackedWeights::from_raw(spec, codes, out, Vec::new())
}

/// The wrapping `i32` sum of each padded row of W8A8/W4A8 codes packed in
/// [`GemmSpec::packed_layout`]: each 64-byte tile holds 4 bytes of each of
/// the panel's 16 rows (one `i8`, or two nibbles, per byte).
fn panel_row_sums(spec: &GemmSpec, codes: &[u8]) -> Vec<i32> {
    use crate::spec::INT_PANEL;
    let dtype = spec.weight.dtype;
    let byte_sum = |b: u8| -> i32 {
        if dtype == lowbit_numerics::ElemType::I8 {
            i32::from(b as i8)
        } else if dtype == crate::spec::I4 {
            // Sign-extend each nibble: shift it to the top, then back.
            i32::from(((b << 4) as i8) >> 4) + i32::from((b as i8) >> 4)
        } else {
            i32::from(b & 15) + i32::from(b >> 4)
        }
    };
    let panel_bytes = INT_PANEL * spec.row_bytes();
    let mut sums = vec![0i32; spec.m_pad()];
    for (p, panel) in codes.chunks(panel_bytes).enumerate() {
        for tile in panel.chunks(4 * INT_PANEL) {
            for (i, row) in tile.chunks(4).enumerate() {
                let s = &mut sums[p * INT_PANEL + i];
                for &b in row {
                    *s = s.wrapping_add(byte_sum(b));
                }
            }
        }
    }
    sums
}

/// `-(o + zx) * sum` per row, wrapping (see the module docs).
fn row_offsets(spec: &GemmSpec, sums: &[i32], act_zero_point: i64) -> Vec<i32> {
    let o = if spec.act == lowbit_numerics::ElemType::I8 {
        128
    } else {
        0
    };
    // Wrapping in i32 is exact modulo 2^32, like the sums themselves.
    let f = (o + act_zero_point) as i32;
    sums.iter()
        .map(|&s| s.wrapping_mul(f).wrapping_neg())
        .collect()
}

/// Packs one row of codes (the low `bits` bits of each byte; `row.len()`
/// elements) into `dst` (8 elements per 8x8 bit transpose): per 512-element block, `bits` planes of 64 bytes,
/// element `e` of the block at bit `e % 8` of byte `e / 8` of each plane.
/// `dst` covers whole blocks; elements past the row are code 0.
pub(crate) fn pack_planes(row: &[u8], bits: usize, dst: &mut [u8]) {
    let block_bytes = PLANE_BLOCK / 8 * bits;
    dst.fill(0);
    for (b, out) in dst.chunks_mut(block_bytes).enumerate() {
        let start = (b * PLANE_BLOCK).min(row.len());
        let src = &row[start..(start + PLANE_BLOCK).min(row.len())];
        for (byte, eight) in src.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..eight.len()].copy_from_slice(eight);
            // Byte i holds element i; transposing the 8x8 bit matrix puts
            // bit p of every element into byte p (three swap steps).
            let mut v = u64::from_le_bytes(w);
            let t = (v ^ (v >> 7)) & 0x00aa_00aa_00aa_00aa;
            v ^= t ^ (t << 7);
            let t = (v ^ (v >> 14)) & 0x0000_cccc_0000_cccc;
            v ^= t ^ (t << 14);
            let t = (v ^ (v >> 28)) & 0x0000_0000_f0f0_f0f0;
            v ^= t ^ (t << 28);
            for plane in 0..bits {
                out[plane * (PLANE_BLOCK / 8) + byte] = (v >> (8 * plane)) as u8;
            }
        }
    }
}

/// The sum (wrapping `i32`) of the values of a row packed by
/// [`pack_planes`]: each plane's popcount times its weight (`-2^(bits-1)`
/// for the sign plane of a signed type). A `b1` row counts its 1 codes
/// (its ±1 sum would need the unpadded length; the kernels never use it:
/// `b1` weights take no zero points).
pub(crate) fn plane_row_sum(row: &[u8], elem: lowbit_numerics::ElemType) -> i32 {
    let bits = elem.bits() as usize;
    let signed = matches!(elem, lowbit_numerics::ElemType::Int { signed: true, .. });
    let plane_bytes = PLANE_BLOCK / 8;
    let mut sum = 0i32;
    for block in row.chunks(plane_bytes * bits) {
        for (p, plane) in block.chunks(plane_bytes).enumerate() {
            let ones = plane.iter().map(|b| b.count_ones() as i32).sum::<i32>();
            let w = if signed && p + 1 == bits {
                (-1i32).wrapping_shl(p as u32)
            } else {
                1i32 << p
            };
            sum = sum.wrapping_add(ones.wrapping_mul(w));
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use lowbit_ir::{Layout, Tensor};
    use lowbit_numerics::ElemType;

    /// The huge-page-advised buffers hold exactly their data (sizes around
    /// the 2 MiB threshold and not multiples of a page), and packed
    /// weights and their clones hold the bytes they were given.
    #[test]
    fn huge_page_buffers_hold_their_data() {
        for len in [0usize, 100, (2 << 20) - 1, (2 << 20) + 12_345, 5 << 20] {
            let src: Vec<u8> = (0..len).map(|i| (i * 31 + i / 4099) as u8).collect();
            assert_eq!(AlignedBytes::copy_of(&src).as_slice(), src, "{len}");
            assert_eq!(AlignedBytes::copy_of(&src).clone().as_slice(), src, "{len}");
            let v = huge_page_vec(len / 4, 1.5f32);
            assert_eq!(v.len(), len / 4);
            assert!(v.iter().all(|&x| x == 1.5));
        }
        let spec = GemmSpec::new(600, 8192, crate::spec::Dim::Dynamic, ElemType::I8, 32);
        let codes: Vec<u8> = (0..600 * 8192).map(|i| (i % 251) as u8).collect();
        let scales = vec![0x3cu8; 600 * 256 * 2];
        let p = PackedWeights::from_raw(&spec, codes.clone(), scales.clone(), Vec::new()).unwrap();
        let q = p.clone();
        for w in [&p, &q] {
            assert_eq!(w.codes(), &codes[..]);
            assert_eq!(w.scales(), &scales[..]);
        }
    }

    /// The fast plane packer writes exactly the IR layout
    /// `tile = 1x512, bitplanes` of the padded row, and the plane sums are
    /// the value sums.
    #[test]
    fn pack_planes_is_the_ir_bitplane_layout() {
        let mut s = 0x1234_5678_9abc_def1u64;
        for (elem, k) in [("i3", 700usize), ("u8", 1030), ("i2", 512), ("u1", 5)] {
            let elem: ElemType = elem.parse().unwrap();
            let bits = elem.bits() as usize;
            let k_pad = k.div_ceil(PLANE_BLOCK) * PLANE_BLOCK;
            let codes: Vec<u8> = (0..k)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s & elem.code_mask()) as u8
                })
                .collect();
            let mut dst = vec![0u8; k_pad / 8 * bits];
            pack_planes(&codes, bits, &mut dst);
            let mut padded: Vec<u64> = codes.iter().map(|&c| u64::from(c)).collect();
            padded.resize(k_pad, 0);
            let layout = Layout {
                tile: vec![1, PLANE_BLOCK as u64],
                bit_planes: true,
                ..Layout::default()
            };
            let t = Tensor::new(elem, vec![1, k_pad as u64], padded).unwrap();
            assert_eq!(dst, t.to_bytes(&layout), "{elem} k={k}");
            let want: i64 = t.to_i128().unwrap().iter().map(|&v| v as i64).sum();
            assert_eq!(i64::from(plane_row_sum(&dst, elem)), want, "{elem} k={k}");
        }
    }
}
