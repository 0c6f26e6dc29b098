//! The e-class analysis: result type (dtype, shape, layout), integer value
//! range, and the decoded value of constants.
//!
//! Ranges are closed intervals of the mathematical integer values an
//! integral tensor can hold, propagated by interval arithmetic: a matmul's
//! range is `k · [min, max]` of the operand ranges' corner products, an
//! add's the sum of intervals, and so on. Where the exact range does not fit
//! the result type (the op would wrap or saturate) the range is the type's
//! own. This is what proves an `i32` accumulator cannot overflow. Floats
//! carry no range. Merging two classes intersects their ranges (both are
//! sound, so the intersection is too).
//!
//! The analysis also owns the op-head table ([`Heads`]), the parameter
//! types, and the notes rules leave when a rewrite is blocked (the reasons
//! `explain` reports).

use crate::lang::{Heads, Node};
use egg::{Analysis, DidMerge, EGraph, Id};
use lowbit_ir::{BinaryOp, ElemType, OpKind, OpNote, Tensor, TensorType};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A closed interval of integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Smallest possible value.
    pub lo: i128,
    /// Largest possible value.
    pub hi: i128,
}

impl Range {
    /// `[lo, hi]`.
    pub fn new(lo: i128, hi: i128) -> Range {
        Range { lo, hi }
    }

    /// The range of an integral element type (`b1` is `[-1, 1]`).
    pub fn of_type(e: ElemType) -> Option<Range> {
        match e {
            ElemType::Bipolar => Some(Range::new(-1, 1)),
            _ => e.int_range().map(|(lo, hi)| Range::new(lo, hi)),
        }
    }

    /// Whether every value of `self` lies in `other`.
    pub fn within(&self, other: &Range) -> bool {
        self.lo >= other.lo && self.hi <= other.hi
    }

    /// Largest magnitude.
    pub fn max_abs(&self) -> u128 {
        self.lo.unsigned_abs().max(self.hi.unsigned_abs())
    }

    /// `self - other` (interval subtraction), if it fits in `i128`.
    pub fn sub(&self, other: &Range) -> Option<Range> {
        Some(Range::new(
            self.lo.checked_sub(other.hi)?,
            self.hi.checked_sub(other.lo)?,
        ))
    }

    /// `self + other`.
    pub fn add(&self, other: &Range) -> Option<Range> {
        Some(Range::new(
            self.lo.checked_add(other.lo)?,
            self.hi.checked_add(other.hi)?,
        ))
    }

    /// The interval product.
    pub fn mul(&self, other: &Range) -> Option<Range> {
        let c = [
            self.lo.checked_mul(other.lo)?,
            self.lo.checked_mul(other.hi)?,
            self.hi.checked_mul(other.lo)?,
            self.hi.checked_mul(other.hi)?,
        ];
        Some(Range::new(*c.iter().min()?, *c.iter().max()?))
    }

    /// The range of a sum of `k` values of `self` (a dot product).
    pub fn times(&self, k: u64) -> Option<Range> {
        let k = k as i128;
        Some(Range::new(self.lo.checked_mul(k)?, self.hi.checked_mul(k)?))
    }

    fn intersect(&self, other: &Range) -> Range {
        Range::new(self.lo.max(other.lo), self.hi.min(other.hi))
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {}]", self.lo, self.hi)
    }
}

/// Facts about one e-class.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The result type (`None` only for the root).
    pub ty: Option<TensorType>,
    /// The integer value range, for integral types.
    pub range: Option<Range>,
    /// The decoded value, for constants.
    pub value: Option<Arc<Tensor>>,
}

/// The rule family a note or a rewrite belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Dequantization fused into matmul (`qmatmul`).
    DequantFused,
    /// Quantize/dequantize pairs, requant chains, redundant casts.
    Cleanup,
    /// Integer matmul plus dyadic requantization.
    Dyadic,
    /// Bit-plane popcount matmul.
    BitSerial,
    /// AMX-INT8 tiles for a W8A8 matmul (`matmul_int {schedule = amx}`).
    Amx,
    /// Transposes and relayouts folded into constants.
    Layout,
    /// Outlier columns in float, the rest quantized (LLM.int8()).
    Mixed,
}

