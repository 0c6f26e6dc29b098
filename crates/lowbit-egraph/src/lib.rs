//! Equality-saturation optimizer for lowbit graphs (built on `egg`).
//!
//! [`optimize_function`] turns a function into an e-graph ([`lang`]), runs
//! the selected rule sets ([`rules`]) under explicit limits (iterations,
//! nodes, time), extracts the cheapest program for a [`Target`] under its
//! cost model ([`cost`]), and reports, per op of the result, the schedule
//! chosen, the cost of every alternative in its e-class and the reason for
//! any fallback ([`explain`]).
//!
//! Guarantees: every rule is bit-exact with respect to the reference
//! interpreter (the property tests check this on random graphs), except
//! those enabled by [`Config::options`] or by an explicit mark in the graph
//! (`mark_outliers`), which hold a stated bound; and the
//! output is deterministic — the same function, rules and target give the
//! same program and report byte for byte — unless the time limit stops the
//! run early, which the report says (`stop_reason`). Limits: functions are
//! optimized one at a time; sharing is not modeled by the cost (a term used
//! twice is costed twice), as in egg's tree extraction.
#![deny(missing_docs)]

pub mod analysis;
pub mod cost;
pub mod explain;
pub mod lang;
pub mod numeric;
pub mod rules;

use analysis::{LbAnalysis, LbGraph};
use egg::{Id, Language, RecExpr, Runner, SimpleScheduler, StopReason};
use lang::Node;
use lowbit_ir::target::Target;
use lowbit_ir::{Function, TensorType};
use std::time::Duration;

pub use explain::{Alternative, OpReport, Report};

/// Options of one optimizer run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Rule set names (see [`rules::rule_set_names`]).
    pub rules: Vec<String>,
    /// The target whose cost model picks the extraction.
    pub target: Target,
    /// Maximum saturation iterations.
    pub iter_limit: usize,
    /// Maximum e-nodes.
    pub node_limit: usize,
    /// Maximum time.
    pub time_limit: Duration,
    /// Options that enable approximate (bounded, not bit-exact) rewrites.
    pub options: analysis::RuleOptions,
}

impl Config {
    /// Every rule set, default limits (30 iterations, 200 000 nodes, 10 s).
    pub fn new(target: Target) -> Config {
        Config {
            rules: rules::rule_set_names()
                .into_iter()
                .map(String::from)
                .collect(),
            target,
            iter_limit: 30,
            node_limit: 200_000,
            time_limit: Duration::from_secs(10),
            options: analysis::RuleOptions::default(),
        }
    }
}

/// The result of optimizing one function.
#[derive(Debug)]
pub struct Optimized {
    /// The extracted function.
    pub function: Function,
    /// What was chosen and why.
    pub report: Report,
}

/// The estimate of one e-node, from the types in its children's classes.
pub(crate) fn node_estimate(eg: &LbGraph, target: &Target, n: &Node) -> Option<cost::Estimate> {
    let Node::Op(h, ch) = n else { return None };
    let head = eg.analysis.heads.get(*h);
    let tys: Vec<&TensorType> = ch.iter().filter_map(|c| eg[*c].data.ty.as_ref()).collect();
    Some(cost::estimate(target, &head.kind, &head.ty, &tys))
}

/// The cheapest term of every e-class: cost (the sum of its ops' estimated
/// nanoseconds, as a tree) and the e-node at its root.
///
/// Classes are visited in id order, which is creation order, so children
/// mostly come before their users and a couple of passes reach the fixed
/// point (egg's extractor visits classes in hash order, which needs about
/// as many passes as the graph is deep). Ties keep the first e-node in the
/// class, so the choice is deterministic.
pub(crate) struct Best {
    costs: std::collections::HashMap<Id, (f64, Node)>,
}

