//! Tensor types and memory layouts.
//!
//! The physical order of a tensor's elements is defined in three steps, each
//! optional (see [`Layout`]):
//! 1. **tiles**: with `tile = [t0, .., tr-1]` on the last `r` dims, elements
//!    are ordered by (outer dims, tile index per tiled dim, index within the
//!    tile per tiled dim). Every tiled dim must be a multiple of its tile.
//! 2. **interleave**: with `interleave = C` (sub-byte types only), each
//!    consecutive chunk of `C` elements is permuted so that byte `j` of the
//!    chunk holds elements `j, j + C/p, j + 2C/p, ...` where `p = 8 / bits`
//!    (the q4_0 nibble order for `C = 32`, `p = 2`).
//! 3. **bit-planes**: the sequence is cut into rows of the last dim (of the
//!    last tile when tiled); each row is stored as `bits` planes, plane `k`
//!    holding bit `k` of every element of the row, one bit per element,
//!    padded to a whole byte.
//!
//! Without bit-planes, elements are packed into one dense bit stream:
//! element `i` occupies stream bits `[i*bits, (i+1)*bits)`. With
//! [`PackOrder::LsbFirst`] (the default, ONNX's order for int4/int2) stream
//! bit `j` is bit `j % 8` of byte `j / 8` and codes are little-endian; with
//! [`PackOrder::MsbFirst`] stream bit `j` is bit `7 - j % 8` and each code is
//! written most significant bit first.

use lowbit_numerics::ElemType;
use std::fmt;

/// Bit order of packed elements within a byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PackOrder {
    /// First element in the low bits (ONNX, GGUF, most kernels).
    #[default]
    LsbFirst,
    /// First element in the high bits.
    MsbFirst,
}

/// How a tensor's elements are arranged in memory. The default is dense
/// row-major with LSB-first packing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Layout {
    /// Bit order within a byte.
    pub pack: PackOrder,
    /// Tile sizes for the last `tile.len()` dims; empty for no tiling.
    pub tile: Vec<u64>,
    /// Interleave chunk size (see the module docs); `None` for none.
    pub interleave: Option<u64>,
    /// Whether elements are stored as bit-planes.
    pub bit_planes: bool,
}

impl Layout {
    /// True for the default dense row-major layout.
    pub fn is_default(&self) -> bool {
        *self == Layout::default()
    }

    /// Elements per bit-plane row for a tensor of `shape` (step 3 of the
    /// module docs): the last tile dim when tiled, else the last dim; at
    /// least 1, so a zero-sized or scalar tensor still has whole rows.
    pub fn plane_row(&self, shape: &[u64]) -> u64 {
        self.tile
            .last()
            .or(shape.last())
            .copied()
            .unwrap_or(1)
            .max(1)
    }

