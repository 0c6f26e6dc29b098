//! Named, one-directional rewrite rules, grouped into rule sets.
//!
//! Every rule is written in Rust against the e-graph (STYLE.md: no rewrite
//! programs assembled from strings): it looks at the e-nodes of a class
//! whose op is the rule's root, checks its conditions using the analysis
//! (types, ranges, constant values), and either adds an equivalent term to
//! the class or records *why not* as a [`Note`] (`explain` prints those).
//! Every rule claims bit-exact equality with the reference interpreter;
//! rules whose exactness depends on values (integer-only, QDQ clean-up)
//! prove it from the constants and ranges, and do not fire otherwise. The
//! two exceptions are opt-in: with `allow-approx-dyadic` the integer-only
//! rule may approximate a scale ratio, within a proven bound of one unit
//! of the quantized output, and the mixed decomposition fires only where
//! the graph itself marks outlier columns, within the bound proven on
//! [`mixed_decompose`] ([`Outcome::Approximate`]; `explain` says so).
//!
//! Rule sets (the `rules=` option of the `egraph` pass):
//! * `fuse-dequant`: `matmul(x, dequantize(w, s[, z]))` ⇒ `qmatmul` (and the
//!   weight-on-the-left form), then a following `add` (bias),
//!   `relu`/`gelu`/`silu` and `quantize` (the requantize epilogue, exact by
//!   construction: it is defined as that `quantize`) fold into it.
//! * `qdq-cleanup`: `quantize(dequantize(q, s, z), s, z)` ⇒ `q` where every
//!   dequantized value is exact; `requantize(q, s, z, s, z)` ⇒ `q`; integer
//!   `cast` to the same type ⇒ operand; integer cast chains whose first cast
//!   is value-preserving collapse.
//! * `integer-only`: `quantize(matmul(dequantize(xq, sx, zx),
//!   dequantize(wq, sw, zw)), sy, zy)` ⇒ `requant_dyadic(matmul_int(xq, wq,
//!   zx, zw), zy)` when constant scales make every float step of
//!   the unfused graph exact (see [`crate::numeric`]), `sx·sw/sy` is dyadic,
//!   and the value range of the `i32` accumulator is proven.
//! * `bit-serial`: integer `matmul` ⇒ `matmul_int`; `matmul_int` with
//!   operands of at most 8 bits ⇒ the bit-serial schedule.
//! * `amx`: a wrapping integer `matmul` or direct `matmul_int` to `i32`
//!   that the CPU backend's AMX-INT8 kernel takes (`u8`/`i8` activations, a
//!   constant 2-D 8-bit integer weight whose values less its constant
//!   per-tensor zero point fit `i8`) ⇒ `matmul_int {schedule = amx}`, and
//!   back (an `amx` op gets its direct form). The interpreter computes
//!   every schedule alike, so both directions are exact; the cost model
//!   decides (targets without `amxint8` never take `amx`).
//! * `layout`: `transpose(dequantize(w, s, z))` ⇒ `dequantize` of the
//!   transposed weight (granularity remapped); `transpose`, `relayout` and
//!   `reshape` of constants fold into the constant.
//!
//!   Per-axis scales along the result's rows (activation) or columns
//!   (weight) give per-channel multipliers (`requant_dyadic {axis = ..}`);
//!   a non-dyadic ratio is approximated HAWQ-V3 style only with the
//!   `allow-approx-dyadic` option, within one unit of the output (the
//!   proof is on [`integer_only`]); `explain` names every approximation.
//!
//! * `mixed-decomposition`: where the graph marks outlier activation
//!   columns (`mark_outliers`), `matmul(x, dequantize(w))` ⇒ a `qmatmul`
//!   over the regular columns plus a float `matmul` over the outlier
//!   columns (LLM.int8()); approximate within the bound proven on
//!   [`mixed_decompose`], named in `explain`. The mark also blocks plain
//!   dequant fusion of that matmul (its outliers must stay out of the
//!   quantized kernel).
//!
//! Limits: blocked scales and per-axis output scales block the
//! integer-only rewrite; the mixed decomposition takes 2-D weights on the
//! right with per-tensor or per-column scales, and keeps the outlier part
//! in the weight's dequantized type (it does not quantize activations).

use crate::analysis::{dot_range, Facts, Family, LbAnalysis, LbGraph, Note, Range};
use crate::lang::{Head, Node};
use crate::numeric::{approx_dyadic, exact_multiples, Dyadic};
use egg::{Applier, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use lowbit_interp::quotient_format;
use lowbit_ir::{
    Activation, ElemType, FloatFormat, Granularity, IntSchedule, OpKind, Overflow, QRequant,
    Tensor, TensorType,
};

/// What a rule did to one match.
#[derive(Debug)]
pub enum Outcome {
    /// This term is equal to the matched class.
    Equal(Id),
    /// The rewrite does not apply, for this reason.
    Blocked(String),
    /// This term equals the matched class within the stated bound (only
    /// rules enabled by an explicit option produce these).
    Approximate(Id, String),
}

type ApplyFn = fn(&mut LbGraph, Id) -> Vec<Outcome>;

/// A rule: its name, family, root ops and the function that applies it.
#[derive(Clone)]
pub struct Rule {
    /// The rule's name.
    pub name: &'static str,
    /// Its family.
    pub family: Family,
    /// The op names its root can have.
    pub roots: &'static [&'static str],
    apply: ApplyFn,
}

impl Rule {
    /// Applies the rule to one class (for unit tests and tools).
    pub fn apply_to(&self, eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
        (self.apply)(eg, class)
    }

    /// The rule as an egg rewrite.
    pub fn rewrite(&self) -> Rewrite<Node, LbAnalysis> {
        // The searcher and applier only carry static data, so this cannot fail.
        match Rewrite::new(self.name, self.clone(), self.clone()) {
            Ok(r) => r,
            Err(e) => unreachable!("rule {} binds no variables: {e}", self.name),
        }
    }
}

fn has_root(eg: &LbGraph, class: Id, roots: &[&str]) -> bool {
    eg[class].nodes.iter().any(|n| match n {
        Node::Op(h, _) => roots.contains(&eg.analysis.heads.get(*h).kind.name()),
        _ => false,
    })
}

