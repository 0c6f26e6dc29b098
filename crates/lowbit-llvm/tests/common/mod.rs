//! Helpers shared by the kernel test files: a seeded xorshift64* generator
//! (every file draws the same sequence for the same seed), element-type
//! parsing, random code tensors and the interpreter's integer product.
//! Each test binary uses its own subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use lowbit_interp::eval_op;
use lowbit_ir::{OpKind, Overflow, Tensor, TensorType};
use lowbit_numerics::ElemType;

/// xorshift64* (seed: any non-zero value).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// One of `xs`, uniformly.
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// The element type spelled `s`.
pub fn t(s: &str) -> ElemType {
    s.parse().unwrap()
}

/// A `[rows, cols]` tensor of `elem` with uniformly random codes.
pub fn random_codes(rng: &mut Rng, elem: ElemType, rows: usize, cols: usize) -> Tensor {
    let mask = elem.code_mask();
    let codes = (0..rows * cols).map(|_| rng.next() & mask).collect();
    Tensor::new(elem, vec![rows as u64, cols as u64], codes).unwrap()
}

/// The interpreter's `x · wᵀ` as `i32` (wrapping): `transpose` then
/// `matmul`.
pub fn int_reference(x: &Tensor, w: &Tensor) -> Vec<i32> {
    let (m, k) = (w.shape[0], w.shape[1]);
    let wt = eval_op(
        &OpKind::Transpose { perm: vec![1, 0] },
        &[w],
        &[TensorType::new(vec![k, m], w.elem)],
    )
    .unwrap()
    .remove(0);
    let y = eval_op(
        &OpKind::MatMul {
            overflow: Overflow::Wrap,
        },
        &[x, &wt],
        &[TensorType::new(vec![x.shape[0], m], ElemType::I32)],
    )
    .unwrap()
    .remove(0);
    y.to_i128().unwrap().into_iter().map(|v| v as i32).collect()
}
