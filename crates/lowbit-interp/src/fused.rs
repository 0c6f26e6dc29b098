//! The fused quantized ops: `qmatmul`, `matmul_int` and `requant_dyadic`.
//!
//! `qmatmul` is defined as the composition of the ops it replaces, rounded
//! at the same points (dequantized weight to `dequant_type`, product, bias
//! sum and activation to the result type, or to `requant_type` followed by
//! the requantize epilogue's `quantize`), so fusing is bit-exact by
//! construction. `matmul_int` sums `(a − za)(b − zb)` exactly in `i128`
//! (an accumulator that would exceed `i128`, possible only with 64-bit
//! operands, is an error); its `bit_serial` schedule really computes the
//! sum from AND-popcounts of bit-planes, so tests comparing the two
//! schedules check the decomposition itself. `requant_dyadic` rounds
//! `acc · m / 2^shift` exactly on integers.

use crate::elementwise::{binary, float_unary, gelu_erf, gelu_tanh, relu, silu};
use crate::linalg::{matmul, BatchedDims};
use crate::num::{int_to_int_code, ints, want_shape};
use crate::quant::{dequantize, quantize};
use crate::shape::{count, fmt_shape, walk};
use crate::tensor;
use lowbit_ir::{
    Activation, BinaryOp, ElemType, Granularity, IntSchedule, Overflow, QRequant, Rounding, Tensor,
    TensorType,
};
use lowbit_numerics::round::round_shift_right;

/// Attributes of `qmatmul` that shape its evaluation.
pub(crate) struct QMatMulAttrs<'a> {
    pub granularity: &'a Granularity,
    pub dequant_type: ElemType,
    pub has_zero_point: bool,
    pub has_bias: bool,
    pub weight_lhs: bool,
    pub activation: Activation,
    pub requant: Option<&'a QRequant>,
}

/// `qmatmul x, wq, scale[, zp][, bias][, out_scale[, out_zp]]`.
pub(crate) fn qmatmul(
    at: QMatMulAttrs,
    ops: &[&Tensor],
    rt: &TensorType,
) -> Result<Tensor, String> {
    let n = 3 + at.has_zero_point as usize + at.has_bias as usize;
    let want = n + at.requant.map_or(0, |r| 1 + r.has_zero_point as usize);
    if ops.len() != want {
        return Err(format!(
            "expected {want} operands for these zero_point/bias/requant attributes, got {}",
            ops.len()
        ));
    }
    let Some(rq) = at.requant else {
        return qmatmul_float(&at, ops, rt);
    };
    // Exactly `quantize(qmatmul(...) : requant_type, out_scale[, out_zp])`.
    let ft = TensorType::new(rt.shape.clone(), rq.float_type);
    let y = qmatmul_float(&at, &ops[..n], &ft)?;
    let mut qops = vec![&y];
    qops.extend(&ops[n..]);
    quantize(
        &rq.granularity,
        crate::quant::OpRounding::Mode(rq.rounding),
        rq.saturate,
        &qops,
        rt,
    )
    .map_err(|e| format!("requant epilogue: {e}"))
}

/// The float part of `qmatmul`: `act(matmul(x, dequantize(wq)) + bias)`.
fn qmatmul_float(at: &QMatMulAttrs, ops: &[&Tensor], rt: &TensorType) -> Result<Tensor, String> {
    let (x, w) = (ops[0], ops[1]);
    let mut deq_ops = vec![w, ops[2]];
    if at.has_zero_point {
        deq_ops.push(ops[3]);
    }
    let wt = TensorType::new(w.shape.clone(), at.dequant_type);
    let wd = dequantize(at.granularity, &deq_ops, &wt).map_err(|e| format!("weight: {e}"))?;
    let mut y = if at.weight_lhs {
        matmul(Overflow::Wrap, &wd, x, rt)?
    } else {
        matmul(Overflow::Wrap, x, &wd, rt)?
    };
    if at.has_bias {
        let bias = ops[3 + at.has_zero_point as usize];
        y = binary(BinaryOp::Add, Overflow::Wrap, &y, bias, rt)
            .map_err(|e| format!("bias: {e}"))?;
    }
    match at.activation {
        Activation::None => Ok(y),
        Activation::Relu => relu(&y, rt),
        Activation::Gelu => float_unary(&y, rt, gelu_erf),
        Activation::GeluTanh => float_unary(&y, rt, gelu_tanh),
        Activation::Silu => float_unary(&y, rt, silu),
    }
}

/// Exact integer operands with their zero points removed, and the shapes.
struct Centered {
    a: Vec<i128>,
    b: Vec<i128>,
    za: i128,
    zb: i128,
}

fn zero_point(t: Option<&&Tensor>, owner: &Tensor, what: &str) -> Result<i128, String> {
    let Some(z) = t else { return Ok(0) };
    if z.elem != owner.elem || z.codes.len() != 1 {
        return Err(format!(
            "the {what} zero point must be one {} element, got {} of shape {}",
            owner.elem,
            z.elem,
            fmt_shape(&z.shape)
        ));
    }
    Ok(ints(z)[0])
}

