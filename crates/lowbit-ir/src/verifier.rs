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
use crate::ops::{Granularity, OpKind};
use crate::types::{PackOrder, TensorType};
use lowbit_numerics::ElemType;
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
                format!("'func' @{}: function name is defined twice", f.name),
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
            func_err(diags, format!("parameter name '{name}' is used twice"));
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
                format!("'func' @{}: output name '{name}' is used twice", f.name),
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

fn check_op(cx: &mut OpCx, kind: &OpKind, ops: &[&TensorType], res: &TensorType) {
    match kind {
        OpKind::Constant(data) => check_constant(cx, data.bytes(), res),
        OpKind::Quantize { granularity, .. } => {
            let x = ops[0];
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
        OpKind::Cast { .. } => cx.expect_same_shape("operand", ops[0], res),
        OpKind::MatMul { .. } => check_matmul(cx, ops[0], ops[1], res),
        OpKind::Gemm {
            trans_a,
            trans_b,
            alpha,
            beta,
            ..
        } => check_gemm(cx, ops, (*trans_a, *trans_b), (*alpha, *beta), res),
        OpKind::Binary { .. } => {
            let (a, b) = (ops[0], ops[1]);
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
        OpKind::Relu => cx.expect_same_shape_and_elem(ops[0], res),
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
    }
}

fn check_constant(cx: &mut OpCx, bytes: &[u8], res: &TensorType) {
    // A layout that does not fit has no defined byte size; it was reported.
    if res.layout.check_fits(res.elem, &res.shape).is_err() {
        return;
    }
    let need = res.byte_size();
    let got = bytes.len() as u64;
    if got != need {
        cx.err(format!("payload has {got} bytes, but {res} needs {need}"));
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
        let row = ty
            .layout
            .tile
            .last()
            .copied()
            .or(ty.shape.last().copied())
            .unwrap_or(1)
            .max(1);
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