impl Family {
    /// The name `explain` prints.
    pub fn name(self) -> &'static str {
        match self {
            Family::DequantFused => "dequant-fused",
            Family::Cleanup => "qdq-cleanup",
            Family::Dyadic => "dyadic",
            Family::BitSerial => "bit-serial",
            Family::Amx => "amx",
            Family::Layout => "layout",
            Family::Mixed => "mixed",
        }
    }
}

/// Why a rewrite was not applied to an e-class.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    /// The family of the blocked rewrite.
    pub family: Family,
    /// The rule's name.
    pub rule: &'static str,
    /// The reason, in words.
    pub reason: String,
    /// Whether the rewrite was blocked (`false`: it applied, approximately,
    /// and the reason states the bound).
    pub blocked: bool,
}

/// Options that enable rewrites which are not bit-exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleOptions {
    /// Let integer-only approximate a non-dyadic scale ratio by a HAWQ-V3
    /// multiplier and shift (within one unit of the output).
    pub allow_approx_dyadic: bool,
}

/// The analysis state.
#[derive(Debug, Default)]
pub struct LbAnalysis {
    /// Interned op heads.
    pub heads: Heads,
    /// Parameter types, by index.
    pub params: Vec<TensorType>,
    /// Blocked (and approximate) rewrites, by e-class (canonicalize ids
    /// with `find` first).
    pub notes: BTreeMap<Id, BTreeSet<Note>>,
    /// Importer notes of the source ops (quantized data made float at
    /// import), by e-class (canonicalize ids with `find` first).
    pub import_notes: BTreeMap<Id, BTreeSet<OpNote>>,
    /// Options of the rules.
    pub options: RuleOptions,
}

/// Constants with more elements than this are not decoded into [`Facts`].
pub const MAX_DECODED_ELEMENTS: u64 = 1 << 16;

/// The e-graph type used throughout.
pub type LbGraph = EGraph<Node, LbAnalysis>;

impl LbAnalysis {
    /// An analysis for a function with these parameter types.
    pub fn new(params: Vec<TensorType>, options: RuleOptions) -> LbAnalysis {
        LbAnalysis {
            params,
            options,
            ..LbAnalysis::default()
        }
    }
}

/// Clamps an exact range to what the type can hold: the exact range when
/// it fits, else the type's whole range (the op wraps or saturates).
fn fit(r: Option<Range>, e: ElemType) -> Option<Range> {
    let t = Range::of_type(e)?;
    match r {
        Some(r) if r.within(&t) => Some(r),
        _ => Some(t),
    }
}

fn const_range(t: &Tensor) -> Option<Range> {
    let vals = t.to_i128()?;
    let lo = vals.iter().min().copied()?;
    let hi = vals.iter().max().copied()?;
    Some(Range::new(lo, hi))
}

/// The exact range of `Σ_k (a − za)(b − zb)`.
pub fn dot_range(a: &Facts, b: &Facts, za: Option<&Facts>, zb: Option<&Facts>) -> Option<Range> {
    let (ta, _) = (a.ty.as_ref()?, b.ty.as_ref()?);
    let k = *ta.shape.last()?;
    let zero = Range::new(0, 0);
    let ca = a.range?.sub(&za.map_or(Some(zero), |z| z.range)?)?;
    let cb = b.range?.sub(&zb.map_or(Some(zero), |z| z.range)?)?;
    ca.mul(&cb)?.times(k)
}

