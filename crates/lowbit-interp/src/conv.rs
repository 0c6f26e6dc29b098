//! `conv2d`: direct 2-D convolution (NCHW input, MCkk weight, groups,
//! strides, dilations, zero padding). Float operands: each output is the sum
//! over (input channel, kernel row, kernel column) in that order in `f64`,
//! plus the bias, rounded once. Integral operands: the exact sum (and bias),
//! then wrap/saturate.

use crate::num::{encode_arith, floats, int_to_int_code, ints, want_shape};
use crate::tensor;
use lowbit_ir::{Overflow, Tensor, TensorType};

/// The attributes of `conv2d`.
pub(crate) struct ConvAttrs {
    pub strides: [u64; 2],
    pub pads: [u64; 4],
    pub dilations: [u64; 2],
    pub group: u64,
    pub overflow: Overflow,
}

/// `conv2d x, w[, bias]`.
pub(crate) fn conv2d(at: &ConvAttrs, ops: &[&Tensor], rt: &TensorType) -> Result<Tensor, String> {
    let (x, w, b) = (ops[0], ops[1], ops.get(2));
    let float = match (x.elem.is_float(), w.elem.is_float()) {
        (true, true) if rt.elem.is_float() => true,
        (false, false) if rt.elem.is_int() => false,
        _ => {
            return Err(format!(
                "operands must both be float (float result) or both integral (integer result), got {}, {} -> {}",
                x.elem, w.elem, rt.elem
            ))
        }
    };
    if x.shape.len() != 4 || w.shape.len() != 4 {
        return Err("input and weight must be 4-D".into());
    }
    if at.strides.contains(&0) || at.dilations.contains(&0) || at.group == 0 {
        return Err("strides, dilations and group must be positive".into());
    }
    let [n, c, h, wd] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]].map(|d| d as usize);
    let [m, cg, kh, kw] = [w.shape[0], w.shape[1], w.shape[2], w.shape[3]].map(|d| d as usize);
    let g = at.group as usize;
    if c % g != 0 || m % g != 0 || cg.checked_mul(g) != Some(c) {
        return Err(format!(
            "channels do not match: input has {c}, weight {m}x{cg} per group, group = {g}"
        ));
    }
    if let Some(b) = b {
        if b.shape != [m as u64] {
            return Err(format!("bias must have shape [{m}]"));
        }
    }
    let [sh, sw] = at.strides.map(|s| s as usize);
    let [dh, dw] = at.dilations.map(|d| d as usize);
    let [pt, pl, pb, pr] = at.pads.map(|p| p as usize);
    let out = |size: usize, k: usize, p: usize, s: usize, d: usize| {
        let span = d.checked_mul(k.max(1) - 1)?.checked_add(1)?;
        size.checked_add(p)?.checked_sub(span).map(|v| v / s + 1)
    };
    let (Some(oh), Some(ow)) = (
        pt.checked_add(pb).and_then(|p| out(h, kh, p, sh, dh)),
        pl.checked_add(pr).and_then(|p| out(wd, kw, p, sw, dw)),
    ) else {
        return Err("the dilated kernel is larger than the padded input".into());
    };
    if kh == 0 || kw == 0 {
        return Err("the kernel has no elements".into());
    }
    let shape = [n, m, oh, ow].map(|d| d as u64);
    want_shape(rt, &shape)?;
    let mg = m / g;
    let taps = |ni: usize, mi: usize, y: usize, xo: usize, f: &mut dyn FnMut(usize, usize)| {
        let gi = mi / mg;
        for ci in 0..cg {
            let cin = gi * cg + ci;
            for ky in 0..kh {
                let iy = (y * sh + ky * dh) as isize - pt as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..kw {
                    let ix = (xo * sw + kx * dw) as isize - pl as isize;
                    if ix < 0 || ix >= wd as isize {
                        continue;
                    }
                    let xi = ((ni * c + cin) * h + iy as usize) * wd + ix as usize;
                    let wi = ((mi * cg + ci) * kh + ky) * kw + kx;
                    f(xi, wi);
                }
            }
        }
    };
    let mut codes = Vec::with_capacity(n * m * oh * ow);
    if float {
        let (xv, wv) = (floats(x), floats(w));
        let bv = b.map(|b| floats(b));
        for ni in 0..n {
            for mi in 0..m {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = 0.0f64;
                        taps(ni, mi, y, xo, &mut |xi, wi| acc += xv[xi] * wv[wi]);
                        if let Some(bv) = &bv {
                            acc += bv[mi];
                        }
                        codes.push(encode_arith(rt.elem, acc));
                    }
                }
            }
        }
    } else {
        let (xv, wv) = (ints(x), ints(w));
        let bv = b.map(|b| ints(b));
        for ni in 0..n {
            for mi in 0..m {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = 0i128;
                        taps(ni, mi, y, xo, &mut |xi, wi| {
                            acc = acc.saturating_add(xv[xi].saturating_mul(wv[wi]))
                        });
                        if let Some(bv) = &bv {
                            acc = acc.saturating_add(bv[mi]);
                        }
                        codes.push(int_to_int_code(acc, rt.elem, at.overflow));
                    }
                }
            }
        }
    }
    Ok(tensor(rt.elem, &shape, codes))
}
