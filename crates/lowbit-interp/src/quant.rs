//! `quantize`, `dequantize`, `requantize` and `cast`, with scale lookup for
//! every granularity (per tensor, per axis, blocked with ragged last blocks).
//!
//! The quantization quotient `x / scale` is rounded once to the quotient
//! format ([`quotient_format`]: `f32` for operands within `f32`, else `f64`)
//! before the op's own rounding, as onnxruntime's `f32` kernels compute it
//! (see the crate docs for the rule and the evidence). `requantize` keeps
//! `(q − zp_in) · s_in` exact up to that one rounding. `dequantize` is
//! unchanged: the exact product rounded once to the result type.

use crate::num::{
    encode_float_spec, floats, int_code, int_to_float_code, int_to_int_code, ints, to_format,
    want_float, want_shape, ExactReal,
};
use crate::shape::fmt_shape;
use crate::tensor;
use lowbit_ir::{ElemType, FloatFormat, Granularity, Overflow, Rounding, Tensor, TensorType};
use lowbit_numerics::{RoundSpec, StochasticRounding};

/// How an op rounds: one mode for every element, or a seeded stochastic
/// stream where element `i` of the result (row-major) uses the random bits
/// for index `i`, so results are reproducible from the seed alone.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OpRounding {
    Mode(Rounding),
    Stochastic(StochasticRounding),
}

impl OpRounding {
    /// From an op's `rounding` and `stochastic` attributes.
    pub(crate) fn new(mode: Rounding, stochastic: Option<StochasticRounding>) -> OpRounding {
        stochastic.map_or(OpRounding::Mode(mode), OpRounding::Stochastic)
    }

    /// The rounding decision for result element `i`.
    fn at(self, i: usize) -> RoundSpec {
        match self {
            OpRounding::Mode(m) => RoundSpec::Mode(m),
            OpRounding::Stochastic(s) => RoundSpec::Stochastic {
                random: s.random(i as u64),
                bits: s.bits(),
            },
        }
    }
}

fn overflow(saturate: bool) -> Overflow {
    if saturate {
        Overflow::Saturate
    } else {
        Overflow::Wrap
    }
}

/// Maps an element's multi-index to its scale index: the scale index is
/// `Σ_d table[d][idx[d]]`, one lookup per dim.
struct ScaleMap {
    tables: Vec<Vec<usize>>,
}

impl ScaleMap {
    /// Checks the scale (and zero point) shape for `data_shape` and builds the map.
    fn new(
        g: &Granularity,
        data_shape: &[u64],
        scale: &Tensor,
        zp: Option<&Tensor>,
        names: (&str, &str),
    ) -> Result<ScaleMap, String> {
        let want = g.scale_shape(data_shape)?;
        let ok = scale.shape == want || (want.is_empty() && scale.shape == [1]);
        if !ok {
            return Err(format!(
                "{} has shape {} but this granularity needs {}",
                names.0,
                fmt_shape(&scale.shape),
                fmt_shape(&want)
            ));
        }
        if let Some(z) = zp {
            if z.shape != scale.shape {
                return Err(format!(
                    "{} has shape {} but its scale has shape {}",
                    names.1,
                    fmt_shape(&z.shape),
                    fmt_shape(&scale.shape)
                ));
            }
        }
        let rank = data_shape.len();
        let mut tables: Vec<Vec<usize>> = Vec::with_capacity(rank);
        // Row-major strides of the scale tensor, in its own (full-rank) shape.
        let sstrides = crate::shape::strides(&want);
        for (d, &dim) in data_shape.iter().enumerate() {
            let n = dim as usize;
            let t: Vec<usize> = match g {
                Granularity::PerTensor => vec![0; n],
                Granularity::PerAxis { axis } if *axis as usize == d => (0..n).collect(),
                Granularity::PerAxis { .. } => vec![0; n],
                Granularity::Blocked { blocks } => {
                    let b = blocks
                        .iter()
                        .find(|(a, _)| *a as usize == d)
                        .map_or(1, |(_, b)| *b as usize);
                    (0..n).map(|i| (i / b) * sstrides[d]).collect()
                }
            };
            tables.push(t);
        }
        Ok(ScaleMap { tables })
    }