fn op_range(kind: &OpKind, ty: &TensorType, ch: &[&Facts]) -> Option<Range> {
    let e = ty.elem;
    Range::of_type(e)?;
    let exact = match kind {
        OpKind::Constant(_) => None,
        OpKind::MatMul { .. } => dot_range(ch[0], ch[1], None, None),
        OpKind::MatMulInt { .. } => dot_range(ch[0], ch[1], ch.get(2).copied(), ch.get(3).copied()),
        OpKind::Binary { op, .. } => {
            let (a, b) = (ch[0].range?, ch[1].range?);
            match op {
                BinaryOp::Add => a.add(&b),
                BinaryOp::Sub => a.sub(&b),
                BinaryOp::Mul => a.mul(&b),
                BinaryOp::Min => Some(Range::new(a.lo.min(b.lo), a.hi.min(b.hi))),
                BinaryOp::Max => Some(Range::new(a.lo.max(b.lo), a.hi.max(b.hi))),
                BinaryOp::Div | BinaryOp::Pow => None,
            }
        }
        OpKind::Relu => ch[0].range.map(|r| Range::new(r.lo.max(0), r.hi.max(0))),
        OpKind::Cast { .. }
        | OpKind::Transpose { .. }
        | OpKind::Reshape
        | OpKind::Relayout
        | OpKind::MarkOutliers { .. } => ch[0].range,
        OpKind::RequantDyadic {
            multiplier,
            shift,
            rounding,
            ..
        } => {
            let acc = ch[0].range?;
            // The hull over channels; rounding is monotone, so each
            // channel's extremes come from its interval's ends.
            let mut hull: Option<Range> = None;
            for (m, s) in multiplier.iter().zip(shift) {
                let m = Range::new(*m as i128, *m as i128);
                let scaled = acc.mul(&m)?;
                let q = Range::new(
                    crate::numeric::round_div_pow2(scaled.lo, *s, *rounding),
                    crate::numeric::round_div_pow2(scaled.hi, *s, *rounding),
                );
                hull = Some(hull.map_or(q, |h| Range::new(h.lo.min(q.lo), h.hi.max(q.hi))));
            }
            let z = ch.get(1).map_or(Some(Range::new(0, 0)), |z| z.range)?;
            hull?.add(&z)
        }
        _ => None,
    };
    fit(exact, e)
}

impl Analysis<Node> for LbAnalysis {
    type Data = Facts;

    fn make(egraph: &mut LbGraph, enode: &Node, _id: Id) -> Facts {
        match enode {
            Node::Root(_) => Facts::default(),
            Node::Param(p) => {
                let ty = egraph.analysis.params.get(p.0 as usize).cloned();
                let range = ty.as_ref().and_then(|t| Range::of_type(t.elem));
                Facts {
                    ty,
                    range,
                    value: None,
                }
            }
            Node::Op(h, children) => {
                let head = egraph.analysis.heads.get(*h);
                let ty = head.ty.clone();
                if let OpKind::Constant(data) = &head.kind {
                    // Large constants (weights) keep their type's range: the
                    // values are only needed for scales, zero points and
                    // small tensors, and decoding every weight would cost
                    // more than the whole optimization.
                    if ty.num_elements() > MAX_DECODED_ELEMENTS {
                        return Facts {
                            range: Range::of_type(ty.elem),
                            ty: Some(ty),
                            value: None,
                        };
                    }
                    let value = Tensor::from_bytes(&ty, data.bytes()).ok();
                    let range = value.as_ref().and_then(const_range);
                    return Facts {
                        ty: Some(ty),
                        range,
                        value: value.map(Arc::new),
                    };
                }
                let ch: Vec<&Facts> = children.iter().map(|c| &egraph[*c].data).collect();
                let range = op_range(&head.kind, &ty, &ch);
                Facts {
                    ty: Some(ty),
                    range,
                    value: None,
                }
            }
        }
    }

    fn merge(&mut self, to: &mut Facts, from: Facts) -> DidMerge {
        let mut changed = false;
        if to.ty.is_none() && from.ty.is_some() {
            to.ty = from.ty;
            changed = true;
        }
        match (to.range, from.range) {
            (Some(a), Some(b)) => {
                let r = a.intersect(&b);
                changed |= r != a;
                to.range = Some(r);
            }
            (None, Some(b)) => {
                to.range = Some(b);
                changed = true;
            }
            _ => {}
        }
        if to.value.is_none() && from.value.is_some() {
            to.value = from.value;
            changed = true;
        }
        DidMerge(changed, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_arithmetic() {
        let a = Range::new(-128, 127);
        let b = Range::new(-8, 7);
        assert_eq!(a.mul(&b), Some(Range::new(-1016, 1024)));
        assert_eq!(a.sub(&Range::new(-3, 3)), Some(Range::new(-131, 130)));
        assert_eq!(
            a.mul(&b).unwrap().times(4096),
            Some(Range::new(-1016 * 4096, 1024 * 4096))
        );
        assert_eq!(Range::new(i128::MAX, i128::MAX).times(2), None);
        assert_eq!(Range::of_type(ElemType::Bipolar), Some(Range::new(-1, 1)));
        assert_eq!(
            fit(Some(Range::new(0, 300)), ElemType::I8),
            Range::of_type(ElemType::I8)
        );
        assert_eq!(
            fit(Some(Range::new(0, 100)), ElemType::I8),
            Some(Range::new(0, 100))
        );
    }
}
