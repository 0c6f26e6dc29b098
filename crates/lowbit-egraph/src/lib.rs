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
use lowbit_ir::{Function, OpNote, TensorType};
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

/// The extraction: one e-node per e-class, chosen to minimize the cost of
/// the whole extracted function as a DAG (the sum of the estimated
/// nanoseconds of its ops, each e-class used by several parents counted
/// once).
///
/// Two phases. First the cheapest term of every class as a tree (its own
/// estimate plus its operands' tree costs), iterated to a fixed point;
/// classes are visited in id order, which is creation order, so children
/// mostly come before their users and a couple of passes suffice (egg's
/// extractor visits classes in hash order, which needs about as many passes
/// as the graph is deep). Then a local search on the DAG cost: for every
/// class the extraction reaches (in post-order), each other e-node of the
/// class is tried in its place (operand classes not yet reached take their
/// tree choice); when that brings classes into the extraction, every other
/// reached class with an e-node using one of them is offered that e-node
/// too (kept when it lowers the cost), and the switches are kept together
/// when the whole function's DAG cost drops. Sweeps repeat until none does.
/// So two matmuls of one dequantized weight can both take the unfused form
/// and share one `dequantize`, though either alone is cheaper fused, and a
/// node that uses one operand twice is charged for it once. The search
/// starts from the tree choice and only accepts strict decreases, so the
/// result never costs more than tree extraction; it is a heuristic (exact
/// DAG extraction is NP-hard): improvements that need unrelated classes to
/// change together are missed. Every order is fixed and ties keep the
/// earlier choice, so the result is deterministic.
pub(crate) struct Best {
    /// Dense index of every canonical class id.
    index: std::collections::HashMap<Id, u32>,
    nodes: Vec<Vec<Node>>,
    own: Vec<Vec<f64>>,
    kids: Vec<Vec<Vec<u32>>>,
    /// Tree cost of each class's cheapest term (infinite when none).
    tree: Vec<f64>,
    /// The chosen e-node of each class.
    pick: Vec<Option<u32>>,
}

/// Scratch space of DAG-cost walks: generation stamps, so that a walk does
/// not clear per-class arrays.
pub(crate) struct Walk {
    generation: u32,
    entered: Vec<u32>,
    done: Vec<u32>,
    stack: Vec<(u32, u32, usize)>,
}

/// Sweeps of the local search; each accepted change strictly lowers the
/// cost, and in practice one or two sweeps find them all.
const MAX_SWEEPS: usize = 16;

impl Walk {
    fn new(n: usize) -> Walk {
        Walk {
            generation: 0,
            entered: vec![0; n],
            done: vec![0; n],
            stack: Vec::new(),
        }
    }
}

impl Best {
    fn new(eg: &LbGraph, target: &Target, root: Id) -> Best {
        let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
        ids.sort();
        let index: std::collections::HashMap<Id, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        let mut nodes = Vec::with_capacity(ids.len());
        let mut own = Vec::with_capacity(ids.len());
        let mut kids = Vec::with_capacity(ids.len());
        for &id in &ids {
            let ns: Vec<Node> = eg[id].nodes.clone();
            own.push(
                ns.iter()
                    .map(|n| node_estimate(eg, target, n).map_or(0.0, |e| e.ns))
                    .collect::<Vec<f64>>(),
            );
            kids.push(
                ns.iter()
                    .map(|n| n.children().iter().map(|c| index[&eg.find(*c)]).collect())
                    .collect::<Vec<Vec<u32>>>(),
            );
            nodes.push(ns);
        }
        let mut best = Best {
            index,
            nodes,
            own,
            kids,
            tree: vec![f64::INFINITY; ids.len()],
            pick: vec![None; ids.len()],
        };
        best.tree_fixpoint();
        if let Some(&r) = best.index.get(&eg.find(root)) {
            best.improve_dag(r);
        }
        best
    }