    /// Calls `f(flat, scale_index)` for every element in row-major order.
    fn for_each(&self, shape: &[u64], mut f: impl FnMut(usize, usize)) {
        let n: usize = shape.iter().map(|&d| d as usize).product();
        if n == 0 {
            return;
        }
        let rank = shape.len();
        let mut idx = vec![0usize; rank];
        let mut s: usize = self.tables.iter().map(|t| t[0]).sum();
        for flat in 0..n {
            f(flat, s);
            // Odometer step, keeping the scale index in step.
            for d in (0..rank).rev() {
                let t = &self.tables[d];
                s -= t[idx[d]];
                idx[d] += 1;
                if idx[d] < shape[d] as usize {
                    s += t[idx[d]];
                    break;
                }
                idx[d] = 0;
                s += t[0];
            }
        }
    }
}

/// The float format `quantize` and `requantize` divide in: `f32` when every
/// value of each float operand format (`x`, the scales, a float zero point)
/// is an `f32` value, `f64` otherwise. Non-float operands (an integral
/// `q` or zero point) do not count. See the crate docs.
pub fn quotient_format(operands: &[ElemType]) -> FloatFormat {
    let within_f32 = |e: &ElemType| match e.float() {
        None => true,
        Some(f) => {
            let t = FloatFormat::F32;
            // Every value of `f` is an f32 value when it has no more
            // significand bits, no larger binade and no finer smallest
            // step (`emin - man_bits`, the unit of the lowest binade).
            f.man_bits() <= t.man_bits()
                && f.emax() <= t.emax()
                && f.emin() - f.man_bits() as i32 >= t.emin() - t.man_bits() as i32
        }
    };
    if operands.iter().all(within_f32) {
        FloatFormat::F32
    } else {
        FloatFormat::F64
    }
}

/// `x / s` rounded nearest-even to `t`. For `t = f32` both operands are
/// `f32` values (that is how `t` was chosen), and the `f64` quotient
/// rounded to `f32` is the correctly rounded `f32` quotient: `f64` has more
/// than `2·24 + 2` bits, so the double rounding is innocuous for division.
fn divide(t: FloatFormat, x: f64, s: f64) -> f64 {
    to_format(t, x / s)
}

/// Quantizes each element's quotient (`x / s` already rounded to the
/// quotient format `t`) with the zero point at its `map` index.
#[allow(clippy::too_many_arguments)]
fn encode_quotients(
    quotients: &[f64],
    shape: &[u64],
    map: &ScaleMap,
    zp: Option<&Tensor>,
    rounding: OpRounding,
    saturate: bool,
    rt: &TensorType,
    t: FloatFormat,
) -> Result<Tensor, String> {
    let elem = rt.elem;
    let mut codes = vec![0u64; quotients.len()];
    if let ElemType::Float(f) = elem {
        let z = zp.map(floats);
        map.for_each(shape, |i, si| {
            let v = quotients[i];
            // `v + z` in the quotient format, as a kernel computing in
            // that format does (`t` holds every zero point value).
            let v = z.as_ref().map_or(v, |z| to_format(t, v + z[si]));
            codes[i] = encode_float_spec(f, v, rounding.at(i), saturate);
        });
    } else {
        let z = zp.map(ints);
        let ov = overflow(saturate);
        map.for_each(shape, |i, si| {
            let zi = z.as_ref().map_or(0, |z| z[si]);
            codes[i] = int_code(quotients[i], zi, elem, rounding.at(i), ov);
        });
    }
    Ok(tensor(elem, shape, codes))
}

/// Checks that the zero point has the result's element type.
fn want_zp_elem(zp: Option<&Tensor>, elem: ElemType) -> Result<(), String> {
    match zp {
        Some(z) if z.elem != elem => Err(format!(
            "zero point has element type {} but the result has {elem}",
            z.elem
        )),
        _ => Ok(()),
    }
}

