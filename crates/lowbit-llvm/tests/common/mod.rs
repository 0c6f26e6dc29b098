//! Helpers shared by the kernel test files: a seeded xorshift64* generator
//! (every file draws the same sequence for the same seed), element-type
//! parsing, random code tensors and the interpreter's integer product
//! (plain, and with the W8A8 epilogues).
//! Each test binary uses its own subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use lowbit_interp::eval_op;
use lowbit_ir::{BinaryOp, IntSchedule, OpKind, Overflow, Tensor, TensorType};
use lowbit_llvm::{Activations, GemmKernel, PackedWeights};
use lowbit_numerics::{ElemType, Rounding};

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

/// The interpreter's `[requant_dyadic](relu(add(matmul_int(x, wᵀ), bias)))`
/// (wrapping; per-column dyadic requantization to `i8`, nearest-even,
/// saturating) with `matmul_int` on `schedule` (every schedule must give
/// the direct one's result).
pub fn int_epilogue_reference(
    x: &Tensor,
    w: &Tensor,
    schedule: IntSchedule,
    bias: Option<&[i32]>,
    relu: bool,
    requant: Option<(&[i32], &[u32], i8)>,
) -> Vec<i128> {
    let (n, k, m) = (x.shape[0], x.shape[1], w.shape[0]);
    let wt = eval_op(
        &OpKind::Transpose { perm: vec![1, 0] },
        &[w],
        &[TensorType::new(vec![k, m], w.elem)],
    )
    .unwrap()
    .remove(0);
    let acc_t = TensorType::new(vec![n, m], ElemType::I32);
    let mut v = eval_op(
        &OpKind::MatMulInt {
            overflow: Overflow::Wrap,
            schedule,
        },
        &[x, &wt],
        std::slice::from_ref(&acc_t),
    )
    .unwrap()
    .remove(0);
    if let Some(bias) = bias {
        let codes = bias.iter().map(|&b| u64::from(b as u32)).collect();
        let b = Tensor::new(ElemType::I32, vec![m], codes).unwrap();
        let add = OpKind::Binary {
            op: BinaryOp::Add,
            overflow: Overflow::Wrap,
        };
        v = eval_op(&add, &[&v, &b], std::slice::from_ref(&acc_t))
            .unwrap()
            .remove(0);
    }
    if relu {
        v = eval_op(&OpKind::Relu, &[&v], std::slice::from_ref(&acc_t))
            .unwrap()
            .remove(0);
    }
    if let Some((mults, shifts, zp)) = requant {
        let zp_t = Tensor::new(ElemType::I8, vec![], vec![zp as u8 as u64]).unwrap();
        v = eval_op(
            &OpKind::RequantDyadic {
                multiplier: mults.iter().map(|&v| i64::from(v)).collect(),
                shift: shifts.to_vec(),
                axis: Some(1),
                rounding: Rounding::NearestEven,
                saturate: true,
            },
            &[&v, &zp_t],
            &[TensorType::new(vec![n, m], ElemType::I8)],
        )
        .unwrap()
        .remove(0);
    }
    v.to_i128().unwrap()
}

/// Runs the integer `kernel` on `x` (`[n, k]` codes, `u8` or `i8`) with
/// 1 and 2 threads and checks each result is `want` (`[n, m]`), naming
/// `what` and the thread count on a mismatch.
pub fn assert_int_kernel_on_1_and_2_threads(
    kernel: &GemmKernel,
    packed: &PackedWeights,
    x: &Tensor,
    want: &[i32],
    what: &str,
) {
    let n = x.shape[0] as usize;
    let u: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
    let i: Vec<i8> = u.iter().map(|&b| b as i8).collect();
    for threads in [1, 2] {
        let xs = if x.elem == ElemType::U8 {
            Activations::U8(&u)
        } else {
            Activations::I8(&i)
        };
        let mut y = vec![0i32; want.len()];
        kernel.run_int(xs, packed, &mut y, n, threads).unwrap();
        assert_eq!(y, want, "{what}, {threads} threads");
    }
}
