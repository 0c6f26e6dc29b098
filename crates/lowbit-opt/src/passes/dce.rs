//! Dead code elimination: removes ops whose results do not reach any
//! function output, directly or through other ops.
//!
//! Every lowbit op is pure, so removing an unused op never changes what a
//! function computes. Parameters are never removed (they are the graph's
//! interface).

use crate::pass::{Pass, PassError, Statistics};
use crate::registry::{PassInfo, PassOptions, StatisticInfo};
use lowbit_ir::Function;

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    argument: "dce",
    name: "DCE",
    summary: "Remove ops whose results are not used by any function output",
    options: &[],
    statistics: &[StatisticInfo {
        name: "num-erased",
        description: "Number of ops erased",
    }],
    create,
};

fn create(_: &PassOptions) -> Box<dyn Pass> {
    Box::new(DeadCodeElimination {
        stats: Statistics::new(INFO.statistics),
    })
}

/// The `dce` pass.
pub struct DeadCodeElimination {
    stats: Statistics,
}

impl Pass for DeadCodeElimination {
    fn info(&self) -> &'static PassInfo {
        &INFO
    }

    fn statistics(&self) -> &Statistics {
        &self.stats
    }

    fn run(&mut self, f: &mut Function) -> Result<bool, PassError> {
        let n = super::erase_dead_ops(f);
        self.stats.add("num-erased", n as u64);
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::ty;
    use lowbit_ir::OpKind;

    #[test]
    fn removes_unused_chains_and_keeps_live_ops() {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[4], "f32"));
        let live = f.push(OpKind::Relu, vec![x], ty(&[4], "f32"));
        let d1 = f.push(OpKind::Silu, vec![x], ty(&[4], "f32"));
        let _d2 = f.push(OpKind::Relu, vec![d1], ty(&[4], "f32"));
        f.outputs.push(("y".into(), live));
        let mut pass = create(&PassOptions::default());
        assert!(pass.run(&mut f).unwrap());
        assert_eq!(f.ops().len(), 1);
        assert_eq!(f.result(f.ops()[0]), live);
        assert_eq!(pass.statistics().get("num-erased"), 2);
        assert!(!pass.run(&mut f).unwrap(), "second run must be a no-op");
        assert_eq!(f.params.len(), 1);
    }
}