/// `quantize x, scale[, zp]`.
pub(crate) fn quantize(
    g: &Granularity,
    rounding: OpRounding,
    saturate: bool,
    ops: &[&Tensor],
    rt: &TensorType,
) -> Result<Tensor, String> {
    let (x, scale, zp) = (ops[0], ops[1], ops.get(2).copied());
    want_float("the quantized operand", x.elem)?;
    want_float("the scale", scale.elem)?;
    let map = ScaleMap::new(g, &x.shape, scale, zp, ("the scale", "the zero point"))?;
    want_shape(rt, &x.shape)?;
    want_zp_elem(zp, rt.elem)?;
    // An integral zero point does not count (`quotient_format` skips it).
    let t = quotient_format(&[x.elem, scale.elem, zp.map_or(x.elem, |z| z.elem)]);
    let (xv, s) = (floats(x), floats(scale));
    let mut quot = vec![0.0f64; xv.len()];
    map.for_each(&x.shape, |i, si| quot[i] = divide(t, xv[i], s[si]));
    encode_quotients(&quot, &x.shape, &map, zp, rounding, saturate, rt, t)
}

/// Checks the zero point's element type against the quantized operand's.
fn want_in_zp(q: &Tensor, zp: Option<&Tensor>) -> Result<(), String> {
    match zp {
        Some(z) if z.elem != q.elem => Err(format!(
            "zero point has element type {} but the quantized operand has {}",
            z.elem, q.elem
        )),
        _ => Ok(()),
    }
}

/// `(q - zp) * scale` for every element, unrounded.
fn dequantize_values(
    q: &Tensor,
    scale: &Tensor,
    zp: Option<&Tensor>,
    map: &ScaleMap,
) -> Result<Vec<f64>, String> {
    want_float("the scale", scale.elem)?;
    want_in_zp(q, zp)?;
    let s = floats(scale);
    let mut out = vec![0.0f64; q.codes.len()];
    if q.elem.is_integral() {
        let qv = ints(q);
        let z = zp.map(ints);
        map.for_each(&q.shape, |i, si| {
            let d = qv[i] - z.as_ref().map_or(0, |z| z[si]);
            out[i] = d as f64 * s[si];
        });
    } else {
        let qv = floats(q);
        let z = zp.map(floats);
        map.for_each(&q.shape, |i, si| {
            let d = z.as_ref().map_or(qv[i], |z| qv[i] - z[si]);
            out[i] = d * s[si];
        });
    }
    Ok(out)
}

/// `dequantize q, scale[, zp]`.
pub(crate) fn dequantize(
    g: &Granularity,
    ops: &[&Tensor],
    rt: &TensorType,
) -> Result<Tensor, String> {
    let (q, scale, zp) = (ops[0], ops[1], ops.get(2).copied());
    want_float("the result", rt.elem)?;
    want_shape(rt, &q.shape)?;
    let map = ScaleMap::new(g, &q.shape, scale, zp, ("the scale", "the zero point"))?;
    let v = dequantize_values(q, scale, zp, &map)?;
    let codes = v
        .iter()
        .map(|&x| crate::num::encode_arith(rt.elem, x))
        .collect();
    Ok(tensor(rt.elem, &q.shape, codes))
}

/// The exact product `(q - zp_in) · s_in` of every element of `q` (see
/// [`ExactReal`]), with `q − zp_in` exact in `i128` for integral `q` and
/// an `f64` difference for float `q`.
fn dequantize_exact(
    q: &Tensor,
    scale: &Tensor,
    zp: &Tensor,
    map: &ScaleMap,
) -> Result<Vec<ExactReal>, String> {
    want_float("the input scale", scale.elem)?;
    want_in_zp(q, Some(zp))?;
    let s = floats(scale);
    let mut out = vec![ExactReal::Float(0.0); q.codes.len()];
    if q.elem.is_integral() {
        let (qv, z) = (ints(q), ints(zp));
        map.for_each(&q.shape, |i, si| {
            out[i] = ExactReal::int_times(qv[i] - z[si], s[si]);
        });
    } else {
        let (qv, z) = (floats(q), floats(zp));
        map.for_each(&q.shape, |i, si| {
            out[i] = ExactReal::float_times(qv[i] - z[si], s[si]);
        });
    }
    Ok(out)
}

