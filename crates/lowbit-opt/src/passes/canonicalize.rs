//! Canonicalization: local simplifications that are exact for the element
//! types involved, applied until nothing changes (or `max-iterations`), then
//! removal of the ops left dead.
//!
//! Rewrites (each keeps every result bit-identical to what the reference
//! interpreter computes for the original op):
//! * `mul x, 1`, `mul 1, x`, `div x, 1`: integers always; floats only when
//!   the format has at most one NaN code (the interpreter returns the
//!   canonical NaN, so a NaN payload in `x` would otherwise change).
//! * `add x, 0`, `add 0, x`, `sub x, 0`: integers always. Floats only for a
//!   `-0.0` addend (`x + -0.0 == x` for every x) or a `+0.0` subtrahend, or
//!   when the format has no negative zero; plus the NaN condition above.
//!   `x + 0.0` is not folded for IEEE formats because `-0.0 + 0.0 == +0.0`.
//! * `reshape (reshape x)` → `reshape x`; `relayout (relayout x)` →
//!   `relayout x`; `transpose (transpose x)` → one transpose with the composed
//!   permutation; any of these whose result type equals its input's type
//!   (layout included) is removed.
//! * `cast x` to `x`'s own type: integers always; floats when not saturating
//!   (saturation would turn infinities into the largest finite value) and
//!   the NaN condition holds.
//!
//! Not rewritten: `dequantize (quantize x)` (quantization loses
//! information), anything whose broadcast changes the result shape.

use super::{constant_value, erase_dead_ops};
use crate::pass::{Pass, PassError, Statistics};
use crate::registry::{OptionInfo, OptionKind, PassInfo, PassOptions, StatisticInfo};
use lowbit_ir::{BinaryOp, ElemType, FloatFormat, Function, Op, OpKind, Value};
use std::collections::HashMap;

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    argument: "canonicalize",
    name: "Canonicalizer",
    summary: "Simplify ops with exact algebraic identities and erase dead ops",
    options: &[
        OptionInfo {
            name: "max-folded-bytes",
            kind: OptionKind::UInt,
            default: "16777216",
            description: "Largest constant (in bytes) that folding may create",
        },
        OptionInfo {
            name: "max-iterations",
            kind: OptionKind::UInt,
            default: "10",
            description: "Most sweeps over a function before giving up on a fixed point",
        },
        OptionInfo {
            name: "fold",
            kind: OptionKind::Bool,
            default: "true",
            description: "Fold ops whose operands are all constants",
        },
    ],
    statistics: &[
        StatisticInfo {
            name: "num-folded",
            description: "Number of ops folded to constants",
        },
        StatisticInfo {
            name: "num-simplified",
            description: "Number of ops simplified by an algebraic identity",
        },
        StatisticInfo {
            name: "num-erased",
            description: "Number of dead ops erased",
        },
    ],
    create,
};

fn create(o: &PassOptions) -> Box<dyn Pass> {
    Box::new(Canonicalizer {
        max_folded_bytes: o.uint("max-folded-bytes"),
        max_iterations: o.uint("max-iterations"),
        fold: o.flag("fold"),
        stats: Statistics::new(INFO.statistics),
    })
}

/// The `canonicalize` pass.
pub struct Canonicalizer {
    max_folded_bytes: u64,
    max_iterations: u64,
    fold: bool,
    stats: Statistics,
}

/// What a pattern decided for one op.
enum Rewrite {
    /// Every use of the op's (single) result becomes this value.
    ReplaceWith(Value),
    /// The op was changed in place (new kind, operands or both).
    Updated,
}

impl Pass for Canonicalizer {
    fn info(&self) -> &'static PassInfo {
        &INFO
    }

    fn option_values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("max-folded-bytes", self.max_folded_bytes.to_string()),
            ("max-iterations", self.max_iterations.to_string()),
            ("fold", self.fold.to_string()),
        ]
    }

    fn statistics(&self) -> &Statistics {
        &self.stats
    }

    fn run(&mut self, f: &mut Function) -> Result<bool, PassError> {
        let mut changed = false;
        for _ in 0..self.max_iterations.max(1) {
            let swept = self.sweep(f);
            let erased = erase_dead_ops(f);
            self.stats.add("num-erased", erased as u64);
            changed |= swept || erased > 0;
            if !swept {
                break;
            }
        }
        Ok(changed)
    }
}

impl Canonicalizer {
    /// One walk over the ops in order; returns whether anything changed.
    fn sweep(&mut self, f: &mut Function) -> bool {
        let mut subst: HashMap<Value, Value> = HashMap::new();
        let mut changed = false;
        for op in f.ops().to_vec() {
            let operands: Vec<Value> = f
                .op(op)
                .operands
                .iter()
                .map(|v| *subst.get(v).unwrap_or(v))
                .collect();
            if operands != f.op(op).operands {
                f.op_mut(op).operands = operands;
            }
            let rewrite = self.simplify(f, op);
            match rewrite {
                Some(Rewrite::ReplaceWith(v)) => {
                    subst.insert(f.result(op), v);
                    self.stats.add("num-simplified", 1);
                }
                Some(Rewrite::Updated) => self.stats.add("num-simplified", 1),
                None => continue,
            }
            changed = true;
        }
        for (_, v) in &mut f.outputs {
            if let Some(n) = subst.get(v) {
                *v = *n;
            }
        }
        changed
    }

