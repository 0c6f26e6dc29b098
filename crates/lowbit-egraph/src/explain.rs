//! What the optimizer chose and why: per op of the extracted function, the
//! schedule family, kernel and weight layout, the estimated cost of every
//! alternative in the op's e-class, and the reasons for any fallback.
//!
//! Schedule families (INTERFACES.md): `dequant-fused` (`qmatmul`),
//! `bit-serial` (`matmul_int {schedule = bit_serial}`), `dyadic`
//! (`matmul_int` direct, `requant_dyadic`), `amx` (`matmul_int {schedule =
//! amx}`, AMX-INT8 tiles), `float` (the op as written), and
//! `mixed` (the root of an LLM.int8()-style decomposition: the `add` of
//! the quantized and the float part, or the `qmatmul` that took the float
//! part as its bias; the reason states the bound), and
//! `fallback`: an op kept as written because a rewrite that would have
//! replaced it was blocked (the reason says which and why). The reason also
//! names every alternative that lost because the target lacks a feature or
//! a shape does not fit the instruction, and any such degradation of the
//! chosen kernel. An op whose e-class carries an importer note (quantized
//! data the ONNX importer had to make float, [`lowbit_ir::OpNote`]) is
//! `fallback`, its reason naming the source node and the cause; the
//! function's report lists every such note. Costs are estimated
//! nanoseconds (see [`crate::cost`]);
//! they are printed with one decimal so that output is byte-stable.

use crate::analysis::{Family, LbGraph};
use crate::cost::family;
use crate::lang::Node;
use egg::{Id, RecExpr};
use lowbit_ir::target::Target;
use lowbit_ir::{OpKind, OpNote};
use std::collections::BTreeSet;
use std::fmt::Write;

/// One alternative considered for an op.
#[derive(Clone, Debug, PartialEq)]
pub struct Alternative {
    /// The op at its root.
    pub op: String,
    /// Its schedule family.
    pub schedule: String,
    /// Its kernel.
    pub kernel: String,
    /// Estimated cost (ns) of the whole term rooted at it as a DAG: its
    /// own estimate plus each class its operands reach under the chosen
    /// extraction, counted once. The choice minimizes the function's cost,
    /// so an alternative cheaper alone can lose to one whose operands are
    /// computed anyway for other users.
    pub cost: f64,
}

/// The choice made for one op.
#[derive(Clone, Debug, PartialEq)]
pub struct OpReport {
    /// The op's result as printed (`%3`).
    pub name: String,
    /// The op name.
    pub op: String,
    /// The schedule family chosen.
    pub schedule: String,
    /// The kernel.
    pub kernel: String,
    /// The weight layout the kernel uses.
    pub layout: String,
    /// Every alternative in the op's e-class, cheapest (alone) first.
    pub alternatives: Vec<Alternative>,
    /// Why a better schedule was not taken, if one was not.
    pub reason: Option<String>,
    /// The importer's notes on the op's e-class: quantized data it made
    /// float outside a fusable `dequantize` (the op is then reported as
    /// `fallback` and the reason names the node and the cause).
    pub dequantized: Vec<OpNote>,
}

/// The report of one function.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The target name.
    pub target: String,
    /// The function name.
    pub function: String,
    /// Per op of the extracted function (constants omitted), in op order.
    pub ops: Vec<OpReport>,
    /// Every importer note of the source function, in op order, once:
    /// where quantized data became float at import and why.
    pub dequantized: Vec<OpNote>,
    /// Why saturation stopped.
    pub stop_reason: String,
    /// Iterations run.
    pub iterations: usize,
    /// E-nodes at the end.
    pub nodes: usize,
    /// E-classes at the end.
    pub classes: usize,
    /// Estimated cost of the extracted function (ns).
    pub total_cost: f64,
}