/// `requantize q, s_in, zp_in, s_out, zp_out`: the exact `v = (q − zp_in) ·
/// s_in` divided by `s_out` with one rounding to the quotient format, then
/// quantized as `quantize` does.
pub(crate) fn requantize(
    gin: &Granularity,
    gout: &Granularity,
    rounding: Rounding,
    saturate: bool,
    ops: &[&Tensor],
    rt: &TensorType,
) -> Result<Tensor, String> {
    let [q, s_in, zp_in, s_out, zp_out] = ops else {
        return Err(format!("expected 5 operands, got {}", ops.len()));
    };
    let map_in = ScaleMap::new(
        gin,
        &q.shape,
        s_in,
        Some(zp_in),
        ("the input scale", "the input zero point"),
    )?;
    let v = dequantize_exact(q, s_in, zp_in, &map_in)?;
    want_float("the output scale", s_out.elem)?;
    let map_out = ScaleMap::new(
        gout,
        &q.shape,
        s_out,
        Some(zp_out),
        ("the output scale", "the output zero point"),
    )?;
    want_shape(rt, &q.shape)?;
    want_zp_elem(Some(zp_out), rt.elem)?;
    let t = quotient_format(&[q.elem, s_in.elem, s_out.elem, zp_out.elem]);
    let s = floats(s_out);
    let mut quot = vec![0.0f64; v.len()];
    map_out.for_each(&q.shape, |i, si| quot[i] = v[i].divide(s[si], t));
    encode_quotients(
        &quot,
        &q.shape,
        &map_out,
        Some(zp_out),
        OpRounding::Mode(rounding),
        saturate,
        rt,
        t,
    )
}

/// `cast x`.
pub(crate) fn cast(
    rounding: OpRounding,
    saturate: bool,
    x: &Tensor,
    rt: &TensorType,
) -> Result<Tensor, String> {
    want_shape(rt, &x.shape)?;
    let elem = rt.elem;
    let ov = overflow(saturate);
    let at = |i: usize| rounding.at(i);
    let codes: Vec<u64> = match (x.elem.is_integral(), elem) {
        (true, ElemType::Float(f)) => ints(x)
            .into_iter()
            .enumerate()
            .map(|(i, v)| int_to_float_code(v, f, at(i), saturate))
            .collect(),
        (true, _) => ints(x)
            .into_iter()
            .map(|v| int_to_int_code(v, elem, ov))
            .collect(),
        (false, ElemType::Float(f)) => floats(x)
            .into_iter()
            .enumerate()
            .map(|(i, v)| encode_float_spec(f, v, at(i), saturate))
            .collect(),
        (false, _) => floats(x)
            .into_iter()
            .enumerate()
            .map(|(i, v)| int_code(v, 0, elem, at(i), ov))
            .collect(),
    };
    Ok(tensor(elem, &x.shape, codes))
}

/// `absmax_scale {block, qmax}`: per block of `block` consecutive elements
/// along the last axis (the last block of a row may be shorter),
/// `max |x| / qmax` rounded once, nearest-even, to the result type (the
/// operand's); a NaN in a block gives NaN. The quotient is formed in `f64`
/// and then rounded to the result format: for formats of at most 24
/// significand bits (`f32` and narrower) that double rounding equals the
/// correctly rounded quotient (53 ≥ 2·24 + 2), and `f64` rounds once.
pub(crate) fn absmax_scale(
    block: u64,
    qmax: u64,
    x: &Tensor,
    rt: &TensorType,
) -> Result<Tensor, String> {
    want_float("absmax_scale operand", x.elem)?;
    if rt.elem != x.elem {
        return Err(format!(
            "the result element type {} differs from the operand's {}",
            rt.elem, x.elem
        ));
    }
    if block == 0 || qmax == 0 {
        return Err(format!(
            "block ({block}) and qmax ({qmax}) must be positive"
        ));
    }
    let Some((&k, lead)) = x.shape.split_last() else {
        return Err("absmax_scale needs an operand of rank 1 or more".into());
    };
    let nb = k.div_ceil(block);
    let mut shape = lead.to_vec();
    shape.push(nb);
    want_shape(rt, &shape)?;
    let v = floats(x);
    let (k, block) = (k as usize, block as usize);
    let mut out = Vec::with_capacity(v.len().div_ceil(block.max(1)));
    if k > 0 {
        for row in v.chunks(k) {
            for b in row.chunks(block) {
                let amax = b.iter().fold(0f64, |m, &e| {
                    if m.is_nan() || e.is_nan() {
                        f64::NAN
                    } else {
                        m.max(e.abs())
                    }
                });
                out.push(crate::num::encode_arith(rt.elem, amax / qmax as f64));
            }
        }
    }
    Ok(tensor(rt.elem, &shape, out))
}
