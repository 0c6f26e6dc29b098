//! Ops that move or reinterpret elements without changing values:
//! `constant` (bytes to values through the layout), `reshape`, `transpose`
//! and `relayout`.

use crate::num::want_shape;
use crate::shape::{count, fmt_shape, strides, walk};
use crate::tensor;
use lowbit_ir::{Tensor, TensorType};

/// `constant`: decodes the payload through the result type's layout.
pub(crate) fn constant(bytes: &[u8], rt: &TensorType) -> Result<Tensor, String> {
    rt.layout.check_fits(rt.elem, &rt.shape)?;
    Tensor::from_bytes(rt, bytes)
}

fn same_elem(x: &Tensor, rt: &TensorType) -> Result<(), String> {
    if x.elem == rt.elem {
        Ok(())
    } else {
        Err(format!(
            "the element type must not change: operand has {}, result {}",
            x.elem, rt.elem
        ))
    }
}

fn masked(x: &Tensor) -> Vec<u64> {
    let mask = x.elem.code_mask();
    x.codes.iter().map(|&c| c & mask).collect()
}

/// `reshape`: same elements, the result type's shape.
pub(crate) fn reshape(x: &Tensor, rt: &TensorType) -> Result<Tensor, String> {
    same_elem(x, rt)?;
    let n = count(&rt.shape)?;
    if n != x.codes.len() {
        return Err(format!(
            "cannot reshape {} ({} elements) to {} ({n} elements)",
            fmt_shape(&x.shape),
            x.codes.len(),
            fmt_shape(&rt.shape)
        ));
    }
    Ok(tensor(x.elem, &rt.shape, masked(x)))
}

/// `transpose {perm}`: result dim `i` is operand dim `perm[i]`.
pub(crate) fn transpose(perm: &[u32], x: &Tensor, rt: &TensorType) -> Result<Tensor, String> {
    same_elem(x, rt)?;
    let rank = x.shape.len();
    let mut seen = vec![false; rank];
    for &p in perm {
        match seen.get_mut(p as usize) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(format!(
                    "perm {perm:?} is not a permutation of the {rank} dims"
                ))
            }
        }
    }
    if perm.len() != rank {
        return Err(format!(
            "perm {perm:?} is not a permutation of the {rank} dims"
        ));
    }
    let out_shape: Vec<u64> = perm.iter().map(|&p| x.shape[p as usize]).collect();
    want_shape(rt, &out_shape)?;
    let own = strides(&x.shape);
    let src: Vec<usize> = perm.iter().map(|&p| own[p as usize]).collect();
    let dst = strides(&out_shape);
    let mask = x.elem.code_mask();
    let mut codes = vec![0u64; x.codes.len()];
    walk::<2, String>(&out_shape, [&dst, &src], |i, [_, s]| {
        codes[i] = x.codes[s] & mask;
        Ok(())
    })?;
    Ok(tensor(x.elem, &out_shape, codes))
}

/// `relayout`: same values; the layout only affects storage.
pub(crate) fn relayout(x: &Tensor, rt: &TensorType) -> Result<Tensor, String> {
    same_elem(x, rt)?;
    want_shape(rt, &x.shape)?;
    rt.layout.check_fits(rt.elem, &rt.shape)?;
    Ok(tensor(x.elem, &x.shape, masked(x)))
}