impl Searcher<Node, LbAnalysis> for Rule {
    fn search_eclass_with_limit(
        &self,
        egraph: &LbGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, Node>> {
        (limit > 0 && has_root(egraph, eclass, self.roots)).then(|| SearchMatches {
            eclass,
            substs: vec![Subst::with_capacity(0)],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

impl Applier<Node, LbAnalysis> for Rule {
    fn apply_one(
        &self,
        egraph: &mut LbGraph,
        eclass: Id,
        _subst: &Subst,
        _ast: Option<&PatternAst<Node>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        let mut changed = Vec::new();
        for o in (self.apply)(egraph, eclass) {
            match o {
                Outcome::Equal(id) => {
                    if egraph.union(eclass, id) {
                        changed.push(eclass);
                    }
                }
                Outcome::Blocked(reason) => {
                    egraph
                        .analysis
                        .notes
                        .entry(eclass)
                        .or_default()
                        .insert(Note {
                            family: self.family,
                            rule: self.name,
                            reason,
                            blocked: true,
                        });
                }
                Outcome::Approximate(id, bound) => {
                    egraph
                        .analysis
                        .notes
                        .entry(eclass)
                        .or_default()
                        .insert(Note {
                            family: self.family,
                            rule: self.name,
                            reason: bound,
                            blocked: false,
                        });
                    if egraph.union(eclass, id) {
                        changed.push(eclass);
                    }
                }
            }
        }
        changed
    }
}

/// The op nodes of a class whose op is `name`, with their heads.
///
/// Stochastically rounded ops are left out, so no rule matches them, as a
/// root or as an inner op: every rule reasons about a deterministic
/// rounding mode, and their results depend on each element's index, which
/// a rewrite could move.
fn ops_named(eg: &LbGraph, class: Id, name: &str) -> Vec<(Head, Vec<Id>)> {
    eg[class]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Node::Op(h, ch) => {
                let head = eg.analysis.heads.get(*h);
                (head.kind.name() == name && !head.kind.is_stochastic())
                    .then(|| (head.clone(), ch.clone()))
            }
            _ => None,
        })
        .collect()
}

fn facts(eg: &LbGraph, id: Id) -> &Facts {
    &eg[id].data
}

fn ty(eg: &LbGraph, id: Id) -> Option<TensorType> {
    facts(eg, id).ty.clone()
}

/// Adds an op node and returns its class.
pub fn add_op(eg: &mut LbGraph, kind: OpKind, ty: TensorType, children: Vec<Id>) -> Id {
    let h = eg.analysis.heads.intern(kind, ty);
    eg.add(Node::Op(h, children))
}

fn add_const(eg: &mut LbGraph, t: &Tensor, ty: TensorType) -> Id {
    add_op(eg, OpKind::constant_of(t, &ty), ty, vec![])
}

fn same(eg: &LbGraph, a: Id, b: Id) -> bool {
    eg.find(a) == eg.find(b)
}

fn same_opt(eg: &LbGraph, a: Option<Id>, b: Option<Id>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => same(eg, a, b),
        _ => false,
    }
}

// ---------------------------------------------------------------- fuse-dequant

fn fuse_dequant(eg: &mut LbGraph, class: Id, weight_lhs: bool) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (mm, ch) in ops_named(eg, class, "matmul") {
        if !mm.ty.elem.is_float() {
            continue;
        }
        let (act, wclass) = if weight_lhs {
            (ch[1], ch[0])
        } else {
            (ch[0], ch[1])
        };
        if let Some((m, _)) = ops_named(eg, act, "mark_outliers").first() {
            if let OpKind::MarkOutliers { columns } = &m.kind {
                out.push(Outcome::Blocked(format!(
                    "the activation marks outlier columns {columns:?}: they stay out of the quantized kernel (see mixed decomposition)"
                )));
                continue;
            }
        }
        for (dq, dch) in ops_named(eg, wclass, "dequantize") {
            let OpKind::Dequantize { granularity } = &dq.kind else {
                continue;
            };
            let kind = OpKind::QMatMul {
                granularity: granularity.clone(),
                dequant_type: dq.ty.elem,
                has_zero_point: dch.len() == 3,
                has_bias: false,
                weight_lhs,
                activation: Activation::None,
                requant: None,
            };
            let mut operands = vec![act];
            operands.extend(&dch);
            out.push(Outcome::Equal(add_op(eg, kind, mm.ty.clone(), operands)));
        }
    }
    out
}

fn fuse_dequant_rhs(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    fuse_dequant(eg, class, false)
}

fn fuse_dequant_lhs(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    fuse_dequant(eg, class, true)
}

fn fuse_bias(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (add, ch) in ops_named(eg, class, "add") {
        if !add.ty.elem.is_float() || ty(eg, ch[0]).as_ref() != Some(&add.ty) {
            continue;
        }
        for (q, qch) in ops_named(eg, ch[0], "qmatmul") {
            let OpKind::QMatMul {
                has_bias: false,
                activation: Activation::None,
                requant: None,
                ..
            } = q.kind
            else {
                continue;
            };
            let mut kind = q.kind.clone();
            if let OpKind::QMatMul { has_bias, .. } = &mut kind {
                *has_bias = true;
            }
            let mut operands = qch.clone();
            operands.push(ch[1]);
            out.push(Outcome::Equal(add_op(eg, kind, add.ty.clone(), operands)));
        }
    }
    out
}

fn fuse_activation(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for name in ["relu", "gelu", "silu"] {
        for (a, ch) in ops_named(eg, class, name) {
            let act = match &a.kind {
                OpKind::Relu => Activation::Relu,
                OpKind::Gelu { tanh: false } => Activation::Gelu,
                OpKind::Gelu { tanh: true } => Activation::GeluTanh,
                OpKind::Silu => Activation::Silu,
                _ => continue,
            };
            if ty(eg, ch[0]).as_ref() != Some(&a.ty) || !a.ty.elem.is_float() {
                continue;
            }
            for (q, qch) in ops_named(eg, ch[0], "qmatmul") {
                let mut kind = q.kind.clone();
                let OpKind::QMatMul {
                    activation,
                    requant: None,
                    ..
                } = &mut kind
                else {
                    continue;
                };
                if *activation != Activation::None {
                    continue;
                }
                *activation = act;
                out.push(Outcome::Equal(add_op(eg, kind, a.ty.clone(), qch.clone())));
            }
        }
    }
    out
}

/// `quantize(qmatmul(...), sy[, zy])` ⇒ `qmatmul` with a requantize
/// epilogue. The epilogue is defined as exactly that `quantize` (same
/// granularity, rounding, saturation, float type of the product), so the
/// rewrite is exact by construction, whatever the scales.
fn fuse_requant(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (q, ch) in ops_named(eg, class, "quantize") {
        // A stochastic quantize is never matched (`ops_named` skips it, and
        // the epilogue has no stochastic mode).
        let OpKind::Quantize {
            granularity,
            rounding,
            saturate,
            stochastic: None,
        } = &q.kind
        else {
            continue;
        };
        for (mm, mch) in ops_named(eg, ch[0], "qmatmul") {
            let mut kind = mm.kind.clone();
            let OpKind::QMatMul { requant, .. } = &mut kind else {
                continue;
            };
            if requant.is_some() {
                continue;
            }
            *requant = Some(QRequant {
                float_type: mm.ty.elem,
                granularity: granularity.clone(),
                rounding: *rounding,
                saturate: *saturate,
                has_zero_point: ch.len() == 3,
            });
            let mut operands = mch.clone();
            operands.extend(&ch[1..]);
            out.push(Outcome::Equal(add_op(eg, kind, q.ty.clone(), operands)));
        }
    }
    out
}

// ---------------------------------------------------------------- qdq-cleanup

/// The largest `|q − z|` of a quantized value and its zero point.
fn centered_max(eg: &LbGraph, q: Id, z: Option<Id>) -> Option<u128> {
    let r = facts(eg, q).range?;
    let zr = match z {
        Some(z) => facts(eg, z).range?,
        None => Range::new(0, 0),
    };
    Some(r.sub(&zr)?.max_abs())
}

/// Checks that every entry of a constant scale is positive and finite.
fn nonzero_finite_scales(eg: &LbGraph, scale: Id) -> Result<(), String> {
    let Some(v) = &facts(eg, scale).value else {
        return Err("the scale is not a constant".into());
    };
    match v.to_f64().into_iter().find(|&x| Dyadic::of(x).is_none()) {
        Some(x) => Err(format!("scale {x} is not positive and finite")),
        None => Ok(()),
    }
}

/// Checks that every entry of a constant scale is positive, finite, and
/// has exact multiples up to `dmax` in `elem`.
fn scales_exact(eg: &LbGraph, scale: Id, elem: ElemType, dmax: u128) -> Result<(), String> {
    let Some(v) = &facts(eg, scale).value else {
        return Err("the scale is not a constant".into());
    };
    for x in v.to_f64() {
        let d = Dyadic::of(x).ok_or_else(|| format!("scale {x} is not positive and finite"))?;
        exact_multiples(elem, &d, dmax).map_err(|e| format!("scale {x}: {e}"))?;
    }
    Ok(())
}

fn quantize_of_dequantize(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (q, ch) in ops_named(eg, class, "quantize") {
        let OpKind::Quantize { granularity, .. } = &q.kind else {
            continue;
        };
        for (d, dch) in ops_named(eg, ch[0], "dequantize") {
            let OpKind::Dequantize { granularity: dg } = &d.kind else {
                continue;
            };
            let matches = dg == granularity
                && same(eg, dch[1], ch[1])
                && same_opt(eg, dch.get(2).copied(), ch.get(2).copied())
                && ty(eg, dch[0]).as_ref() == Some(&q.ty);
            if !matches {
                continue;
            }
            // Every (q − z)·s is exact in the dequantized type D, so the
            // quotient's exact value is the integer q − z. That integer has
            // fewer significand bits than D (the product's odd factor is at
            // least q − z's), and the quotient format holds every value of
            // D, so rounding the quotient to it changes nothing: the
            // quantize returns q.
            let res = centered_max(eg, dch[0], dch.get(2).copied())
                .ok_or_else(|| "the quantized value has no integer range".to_string())
                .and_then(|dmax| scales_exact(eg, ch[1], d.ty.elem, dmax));
            out.push(match res {
                Ok(()) => Outcome::Equal(dch[0]),
                Err(e) => {
                    Outcome::Blocked(format!("quantize(dequantize(q)) is not the identity: {e}"))
                }
            });
        }
    }
    out
}

fn requantize_identity(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (r, ch) in ops_named(eg, class, "requantize") {
        let OpKind::Requantize {
            in_granularity,
            out_granularity,
            ..
        } = &r.kind
        else {
            continue;
        };
        let matches = in_granularity == out_granularity
            && same(eg, ch[1], ch[3])
            && same(eg, ch[2], ch[4])
            && ty(eg, ch[0]).as_ref() == Some(&r.ty);
        if !matches {
            continue;
        }
        // requantize keeps (q − z)·s exact and rounds the quotient by s
        // once to the quotient format: with a non-zero finite scale that
        // quotient is exactly q − z, which survives the rounding when every
        // integer up to |q − z| is a value of the quotient format (2^24 for
        // f32 scales: an i32 q can round).
        let res = centered_max(eg, ch[0], Some(ch[2]))
            .ok_or_else(|| "no integer range".to_string())
            .and_then(|dmax| {
                nonzero_finite_scales(eg, ch[1])?;
                let t = ty(eg, ch[1]).ok_or("the scale has no type")?.elem;
                let qf = ElemType::Float(quotient_format(&[r.ty.elem, t]));
                exact_multiples(qf, &Dyadic { odd: 1, exp: 0 }, dmax)
                    .map_err(|e| format!("the quotient q − z: {e}"))
            });
        out.push(match res {
            Ok(()) => Outcome::Equal(ch[0]),
            Err(e) => Outcome::Blocked(format!("requantize to the same scale is not exact: {e}")),
        });
    }
    out
}

fn cast_identity(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (c, ch) in ops_named(eg, class, "cast") {
        // Float casts may canonicalize NaN payloads, so only integers.
        if c.ty.elem.is_int() && ty(eg, ch[0]).as_ref() == Some(&c.ty) {
            out.push(Outcome::Equal(ch[0]));
        }
    }
    out
}

fn cast_int_chain(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (outer, ch) in ops_named(eg, class, "cast") {
        if !outer.ty.elem.is_int() {
            continue;
        }
        for (inner, ich) in ops_named(eg, ch[0], "cast") {
            let x = ich[0];
            let (Some(xt), Some(xr)) = (ty(eg, x), facts(eg, x).range) else {
                continue;
            };
            let Some(mid) = Range::of_type(inner.ty.elem) else {
                continue;
            };
            if !xt.elem.is_int() || !inner.ty.elem.is_int() {
                continue;
            }
            if xr.within(&mid) {
                out.push(Outcome::Equal(add_op(
                    eg,
                    outer.kind.clone(),
                    outer.ty.clone(),
                    vec![x],
                )));
            } else {
                out.push(Outcome::Blocked(format!(
                    "the inner cast to {} changes values in {xr}",
                    inner.ty.elem
                )));
            }
        }
    }
    out
}

// ---------------------------------------------------------------- integer-only

/// One dequantized operand of the matmul: its integer value, its scale per
/// channel of the result (one entry, or one per index of `axis`), its
/// zero point (a per-tensor class) and the largest `|q − z|`.
struct Side {
    q: Id,
    scales: Vec<Dyadic>,
    axis: Option<usize>,
    zp: Option<Id>,
    dmax: u128,
}

/// The result axis a per-axis scale of a matmul operand runs along: rows
/// of the left operand, columns of the right one. Scales along the
/// contraction or a batch axis cannot be taken out of the sum.
fn result_axis(axis: u32, operand_rank: usize, result_rank: usize, lhs: bool) -> Option<usize> {
    let want = if lhs {
        operand_rank - 2
    } else {
        operand_rank - 1
    };
    (axis as usize == want).then(|| {
        if lhs {
            result_rank - 2
        } else {
            result_rank - 1
        }
    })
}

/// A per-tensor zero-point class for `zp`: itself when it has one element,
/// a new scalar constant when all its entries are equal.
fn scalar_zero_point(eg: &mut LbGraph, zp: Id, what: &str) -> Result<Id, String> {
    let t = ty(eg, zp).ok_or("untyped zero point")?;
    if t.num_elements() == 1 {
        return Ok(zp);
    }
    let v = facts(eg, zp)
        .value
        .clone()
        .ok_or_else(|| format!("the {what} zero point is not a constant"))?;
    let vals = v.to_f64();
    if vals.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!(
            "the {what} zero points differ between channels: matmul_int takes one zero point per operand"
        ));
    }
    let one = Tensor::from_f64(t.elem, vec![], &vals[..1]).map_err(|e| e.to_string())?;
    Ok(add_const(eg, &one, TensorType::new(vec![], t.elem)))
}

