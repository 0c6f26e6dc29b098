//! Ops that select or combine elements by index: `concat`, `slice`,
//! `gather`, `broadcast`, and the keep-dims reductions `reduce_min` and
//! `reduce_max`. Values are copied unchanged (reductions compare decoded
//! values; a NaN anywhere in a reduced slice makes its result NaN).

use crate::num::{floats, ints, want_shape};
use crate::shape::{broadcast_strides, count, fmt_shape, norm_axis, strides, walk};
use crate::tensor;
use lowbit_ir::{ReduceOp, Tensor, TensorType};

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

/// `concat {axis}`: operands joined along `axis`.
pub(crate) fn concat(axis: i64, ops: &[&Tensor], rt: &TensorType) -> Result<Tensor, String> {
    let first = ops[0];
    same_elem(first, rt)?;
    let ax = norm_axis(axis, first.shape.len())?;
    let mut shape = first.shape.clone();
    for (i, t) in ops.iter().enumerate().skip(1) {
        let fits = t.elem == first.elem
            && t.shape.len() == first.shape.len()
            && (0..t.shape.len()).all(|d| d == ax || t.shape[d] == first.shape[d]);
        if !fits {
            return Err(format!(
                "operand #{i} ({} {}) does not join operand #0 ({} {}) along axis {ax}",
                fmt_shape(&t.shape),
                t.elem,
                fmt_shape(&first.shape),
                first.elem
            ));
        }
        shape[ax] += t.shape[ax];
    }
    want_shape(rt, &shape)?;
    let outer: usize = count(&shape[..ax])?;
    let inner: usize = count(&shape[ax + 1..])?;
    let mask = first.elem.code_mask();
    let mut codes = Vec::with_capacity(count(&shape)?);
    for o in 0..outer {
        for t in ops {
            let chunk = t.shape[ax] as usize * inner;
            codes.extend(t.codes[o * chunk..(o + 1) * chunk].iter().map(|c| c & mask));
        }
    }
    Ok(tensor(first.elem, &shape, codes))
}

/// `slice {starts, steps}`: the result type gives the count per dim.
pub(crate) fn slice(
    starts: &[u64],
    steps: &[i64],
    x: &Tensor,
    rt: &TensorType,
) -> Result<Tensor, String> {
    same_elem(x, rt)?;
    let rank = x.shape.len();
    if starts.len() != rank || steps.len() != rank || rt.shape.len() != rank {
        return Err(format!(
            "starts, steps and the result need one entry per dim of the rank-{rank} operand"
        ));
    }
    let own = strides(&x.shape);
    let mut base: i128 = 0;
    let mut step_strides = Vec::with_capacity(rank);
    for d in 0..rank {
        let (n, dim, start, step) = (rt.shape[d], x.shape[d], starts[d], steps[d]);
        if n > 0 {
            let last = start as i128 + (n as i128 - 1) * step as i128;
            if start >= dim || last < 0 || last >= dim as i128 {
                return Err(format!(
                    "dim {d}: {n} elements from {start} in steps of {step} leave the operand dim of size {dim}"
                ));
            }
        }
        base += start as i128 * own[d] as i128;
        step_strides.push(step as i128 * own[d] as i128);
    }
    let n = count(&rt.shape)?;
    let mask = x.elem.code_mask();
    let mut codes = Vec::with_capacity(n);
    // Offsets are computed per element from the index (steps may be negative).
    let mut idx = vec![0u64; rank];
    for _ in 0..n {
        let off = base
            + idx
                .iter()
                .zip(&step_strides)
                .map(|(&i, &s)| i as i128 * s)
                .sum::<i128>();
        codes.push(x.codes[off as usize] & mask);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < rt.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(tensor(x.elem, &rt.shape, codes))
}

/// `gather {axis}`: `data` indexed along `axis` by integer `indices`.
pub(crate) fn gather(
    axis: i64,
    data: &Tensor,
    indices: &Tensor,
    rt: &TensorType,
) -> Result<Tensor, String> {
    same_elem(data, rt)?;
    if !indices.elem.is_int() {
        return Err(format!(
            "indices must have an integer element type, got {}",
            indices.elem
        ));
    }
    let ax = norm_axis(axis, data.shape.len())?;
    let mut shape = data.shape[..ax].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&data.shape[ax + 1..]);
    want_shape(rt, &shape)?;
    let dim = data.shape[ax] as i128;
    let outer = count(&data.shape[..ax])?;
    let inner = count(&data.shape[ax + 1..])?;
    let mut rows = Vec::with_capacity(indices.codes.len());
    for (n, i) in ints(indices).into_iter().enumerate() {
        let r = if i < 0 { i + dim } else { i };
        if !(0..dim).contains(&r) {
            return Err(format!(
                "index {i} (element {n} of the indices) is out of range for axis {ax} of size {dim}"
            ));
        }
        rows.push(r as usize);
    }
    let mask = data.elem.code_mask();
    let mut codes = Vec::with_capacity(count(&shape)?);
    for o in 0..outer {
        for &r in &rows {
            let at = (o * dim as usize + r) * inner;
            codes.extend(data.codes[at..at + inner].iter().map(|c| c & mask));
        }
    }
    Ok(tensor(data.elem, &shape, codes))
}

