//! Tensor values: element codes in logical row-major order, and their
//! conversion to and from the physical bytes a [`Layout`] prescribes.

use crate::types::{Layout, PackOrder, TensorType};
use lowbit_numerics::{ElemType, Rounding};

/// A tensor value. `codes[i]` is the bit pattern of the `i`-th element in
/// logical row-major order, zero-extended to 64 bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    /// Element type.
    pub elem: ElemType,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Element codes, row-major.
    pub codes: Vec<u64>,
}

impl Tensor {
    /// Builds a tensor, checking that the code count matches the shape.
    pub fn new(elem: ElemType, shape: Vec<u64>, codes: Vec<u64>) -> Result<Tensor, String> {
        // A zero dim anywhere makes the tensor empty, however large the others.
        let n = if shape.contains(&0) {
            Some(0)
        } else {
            shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
        };
        if n != Some(codes.len() as u64) {
            let need = n.map_or("more than 2^64".to_string(), |n| n.to_string());
            return Err(format!(
                "tensor of shape {shape:?} needs {need} elements, got {}",
                codes.len()
            ));
        }
        let mask = elem.code_mask();
        Ok(Tensor {
            elem,
            shape,
            codes: codes.into_iter().map(|c| c & mask).collect(),
        })
    }

    /// A tensor of real values, each encoded with nearest-even rounding.
    pub fn from_f64(elem: ElemType, shape: Vec<u64>, values: &[f64]) -> Result<Tensor, String> {
        let codes = values
            .iter()
            .map(|&v| elem.encode(v, Rounding::NearestEven, false))
            .collect();
        Tensor::new(elem, shape, codes)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// Decoded values as `f64`.
    pub fn to_f64(&self) -> Vec<f64> {
        self.codes.iter().map(|&c| self.elem.decode(c)).collect()
    }

    /// Decoded integer values (`None` for float tensors).
    pub fn to_i128(&self) -> Option<Vec<i128>> {
        self.codes
            .iter()
            .map(|&c| self.elem.decode_int(c))
            .collect()
    }

    /// The type of this tensor with the default layout.
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.shape.clone(), self.elem)
    }

    /// Physical bytes of this tensor in `layout`.
    pub fn to_bytes(&self, layout: &Layout) -> Vec<u8> {
        pack_codes(&self.shape, self.elem, layout, |i| self.codes[i])
    }

    /// Reads a tensor of type `ty` from its physical bytes.
    pub fn from_bytes(ty: &TensorType, bytes: &[u8]) -> Result<Tensor, String> {
        let need = ty.byte_size();
        if bytes.len() as u64 != need {
            return Err(format!(
                "{ty} needs {need} bytes of data, got {}",
                bytes.len()
            ));
        }
        let n = ty.num_elements() as usize;
        let bits = ty.elem.bits();
        let layout = &ty.layout;
        let seq: Vec<u64> = if layout.bit_planes {
            let row = layout.plane_row(&ty.shape) as usize;
            let plane_bytes = row.div_ceil(8);
            let mut seq = Vec::with_capacity(n);
            for (r, rowbytes) in bytes.chunks(plane_bytes * bits as usize).enumerate() {
                let len = row.min(n - r * row);
                for j in 0..len {
                    let mut c = 0u64;
                    for k in 0..bits as usize {
                        let bit = match layout.pack {
                            PackOrder::LsbFirst => j % 8,
                            PackOrder::MsbFirst => 7 - j % 8,
                        };
                        c |= (((rowbytes[k * plane_bytes + j / 8] >> bit) & 1) as u64) << k;
                    }
                    seq.push(c);
                }
            }
            seq
        } else {
            unpack_stream(bytes, n, bits, layout.pack)
        };
        let order = physical_order(&ty.shape, ty.elem, layout);
        let mut codes = vec![0u64; n];
        for (p, &i) in order.iter().enumerate() {
            codes[i] = seq[p];
        }
        Tensor::new(ty.elem, ty.shape.clone(), codes)
    }
}