fn dequant_side(
    eg: &mut LbGraph,
    head: &Head,
    ch: &[Id],
    (lhs, result_rank): (bool, usize),
) -> Result<Side, String> {
    let what = if lhs { "activation" } else { "weight" };
    let OpKind::Dequantize { granularity } = &head.kind else {
        return Err(format!("{what} is not dequantized"));
    };
    let q = ch[0];
    let qt = ty(eg, q).ok_or("untyped operand")?;
    if !qt.elem.is_int() {
        return Err(format!("{what} is {}, not an integer type", qt.elem));
    }
    let axis = match granularity {
        Granularity::PerTensor => None,
        Granularity::PerAxis { axis } => Some(
            result_axis(*axis, qt.rank(), result_rank, lhs).ok_or_else(|| {
                format!(
                    "the {what} scale runs along axis {axis}, the contraction or a batch axis: it cannot be taken out of the integer sum"
                )
            })?,
        ),
        Granularity::Blocked { .. } => {
            return Err(format!(
                "the {what} scale is blocked: a block along the contraction axis changes the scale inside the integer sum"
            ))
        }
    };
    let v = facts(eg, ch[1])
        .value
        .clone()
        .ok_or_else(|| format!("the {what} scale is not a constant"))?;
    let dmax = centered_max(eg, q, ch.get(2).copied())
        .ok_or_else(|| format!("the {what} values have no integer range"))?;
    let mut scales = Vec::new();
    for s in v.to_f64() {
        let d = Dyadic::of(s)
            .ok_or_else(|| format!("the {what} scale {s} is not positive and finite"))?;
        exact_multiples(head.ty.elem, &d, dmax)
            .map_err(|e| format!("dequantized {what} is not exact in {}: {e}", head.ty.elem))?;
        scales.push(d);
    }
    let zp = match ch.get(2) {
        Some(z) => Some(scalar_zero_point(eg, *z, what)?),
        None => None,
    };
    Ok(Side {
        q,
        scales,
        axis,
        zp,
        dmax,
    })
}