impl Best {
    fn new(eg: &LbGraph, target: &Target) -> Best {
        let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
        ids.sort();
        let own: Vec<Vec<(Node, f64)>> = ids
            .iter()
            .map(|&id| {
                eg[id]
                    .nodes
                    .iter()
                    .map(|n| {
                        let ns = node_estimate(eg, target, n).map_or(0.0, |e| e.ns);
                        (n.clone(), ns)
                    })
                    .collect()
            })
            .collect();
        let mut costs: std::collections::HashMap<Id, (f64, Node)> = Default::default();
        loop {
            let mut changed = false;
            for (id, nodes) in ids.iter().zip(&own) {
                for (n, ns) in nodes {
                    let mut total = *ns;
                    let mut known = true;
                    for c in n.children() {
                        match costs.get(&eg.find(*c)) {
                            Some((x, _)) => total += x,
                            None => {
                                known = false;
                                break;
                            }
                        }
                    }
                    if !known {
                        continue;
                    }
                    let better = costs.get(id).is_none_or(|(old, _)| total < *old);
                    if better {
                        costs.insert(*id, (total, n.clone()));
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        Best { costs }
    }

    /// The cost of a class's best term (infinite when it has none).
    pub(crate) fn cost(&self, eg: &LbGraph, id: Id) -> f64 {
        self.costs.get(&eg.find(id)).map_or(f64::INFINITY, |c| c.0)
    }

    fn node(&self, eg: &LbGraph, id: Id) -> Option<&Node> {
        self.costs.get(&eg.find(id)).map(|c| &c.1)
    }
}

/// Why a run could not be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgraphError(pub String);

impl std::fmt::Display for EgraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EgraphError {}

fn stop_reason(r: &Option<StopReason>) -> String {
    match r {
        Some(StopReason::Saturated) => "saturated".into(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(StopReason::TimeLimit(t)) => format!("time limit ({t:.3} s)"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "not run".into(),
    }
}

/// Extracts the best term of `root` as a shared DAG, with the class of
/// every node.
fn extract_dag(
    eg: &LbGraph,
    best: &Best,
    root: Id,
) -> Result<(RecExpr<Node>, Vec<Id>), EgraphError> {
    let mut expr = RecExpr::default();
    let mut classes = Vec::new();
    let mut memo: std::collections::HashMap<Id, Id> = std::collections::HashMap::new();
    // Iterative post-order so deep graphs cannot overflow the stack.
    let mut stack = vec![(eg.find(root), false)];
    while let Some((c, expanded)) = stack.pop() {
        if memo.contains_key(&c) {
            continue;
        }
        let node = best
            .node(eg, c)
            .ok_or_else(|| EgraphError("an e-class has no finite term".into()))?;
        if !expanded {
            stack.push((c, true));
            // Reversed so that the first operand's term comes out first.
            for ch in node.children().iter().rev() {
                let ch = eg.find(*ch);
                if !memo.contains_key(&ch) {
                    stack.push((ch, false));
                }
            }
            continue;
        }
        let n = node.clone().map_children(|ch| memo[&eg.find(ch)]);
        let id = expr.add(n);
        memo.insert(c, id);
        classes.push(c);
    }
    Ok((expr, classes))
}

/// Optimizes one function.
pub fn optimize_function(f: &Function, cfg: &Config) -> Result<Optimized, EgraphError> {
    let rules = rules::select(&cfg.rules).map_err(EgraphError)?;
    let params: Vec<TensorType> = f.params.iter().map(|(_, v)| f.ty(*v).clone()).collect();
    let mut analysis = LbAnalysis::new(params, cfg.options);
    let expr = lang::function_to_recexpr(f, &mut analysis.heads).map_err(EgraphError)?;
    let rewrites: Vec<_> = rules.iter().map(|r| r.rewrite()).collect();
    let runner: Runner<Node, LbAnalysis> = Runner::new(analysis)
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(cfg.iter_limit)
        .with_node_limit(cfg.node_limit)
        .with_time_limit(cfg.time_limit)
        .with_expr(&expr)
        .run(&rewrites);
    let eg = &runner.egraph;
    let root = runner.roots[0];
    let chooser = Best::new(eg, &cfg.target);
    let (best, classes) = extract_dag(eg, &chooser, root)?;
    let function = lang::recexpr_to_function(&best, &eg.analysis.heads, f).map_err(EgraphError)?;
    let cost_of = |c: Id| chooser.cost(eg, c);
    let ops = explain::report_ops(eg, &cfg.target, &best, &classes, &cost_of);
    let report = Report {
        target: cfg.target.name.clone(),
        function: f.name.clone(),
        ops,
        stop_reason: stop_reason(&runner.stop_reason),
        iterations: runner.iterations.len(),
        nodes: eg.total_number_of_nodes(),
        classes: eg.number_of_classes(),
        total_cost: chooser.cost(eg, root),
    };
    Ok(Optimized { function, report })
}