/// `broadcast`: numpy broadcast of the operand to the result shape.
pub(crate) fn broadcast(x: &Tensor, rt: &TensorType) -> Result<Tensor, String> {
    same_elem(x, rt)?;
    if crate::shape::broadcast(&x.shape, &rt.shape)? != rt.shape {
        return Err(format!(
            "operand shape {} does not broadcast to {}",
            fmt_shape(&x.shape),
            fmt_shape(&rt.shape)
        ));
    }
    let src = broadcast_strides(&x.shape, &rt.shape);
    let dst = strides(&rt.shape);
    let mask = x.elem.code_mask();
    let mut codes = vec![0u64; count(&rt.shape)?];
    walk::<2, String>(&rt.shape, [&dst, &src], |i, [_, s]| {
        codes[i] = x.codes[s] & mask;
        Ok(())
    })?;
    Ok(tensor(x.elem, &rt.shape, codes))
}

/// `reduce_min` / `reduce_max {axes}`, keeping reduced dims as 1.
pub(crate) fn reduce(
    op: ReduceOp,
    axes: &[u32],
    x: &Tensor,
    rt: &TensorType,
) -> Result<Tensor, String> {
    same_elem(x, rt)?;
    let mut shape = x.shape.clone();
    for &a in axes {
        match shape.get_mut(a as usize) {
            Some(d) => *d = 1,
            None => {
                return Err(format!(
                    "axis {a} is out of range for rank {}",
                    x.shape.len()
                ))
            }
        }
    }
    want_shape(rt, &shape)?;
    if x.codes.is_empty() {
        return Err("cannot reduce an empty tensor".into());
    }
    let out_strides = broadcast_strides(&shape, &x.shape);
    let dst = strides(&x.shape);
    let n = count(&shape)?;
    // Each output keeps the index of its current winner.
    let mut best: Vec<Option<usize>> = vec![None; n];
    let better = |a: f64, b: f64| match op {
        ReduceOp::Min => a < b,
        ReduceOp::Max => a > b,
    };
    if x.elem.is_float() {
        let v = floats(x);
        walk::<2, String>(&x.shape, [&dst, &out_strides], |i, [_, o]| {
            best[o] = match best[o] {
                None => Some(i),
                Some(b) if v[b].is_nan() => Some(b),
                Some(_) if v[i].is_nan() => Some(i),
                Some(b) if better(v[i], v[b]) => Some(i),
                keep => keep,
            };
            Ok(())
        })?;
    } else {
        let v = ints(x);
        walk::<2, String>(&x.shape, [&dst, &out_strides], |i, [_, o]| {
            let wins = |b: usize| match op {
                ReduceOp::Min => v[i] < v[b],
                ReduceOp::Max => v[i] > v[b],
            };
            best[o] = match best[o] {
                Some(b) if !wins(b) => Some(b),
                _ => Some(i),
            };
            Ok(())
        })?;
    }
    let mask = x.elem.code_mask();
    let codes = best
        .into_iter()
        .map(|b| b.map_or(0, |b| x.codes[b] & mask))
        .collect();
    Ok(tensor(x.elem, &shape, codes))
}
