//! Helpers shared by the kernel test files: a seeded xorshift64* generator
//! (every file draws the same sequence for the same seed), element-type
//! parsing, random code tensors, the interpreter's integer product
//! (plain, and with the W8A8 epilogues) and random block-dot cases with
//! the interpreter's result.
//! Each test binary uses its own subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use lowbit_interp::eval_op;
use lowbit_ir::{BinaryOp, Granularity, IntSchedule, OpKind, Overflow, Tensor, TensorType};
use lowbit_llvm::{Activations, Dim, GemmKernel, GemmSpec, PackedWeights};
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

/// The interpreter's `absmax_scale` and `quantize` of `x` (`[n, k]` f32)
/// per 32-block along k: the block-dot kernel's activation scales and
/// codes.
pub fn interp_quantize(x: &Tensor) -> (Tensor, Tensor) {
    let (n, k) = (x.shape[0], x.shape[1]);
    let s_ty = TensorType::new(vec![n, k.div_ceil(32)], ElemType::F32);
    let s = eval_op(
        &OpKind::AbsMaxScale {
            block: 32,
            qmax: 127,
        },
        &[x],
        std::slice::from_ref(&s_ty),
    )
    .unwrap()
    .remove(0);
    let q = eval_op(
        &OpKind::Quantize {
            granularity: Granularity::Blocked {
                blocks: vec![(1, 32)],
            },
            rounding: Rounding::NearestEven,
            saturate: true,
            stochastic: None,
        },
        &[x, &s],
        &[TensorType::new(vec![n, k], ElemType::I8)],
    )
    .unwrap()
    .remove(0);
    (s, q)
}

/// An `f32` tensor of `shape` holding `v`.
pub fn f32_tensor(shape: &[u64], v: &[f32]) -> Tensor {
    Tensor::new(
        ElemType::F32,
        shape.to_vec(),
        v.iter().map(|x| u64::from(x.to_bits())).collect(),
    )
    .unwrap()
}

/// One random block-dot GEMM (`GemmSpec::blockdot` with `i4` or `i8`
/// weights) with the interpreter's result of the quantized graph the
/// `quantize-activations` pass builds and the kernels' declared bound.
pub struct BlockdotCase {
    /// The spec (`n` static or run-time as asked).
    pub spec: GemmSpec,
    /// The weights packed for the spec.
    pub packed: PackedWeights,
    /// `f32 [n, k]` activations.
    pub x: Vec<f32>,
    /// Activation rows.
    pub n: usize,
    /// The interpreter's `matmul(dequantize(q_x, s_x),
    /// transpose(dequantize(w, s_w)))`, `[n, m]`.
    pub y_ref: Vec<f64>,
    /// `Σ_j |x̂_j · w_j|` per output, `[n, m]`.
    pub mag: Vec<f64>,
}

impl BlockdotCase {
    /// Draws weights (codes, f16 scales of either sign) and activations
    /// (one all-zero block in every other row, some large values) and
    /// evaluates the interpreter's reference.
    pub fn random(rng: &mut Rng, m: usize, k: usize, n: usize, dim: Dim, wdt: &str) -> Self {
        let mut spec = GemmSpec::blockdot(m, k, dim);
        spec.weight.dtype = t(wdt);
        let groups = k.div_ceil(32);
        let mask = spec.weight.dtype.code_mask();
        let wq = Tensor::new(
            spec.weight.dtype,
            vec![m as u64, k as u64],
            (0..m * k).map(|_| rng.next() & mask).collect(),
        )
        .unwrap();
        let svals: Vec<f64> = (0..m * groups)
            .map(|_| {
                (0.01 + 0.2 * rng.unit())
                    * if rng.next().is_multiple_of(5) {
                        -1.0
                    } else {
                        1.0
                    }
            })
            .collect();
        let scales =
            Tensor::from_f64(ElemType::F16, vec![m as u64, groups as u64], &svals).unwrap();
        let x: Vec<f32> = (0..n * k)
            .map(|i| {
                // One all-zero block per row tests the 0/0 rule end to end.
                if i % k < 32 && (i / k) % 2 == 1 {
                    0.0
                } else {
                    (rng.unit() * 2.0 - 1.0) as f32 * if i % 7 == 0 { 30.0 } else { 1.0 }
                }
            })
            .collect();
        let xt = f32_tensor(&[n as u64, k as u64], &x);
        let (s, q) = interp_quantize(&xt);
        let gran_x = Granularity::Blocked {
            blocks: vec![(1, 32)],
        };
        let xd = eval_op(
            &OpKind::Dequantize {
                granularity: gran_x,
            },
            &[&q, &s],
            &[TensorType::new(vec![n as u64, k as u64], ElemType::F32)],
        )
        .unwrap()
        .remove(0);
        let wd = eval_op(
            &OpKind::Dequantize {
                granularity: spec.ir_granularity(),
            },
            &[&wq, &scales],
            &[TensorType::new(vec![m as u64, k as u64], ElemType::F32)],
        )
        .unwrap()
        .remove(0);
        let wt = eval_op(
            &OpKind::Transpose { perm: vec![1, 0] },
            &[&wd],
            &[TensorType::new(vec![k as u64, m as u64], ElemType::F32)],
        )
        .unwrap()
        .remove(0);
        let y_ref = eval_op(
            &OpKind::MatMul {
                overflow: Overflow::Wrap,
            },
            &[&xd, &wt],
            &[TensorType::new(vec![n as u64, m as u64], ElemType::F32)],
        )
        .unwrap()
        .remove(0)
        .to_f64();
        let (xs, ws) = (xd.to_f64(), wd.to_f64());
        let mag = (0..n * m)
            .map(|i| {
                let (c, r) = (i / m, i % m);
                (0..k).map(|j| (xs[c * k + j] * ws[r * k + j]).abs()).sum()
            })
            .collect();
        let packed = PackedWeights::pack(&spec, &wq, &scales, None).unwrap();
        BlockdotCase {
            spec,
            packed,
            x,
            n,
            y_ref,
            mag,
        }
    }

    /// `kernel`'s result on `threads` threads (`[n, m]`).
    pub fn run(&self, kernel: &GemmKernel, threads: usize) -> Vec<f32> {
        let mut y = vec![f32::NAN; self.n * self.spec.m];
        kernel
            .run(
                self.x.as_slice(),
                &self.packed,
                None,
                &mut y,
                self.n,
                threads,
            )
            .unwrap();
        y
    }

    /// Checks `y` against the interpreter within the block-dot bound
    /// `(k_pad / 32 + 8) · 2^-24 · Σ_j |x̂_j · w_j|`; `what` names the run.
    pub fn assert_within_bound(&self, y: &[f32], what: &str) {
        let spec = &self.spec;
        let factor = (spec.k_pad() / 32 + 8) as f64 * 2f64.powi(-24);
        for (i, (&got, &want)) in y.iter().zip(&self.y_ref).enumerate() {
            let bound = factor * self.mag[i];
            assert!(
                (f64::from(got) - want).abs() <= bound,
                "{} m={} k={} n={} {:?} {what}: y[{}, {}] = {got}, interpreter {want}, bound {bound}",
                spec.weight.dtype,
                spec.m,
                spec.k,
                self.n,
                spec.n,
                i / spec.m,
                i % spec.m,
            );
        }
    }
}
