//! `lowbit explain`: run the e-graph optimizer for a target and print, per
//! op, the schedule chosen, the cost of every alternative and the reason
//! for any fallback (text, or one JSON document with `--json`).

use crate::args::{self, Spec};
use crate::{source_name, write_stdout, Failure};
use lowbit::egraph::explain::{render_json, render_text};
use lowbit::egraph::{optimize_function, rules::rule_set_names, Config};
use lowbit::ir::target::{cpu_model_names, Target};

/// `lowbit explain --help`.
pub const HELP: &str = "\
Explain the schedule the e-graph optimizer picks for every op of a model.

Usage: lowbit explain MODEL.lbir [--target TARGET] [--rules LIST]
                      [--allow-approx-dyadic] [--json]

For each op of the optimized program: the schedule family chosen
(dequant-fused, bit-serial, dyadic, amx, float, fallback), the kernel and weight
layout, the estimated cost of every alternative considered (nanoseconds),
and the reason for any fallback (a rewrite blocked by a range or scale that
could not be proven, a feature the target lacks, a shape that does not fit).
Where the ONNX importer had to make quantized data float (MatMulNBits with
fractional float zero points, a Cast of a low-bit constant to float), an
\"import note\" line names the node and the cause, and the ops involved are
`fallback` with that reason (JSON: \"dequantized\": [{\"node\", \"op_type\",
\"what\", \"why\"}] on each op and function).

Options:
  --target TARGET   x86-64 CPU model with optional +features
                    (x86-64-v3, icelake-server, x86-64-v3+avxvnni,
                    sapphirerapids, icelake-server+amxint8, ...), native
                    (this machine's CPU, its AMX-INT8 included) or an
                    NVIDIA SM level (sm_80, sm_89, sm_90, sm_90a);
                    default: native
  --rules LIST      Rule sets, comma-separated (default: all of them)
  --allow-approx-dyadic
                    Let integer-only approximate a non-dyadic scale ratio
                    (HAWQ-V3 multiplier; within 1 unit of the output)
  --json            One JSON document: {\"target\", \"ops\": [{\"name\", \"op\",
                    \"schedule\", \"kernel\", \"layout\", \"alternatives\":
                    [{\"schedule\", \"cost\"}], \"reason\"}]}
  -h, --help        Show this help

Exit status: 0 on success, 1 on any error (message on standard error).
";

const SPECS: &[Spec] = &[
    Spec {
        long: "target",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "rules",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "allow-approx-dyadic",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "json",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "help",
        short: Some('h'),
        takes_value: false,
    },
];

/// Runs `lowbit explain`.
pub fn main(argv: &[String]) -> Result<(), Failure> {
    let a = args::parse(argv, SPECS).map_err(Failure::usage)?;
    if a.has("help") {
        return write_stdout(HELP);
    }
    let file = a
        .one_positional("missing model file")
        .map_err(Failure::usage)?;
    let target = match a.last("target") {
        None | Some("native") => Target::host(),
        Some(t) => t.parse::<Target>().map_err(|e| {
            Failure::msg(format!(
                "{e} (CPU models: {})",
                cpu_model_names().join(", ")
            ))
        })?,
    };
    let mut cfg = Config::new(target);
    cfg.options.allow_approx_dyadic = a.has("allow-approx-dyadic");
    if let Some(r) = a.last("rules") {
        cfg.rules = r.split(',').map(|s| s.trim().to_string()).collect();
        if let Some(bad) = cfg
            .rules
            .iter()
            .find(|r| !rule_set_names().contains(&r.as_str()))
        {
            return Err(Failure::msg(format!(
                "unknown rule set '{bad}' (known: {})",
                rule_set_names().join(", ")
            )));
        }
    }
    let shown = source_name(file);
    // ONNX models are imported, anything else is read as lowbit IR text.
    let module = crate::compile_cmd::load_model(file)?;
    let mut reports = Vec::new();
    for f in &module.functions {
        let o = optimize_function(f, &cfg)
            .map_err(|e| Failure::msg(format!("{shown}: @{}: {e}", f.name)))?;
        reports.push(o.report);
    }
    if a.has("json") {
        write_stdout(&render_json(&cfg.target.name, &reports))
    } else {
        write_stdout(&render_text(&reports))
    }
}
