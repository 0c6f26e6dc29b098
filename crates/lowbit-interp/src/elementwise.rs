//! Broadcasting binary arithmetic and the element-wise activations.

use crate::num::{encode_arith, floats, int_to_int_code, ints, want_float, want_shape};
use crate::shape::{broadcast, broadcast_strides, count, walk};
use crate::special::{erf, erfc};
use crate::tensor;
use lowbit_ir::{BinaryOp, ElemType, Overflow, Tensor, TensorType, UnaryOp};

/// `add`/`sub`/`mul`/`div` with numpy broadcasting.
pub(crate) fn binary(
    op: BinaryOp,
    ov: Overflow,
    a: &Tensor,
    b: &Tensor,
    rt: &TensorType,
) -> Result<Tensor, String> {
    if a.elem != b.elem || a.elem != rt.elem {
        return Err(format!(
            "operands and result must have one element type, got {}, {} -> {}",
            a.elem, b.elem, rt.elem
        ));
    }
    let shape = broadcast(&a.shape, &b.shape)?;
    want_shape(rt, &shape)?;
    let mut codes = vec![0u64; count(&shape)?];
    let sa = broadcast_strides(&a.shape, &shape);
    let sb = broadcast_strides(&b.shape, &shape);
    let elem = rt.elem;
    if elem.is_float() {
        let (x, y) = (floats(a), floats(b));
        let f: fn(f64, f64) -> f64 = match op {
            BinaryOp::Add => |x, y| x + y,
            BinaryOp::Sub => |x, y| x - y,
            BinaryOp::Mul => |x, y| x * y,
            BinaryOp::Div => |x, y| x / y,
            BinaryOp::Pow => f64::powf,
            BinaryOp::Min => |x, y| {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.min(y)
                }
            },
            BinaryOp::Max => |x, y| {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.max(y)
                }
            },
        };
        walk::<2, String>(&shape, [&sa, &sb], |i, [ia, ib]| {
            codes[i] = encode_arith(elem, f(x[ia], y[ib]));
            Ok(())
        })?;
    } else {
        let (x, y) = (ints(a), ints(b));
        walk::<2, String>(&shape, [&sa, &sb], |i, [ia, ib]| {
            let (p, q) = (x[ia], y[ib]);
            // Operands are below 2^64 in magnitude: only u64 * u64 can leave i128.
            codes[i] = match op {
                BinaryOp::Add => int_to_int_code(p + q, elem, ov),
                BinaryOp::Sub => int_to_int_code(p - q, elem, ov),
                BinaryOp::Mul => match p.checked_mul(q) {
                    Some(v) => int_to_int_code(v, elem, ov),
                    // Positive overflow (both u64); the low 128 bits are exact.
                    None if ov == Overflow::Saturate => int_to_int_code(i128::MAX, elem, ov),
                    None => int_to_int_code(p.wrapping_mul(q), elem, ov),
                },
                BinaryOp::Div => {
                    if q == 0 {
                        return Err("integer division by zero".to_string());
                    }
                    int_to_int_code(p / q, elem, ov)
                }
                BinaryOp::Min => int_to_int_code(p.min(q), elem, ov),
                BinaryOp::Max => int_to_int_code(p.max(q), elem, ov),
                BinaryOp::Pow => return Err(format!("pow needs float operands, got {elem}")),
            };
            Ok(())
        })?;
    }
    Ok(tensor(elem, &shape, codes))
}

/// `relu`: floats in `f64`, integers exactly in the operand's type.
pub(crate) fn relu(x: &Tensor, rt: &TensorType) -> Result<Tensor, String> {
    want_shape(rt, &x.shape)?;
    match x.elem {
        ElemType::Float(_) => float_unary(x, rt, |v| if v > 0.0 || v.is_nan() { v } else { 0.0 }),
        ElemType::Bipolar => Err("relu is not defined on b1 (it has no zero)".into()),
        ElemType::Int { .. } => {
            if rt.elem != x.elem {
                return Err(format!(
                    "integer relu keeps the element type: expected {}, got {}",
                    x.elem, rt.elem
                ));
            }
            let codes = ints(x)
                .into_iter()
                .map(|v| x.elem.encode_int(v.max(0), Overflow::Wrap))
                .collect();
            Ok(tensor(x.elem, &x.shape, codes))
        }
    }
}