    fn tree_fixpoint(&mut self) {
        loop {
            let mut changed = false;
            for c in 0..self.nodes.len() {
                for (j, ks) in self.kids[c].iter().enumerate() {
                    let total = ks
                        .iter()
                        .fold(self.own[c][j], |s, &k| s + self.tree[k as usize]);
                    if total < self.tree[c] {
                        self.tree[c] = total;
                        self.pick[c] = Some(j as u32);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// The DAG cost of the term rooted at e-node `j` of class `c` under the
    /// current choices of the other classes, and (when `order` is given)
    /// the classes it reaches in post-order; `None` when the choices make
    /// it cyclic or reach a class without a term.
    fn dag_cost(
        &self,
        c: u32,
        j: u32,
        w: &mut Walk,
        mut order: Option<&mut Vec<u32>>,
    ) -> Option<f64> {
        w.generation += 1;
        let g = w.generation;
        w.stack.clear();
        w.entered[c as usize] = g;
        w.stack.push((c, j, 0));
        let mut total = self.own[c as usize][j as usize];
        while let Some(top) = w.stack.last_mut() {
            let (x, xj, pos) = *top;
            let ks = &self.kids[x as usize][xj as usize];
            if pos < ks.len() {
                top.2 += 1;
                let k = ks[pos];
                if w.entered[k as usize] == g {
                    if w.done[k as usize] != g {
                        return None;
                    }
                    continue;
                }
                let kj = self.pick[k as usize]?;
                w.entered[k as usize] = g;
                total += self.own[k as usize][kj as usize];
                w.stack.push((k, kj, 0));
                continue;
            }
            w.done[x as usize] = g;
            if let Some(o) = order.as_deref_mut() {
                o.push(x);
            }
            w.stack.pop();
        }
        Some(total)
    }

    /// The local search described on [`Best`].
    fn improve_dag(&mut self, root: u32) {
        let n = self.nodes.len();
        let mut parents: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
        for (p, ks) in self.kids.iter().enumerate() {
            for (j, ks) in ks.iter().enumerate() {
                for &k in ks {
                    parents[k as usize].push((p as u32, j as u32));
                }
            }
        }
        let mut w = Walk::new(n);
        let mut order = Vec::new();
        let Some(mut current) = self.root_cost(root, &mut w, Some(&mut order)) else {
            return;
        };
        // `reached[c]`: c is in the accepted extraction; `fresh[c] == stamp`:
        // c is in the tentative one.
        let mut reached = vec![false; n];
        let mut fresh = vec![0u32; n];
        let mut stamp = 0u32;
        let mut tentative = Vec::new();
        let mut changed: Vec<(u32, Option<u32>)> = Vec::new();
        let better = |t: f64, than: f64| t < than - 1e-9 * than.abs();
        for _ in 0..MAX_SWEEPS {
            reached.iter_mut().for_each(|r| *r = false);
            for &c in &order {
                reached[c as usize] = true;
            }
            let mut improved = false;
            for &c in &order {
                let Some(old) = self.pick[c as usize] else {
                    continue;
                };
                for j in 0..self.nodes[c as usize].len() as u32 {
                    if j == old
                        || self.kids[c as usize][j as usize]
                            .iter()
                            .any(|&k| self.tree[k as usize].is_infinite())
                    {
                        continue;
                    }
                    changed.clear();
                    changed.push((c, self.pick[c as usize]));
                    self.pick[c as usize] = Some(j);
                    tentative.clear();
                    let Some(mut t) = self.root_cost(root, &mut w, Some(&mut tentative)) else {
                        self.pick[c as usize] = Some(old);
                        continue;
                    };
                    // The switch may bring in classes that other users
                    // could share: let each of those users switch too when
                    // that lowers the cost, and judge the switches together.
                    stamp += 1;
                    for &k in &tentative {
                        fresh[k as usize] = stamp;
                    }
                    for &k in &tentative {
                        if reached[k as usize] {
                            continue;
                        }
                        for &(p, jp) in &parents[k as usize] {
                            if p == c
                                || fresh[p as usize] != stamp
                                || self.pick[p as usize] == Some(jp)
                            {
                                continue;
                            }
                            let before = self.pick[p as usize];
                            self.pick[p as usize] = Some(jp);
                            match self.root_cost(root, &mut w, None) {
                                Some(t2) if better(t2, t) => {
                                    t = t2;
                                    changed.push((p, before));
                                }
                                _ => self.pick[p as usize] = before,
                            }
                        }
                    }
                    // A relative margin so that rounding noise in the sums
                    // cannot make the search flip back and forth.
                    if better(t, current) {
                        current = t;
                        improved = true;
                        for &k in &tentative {
                            reached[k as usize] = true;
                        }
                        break;
                    }
                    for &(p, before) in changed.iter().rev() {
                        self.pick[p as usize] = before;
                    }
                }
            }
            if !improved {
                break;
            }
            order.clear();
            if self.root_cost(root, &mut w, Some(&mut order)).is_none() {
                break;
            }
        }
    }

    fn root_cost(&self, root: u32, w: &mut Walk, order: Option<&mut Vec<u32>>) -> Option<f64> {
        let j = self.pick[root as usize]?;
        self.dag_cost(root, j, w, order)
    }

    fn class(&self, eg: &LbGraph, id: Id) -> Option<u32> {
        self.index.get(&eg.find(id)).copied()
    }

    /// The DAG cost of the extracted term of a class (infinite when it has
    /// none).
    pub(crate) fn cost(&self, eg: &LbGraph, id: Id) -> f64 {
        self.class(eg, id)
            .and_then(|c| {
                let j = self.pick[c as usize]?;
                self.dag_cost(c, j, &mut Walk::new(self.nodes.len()), None)
            })
            .unwrap_or(f64::INFINITY)
    }

    /// The cost of the term rooted at e-node `n` of its class `id`: its
    /// own estimate plus every class its operands reach under the chosen
    /// extraction, each counted once; where those choices would make the
    /// term cyclic, the tree cost (its estimate plus its operands' tree
    /// costs).
    pub(crate) fn node_cost(&self, eg: &LbGraph, id: Id, n: &Node, w: &mut Walk) -> f64 {
        let Some(c) = self.class(eg, id) else {
            return f64::INFINITY;
        };
        let Some(j) = self.nodes[c as usize].iter().position(|m| m == n) else {
            return f64::INFINITY;
        };
        let j = j as u32;
        self.dag_cost(c, j, w, None).unwrap_or_else(|| {
            self.kids[c as usize][j as usize]
                .iter()
                .fold(self.own[c as usize][j as usize], |s, &k| {
                    s + self.tree[k as usize]
                })
        })
    }

    /// Scratch space for [`Best::node_cost`].
    pub(crate) fn walk(&self) -> Walk {
        Walk::new(self.nodes.len())
    }

    fn node(&self, eg: &LbGraph, id: Id) -> Option<&Node> {
        let c = self.class(eg, id)?;
        let j = self.pick[c as usize]?;
        Some(&self.nodes[c as usize][j as usize])
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
    let (expr, op_nodes) =
        lang::function_to_recexpr_indexed(f, &mut analysis.heads).map_err(EgraphError)?;
    // The term goes in node by node (as `add_expr` does) so that each op's
    // class is known: importer notes are attached to it.
    let mut eg = LbGraph::new(analysis);
    let mut ids: Vec<Id> = Vec::with_capacity(expr.as_ref().len());
    for n in expr.as_ref() {
        let id = eg.add(n.clone().map_children(|c| ids[usize::from(c)]));
        ids.push(id);
    }
    for (op, at) in &op_nodes {
        if let Some(note) = f.op_notes.get(op) {
            let class = ids[usize::from(*at)];
            eg.analysis
                .import_notes
                .entry(class)
                .or_default()
                .insert(note.clone());
        }
    }
    let root = *ids
        .last()
        .ok_or_else(|| EgraphError("the function has no term".into()))?;
    let rewrites: Vec<_> = rules.iter().map(|r| r.rewrite()).collect();
    let mut runner: Runner<Node, LbAnalysis> = Runner::new(LbAnalysis::default())
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(cfg.iter_limit)
        .with_node_limit(cfg.node_limit)
        .with_time_limit(cfg.time_limit)
        .with_egraph(eg);
    runner.roots.push(root);
    let runner = runner.run(&rewrites);
    let eg = &runner.egraph;
    let root = runner.roots[0];
    let chooser = Best::new(eg, &cfg.target, root);
    let (best, classes) = extract_dag(eg, &chooser, root)?;
    let (mut function, vals) =
        lang::recexpr_to_function_mapped(&best, &eg.analysis.heads, f).map_err(EgraphError)?;
    // Importer notes follow their class to the op extracted for it.
    for (class, v) in classes.iter().zip(&vals) {
        let notes = eg
            .analysis
            .import_notes
            .iter()
            .filter(|(id, _)| eg.find(**id) == eg.find(*class))
            .flat_map(|(_, ns)| ns.iter());
        if let (Some(note), Some(v)) = (notes.min(), v) {
            function.note_value(*v, note.clone());
        }
    }
    let mut walk = chooser.walk();
    let mut cost_of = |c: Id, n: &Node| chooser.node_cost(eg, c, n, &mut walk);
    let ops = explain::report_ops(eg, &cfg.target, &best, &classes, &mut cost_of);
    let mut dequantized: Vec<OpNote> = Vec::new();
    for (_, n) in f.notes_in_order() {
        if !dequantized.contains(n) {
            dequantized.push(n.clone());
        }
    }
    let report = Report {
        target: cfg.target.name.clone(),
        function: f.name.clone(),
        ops,
        dequantized,
        stop_reason: stop_reason(&runner.stop_reason),
        iterations: runner.iterations.len(),
        nodes: eg.total_number_of_nodes(),
        classes: eg.number_of_classes(),
        total_cost: chooser.cost(eg, root),
    };
    Ok(Optimized { function, report })
}
