//! Shape arithmetic shared by the ops: checked element counts, numpy-style
//! broadcasting, and row-major walks that hand out flat offsets without
//! allocating per element.
//!
//! Every function here returns an error string instead of panicking on
//! shapes whose element count overflows `usize` or that do not broadcast.

use lowbit_ir::verifier::broadcast_shapes;

/// Number of elements of a shape, or an error when it overflows `usize`.
pub(crate) fn count(shape: &[u64]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| {
            usize::try_from(d).ok().and_then(|d| a.checked_mul(d))
        })
        .ok_or_else(|| format!("shape {} has too many elements", fmt_shape(shape)))
}

/// `[2, 3]` style shape text for messages.
pub(crate) fn fmt_shape(shape: &[u64]) -> String {
    let s: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", s.join(", "))
}

/// Row-major strides in elements.
pub(crate) fn strides(shape: &[u64]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1].wrapping_mul(shape[d + 1] as usize);
    }
    s
}

/// The numpy broadcast of two shapes (right-aligned; a dim of 1 stretches):
/// the verifier's rule, with an error message for ops run unverified.
pub(crate) fn broadcast(a: &[u64], b: &[u64]) -> Result<Vec<u64>, String> {
    broadcast_shapes(a, b).ok_or_else(|| {
        format!(
            "shapes {} and {} do not broadcast",
            fmt_shape(a),
            fmt_shape(b)
        )
    })
}

/// Strides that read an operand of shape `from` while walking `to` (which
/// `from` broadcasts to): broadcast dims get stride 0.
pub(crate) fn broadcast_strides(from: &[u64], to: &[u64]) -> Vec<usize> {
    let own = strides(from);
    let off = to.len() - from.len();
    (0..to.len())
        .map(|i| {
            if i < off || from[i - off] == 1 {
                0
            } else {
                own[i - off]
            }
        })
        .collect()
}

/// Walks `shape` in row-major order, calling `f(flat, offsets)` where
/// `offsets[j]` is the flat position in operand `j` read with `strides[j]`.
/// `N` is the number of operands.
pub(crate) fn walk<const N: usize, E>(
    shape: &[u64],
    strides: [&[usize]; N],
    mut f: impl FnMut(usize, [usize; N]) -> Result<(), E>,
) -> Result<(), E> {
    if shape.contains(&0) {
        return Ok(());
    }
    let rank = shape.len();
    if rank == 0 {
        return f(0, [0; N]);
    }
    let inner = shape[rank - 1] as usize;
    let inner_strides: [usize; N] = std::array::from_fn(|j| strides[j][rank - 1]);
    let mut idx = vec![0u64; rank - 1];
    let mut base = [0usize; N];
    let mut flat = 0usize;
    loop {
        for i in 0..inner {
            let offs: [usize; N] = std::array::from_fn(|j| base[j] + i * inner_strides[j]);
            f(flat, offs)?;
            flat += 1;
        }
        // Advance the outer odometer, keeping every operand's base offset in step.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return Ok(());
            }
            d -= 1;
            idx[d] += 1;
            for j in 0..N {
                base[j] += strides[j][d];
            }
            if idx[d] < shape[d] {
                break;
            }
            for j in 0..N {
                base[j] -= strides[j][d] * shape[d] as usize;
            }
            idx[d] = 0;
        }
    }
}

/// Normalizes a possibly negative axis for a tensor of `rank`.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_shapes() {
        assert_eq!(broadcast(&[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert_eq!(broadcast(&[], &[5]).unwrap(), vec![5]);
        assert!(broadcast(&[2, 3], &[3, 2]).is_err());
        assert_eq!(broadcast_strides(&[4, 1], &[2, 4, 3]), vec![0, 1, 0]);
    }

    #[test]
    fn walk_visits_broadcast_offsets() {
        let out = [2u64, 3];
        let sa = broadcast_strides(&[2, 1], &out);
        let sb = broadcast_strides(&[3], &out);
        let mut seen = Vec::new();
        walk::<2, ()>(&out, [&sa, &sb], |f, [a, b]| {
            seen.push((f, a, b));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, 0, 0),
                (1, 0, 1),
                (2, 0, 2),
                (3, 1, 0),
                (4, 1, 1),
                (5, 1, 2)
            ]
        );
    }

    #[test]
    fn counts_overflow_is_an_error() {
        assert!(count(&[u64::MAX, 2]).is_err());
        assert_eq!(count(&[]).unwrap(), 1);
        assert_eq!(count(&[3, 0]).unwrap(), 0);
    }
}
