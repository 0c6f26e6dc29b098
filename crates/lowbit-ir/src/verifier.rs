//! The verifier: checks every op's operand and result counts, element
//! types, shapes and attributes, every type's layout, the def-use order and
//! the function signature, and reports every error at once.
//!
//! Each diagnostic carries the source position of what it is about: the op
//! (from [`Function::op_spans`]), the function header for parameter and
//! output-name errors, or the `return` for undefined outputs. Functions
//! built in memory have no positions, so their diagnostics have none.
//! Messages start with the op name in quotes, MLIR style:
//! `'matmul' op: inner dimensions differ: lhs k = 64, rhs k = 32`.
//! Diagnostics come out sorted by position (unpositioned ones last, in the
//! order they were found).
//!
//! Limits: a value's type is checked once, where it is defined (parameter or
//! op result), so an output's type is covered by its definition. Layouts of
//! operands and results are not constrained against each other (ops compute
//! on logical values; `relayout` is the op that exists to change one), only
//! checked to fit their own shape and element type. Type checks of an op are
//! skipped when its operand or result counts are wrong, when an operand is
//! not a value of the function at all, or when one of its types is itself
//! invalid, so one mistake does not cascade into many messages.

use crate::diag::{Diagnostic, Span};
use crate::function::{Function, Module, Op, Value, ValueDef};
use crate::ops::{BinaryOp, Granularity, IntSchedule, OpKind, QRequant, UnaryOp};
use crate::types::{PackOrder, TensorType};
use lowbit_numerics::{ElemType, Rounding};
use std::collections::{HashMap, HashSet};
use std::fmt::Display;

/// The largest element count a tensor may have (2^40).
pub const MAX_ELEMENTS: u64 = 1 << 40;

/// Verifies a module; on failure returns every error found, sorted by
/// position.
pub fn verify_module(m: &Module) -> Result<(), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut names: HashSet<&str> = HashSet::new();
    for f in &m.functions {
        if !names.insert(f.name.as_str()) {
            diags.push(Diagnostic::error(
                f.span,
                format!("'func' @{0}: redefinition of function @{0}", f.name),
            ));
        }
        diags.extend(verify_function(f));
    }
    sort_by_position(&mut diags);
    if diags.is_empty() {
        Ok(())
    } else {
        Err(diags)
    }
}

/// Verifies one function; returns every error found (empty when valid),
/// sorted by position.
pub fn verify_function(f: &Function) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let defined = check_signature_and_body(f, &mut diags);
    check_outputs(f, &defined, &mut diags);
    sort_by_position(&mut diags);
    diags
}

/// Stable sort: positioned diagnostics by (line, col), unpositioned last.
fn sort_by_position(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| (d.span.is_none(), d.span));
}

/// Checks the parameters, then every op in order; returns the set of values
/// defined by the end of the function.
fn check_signature_and_body(f: &Function, diags: &mut Vec<Diagnostic>) -> HashSet<Value> {
    let func_err = |diags: &mut Vec<Diagnostic>, msg: String| {
        diags.push(Diagnostic::error(
            f.span,
            format!("'func' @{}: {msg}", f.name),
        ))
    };
    let mut defined = HashSet::new();
    let mut names: HashSet<&str> = HashSet::new();
    for (i, (name, v)) in f.params.iter().enumerate() {
        if !names.insert(name.as_str()) {
            func_err(diags, format!("redefinition of %{name} (parameter #{i})"));
        }
        if !f.has_value(*v) || f.value(*v).def != ValueDef::Param(i) {
            func_err(
                diags,
                format!("parameter '{name}' is not recorded as parameter #{i}"),
            );
            continue;
        }
        defined.insert(*v);
        let (problems, _) = type_problems(f.ty(*v));
        for p in problems {
            func_err(diags, format!("parameter '{name}': {p}"));
        }
    }
    let position: HashMap<Op, usize> = f.ops().iter().enumerate().map(|(i, &o)| (o, i)).collect();
    for &op in f.ops() {
        let d = f.op(op);
        let mut cx = OpCx {
            name: d.kind.name(),
            span: f.op_spans.get(&op).copied(),
            diags,
        };
        let mut typeable = true;
        for (i, &v) in d.operands.iter().enumerate() {
            if !f.has_value(v) {
                cx.err(format!("operand #{i} is not a value of this function"));
                typeable = false;
            } else if !defined.contains(&v) {
                let why = match f.value(v).def {
                    ValueDef::Result(def, _) => match position.get(&def) {
                        Some(_) => "is used before its definition",
                        None => "is defined by an op that is no longer in the function",
                    },
                    ValueDef::Param(_) => "is not defined in this function",
                };
                cx.err(format!("operand #{i} {why}"));
            }
        }
        let mut results_ok = true;
        for (i, &r) in d.results.iter().enumerate() {
            if !f.has_value(r) {
                cx.err(format!("result #{i} is not a value of this function"));
                results_ok = false;
                continue;
            }
            if f.value(r).def != ValueDef::Result(op, i) {
                cx.err(format!("result #{i} is recorded as defined elsewhere"));
            }
            if !defined.insert(r) {
                cx.err(format!("result #{i} is defined twice"));
            }
            let (problems, sane) = type_problems(f.ty(r));
            for p in problems {
                cx.err(format!("result type: {p}"));
            }
            results_ok &= sane;
        }
        let (lo, hi) = d.kind.operand_range();
        let n = d.operands.len();
        if n < lo || n > hi {
            let want = if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo} to {hi}")
            };
            let s = if hi == 1 { "" } else { "s" };
            cx.err(format!("expects {want} operand{s}, got {n}"));
            typeable = false;
        }
        if d.results.len() != 1 {
            cx.err(format!("expects 1 result, got {}", d.results.len()));
            typeable = false;
        }
        if !typeable || !results_ok {
            continue;
        }
        let operands: Vec<&TensorType> = d.operands.iter().map(|&v| f.ty(v)).collect();
        // An operand whose own type is invalid was reported at its definition.
        if operands.iter().any(|t| !type_problems(t).1) {
            continue;
        }
        check_op(&mut cx, &d.kind, &operands, f.ty(d.results[0]));
    }
    defined
}

fn check_outputs(f: &Function, defined: &HashSet<Value>, diags: &mut Vec<Diagnostic>) {
    if f.outputs.is_empty() {
        diags.push(Diagnostic::error(
            f.span,
            format!("'func' @{}: function has no outputs", f.name),
        ));
    }
    let mut names: HashSet<&str> = HashSet::new();
    for (name, v) in &f.outputs {
        if !names.insert(name.as_str()) {
            diags.push(Diagnostic::error(
                f.span,
                format!("'func' @{}: duplicate output name '{name}'", f.name),
            ));
        }
        if !defined.contains(v) {
            let why = if f.has_value(*v) {
                "is not defined by any op or parameter of this function"
            } else {
                "is not a value of this function"
            };
            diags.push(Diagnostic::error(
                f.return_span.or(f.span),
                format!("'return' op: output '{name}' {why}"),
            ));
        }
    }
}

/// Problems with a type on its own, and whether its shape is small enough
/// for the shape arithmetic of op checks to be safe.
fn type_problems(ty: &TensorType) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    if let ElemType::Int { bits, .. } = ty.elem {
        if !(1..=64).contains(&bits) {
            out.push(format!(
                "integer width {bits} is out of range (1 to 64 bits)"
            ));
            return (out, false);
        }
    }
    match element_count(&ty.shape) {
        Some(n) if n <= MAX_ELEMENTS => {}
        _ => {
            out.push(format!(
                "{ty} has more than 2^40 elements (shape {:?})",
                ty.shape
            ));
            return (out, false);
        }
    }
    if let Err(e) = ty.layout.check_fits(ty.elem, &ty.shape) {
        out.push(format!("layout {} does not fit {ty}: {e}", ty.layout));
    }
    (out, true)
}

/// The element count, or `None` if it overflows `u64`.
fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

/// Numpy-style broadcast of two shapes (right-aligned; 1 stretches).
pub fn broadcast_shapes(a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0u64; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = dim_from_right(a, rank - 1 - i);
        let db = dim_from_right(b, rank - 1 - i);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Dim `k` counted from the right (0 = last), or 1 past the rank.
fn dim_from_right(shape: &[u64], k: usize) -> u64 {
    if k < shape.len() {
        shape[shape.len() - 1 - k]
    } else {
        1
    }
}

/// Resolves a possibly negative axis against a rank.
fn resolve_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// The op being checked and where its diagnostics go.
struct OpCx<'a> {
    name: &'static str,
    span: Option<Span>,
    diags: &'a mut Vec<Diagnostic>,
}