/// Physical bytes, in `layout`, of the `elem` tensor of `shape` whose
/// row-major code `i` is `code(i)`: exactly [`Tensor::to_bytes`] of that
/// tensor, without needing its codes in memory. Untiled layouts stream
/// straight from `code`; tiled, bit-plane and other permuting layouts are
/// packed one panel of leading-dimension slices at a time (see
/// `panel_rows`), so the only index and code buffers are panel-sized,
/// not tensor-sized (8 bytes per element each). This is what lets a model's
/// weights be packed straight from their constant bytes.
pub fn pack_codes(
    shape: &[u64],
    elem: ElemType,
    layout: &Layout,
    code: impl Fn(usize) -> u64,
) -> Vec<u8> {
    let bits = elem.bits();
    let n = n_of(shape);
    // Untiled dense layouts pack straight from the codes: no index or
    // code sequence as large as the tensor (8 bytes per element each),
    // which for a model's weights would be many times their size.
    if !layout.bit_planes && layout.tile.is_empty() {
        match layout.interleave {
            None => return pack_stream_with(n, bits, layout.pack, code),
            Some(c) => {
                let (c, p) = (c as usize, (8 / bits.clamp(1, 8)) as usize);
                if c > 0 && c.is_multiple_of(p) && n.is_multiple_of(c) {
                    // Stream position `chunk*c + j*p + lane` holds
                    // element `chunk*c + lane*(c/p) + j` (module docs).
                    let lanes = c / p;
                    return pack_stream_with(n, bits, layout.pack, |q| {
                        let (chunk, r) = (q / c, q % c);
                        code(chunk * c + (r % p) * lanes + r / p)
                    });
                }
            }
        }
    }
    match panel_rows(shape, elem, layout) {
        Some(rows) if rows < shape[0] => {
            // `panel_rows` checked that panels are whole: contiguous in the
            // physical order and ending on a byte (or plane row) boundary,
            // so the panels' bytes concatenate to the tensor's.
            let inner = (n as u64 / shape[0]) as usize;
            let panel = rows as usize * inner;
            let mut pshape = shape.to_vec();
            pshape[0] = rows;
            let mut out = Vec::new();
            for base in (0..n).step_by(panel) {
                let bytes = permuted_bytes(&pshape, elem, layout, |i| code(base + i));
                // Sized once: growing by doubling would briefly hold up to
                // twice the packed size.
                out.reserve_exact(bytes.len() * (n / panel));
                out.extend_from_slice(&bytes);
            }
            out
        }
        _ => permuted_bytes(shape, elem, layout, code),
    }
}

/// Elements of a (saturating) shape; 0 when a dim is 0.
fn n_of(shape: &[u64]) -> usize {
    if shape.contains(&0) {
        0
    } else {
        shape.iter().fold(1u64, |a, &d| a.saturating_mul(d)) as usize
    }
}

/// Slices along dim 0 per panel that [`pack_codes`] packs on its own, or
/// `None` when no panel short of the whole tensor works. A panel must be
/// contiguous in the physical order (whole tiles along dim 0: `tile[0]`
/// rows when the tile spans every dim, else any count, since dim 0 is then
/// an outer dim), hold whole interleave chunks, and end on a byte boundary
/// (on a plane-row boundary for bit-plane layouts, whose rows are padded to
/// bytes on their own).
fn panel_rows(shape: &[u64], elem: ElemType, layout: &Layout) -> Option<u64> {
    if shape.len() < 2 || shape.contains(&0) {
        return None;
    }
    let unit = if layout.tile.len() == shape.len() {
        layout.tile[0].max(1)
    } else {
        1
    };
    let inner: u64 = shape[1..].iter().product();
    let bits = u64::from(elem.bits());
    (1..=64u64)
        .map(|q| q * unit)
        .take_while(|&r| r <= shape[0])
        .find(|&r| {
            let p = r * inner;
            let whole_chunks = layout
                .interleave
                .is_none_or(|c| c > 0 && p.is_multiple_of(c));
            let aligned = if layout.bit_planes {
                p.is_multiple_of(layout.plane_row(shape))
            } else {
                (p * bits).is_multiple_of(8)
            };
            shape[0].is_multiple_of(r) && whole_chunks && aligned
        })
}

/// [`pack_codes`] through the layout's full physical order (an index and a
/// code per element).
fn permuted_bytes(
    shape: &[u64],
    elem: ElemType,
    layout: &Layout,
    code: impl Fn(usize) -> u64,
) -> Vec<u8> {
    let bits = elem.bits();
    let order = physical_order(shape, elem, layout);
    let seq: Vec<u64> = order.iter().map(|&i| code(i)).collect();
    if layout.bit_planes {
        let row = layout.plane_row(shape) as usize;
        let mut out = Vec::with_capacity(seq.len() / row * bits as usize * row.div_ceil(8));
        for chunk in seq.chunks(row) {
            for k in 0..bits {
                let mut plane = vec![0u8; row.div_ceil(8)];
                for (j, &c) in chunk.iter().enumerate() {
                    if (c >> k) & 1 == 1 {
                        let bit = match layout.pack {
                            PackOrder::LsbFirst => j % 8,
                            PackOrder::MsbFirst => 7 - j % 8,
                        };
                        plane[j / 8] |= 1 << bit;
                    }
                }
                out.extend_from_slice(&plane);
            }
        }
        out
    } else {
        pack_stream(&seq, bits, layout.pack)
    }
}

