//! Common subexpression elimination: an op identical to an earlier one (same
//! kind and attributes, same operands, same result types) is replaced by the
//! earlier op's results. Constants are identical when their payload bytes and
//! types are.
//!
//! Every lowbit op is pure and a function is a single block, so the earlier
//! op always dominates the later one. Ops whose attributes hold a NaN never
//! compare equal and are left alone.

use super::{substitute_operands, substitute_outputs};
use crate::pass::{Pass, PassError, Statistics};
use crate::registry::{PassInfo, PassOptions, StatisticInfo};
use lowbit_ir::{Function, Op, OpKind, TensorType, Value};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    argument: "cse",
    name: "CSE",
    summary: "Replace ops identical to an earlier op by that op's results",
    options: &[],
    statistics: &[StatisticInfo {
        name: "num-cse",
        description: "Number of ops eliminated",
    }],
    create,
};

fn create(_: &PassOptions) -> Box<dyn Pass> {
    Box::new(CommonSubexprElimination {
        stats: Statistics::new(INFO.statistics),
    })
}

/// The `cse` pass.
pub struct CommonSubexprElimination {
    stats: Statistics,
}

/// A cheap hash of what makes two ops interchangeable; candidates with the
/// same hash are then compared in full.
fn op_hash(f: &Function, op: Op, operands: &[Value]) -> u64 {
    let d = f.op(op);
    let mut h = DefaultHasher::new();
    d.kind.name().hash(&mut h);
    if let OpKind::Constant(c) = &d.kind {
        c.bytes().hash(&mut h);
    }
    operands.hash(&mut h);
    for r in &d.results {
        f.ty(*r).hash(&mut h);
    }
    h.finish()
}

fn result_types(f: &Function, op: Op) -> Vec<&TensorType> {
    f.op(op).results.iter().map(|r| f.ty(*r)).collect()
}

impl Pass for CommonSubexprElimination {
    fn info(&self) -> &'static PassInfo {
        &INFO
    }

    fn statistics(&self) -> &Statistics {
        &self.stats
    }

    fn run(&mut self, f: &mut Function) -> Result<bool, PassError> {
        // Replacements are applied to operands as the walk reaches them, so
        // chains of duplicates collapse in one pass.
        let mut subst: HashMap<Value, Value> = HashMap::new();
        let mut seen: HashMap<u64, Vec<Op>> = HashMap::new();
        let mut dead: HashSet<Op> = HashSet::new();
        for op in f.ops().to_vec() {
            let operands = substitute_operands(f, op, &subst);
            let bucket = seen.entry(op_hash(f, op, &operands)).or_default();
            let twin = bucket.iter().copied().find(|&o| {
                f.op(o).kind == f.op(op).kind
                    && f.op(o).operands == operands
                    && result_types(f, o) == result_types(f, op)
            });
            match twin {
                Some(t) => {
                    for (&r, &tr) in f.op(op).results.iter().zip(&f.op(t).results) {
                        subst.insert(r, tr);
                    }
                    dead.insert(op);
                }
                None => bucket.push(op),
            }
        }
        substitute_outputs(f, &subst);
        f.remove_ops(&dead);
        self.stats.add("num-cse", dead.len() as u64);
        Ok(!dead.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::ty;
    use lowbit_ir::{BinaryOp, ConstData, Overflow};

    fn add() -> OpKind {
        OpKind::Binary {
            op: BinaryOp::Add,
            overflow: Overflow::Wrap,
        }
    }

    /// Appends a constant of the given bytes and type; the tests build
    /// byte-identical constants that CSE must merge only when the types
    /// agree too.
    fn constant(f: &mut Function, bytes: Vec<u8>, shape: &[u64], elem: &str) -> Value {
        f.push(
            OpKind::Constant(ConstData::new(bytes)),
            vec![],
            ty(shape, elem),
        )
    }

    #[test]
    fn merges_duplicates_transitively() {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[4], "i8"));
        let c1 = constant(&mut f, vec![1, 2, 3, 4], &[4], "i8");
        let c2 = constant(&mut f, vec![1, 2, 3, 4], &[4], "i8");
        let a1 = f.push(add(), vec![x, c1], ty(&[4], "i8"));
        let a2 = f.push(add(), vec![x, c2], ty(&[4], "i8"));
        let s = f.push(add(), vec![a1, a2], ty(&[4], "i8"));
        f.outputs.push(("y".into(), s));
        f.outputs.push(("z".into(), a2));
        let mut pass = create(&PassOptions::default());
        assert!(pass.run(&mut f).unwrap());
        assert_eq!(pass.statistics().get("num-cse"), 2);
        assert_eq!(f.ops().len(), 3);
        assert_eq!(f.op(f.def_op(s).unwrap()).operands, vec![a1, a1]);
        assert_eq!(f.outputs[1].1, a1);
        assert!(!pass.run(&mut f).unwrap());
    }

    #[test]
    fn keeps_ops_that_differ() {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[4], "i8"));
        let c1 = constant(&mut f, vec![1, 2, 3, 4], &[4], "i8");
        let c2 = constant(&mut f, vec![1, 2, 3, 4], &[4], "u8");
        let c3 = constant(&mut f, vec![1, 2, 3, 5], &[4], "i8");
        let r1 = f.push(OpKind::Reshape, vec![x], ty(&[2, 2], "i8"));
        let r2 = f.push(OpKind::Reshape, vec![x], ty(&[4, 1], "i8"));
        let s1 = f.push(add(), vec![x, c1], ty(&[4], "i8"));
        let s2 = f.push(
            OpKind::Binary {
                op: BinaryOp::Add,
                overflow: Overflow::Saturate,
            },
            vec![x, c1],
            ty(&[4], "i8"),
        );
        for (i, v) in [c2, c3, r1, r2, s1, s2].into_iter().enumerate() {
            f.outputs.push((format!("o{i}"), v));
        }
        let mut pass = create(&PassOptions::default());
        assert!(!pass.run(&mut f).unwrap());
        assert_eq!(f.ops().len(), 7);
    }
}