impl OpCx<'_> {
    fn err(&mut self, msg: impl Display) {
        self.diags.push(Diagnostic::error(
            self.span,
            format!("'{}' op: {msg}", self.name),
        ));
    }

    fn expect_float(&mut self, what: &str, ty: &TensorType) {
        if !ty.elem.is_float() {
            self.err(format!(
                "{what} must have a float element type, got {}",
                ty.elem
            ));
        }
    }

    /// Result has the operand's shape and element type (element-wise ops).
    fn expect_same_shape_and_elem(&mut self, x: &TensorType, res: &TensorType) {
        self.expect_same_shape("operand", x, res);
        if res.elem != x.elem {
            self.err(format!(
                "result element type {} differs from operand element type {}",
                res.elem, x.elem
            ));
        }
    }

    fn expect_same_shape(&mut self, what: &str, x: &TensorType, res: &TensorType) {
        if res.shape != x.shape {
            self.err(format!(
                "result shape {:?} differs from {what} shape {:?}",
                res.shape, x.shape
            ));
        }
    }

    fn expect_axis(&mut self, axis: i64, rank: usize) -> Option<usize> {
        let a = resolve_axis(axis, rank);
        if a.is_none() {
            self.err(format!("axis {axis} is out of range for rank {rank}"));
        }
        a
    }

    /// Checks a scale (and zero point) against the quantized tensor `data`.
    fn check_scale(
        &mut self,
        label: &str,
        g: &Granularity,
        data: &TensorType,
        scale: &TensorType,
        zp: Option<(&TensorType, ElemType, &str)>,
    ) {
        let zp_label = format!("{label} zero point");
        let scale_label = format!("{label} scale");
        let (zp_label, scale_label) = if label.is_empty() {
            ("zero point".to_string(), "scale".to_string())
        } else {
            (zp_label, scale_label)
        };
        if !scale.elem.is_float() {
            self.err(format!(
                "{scale_label} must have a float element type, got {}",
                scale.elem
            ));
        }
        if let Some(want) = self.expected_scale_shape(&scale_label, g, &data.shape) {
            let per_tensor_one = *g == Granularity::PerTensor && scale.shape == [1];
            if scale.shape != want && !per_tensor_one {
                let want = if *g == Granularity::PerTensor {
                    "[] or [1]".to_string()
                } else {
                    format!("{want:?}")
                };
                self.err(format!(
                    "{scale_label} shape {:?} does not match {} for a tensor of shape {:?}: expected {want}",
                    scale.shape,
                    describe(g),
                    data.shape
                ));
            }
        }
        if let Some((zp, want_elem, owner)) = zp {
            if zp.shape != scale.shape {
                self.err(format!(
                    "{zp_label} shape {:?} differs from {scale_label} shape {:?}",
                    zp.shape, scale.shape
                ));
            }
            if zp.elem != want_elem {
                self.err(format!(
                    "{zp_label} element type {} differs from the {owner} element type {want_elem}",
                    zp.elem
                ));
            }
        }
    }

    /// The scale shape a granularity needs, after reporting what is wrong
    /// with the granularity itself.
    fn expected_scale_shape(
        &mut self,
        scale_label: &str,
        g: &Granularity,
        shape: &[u64],
    ) -> Option<Vec<u64>> {
        let rank = shape.len();
        let mut ok = true;
        match g {
            Granularity::PerTensor => {}
            Granularity::PerAxis { axis } => {
                if *axis as usize >= rank {
                    self.err(format!(
                        "{scale_label}: quantization axis {axis} is out of range for rank {rank}"
                    ));
                    ok = false;
                }
            }
            Granularity::Blocked { blocks } => {
                if blocks.is_empty() {
                    self.err(format!("{scale_label}: blocked granularity names no axis"));
                    ok = false;
                }
                let mut seen = HashSet::new();
                for &(axis, size) in blocks {
                    if axis as usize >= rank {
                        self.err(format!(
                            "{scale_label}: block axis {axis} is out of range for rank {rank}"
                        ));
                        ok = false;
                    }
                    if size == 0 {
                        self.err(format!(
                            "{scale_label}: block size along axis {axis} must be positive, got 0"
                        ));
                        ok = false;
                    }
                    if !seen.insert(axis) {
                        self.err(format!("{scale_label}: block axis {axis} is listed twice"));
                        ok = false;
                    }
                }
            }
        }
        if !ok {
            return None;
        }
        match g.scale_shape(shape) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(format!("{scale_label}: {e}"));
                None
            }
        }
    }

    /// Float operands need a float result; integral operands an integer one.
    /// Returns whether the operands are integral (when consistent).
    fn check_product_classes(
        &mut self,
        a: &TensorType,
        b: &TensorType,
        res: &TensorType,
    ) -> Option<bool> {
        if a.elem.is_float() != b.elem.is_float() {
            self.err(format!(
                "operands must be both float or both integral, got {} and {}",
                a.elem, b.elem
            ));
            return None;
        }
        if a.elem.is_float() && !res.elem.is_float() {
            self.err(format!(
                "float operands need a float result, got {}",
                res.elem
            ));
        }
        if a.elem.is_integral() && !res.elem.is_int() {
            self.err(format!(
                "integral operands need an integer result, got {}",
                res.elem
            ));
        }
        Some(a.elem.is_integral())
    }
}

fn describe(g: &Granularity) -> String {
    match g {
        Granularity::PerTensor => "per-tensor granularity".into(),
        Granularity::PerAxis { axis } => format!("per-axis granularity (axis {axis})"),
        Granularity::Blocked { blocks } => {
            let b: Vec<String> = blocks
                .iter()
                .map(|(a, s)| format!("axis {a} block {s}"))
                .collect();
            format!("blocked granularity ({})", b.join(", "))
        }
    }
}

/// A stochastic op keeps its unused `rounding` field at the default (so
/// equal ops compare equal), and has something to round: a float operand
/// or a float result (integer-to-integer casts are exact).
fn check_stochastic(
    cx: &mut OpCx,
    rounding: Rounding,
    stochastic: bool,
    x: &TensorType,
    res: &TensorType,
) {
    if !stochastic {
        return;
    }
    if rounding != Rounding::NearestEven {
        cx.err(format_args!(
            "rounding = stochastic replaces the rounding mode, but the op also carries rounding = {rounding}"
        ));
    }
    if !x.elem.is_float() && !res.elem.is_float() {
        cx.err(format_args!(
            "stochastic rounding of {} to {} has nothing to round (both are integral)",
            x.elem, res.elem
        ));
    }
}

fn check_op(cx: &mut OpCx, kind: &OpKind, ops: &[&TensorType], res: &TensorType) {
    match kind {
        OpKind::Constant(data) => check_constant(cx, data.bytes(), res),
        OpKind::Quantize {
            granularity,
            rounding,
            stochastic,
            ..
        } => {
            let x = ops[0];
            check_stochastic(cx, *rounding, stochastic.is_some(), x, res);
            cx.expect_float("input", x);
            let zp = ops.get(2).map(|z| (*z, res.elem, "result"));
            cx.check_scale("", granularity, x, ops[1], zp);
            cx.expect_same_shape("input", x, res);
        }
        OpKind::Dequantize { granularity } => {
            let q = ops[0];
            let zp = ops.get(2).map(|z| (*z, q.elem, "quantized input"));
            cx.check_scale("", granularity, q, ops[1], zp);
            cx.expect_float("result", res);
            cx.expect_same_shape("input", q, res);
        }
        OpKind::Requantize {
            in_granularity,
            out_granularity,
            ..
        } => {
            let q = ops[0];
            cx.check_scale(
                "input",
                in_granularity,
                q,
                ops[1],
                Some((ops[2], q.elem, "quantized input")),
            );
            cx.check_scale(
                "output",
                out_granularity,
                q,
                ops[3],
                Some((ops[4], res.elem, "result")),
            );
            cx.expect_same_shape("input", q, res);
        }
        OpKind::Cast {
            rounding,
            stochastic,
            ..
        } => {
            check_stochastic(cx, *rounding, stochastic.is_some(), ops[0], res);
            cx.expect_same_shape("operand", ops[0], res)
        }
        OpKind::MatMul { .. } => check_matmul(cx, ops[0], ops[1], res),
        OpKind::Gemm {
            trans_a,
            trans_b,
            alpha,
            beta,
            ..
        } => check_gemm(cx, ops, (*trans_a, *trans_b), (*alpha, *beta), res),
        OpKind::Binary { op, .. } => {
            let (a, b) = (ops[0], ops[1]);
            if *op == BinaryOp::Pow {
                cx.expect_float("base", a);
            }
            if a.elem != b.elem {
                cx.err(format!(
                    "operand element types differ: lhs {}, rhs {}",
                    a.elem, b.elem
                ));
            } else if res.elem != a.elem {
                cx.err(format!(
                    "result element type {} differs from operand element type {}",
                    res.elem, a.elem
                ));
            }
            match broadcast_shapes(&a.shape, &b.shape) {
                None => cx.err(format!(
                    "operand shapes {:?} and {:?} do not broadcast",
                    a.shape, b.shape
                )),
                Some(s) if s != res.shape => cx.err(format!(
                    "result shape {:?} differs from the broadcast shape {s:?}",
                    res.shape
                )),
                Some(_) => {}
            }
        }
        OpKind::Relu => {
            // max(x, 0) needs a zero; b1 holds only -1 and +1.
            if ops[0].elem == ElemType::Bipolar {
                cx.err("operand must be a float or integer, got b1 (it has no zero)");
            }
            cx.expect_same_shape_and_elem(ops[0], res);
        }
        OpKind::Gelu { .. } | OpKind::Silu => {
            cx.expect_float("operand", ops[0]);
            cx.expect_same_shape_and_elem(ops[0], res);
        }
        OpKind::Softmax { axis } => {
            cx.expect_float("operand", ops[0]);
            cx.expect_axis(*axis, ops[0].rank());
            cx.expect_same_shape_and_elem(ops[0], res);
        }
        OpKind::LayerNorm { axis, epsilon } | OpKind::RmsNorm { axis, epsilon } => {
            let x = ops[0];
            cx.expect_float("input", x);
            if !(epsilon.is_finite() && *epsilon >= 0.0) {
                cx.err(format!(
                    "epsilon must be a finite non-negative number, got {epsilon}"
                ));
            }
            let axis = cx.expect_axis(*axis, x.rank());
            for (what, p) in ["gamma", "beta"].iter().zip(&ops[1..]) {
                cx.expect_float(what, p);
                if let Some(a) = axis {
                    if p.shape[..] != x.shape[a..] {
                        cx.err(format!(
                            "{what} shape {:?} differs from the normalized dims {:?} of the input",
                            p.shape,
                            &x.shape[a..]
                        ));
                    }
                }
            }
            cx.expect_same_shape_and_elem(x, res);
        }
        OpKind::Reshape => {
            let (from, to) = (ops[0].num_elements(), res.num_elements());
            if from != to {
                cx.err(format!(
                    "reshape changes the element count from {from} ({:?}) to {to} ({:?})",
                    ops[0].shape, res.shape
                ));
            }
            if res.elem != ops[0].elem {
                cx.err(format!(
                    "result element type {} differs from operand element type {}",
                    res.elem, ops[0].elem
                ));
            }
        }
        OpKind::Transpose { perm } => check_transpose(cx, perm, ops[0], res),
        OpKind::Relayout => cx.expect_same_shape_and_elem(ops[0], res),
        OpKind::Unary { op } => {
            if *op != UnaryOp::Neg {
                cx.expect_float("operand", ops[0]);
            } else if ops[0].elem == ElemType::Bipolar {
                cx.err("neg is not defined on b1");
            }
            cx.expect_same_shape_and_elem(ops[0], res);
        }
        OpKind::LogSoftmax { axis } => {
            cx.expect_float("operand", ops[0]);
            cx.expect_axis(*axis, ops[0].rank());
            cx.expect_same_shape_and_elem(ops[0], res);
        }
        OpKind::Reduce { axes, .. } => check_reduce(cx, axes, ops[0], res),
        OpKind::AbsMaxScale { block, qmax } => {
            let x = ops[0];
            cx.expect_float("operand", x);
            expect_elem(cx, x, res);
            if *block == 0 || *qmax == 0 {
                cx.err(format!(
                    "block ({block}) and qmax ({qmax}) must be positive"
                ));
            }
            match x.shape.split_last() {
                None => cx.err(
                    "the operand must have at least one dimension (blocks run along the last)",
                ),
                Some((&k, lead)) => {
                    let mut want = lead.to_vec();
                    want.push(k.div_ceil((*block).max(1)));
                    if res.shape != want {
                        cx.err(format!(
                            "result shape {:?} differs from the expected {want:?} (one scale per block of {block} along the last axis)",
                            res.shape
                        ));
                    }
                }
            }
        }
        OpKind::Concat { axis } => check_concat(cx, *axis, ops, res),
        OpKind::Slice { starts, steps } => check_slice(cx, starts, steps, ops[0], res),
        OpKind::Gather { axis } => check_gather(cx, *axis, ops[0], ops[1], res),
        OpKind::Broadcast => {
            expect_elem(cx, ops[0], res);
            if broadcast_shapes(&ops[0].shape, &res.shape).as_deref() != Some(&res.shape[..]) {
                cx.err(format!(
                    "operand shape {:?} does not broadcast to the result shape {:?}",
                    ops[0].shape, res.shape
                ));
            }
        }
        OpKind::MarkOutliers { columns } => {
            cx.expect_same_shape_and_elem(ops[0], res);
            let dim = ops[0].shape.last().copied().unwrap_or(0);
            if columns.is_empty() {
                cx.err("columns must name at least one column");
            } else if columns.windows(2).any(|w| w[0] >= w[1]) {
                cx.err(format!("columns {columns:?} must be strictly increasing"));
            } else if let Some(c) = columns.iter().find(|&&c| c >= dim) {
                cx.err(format!(
                    "column {c} is out of range for the last dimension {dim} of shape {:?}",
                    ops[0].shape
                ));
            }
        }
        OpKind::Conv2d {
            strides,
            pads,
            dilations,
            group,
            ..
        } => check_conv2d(cx, ops, (*strides, *pads, *dilations, *group), res),
        OpKind::QMatMul {
            granularity,
            dequant_type,
            has_zero_point,
            has_bias,
            weight_lhs,
            requant,
            ..
        } => check_qmatmul(
            cx,
            ops,
            (granularity, *dequant_type),
            (*has_zero_point, *has_bias, *weight_lhs),
            requant.as_ref(),
            res,
        ),
        OpKind::MatMulInt { schedule, .. } => check_matmul_int(cx, ops, res, *schedule),
        OpKind::RequantDyadic {
            multiplier,
            shift,
            axis,
            ..
        } => {
            let acc = ops[0];
            check_dyadic_channels(cx, multiplier, shift, *axis, acc);
            if !acc.elem.is_int() {
                cx.err(format!(
                    "accumulator must have an integer element type, got {}",
                    acc.elem
                ));
            }
            if !res.elem.is_int() {
                cx.err(format!(
                    "result must have an integer element type, got {}",
                    res.elem
                ));
            }
            if let Some(zp) = ops.get(1) {
                check_scalar_zero_point(cx, "zero point", zp, res.elem, "result");
            }
            cx.expect_same_shape("accumulator", acc, res);
        }
    }
}

