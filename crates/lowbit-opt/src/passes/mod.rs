//! The built-in passes, one module each, and helpers they share.

pub mod canonicalize;
pub mod cse;
pub mod dce;
pub mod egraph;

use lowbit_ir::{Function, Op, OpKind, Tensor, Value};
use std::collections::HashSet;

/// The value of `v` if an op in `f` defines it as a constant whose payload
/// decodes for its type.
pub(crate) fn constant_value(f: &Function, v: Value) -> Option<Tensor> {
    let op = f.def_op(v)?;
    match &f.op(op).kind {
        OpKind::Constant(c) => Tensor::from_bytes(f.ty(v), c.bytes()).ok(),
        _ => None,
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
