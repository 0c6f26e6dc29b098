//! `softmax`, `layer_norm` and `rms_norm`, computed in `f64` per slice and
//! rounded once per element.

use crate::num::{encode_arith, floats, want_float, want_shape};
use crate::shape::{fmt_shape, norm_axis};
use crate::tensor;
use lowbit_ir::{Tensor, TensorType};

/// Walks every slice along `axis` of a float tensor: `f` gets the slice's
/// values, its maximum, and whether it holds a NaN, and returns the slice's
/// results in the same order; they are rounded once to the result type.
fn map_slices(
    axis: i64,
    x: &Tensor,
    rt: &TensorType,
    mut f: impl FnMut(&[f64], f64, bool) -> Vec<f64>,
) -> Result<Tensor, String> {
    want_float("the operand", x.elem)?;
    want_float("the result", rt.elem)?;
    want_shape(rt, &x.shape)?;
    let ax = norm_axis(axis, x.shape.len())?;
    let len = x.shape[ax] as usize;
    let inner: usize = x.shape[ax + 1..].iter().map(|&d| d as usize).product();
    let outer: usize = x.shape[..ax].iter().map(|&d| d as usize).product();
    let v = floats(x);
    let mut codes = vec![0u64; v.len()];
    let mut slice = vec![0.0f64; len];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            for (j, sj) in slice.iter_mut().enumerate() {
                *sj = v[at(j)];
            }
            let nan = slice.iter().any(|x| x.is_nan());
            let max = slice
                .iter()
                .fold(f64::NEG_INFINITY, |m, &x| if x > m { x } else { m });
            for (j, y) in f(&slice, max, nan).into_iter().enumerate() {
                codes[at(j)] = encode_arith(rt.elem, y);
            }
        }
    }
    Ok(tensor(rt.elem, &x.shape, codes))
}

/// `softmax {axis}` with the max subtracted first.
pub(crate) fn softmax(axis: i64, x: &Tensor, rt: &TensorType) -> Result<Tensor, String> {
    map_slices(axis, x, rt, |s, max, nan| {
        if nan {
            return vec![f64::NAN; s.len()];
        }
        let e: Vec<f64> = s.iter().map(|&x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.into_iter().map(|ej| ej / sum).collect()
    })
}

/// `log_softmax {axis}`: `x - m - log(Σ exp(x - m))` per slice, `m` the max.
pub(crate) fn log_softmax(axis: i64, x: &Tensor, rt: &TensorType) -> Result<Tensor, String> {
    map_slices(axis, x, rt, |s, max, nan| {
        if nan {
            return vec![f64::NAN; s.len()];
        }
        let lse = s.iter().map(|&x| (x - max).exp()).sum::<f64>().ln();
        s.iter().map(|&x| x - max - lse).collect()
    })
}

/// A checked normalization: `outer` slices of `n` elements each.
struct NormSetup {
    outer: usize,
    n: usize,
    gamma: Vec<f64>,
    beta: Option<Vec<f64>>,
}

/// Checks a normalization's operands and decodes gamma and beta.
fn norm_setup(axis: i64, ops: &[&Tensor], rt: &TensorType) -> Result<NormSetup, String> {
    let x = ops[0];
    want_float("the operand", x.elem)?;
    want_float("the result", rt.elem)?;
    want_shape(rt, &x.shape)?;
    let ax = norm_axis(axis, x.shape.len())?;
    let dims = &x.shape[ax..];
    for (i, (t, name)) in ops[1..].iter().zip(["gamma", "beta"]).enumerate() {
        want_float(name, t.elem)?;
        if t.shape != dims {
            return Err(format!(
                "{name} (operand #{}) has shape {} but the normalized dims are {}",
                i + 1,
                fmt_shape(&t.shape),
                fmt_shape(dims)
            ));
        }
    }
    let n: usize = dims.iter().map(|&d| d as usize).product();
    let outer: usize = x.shape[..ax].iter().map(|&d| d as usize).product();
    Ok(NormSetup {
        outer,
        n,
        gamma: floats(ops[1]),
        beta: ops.get(2).map(|b| floats(b)),
    })
}

/// `layer_norm x, gamma[, beta] {axis, epsilon}`.
pub(crate) fn layer_norm(
    axis: i64,
    eps: f64,
    ops: &[&Tensor],
    rt: &TensorType,
) -> Result<Tensor, String> {
    let NormSetup {
        outer,
        n,
        gamma,
        beta,
    } = norm_setup(axis, ops, rt)?;
    let v = floats(ops[0]);
    let mut codes = vec![0u64; v.len()];
    for o in 0..outer {
        let s = &v[o * n..(o + 1) * n];
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = s.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let denom = (var + eps).sqrt();
        for (j, &x) in s.iter().enumerate() {
            let mut y = (x - mean) / denom * gamma[j];
            if let Some(b) = &beta {
                y += b[j];
            }
            codes[o * n + j] = encode_arith(rt.elem, y);
        }
    }
    Ok(tensor(rt.elem, &ops[0].shape, codes))
}

/// `rms_norm x, gamma {axis, epsilon}`.
pub(crate) fn rms_norm(
    axis: i64,
    eps: f64,
    ops: &[&Tensor],
    rt: &TensorType,
) -> Result<Tensor, String> {
    let NormSetup {
        outer, n, gamma, ..
    } = norm_setup(axis, ops, rt)?;
    let v = floats(ops[0]);
    let mut codes = vec![0u64; v.len()];
    for o in 0..outer {
        let s = &v[o * n..(o + 1) * n];
        let ms = s.iter().map(|x| x * x).sum::<f64>() / n as f64;
        let denom = (ms + eps).sqrt();
        for (j, &x) in s.iter().enumerate() {
            codes[o * n + j] = encode_arith(rt.elem, x / denom * gamma[j]);
        }
    }
    Ok(tensor(rt.elem, &ops[0].shape, codes))
}