/// `matmul_int a, b[, za, zb]`.
pub(crate) fn matmul_int(
    ov: Overflow,
    schedule: IntSchedule,
    ops: &[&Tensor],
    rt: &TensorType,
) -> Result<Tensor, String> {
    if ops.len() != 2 && ops.len() != 4 {
        return Err(format!(
            "expected 2 operands, or 4 with both zero points, got {}",
            ops.len()
        ));
    }
    let (a, b) = (ops[0], ops[1]);
    for (what, t) in [("lhs", a), ("rhs", b)] {
        if !t.elem.is_int() {
            return Err(format!("{what} must be an integer tensor, got {}", t.elem));
        }
    }
    if !rt.elem.is_int() {
        return Err(format!(
            "the result must be an integer type, got {}",
            rt.elem
        ));
    }
    let c = Centered {
        a: ints(a),
        b: ints(b),
        za: zero_point(ops.get(2), a, "lhs")?,
        zb: zero_point(ops.get(3), b, "rhs")?,
    };
    let geo = BatchedDims::check(a, b, rt, "")?;
    let total = count(&geo.out_shape)?;
    let (m, k, n) = (geo.m, geo.k, geo.n);
    let (sa, sb) = geo.offsets(a, b);
    let (batch, out_shape) = (geo.batch, geo.out_shape);
    let mut codes = vec![0u64; total];
    let mn = m * n;
    let dims = (m, k, n);
    let planes = (a.elem, b.elem);
    walk::<2, String>(&batch, [&sa, &sb], |bi, [oa, ob]| {
        let (ab, bb) = (&c.a[oa..oa + m * k], &c.b[ob..ob + k * n]);
        let acc = match schedule {
            // The same integers whatever the backend's instructions.
            IntSchedule::Direct | IntSchedule::Amx => direct(ab, bb, c.za, c.zb, dims)?,
            IntSchedule::BitSerial => bit_serial(ab, bb, c.za, c.zb, dims, planes)?,
        };
        for (code, v) in codes[bi * mn..(bi + 1) * mn].iter_mut().zip(acc) {
            *code = int_to_int_code(v, rt.elem, ov);
        }
        Ok(())
    })?;
    Ok(tensor(rt.elem, &out_shape, codes))
}

const TOO_WIDE: &str = "the exact accumulator exceeds 128 bits";

fn direct(
    a: &[i128],
    b: &[i128],
    za: i128,
    zb: i128,
    (m, k, n): (usize, usize, usize),
) -> Result<Vec<i128>, String> {
    let mut acc = vec![0i128; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p].checked_sub(za).ok_or(TOO_WIDE)?;
            for j in 0..n {
                let y = b[p * n + j].checked_sub(zb).ok_or(TOO_WIDE)?;
                let prod = x.checked_mul(y).ok_or(TOO_WIDE)?;
                let slot = &mut acc[i * n + j];
                *slot = slot.checked_add(prod).ok_or(TOO_WIDE)?;
            }
        }
    }
    Ok(acc)
}

/// Bit-plane masks of a `rows × k` matrix of integer values of type `elem`:
/// `out[plane][row]` holds bit `plane` of every element of the row, packed
/// 64 per word along `k`.
fn plane_masks(
    vals: impl Fn(usize, usize) -> i128,
    rows: usize,
    k: usize,
    bits: u32,
) -> Vec<Vec<Vec<u64>>> {
    let words = k.div_ceil(64);
    let mut out = vec![vec![vec![0u64; words]; rows]; bits as usize];
    for r in 0..rows {
        for p in 0..k {
            // The two's-complement bit pattern of the value in `bits` bits.
            let code = vals(r, p) as u128;
            for (plane, masks) in out.iter_mut().enumerate() {
                if (code >> plane) & 1 == 1 {
                    masks[r][p / 64] |= 1 << (p % 64);
                }
            }
        }
    }
    out
}

/// The weight of bit-plane `i` of a `bits`-bit integer: `2^i`, negative for
/// the sign bit of a signed type.
fn plane_weight(i: u32, bits: u32, signed: bool) -> i128 {
    let w = 1i128 << i;
    if signed && i + 1 == bits {
        -w
    } else {
        w
    }
}

fn popcount_and(x: &[u64], y: &[u64]) -> i128 {
    x.iter()
        .zip(y)
        .map(|(a, b)| (a & b).count_ones() as i128)
        .sum()
}

