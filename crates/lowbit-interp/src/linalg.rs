//! `matmul` and `gemm`: float products summed in `f64` in `k` order, integer
//! products summed exactly.
//!
//! Operands are decoded once into row-major `f64`/`i64`/`i128` vectors. The
//! kernel walks column tiles of `b`, blocks of four rows of `a`, then `k`,
//! streaming one tile row of `b` into four accumulator rows; each output is
//! still the sum over `k` in increasing order. Integer sums use `i64` when
//! the operands' actual magnitudes prove no overflow (`max|a| · max|b| · k`
//! fits), and an exact 192-bit accumulator otherwise (64-bit operands).

use crate::num::{encode_arith, floats, int_to_int_code, ints, want_shape};
use crate::shape::{broadcast, broadcast_strides, count, fmt_shape, walk};
use crate::tensor;
use lowbit_ir::{ElemType, Overflow, Tensor, TensorType};

/// The attributes of `gemm`.
pub(crate) struct GemmAttrs {
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f64,
    pub beta: f64,
    pub overflow: Overflow,
}

/// Whether the product is computed in floats (both operands float) or
/// exactly (both integral); checks the result element type agrees.
fn float_product(a: ElemType, b: ElemType, r: ElemType) -> Result<bool, String> {
    match (a.is_float(), b.is_float()) {
        (true, true) if r.is_float() => Ok(true),
        (true, true) => Err(format!("float operands need a float result, got {r}")),
        (false, false) if r.is_integral() => Ok(false),
        (false, false) => Err(format!(
            "integral operands need an integral result, got {r}"
        )),
        _ => Err(format!(
            "operands must both be float or both integral, got {a} and {b}"
        )),
    }
}

/// An exact integer `hi · 2^64 + lo`, wide enough for any sum of
/// 64-bit-by-64-bit products that fits in memory.
#[derive(Clone, Copy, Default)]
struct Wide {
    hi: i128,
    lo: u64,
}

impl Wide {
    fn add_product(&mut self, a: i128, b: i128) {
        // |a|, |b| < 2^64, so the magnitude fits in u128.
        let mag = a.unsigned_abs().wrapping_mul(b.unsigned_abs());
        let (mhi, mlo) = ((mag >> 64) as i128, mag as u64);
        if (a < 0) != (b < 0) {
            let (lo, borrow) = self.lo.overflowing_sub(mlo);
            self.lo = lo;
            self.hi -= mhi + borrow as i128;
        } else {
            let (lo, carry) = self.lo.overflowing_add(mlo);
            self.lo = lo;
            self.hi += mhi + carry as i128;
        }
    }

    fn encode(self, elem: ElemType, ov: Overflow) -> u64 {
        const LIMIT: i128 = 1 << 62;
        let v = if (-LIMIT..LIMIT).contains(&self.hi) {
            (self.hi << 64) + self.lo as i128
        } else {
            match ov {
                Overflow::Saturate if self.hi > 0 => i128::MAX,
                Overflow::Saturate => i128::MIN,
                // Only the low 64 bits survive wrapping to a <= 64-bit type.
                Overflow::Wrap if elem == ElemType::Bipolar => self.hi,
                Overflow::Wrap => self.lo as i128,
            }
        };
        int_to_int_code(v, elem, ov)
    }
}

/// Rows of `a` handled together: each loaded element of `b` feeds this many
/// independent accumulators.
const ROW_BLOCK: usize = 4;
/// Columns per tile: `ROW_BLOCK` accumulator rows of this width stay in L1,
/// and the `k x COL_TILE` panel of `b` is reused by every row block.
const COL_TILE: usize = 256;