    fn simplify(&self, f: &mut Function, op: Op) -> Option<Rewrite> {
        let d = f.op(op);
        if d.results.len() != 1 {
            return None;
        }
        let result_ty = f.ty(d.results[0]).clone();
        let same_type_as_result = |v: Value| f.ty(v) == &result_ty;
        match d.kind.clone() {
            OpKind::Binary { op: bin, .. } => {
                let (a, b) = (d.operands[0], d.operands[1]);
                let keep = binary_identity(f, bin, a, b)?;
                same_type_as_result(keep).then_some(Rewrite::ReplaceWith(keep))
            }
            OpKind::Reshape | OpKind::Relayout => {
                let x = d.operands[0];
                if same_type_as_result(x) {
                    return Some(Rewrite::ReplaceWith(x));
                }
                let inner = f.def_op(x)?;
                if f.op(inner).kind != d.kind {
                    return None;
                }
                let x0 = f.op(inner).operands[0];
                if same_type_as_result(x0) {
                    return Some(Rewrite::ReplaceWith(x0));
                }
                f.op_mut(op).operands = vec![x0];
                Some(Rewrite::Updated)
            }
            OpKind::Transpose { perm } => {
                let x = d.operands[0];
                let identity = perm.iter().enumerate().all(|(i, &p)| p as usize == i);
                if identity && same_type_as_result(x) {
                    return Some(Rewrite::ReplaceWith(x));
                }
                let inner = f.def_op(x)?;
                let OpKind::Transpose { perm: inner_perm } = &f.op(inner).kind else {
                    return None;
                };
                // result dim j = inner result dim perm[j] = x0 dim inner_perm[perm[j]]
                let composed: Option<Vec<u32>> = perm
                    .iter()
                    .map(|&p| inner_perm.get(p as usize).copied())
                    .collect();
                let composed = composed?;
                let x0 = f.op(inner).operands[0];
                let identity = composed.iter().enumerate().all(|(i, &p)| p as usize == i);
                if identity && same_type_as_result(x0) {
                    return Some(Rewrite::ReplaceWith(x0));
                }
                let o = f.op_mut(op);
                o.kind = OpKind::Transpose { perm: composed };
                o.operands = vec![x0];
                Some(Rewrite::Updated)
            }
            OpKind::Cast { saturate, .. } => {
                let x = d.operands[0];
                if !same_type_as_result(x) {
                    return None;
                }
                let exact = match result_ty.elem.float() {
                    None => true,
                    Some(fmt) => !saturate && nan_is_unique(fmt),
                };
                exact.then_some(Rewrite::ReplaceWith(x))
            }
            _ => None,
        }
    }
}

/// For `a <bin> b`, the operand the result always equals, if an identity
/// applies (ignoring broadcasting, which the caller checks via types).
fn binary_identity(f: &Function, bin: BinaryOp, a: Value, b: Value) -> Option<Value> {
    let elem = f.ty(a).elem;
    let float_ok = match elem.float() {
        Some(fmt) => nan_is_unique(fmt),
        None => true,
    };
    if !float_ok {
        return None;
    }
    let is = |v: Value, want: Neutral| {
        constant_value(f, v).is_some_and(|t| t.codes.iter().all(|&c| want.matches(elem, c)))
    };
    match bin {
        BinaryOp::Mul if is(b, Neutral::One) => Some(a),
        BinaryOp::Mul if is(a, Neutral::One) => Some(b),
        BinaryOp::Div if is(b, Neutral::One) => Some(a),
        BinaryOp::Add if is(b, Neutral::AddZero) => Some(a),
        BinaryOp::Add if is(a, Neutral::AddZero) => Some(b),
        BinaryOp::Sub if is(b, Neutral::SubZero) => Some(a),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Neutral {
    One,
    /// A zero `z` with `x + z == x` for every representable `x`.
    AddZero,
    /// A zero `z` with `x - z == x` for every representable `x`.
    SubZero,
}

impl Neutral {
    fn matches(self, elem: ElemType, code: u64) -> bool {
        match elem.float() {
            None => {
                let want = match self {
                    Neutral::One => 1,
                    Neutral::AddZero | Neutral::SubZero => 0,
                };
                elem.decode_int(code) == Some(want)
            }
            Some(fmt) => {
                let v = fmt.decode(code);
                match self {
                    Neutral::One => v == 1.0,
                    // -0.0 + -0.0 = -0.0 and x + -0.0 = x otherwise; +0.0 is
                    // neutral only where -0.0 cannot occur.
                    Neutral::AddZero => {
                        v == 0.0 && (v.is_sign_negative() || !has_negative_zero(fmt))
                    }
                    Neutral::SubZero => {
                        v == 0.0 && (v.is_sign_positive() || !has_negative_zero(fmt))
                    }
                }
            }
        }
    }
}

fn has_negative_zero(fmt: FloatFormat) -> bool {
    if !fmt.is_signed() {
        return false;
    }
    let v = fmt.decode(1u64 << (fmt.bits() - 1));
    v == 0.0 && v.is_sign_negative()
}

/// Whether the format has at most one NaN code, so that any op producing a
/// NaN produces exactly the code the input held. Formats wider than 16 bits
/// always have several NaN codes when they have any.
fn nan_is_unique(fmt: FloatFormat) -> bool {
    if !fmt.has_nan() {
        return true;
    }
    if fmt.bits() > 16 {
        return false;
    }
    (0..1u64 << fmt.bits())
        .filter(|&c| fmt.decode(c).is_nan())
        .nth(1)
        .is_none()
}
