//! Random well-typed modules for property tests.
//!
//! [`random_module`] builds a module deterministically from a seed, so any
//! crate's tests (text round trip, interpreter, passes) can drive it from
//! proptest or a plain seed loop without this library depending on proptest.
//!
//! The functions mix parameters and constants of random shapes and element
//! types (odd-width integers, `b1`, named and custom floats), constants whose
//! payloads print as value lists, hex blobs or resources, non-default
//! layouts, and the ops element-wise arithmetic, activations,
//! quantize/dequantize (per-tensor, per-axis, blocked), cast, matmul, gemm,
//! transpose, reshape, softmax, layer_norm, rms_norm and relayout, each typed
//! by the rules in the project brief. Values with a non-default layout only
//! feed `relayout` ops or function outputs. Constant values are random bit
//! patterns, so float constants may hold NaNs and infinities; shapes have no
//! zero-sized dimensions.

use crate::function::{Function, Module, Value};
use crate::ops::{BinaryOp, Granularity, OpKind};
use crate::tensor::Tensor;
use crate::types::{Layout, PackOrder, TensorType};
use lowbit_numerics::{ElemType, Overflow, Rounding};

/// A module with one to three functions of about `size` ops each, built
/// deterministically from `seed`.
pub fn random_module(seed: u64, size: usize) -> Module {
    let mut rng = Rng(seed ^ 0x6C62_6974_5F69_7200);
    let count = 1 + rng.below(3);
    let functions = (0..count)
        .map(|i| {
            let name = if i == 0 {
                "main".to_string()
            } else {
                format!("f{i}")
            };
            FnGen::new(&mut rng, name).build(size)
        })
        .collect();
    Module { functions }
}

/// splitmix64: small, fast and good enough to pick test cases; public so
/// that other crates' tests derive their inputs reproducibly from a seed.
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`; `0..1` for `n = 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

const FLOATS: &[&str] = &[
    "f32",
    "f16",
    "bf16",
    "f64",
    "tf32",
    "f8E4M3FN",
    "f8E5M2",
    "f8E4M3FNUZ",
    "f6E3M2FN",
    "f6E2M3FN",
    "f4E2M1FN",
    "fE3M4",
    "fE5M3FNUZ",
    "fE2M2F",
    "fE4M2B3FN",
];
const INTS: &[&str] = &["i3", "u4", "i8", "u5", "i2", "u8", "i16", "i32", "u1", "i4"];
const SCALES: &[&str] = &["f32", "f16", "bf16", "f8E8M0FNU", "f8E4M3FN"];
const QUANTIZED: &[&str] = &[
    "i4", "u4", "i8", "u8", "i3", "u2", "f8E4M3FN", "f4E2M1FN", "f8E5M2",
];

fn elems(names: &[&str]) -> Vec<ElemType> {
    names.iter().filter_map(|s| s.parse().ok()).collect()
}

struct FnGen<'r> {
    rng: &'r mut Rng,
    f: Function,
    /// Default-layout values that ops may consume.
    pool: Vec<Value>,
    /// Values with another layout (outputs or relayout operands only).
    laid_out: Vec<Value>,
    floats: Vec<ElemType>,
    ints: Vec<ElemType>,
}