fn expect_elem(cx: &mut OpCx, x: &TensorType, res: &TensorType) {
    if res.elem != x.elem {
        cx.err(format!(
            "result element type {} differs from operand element type {}",
            res.elem, x.elem
        ));
    }
}

fn check_reduce(cx: &mut OpCx, axes: &[u32], x: &TensorType, res: &TensorType) {
    expect_elem(cx, x, res);
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        cx.err(format!("axes {axes:?} must be sorted and distinct"));
    }
    let mut want = x.shape.clone();
    for &a in axes {
        match want.get_mut(a as usize) {
            Some(d) => *d = 1,
            None => {
                cx.err(format!("axis {a} is out of range for rank {}", x.rank()));
                return;
            }
        }
    }
    if res.shape != want {
        cx.err(format!(
            "result shape {:?} differs from the expected {want:?} (reduced dims are kept as 1)",
            res.shape
        ));
    }
}

fn check_concat(cx: &mut OpCx, axis: i64, ops: &[&TensorType], res: &TensorType) {
    let first = ops[0];
    let Some(ax) = cx.expect_axis(axis, first.rank()) else {
        return;
    };
    let mut want = first.shape.clone();
    for (i, t) in ops.iter().enumerate().skip(1) {
        if t.elem != first.elem {
            cx.err(format!(
                "operand #{i} element type {} differs from operand #0 element type {}",
                t.elem, first.elem
            ));
        }
        let same_rest = t.rank() == first.rank()
            && (0..t.rank()).all(|d| d == ax || t.shape[d] == first.shape[d]);
        if !same_rest {
            cx.err(format!(
                "operand #{i} shape {:?} differs from operand #0 shape {:?} outside axis {ax}",
                t.shape, first.shape
            ));
            return;
        }
        want[ax] += t.shape[ax];
    }
    expect_elem(cx, first, res);
    if res.shape != want {
        cx.err(format!(
            "result shape {:?} differs from the joined shape {want:?}",
            res.shape
        ));
    }
}

fn check_slice(cx: &mut OpCx, starts: &[u64], steps: &[i64], x: &TensorType, res: &TensorType) {
    expect_elem(cx, x, res);
    let rank = x.rank();
    if starts.len() != rank || steps.len() != rank || res.rank() != rank {
        cx.err(format!(
            "starts, steps and the result need one entry per dim of the rank-{rank} operand"
        ));
        return;
    }
    for d in 0..rank {
        let (n, dim, start, step) = (res.shape[d], x.shape[d], starts[d], steps[d]);
        if step == 0 {
            cx.err(format!("step along dim {d} is 0"));
            continue;
        }
        if n == 0 {
            continue;
        }
        let last = start as i128 + (n as i128 - 1) * step as i128;
        if start >= dim || last < 0 || last >= dim as i128 {
            cx.err(format!(
                "dim {d}: {n} elements from {start} in steps of {step} leave the operand dim of size {dim}"
            ));
        }
    }
}

fn check_gather(cx: &mut OpCx, axis: i64, data: &TensorType, idx: &TensorType, res: &TensorType) {
    expect_elem(cx, data, res);
    if !idx.elem.is_int() {
        cx.err(format!(
            "indices must have an integer element type, got {}",
            idx.elem
        ));
    }
    let Some(ax) = cx.expect_axis(axis, data.rank()) else {
        return;
    };
    let mut want = data.shape[..ax].to_vec();
    want.extend(&idx.shape);
    want.extend(&data.shape[ax + 1..]);
    if res.shape != want {
        cx.err(format!(
            "result shape {:?} differs from the expected {want:?}",
            res.shape
        ));
    }
}

type ConvAttrs = ([u64; 2], [u64; 4], [u64; 2], u64);