/// `Σ_k (a − za)(b − zb)` as `Σ_ij w_i w_j popcount(A_i & B_j)` minus the
/// zero-point corrections `zb·Σa + za·Σb − k·za·zb`, where the row and column
/// sums are themselves popcounts of single planes.
fn bit_serial(
    a: &[i128],
    b: &[i128],
    za: i128,
    zb: i128,
    (m, k, n): (usize, usize, usize),
    (ea, eb): (ElemType, ElemType),
) -> Result<Vec<i128>, String> {
    let (
        ElemType::Int {
            bits: pa,
            signed: sa,
        },
        ElemType::Int {
            bits: pb,
            signed: sb,
        },
    ) = (ea, eb)
    else {
        return Err(format!(
            "bit-serial needs integer operands, got {ea} and {eb}"
        ));
    };
    let (pa, pb) = (pa as u32, pb as u32);
    let ap = plane_masks(|r, p| a[r * k + p], m, k, pa);
    let bp = plane_masks(|c, p| b[p * n + c], n, k, pb);
    let ones = |masks: &[u64]| masks.iter().map(|w| w.count_ones() as i128).sum::<i128>();
    let row_sum = |r: usize| -> i128 {
        (0..pa)
            .map(|i| plane_weight(i, pa, sa) * ones(&ap[i as usize][r]))
            .sum()
    };
    let col_sum = |c: usize| -> i128 {
        (0..pb)
            .map(|j| plane_weight(j, pb, sb) * ones(&bp[j as usize][c]))
            .sum()
    };
    let kz = (k as i128)
        .checked_mul(za)
        .and_then(|v| v.checked_mul(zb))
        .ok_or(TOO_WIDE)?;
    let mut acc = vec![0i128; m * n];
    for r in 0..m {
        let ra = row_sum(r);
        for c in 0..n {
            let mut dot = 0i128;
            for i in 0..pa {
                for j in 0..pb {
                    let w = plane_weight(i, pa, sa) * plane_weight(j, pb, sb);
                    let pc = popcount_and(&ap[i as usize][r], &bp[j as usize][c]);
                    dot = w
                        .checked_mul(pc)
                        .and_then(|t| dot.checked_add(t))
                        .ok_or(TOO_WIDE)?;
                }
            }
            let corr = zb
                .checked_mul(ra)
                .and_then(|x| za.checked_mul(col_sum(c)).and_then(|y| x.checked_add(y)))
                .ok_or(TOO_WIDE)?;
            acc[r * n + c] = dot
                .checked_sub(corr)
                .and_then(|v| v.checked_add(kz))
                .ok_or(TOO_WIDE)?;
        }
    }
    Ok(acc)
}

/// The exact `round(v / 2^shift)` in the given mode.
pub(crate) fn round_div_pow2(v: i128, shift: u32, mode: Rounding) -> i128 {
    let mag = round_shift_right(v.unsigned_abs(), shift, v < 0, mode);
    // |v| < 2^127 here, so the rounded magnitude fits back.
    if v < 0 {
        -(mag as i128)
    } else {
        mag as i128
    }
}

/// Attributes of `requant_dyadic`.
pub(crate) struct Dyadic<'a> {
    pub multiplier: &'a [i64],
    pub shift: &'a [u32],
    pub axis: Option<u32>,
    pub rounding: Rounding,
    pub saturate: bool,
}

/// `requant_dyadic acc[, zp]`.
pub(crate) fn requant_dyadic(
    d: Dyadic,
    ops: &[&Tensor],
    rt: &TensorType,
) -> Result<Tensor, String> {
    let acc = ops[0];
    if !acc.elem.is_int() || !rt.elem.is_int() {
        return Err(format!(
            "accumulator and result must be integer types, got {} -> {}",
            acc.elem, rt.elem
        ));
    }
    let channels = match d.axis {
        None => 1,
        Some(a) => *acc.shape.get(a as usize).ok_or_else(|| {
            format!(
                "axis {a} is out of range for the accumulator shape {}",
                fmt_shape(&acc.shape)
            )
        })? as usize,
    };
    if d.multiplier.len() != channels || d.shift.len() != channels {
        return Err(format!(
            "{} multipliers and {} shifts for {channels} channels",
            d.multiplier.len(),
            d.shift.len()
        ));
    }
    for (&m, &s) in d.multiplier.iter().zip(d.shift) {
        if !(0..1i64 << 62).contains(&m) || s > 126 {
            return Err(format!(
                "multiplier {m} or shift {s} out of range (0 <= m < 2^62, shift <= 126)"
            ));
        }
    }
    want_shape(rt, &acc.shape)?;
    let zp = match ops.get(1) {
        None => 0,
        Some(z) if z.elem == rt.elem && z.codes.len() == 1 => ints(z)[0],
        Some(z) => {
            return Err(format!(
                "the zero point must be one {} element, got {} of shape {}",
                rt.elem,
                z.elem,
                fmt_shape(&z.shape)
            ))
        }
    };
    let ov = if d.saturate {
        Overflow::Saturate
    } else {
        Overflow::Wrap
    };
    // Elements of one channel repeat every `inner` elements, `channels`
    // times, in row-major order.
    let inner: usize = match d.axis {
        None => 1,
        Some(a) => acc.shape[a as usize + 1..].iter().product::<u64>() as usize,
    };
    let codes = ints(acc)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let c = (i / inner.max(1)) % channels;
            // |v| < 2^64 and m < 2^62: the product fits in i128.
            let q = round_div_pow2(v * d.multiplier[c] as i128, d.shift[c], d.rounding);
            int_to_int_code(q + zp, rt.elem, ov)
        })
        .collect();
    Ok(tensor(rt.elem, &acc.shape, codes))
}