/// `neg`, `sqrt`, `exp`, `sigmoid`, `tanh`, `erf`: floats in `f64` rounded
/// once; integer `neg` exactly, then wrapped (`-(-128)` is `-128` in `i8`).
pub(crate) fn unary(op: UnaryOp, x: &Tensor, rt: &TensorType) -> Result<Tensor, String> {
    if op == UnaryOp::Neg && x.elem.is_int() {
        want_shape(rt, &x.shape)?;
        if rt.elem != x.elem {
            return Err(format!(
                "integer neg keeps the element type: expected {}, got {}",
                x.elem, rt.elem
            ));
        }
        let codes = ints(x)
            .into_iter()
            .map(|v| int_to_int_code(-v, x.elem, Overflow::Wrap))
            .collect();
        return Ok(tensor(x.elem, &x.shape, codes));
    }
    let f: fn(f64) -> f64 = match op {
        UnaryOp::Neg => |v| -v,
        UnaryOp::Sqrt => f64::sqrt,
        UnaryOp::Exp => f64::exp,
        UnaryOp::Sigmoid => sigmoid,
        UnaryOp::Tanh => f64::tanh,
        UnaryOp::Erf => erf,
    };
    float_unary(x, rt, f)
}

/// `1 / (1 + exp(-x))`, written so neither tail overflows to NaN.
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// A float-to-float element-wise function computed in `f64`.
pub(crate) fn float_unary(
    x: &Tensor,
    rt: &TensorType,
    f: impl Fn(f64) -> f64,
) -> Result<Tensor, String> {
    want_float("the operand", x.elem)?;
    want_float("the result", rt.elem)?;
    want_shape(rt, &x.shape)?;
    let codes = x
        .codes
        .iter()
        .map(|&c| encode_arith(rt.elem, f(x.elem.decode(c))))
        .collect();
    Ok(tensor(rt.elem, &x.shape, codes))
}

/// `1/√2 − FRAC_1_SQRT_2`: the rounding error of the constant.
const FRAC_1_SQRT_2_LO: f64 = -4.833646656726457e-17;

/// `0.5 x (1 + erf(x/√2))`, as `0.5 x erfc(−z)` with `z = x/√2`.
///
/// `erfc` magnifies a relative error in its argument by about `2z²`, so
/// `z` is carried as `hi + lo` (the product's exact rounding error via a
/// fused multiply-add, plus the constant's own error) and the first-order
/// term `lo · 2/√π · e^{−hi²}` is added back.
///
/// At `+inf` the split would compute `inf − inf`; the spec's formula gives
/// `+inf` there (and NaN at `−inf`, `−inf · 0`, which the split yields too).
pub(crate) fn gelu_erf(x: f64) -> f64 {
    use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI};
    if x == f64::INFINITY {
        return x;
    }
    let hi = x * FRAC_1_SQRT_2;
    let lo = x.mul_add(FRAC_1_SQRT_2, -hi) + x * FRAC_1_SQRT_2_LO;
    let tail = erfc(-hi) + lo * FRAC_2_SQRT_PI * (-(hi * hi)).exp();
    0.5 * x * tail
}

/// `√(2/π)`, correctly rounded.
const SQRT_2_OVER_PI: f64 = 0.7978845608028654;

/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
pub(crate) fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))).tanh())
}

/// `x / (1 + exp(-x))`.
pub(crate) fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqrt_2_over_pi_is_correctly_rounded() {
        let v = (2.0 / std::f64::consts::PI).sqrt();
        assert!((v - SQRT_2_OVER_PI).abs() <= f64::EPSILON);
        // 0.7978845608028653558798... rounds to this double:
        assert_eq!(SQRT_2_OVER_PI.to_bits(), 0x3FE9884533D43651);
    }
}
