//! The built-in passes, one module each, and helpers they share.

pub mod canonicalize;
pub mod cse;
pub mod dce;
pub mod egraph;
pub mod quantize_activations;

use lowbit_ir::{Function, Op, OpKind, Tensor, Value};
use std::collections::{HashMap, HashSet};

/// The value of `v` if an op in `f` defines it as a constant whose payload
/// decodes for its type.
pub(crate) fn constant_value(f: &Function, v: Value) -> Option<Tensor> {
    let op = f.def_op(v)?;
    match &f.op(op).kind {
        OpKind::Constant(c) => Tensor::from_bytes(f.ty(v), c.bytes()).ok(),
        _ => None,
    }
}

/// Rewrites `op`'s operands through `subst` (a value that a walk has
/// replaced by another) and returns the rewritten list. Canonicalize and
/// CSE apply their replacements this way as the walk reaches each op, so
/// chains of replacements collapse in one pass.
pub(crate) fn substitute_operands(
    f: &mut Function,
    op: Op,
    subst: &HashMap<Value, Value>,
) -> Vec<Value> {
    let operands: Vec<Value> = f
        .op(op)
        .operands
        .iter()
        .map(|v| *subst.get(v).unwrap_or(v))
        .collect();
    f.op_mut(op).operands = operands.clone();
    operands
}

/// Rewrites the function's outputs through `subst` (see
/// [`substitute_operands`]), after a walk has replaced values.
pub(crate) fn substitute_outputs(f: &mut Function, subst: &HashMap<Value, Value>) {
    for (_, v) in &mut f.outputs {
        if let Some(n) = subst.get(v) {
            *v = *n;
        }
    }
}

/// Removes every op none of whose results reaches a function output
/// (every op is pure, so this never drops an effect). Returns how many ops
/// were removed.
pub(crate) fn erase_dead_ops(f: &mut Function) -> usize {
    let mut live: HashSet<Value> = f.outputs.iter().map(|(_, v)| *v).collect();
    let mut dead: HashSet<Op> = HashSet::new();
    for &op in f.ops().iter().rev() {
        let d = f.op(op);
        if d.results.iter().any(|r| live.contains(r)) || !d.kind.is_pure() {
            live.extend(d.operands.iter().copied());
        } else {
            dead.insert(op);
        }
    }
    let n = dead.len();
    if n > 0 {
        f.remove_ops(&dead);
    }
    n
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Small functions built with the builder API, for pass unit tests.
    use lowbit_ir::{ElemType, TensorType};

    /// `tensor<shape x elem>` from an element spelling.
    pub fn ty(shape: &[u64], elem: &str) -> TensorType {
        let e: ElemType = elem.parse().expect("test element type");
        TensorType::new(shape.to_vec(), e)
    }
}