    /// Checks that this layout can hold `elem` values of the given shape.
    pub fn check_fits(&self, elem: ElemType, shape: &[u64]) -> Result<(), String> {
        if self.tile.len() > shape.len() {
            return Err(format!(
                "layout tiles {} dims but the tensor has rank {}",
                self.tile.len(),
                shape.len()
            ));
        }
        let off = shape.len() - self.tile.len();
        for (i, &t) in self.tile.iter().enumerate() {
            let d = shape[off + i];
            if t == 0 || !d.is_multiple_of(t) {
                return Err(format!(
                    "tile size {t} does not divide dimension {} of size {d}",
                    off + i
                ));
            }
        }
        if let Some(c) = self.interleave {
            let bits = elem.bits();
            if bits >= 8 || 8 % bits != 0 {
                return Err(format!(
                    "interleave needs an element type that packs several per byte, not {elem}"
                ));
            }
            let p = (8 / bits) as u64;
            if c == 0 || !c.is_multiple_of(p) {
                return Err(format!(
                    "interleave chunk {c} is not a multiple of the {p} {elem} elements per byte"
                ));
            }
            let n: u64 = shape.iter().fold(1u64, |a, &d| a.saturating_mul(d));
            if !n.is_multiple_of(c) {
                return Err(format!(
                    "interleave chunk {c} does not divide the {n} elements of the tensor"
                ));
            }
        }
        if self.bit_planes && !elem.is_integral() {
            return Err(format!(
                "bit-planes need an integer element type, not {elem}"
            ));
        }
        if self.pack == PackOrder::MsbFirst && elem.bits().is_multiple_of(8) {
            return Err(format!(
                "msb-first packing only applies to sub-byte element types, not {elem}"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.pack == PackOrder::MsbFirst {
            parts.push("msb".into());
        }
        if !self.tile.is_empty() {
            let t: Vec<String> = self.tile.iter().map(|t| t.to_string()).collect();
            parts.push(format!("tile={}", t.join("x")));
        }
        if let Some(c) = self.interleave {
            parts.push(format!("interleave={c}"));
        }
        if self.bit_planes {
            parts.push("bitplanes".into());
        }
        write!(f, "#layout<{}>", parts.join(", "))
    }
}

/// The type of an SSA value: a statically shaped tensor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<u64>,
    /// Element type.
    pub elem: ElemType,
    /// Memory layout.
    pub layout: Layout,
}

impl TensorType {
    /// A tensor type with the default layout.
    pub fn new(shape: impl Into<Vec<u64>>, elem: ElemType) -> TensorType {
        TensorType {
            shape: shape.into(),
            elem,
            layout: Layout::default(),
        }
    }

    /// The same type with another layout.
    pub fn with_layout(mut self, layout: Layout) -> TensorType {
        self.layout = layout;
        self
    }

    /// The same shape and layout with another element type.
    pub fn with_elem(&self, elem: ElemType) -> TensorType {
        TensorType {
            shape: self.shape.clone(),
            elem,
            layout: Layout::default(),
        }
    }

    /// Number of elements (1 for a scalar). Saturates instead of overflowing.
    pub fn num_elements(&self) -> u64 {
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Size in bytes of the physical representation.
    pub fn byte_size(&self) -> u64 {
        let bits = self.elem.bits() as u64;
        if self.layout.bit_planes {
            let row = self.layout.plane_row(&self.shape);
            let rows = self.num_elements() / row;
            rows * bits * row.div_ceil(8)
        } else {
            (self.num_elements().saturating_mul(bits)).div_ceil(8)
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor<")?;
        for d in &self.shape {
            write!(f, "{d}x")?;
        }
        write!(f, "{}", self.elem)?;
        if !self.layout.is_default() {
            write!(f, ", {}", self.layout)?;
        }
        f.write_str(">")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_types() {
        let t = TensorType::new(vec![2, 3], "i4".parse().unwrap());
        assert_eq!(t.to_string(), "tensor<2x3xi4>");
        let t = t.with_layout(Layout {
            pack: PackOrder::MsbFirst,
            tile: vec![1, 3],
            interleave: None,
            bit_planes: true,
        });
        assert_eq!(
            t.to_string(),
            "tensor<2x3xi4, #layout<msb, tile=1x3, bitplanes>>"
        );
        assert_eq!(
            TensorType::new(vec![], ElemType::F32).to_string(),
            "tensor<f32>"
        );
    }

    #[test]
    fn layout_fit_errors() {
        let i4: ElemType = "i4".parse().unwrap();
        let l = Layout {
            interleave: Some(32),
            ..Layout::default()
        };
        assert!(l.check_fits(i4, &[4, 64]).is_ok());
        assert!(l.check_fits(ElemType::I8, &[4, 64]).is_err());
        let l = Layout {
            tile: vec![16],
            ..Layout::default()
        };
        assert!(l.check_fits(i4, &[4, 40]).is_err());
        let l = Layout {
            bit_planes: true,
            ..Layout::default()
        };
        assert!(l.check_fits(ElemType::F32, &[4]).is_err());
    }
}