impl<'r> FnGen<'r> {
    fn new(rng: &'r mut Rng, name: String) -> FnGen<'r> {
        FnGen {
            rng,
            f: Function::new(name),
            pool: Vec::new(),
            laid_out: Vec::new(),
            floats: elems(FLOATS),
            ints: elems(INTS),
        }
    }

    fn build(mut self, size: usize) -> Function {
        for _ in 0..size {
            self.random_op();
        }
        if self.pool.is_empty() {
            let ty = self.random_type(None);
            self.param(ty);
        }
        // The newest value always, plus a few others, become outputs.
        let mut outs: Vec<Value> = self.pool.last().copied().into_iter().collect();
        let candidates: Vec<Value> = self.pool.iter().chain(&self.laid_out).copied().collect();
        for _ in 0..self.rng.below(3) {
            let v = self.rng.pick(&candidates);
            if !outs.contains(&v) {
                outs.push(v);
            }
        }
        let named = self.rng.chance(1, 2);
        self.f.outputs = outs
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    if named {
                        format!("y{i}")
                    } else {
                        format!("output{i}")
                    },
                    v,
                )
            })
            .collect();
        self.f
    }

    fn float(&mut self) -> ElemType {
        let list = self.floats.clone();
        self.rng.pick(&list)
    }
    fn int(&mut self) -> ElemType {
        let list = self.ints.clone();
        self.rng.pick(&list)
    }
    fn any_elem(&mut self) -> ElemType {
        match self.rng.below(8) {
            0 => ElemType::Bipolar,
            1..=4 => self.float(),
            _ => self.int(),
        }
    }

    fn shape(&mut self, min_rank: usize, max_rank: usize) -> Vec<u64> {
        let rank = min_rank + self.rng.below(max_rank - min_rank + 1);
        (0..rank).map(|_| self.rng.range(1, 5)).collect()
    }

    fn random_type(&mut self, elem: Option<ElemType>) -> TensorType {
        let shape = self.shape(0, 3);
        let elem = elem.unwrap_or_else(|| self.any_elem());
        TensorType::new(shape, elem)
    }

    fn param(&mut self, ty: TensorType) -> Value {
        let i = self.f.params.len();
        let name = if self.rng.chance(1, 4) {
            format!("in.{i}")
        } else {
            format!("x{i}")
        };
        let v = self.f.add_param(name, ty);
        self.pool.push(v);
        v
    }

    /// A constant of random codes (its payload form follows from its size).
    fn constant(&mut self, ty: TensorType) -> Value {
        let n = ty.num_elements() as usize;
        let mask = ty.elem.code_mask();
        let codes = (0..n).map(|_| self.rng.next_u64() & mask).collect();
        let bytes = match Tensor::new(ty.elem, ty.shape.clone(), codes) {
            Ok(t) => t.to_bytes(&ty.layout),
            Err(_) => vec![0; ty.byte_size() as usize],
        };
        let default = ty.layout.is_default();
        let v = self.f.push(
            OpKind::Constant(crate::ops::ConstData::new(bytes)),
            Vec::new(),
            ty,
        );
        if default {
            self.pool.push(v);
        } else {
            self.laid_out.push(v);
        }
        v
    }

    /// An existing value of type `ty`, or a new parameter or constant.
    fn value_of(&mut self, ty: &TensorType) -> Value {
        let same: Vec<Value> = self
            .pool
            .iter()
            .copied()
            .filter(|&v| self.f.ty(v) == ty)
            .collect();
        if !same.is_empty() && self.rng.chance(2, 3) {
            return self.rng.pick(&same);
        }
        if self.rng.chance(1, 2) {
            self.param(ty.clone())
        } else {
            self.constant(ty.clone())
        }
    }

    /// An existing value whose element type satisfies `want` (or a new one
    /// of a type from `make`).
    fn operand(&mut self, want: impl Fn(ElemType) -> bool, make: ElemType) -> Value {
        let fits: Vec<Value> = self
            .pool
            .iter()
            .copied()
            .filter(|&v| want(self.f.ty(v).elem))
            .collect();
        if !fits.is_empty() && self.rng.chance(3, 4) {
            return self.rng.pick(&fits);
        }
        let ty = self.random_type(Some(make));
        self.value_of(&ty)
    }

    fn emit(&mut self, kind: OpKind, operands: Vec<Value>, ty: TensorType) -> Value {
        let v = self.f.push(kind, operands, ty);
        self.pool.push(v);
        v
    }

    fn random_op(&mut self) {
        match self.rng.below(15) {
            0 => self.binary(),
            1 => self.unary(),
            2 | 3 => self.quantize(),
            4 => self.dequantize(),
            5 => self.cast(),
            6 => self.matmul(),
            7 => self.gemm(),
            8 => self.transpose(),
            9 => self.reshape(),
            10 => self.softmax(),
            11 => self.norm(),
            12 => self.relayout(),
            13 => {
                // A large constant: its payload prints as a hex blob or a resource.
                let elem = self.any_elem();
                let ty = TensorType::new(vec![self.rng.range(5, 12), self.rng.range(4, 40)], elem);
                self.constant(ty);
            }
            _ => {
                let ty = self.random_type(None);
                self.value_of(&ty);
            }
        }
    }

    fn binary(&mut self) {
        let make = self.float();
        let a = self.operand(|e| e != ElemType::Bipolar, make);
        let aty = self.f.ty(a).clone();
        // The other operand broadcasts: a suffix of the shape, some dims 1.
        let keep = self.rng.below(aty.rank() + 1);
        let bshape: Vec<u64> = aty.shape[aty.rank() - keep..]
            .iter()
            .map(|&d| if self.rng.chance(1, 3) { 1 } else { d })
            .collect();
        let b = self.value_of(&TensorType::new(bshape, aty.elem));
        let op = self
            .rng
            .pick(&[BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div]);
        let overflow = if aty.elem.is_int() && self.rng.chance(1, 2) {
            Overflow::Saturate
        } else {
            Overflow::Wrap
        };
        let operands = if self.rng.chance(1, 2) {
            vec![a, b]
        } else {
            vec![b, a]
        };
        self.emit(OpKind::Binary { op, overflow }, operands, aty);
    }

    fn unary(&mut self) {
        let make = self.float();
        let x = self.operand(|e| e.is_float(), make);
        let ty = self.f.ty(x).clone();
        let kind = match self.rng.below(4) {
            0 => OpKind::Relu,
            1 => OpKind::Gelu { tanh: false },
            2 => OpKind::Gelu { tanh: true },
            _ => OpKind::Silu,
        };
        self.emit(kind, vec![x], ty);
    }

    fn granularity(&mut self, shape: &[u64]) -> (Granularity, Vec<u64>) {
        let rank = shape.len();
        let g = match self.rng.below(3) {
            1 if rank > 0 => Granularity::PerAxis {
                axis: self.rng.below(rank) as u32,
            },
            2 if rank > 0 => {
                let first = self.rng.below(rank);
                let mut blocks = vec![(first as u32, self.rng.range(1, 4))];
                if rank > 1 && self.rng.chance(1, 2) {
                    let second = (first + 1 + self.rng.below(rank - 1)) % rank;
                    blocks.push((second as u32, self.rng.range(1, 4)));
                    blocks.sort();
                }
                Granularity::Blocked { blocks }
            }
            _ => Granularity::PerTensor,
        };
        let scale_shape = match (&g, self.rng.chance(1, 2)) {
            (Granularity::PerTensor, true) => vec![1],
            _ => g.scale_shape(shape).unwrap_or_default(),
        };
        (g, scale_shape)
    }

    fn rounding(&mut self) -> Rounding {
        self.rng.pick(&Rounding::ALL)
    }

    fn quantize(&mut self) {
        let make = self.float();
        let x = self.operand(|e| e.is_float(), make);
        let xty = self.f.ty(x).clone();
        let target = self.rng.pick(&elems(QUANTIZED));
        let (granularity, sshape) = self.granularity(&xty.shape);
        let scale_elem = self.rng.pick(&elems(SCALES));
        let scale = self.value_of(&TensorType::new(sshape.clone(), scale_elem));
        let mut operands = vec![x, scale];
        if self.rng.chance(1, 2) {
            operands.push(self.value_of(&TensorType::new(sshape, target)));
        }
        let kind = OpKind::Quantize {
            granularity,
            rounding: self.rounding(),
            saturate: self.rng.chance(3, 4),
            stochastic: None,
        };
        self.emit(kind, operands, xty.with_elem(target));
    }

    fn dequantize(&mut self) {
        let q_elem = self.rng.pick(&elems(QUANTIZED));
        let q = self.operand(|e| e == q_elem, q_elem);
        let qty = self.f.ty(q).clone();
        let (granularity, sshape) = self.granularity(&qty.shape);
        let scale_elem = self.rng.pick(&elems(SCALES));
        let scale = self.value_of(&TensorType::new(sshape.clone(), scale_elem));
        let mut operands = vec![q, scale];
        if self.rng.chance(1, 2) {
            operands.push(self.value_of(&TensorType::new(sshape, qty.elem)));
        }
        let result = self.float();
        self.emit(
            OpKind::Dequantize { granularity },
            operands,
            qty.with_elem(result),
        );
    }

    fn cast(&mut self) {
        let make = self.any_elem();
        let x = self.operand(|_| true, make);
        let ty = self.f.ty(x).clone();
        let to = self.any_elem();
        let kind = OpKind::Cast {
            rounding: self.rounding(),
            saturate: self.rng.chance(1, 2),
            stochastic: None,
        };
        self.emit(kind, vec![x], ty.with_elem(to));
    }

    /// Operand and result element types for matmul/gemm: all float, or
    /// integral operands with an integer accumulator.
    fn product_elems(&mut self) -> (ElemType, ElemType, ElemType) {
        if self.rng.chance(1, 2) {
            (self.float(), self.float(), self.float())
        } else {
            let a = if self.rng.chance(1, 4) {
                ElemType::Bipolar
            } else {
                self.int()
            };
            let b = if self.rng.chance(1, 4) {
                ElemType::Bipolar
            } else {
                self.int()
            };
            (
                a,
                b,
                self.rng.pick(&[ElemType::I32, ElemType::I64, ElemType::I8]),
            )
        }
    }

    fn matmul(&mut self) {
        let (ea, eb, er) = self.product_elems();
        let batch = self.shape(0, 2);
        let (m, k, n) = (
            self.rng.range(1, 5),
            self.rng.range(1, 5),
            self.rng.range(1, 5),
        );
        // Each operand keeps a suffix of the batch dims, some broadcast as 1.
        let mut side = |dims: [u64; 2]| -> Vec<u64> {
            let keep = self.rng.below(batch.len() + 1);
            let mut s: Vec<u64> = batch[batch.len() - keep..]
                .iter()
                .map(|&d| if self.rng.chance(1, 4) { 1 } else { d })
                .collect();
            s.extend(dims);
            s
        };
        let (sa, sb) = (side([m, k]), side([k, n]));
        let mut out_batch = batch.clone();
        let longest = sa.len().max(sb.len()) - 2;
        out_batch.drain(..batch.len() - longest);
        for (i, d) in out_batch.iter_mut().enumerate() {
            let pick = |s: &[u64]| {
                let off = longest - (s.len() - 2);
                if i >= off {
                    s[i - off]
                } else {
                    1
                }
            };
            *d = pick(&sa).max(pick(&sb));
        }
        let a = self.value_of(&TensorType::new(sa, ea));
        let b = self.value_of(&TensorType::new(sb, eb));
        let overflow = if er.is_int() && self.rng.chance(1, 2) {
            Overflow::Saturate
        } else {
            Overflow::Wrap
        };
        out_batch.extend([m, n]);
        self.emit(
            OpKind::MatMul { overflow },
            vec![a, b],
            TensorType::new(out_batch, er),
        );
    }

    fn gemm(&mut self) {
        let (ea, eb, er) = self.product_elems();
        let (m, k, n) = (
            self.rng.range(1, 5),
            self.rng.range(1, 5),
            self.rng.range(1, 5),
        );
        let (trans_a, trans_b) = (self.rng.chance(1, 2), self.rng.chance(1, 2));
        let a = self.value_of(&TensorType::new(if trans_a { [k, m] } else { [m, k] }, ea));
        let b = self.value_of(&TensorType::new(if trans_b { [n, k] } else { [k, n] }, eb));
        let mut operands = vec![a, b];
        if self.rng.chance(1, 2) {
            let cshape = self
                .rng
                .pick(&[vec![n], vec![m, n], vec![1, n], vec![m, 1], vec![]]);
            operands.push(self.value_of(&TensorType::new(cshape, er)));
        }
        let float = er.is_float();
        let scalars = [1.0, 0.5, 2.0, -1.0, 0.25];
        let kind = OpKind::Gemm {
            trans_a,
            trans_b,
            alpha: if float { self.rng.pick(&scalars) } else { 1.0 },
            beta: if float { self.rng.pick(&scalars) } else { 1.0 },
            overflow: if !float && self.rng.chance(1, 2) {
                Overflow::Saturate
            } else {
                Overflow::Wrap
            },
        };
        self.emit(kind, operands, TensorType::new(vec![m, n], er));
    }

    fn transpose(&mut self) {
        let make = self.any_elem();
        let x = self.operand(|_| true, make);
        let ty = self.f.ty(x).clone();
        let mut perm: Vec<u32> = (0..ty.rank() as u32).collect();
        for i in (1..perm.len()).rev() {
            let j = self.rng.below(i + 1);
            perm.swap(i, j);
        }
        let shape = perm
            .iter()
            .map(|&p| ty.shape[p as usize])
            .collect::<Vec<_>>();
        self.emit(
            OpKind::Transpose { perm },
            vec![x],
            TensorType::new(shape, ty.elem),
        );
    }

    fn reshape(&mut self) {
        let make = self.any_elem();
        let x = self.operand(|_| true, make);
        let ty = self.f.ty(x).clone();
        // Deal the prime factors of the element count out over new dims.
        let mut n = ty.num_elements();
        let mut shape = vec![1u64; 1 + self.rng.below(3)];
        let mut p = 2;
        while n > 1 {
            while n.is_multiple_of(p) {
                let i = self.rng.below(shape.len());
                shape[i] *= p;
                n /= p;
            }
            p += 1;
        }
        if self.rng.chance(1, 4) && ty.num_elements() == 1 {
            shape.clear();
        }
        self.emit(OpKind::Reshape, vec![x], TensorType::new(shape, ty.elem));
    }

    fn float_operand_with_rank(&mut self) -> (Value, TensorType) {
        let make = self.float();
        let x = self.operand(|e| e.is_float(), make);
        let ty = self.f.ty(x).clone();
        if ty.rank() > 0 {
            return (x, ty);
        }
        let ty = TensorType::new(self.shape(1, 3), ty.elem);
        (self.value_of(&ty), ty)
    }

    fn softmax(&mut self) {
        let (x, ty) = self.float_operand_with_rank();
        let rank = ty.rank() as i64;
        let axis = self.rng.range(0, 2 * rank as u64 - 1) as i64 - rank;
        self.emit(OpKind::Softmax { axis }, vec![x], ty);
    }

    fn norm(&mut self) {
        let (x, ty) = self.float_operand_with_rank();
        let rank = ty.rank();
        let first = self.rng.below(rank);
        let axis = if self.rng.chance(1, 2) {
            first as i64
        } else {
            first as i64 - rank as i64
        };
        let epsilon = self.rng.pick(&[1e-5, 1e-6, 0.001]);
        let gamma_ty = TensorType::new(ty.shape[first..].to_vec(), ty.elem);
        let mut operands = vec![x, self.value_of(&gamma_ty)];
        let kind = if self.rng.chance(1, 3) {
            OpKind::RmsNorm { axis, epsilon }
        } else {
            if self.rng.chance(1, 2) {
                operands.push(self.value_of(&gamma_ty));
            }
            OpKind::LayerNorm { axis, epsilon }
        };
        self.emit(kind, operands, ty);
    }

    /// A layout that fits a rank-2 type of `elem`, or `None`.
    fn layout_for(&mut self, elem: ElemType, shape: &[u64]) -> Layout {
        let bits = elem.bits() as u64;
        let mut l = Layout::default();
        if !bits.is_multiple_of(8) && self.rng.chance(1, 2) {
            l.pack = PackOrder::MsbFirst;
        }
        if self.rng.chance(1, 2) {
            let r = shape.len().min(1 + self.rng.below(2));
            l.tile = shape[shape.len() - r..]
                .iter()
                .map(|&d| {
                    let divisors: Vec<u64> = (1..=d).filter(|t| d % t == 0).collect();
                    self.rng.pick(&divisors)
                })
                .collect();
        }
        let n: u64 = shape.iter().product();
        if bits < 8 && 8 % bits == 0 && self.rng.chance(1, 2) {
            let per_byte = 8 / bits;
            let chunks: Vec<u64> = (1..=n / per_byte)
                .map(|k| k * per_byte)
                .filter(|c| n.is_multiple_of(*c))
                .collect();
            if !chunks.is_empty() {
                l.interleave = Some(self.rng.pick(&chunks));
            }
        }
        if elem.is_integral() && self.rng.chance(1, 2) {
            l.bit_planes = true;
        }
        if l.check_fits(elem, shape).is_err() {
            return Layout::default();
        }
        l
    }

    fn relayout(&mut self) {
        let elem = if self.rng.chance(2, 3) {
            self.int()
        } else {
            self.any_elem()
        };
        let shape = vec![self.rng.range(1, 4) * 2, self.rng.range(1, 4) * 4];
        let layout = self.layout_for(elem, &shape);
        let plain = TensorType::new(shape, elem);
        let laid = plain.clone().with_layout(layout);
        match self.rng.below(3) {
            0 => {
                // Pack a default-layout value.
                let x = self.value_of(&plain);
                let v = self.f.push(OpKind::Relayout, vec![x], laid);
                self.laid_out.push(v);
            }
            1 => {
                // Unpack a laid-out parameter.
                let i = self.f.params.len();
                let x = self.f.add_param(format!("packed{i}"), laid);
                self.emit(OpKind::Relayout, vec![x], plain);
            }
            _ => {
                // Unpack a laid-out constant.
                let c = self.constant(laid);
                self.emit(OpKind::Relayout, vec![c], plain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_module() {
        for seed in 0..20 {
            assert_eq!(random_module(seed, 12), random_module(seed, 12));
        }
        assert_ne!(random_module(1, 12), random_module(2, 12));
    }

    #[test]
    fn constants_match_their_types() {
        for seed in 0..100 {
            for f in &random_module(seed, 20).functions {
                for &op in f.ops() {
                    let d = f.op(op);
                    if let OpKind::Constant(c) = &d.kind {
                        let ty = f.ty(d.results[0]);
                        assert_eq!(c.bytes().len() as u64, ty.byte_size(), "{ty}");
                        assert!(ty.layout.check_fits(ty.elem, &ty.shape).is_ok(), "{ty}");
                    }
                }
            }
        }
    }
}