/// `acc = a · b` for row-major `a` (m x k) and `b` (k x n). Every output is
/// `((0 + a₀b₀) + a₁b₁) + …` in increasing `k`: blocking only changes which
/// outputs are in flight, never the order of one output's sum.
fn kernel<T: Copy + Default>(
    a: &[T],
    b: &[T],
    (m, k, n): (usize, usize, usize),
    acc: &mut [T],
    madd: impl Fn(T, T, T) -> T,
) {
    acc.fill(T::default());
    for j0 in (0..n).step_by(COL_TILE) {
        let j1 = (j0 + COL_TILE).min(n);
        let mut i = 0;
        while i + ROW_BLOCK <= m {
            let (r0, rest) = acc[i * n..].split_at_mut(n);
            let (r1, rest) = rest.split_at_mut(n);
            let (r2, rest) = rest.split_at_mut(n);
            let r3 = &mut rest[..n];
            let (r0, r1, r2, r3) = (
                &mut r0[j0..j1],
                &mut r1[j0..j1],
                &mut r2[j0..j1],
                &mut r3[j0..j1],
            );
            for kk in 0..k {
                let brow = &b[kk * n + j0..kk * n + j1];
                let (a0, a1, a2, a3) = (
                    a[i * k + kk],
                    a[(i + 1) * k + kk],
                    a[(i + 2) * k + kk],
                    a[(i + 3) * k + kk],
                );
                let rows = r0.iter_mut().zip(r1.iter_mut()).zip(r2.iter_mut());
                for (((o0, o1), o2), (o3, &bv)) in rows.zip(r3.iter_mut().zip(brow)) {
                    *o0 = madd(*o0, a0, bv);
                    *o1 = madd(*o1, a1, bv);
                    *o2 = madd(*o2, a2, bv);
                    *o3 = madd(*o3, a3, bv);
                }
            }
            i += ROW_BLOCK;
        }
        for i in i..m {
            let row = &mut acc[i * n + j0..i * n + j1];
            for kk in 0..k {
                let av = a[i * k + kk];
                for (o, &bv) in row.iter_mut().zip(&b[kk * n + j0..kk * n + j1]) {
                    *o = madd(*o, av, bv);
                }
            }
        }
    }
}

fn kernel_f64(a: &[f64], b: &[f64], m: usize, k: usize, n: usize, acc: &mut [f64]) {
    // No fused multiply-add: the product is rounded to f64, then added.
    kernel(a, b, (m, k, n), acc, |s, x, y| s + x * y);
}

fn kernel_i64(a: &[i64], b: &[i64], m: usize, k: usize, n: usize, acc: &mut [i64]) {
    // The caller proved the exact sum fits, so wrapping never wraps.
    kernel(a, b, (m, k, n), acc, |s, x, y| {
        s.wrapping_add(x.wrapping_mul(y))
    });
}

fn kernel_wide(a: &[i128], b: &[i128], m: usize, k: usize, n: usize, acc: &mut [Wide]) {
    for i in 0..m {
        let row = &mut acc[i * n..(i + 1) * n];
        row.fill(Wide::default());
        for kk in 0..k {
            let av = a[i * k + kk];
            let brow = &b[kk * n..(kk + 1) * n];
            for (o, &bv) in row.iter_mut().zip(brow) {
                o.add_product(av, bv);
            }
        }
    }
}

/// Integer operands decoded once, in the narrowest exact representation.
enum IntOperands {
    Narrow(Vec<i64>, Vec<i64>),
    Wide(Vec<i128>, Vec<i128>),
}

fn int_operands(a: &Tensor, b: &Tensor, k: usize, extra: u128) -> IntOperands {
    let (av, bv) = (ints(a), ints(b));
    let amax = av.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
    let bmax = bv.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
    let bound = amax
        .checked_mul(bmax)
        .and_then(|p| p.checked_mul(k as u128))
        .and_then(|p| p.checked_add(extra));
    match bound {
        Some(b) if b <= i64::MAX as u128 => IntOperands::Narrow(
            av.into_iter().map(|v| v as i64).collect(),
            bv.into_iter().map(|v| v as i64).collect(),
        ),
        _ => IntOperands::Wide(av, bv),
    }
}