fn zero_for(eg: &mut LbGraph, like: Id) -> Option<Id> {
    let elem = ty(eg, like)?.elem;
    let t = Tensor::from_f64(elem, vec![], &[0.0]).ok()?;
    Some(add_const(eg, &t, TensorType::new(vec![], elem)))
}

/// What the integer-only rewrite computes for one quantize: the operands,
/// the per-channel multipliers and shifts, and, when some channel's ratio
/// was approximated, the bound that holds.
struct DyadicPlan {
    x: Side,
    w: Side,
    multipliers: Vec<i64>,
    shifts: Vec<u32>,
    axis: Option<usize>,
    approximated: Option<String>,
}

/// Largest magnitude of the quantized output window (range plus zero
/// point) below which an approximate multiplier is within one unit, for a
/// reference quotient with `p` significand bits (see [`integer_only`]):
/// `2^28` for an `f64` quotient, `2^(p − 2)` (`2^22` for `f32`) below.
fn approx_window(p: u32) -> i128 {
    1 << p.saturating_sub(2).min(28)
}

#[allow(clippy::too_many_arguments)]
fn plan_integer_only(
    eg: &mut LbGraph,
    q: &Head,
    qch: &[Id],
    mm: &Head,
    mch: &[Id],
    (xd, xch): (&Head, &[Id]),
    (wd, wch): (&Head, &[Id]),
) -> Result<DyadicPlan, String> {
    let OpKind::Quantize {
        granularity,
        saturate,
        ..
    } = &q.kind
    else {
        return Err("not a quantize".into());
    };
    if !q.ty.elem.is_int() {
        return Err(format!(
            "the quantized result is {}, not an integer",
            q.ty.elem
        ));
    }
    if *granularity != Granularity::PerTensor {
        return Err("the output scale is per-axis or blocked: requant_dyadic takes one output zero point, and per-channel output scales are not implemented".into());
    }
    let rr = mm.ty.rank();
    let x = dequant_side(eg, xd, xch, (true, rr))?;
    let w = dequant_side(eg, wd, wch, (false, rr))?;
    let axis =
        match (x.axis, w.axis) {
            (Some(a), Some(b)) if a != b => return Err(
                "both operands have per-axis scales: the ratio would vary along two result axes"
                    .into(),
            ),
            (a, b) => a.or(b),
        };
    let channels = axis.map_or(1, |a| mm.ty.shape[a] as usize);
    let (xf, wf) = (facts(eg, mch[0]).clone(), facts(eg, mch[1]).clone());
    let zx = x.zp.map(|z| facts(eg, z).clone());
    let zw = w.zp.map(|z| facts(eg, z).clone());
    let xr = Facts {
        range: facts(eg, x.q).range,
        ..xf
    };
    let wr = Facts {
        range: facts(eg, w.q).range,
        ..wf
    };
    let acc =
        dot_range(&xr, &wr, zx.as_ref(), zw.as_ref()).ok_or("the accumulator range is unknown")?;
    let i32r = Range::new(i32::MIN as i128, i32::MAX as i128);
    if !acc.within(&i32r) {
        return Err(format!(
            "accumulator range {acc} exceeds i32 (|x| <= {}, |w| <= {}): the integer path could overflow",
            x.dmax, w.dmax
        ));
    }
    let sy_v = facts(eg, qch[1])
        .value
        .clone()
        .ok_or("the output scale is not a constant")?;
    let sy_f = sy_v.to_f64().first().copied().unwrap_or(f64::NAN);
    let sy = Dyadic::of(sy_f)
        .ok_or_else(|| format!("the output scale {sy_f} is not positive and finite"))?;
    // The reference divides the matmul result by sy in this format.
    let quotient = quotient_format(&[mm.ty.elem, sy_v.elem]);
    let approx_allowed = eg.analysis.options.allow_approx_dyadic;
    let (mut multipliers, mut shifts) = (Vec::new(), Vec::new());
    let mut approximated = 0usize;
    for c in 0..channels {
        let pick = |v: &[Dyadic]| v[if v.len() == 1 { 0 } else { c }];
        let prod = pick(&x.scales)
            .mul(&pick(&w.scales))
            .ok_or("the scale product overflows")?;
        exact_multiples(mm.ty.elem, &prod, acc.max_abs()).map_err(|e| {
            format!(
                "the float matmul result is not exact in {}: {e}",
                mm.ty.elem
            )
        })?;
        let exact = exact_dyadic(&prod, &sy, acc, sy_f, quotient);
        match (exact, approx_allowed) {
            (Ok((m, s)), _) => {
                multipliers.push(m);
                shifts.push(s);
            }
            (Err(e), false) => {
                return Err(format!(
                    "{e}; an approximate multiplier needs the option allow-approx-dyadic=true"
                ))
            }
            (Err(_), true) => {
                let (m, s) = approx_dyadic(&prod, &sy).ok_or_else(|| {
                    format!(
                        "no approximate multiplier below 2^62 with a shift of at most 126 for the ratio {:e}",
                        prod.value() / sy_f
                    )
                })?;
                multipliers.push(m as i64);
                shifts.push(s);
                approximated += 1;
            }
        }
    }
    let approximated = if approximated == 0 {
        None
    } else {
        let (lo, hi) =
            q.ty.elem
                .int_range()
                .ok_or("the result has no integer range")?;
        let zr = match qch.get(2) {
            Some(z) => facts(eg, *z)
                .range
                .ok_or("the output zero point has no range")?,
            None => Range::new(0, 0),
        };
        let window = lo.abs().max(hi.abs()) + zr.max_abs() as i128 + 2;
        if !saturate {
            return Err("an approximate multiplier can move a value across the wrap-around of a non-saturating quantize".into());
        }
        let p = quotient.man_bits() as u32 + 1;
        let limit = approx_window(p);
        if window >= limit {
            return Err(format!(
                "{} outputs are too wide for the one-unit bound of an approximate multiplier with a {quotient} reference quotient (needs |range| + |zero point| < 2^{})",
                q.ty.elem,
                limit.trailing_zeros()
            ));
        }
        Some(format!(
            "approximate dyadic multiplier for {approximated} of {channels} channel(s) (relative error <= 2^-31): differs from the reference by at most 1 unit of the {} output",
            q.ty.elem
        ))
    };
    Ok(DyadicPlan {
        x,
        w,
        multipliers,
        shifts,
        axis,
        approximated,
    })
}

