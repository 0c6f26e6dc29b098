//! The `egraph` pass: equality saturation with the named rule sets of
//! `lowbit-egraph`, extraction by the target's cost model.
//!
//! Fused ops (`qmatmul`, `matmul_int`, `requant_dyadic`) replace the ops
//! they stand for, and the chosen schedule is an attribute
//! (`matmul_int {schedule = bit_serial}`), so IR dumps show the choice;
//! `lowbit explain` prints the costs and reasons behind it. Every rewrite is
//! bit-exact with respect to the interpreter, except where
//! `allow-approx-dyadic=true` lets integer-only approximate a scale ratio
//! (within one unit of the output; explain names each such op). Options are checked when the
//! pass runs: an unknown rule set or target fails the pass with a message
//! listing the known ones. `target=native` is the running machine
//! (`Target::host`: its AMX-INT8 included, so on an AMX host large W8A8
//! matmuls take `schedule = amx`); the default, `x86-64-v3`, keeps the
//! result independent of the host.

use crate::pass::{Pass, PassError, Statistics};
use crate::registry::{OptionInfo, OptionKind, PassInfo, PassOptions, StatisticInfo};
use lowbit_egraph::{optimize_function, Config};
use lowbit_ir::target::Target;
use lowbit_ir::Function;
use std::time::Duration;

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    argument: "egraph",
    name: "EGraphOptimizer",
    summary: "Fuse dequantization and choose dequant-fused / bit-serial / dyadic schedules by cost (equality saturation)",
    options: &[
        OptionInfo {
            name: "rules",
            kind: OptionKind::List,
            default: "fuse-dequant,qdq-cleanup,integer-only,bit-serial,amx,mixed-decomposition,layout",
            description: "Rule sets to run",
        },
        OptionInfo {
            name: "target",
            kind: OptionKind::Text,
            default: "x86-64-v3",
            description: "Target whose cost model picks the schedules (x86-64 CPU model[+features], native for this machine, or sm_80/sm_89/sm_90)",
        },
        OptionInfo {
            name: "allow-approx-dyadic",
            kind: OptionKind::Bool,
            default: "false",
            description: "Let integer-only approximate a non-dyadic scale ratio (HAWQ-V3 multiplier, within 1 unit of the output; explain names it)",
        },
        OptionInfo {
            name: "iter-limit",
            kind: OptionKind::UInt,
            default: "30",
            description: "Maximum saturation iterations",
        },
        OptionInfo {
            name: "node-limit",
            kind: OptionKind::UInt,
            default: "200000",
            description: "Maximum e-nodes",
        },
        OptionInfo {
            name: "time-limit-ms",
            kind: OptionKind::UInt,
            default: "10000",
            description: "Maximum saturation time in milliseconds (hitting it makes the result timing-dependent)",
        },
    ],
    statistics: &[
        StatisticInfo {
            name: "num-dequant-fused",
            description: "Ops extracted with the dequant-fused schedule",
        },
        StatisticInfo {
            name: "num-dyadic",
            description: "Integer matmuls and dyadic requantizations extracted",
        },
        StatisticInfo {
            name: "num-bit-serial",
            description: "Integer matmuls extracted with the bit-serial schedule",
        },
        StatisticInfo {
            name: "num-amx",
            description: "Integer matmuls extracted with the AMX-INT8 schedule",
        },
        StatisticInfo {
            name: "num-fallbacks",
            description: "Ops kept as written because a rewrite was blocked",
        },
    ],
    create,
};

fn create(o: &PassOptions) -> Box<dyn Pass> {
    Box::new(EGraphPass {
        rules: o.list("rules"),
        target: o.text("target").to_string(),
        allow_approx_dyadic: o.flag("allow-approx-dyadic"),
        iter_limit: o.uint("iter-limit"),
        node_limit: o.uint("node-limit"),
        time_limit_ms: o.uint("time-limit-ms"),
        stats: Statistics::new(INFO.statistics),
    })
}

/// The `egraph` pass.
pub struct EGraphPass {
    rules: Vec<String>,
    target: String,
    allow_approx_dyadic: bool,
    iter_limit: u64,
    node_limit: u64,
    time_limit_ms: u64,
    stats: Statistics,
}