/// Builds the per-op reports of an extracted term.
pub(crate) fn report_ops(
    eg: &LbGraph,
    target: &Target,
    best: &RecExpr<Node>,
    classes: &[Id],
    cost_of: &mut dyn FnMut(Id, &Node) -> f64,
) -> Vec<OpReport> {
    let mut out = Vec::new();
    let mut op_index = 0usize;
    for (i, n) in best.as_ref().iter().enumerate() {
        let Node::Op(h, _) = n else { continue };
        let index = op_index;
        op_index += 1;
        let head = eg.analysis.heads.get(*h);
        if matches!(head.kind, OpKind::Constant(_)) {
            continue;
        }
        let class = eg.find(classes[i]);
        let chosen_node = eg[class]
            .nodes
            .iter()
            .find(|m| matches!(m, Node::Op(mh, _) if mh == h));
        let chosen = chosen_node.and_then(|m| crate::node_estimate(eg, target, m));
        let mut alternatives: Vec<(Alternative, Option<String>)> = Vec::new();
        for m in &eg[class].nodes {
            let Node::Op(mh, _) = m else { continue };
            let Some(e) = crate::node_estimate(eg, target, m) else {
                continue;
            };
            let total = cost_of(class, m);
            let alt = Alternative {
                op: eg.analysis.heads.get(*mh).kind.name().to_string(),
                schedule: family(&eg.analysis.heads.get(*mh).kind).to_string(),
                kernel: e.kernel.clone(),
                cost: total,
            };
            if !alternatives.iter().any(|(a, _)| {
                a.schedule == alt.schedule && a.kernel == alt.kernel && a.cost <= alt.cost
            }) {
                alternatives
                    .retain(|(a, _)| !(a.schedule == alt.schedule && a.kernel == alt.kernel));
                alternatives.push((alt, e.note.clone()));
            }
        }
        alternatives.sort_by(|(a, _), (b, _)| {
            a.cost
                .total_cmp(&b.cost)
                .then_with(|| a.schedule.cmp(&b.schedule))
                .then_with(|| a.kernel.cmp(&b.kernel))
        });
        let class_notes = || {
            eg.analysis
                .notes
                .iter()
                .filter(|(id, _)| eg.find(**id) == class)
                .flat_map(|(_, ns)| ns.iter())
        };
        let notes: BTreeSet<String> = class_notes()
            .map(|n| format!("{}: {}", n.family.name(), n.reason))
            .collect();
        let blocked = class_notes().any(|n| n.blocked);
        let mut schedule = family(&head.kind).to_string();
        if schedule == "float" && blocked {
            schedule = "fallback".into();
        }
        // A decomposed matmul's class holds the original matmul and the
        // decomposition's root (the `add`, or the `qmatmul` that took the
        // float part as its bias): any op but the matmul is the latter.
        let mixed = class_notes().any(|n| n.family == Family::Mixed && !n.blocked);
        if mixed && head.kind.name() != "matmul" {
            schedule = "mixed".into();
        }
        // Quantized data made float at import: no quantized schedule can
        // apply to it, whatever the op now is.
        let dequantized: Vec<OpNote> = eg
            .analysis
            .import_notes
            .iter()
            .filter(|(id, _)| eg.find(**id) == class)
            .flat_map(|(_, ns)| ns.iter().cloned())
            .collect::<BTreeSet<OpNote>>()
            .into_iter()
            .collect();
        if !dequantized.is_empty() {
            schedule = "fallback".into();
        }
        let kernel = chosen.as_ref().map_or("-".into(), |e| e.kernel.clone());
        let mut reasons: Vec<String> = dequantized.iter().map(|n| n.to_string()).collect();
        reasons.extend(notes);
        if let Some(note) = chosen.as_ref().and_then(|e| e.note.clone()) {
            reasons.push(format!("chosen kernel: {note}"));
        }
        for (a, note) in &alternatives {
            if a.kernel != kernel {
                if let Some(note) = note {
                    reasons.push(format!("{} not taken ({}): {note}", a.schedule, a.kernel));
                }
            }
        }
        out.push(OpReport {
            name: format!("%{index}"),
            op: head.kind.name().to_string(),
            schedule,
            kernel,
            layout: chosen.map_or("-".into(), |e| e.layout),
            alternatives: alternatives.into_iter().map(|(a, _)| a).collect(),
            reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
            dequantized,
        });
    }
    out
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} us", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// The human-readable report.
pub fn render_text(reports: &[Report]) -> String {
    let mut s = String::new();
    if let Some(r) = reports.first() {
        let _ = writeln!(s, "target: {}", r.target);
    }
    for r in reports {
        let _ = writeln!(
            s,
            "func @{}: {} after {} iterations ({} e-nodes, {} e-classes), estimated {}",
            r.function,
            r.stop_reason,
            r.iterations,
            r.nodes,
            r.classes,
            fmt_ns(r.total_cost)
        );
        for n in &r.dequantized {
            let _ = writeln!(s, "  import note: {n}");
        }
        for op in &r.ops {
            let _ = writeln!(
                s,
                "  {} = {}: schedule {}, kernel {}, layout {}",
                op.name, op.op, op.schedule, op.kernel, op.layout
            );
            let alts: Vec<String> = op
                .alternatives
                .iter()
                .map(|a| format!("{} {} {} ({})", a.schedule, a.op, fmt_ns(a.cost), a.kernel))
                .collect();
            let _ = writeln!(s, "      alternatives: {}", alts.join(", "));
            if let Some(r) = &op.reason {
                let _ = writeln!(s, "      reason: {r}");
            }
        }
    }
    s
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `[{"node", "op_type", "what", "why"}, ...]`.
fn json_notes(notes: &[OpNote]) -> String {
    let items: Vec<String> = notes
        .iter()
        .map(|n| {
            format!(
                "{{\"node\": {}, \"op_type\": {}, \"what\": {}, \"why\": {}}}",
                json_str(&n.node),
                json_str(&n.op_type),
                json_str(&n.what),
                json_str(&n.why)
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "null".into()
    }
}

/// The JSON document of INTERFACES.md: `{"target", "ops": [{"name", "op",
/// "schedule", "kernel", "layout", "alternatives": [{"schedule", "cost"}],
/// "reason"}]}`, extended with each op's `function` and `dequantized`
/// (importer notes: `[{"node", "op_type", "what", "why"}]`), each
/// alternative's `op` and `kernel`, and a `functions` list with the run
/// statistics and the function's `dequantized` notes. Costs are estimated
/// nanoseconds.
pub fn render_json(target: &str, reports: &[Report]) -> String {
    let mut s = format!("{{\"target\": {}, \"ops\": [", json_str(target));
    let mut first = true;
    for r in reports {
        for op in &r.ops {
            if !first {
                s.push_str(", ");
            }
            first = false;
            let alts: Vec<String> = op
                .alternatives
                .iter()
                .map(|a| {
                    format!(
                        "{{\"schedule\": {}, \"op\": {}, \"kernel\": {}, \"cost\": {}}}",
                        json_str(&a.schedule),
                        json_str(&a.op),
                        json_str(&a.kernel),
                        json_num(a.cost)
                    )
                })
                .collect();
            let _ = write!(
                s,
                "{{\"function\": {}, \"name\": {}, \"op\": {}, \"schedule\": {}, \"kernel\": {}, \"layout\": {}, \"alternatives\": [{}], \"reason\": {}, \"dequantized\": {}}}",
                json_str(&r.function),
                json_str(&op.name),
                json_str(&op.op),
                json_str(&op.schedule),
                json_str(&op.kernel),
                json_str(&op.layout),
                alts.join(", "),
                op.reason.as_deref().map_or("null".into(), json_str),
                json_notes(&op.dequantized)
            );
        }
    }
    s.push_str("], \"functions\": [");
    let fs: Vec<String> = reports
        .iter()
        .map(|r| {
            format!(
                "{{\"name\": {}, \"stop_reason\": {}, \"iterations\": {}, \"nodes\": {}, \"classes\": {}, \"cost\": {}, \"dequantized\": {}}}",
                json_str(&r.function),
                json_str(&r.stop_reason),
                r.iterations,
                r.nodes,
                r.classes,
                json_num(r.total_cost),
                json_notes(&r.dequantized)
            )
        })
        .collect();
    s.push_str(&fs.join(", "));
    s.push_str("]}\n");
    s
}