/// The exact multiplier and shift of `prod / sy`, when the ratio is dyadic
/// and the reference's quotient `acc · prod / sy`, rounded to the
/// `quotient` format, cannot round.
fn exact_dyadic(
    prod: &Dyadic,
    sy: &Dyadic,
    acc: Range,
    sy_f: f64,
    quotient: FloatFormat,
) -> Result<(i64, u32), String> {
    let ratio = prod.div(sy).ok_or_else(|| format!(
        "scale ratio sx*sw/sy = {:e} is not dyadic (the odd factor of sy does not divide that of sx*sw): an integer-only form would be approximate",
        prod.value() / sy_f
    ))?;
    // Every acc · ratio must be a value of the quotient format. (With an
    // f32 matmul result this already follows from its exactness, as
    // ratio.odd divides prod.odd; an f64 one needs it.)
    exact_multiples(ElemType::Float(quotient), &ratio, acc.max_abs()).map_err(|e| {
        format!("the rescaled accumulator is not exact in the {quotient} quotient ({e}): the reference quotient would round")
    })?;
    let (mult, shift) = if ratio.exp >= 0 {
        (
            ratio.odd.checked_shl(ratio.exp as u32).unwrap_or(u128::MAX),
            0u32,
        )
    } else {
        (ratio.odd, ratio.exp.unsigned_abs())
    };
    if mult >= 1 << 62 || shift > 126 {
        return Err(format!("multiplier {mult} / shift {shift} out of range"));
    }
    Ok((mult as i64, shift))
}

