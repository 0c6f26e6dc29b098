//! Canonicalization: local simplifications that are exact for the element
//! types involved, applied until nothing changes (or `max-iterations`), then
//! removal of the ops left dead.
//!
//! Rewrites (each keeps every result bit-identical to what the reference
//! interpreter computes for the original op):
//! * constant folding: an op whose operands are all constants is evaluated
//!   with the interpreter ([`lowbit_interp::eval_op`]) and becomes a
//!   `constant` in its result type's layout, unless the result would exceed
//!   `max-folded-bytes`, the result is larger than its largest constant
//!   operand (folding would expand quantized weights into float copies,
//!   e.g. `dequantize` of an `i4` weight; those stay quantized for the
//!   kernels to dequantize in registers), or the evaluation fails (a
//!   division by zero is left for run time to report);
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

use super::{constant_value, erase_dead_ops, substitute_operands, substitute_outputs};
use crate::pass::{Pass, PassError, Statistics};
use crate::registry::{OptionInfo, OptionKind, PassInfo, PassOptions, StatisticInfo};
use lowbit_interp::eval_op;
use lowbit_ir::{BinaryOp, ElemType, FloatFormat, Function, Op, OpKind, Tensor, TensorType, Value};
use std::collections::HashMap;

/// Results up to this size may be folded even when larger than their
/// operands (small shape arithmetic and scalar constants are worth folding).
const MAX_EXPANDING_FOLD_BYTES: u64 = 64;

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
            substitute_operands(f, op, &subst);
            if self.fold && self.try_fold(f, op) {
                self.stats.add("num-folded", 1);
                changed = true;
                continue;
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
        substitute_outputs(f, &subst);
        changed
    }

    /// Replaces `op` in place by a constant when all its operands are
    /// constants; returns whether it did.
    fn try_fold(&self, f: &mut Function, op: Op) -> bool {
        let d = f.op(op);
        if matches!(d.kind, OpKind::Constant(_)) || d.operands.is_empty() || d.results.len() != 1 {
            return false;
        }
        let result_ty = f.ty(d.results[0]).clone();
        if result_ty.byte_size() > self.max_folded_bytes {
            return false;
        }
        let Some(values) = d
            .operands
            .iter()
            .map(|&v| constant_value(f, v))
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        let largest_operand = d
            .operands
            .iter()
            .map(|&v| f.ty(v).byte_size())
            .max()
            .unwrap_or(0);
        if result_ty.byte_size() > largest_operand.max(MAX_EXPANDING_FOLD_BYTES) {
            return false;
        }
        let refs: Vec<&Tensor> = values.iter().collect();
        let folded = match eval_op(&d.kind, &refs, std::slice::from_ref(&result_ty)) {
            Ok(mut out) if out.len() == 1 => out.remove(0),
            _ => return false,
        };
        if folded.elem != result_ty.elem || folded.shape != result_ty.shape {
            return false;
        }
        let o = f.op_mut(op);
        o.kind = OpKind::constant_of(&folded, &result_ty);
        o.operands.clear();
        true
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
                binary_identity(f, bin, a, b, &result_ty).map(Rewrite::ReplaceWith)
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

/// For `a <bin> b` with result type `result`, the operand the result
/// always equals, if an identity applies. Cheap checks (types, NaN codes)
/// come before decoding a constant, which may be a large weight.
fn binary_identity(
    f: &Function,
    bin: BinaryOp,
    a: Value,
    b: Value,
    result: &TensorType,
) -> Option<Value> {
    let elem = f.ty(a).elem;
    if elem.float().is_some_and(|fmt| !nan_is_unique(fmt)) {
        return None;
    }
    // The kept operand must already have the result's shape and layout, so
    // no broadcast or relayout is lost.
    let is = |keep: Value, other: Value, want: Neutral| {
        f.ty(keep) == result
            && constant_value(f, other)
                .is_some_and(|t| t.codes.iter().all(|&c| want.matches(elem, c)))
    };
    match bin {
        BinaryOp::Mul if is(a, b, Neutral::One) => Some(a),
        BinaryOp::Mul if is(b, a, Neutral::One) => Some(b),
        BinaryOp::Div if is(a, b, Neutral::One) => Some(a),
        BinaryOp::Add if is(a, b, Neutral::AddZero) => Some(a),
        BinaryOp::Add if is(b, a, Neutral::AddZero) => Some(b),
        BinaryOp::Sub if is(a, b, Neutral::SubZero) => Some(a),
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
/// NaN produces exactly the code the input held. Answered by enumeration for
/// formats of up to 12 bits; wider formats with NaNs are assumed to have
/// several (true of every IEEE-style format), which only forgoes rewrites.
fn nan_is_unique(fmt: FloatFormat) -> bool {
    if !fmt.has_nan() {
        return true;
    }
    if fmt.bits() > 12 {
        return false;
    }
    (0..1u64 << fmt.bits())
        .filter(|&c| fmt.decode(c).is_nan())
        .nth(1)
        .is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::ty;
    use lowbit_ir::{Overflow, Rounding, Tensor, TensorType};

    fn elem(s: &str) -> ElemType {
        s.parse().unwrap()
    }

    fn pass() -> Box<dyn Pass> {
        create(&PassOptions::defaults(&INFO))
    }

    fn constant(f: &mut Function, t: &TensorType, codes: Vec<u64>) -> Value {
        let tensor = Tensor::new(t.elem, t.shape.clone(), codes).unwrap();
        f.push(OpKind::constant_of(&tensor, t), vec![], t.clone())
    }

    fn bin(op: BinaryOp) -> OpKind {
        OpKind::Binary {
            op,
            overflow: Overflow::Wrap,
        }
    }

    /// `y = x <op> c` (or `c <op> x`) with a splat constant of `code`;
    /// returns whether canonicalize reduced it to `y = x`.
    fn identity_applies(elem: &str, op: BinaryOp, code: u64, const_first: bool) -> bool {
        let t = ty(&[4], elem);
        let mut f = Function::new("main");
        let x = f.add_param("x", t.clone());
        let c = constant(&mut f, &t, vec![code; 4]);
        let operands = if const_first { vec![c, x] } else { vec![x, c] };
        let y = f.push(bin(op), operands, t);
        f.outputs.push(("y".into(), y));
        pass().run(&mut f).unwrap();
        f.outputs[0].1 == x && f.ops().is_empty()
    }

    #[test]
    fn integer_identities() {
        assert!(identity_applies("i8", BinaryOp::Mul, 1, false));
        assert!(identity_applies("i3", BinaryOp::Mul, 1, true));
        assert!(identity_applies("u4", BinaryOp::Add, 0, false));
        assert!(identity_applies("u4", BinaryOp::Add, 0, true));
        assert!(identity_applies("i8", BinaryOp::Sub, 0, false));
        assert!(identity_applies("i8", BinaryOp::Div, 1, false));
        assert!(
            !identity_applies("i8", BinaryOp::Sub, 0, true),
            "0 - x is not x"
        );
        assert!(!identity_applies("i8", BinaryOp::Mul, 2, false));
        assert!(!identity_applies("i8", BinaryOp::Div, 1, true));
    }

    #[test]
    fn float_identities_respect_signed_zero_and_nan_payloads() {
        let f8 = "f8E4M3FNUZ";
        // FNUZ: one NaN code, no negative zero: x * 1 and x + 0 are exact.
        let one = elem(f8).encode(1.0, Rounding::NearestEven, false);
        assert!(identity_applies(f8, BinaryOp::Mul, one, false));
        assert!(identity_applies(f8, BinaryOp::Add, 0, false));
        // f4E2M1FN has no NaN; +0.0 is not neutral for addition (-0 + 0 = +0).
        let e2m1 = elem("f4E2M1FN");
        let one = e2m1.encode(1.0, Rounding::NearestEven, false);
        assert!(identity_applies("f4E2M1FN", BinaryOp::Mul, one, false));
        assert!(!identity_applies("f4E2M1FN", BinaryOp::Add, 0, false));
        assert!(identity_applies("f4E2M1FN", BinaryOp::Add, 0b1000, false));
        assert!(identity_applies("f4E2M1FN", BinaryOp::Sub, 0, false));
        assert!(!identity_applies("f4E2M1FN", BinaryOp::Sub, 0b1000, false));
        // f32 has many NaN codes: the interpreter would canonicalize them.
        assert!(!identity_applies(
            "f32",
            BinaryOp::Mul,
            1f32.to_bits() as u64,
            false
        ));
        // f8E4M3FN has two NaN codes (0x7F and 0xFF).
        let one = elem("f8E4M3FN").encode(1.0, Rounding::NearestEven, false);
        assert!(!identity_applies("f8E4M3FN", BinaryOp::Mul, one, false));
    }

    #[test]
    fn broadcasting_identity_is_kept() {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[4], "i8"));
        let c = constant(&mut f, &ty(&[2, 4], "i8"), vec![1; 8]);
        let y = f.push(bin(BinaryOp::Mul), vec![x, c], ty(&[2, 4], "i8"));
        f.outputs.push(("y".into(), y));
        assert!(!pass().run(&mut f).unwrap());
        assert_eq!(f.ops().len(), 2);
    }

    #[test]
    fn reshape_transpose_relayout_chains() {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[2, 3, 4], "f32"));
        let r1 = f.push(OpKind::Reshape, vec![x], ty(&[6, 4], "f32"));
        let r2 = f.push(OpKind::Reshape, vec![r1], ty(&[24], "f32"));
        let back = f.push(OpKind::Reshape, vec![r2], ty(&[2, 3, 4], "f32"));
        let t1 = f.push(
            OpKind::Transpose {
                perm: vec![2, 0, 1],
            },
            vec![x],
            ty(&[4, 2, 3], "f32"),
        );
        let t2 = f.push(
            OpKind::Transpose {
                perm: vec![1, 0, 2],
            },
            vec![t1],
            ty(&[2, 4, 3], "f32"),
        );
        let t3 = f.push(
            OpKind::Transpose {
                perm: vec![1, 2, 0],
            },
            vec![t1],
            ty(&[2, 3, 4], "f32"),
        );
        f.outputs.push(("flat".into(), r2));
        f.outputs.push(("back".into(), back));
        f.outputs.push(("t2".into(), t2));
        f.outputs.push(("t3".into(), t3));
        let mut p = pass();
        assert!(p.run(&mut f).unwrap());
        // reshape(reshape(x)) reads x directly; reshape back to x's type is x.
        assert_eq!(f.op(f.def_op(r2).unwrap()).operands, vec![x]);
        assert_eq!(f.outputs[1].1, x);
        // transpose(transpose(x)) is one transpose with the composed perm:
        // t2 dim j = x dim [2,0,1][[1,0,2][j]] = [0, 2, 1].
        let t2op = f.op(f.def_op(t2).unwrap());
        assert_eq!(
            t2op.kind,
            OpKind::Transpose {
                perm: vec![0, 2, 1]
            }
        );
        assert_eq!(t2op.operands, vec![x]);
        // [2,0,1] then [1,2,0] is the identity.
        assert_eq!(f.outputs[3].1, x);
        assert_eq!(
            f.ops().len(),
            2,
            "{}",
            lowbit_ir::printer::print_function(&f)
        );
        assert!(p.statistics().get("num-simplified") >= 4);
        assert!(!p.run(&mut f).unwrap(), "fixed point reached");
    }

    #[test]
    fn relayout_and_cast_to_same_type() {
        use lowbit_ir::{Layout, PackOrder};
        let i4 = ty(&[8], "i4");
        let msb = i4.clone().with_layout(Layout {
            pack: PackOrder::MsbFirst,
            ..Layout::default()
        });
        let mut f = Function::new("main");
        let x = f.add_param("x", i4.clone());
        let r1 = f.push(OpKind::Relayout, vec![x], msb.clone());
        let r2 = f.push(OpKind::Relayout, vec![r1], i4.clone());
        let c = f.push(
            OpKind::Cast {
                rounding: Rounding::NearestEven,
                saturate: true,
                stochastic: None,
            },
            vec![x],
            i4.clone(),
        );
        let h = f.add_param("h", ty(&[2], "f16"));
        let hc = f.push(
            OpKind::Cast {
                rounding: Rounding::NearestEven,
                saturate: false,
                stochastic: None,
            },
            vec![h],
            ty(&[2], "f16"),
        );
        f.outputs.push(("msb".into(), r1));
        f.outputs.push(("same".into(), r2));
        f.outputs.push(("cast".into(), c));
        f.outputs.push(("hc".into(), hc));
        pass().run(&mut f).unwrap();
        assert_eq!(f.outputs[0].1, r1, "relayout to another layout stays");
        assert_eq!(f.outputs[1].1, x);
        assert_eq!(f.outputs[2].1, x);
        assert_eq!(f.outputs[3].1, hc, "f16 has several NaN codes");
    }

    #[test]
    fn dequantize_of_quantize_is_not_folded() {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[4], "f32"));
        let s = f.add_param("s", ty(&[], "f32"));
        let q = f.push(
            OpKind::Quantize {
                granularity: Default::default(),
                rounding: Rounding::NearestEven,
                saturate: true,
                stochastic: None,
            },
            vec![x, s],
            ty(&[4], "i8"),
        );
        let d = f.push(
            OpKind::Dequantize {
                granularity: Default::default(),
            },
            vec![q, s],
            ty(&[4], "f32"),
        );
        f.outputs.push(("y".into(), d));
        assert!(!pass().run(&mut f).unwrap());
        assert_eq!(f.ops().len(), 2);
    }
}