fn check_conv2d(cx: &mut OpCx, ops: &[&TensorType], attrs: ConvAttrs, res: &TensorType) {
    let (strides, pads, dilations, group) = attrs;
    let (x, w) = (ops[0], ops[1]);
    let integral = cx.check_product_classes(x, w, res);
    if x.rank() != 4 || w.rank() != 4 {
        cx.err(format!(
            "input and weight must be 4-D, got shapes {:?} and {:?}",
            x.shape, w.shape
        ));
        return;
    }
    if strides.contains(&0) || dilations.contains(&0) || group == 0 {
        cx.err("strides, dilations and group must be positive");
        return;
    }
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (m, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    if c % group != 0 || m % group != 0 || cg.checked_mul(group) != Some(c) {
        cx.err(format!(
            "channels do not match: input has {c}, weight {m}x{cg} per group, group = {group}"
        ));
    }
    if let Some(b) = ops.get(2) {
        if b.shape != [m] {
            cx.err(format!("bias shape {:?} differs from [{m}]", b.shape));
        }
        if integral.is_some_and(|i| i != b.elem.is_integral()) {
            cx.err(format!(
                "bias element type {} does not match the input class",
                b.elem
            ));
        }
    }
    let out = |size: u64, k: u64, p0: u64, p1: u64, s: u64, d: u64| {
        let span = d.checked_mul(k.max(1) - 1)?.checked_add(1)?;
        size.checked_add(p0)?
            .checked_add(p1)?
            .checked_sub(span)
            .map(|v| v / s + 1)
    };
    match (
        out(h, kh, pads[0], pads[2], strides[0], dilations[0]),
        out(wd, kw, pads[1], pads[3], strides[1], dilations[1]),
    ) {
        (Some(oh), Some(ow)) if kh > 0 && kw > 0 => {
            if res.shape != [n, m, oh, ow] {
                cx.err(format!(
                    "result shape {:?} differs from the expected {:?}",
                    res.shape,
                    [n, m, oh, ow]
                ));
            }
        }
        _ => cx.err(format!(
            "kernel {kh}x{kw} (dilated) is larger than the padded input {h}x{wd}"
        )),
    }
}

/// One multiplier and shift per channel of `axis` (one in all without it),
/// each in the range the interpreter computes exactly.
fn check_dyadic_channels(
    cx: &mut OpCx,
    multiplier: &[i64],
    shift: &[u32],
    axis: Option<u32>,
    acc: &TensorType,
) {
    let want = match axis {
        None => Some(1),
        Some(a) if (a as usize) < acc.rank() => Some(acc.shape[a as usize]),
        Some(a) => {
            cx.err(format!(
                "axis {a} is out of range for the rank-{} accumulator",
                acc.rank()
            ));
            None
        }
    };
    for (what, n) in [("multipliers", multiplier.len()), ("shifts", shift.len())] {
        if want.is_some_and(|w| w != n as u64) {
            cx.err(format!(
                "{n} {what}, but the channel count is {}",
                want.unwrap_or(0)
            ));
        }
    }
    if let Some(m) = multiplier.iter().find(|m| !(0..1i64 << 62).contains(*m)) {
        cx.err(format!("multiplier {m} is outside [0, 2^62)"));
    }
    if let Some(s) = shift.iter().find(|s| **s > 126) {
        cx.err(format!("shift {s} is larger than 126"));
    }
}

/// A per-tensor zero point: shape `[]` or `[1]` and the given element type.
fn check_scalar_zero_point(
    cx: &mut OpCx,
    label: &str,
    zp: &TensorType,
    want: ElemType,
    owner: &str,
) {
    if zp.num_elements() != 1 || zp.rank() > 1 {
        cx.err(format!(
            "{label} must be per-tensor (shape [] or [1]), got {:?}",
            zp.shape
        ));
    }
    if zp.elem != want {
        cx.err(format!(
            "{label} element type {} differs from the {owner} element type {want}",
            zp.elem
        ));
    }
}

fn check_qmatmul(
    cx: &mut OpCx,
    ops: &[&TensorType],
    (granularity, dequant_type): (&Granularity, ElemType),
    (has_zp, has_bias, weight_lhs): (bool, bool, bool),
    requant: Option<&QRequant>,
    quantized: &TensorType,
) {
    let (x, w, scale) = (ops[0], ops[1], ops[2]);
    cx.expect_float("activation x", x);
    if !dequant_type.is_float() {
        cx.err(format!(
            "dequant_type must be a float type, got {dequant_type}"
        ));
    }
    // With a requantize epilogue the product, bias and activation are
    // typed as the float `requant_type`, and the result is what
    // `quantize` of that makes.
    let float_res;
    let res = match requant {
        None => quantized,
        Some(rq) => {
            if !rq.float_type.is_float() {
                cx.err(format!(
                    "requant_type must be a float type, got {}",
                    rq.float_type
                ));
            }
            float_res = quantized.with_elem(rq.float_type);
            let n = 3 + has_zp as usize + has_bias as usize;
            let zp = rq
                .has_zero_point
                .then(|| (ops[n + 1], quantized.elem, "result"));
            cx.check_scale("output", &rq.granularity, &float_res, ops[n], zp);
            &float_res
        }
    };
    cx.expect_float("result", res);
    let zp = has_zp.then(|| (ops[3], w.elem, "weight"));
    cx.check_scale("weight", granularity, w, scale, zp);
    let deq = w.with_elem(dequant_type);
    if weight_lhs {
        check_matmul(cx, &deq, x, res);
    } else {
        check_matmul(cx, x, &deq, res);
    }
    if has_bias {
        let bias = ops[3 + has_zp as usize];
        if bias.elem != res.elem {
            cx.err(format!(
                "bias element type {} differs from the result element type {}",
                bias.elem, res.elem
            ));
        }
        if broadcast_shapes(&bias.shape, &res.shape).as_deref() != Some(&res.shape[..]) {
            cx.err(format!(
                "bias shape {:?} does not broadcast to the result shape {:?}",
                bias.shape, res.shape
            ));
        }
    }
}

fn check_matmul_int(cx: &mut OpCx, ops: &[&TensorType], res: &TensorType, s: IntSchedule) {
    let (a, b) = (ops[0], ops[1]);
    if s == IntSchedule::Amx {
        // AMX-INT8 tiles hold bytes: activations are bytes; weights are
        // bytes or 4-bit codes (the CPU kernel splits those into byte
        // tiles); other widths have no tile form.
        if !matches!(a.elem, ElemType::I8 | ElemType::U8) {
            cx.err(format!(
                "schedule amx multiplies 8-bit activations: lhs must be i8 or u8, got {}",
                a.elem
            ));
        }
        let nibble = ElemType::Int {
            bits: 4,
            signed: true,
        };
        let unibble = ElemType::Int {
            bits: 4,
            signed: false,
        };
        if !(matches!(b.elem, ElemType::I8 | ElemType::U8) || b.elem == nibble || b.elem == unibble)
        {
            cx.err(format!(
                "schedule amx multiplies 8-bit or 4-bit weights: rhs must be i8, u8, i4 or u4, got {}",
                b.elem
            ));
        }
    }
    for (what, t) in [("lhs", a), ("rhs", b)] {
        if !t.elem.is_int() {
            cx.err(format!(
                "{what} must have an integer element type, got {}",
                t.elem
            ));
        }
    }
    if !res.elem.is_int() {
        cx.err(format!(
            "result must have an integer element type, got {}",
            res.elem
        ));
    }
    match ops.len() {
        2 => {}
        4 => {
            check_scalar_zero_point(cx, "lhs zero point", ops[2], a.elem, "lhs");
            check_scalar_zero_point(cx, "rhs zero point", ops[3], b.elem, "rhs");
        }
        n => cx.err(format!(
            "expects 2 operands, or 4 with both zero points, got {n}"
        )),
    }
    check_matmul(cx, a, b, res);
}

fn check_constant(cx: &mut OpCx, bytes: &[u8], res: &TensorType) {
    // A layout that does not fit has no defined byte size; it was reported.
    if res.layout.check_fits(res.elem, &res.shape).is_err() {
        return;
    }
    let need = res.byte_size();
    let got = bytes.len() as u64;
    if got != need {
        cx.err(format!("payload has {got} bytes but {res} needs {need}"));
    } else if has_nonzero_padding(res, bytes) {
        cx.err("payload has nonzero padding bits after the last element");
    }
}

/// Whether any bit after the last element of a packed stream (or of each
/// bit-plane row) is set. Payloads are canonical so that equal constants
/// have equal bytes.
fn has_nonzero_padding(ty: &TensorType, bytes: &[u8]) -> bool {
    let pad_mask = |used_bits: u64| -> u8 {
        let keep = ((1u16 << used_bits) - 1) as u8;
        match ty.layout.pack {
            PackOrder::LsbFirst => !keep,
            PackOrder::MsbFirst => !(keep << (8 - used_bits)),
        }
    };
    let bits = ty.elem.bits() as u64;
    if ty.layout.bit_planes {
        let row = ty.layout.plane_row(&ty.shape);
        let used = row % 8;
        if used == 0 {
            return false;
        }
        let plane_bytes = row.div_ceil(8) as usize;
        let mask = pad_mask(used);
        bytes
            .chunks(plane_bytes)
            .any(|plane| plane.last().is_some_and(|b| b & mask != 0))
    } else {
        let used = ty.num_elements() * bits % 8;
        used != 0 && bytes.last().is_some_and(|b| b & pad_mask(used) != 0)
    }
}

fn check_matmul(cx: &mut OpCx, a: &TensorType, b: &TensorType, res: &TensorType) {
    cx.check_product_classes(a, b, res);
    if a.rank() < 2 || b.rank() < 2 {
        cx.err(format!(
            "operands must have rank 2 or more (reshape vectors first), got shapes {:?} and {:?}",
            a.shape, b.shape
        ));
        return;
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k) = (a.shape[ra - 2], a.shape[ra - 1]);
    let (k2, n) = (b.shape[rb - 2], b.shape[rb - 1]);
    if k != k2 {
        cx.err(format!(
            "inner dimensions differ: lhs k = {k}, rhs k = {k2}"
        ));
    }
    let (ba, bb) = (&a.shape[..ra - 2], &b.shape[..rb - 2]);
    match broadcast_shapes(ba, bb) {
        None => cx.err(format!(
            "batch dimensions {ba:?} and {bb:?} do not broadcast"
        )),
        Some(mut want) => {
            want.extend([m, n]);
            if res.shape != want {
                cx.err(format!(
                    "result shape {:?} differs from the expected {want:?}",
                    res.shape
                ));
            }
        }
    }
}

fn check_gemm(
    cx: &mut OpCx,
    ops: &[&TensorType],
    (trans_a, trans_b): (bool, bool),
    (alpha, beta): (f64, f64),
    res: &TensorType,
) {
    let (a, b, c) = (ops[0], ops[1], ops.get(2));
    let integral = cx.check_product_classes(a, b, res);
    if let (Some(c), Some(integral)) = (c, integral) {
        if c.elem.is_integral() != integral {
            let class = if integral { "integral" } else { "float" };
            cx.err(format!(
                "bias c must be {class} like a and b, got {}",
                c.elem
            ));
        }
    }
    if !alpha.is_finite() || !beta.is_finite() {
        cx.err(format!(
            "alpha and beta must be finite, got alpha = {alpha}, beta = {beta}"
        ));
    }
    if integral == Some(true) && (alpha != 1.0 || beta != 1.0) {
        cx.err(format!(
            "integral gemm needs alpha = 1 and beta = 1, got alpha = {alpha:?}, beta = {beta:?}"
        ));
    }
    if a.rank() != 2 || b.rank() != 2 {
        cx.err(format!(
            "a and b must be 2-D, got shapes {:?} and {:?}",
            a.shape, b.shape
        ));
        return;
    }
    let (m, k) = if trans_a {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (k2, n) = if trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if k != k2 {
        cx.err(format!(
            "inner dimensions differ: a k = {k}, b k = {k2} (trans_a = {trans_a}, trans_b = {trans_b})"
        ));
    }
    if let Some(c) = c {
        if broadcast_shapes(&c.shape, &[m, n]).as_deref() != Some(&[m, n][..]) {
            cx.err(format!(
                "bias c shape {:?} does not broadcast to [{m}, {n}]",
                c.shape
            ));
        }
    }
    if res.shape != [m, n] {
        cx.err(format!(
            "result shape {:?} differs from the expected [{m}, {n}]",
            res.shape
        ));
    }
}

fn check_transpose(cx: &mut OpCx, perm: &[u32], x: &TensorType, res: &TensorType) {
    if res.elem != x.elem {
        cx.err(format!(
            "result element type {} differs from operand element type {}",
            res.elem, x.elem
        ));
    }
    let rank = x.rank();
    let mut seen = vec![false; rank];
    let is_perm = perm.len() == rank
        && perm.iter().all(|&p| {
            let fresh = (p as usize) < rank && !seen[p as usize];
            if fresh {
                seen[p as usize] = true;
            }
            fresh
        });
    if !is_perm {
        cx.err(format!(
            "perm {perm:?} is not a permutation of the {rank} operand dims"
        ));
        return;
    }
    let want: Vec<u64> = perm.iter().map(|&p| x.shape[p as usize]).collect();
    if res.shape != want {
        cx.err(format!(
            "result shape {:?} differs from the permuted shape {want:?}",
            res.shape
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::EntityId;
    use crate::ops::{BinaryOp, ConstData};
    use crate::types::Layout;
    use crate::Tensor;
    use lowbit_numerics::{Overflow, Rounding};

    fn ty(shape: &[u64], elem: &str) -> TensorType {
        TensorType::new(shape.to_vec(), elem.parse().unwrap())
    }

    fn messages(f: &Function) -> Vec<String> {
        verify_function(f).into_iter().map(|d| d.message).collect()
    }

    /// Asserts exactly one diagnostic, equal to `want`.
    fn assert_only(f: &Function, want: &str) {
        assert_eq!(messages(f), vec![want.to_string()]);
    }

    fn binary(op: BinaryOp) -> OpKind {
        OpKind::Binary {
            op,
            overflow: Overflow::Wrap,
        }
    }

    fn quantize(granularity: Granularity) -> OpKind {
        OpKind::Quantize {
            granularity,
            rounding: Rounding::NearestEven,
            saturate: true,
            stochastic: None,
        }
    }

    fn blocked(axis: u32, size: u64) -> Granularity {
        Granularity::Blocked {
            blocks: vec![(axis, size)],
        }
    }

    fn gemm(trans_a: bool, trans_b: bool, alpha: f64, beta: f64) -> OpKind {
        OpKind::Gemm {
            trans_a,
            trans_b,
            alpha,
            beta,
            overflow: Overflow::Wrap,
        }
    }

    /// A function with params of the given types, one op, and its result as
    /// the output.
    fn one_op(params: &[TensorType], kind: OpKind, result: TensorType) -> Function {
        let mut f = Function::new("f");
        let vals: Vec<Value> = params
            .iter()
            .enumerate()
            .map(|(i, t)| f.add_param(format!("p{i}"), t.clone()))
            .collect();
        let r = f.push(kind, vals, result);
        f.outputs.push(("y".into(), r));
        f
    }

    fn constant(t: &Tensor, ty: &TensorType) -> OpKind {
        OpKind::constant_of(t, ty)
    }

    #[test]
    fn onnx_import_ops() {
        use crate::ops::{ReduceOp, UnaryOp};
        let f = one_op(
            &[ty(&[2, 3], "f32"), ty(&[2, 1], "f32")],
            OpKind::Concat { axis: 1 },
            ty(&[2, 4], "f32"),
        );
        assert!(messages(&f).is_empty());
        let f = one_op(
            &[ty(&[2, 3], "f32"), ty(&[3, 1], "f32")],
            OpKind::Concat { axis: 1 },
            ty(&[2, 4], "f32"),
        );
        assert_only(
            &f,
            "'concat' op: operand #1 shape [3, 1] differs from operand #0 shape [2, 3] outside axis 1",
        );
        let slice = OpKind::Slice {
            starts: vec![3],
            steps: vec![-2],
        };
        assert!(messages(&one_op(&[ty(&[4], "i4")], slice.clone(), ty(&[2], "i4"))).is_empty());
        assert_only(
            &one_op(&[ty(&[4], "i4")], slice, ty(&[3], "i4")),
            "'slice' op: dim 0: 3 elements from 3 in steps of -2 leave the operand dim of size 4",
        );
        let f = one_op(
            &[ty(&[5, 4], "f16"), ty(&[2, 3], "i64")],
            OpKind::Gather { axis: 0 },
            ty(&[2, 3, 4], "f16"),
        );
        assert!(messages(&f).is_empty());
        let f = one_op(
            &[ty(&[5, 4], "f16"), ty(&[2], "f32")],
            OpKind::Gather { axis: 0 },
            ty(&[2, 4], "f16"),
        );
        assert_only(
            &f,
            "'gather' op: indices must have an integer element type, got f32",
        );
        assert_only(
            &one_op(&[ty(&[3], "f32")], OpKind::Broadcast, ty(&[2, 4], "f32")),
            "'broadcast' op: operand shape [3] does not broadcast to the result shape [2, 4]",
        );
        let red = OpKind::Reduce {
            op: ReduceOp::Min,
            axes: vec![0, 1],
        };
        assert!(messages(&one_op(
            &[ty(&[2, 3], "f32")],
            red.clone(),
            ty(&[1, 1], "f32")
        ))
        .is_empty());
        assert_only(
            &one_op(&[ty(&[2, 3], "f32")], red, ty(&[], "f32")),
            "'reduce_min' op: result shape [] differs from the expected [1, 1] (reduced dims are kept as 1)",
        );
        assert_only(
            &one_op(
                &[ty(&[2], "i8")],
                OpKind::Unary { op: UnaryOp::Tanh },
                ty(&[2], "i8"),
            ),
            "'tanh' op: operand must have a float element type, got i8",
        );
        assert_only(
            &one_op(
                &[ty(&[2], "i8"), ty(&[2], "i8")],
                binary(BinaryOp::Pow),
                ty(&[2], "i8"),
            ),
            "'pow' op: base must have a float element type, got i8",
        );
        let conv = |group| OpKind::Conv2d {
            strides: [2, 2],
            pads: [1, 1, 1, 1],
            dilations: [1, 1],
            group,
            overflow: Overflow::Wrap,
        };
        let f = one_op(
            &[ty(&[1, 4, 5, 5], "f32"), ty(&[6, 2, 3, 3], "f32")],
            conv(2),
            ty(&[1, 6, 3, 3], "f32"),
        );
        assert!(messages(&f).is_empty(), "{:?}", messages(&f));
        let f = one_op(
            &[ty(&[1, 4, 5, 5], "f32"), ty(&[6, 2, 3, 3], "f32")],
            conv(1),
            ty(&[1, 6, 3, 3], "f32"),
        );
        assert_only(
            &f,
            "'conv2d' op: channels do not match: input has 4, weight 6x2 per group, group = 1",
        );
    }

    #[test]
    fn a_valid_function_has_no_diagnostics() {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[4, 64], "f32"));
        let s = f.add_param("s", ty(&[4, 2], "f16"));
        let i4 = ty(&[4, 64], "i4");
        let zp_t = Tensor::from_f64("i4".parse().unwrap(), vec![4, 2], &[1.0; 8]).unwrap();
        let zp = f.push(
            constant(&zp_t, &ty(&[4, 2], "i4")),
            vec![],
            ty(&[4, 2], "i4"),
        );
        let q = f.push(quantize(blocked(1, 32)), vec![x, s, zp], i4.clone());
        let q2 = f.push(
            OpKind::Relayout,
            vec![q],
            i4.clone().with_layout(Layout {
                interleave: Some(32),
                ..Layout::default()
            }),
        );
        let dq = f.push(
            OpKind::Dequantize {
                granularity: blocked(1, 32),
            },
            vec![q2, s, zp],
            ty(&[4, 64], "f32"),
        );
        let w = f.push(
            OpKind::Transpose { perm: vec![1, 0] },
            vec![dq],
            ty(&[64, 4], "f32"),
        );
        let mm = f.push(
            OpKind::MatMul {
                overflow: Overflow::Wrap,
            },
            vec![x, w],
            ty(&[4, 4], "f32"),
        );
        let g = f.push(gemm(false, true, 0.5, 2.0), vec![x, dq], ty(&[4, 4], "f32"));
        let bias = f.add_param("bias", ty(&[4], "f32"));
        let sum = f.push(binary(BinaryOp::Add), vec![mm, bias], ty(&[4, 4], "f32"));
        let sum = f.push(binary(BinaryOp::Mul), vec![sum, g], ty(&[4, 4], "f32"));
        let gamma = f.add_param("gamma", ty(&[4], "f32"));
        let ln = f.push(
            OpKind::LayerNorm {
                axis: -1,
                epsilon: 1e-5,
            },
            vec![sum, gamma, gamma],
            ty(&[4, 4], "f32"),
        );
        let sm = f.push(OpKind::Softmax { axis: 0 }, vec![ln], ty(&[4, 4], "f32"));
        let r = f.push(OpKind::Reshape, vec![sm], ty(&[2, 8], "f32"));
        let c = f.push(
            OpKind::Cast {
                rounding: Rounding::NearestEven,
                saturate: true,
                stochastic: None,
            },
            vec![r],
            ty(&[2, 8], "f8E4M3FN"),
        );
        // Batched matmul with broadcast batch dims and integer operands.
        let a = f.add_param("a", ty(&[3, 1, 2, 5], "i8"));
        let b = f.add_param("b", ty(&[4, 5, 6], "b1"));
        let ab = f.push(
            OpKind::MatMul {
                overflow: Overflow::Saturate,
            },
            vec![a, b],
            ty(&[3, 4, 2, 6], "i32"),
        );
        // Zero-sized dims are allowed.
        let e = f.add_param("e", ty(&[0, 3], "f32"));
        let e = f.push(OpKind::Relu, vec![e], ty(&[0, 3], "f32"));
        f.outputs = vec![("c".into(), c), ("ab".into(), ab), ("e".into(), e)];
        assert_eq!(messages(&f), Vec::<String>::new());
        let m = Module { functions: vec![f] };
        assert_eq!(verify_module(&m), Ok(()));
    }

    #[test]
    fn operand_and_result_counts() {
        let f = one_op(&[ty(&[2], "f32")], binary(BinaryOp::Add), ty(&[2], "f32"));
        assert_only(&f, "'add' op: expects 2 operands, got 1");
        let t = ty(&[2], "f32");
        let f = one_op(
            &[t.clone(), t.clone()],
            quantize(Granularity::PerTensor),
            ty(&[2], "i8"),
        );
        // Two operands are fine for quantize, but the scale shape is not.
        assert_eq!(messages(&f).len(), 1);
        let f = one_op(&[t.clone(), t.clone()], OpKind::Relu, t.clone());
        assert_only(&f, "'relu' op: expects 1 operand, got 2");
        let f = one_op(
            std::slice::from_ref(&t),
            gemm(false, false, 1.0, 1.0),
            t.clone(),
        );
        assert_only(&f, "'gemm' op: expects 2 to 3 operands, got 1");

        let mut f = Function::new("f");
        let x = f.add_param("x", t.clone());
        let op = f.append_op(OpKind::Relu, vec![x], vec![t.clone(), t.clone()]);
        let r = f.result(op);
        f.outputs.push(("y".into(), r));
        assert_only(&f, "'relu' op: expects 1 result, got 2");
    }

    #[test]
    fn binary_types_and_broadcasting() {
        let f = one_op(
            &[ty(&[2], "f32"), ty(&[2], "f16")],
            binary(BinaryOp::Add),
            ty(&[2], "f32"),
        );
        assert_only(
            &f,
            "'add' op: operand element types differ: lhs f32, rhs f16",
        );
        let f = one_op(
            &[ty(&[2], "i8"), ty(&[2], "i8")],
            binary(BinaryOp::Sub),
            ty(&[2], "i16"),
        );
        assert_only(
            &f,
            "'sub' op: result element type i16 differs from operand element type i8",
        );
        let f = one_op(
            &[ty(&[2, 3], "f32"), ty(&[4, 1], "f32")],
            binary(BinaryOp::Mul),
            ty(&[2, 3], "f32"),
        );
        assert_only(
            &f,
            "'mul' op: operand shapes [2, 3] and [4, 1] do not broadcast",
        );
        let f = one_op(
            &[ty(&[5, 1, 3], "f32"), ty(&[4, 1], "f32")],
            binary(BinaryOp::Div),
            ty(&[5, 4, 1], "f32"),
        );
        assert_only(
            &f,
            "'div' op: result shape [5, 4, 1] differs from the broadcast shape [5, 4, 3]",
        );
    }

    #[test]
    fn matmul_shapes_and_classes() {
        let mm = OpKind::MatMul {
            overflow: Overflow::Wrap,
        };
        let f = one_op(
            &[ty(&[8, 64], "f32"), ty(&[32, 16], "f32")],
            mm.clone(),
            ty(&[8, 16], "f32"),
        );
        assert_only(
            &f,
            "'matmul' op: inner dimensions differ: lhs k = 64, rhs k = 32",
        );
        let f = one_op(
            &[ty(&[64], "f32"), ty(&[64, 16], "f32")],
            mm.clone(),
            ty(&[16], "f32"),
        );
        assert_only(
            &f,
            "'matmul' op: operands must have rank 2 or more (reshape vectors first), got shapes [64] and [64, 16]",
        );
        let f = one_op(
            &[ty(&[2, 8, 4], "f32"), ty(&[3, 4, 5], "f32")],
            mm.clone(),
            ty(&[2, 8, 5], "f32"),
        );
        assert_only(
            &f,
            "'matmul' op: batch dimensions [2] and [3] do not broadcast",
        );
        let f = one_op(
            &[ty(&[2, 8, 4], "f32"), ty(&[4, 5], "f32")],
            mm.clone(),
            ty(&[8, 5], "f32"),
        );
        assert_only(
            &f,
            "'matmul' op: result shape [8, 5] differs from the expected [2, 8, 5]",
        );
        let f = one_op(
            &[ty(&[8, 4], "i8"), ty(&[4, 5], "f32")],
            mm.clone(),
            ty(&[8, 5], "f32"),
        );
        assert_only(
            &f,
            "'matmul' op: operands must be both float or both integral, got i8 and f32",
        );
        let f = one_op(
            &[ty(&[8, 4], "f16"), ty(&[4, 5], "bf16")],
            mm.clone(),
            ty(&[8, 5], "i32"),
        );
        assert_only(
            &f,
            "'matmul' op: float operands need a float result, got i32",
        );
        let f = one_op(
            &[ty(&[8, 4], "u4"), ty(&[4, 5], "b1")],
            mm,
            ty(&[8, 5], "f32"),
        );
        assert_only(
            &f,
            "'matmul' op: integral operands need an integer result, got f32",
        );
    }

    #[test]
    fn gemm_shapes_and_scalars() {
        let f = one_op(
            &[ty(&[8, 4], "f32"), ty(&[5, 4], "f32")],
            gemm(false, false, 1.0, 1.0),
            ty(&[8, 4], "f32"),
        );
        assert_only(
            &f,
            "'gemm' op: inner dimensions differ: a k = 4, b k = 5 (trans_a = false, trans_b = false)",
        );
        let f = one_op(
            &[ty(&[4, 8], "f32"), ty(&[5, 4], "f32"), ty(&[5], "f32")],
            gemm(true, true, 1.0, 1.0),
            ty(&[8, 5], "f32"),
        );
        assert_eq!(messages(&f), Vec::<String>::new());
        let f = one_op(
            &[ty(&[8, 4], "f32"), ty(&[4, 5], "f32"), ty(&[8], "f32")],
            gemm(false, false, 1.0, 1.0),
            ty(&[8, 5], "f32"),
        );
        assert_only(
            &f,
            "'gemm' op: bias c shape [8] does not broadcast to [8, 5]",
        );
        let f = one_op(
            &[ty(&[2, 8, 4], "f32"), ty(&[4, 5], "f32")],
            gemm(false, false, 1.0, 1.0),
            ty(&[8, 5], "f32"),
        );
        assert_only(
            &f,
            "'gemm' op: a and b must be 2-D, got shapes [2, 8, 4] and [4, 5]",
        );
        let f = one_op(
            &[ty(&[8, 4], "i8"), ty(&[4, 5], "i8"), ty(&[1, 5], "i32")],
            gemm(false, false, 2.0, 1.0),
            ty(&[8, 5], "i32"),
        );
        assert_only(
            &f,
            "'gemm' op: integral gemm needs alpha = 1 and beta = 1, got alpha = 2.0, beta = 1.0",
        );
        let f = one_op(
            &[ty(&[8, 4], "i8"), ty(&[4, 5], "i8"), ty(&[5], "f32")],
            gemm(false, false, 1.0, 1.0),
            ty(&[8, 5], "i32"),
        );
        assert_only(
            &f,
            "'gemm' op: bias c must be integral like a and b, got f32",
        );
        let f = one_op(
            &[ty(&[8, 4], "f32"), ty(&[4, 5], "f32")],
            gemm(false, false, f64::NAN, 1.0),
            ty(&[8, 6], "f32"),
        );
        assert_eq!(
            messages(&f),
            vec![
                "'gemm' op: alpha and beta must be finite, got alpha = NaN, beta = 1".to_string(),
                "'gemm' op: result shape [8, 6] differs from the expected [8, 5]".to_string(),
            ]
        );
    }

    #[test]
    fn quantize_scales_and_zero_points() {
        let x = ty(&[4, 70], "f32");
        let q = ty(&[4, 70], "i4");
        let f = one_op(
            &[x.clone(), ty(&[4, 2], "f32")],
            quantize(blocked(1, 32)),
            q.clone(),
        );
        assert_only(
            &f,
            "'quantize' op: scale shape [4, 2] does not match blocked granularity (axis 1 block 32) for a tensor of shape [4, 70]: expected [4, 3]",
        );
        let f = one_op(
            &[x.clone(), ty(&[4, 3], "f32")],
            quantize(blocked(1, 0)),
            q.clone(),
        );
        assert_only(
            &f,
            "'quantize' op: scale: block size along axis 1 must be positive, got 0",
        );
        let f = one_op(
            &[x.clone(), ty(&[4], "f32")],
            quantize(Granularity::PerAxis { axis: 2 }),
            q.clone(),
        );
        assert_only(
            &f,
            "'quantize' op: scale: quantization axis 2 is out of range for rank 2",
        );
        let f = one_op(
            &[x.clone(), ty(&[70], "f32")],
            quantize(Granularity::PerAxis { axis: 0 }),
            q.clone(),
        );
        assert_only(
            &f,
            "'quantize' op: scale shape [70] does not match per-axis granularity (axis 0) for a tensor of shape [4, 70]: expected [4]",
        );
        let f = one_op(
            &[x.clone(), ty(&[2], "f32")],
            quantize(Granularity::PerTensor),
            q.clone(),
        );
        assert_only(
            &f,
            "'quantize' op: scale shape [2] does not match per-tensor granularity for a tensor of shape [4, 70]: expected [] or [1]",
        );
        for s in [ty(&[], "f32"), ty(&[1], "f8E8M0FNU")] {
            let f = one_op(&[x.clone(), s], quantize(Granularity::PerTensor), q.clone());
            assert_eq!(messages(&f), Vec::<String>::new());
        }
        let f = one_op(
            &[x.clone(), ty(&[], "i32")],
            quantize(Granularity::PerTensor),
            q.clone(),
        );
        assert_only(
            &f,
            "'quantize' op: scale must have a float element type, got i32",
        );
        let f = one_op(
            &[ty(&[4, 70], "i8"), ty(&[], "f32")],
            quantize(Granularity::PerTensor),
            q.clone(),
        );
        assert_only(
            &f,
            "'quantize' op: input must have a float element type, got i8",
        );
        let f = one_op(
            &[x.clone(), ty(&[4], "f32"), ty(&[4], "u4")],
            quantize(Granularity::PerAxis { axis: 0 }),
            q.clone(),
        );
        assert_only(
            &f,
            "'quantize' op: zero point element type u4 differs from the result element type i4",
        );
        let f = one_op(
            &[x.clone(), ty(&[4], "f32"), ty(&[1], "i4")],
            quantize(Granularity::PerAxis { axis: 0 }),
            q.clone(),
        );
        assert_only(
            &f,
            "'quantize' op: zero point shape [1] differs from scale shape [4]",
        );
        let f = one_op(
            &[x.clone(), ty(&[], "f32")],
            quantize(Granularity::PerTensor),
            ty(&[70, 4], "f4E2M1FN"),
        );
        assert_only(
            &f,
            "'quantize' op: result shape [70, 4] differs from input shape [4, 70]",
        );
        let f = one_op(
            &[x.clone(), ty(&[4, 3], "f32")],
            quantize(Granularity::Blocked {
                blocks: vec![(1, 32), (1, 16)],
            }),
            q,
        );
        assert!(messages(&f)
            .iter()
            .any(|m| m == "'quantize' op: scale: block axis 1 is listed twice"));
    }

    #[test]
    fn dequantize_and_requantize() {
        let deq = |g| OpKind::Dequantize { granularity: g };
        let f = one_op(
            &[ty(&[4, 8], "i8"), ty(&[], "f32")],
            deq(Granularity::PerTensor),
            ty(&[4, 8], "i32"),
        );
        assert_only(
            &f,
            "'dequantize' op: result must have a float element type, got i32",
        );
        let f = one_op(
            &[ty(&[4, 8], "u4"), ty(&[8], "f16"), ty(&[8], "u8")],
            deq(Granularity::PerAxis { axis: 1 }),
            ty(&[4, 8], "f32"),
        );
        assert_only(
            &f,
            "'dequantize' op: zero point element type u8 differs from the quantized input element type u4",
        );
        let f = one_op(
            &[ty(&[4, 8], "u4"), ty(&[4, 8], "f16")],
            deq(Granularity::PerAxis { axis: 1 }),
            ty(&[4, 8], "f32"),
        );
        assert_only(
            &f,
            "'dequantize' op: scale shape [4, 8] does not match per-axis granularity (axis 1) for a tensor of shape [4, 8]: expected [8]",
        );
        let req = OpKind::Requantize {
            in_granularity: Granularity::PerTensor,
            out_granularity: Granularity::PerAxis { axis: 0 },
            rounding: Rounding::NearestEven,
            saturate: true,
        };
        let f = one_op(
            &[
                ty(&[4, 8], "i32"),
                ty(&[], "f32"),
                ty(&[], "i32"),
                ty(&[4], "f32"),
                ty(&[4], "i8"),
            ],
            req.clone(),
            ty(&[4, 8], "i8"),
        );
        assert_eq!(messages(&f), Vec::<String>::new());
        let f = one_op(
            &[
                ty(&[4, 8], "i32"),
                ty(&[], "i32"),
                ty(&[], "i8"),
                ty(&[8], "f32"),
                ty(&[8], "i4"),
            ],
            req,
            ty(&[4, 8], "i8"),
        );
        assert_eq!(
            messages(&f),
            vec![
                "'requantize' op: input scale must have a float element type, got i32",
                "'requantize' op: input zero point element type i8 differs from the quantized input element type i32",
                "'requantize' op: output scale shape [8] does not match per-axis granularity (axis 0) for a tensor of shape [4, 8]: expected [4]",
                "'requantize' op: output zero point element type i4 differs from the result element type i8",
            ]
        );
    }

    #[test]
    fn unary_ops() {
        let cast = OpKind::Cast {
            rounding: Rounding::NearestEven,
            saturate: false,
            stochastic: None,
        };
        let f = one_op(&[ty(&[2, 3], "f32")], cast, ty(&[3, 2], "i8"));
        assert_only(
            &f,
            "'cast' op: result shape [3, 2] differs from operand shape [2, 3]",
        );
        let f = one_op(
            &[ty(&[4], "i8")],
            OpKind::Gelu { tanh: false },
            ty(&[4], "i8"),
        );
        assert_only(
            &f,
            "'gelu' op: operand must have a float element type, got i8",
        );
        let f = one_op(&[ty(&[4], "f32")], OpKind::Silu, ty(&[4], "f16"));
        assert_only(
            &f,
            "'silu' op: result element type f16 differs from operand element type f32",
        );
        let f = one_op(&[ty(&[4], "i8")], OpKind::Relu, ty(&[4], "i8"));
        assert_eq!(messages(&f), Vec::<String>::new());
        let f = one_op(&[ty(&[4], "b1")], OpKind::Relu, ty(&[4], "b1"));
        assert_only(
            &f,
            "'relu' op: operand must be a float or integer, got b1 (it has no zero)",
        );
        let f = one_op(
            &[ty(&[4, 5], "f32")],
            OpKind::Softmax { axis: 2 },
            ty(&[4, 5], "f32"),
        );
        assert_only(&f, "'softmax' op: axis 2 is out of range for rank 2");
        let f = one_op(
            &[ty(&[4, 5], "f32")],
            OpKind::Softmax { axis: -3 },
            ty(&[4, 5], "f32"),
        );
        assert_only(&f, "'softmax' op: axis -3 is out of range for rank 2");
        let f = one_op(
            &[ty(&[4, 5], "f32")],
            OpKind::Softmax { axis: -2 },
            ty(&[4, 5], "f32"),
        );
        assert_eq!(messages(&f), Vec::<String>::new());
        let f = one_op(&[ty(&[2, 3], "f32")], OpKind::Reshape, ty(&[7], "f32"));
        assert_only(
            &f,
            "'reshape' op: reshape changes the element count from 6 ([2, 3]) to 7 ([7])",
        );
        let f = one_op(&[ty(&[2, 3], "f32")], OpKind::Relayout, ty(&[3, 2], "f32"));
        assert_only(
            &f,
            "'relayout' op: result shape [3, 2] differs from operand shape [2, 3]",
        );
    }

    #[test]
    fn normalization_ops() {
        let ln = OpKind::LayerNorm {
            axis: 1,
            epsilon: 1e-5,
        };
        let f = one_op(
            &[ty(&[2, 3, 4], "f32"), ty(&[3, 4], "f32"), ty(&[4], "f32")],
            ln.clone(),
            ty(&[2, 3, 4], "f32"),
        );
        assert_only(
            &f,
            "'layer_norm' op: beta shape [4] differs from the normalized dims [3, 4] of the input",
        );
        let f = one_op(
            &[ty(&[2, 3, 4], "f32"), ty(&[3, 4], "i8")],
            ln,
            ty(&[2, 3, 4], "f32"),
        );
        assert_only(
            &f,
            "'layer_norm' op: gamma must have a float element type, got i8",
        );
        let rms = OpKind::RmsNorm {
            axis: 3,
            epsilon: -1.0,
        };
        let f = one_op(
            &[ty(&[2, 3, 4], "f32"), ty(&[4], "f32")],
            rms,
            ty(&[2, 3, 4], "f32"),
        );
        assert_eq!(
            messages(&f),
            vec![
                "'rms_norm' op: epsilon must be a finite non-negative number, got -1",
                "'rms_norm' op: axis 3 is out of range for rank 3",
            ]
        );
    }

    #[test]
    fn transpose_permutations() {
        let tr = |perm: Vec<u32>| OpKind::Transpose { perm };
        let x = ty(&[2, 3, 4], "f32");
        for perm in [vec![0, 1], vec![0, 1, 1], vec![0, 1, 3]] {
            let f = one_op(std::slice::from_ref(&x), tr(perm.clone()), x.clone());
            assert_only(
                &f,
                &format!(
                    "'transpose' op: perm {perm:?} is not a permutation of the 3 operand dims"
                ),
            );
        }
        let f = one_op(std::slice::from_ref(&x), tr(vec![2, 0, 1]), x.clone());
        assert_only(
            &f,
            "'transpose' op: result shape [2, 3, 4] differs from the permuted shape [4, 2, 3]",
        );
        let f = one_op(
            std::slice::from_ref(&x),
            tr(vec![2, 0, 1]),
            ty(&[4, 2, 3], "f32"),
        );
        assert_eq!(messages(&f), Vec::<String>::new());
    }

    fn const_fn(bytes: Vec<u8>, t: TensorType) -> Function {
        one_op(&[], OpKind::Constant(ConstData::new(bytes)), t)
    }

    #[test]
    fn constant_payloads() {
        let f = const_fn(vec![0; 3], ty(&[2, 2], "f16"));
        assert_only(
            &f,
            "'constant' op: payload has 3 bytes but tensor<2x2xf16> needs 8",
        );
        // Three i4 values use 12 of 16 bits; the last nibble is padding.
        assert_eq!(
            messages(&const_fn(vec![0x21, 0x03], ty(&[3], "i4"))),
            Vec::<String>::new()
        );
        assert_only(
            &const_fn(vec![0x21, 0x53], ty(&[3], "i4")),
            "'constant' op: payload has nonzero padding bits after the last element",
        );
        let msb = Layout {
            pack: PackOrder::MsbFirst,
            ..Layout::default()
        };
        let t = ty(&[3], "i4").with_layout(msb);
        assert_eq!(
            messages(&const_fn(vec![0x12, 0x30], t.clone())),
            Vec::<String>::new()
        );
        assert_eq!(messages(&const_fn(vec![0x12, 0x35], t)).len(), 1);
        // Bit-planes pad each plane of a 5-element row to a byte.
        let planes = Layout {
            bit_planes: true,
            ..Layout::default()
        };
        let t = ty(&[2, 5], "u2").with_layout(planes);
        assert_eq!(t.byte_size(), 4);
        assert_eq!(
            messages(&const_fn(vec![0x1f, 0, 0x01, 0x10], t.clone())),
            Vec::<String>::new()
        );
        assert_only(
            &const_fn(vec![0x1f, 0, 0x21, 0x10], t),
            "'constant' op: payload has nonzero padding bits after the last element",
        );
        // A payload made by the layout code is always canonical.
        let vals: Vec<f64> = (0..12).map(|i| (i % 8) as f64 - 4.0).collect();
        let i3: ElemType = "i3".parse().unwrap();
        let tensor = Tensor::from_f64(i3, vec![3, 4], &vals).unwrap();
        for layout in [
            Layout::default(),
            Layout {
                tile: vec![1, 2],
                bit_planes: true,
                pack: PackOrder::MsbFirst,
                interleave: None,
            },
        ] {
            let t = TensorType::new(vec![3, 4], i3).with_layout(layout);
            let f = one_op(&[], constant(&tensor, &t), t);
            assert_eq!(messages(&f), Vec::<String>::new());
        }
    }

    #[test]
    fn layouts_must_fit() {
        let interleaved_i8 = ty(&[4, 64], "i8").with_layout(Layout {
            interleave: Some(32),
            ..Layout::default()
        });
        let mut f = Function::new("f");
        let x = f.add_param("x", interleaved_i8);
        f.outputs.push(("y".into(), x));
        assert_only(
            &f,
            "'func' @f: parameter 'x': layout #layout<interleave=32> does not fit tensor<4x64xi8, #layout<interleave=32>>: interleave needs an element type that packs several per byte, not i8",
        );
        let tiled = ty(&[4, 40], "i4").with_layout(Layout {
            tile: vec![16],
            ..Layout::default()
        });
        let f = one_op(&[ty(&[4, 40], "i4")], OpKind::Relayout, tiled);
        assert_only(
            &f,
            "'relayout' op: result type: layout #layout<tile=16> does not fit tensor<4x40xi4, #layout<tile=16>>: tile size 16 does not divide dimension 1 of size 40",
        );
    }

    #[test]
    fn element_count_limit() {
        let huge = ty(&[1 << 20, 1 << 21], "f32");
        let f = one_op(std::slice::from_ref(&huge), OpKind::Relu, huge.clone());
        assert_eq!(
            messages(&f),
            vec![
                "'func' @f: parameter 'p0': tensor<1048576x2097152xf32> has more than 2^40 elements (shape [1048576, 2097152])",
                "'relu' op: result type: tensor<1048576x2097152xf32> has more than 2^40 elements (shape [1048576, 2097152])",
            ]
        );
        // Overflowing u64 is reported the same way, without panicking.
        let f = one_op(
            &[],
            OpKind::Constant(ConstData::new(vec![])),
            ty(&[u64::MAX, 4], "i4").with_layout(Layout {
                interleave: Some(2),
                ..Layout::default()
            }),
        );
        assert_eq!(messages(&f).len(), 1);
        assert_eq!(
            messages(&one_op(
                &[],
                OpKind::Constant(ConstData::new(vec![])),
                ty(&[0, 1 << 50], "f32")
            )),
            Vec::<String>::new()
        );
        let f = one_op(
            &[],
            OpKind::Constant(ConstData::new(vec![])),
            TensorType::new(
                vec![2],
                ElemType::Int {
                    bits: 0,
                    signed: true,
                },
            ),
        );
        assert_only(
            &f,
            "'constant' op: result type: integer width 0 is out of range (1 to 64 bits)",
        );
    }

    #[test]
    fn def_use_order() {
        let t = ty(&[2], "f32");
        let mut f = Function::new("f");
        let x = f.add_param("x", t.clone());
        let last = f.append_op(OpKind::Relu, vec![x], vec![t.clone()]);
        let later = f.result(last);
        // Inserted before the op that defines its operand.
        let early = f.insert_op_before(last, OpKind::Relu, vec![later], vec![t.clone()]);
        let early = f.result(early);
        let foreign = Value::new(1000);
        let bad = f.push(binary(BinaryOp::Add), vec![early, foreign], t.clone());
        f.outputs.push(("y".into(), bad));
        assert_eq!(
            messages(&f),
            vec![
                "'relu' op: operand #0 is used before its definition",
                "'add' op: operand #1 is not a value of this function",
            ]
        );

        let mut f = Function::new("f");
        let x = f.add_param("x", t.clone());
        let gone = f.append_op(OpKind::Relu, vec![x], vec![t.clone()]);
        let gone_v = f.result(gone);
        let user = f.push(OpKind::Relu, vec![gone_v], t.clone());
        f.remove_ops(&[gone].into_iter().collect());
        f.outputs.push(("y".into(), user));
        f.outputs.push(("z".into(), gone_v));
        f.outputs.push(("w".into(), Value::new(77)));
        assert_eq!(
            messages(&f),
            vec![
                "'relu' op: operand #0 is defined by an op that is no longer in the function",
                "'return' op: output 'z' is not defined by any op or parameter of this function",
                "'return' op: output 'w' is not a value of this function",
            ]
        );
    }

    #[test]
    fn signature_errors() {
        let t = ty(&[2], "f32");
        let mut f = Function::new("g");
        let x = f.add_param("x", t.clone());
        let x2 = f.add_param("x", t.clone());
        let s = f.push(binary(BinaryOp::Add), vec![x, x2], t.clone());
        f.outputs.push(("y".into(), s));
        f.outputs.push(("y".into(), x));
        assert_eq!(
            messages(&f),
            vec![
                "'func' @g: redefinition of %x (parameter #1)",
                "'func' @g: duplicate output name 'y'",
            ]
        );
        let f = Function::new("empty");
        assert_only(&f, "'func' @empty: function has no outputs");
    }

    #[test]
    fn module_function_names_are_unique() {
        let f = one_op(&[ty(&[2], "f32")], OpKind::Relu, ty(&[2], "f32"));
        let mut g = f.clone();
        g.span = Some(Span { line: 9, col: 3 });
        let m = Module {
            functions: vec![f.clone(), g],
        };
        let d = verify_module(&m).unwrap_err();
        assert_eq!(
            d,
            vec![Diagnostic::error(
                Some(Span { line: 9, col: 3 }),
                "'func' @f: redefinition of function @f"
            )]
        );
    }

    #[test]
    fn every_error_is_reported_at_its_op_in_source_order() {
        let mut f = Function::new("main");
        f.span = Some(Span { line: 1, col: 3 });
        f.return_span = Some(Span { line: 6, col: 5 });
        let a = f.add_param("a", ty(&[8, 64], "f32"));
        let b = f.add_param("b", ty(&[32, 16], "f32"));
        let h = f.add_param("h", ty(&[8], "f16"));
        let mm = f.append_op(
            OpKind::MatMul {
                overflow: Overflow::Wrap,
            },
            vec![a, b],
            vec![ty(&[8, 16], "f32")],
        );
        let add = f.append_op(
            binary(BinaryOp::Add),
            vec![f.result(mm), h],
            vec![ty(&[8, 16], "f32")],
        );
        let sm = f.append_op(
            OpKind::Softmax { axis: 5 },
            vec![f.result(add)],
            vec![ty(&[8, 16], "f32")],
        );
        // Positions deliberately out of op order: diagnostics follow the text.
        f.op_spans.insert(mm, Span { line: 4, col: 10 });
        f.op_spans.insert(add, Span { line: 2, col: 10 });
        f.op_spans.insert(sm, Span { line: 3, col: 10 });
        f.outputs.push(("y".into(), Value::new(500)));
        let d = verify_function(&f);
        let got: Vec<(u32, &str)> = d
            .iter()
            .map(|d| (d.span.map_or(0, |s| s.line), d.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    2,
                    "'add' op: operand element types differ: lhs f32, rhs f16"
                ),
                (
                    2,
                    "'add' op: operand shapes [8, 16] and [8] do not broadcast"
                ),
                (3, "'softmax' op: axis 5 is out of range for rank 2"),
                (
                    4,
                    "'matmul' op: inner dimensions differ: lhs k = 64, rhs k = 32"
                ),
                (6, "'return' op: output 'y' is not a value of this function"),
            ]
        );
    }

    #[test]
    fn fused_quantized_ops() {
        use crate::ops::{Activation, IntSchedule};
        let qmm = |zp: bool, bias: bool, lhs: bool| OpKind::QMatMul {
            granularity: Granularity::PerAxis { axis: 1 },
            dequant_type: ElemType::F32,
            has_zero_point: zp,
            has_bias: bias,
            weight_lhs: lhs,
            activation: Activation::Relu,
            requant: None,
        };
        let params = [
            ty(&[2, 8], "f32"),
            ty(&[8, 4], "i4"),
            ty(&[4], "f32"),
            ty(&[4], "i4"),
            ty(&[4], "f32"),
        ];
        let f = one_op(&params, qmm(true, true, false), ty(&[2, 4], "f32"));
        assert_eq!(messages(&f), Vec::<String>::new());
        let f = one_op(&params[..3], qmm(false, false, false), ty(&[2, 5], "f32"));
        assert_only(
            &f,
            "'qmatmul' op: result shape [2, 5] differs from the expected [2, 4]",
        );
        let bad_bias = [
            params[0].clone(),
            params[1].clone(),
            params[2].clone(),
            ty(&[3], "f32"),
        ];
        let f = one_op(&bad_bias, qmm(false, true, false), ty(&[2, 4], "f32"));
        assert_only(
            &f,
            "'qmatmul' op: bias shape [3] does not broadcast to the result shape [2, 4]",
        );
        let f = one_op(&params[..3], qmm(false, false, true), ty(&[2, 4], "f32"));
        assert_eq!(
            messages(&f),
            vec![
                "'qmatmul' op: inner dimensions differ: lhs k = 4, rhs k = 2",
                "'qmatmul' op: result shape [2, 4] differs from the expected [8, 8]",
            ]
        );

        let mark = |c: &[u64]| OpKind::MarkOutliers {
            columns: c.to_vec(),
        };
        let x = ty(&[2, 8], "f16");
        assert_eq!(
            messages(&one_op(std::slice::from_ref(&x), mark(&[0, 7]), x.clone())),
            Vec::<String>::new()
        );
        assert_only(
            &one_op(std::slice::from_ref(&x), mark(&[3, 3]), x.clone()),
            "'mark_outliers' op: columns [3, 3] must be strictly increasing",
        );
        assert_only(
            &one_op(std::slice::from_ref(&x), mark(&[2, 8]), x.clone()),
            "'mark_outliers' op: column 8 is out of range for the last dimension 8 of shape [2, 8]",
        );
        assert_only(
            &one_op(std::slice::from_ref(&x), mark(&[]), x.clone()),
            "'mark_outliers' op: columns must name at least one column",
        );

        // A requantize epilogue: out_scale (per result column) and
        // out_zero_point follow the bias; the result is quantized.
        let rq = |zp: bool, float_type: &str| {
            let mut k = qmm(true, true, false);
            if let OpKind::QMatMul { requant, .. } = &mut k {
                *requant = Some(QRequant {
                    float_type: float_type.parse().unwrap(),
                    granularity: Granularity::PerAxis { axis: 1 },
                    rounding: lowbit_numerics::Rounding::NearestEven,
                    saturate: true,
                    has_zero_point: zp,
                });
            }
            k
        };
        let mut rparams = params.to_vec();
        rparams.extend([ty(&[4], "f32"), ty(&[4], "i8")]);
        let f = one_op(&rparams, rq(true, "f32"), ty(&[2, 4], "i8"));
        assert_eq!(messages(&f), Vec::<String>::new());
        let f = one_op(&rparams[..6], rq(false, "f32"), ty(&[2, 4], "u4"));
        assert_eq!(messages(&f), Vec::<String>::new());
        let f = one_op(&rparams, rq(true, "f32"), ty(&[2, 4], "u8"));
        assert_only(
            &f,
            "'qmatmul' op: output zero point element type i8 differs from the result element type u8",
        );
        let f = one_op(&rparams, rq(true, "i32"), ty(&[2, 4], "i8"));
        assert!(messages(&f)
            .iter()
            .any(|m| m.contains("requant_type must be a float type, got i32")));
        let mut bad_scale = rparams.clone();
        bad_scale[5] = ty(&[2], "f32");
        bad_scale[6] = ty(&[2], "i8");
        let f = one_op(&bad_scale, rq(true, "f32"), ty(&[2, 4], "i8"));
        assert!(
            messages(&f)[0].contains("'qmatmul' op: output scale shape [2] does not match"),
            "{:?}",
            messages(&f)
        );
        let f = one_op(&rparams[..6], rq(true, "f32"), ty(&[2, 4], "i8"));
        assert_only(&f, "'qmatmul' op: expects 7 operands, got 6");

        let mmi = OpKind::MatMulInt {
            overflow: Overflow::Wrap,
            schedule: IntSchedule::BitSerial,
        };
        let ints = [
            ty(&[2, 8], "u4"),
            ty(&[8, 4], "i4"),
            ty(&[], "u4"),
            ty(&[1], "i4"),
        ];
        let f = one_op(&ints, mmi.clone(), ty(&[2, 4], "i32"));
        assert_eq!(messages(&f), Vec::<String>::new());
        let f = one_op(&ints[..3], mmi.clone(), ty(&[2, 4], "i32"));
        assert_only(
            &f,
            "'matmul_int' op: expects 2 operands, or 4 with both zero points, got 3",
        );
        let bad_zp = [
            ints[0].clone(),
            ints[1].clone(),
            ty(&[2], "u4"),
            ty(&[], "u4"),
        ];
        let f = one_op(&bad_zp, mmi, ty(&[2, 4], "f32"));
        assert_eq!(
            messages(&f),
            vec![
                "'matmul_int' op: result must have an integer element type, got f32",
                "'matmul_int' op: lhs zero point must be per-tensor (shape [] or [1]), got [2]",
                "'matmul_int' op: rhs zero point element type u4 differs from the rhs element type i4",
                "'matmul_int' op: integral operands need an integer result, got f32",
            ]
        );
        // The amx schedule takes byte activations only.
        let amx = OpKind::MatMulInt {
            overflow: Overflow::Wrap,
            schedule: IntSchedule::Amx,
        };
        let bytes = [ty(&[2, 64], "u8"), ty(&[64, 4], "i8")];
        let f = one_op(&bytes, amx.clone(), ty(&[2, 4], "i32"));
        assert_eq!(messages(&f), Vec::<String>::new());
        let f = one_op(&ints[..2], amx.clone(), ty(&[2, 4], "i32"));
        assert_eq!(
            messages(&f),
            vec![
                "'matmul_int' op: schedule amx multiplies 8-bit activations: lhs must be i8 or u8, got u4",
            ]
        );
        // 4-bit weights are the kernel's; 2-bit ones are not.
        let w4a8 = [ty(&[2, 64], "i8"), ty(&[64, 4], "u4")];
        let f = one_op(&w4a8, amx.clone(), ty(&[2, 4], "i32"));
        assert_eq!(messages(&f), Vec::<String>::new());
        let w2a8 = [ty(&[2, 64], "u8"), ty(&[64, 4], "i2")];
        let f = one_op(&w2a8, amx, ty(&[2, 4], "i32"));
        assert_eq!(
            messages(&f),
            vec![
                "'matmul_int' op: schedule amx multiplies 8-bit or 4-bit weights: rhs must be i8, u8, i4 or u4, got i2",
            ]
        );

        let rq = OpKind::RequantDyadic {
            multiplier: vec![3],
            shift: vec![4],
            axis: None,
            rounding: Rounding::NearestEven,
            saturate: true,
        };
        let f = one_op(
            &[ty(&[2, 4], "i32"), ty(&[], "i8")],
            rq.clone(),
            ty(&[2, 4], "i8"),
        );
        assert_eq!(messages(&f), Vec::<String>::new());
        let f = one_op(&[ty(&[2, 4], "f32"), ty(&[], "u8")], rq, ty(&[2, 4], "i8"));
        assert_eq!(
            messages(&f),
            vec![
                "'requant_dyadic' op: accumulator must have an integer element type, got f32",
                "'requant_dyadic' op: zero point element type u8 differs from the result element type i8",
            ]
        );
        let per_channel = |axis, m: Vec<i64>, s: Vec<u32>| OpKind::RequantDyadic {
            multiplier: m,
            shift: s,
            axis: Some(axis),
            rounding: Rounding::NearestEven,
            saturate: true,
        };
        let rq = per_channel(1, vec![1, 2, 3, 4], vec![0, 1, 2, 3]);
        let f = one_op(&[ty(&[2, 4], "i32")], rq, ty(&[2, 4], "i8"));
        assert_eq!(messages(&f), Vec::<String>::new());
        let rq = per_channel(0, vec![1, 2, 3, -4], vec![0, 1, 200]);
        let f = one_op(&[ty(&[2, 4], "i32")], rq, ty(&[2, 4], "i8"));
        assert_eq!(
            messages(&f),
            vec![
                "'requant_dyadic' op: 4 multipliers, but the channel count is 2",
                "'requant_dyadic' op: 3 shifts, but the channel count is 2",
                "'requant_dyadic' op: multiplier -4 is outside [0, 2^62)",
                "'requant_dyadic' op: shift 200 is larger than 126",
            ]
        );
        let rq = per_channel(2, vec![1, 2], vec![0, 1]);
        let f = one_op(&[ty(&[2, 4], "i32")], rq, ty(&[2, 4], "i8"));
        assert_eq!(
            messages(&f),
            vec!["'requant_dyadic' op: axis 2 is out of range for the rank-2 accumulator"]
        );
    }

    #[test]
    fn stochastic_rounding_is_checked() {
        let sr = lowbit_numerics::StochasticRounding::new(5, 8).ok();
        let cast = |rounding| OpKind::Cast {
            rounding,
            saturate: true,
            stochastic: sr,
        };
        let ok = one_op(
            &[ty(&[3], "f32")],
            cast(Rounding::NearestEven),
            ty(&[3], "f8E4M3FN"),
        );
        assert_eq!(messages(&ok), Vec::<String>::new());
        let ok = one_op(
            &[ty(&[3], "i32")],
            cast(Rounding::NearestEven),
            ty(&[3], "f16"),
        );
        assert_eq!(messages(&ok), Vec::<String>::new());
        let f = one_op(&[ty(&[3], "f32")], cast(Rounding::Up), ty(&[3], "i8"));
        assert_only(
            &f,
            "'cast' op: rounding = stochastic replaces the rounding mode, but the op also carries rounding = up",
        );
        let f = one_op(
            &[ty(&[3], "i32")],
            cast(Rounding::NearestEven),
            ty(&[3], "i8"),
        );
        assert_only(
            &f,
            "'cast' op: stochastic rounding of i32 to i8 has nothing to round (both are integral)",
        );
        let q = OpKind::Quantize {
            granularity: Granularity::PerTensor,
            rounding: Rounding::TowardZero,
            saturate: true,
            stochastic: sr,
        };
        let f = one_op(&[ty(&[3], "f32"), ty(&[], "f32")], q, ty(&[3], "i8"));
        assert_only(
            &f,
            "'quantize' op: rounding = stochastic replaces the rounding mode, but the op also carries rounding = toward_zero",
        );
    }

    #[test]
    fn broadcasting_rules() {
        assert_eq!(broadcast_shapes(&[3, 1, 5], &[4, 1]), Some(vec![3, 4, 5]));
        assert_eq!(broadcast_shapes(&[], &[2, 3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[0], &[1]), Some(vec![0]));
        assert_eq!(broadcast_shapes(&[0], &[2]), None);
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 3]), None);
    }
}