/// `quantize(matmul(dequantize(xq), dequantize(wq)))` ⇒
/// `requant_dyadic(matmul_int(xq, wq, zx, zw), zy)`.
///
/// Exact mode: every float step of the unfused graph is exact (see
/// [`crate::numeric`]), including the quantize's quotient in its quotient
/// format (`f32` for `f32` operands: `acc · ratio` must fit 24 bits), and
/// the ratio `sx·sw/sy` of every channel is dyadic, so the result is
/// bit-exact. Approximate mode (the `allow-approx-dyadic` option): a
/// non-dyadic ratio `r` gets a HAWQ-V3 multiplier with `m/2^s = r(1 +
/// e2)`, `|e2| ≤ 2^-31`, while the reference computes `acc·r(1 + e1)`
/// (`|e1| ≤ 2^-p`, the division rounded to the `p`-bit quotient format:
/// 24 for `f32`, 53 for `f64`) before the same rounding. Where `|acc·r| ≤
/// 2T` (`T` = output range plus zero point, below `2^(p−2)` and `2^28`)
/// the two pre-rounding values differ by at most `2T·2^-p + 2T·2^-31 <
/// 1/2 + 1/4 < 1`, and any monotone rounding to integers maps values less
/// than 1 apart at most 1 apart; beyond `2T` both saturate to the same
/// end. Clamping keeps the difference, so the outputs differ by at most
/// one unit. A non-saturating quantize is refused (a wrap could turn one
/// unit into the whole range).
fn integer_only(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (q, ch) in ops_named(eg, class, "quantize") {
        let OpKind::Quantize {
            rounding, saturate, ..
        } = &q.kind
        else {
            continue;
        };
        for (mm, mch) in ops_named(eg, ch[0], "matmul") {
            let xs = ops_named(eg, mch[0], "dequantize");
            let ws = ops_named(eg, mch[1], "dequantize");
            for (xd, xch) in &xs {
                for (wd, wch) in &ws {
                    let plan = plan_integer_only(eg, &q, &ch, &mm, &mch, (xd, xch), (wd, wch));
                    let p = match plan {
                        Err(e) => {
                            out.push(Outcome::Blocked(e));
                            continue;
                        }
                        Ok(p) => p,
                    };
                    let mut operands = vec![p.x.q, p.w.q];
                    if p.x.zp.is_some() || p.w.zp.is_some() {
                        let zx = p.x.zp.or_else(|| zero_for(eg, p.x.q));
                        let zw = p.w.zp.or_else(|| zero_for(eg, p.w.q));
                        let (Some(zx), Some(zw)) = (zx, zw) else {
                            continue;
                        };
                        operands.extend([zx, zw]);
                    }
                    let acc_ty = TensorType::new(mm.ty.shape.clone(), ElemType::I32);
                    let mmi = add_op(
                        eg,
                        OpKind::MatMulInt {
                            overflow: Overflow::Wrap,
                            schedule: IntSchedule::Direct,
                        },
                        acc_ty,
                        operands,
                    );
                    let mut rq_ops = vec![mmi];
                    rq_ops.extend(ch.get(2).copied());
                    let rq = add_op(
                        eg,
                        OpKind::RequantDyadic {
                            multiplier: p.multipliers,
                            shift: p.shifts,
                            axis: p.axis.map(|a| a as u32),
                            rounding: *rounding,
                            saturate: *saturate,
                        },
                        q.ty.clone(),
                        rq_ops,
                    );
                    out.push(match p.approximated {
                        None => Outcome::Equal(rq),
                        Some(bound) => Outcome::Approximate(rq, bound),
                    });
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------- bit-serial

fn int_matmul_to_matmul_int(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (mm, ch) in ops_named(eg, class, "matmul") {
        let OpKind::MatMul { overflow } = mm.kind else {
            continue;
        };
        let ints = [ch[0], ch[1]]
            .iter()
            .all(|c| ty(eg, *c).is_some_and(|t| t.elem.is_int()));
        if ints && mm.ty.elem.is_int() {
            let kind = OpKind::MatMulInt {
                overflow,
                schedule: IntSchedule::Direct,
            };
            out.push(Outcome::Equal(add_op(eg, kind, mm.ty.clone(), ch.clone())));
        }
    }
    out
}

fn bit_serial(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (mm, ch) in ops_named(eg, class, "matmul_int") {
        let OpKind::MatMulInt {
            overflow,
            schedule: IntSchedule::Direct,
        } = mm.kind
        else {
            continue;
        };
        let bits: Vec<u32> = ch[..2]
            .iter()
            .filter_map(|c| ty(eg, *c).map(|t| t.elem.bits()))
            .collect();
        if bits.iter().any(|&b| b > 8) {
            out.push(Outcome::Blocked(format!(
                "{}x{}-bit operands: bit-serial needs at most 8 bits per operand",
                bits[0],
                bits.get(1).copied().unwrap_or(0)
            )));
            continue;
        }
        let kind = OpKind::MatMulInt {
            overflow,
            schedule: IntSchedule::BitSerial,
        };
        out.push(Outcome::Equal(add_op(eg, kind, mm.ty.clone(), ch.clone())));
    }
    out
}

// ---------------------------------------------------------------- amx

/// Why the AMX-INT8 kernel (the CPU backend's `matmul_int {schedule =
/// amx}`: `codegen/amx.rs`, mapped by `cpu_run`) would not take an integer
/// matmul with operand classes `ch` and result type `res`, or `None` when
/// it takes it: `u8`/`i8` activations, an `i32` wrapping result, a
/// constant 2-D weight of 8-bit or 4-bit integers whose values less the
/// weight zero point fit `i8` (the kernel packs `i8`, `i4` or `u4`;
/// 4-bit weights stay 4-bit and are split into byte tiles per k block),
/// and constant single-value zero points (folded into the packed weights
/// and row offsets).
fn amx_blocker(eg: &LbGraph, ch: &[Id], res: &TensorType, overflow: Overflow) -> Option<String> {
    let (Some(x), Some(w)) = (ty(eg, ch[0]), ty(eg, ch[1])) else {
        return Some("operand types unknown".into());
    };
    if ![ElemType::U8, ElemType::I8].contains(&x.elem) {
        return Some(format!(
            "the AMX kernel takes u8 or i8 activations, not {}",
            x.elem
        ));
    }
    if res.elem != ElemType::I32 || overflow != Overflow::Wrap {
        return Some(format!(
            "the AMX kernel writes wrapping i32, not {} ({overflow:?})",
            res.elem
        ));
    }
    if !w.elem.is_int() || ![4, 8].contains(&w.elem.bits()) {
        return Some(format!(
            "the AMX kernel takes 8-bit or 4-bit weights, not {}",
            w.elem
        ));
    }
    if w.rank() != 2 {
        return Some(format!("the weight has rank {}, not 2", w.rank()));
    }
    let constant = eg[ch[1]].nodes.iter().any(|n| {
        matches!(n, Node::Op(h, _) if matches!(eg.analysis.heads.get(*h).kind, OpKind::Constant(_)))
    });
    if !constant {
        return Some("the weight is not a constant (the kernel packs it once)".into());
    }
    let zw = match ch.get(2..4) {
        Some(&[za, zw]) => {
            let one = |z: Id| -> Option<i128> {
                let t = constant_value(eg, z)?;
                let v = t.to_i128()?;
                (v.len() == 1 && i32::try_from(v[0]).is_ok()).then(|| v[0])
            };
            let (Some(_), Some(zw)) = (one(za), one(zw)) else {
                return Some("the zero points are not constant single integers".into());
            };
            zw
        }
        _ => 0,
    };
    let centered = facts(eg, ch[1])
        .range
        .and_then(|r| r.sub(&Range::new(zw, zw)));
    match centered {
        Some(r) if r.within(&Range::new(-128, 127)) => None,
        Some(r) => Some(format!(
            "the weights less their zero point {zw} span {r}, beyond the kernel's i8"
        )),
        None => Some("the weight's value range is unknown".into()),
    }
}

/// `amx`: offers `schedule = amx` beside a direct integer matmul the AMX
/// kernel takes (see [`amx_blocker`]), and the direct schedule beside an
/// `amx` op. Byte activations that the kernel does not take get a note
/// saying why; other matmuls are left alone.
fn amx_schedule(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut found = ops_named(eg, class, "matmul_int");
    found.extend(ops_named(eg, class, "matmul"));
    for (mm, ch) in found {
        let (overflow, to) = match mm.kind {
            OpKind::MatMulInt {
                overflow,
                schedule: IntSchedule::Amx,
            } => (overflow, IntSchedule::Direct),
            OpKind::MatMulInt {
                overflow,
                schedule: IntSchedule::Direct,
            } => (overflow, IntSchedule::Amx),
            OpKind::MatMul { overflow } if ch.len() == 2 => (overflow, IntSchedule::Amx),
            _ => continue,
        };
        let ints = ch[..2]
            .iter()
            .all(|c| ty(eg, *c).is_some_and(|t| t.elem.is_int()));
        if !ints || !mm.ty.elem.is_int() {
            continue;
        }
        if to == IntSchedule::Amx {
            if let Some(why) = amx_blocker(eg, &ch, &mm.ty, overflow) {
                let bytes =
                    ty(eg, ch[0]).is_some_and(|t| [ElemType::U8, ElemType::I8].contains(&t.elem));
                if bytes {
                    out.push(Outcome::Blocked(why));
                }
                continue;
            }
        }
        let kind = OpKind::MatMulInt {
            overflow,
            schedule: to,
        };
        out.push(Outcome::Equal(add_op(eg, kind, mm.ty.clone(), ch.clone())));
    }
    out
}

// ---------------------------------------------------------------- layout

/// Constants larger than this are not folded (the fold copies them).
const MAX_FOLD_BYTES: usize = 256 << 20;

fn fold_into_constant(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for name in ["transpose", "relayout", "reshape"] {
        for (op, ch) in ops_named(eg, class, name) {
            let Some(v) = constant_value(eg, ch[0]) else {
                continue;
            };
            if v.codes.len() * 8 > MAX_FOLD_BYTES {
                out.push(Outcome::Blocked(format!(
                    "constant of {} elements is too large to fold",
                    v.codes.len()
                )));
                continue;
            }
            match lowbit_interp::eval_op(&op.kind, &[&v], std::slice::from_ref(&op.ty)) {
                Ok(mut r) => {
                    let t = r.remove(0);
                    out.push(Outcome::Equal(add_const(eg, &t, op.ty.clone())));
                }
                Err(e) => out.push(Outcome::Blocked(format!("cannot fold: {e}"))),
            }
        }
    }
    out
}

/// The value of a constant class, decoding large constants on demand.
fn constant_value(eg: &LbGraph, class: Id) -> Option<std::sync::Arc<Tensor>> {
    if let Some(v) = &facts(eg, class).value {
        return Some(v.clone());
    }
    let ty = ty(eg, class)?;
    eg[class].nodes.iter().find_map(|n| match n {
        Node::Op(h, _) => match &eg.analysis.heads.get(*h).kind {
            OpKind::Constant(c) => Tensor::from_bytes(&ty, c.bytes())
                .ok()
                .map(std::sync::Arc::new),
            _ => None,
        },
        _ => None,
    })
}

fn permuted(t: &TensorType, perm: &[u32]) -> TensorType {
    let shape = perm
        .iter()
        .map(|&p| t.shape[p as usize])
        .collect::<Vec<_>>();
    TensorType::new(shape, t.elem)
}

fn transpose_through_dequantize(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (tr, ch) in ops_named(eg, class, "transpose") {
        let OpKind::Transpose { perm } = &tr.kind else {
            continue;
        };
        for (d, dch) in ops_named(eg, ch[0], "dequantize") {
            let OpKind::Dequantize { granularity } = &d.kind else {
                continue;
            };
            let Some(wt) = ty(eg, dch[0]) else { continue };
            if perm.len() != wt.rank() {
                continue;
            }
            let new_axis = |a: u32| perm.iter().position(|&p| p == a).map(|i| i as u32);
            let tr_kind = OpKind::Transpose { perm: perm.clone() };
            let (g, scale_ops): (Granularity, Vec<Id>) = match granularity {
                Granularity::PerTensor => (Granularity::PerTensor, dch[1..].to_vec()),
                Granularity::PerAxis { axis } => match new_axis(*axis) {
                    Some(a) => (Granularity::PerAxis { axis: a }, dch[1..].to_vec()),
                    None => continue,
                },
                Granularity::Blocked { blocks } => {
                    let mut nb: Vec<(u32, u64)> = blocks
                        .iter()
                        .filter_map(|(a, s)| new_axis(*a).map(|n| (n, *s)))
                        .collect();
                    nb.sort();
                    let mut ops = Vec::new();
                    for &s in &dch[1..] {
                        let Some(st) = ty(eg, s) else { continue };
                        ops.push(add_op(eg, tr_kind.clone(), permuted(&st, perm), vec![s]));
                    }
                    (Granularity::Blocked { blocks: nb }, ops)
                }
            };
            let w = add_op(eg, tr_kind.clone(), permuted(&wt, perm), vec![dch[0]]);
            let mut operands = vec![w];
            operands.extend(scale_ops);
            let kind = OpKind::Dequantize { granularity: g };
            out.push(Outcome::Equal(add_op(eg, kind, tr.ty.clone(), operands)));
        }
    }
    out
}

// ---------------------------------------------------------------- mixed

/// `matmul(mark_outliers(x, O), dequantize(wq, s[, z]))` ⇒
/// `qmatmul(gather(x, R), gather(wq, R), s[, z]) + matmul(gather(x, O), W_O)`
/// where `R` is the complement of `O` along the contraction axis and `W_O`
/// the outlier rows of the weight, dequantized once (a float constant when
/// the weight, scale and zero point are constants; the `dequantize` op
/// otherwise).
///
/// Not bit-exact: the reference sums all `k` products in f64 and rounds
/// once to the result type `T`; the decomposition rounds each part to `T`
/// and their sum again. With `u` the unit roundoff of `T`, `η` half its
/// smallest subnormal and `A = Σ_k |x_k·w_k|`, each of the three roundings
/// and the reference's own is at most `u·A + η` (the f64 sums add at most
/// `2k·2^-53·A`, below `u·A/256` for `k ≤ 2^20`), so
/// `|y − y_ref| ≤ 5u·A + 4η` while `A·(1 + 5u)` stays below `T`'s largest
/// finite value. The rule fires only where the graph marks outliers.
fn mixed_decompose(eg: &mut LbGraph, class: Id) -> Vec<Outcome> {
    let mut out = Vec::new();
    // Applied once: a second application would add fresh constants (they
    // are interned by buffer), and the e-graph would never saturate.
    if !ops_named(eg, class, "add").is_empty() {
        return out;
    }
    for (mm, ch) in ops_named(eg, class, "matmul") {
        if !mm.ty.elem.is_float() {
            continue;
        }
        for (mark, mch) in ops_named(eg, ch[0], "mark_outliers") {
            let OpKind::MarkOutliers { columns } = &mark.kind else {
                continue;
            };
            for (dq, dch) in ops_named(eg, ch[1], "dequantize") {
                match plan_mixed(eg, &mm, mch[0], columns, &dq, &dch) {
                    Ok((y, bound)) => out.push(Outcome::Approximate(y, bound)),
                    Err(e) => out.push(Outcome::Blocked(format!("no mixed decomposition: {e}"))),
                }
            }
        }
    }
    out
}

fn index_const(eg: &mut LbGraph, idx: &[u64]) -> Result<Id, String> {
    let vals: Vec<f64> = idx.iter().map(|&i| i as f64).collect();
    let t = Tensor::from_f64(ElemType::I64, vec![idx.len() as u64], &vals)?;
    Ok(add_const(eg, &t, t.ty()))
}

/// `gather(data, idx) {axis}`, folded when `data` is a constant.
fn gather_rows(eg: &mut LbGraph, data: Id, idx: &[u64], axis: usize) -> Result<Id, String> {
    let dt = ty(eg, data).ok_or("untyped operand")?;
    let mut shape = dt.shape.clone();
    shape[axis] = idx.len() as u64;
    let rt = TensorType::new(shape, dt.elem);
    let kind = OpKind::Gather { axis: axis as i64 };
    let ids = index_const(eg, idx)?;
    if let Some(v) = constant_value(eg, data) {
        if v.codes.len() * 8 <= MAX_FOLD_BYTES {
            let iv = constant_value(eg, ids).ok_or("index constant")?;
            let mut r = lowbit_interp::eval_op(&kind, &[&v, &iv], std::slice::from_ref(&rt))
                .map_err(|e| e.to_string())?;
            return Ok(add_const(eg, &r.remove(0), rt));
        }
    }
    Ok(add_op(eg, kind, rt, vec![data, ids]))
}

fn plan_mixed(
    eg: &mut LbGraph,
    mm: &Head,
    x: Id,
    outliers: &[u64],
    dq: &Head,
    dch: &[Id],
) -> Result<(Id, String), String> {
    let OpKind::Dequantize { granularity } = &dq.kind else {
        return Err("the weight is not dequantized".into());
    };
    let xt = ty(eg, x).ok_or("untyped activation")?;
    let wt = ty(eg, dch[0]).ok_or("untyped weight")?;
    if wt.rank() != 2 || xt.rank() < 2 {
        return Err(format!(
            "the weight has rank {} (2-D weights only)",
            wt.rank()
        ));
    }
    // A scale that varies along the contraction axis would have to be
    // split too; per-tensor and per-output-column scales carry over as is.
    match granularity {
        Granularity::PerTensor | Granularity::PerAxis { axis: 1 } => {}
        _ => {
            return Err(
                "the weight scale varies along the contraction axis (per-row or blocked)".into(),
            )
        }
    }
    let k = wt.shape[0];
    if outliers.iter().any(|&c| c >= k) || outliers.len() as u64 >= k {
        return Err(format!(
            "outlier columns {outliers:?} leave no regular column of {k}"
        ));
    }
    let regular: Vec<u64> = (0..k).filter(|c| !outliers.contains(c)).collect();
    let xr_ = xt.rank() - 1;
    let x_r = gather_rows(eg, x, &regular, xr_)?;
    let x_o = gather_rows(eg, x, outliers, xr_)?;
    let w_r = gather_rows(eg, dch[0], &regular, 0)?;
    let w_o = gather_rows(eg, dch[0], outliers, 0)?;
    let kind = OpKind::QMatMul {
        granularity: granularity.clone(),
        dequant_type: dq.ty.elem,
        has_zero_point: dch.len() == 3,
        has_bias: false,
        weight_lhs: false,
        activation: Activation::None,
        requant: None,
    };
    let mut qops = vec![x_r, w_r];
    qops.extend(&dch[1..]);
    let y_r = add_op(eg, kind, mm.ty.clone(), qops);
    let wo_ty = TensorType::new(vec![outliers.len() as u64, wt.shape[1]], dq.ty.elem);
    let deq = OpKind::Dequantize {
        granularity: granularity.clone(),
    };
    let mut dops = vec![w_o];
    dops.extend(&dch[1..]);
    // The outlier rows are kept in float: dequantized once, at compile time
    // when everything is constant.
    let consts: Option<Vec<_>> = dops.iter().map(|d| constant_value(eg, *d)).collect();
    let w_of = match consts {
        Some(vals) => {
            let refs: Vec<&Tensor> = vals.iter().map(|v| v.as_ref()).collect();
            let mut r = lowbit_interp::eval_op(&deq, &refs, std::slice::from_ref(&wo_ty))
                .map_err(|e| e.to_string())?;
            add_const(eg, &r.remove(0), wo_ty)
        }
        None => add_op(eg, deq, wo_ty, dops),
    };
    let y_o = add_op(
        eg,
        OpKind::MatMul {
            overflow: Overflow::Wrap,
        },
        mm.ty.clone(),
        vec![x_o, w_of],
    );
    let y = add_op(
        eg,
        OpKind::Binary {
            op: lowbit_ir::BinaryOp::Add,
            overflow: Overflow::Wrap,
        },
        mm.ty.clone(),
        vec![y_r, y_o],
    );
    let bound = format!(
        "LLM.int8()-style mixed decomposition: {} outlier column(s) {outliers:?} in {} (weight rows dequantized once), {} regular column(s) through qmatmul on {} weights; each part is rounded to {} before the sum, so the result differs from the reference by at most 5u*sum|x*w| + 4*eta (u, eta: unit roundoff and half the smallest subnormal of {})",
        outliers.len(),
        dq.ty.elem,
        regular.len(),
        wt.elem,
        mm.ty.elem,
        mm.ty.elem
    );
    Ok((y, bound))
}

// ---------------------------------------------------------------- registry

/// Every rule, grouped by rule set name.
pub fn rule_sets() -> Vec<(&'static str, Vec<Rule>)> {
    let r = |name, family, roots, apply| Rule {
        name,
        family,
        roots,
        apply,
    };
    use Family::*;
    vec![
        (
            "fuse-dequant",
            vec![
                r(
                    "fuse-dequant-rhs",
                    DequantFused,
                    &["matmul"],
                    fuse_dequant_rhs as ApplyFn,
                ),
                r(
                    "fuse-dequant-lhs",
                    DequantFused,
                    &["matmul"],
                    fuse_dequant_lhs,
                ),
                r("fuse-bias", DequantFused, &["add"], fuse_bias),
                r(
                    "fuse-activation",
                    DequantFused,
                    &["relu", "gelu", "silu"],
                    fuse_activation,
                ),
                r("fuse-requant", DequantFused, &["quantize"], fuse_requant),
            ],
        ),
        (
            "qdq-cleanup",
            vec![
                r(
                    "quantize-dequantize-exact",
                    Cleanup,
                    &["quantize"],
                    quantize_of_dequantize,
                ),
                r(
                    "requantize-identity",
                    Cleanup,
                    &["requantize"],
                    requantize_identity,
                ),
                r("cast-identity", Cleanup, &["cast"], cast_identity),
                r("cast-int-chain", Cleanup, &["cast"], cast_int_chain),
            ],
        ),
        (
            "integer-only",
            vec![r(
                "integer-only-dyadic",
                Dyadic,
                &["quantize"],
                integer_only,
            )],
        ),
        (
            "bit-serial",
            vec![
                r(
                    "int-matmul-to-matmul-int",
                    BitSerial,
                    &["matmul"],
                    int_matmul_to_matmul_int,
                ),
                r("bit-serial-matmul", BitSerial, &["matmul_int"], bit_serial),
            ],
        ),
        (
            "amx",
            vec![r(
                "amx-schedule",
                Amx,
                &["matmul", "matmul_int"],
                amx_schedule,
            )],
        ),
        (
            "mixed-decomposition",
            vec![r("mixed-decompose", Mixed, &["matmul"], mixed_decompose)],
        ),
        (
            "layout",
            vec![
                r(
                    "transpose-through-dequantize",
                    Layout,
                    &["transpose"],
                    transpose_through_dequantize,
                ),
                r(
                    "fold-into-constant",
                    Layout,
                    &["transpose", "relayout", "reshape"],
                    fold_into_constant,
                ),
            ],
        ),
    ]
}

/// The names of every rule set.
pub fn rule_set_names() -> Vec<&'static str> {
    rule_sets().into_iter().map(|(n, _)| n).collect()
}

/// The rules of the named sets, in registry order; an unknown name is an
/// error that lists the known ones.
pub fn select(names: &[String]) -> Result<Vec<Rule>, String> {
    let sets = rule_sets();
    for n in names {
        if !sets.iter().any(|(s, _)| s == n) {
            return Err(format!(
                "unknown rule set '{n}' (known: {})",
                rule_set_names().join(", ")
            ));
        }
    }
    Ok(sets
        .into_iter()
        .filter(|(s, _)| names.iter().any(|n| n == s))
        .flat_map(|(_, rules)| rules)
        .collect())
}