#[cfg(test)]
mod fold_tests {
    use super::*;
    use crate::passes::test_util::ty;
    use lowbit_ir::{Layout, Overflow, PackOrder, Tensor, TensorType};

    fn constant(f: &mut Function, t: &TensorType, codes: Vec<u64>) -> Value {
        let tensor = Tensor::new(t.elem, t.shape.clone(), codes).unwrap();
        f.push(OpKind::constant_of(&tensor, t), vec![], t.clone())
    }

    fn binary(op: BinaryOp, overflow: Overflow) -> OpKind {
        OpKind::Binary { op, overflow }
    }

    fn run_with(options: &[(&str, &str)], f: &mut Function) -> Box<dyn Pass> {
        let mut o = PassOptions::defaults(&INFO);
        for (k, v) in options {
            o.set(&INFO, k, v).unwrap();
        }
        let mut p = create(&o);
        p.run(f).unwrap();
        p
    }

    #[test]
    fn quantized_weights_are_not_expanded_to_float() {
        // dequantize(i4 weight, scale) of constants would be a 16x larger
        // f32 constant: it must stay quantized.
        let w_ty = ty(&[64, 64], "i4");
        let s_ty = ty(&[], "f32");
        let mut f = Function::new("main");
        let w = constant(&mut f, &w_ty, (0..4096).map(|i| i % 16).collect());
        let s = constant(&mut f, &s_ty, vec![0x3f00_0000]);
        let d = f.push(
            OpKind::Dequantize {
                granularity: lowbit_ir::Granularity::PerTensor,
            },
            vec![w, s],
            ty(&[64, 64], "f32"),
        );
        f.outputs.push(("y".into(), d));
        let p = run_with(&[], &mut f);
        assert_eq!(p.statistics().get("num-folded"), 0);
        assert!(matches!(
            f.op(f.def_op(d).unwrap()).kind,
            OpKind::Dequantize { .. }
        ));
    }