/// Packs codes into a dense bit stream.
pub fn pack_stream(codes: &[u64], bits: u32, order: PackOrder) -> Vec<u8> {
    pack_stream_with(codes.len(), bits, order, |i| codes[i])
}

/// [`pack_stream`] of the `n` codes `code(0), code(1), ...`.
fn pack_stream_with(n: usize, bits: u32, order: PackOrder, code: impl Fn(usize) -> u64) -> Vec<u8> {
    let total = (n as u64 * bits as u64).div_ceil(8) as usize;
    let mut out = vec![0u8; total];
    if bits.is_multiple_of(8) {
        let nb = (bits / 8) as usize;
        for i in 0..n {
            out[i * nb..(i + 1) * nb].copy_from_slice(&code(i).to_le_bytes()[..nb]);
        }
        return out;
    }
    if order == PackOrder::LsbFirst {
        // A code's bits are consecutive stream bits: OR it in shifted to
        // its offset (at most 9 bytes for bits < 64), not bit by bit.
        let (bits, mask) = (bits as usize, (1u64 << bits) - 1);
        for i in 0..n {
            let pos = i * bits;
            let v = u128::from(code(i) & mask) << (pos % 8);
            let span = (pos % 8 + bits).div_ceil(8);
            for (b, o) in out[pos / 8..pos / 8 + span].iter_mut().enumerate() {
                *o |= (v >> (8 * b)) as u8;
            }
        }
        return out;
    }
    let mut pos = 0usize;
    for c in (0..n).map(code) {
        for k in 0..bits as usize {
            let bit = match order {
                PackOrder::LsbFirst => (c >> k) & 1,
                PackOrder::MsbFirst => (c >> (bits as usize - 1 - k)) & 1,
            };
            if bit == 1 {
                let j = pos + k;
                let b = match order {
                    PackOrder::LsbFirst => j % 8,
                    PackOrder::MsbFirst => 7 - j % 8,
                };
                out[j / 8] |= 1 << b;
            }
        }
        pos += bits as usize;
    }
    out
}

/// Unpacks `n` codes from a dense bit stream.
pub fn unpack_stream(bytes: &[u8], n: usize, bits: u32, order: PackOrder) -> Vec<u64> {
    if bits.is_multiple_of(8) {
        let nb = (bits / 8) as usize;
        return (0..n)
            .map(|i| {
                let mut buf = [0u8; 8];
                buf[..nb].copy_from_slice(&bytes[i * nb..(i + 1) * nb]);
                u64::from_le_bytes(buf)
            })
            .collect();
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = 0u64;
        for k in 0..bits as usize {
            let j = i * bits as usize + k;
            let b = match order {
                PackOrder::LsbFirst => j % 8,
                PackOrder::MsbFirst => 7 - j % 8,
            };
            let bit = ((bytes[j / 8] >> b) & 1) as u64;
            match order {
                PackOrder::LsbFirst => c |= bit << k,
                PackOrder::MsbFirst => c |= bit << (bits as usize - 1 - k),
            }
        }
        out.push(c);
    }
    out
}

/// For each physical position, the logical row-major index stored there.
fn physical_order(shape: &[u64], elem: ElemType, layout: &Layout) -> Vec<usize> {
    // Saturating: a tensor's codes exist, so a zero dim makes this 0.
    let n = if shape.contains(&0) {
        0
    } else {
        shape.iter().fold(1u64, |a, &d| a.saturating_mul(d)) as usize
    };
    let mut order: Vec<usize> = if layout.tile.is_empty() {
        (0..n).collect()
    } else {
        tiled_order(shape, &layout.tile)
    };
    if let Some(c) = layout.interleave {
        let c = c as usize;
        let p = (8 / elem.bits().clamp(1, 8)) as usize;
        let lanes = c / p;
        let mut out = vec![0usize; n];
        for (chunk_i, chunk) in order.chunks(c).enumerate() {
            for (o, &idx) in chunk.iter().enumerate() {
                let (lane, j) = (o / lanes, o % lanes);
                out[chunk_i * c + j * p + lane] = idx;
            }
        }
        order = out;
    }
    order
}