impl Pass for EGraphPass {
    fn info(&self) -> &'static PassInfo {
        &INFO
    }

    fn option_values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("rules", self.rules.join(",")),
            ("target", self.target.clone()),
            ("iter-limit", self.iter_limit.to_string()),
            ("node-limit", self.node_limit.to_string()),
            ("time-limit-ms", self.time_limit_ms.to_string()),
            ("allow-approx-dyadic", self.allow_approx_dyadic.to_string()),
        ]
    }

    fn statistics(&self) -> &Statistics {
        &self.stats
    }

    fn run(&mut self, f: &mut Function) -> Result<bool, PassError> {
        let fail = |message: String| PassError {
            pass: INFO.argument.into(),
            function: f.name.clone(),
            message,
        };
        let target: Target = if self.target == "native" {
            Target::host()
        } else {
            self.target.parse().map_err(fail)?
        };
        let mut cfg = Config::new(target);
        cfg.rules = self.rules.clone();
        cfg.options.allow_approx_dyadic = self.allow_approx_dyadic;
        cfg.iter_limit = self.iter_limit as usize;
        cfg.node_limit = self.node_limit as usize;
        cfg.time_limit = Duration::from_millis(self.time_limit_ms);
        let out = optimize_function(f, &cfg).map_err(|e| fail(e.0))?;
        for op in &out.report.ops {
            let stat = match op.schedule.as_str() {
                "dequant-fused" => "num-dequant-fused",
                "dyadic" => "num-dyadic",
                "bit-serial" => "num-bit-serial",
                "amx" => "num-amx",
                "fallback" => "num-fallbacks",
                _ => continue,
            };
            self.stats.add(stat, 1);
        }
        let changed = !out.function.structurally_eq(f);
        if changed {
            *f = out.function;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use crate::parse_pipeline;
    use lowbit_ir::parser::parse_module;

    const SRC: &str = "module {
  func @main(%x: tensor<1x4xf32>) -> (y: tensor<1x2xf32>) {
    %w = constant dense<[[1, 2], [3, 4], [5, 6], [7, -8]]> : tensor<4x2xi4>
    %s = constant dense<0.5> : tensor<f32>
    %d = dequantize %w, %s : (tensor<4x2xi4>, tensor<f32>) -> tensor<4x2xf32>
    %y = matmul %x, %d : (tensor<1x4xf32>, tensor<4x2xf32>) -> tensor<1x2xf32>
    return %y
  }
}
";

    #[test]
    fn fuses_and_counts() {
        let mut m = parse_module(SRC).unwrap();
        let mut passes = parse_pipeline("egraph{rules=fuse-dequant,target=x86-64-v4}").unwrap();
        assert!(passes[0].run(&mut m.functions[0]).unwrap());
        let names: Vec<&str> = m.functions[0]
            .ops()
            .iter()
            .map(|&o| m.functions[0].op(o).kind.name())
            .collect();
        assert_eq!(names, ["constant", "constant", "qmatmul"]);
        assert_eq!(passes[0].statistics().get("num-dequant-fused"), 1);
        assert!(
            !passes[0].run(&mut m.functions[0]).unwrap(),
            "a second run changes nothing"
        );
    }

    #[test]
    fn native_is_the_host() {
        let mut m = parse_module(SRC).unwrap();
        let mut p = parse_pipeline("egraph{rules=fuse-dequant,target=native}").unwrap();
        assert!(p[0].run(&mut m.functions[0]).unwrap());
        assert_eq!(p[0].statistics().get("num-dequant-fused"), 1);
    }

    #[test]
    fn bad_options_fail_the_pass() {
        let mut m = parse_module(SRC).unwrap();
        let mut p = parse_pipeline("egraph{target=pentium}").unwrap();
        let e = p[0].run(&mut m.functions[0]).unwrap_err();
        assert!(e.message.contains("unknown target 'pentium'"), "{e}");
        let mut p = parse_pipeline("egraph{rules=fuse-dequant,magic}").unwrap();
        let e = p[0].run(&mut m.functions[0]).unwrap_err();
        assert!(e.message.contains("unknown rule set 'magic'"), "{e}");
    }
}