    #[test]
    fn folds_into_the_result_layout() {
        let i4 = ty(&[4], "i4");
        let msb = i4.clone().with_layout(Layout {
            pack: PackOrder::MsbFirst,
            ..Layout::default()
        });
        let mut f = Function::new("main");
        let a = constant(&mut f, &i4, vec![1, 2, 3, 7]);
        let b = constant(&mut f, &i4, vec![1, 1, 1, 1]);
        let s = f.push(
            binary(BinaryOp::Add, Overflow::Wrap),
            vec![a, b],
            msb.clone(),
        );
        let x = f.add_param("x", msb.clone());
        let t = f.push(
            binary(BinaryOp::Mul, Overflow::Wrap),
            vec![x, s],
            msb.clone(),
        );
        f.outputs.push(("y".into(), t));
        let p = run_with(&[], &mut f);
        assert_eq!(p.statistics().get("num-folded"), 1);
        assert_eq!(p.statistics().get("num-erased"), 2);
        let folded = constant_value(&f, f.op(f.def_op(t).unwrap()).operands[1]).unwrap();
        // 7 + 1 wraps to -8 in i4.
        assert_eq!(folded.to_i128().unwrap(), vec![2, 3, 4, -8]);
        let OpKind::Constant(c) = &f.op(f.ops()[0]).kind else {
            panic!("expected the folded constant first");
        };
        assert_eq!(
            c.bytes(),
            &[0x23, 0x48],
            "MSB-first packing of the result type"
        );
    }