fn tiled_order(shape: &[u64], tile: &[u64]) -> Vec<usize> {
    let r = tile.len();
    let off = shape.len() - r;
    let outer: Vec<u64> = shape[..off].to_vec();
    let counts: Vec<u64> = (0..r).map(|i| shape[off + i] / tile[i]).collect();
    // physical index space: outer dims, tile counts, tile sizes
    let mut pdims = outer.clone();
    pdims.extend(&counts);
    pdims.extend(tile);
    let strides = row_major_strides(shape);
    let n: u64 = shape.iter().fold(1u64, |a, &d| a.saturating_mul(d));
    let mut order = Vec::with_capacity(n as usize);
    let mut idx = vec![0u64; pdims.len()];
    for _ in 0..n {
        let mut logical = 0u64;
        for (d, &i) in idx[..off].iter().enumerate() {
            logical += i * strides[d];
        }
        for k in 0..r {
            let coord = idx[off + k] * tile[k] + idx[off + r + k];
            logical += coord * strides[off + k];
        }
        order.push(logical as usize);
        for d in (0..pdims.len()).rev() {
            idx[d] += 1;
            if idx[d] < pdims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    order
}

/// Row-major strides (in elements) of a shape.
pub fn row_major_strides(shape: &[u64]) -> Vec<u64> {
    let mut s = vec![1u64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pack_codes` (panel by panel where it can) equals packing through the
    /// whole tensor's physical order, for every layout kind the kernels use
    /// and some they do not, with sub-byte and odd sizes; and the tiled and
    /// bit-plane cases really go panel by panel.
    #[test]
    fn pack_codes_panels_equal_the_whole_order() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let tile = |t: &[u64]| Layout {
            tile: t.to_vec(),
            ..Layout::default()
        };
        let cases: Vec<(&str, Vec<u64>, Layout, bool)> = vec![
            ("i4", vec![5, 7], Layout::default(), false),
            (
                "u3",
                vec![3, 5],
                Layout {
                    pack: PackOrder::MsbFirst,
                    ..Layout::default()
                },
                false,
            ),
            (
                "i4",
                vec![4, 64],
                Layout {
                    interleave: Some(32),
                    ..Layout::default()
                },
                // Splittable, though the untiled fast path takes it first.
                true,
            ),
            ("i8", vec![48, 12], tile(&[16, 4]), true),
            (
                "u4",
                vec![32, 24],
                Layout {
                    interleave: Some(8),
                    ..tile(&[16, 8])
                },
                true,
            ),
            (
                "i3",
                vec![3, 1024],
                Layout {
                    bit_planes: true,
                    ..tile(&[1, 512])
                },
                true,
            ),
            (
                "u1",
                vec![4, 40],
                Layout {
                    bit_planes: true,
                    ..tile(&[1, 20])
                },
                true,
            ),
            ("i3", vec![2, 6, 4], tile(&[3, 2]), true),
            ("f16", vec![6, 3], tile(&[2, 3]), true),
        ];
        for (elem, shape, layout, panels) in cases {
            let elem: ElemType = elem.parse().unwrap();
            layout.check_fits(elem, &shape).unwrap();
            let n = shape.iter().product::<u64>() as usize;
            let codes: Vec<u64> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s & elem.code_mask()
                })
                .collect();
            let got = pack_codes(&shape, elem, &layout, |i| codes[i]);
            let want = permuted_bytes(&shape, elem, &layout, |i| codes[i]);
            assert_eq!(got, want, "{elem} {shape:?} {layout:?}");
            let t = Tensor::new(elem, shape.clone(), codes).unwrap();
            assert_eq!(t.to_bytes(&layout), want, "{elem} {shape:?} {layout:?}");
            let ty = TensorType::new(shape.clone(), elem).with_layout(layout.clone());
            assert_eq!(Tensor::from_bytes(&ty, &want).unwrap(), t);
            let split = panel_rows(&shape, elem, &layout).is_some_and(|r| r < shape[0]);
            assert_eq!(split, panels, "{elem} {shape:?} {layout:?}");
        }
    }

    fn i4() -> ElemType {
        "i4".parse().unwrap()
    }

    #[test]
    fn lsb_and_msb_nibbles() {
        let t = Tensor::from_f64(i4(), vec![3], &[1.0, -1.0, 7.0]).unwrap();
        assert_eq!(t.to_bytes(&Layout::default()), vec![0xf1, 0x07]);
        let msb = Layout {
            pack: PackOrder::MsbFirst,
            ..Layout::default()
        };
        assert_eq!(t.to_bytes(&msb), vec![0x1f, 0x70]);
        let ty = TensorType::new(vec![3], i4()).with_layout(msb.clone());
        assert_eq!(Tensor::from_bytes(&ty, &[0x1f, 0x70]).unwrap(), t);
    }

    #[test]
    fn q4_0_interleave() {
        let vals: Vec<f64> = (0..32).map(|i| (i % 16) as f64 - 8.0).collect();
        let t = Tensor::from_f64(i4(), vec![32], &vals).unwrap();
        let l = Layout {
            interleave: Some(32),
            ..Layout::default()
        };
        let b = t.to_bytes(&l);
        // byte j holds elements j (low nibble) and j + 16 (high nibble)
        for (j, byte) in b.iter().enumerate() {
            assert_eq!(byte & 0xf, (t.codes[j] & 0xf) as u8);
            assert_eq!(byte >> 4, (t.codes[j + 16] & 0xf) as u8);
        }
    }

    /// The direct packing of untiled layouts (plain and interleaved) gives
    /// the bytes of the general path (permutation, then one packed stream).
    #[test]
    fn direct_packing_matches_the_permuted_stream() {
        for (elem, interleave) in [
            ("i4", None),
            ("i4", Some(32)),
            ("u2", Some(16)),
            ("u2", Some(64)),
            ("i8", Some(8)),
            ("u3", None),
            ("f16", None),
        ] {
            let elem: ElemType = elem.parse().unwrap();
            let shape = vec![3u64, 64];
            let codes: Vec<u64> = (0..192u64).map(|i| (i * 7919 + 13) % 65536).collect();
            let t = Tensor::new(elem, shape.clone(), codes).unwrap();
            for pack in [PackOrder::LsbFirst, PackOrder::MsbFirst] {
                let layout = Layout {
                    pack,
                    interleave,
                    ..Layout::default()
                };
                let order = physical_order(&shape, elem, &layout);
                let seq: Vec<u64> = order.iter().map(|&i| t.codes[i]).collect();
                let want = pack_stream(&seq, elem.bits(), pack);
                assert_eq!(t.to_bytes(&layout), want, "{elem} {layout}");
            }
        }
    }

    #[test]
    fn every_layout_round_trips() {
        let u3: ElemType = "u3".parse().unwrap();
        let vals: Vec<f64> = (0..48).map(|i| ((i * 5) % 8) as f64).collect();
        let t = Tensor::from_f64(u3, vec![4, 12], &vals).unwrap();
        for layout in [
            Layout::default(),
            Layout {
                pack: PackOrder::MsbFirst,
                ..Layout::default()
            },
            Layout {
                tile: vec![2, 4],
                ..Layout::default()
            },
            Layout {
                bit_planes: true,
                ..Layout::default()
            },
            Layout {
                tile: vec![2, 6],
                bit_planes: true,
                pack: PackOrder::MsbFirst,
                interleave: None,
            },
        ] {
            let ty = TensorType::new(vec![4, 12], u3).with_layout(layout.clone());
            let bytes = t.to_bytes(&layout);
            assert_eq!(bytes.len() as u64, ty.byte_size(), "{layout}");
            assert_eq!(Tensor::from_bytes(&ty, &bytes).unwrap(), t, "{layout}");
        }
    }

    #[test]
    fn tiles_reorder() {
        let t =
            Tensor::from_f64(ElemType::I8, vec![2, 4], &[0., 1., 2., 3., 4., 5., 6., 7.]).unwrap();
        let l = Layout {
            tile: vec![2, 2],
            ..Layout::default()
        };
        assert_eq!(t.to_bytes(&l), vec![0, 1, 4, 5, 2, 3, 6, 7]);
    }

    #[test]
    fn bit_planes_split_bits() {
        let u2: ElemType = "u2".parse().unwrap();
        let t = Tensor::from_f64(u2, vec![4], &[0., 1., 2., 3.]).unwrap();
        let l = Layout {
            bit_planes: true,
            ..Layout::default()
        };
        assert_eq!(t.to_bytes(&l), vec![0b1010, 0b1100]);
    }
}