/// The shape side of a batched matmul `[.., m, k] x [.., k, n]`, shared by
/// `matmul` and `matmul_int` (`fused.rs`): the leading dims broadcast, the
/// result is `[batch.., m, n]`.
pub(crate) struct BatchedDims {
    pub batch: Vec<u64>,
    pub out_shape: Vec<u64>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl BatchedDims {
    /// Checks ranks, the contraction dim, batch broadcasting and the
    /// declared result shape, in that order. `rank_hint` follows "rank 2 or
    /// more" in the rank error (each op words it its own way).
    pub(crate) fn check(
        a: &Tensor,
        b: &Tensor,
        rt: &TensorType,
        rank_hint: &str,
    ) -> Result<BatchedDims, String> {
        let (ra, rb) = (a.shape.len(), b.shape.len());
        if ra < 2 || rb < 2 {
            return Err(format!(
                "operands must have rank 2 or more{rank_hint}, got shapes {} and {}",
                fmt_shape(&a.shape),
                fmt_shape(&b.shape)
            ));
        }
        let (m, k) = (a.shape[ra - 2], a.shape[ra - 1]);
        let (k2, n) = (b.shape[rb - 2], b.shape[rb - 1]);
        if k != k2 {
            return Err(format!(
                "contraction dims differ: {} x {}",
                fmt_shape(&a.shape),
                fmt_shape(&b.shape)
            ));
        }
        let batch = broadcast(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        want_shape(rt, &out_shape)?;
        Ok(BatchedDims {
            batch,
            out_shape,
            m: m as usize,
            k: k as usize,
            n: n as usize,
        })
    }

    /// Element offsets of each batch's `a` and `b` matrix, for [`walk`]
    /// over `self.batch` (broadcast batch dims repeat an offset).
    pub(crate) fn offsets(&self, a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<usize>) {
        let scaled = |s: Vec<usize>, f: usize| s.into_iter().map(|x| x * f).collect::<Vec<_>>();
        let (ra, rb) = (a.shape.len(), b.shape.len());
        (
            scaled(
                broadcast_strides(&a.shape[..ra - 2], &self.batch),
                self.m * self.k,
            ),
            scaled(
                broadcast_strides(&b.shape[..rb - 2], &self.batch),
                self.k * self.n,
            ),
        )
    }
}

/// `matmul a, b`.
pub(crate) fn matmul(
    ov: Overflow,
    a: &Tensor,
    b: &Tensor,
    rt: &TensorType,
) -> Result<Tensor, String> {
    let dims = BatchedDims::check(a, b, rt, " (reshape vectors)")?;
    let float = float_product(a.elem, b.elem, rt.elem)?;
    let total = count(&dims.out_shape)?;
    let (m, k, n) = (dims.m, dims.k, dims.n);
    let mn = m * n;
    let (sa, sb) = dims.offsets(a, b);
    let (batch, out_shape) = (dims.batch, dims.out_shape);
    let mut codes = vec![0u64; total];
    let elem = rt.elem;
    if float {
        let (av, bv) = (floats(a), floats(b));
        let mut acc = vec![0.0f64; mn];
        walk::<2, String>(&batch, [&sa, &sb], |bi, [oa, ob]| {
            kernel_f64(&av[oa..oa + m * k], &bv[ob..ob + k * n], m, k, n, &mut acc);
            for (c, &v) in codes[bi * mn..(bi + 1) * mn].iter_mut().zip(&acc) {
                *c = encode_arith(elem, v);
            }
            Ok(())
        })?;
    } else {
        match int_operands(a, b, k, 0) {
            IntOperands::Narrow(av, bv) => {
                let mut acc = vec![0i64; mn];
                walk::<2, String>(&batch, [&sa, &sb], |bi, [oa, ob]| {
                    kernel_i64(&av[oa..oa + m * k], &bv[ob..ob + k * n], m, k, n, &mut acc);
                    for (c, &v) in codes[bi * mn..(bi + 1) * mn].iter_mut().zip(&acc) {
                        *c = int_to_int_code(v as i128, elem, ov);
                    }
                    Ok(())
                })?;
            }
            IntOperands::Wide(av, bv) => {
                let mut acc = vec![Wide::default(); mn];
                walk::<2, String>(&batch, [&sa, &sb], |bi, [oa, ob]| {
                    kernel_wide(&av[oa..oa + m * k], &bv[ob..ob + k * n], m, k, n, &mut acc);
                    for (c, &w) in codes[bi * mn..(bi + 1) * mn].iter_mut().zip(&acc) {
                        *c = w.encode(elem, ov);
                    }
                    Ok(())
                })?;
            }
        }
    }
    Ok(tensor(elem, &out_shape, codes))
}

fn transposed<T: Copy>(v: Vec<T>, rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for c in 0..cols {
        for r in 0..rows {
            out.push(v[r * cols + c]);
        }
    }
    out
}

/// A 2-D tensor stored `cols x rows` (row-major), transposed into a new
/// `rows x cols` tensor: `gemm`'s `op(a)` and `op(b)` under `trans_a` and
/// `trans_b`.
fn transposed_tensor(t: &Tensor, rows: usize, cols: usize) -> Tensor {
    Tensor {
        elem: t.elem,
        shape: vec![rows as u64, cols as u64],
        codes: transposed(t.codes.clone(), cols, rows),
    }
}

/// `gemm a, b[, c]`.
pub(crate) fn gemm(at: GemmAttrs, ops: &[&Tensor], rt: &TensorType) -> Result<Tensor, String> {
    let (a, b, c) = (ops[0], ops[1], ops.get(2).copied());
    let [a0, a1] = a.shape[..] else {
        return Err(format!("a must be 2-D, got shape {}", fmt_shape(&a.shape)));
    };
    let [b0, b1] = b.shape[..] else {
        return Err(format!("b must be 2-D, got shape {}", fmt_shape(&b.shape)));
    };
    let (m, k) = if at.trans_a { (a1, a0) } else { (a0, a1) };
    let (k2, n) = if at.trans_b { (b1, b0) } else { (b0, b1) };
    if k != k2 {
        return Err(format!(
            "contraction dims differ: op(a) is {m}x{k}, op(b) is {k2}x{n}"
        ));
    }
    let out_shape = vec![m, n];
    want_shape(rt, &out_shape)?;
    let float = float_product(a.elem, b.elem, rt.elem)?;
    let c_strides = match c {
        Some(c) => {
            if c.elem.is_float() != float {
                return Err(format!(
                    "c has element type {} but the product is {}",
                    c.elem,
                    if float { "float" } else { "integral" }
                ));
            }
            let bc = broadcast(&c.shape, &out_shape)
                .ok()
                .filter(|s| *s == out_shape)
                .ok_or_else(|| {
                    format!(
                        "c of shape {} does not broadcast to {}",
                        fmt_shape(&c.shape),
                        fmt_shape(&out_shape)
                    )
                })?;
            broadcast_strides(&c.shape, &bc)
        }
        None => vec![0, 0],
    };
    let total = count(&out_shape)?;
    let (m, k, n) = (m as usize, k as usize, n as usize);
    let elem = rt.elem;
    let mut codes = vec![0u64; total];
    let own = crate::shape::strides(&out_shape);
    if float {
        let mut av = floats(a);
        let mut bv = floats(b);
        if at.trans_a {
            av = transposed(av, k, m);
        }
        if at.trans_b {
            bv = transposed(bv, n, k);
        }
        let mut acc = vec![0.0f64; total];
        kernel_f64(&av, &bv, m, k, n, &mut acc);
        match c {
            Some(c) => {
                let cv = floats(c);
                walk::<2, String>(&out_shape, [&own, &c_strides], |i, [_, ci]| {
                    codes[i] = encode_arith(elem, at.alpha * acc[i] + at.beta * cv[ci]);
                    Ok(())
                })?;
            }
            None => {
                for (code, &v) in codes.iter_mut().zip(&acc) {
                    *code = encode_arith(elem, at.alpha * v);
                }
            }
        }
    } else {
        if at.alpha != 1.0 || at.beta != 1.0 {
            return Err(format!(
                "integral gemm needs alpha = beta = 1, got alpha = {:?}, beta = {:?}",
                at.alpha, at.beta
            ));
        }
        // Materialize op(a), op(b) as plain tensors so one code path decodes them.
        let ta = at.trans_a.then(|| transposed_tensor(a, m, k));
        let tb = at.trans_b.then(|| transposed_tensor(b, k, n));
        let (a, b) = (ta.as_ref().unwrap_or(a), tb.as_ref().unwrap_or(b));
        let cv = c.map(ints);
        let cmax = cv
            .as_ref()
            .and_then(|v| v.iter().map(|x| x.unsigned_abs()).max())
            .unwrap_or(0);
        let mut acc = vec![Wide::default(); total];
        match int_operands(a, b, k, cmax) {
            IntOperands::Narrow(av, bv) => {
                let mut acc64 = vec![0i64; total];
                kernel_i64(&av, &bv, m, k, n, &mut acc64);
                for (w, v) in acc.iter_mut().zip(acc64) {
                    w.add_product(v as i128, 1);
                }
            }
            IntOperands::Wide(av, bv) => kernel_wide(&av, &bv, m, k, n, &mut acc),
        }
        walk::<2, String>(&out_shape, [&own, &c_strides], |i, [_, ci]| {
            let mut w = acc[i];
            if let Some(cv) = &cv {
                w.add_product(cv[ci], 1);
            }
            codes[i] = w.encode(elem, at.overflow);
            Ok(())
        })?;
    }
    Ok(tensor(elem, &out_shape, codes))
}