    #[test]
    fn folding_respects_size_limit_option_and_errors() {
        let build = |op: BinaryOp, rhs: u64| {
            let t = ty(&[4], "i8");
            let mut f = Function::new("main");
            let a = constant(&mut f, &t, vec![6; 4]);
            let b = constant(&mut f, &t, vec![rhs; 4]);
            let y = f.push(binary(op, Overflow::Saturate), vec![a, b], t);
            f.outputs.push(("y".into(), y));
            f
        };
        let mut f = build(BinaryOp::Add, 3);
        assert_eq!(
            run_with(&[("max-folded-bytes", "3")], &mut f)
                .statistics()
                .get("num-folded"),
            0
        );
        assert_eq!(f.ops().len(), 3);
        run_with(&[("max-folded-bytes", "4")], &mut f);
        assert_eq!(f.ops().len(), 1);
        assert_eq!(
            constant_value(&f, f.outputs[0].1)
                .unwrap()
                .to_i128()
                .unwrap(),
            vec![9; 4]
        );
        let mut f = build(BinaryOp::Add, 3);
        run_with(&[("fold", "false")], &mut f);
        assert_eq!(f.ops().len(), 3);
        // Integer division by zero is a run-time error, not a folding one.
        let mut f = build(BinaryOp::Div, 0);
        run_with(&[], &mut f);
        assert_eq!(f.ops().len(), 3);
    }
}
