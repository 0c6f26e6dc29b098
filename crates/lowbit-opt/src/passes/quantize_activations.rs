//! `quantize-activations`: an explicit, opt-in change of numerics that
//! quantizes the float activation of weight-quantized matmuls to `bits`-bit
//! integers per block of `block` elements along `k` (ggml's `q8_0`
//! activations for `q4_0 x f32`), so that the CPU backend can multiply
//! integer blocks (`vpdpbusd`) instead of one f32 FMA per weight and column.
//!
//! For each float `matmul x, w` (and `qmatmul x, wq, ...` with the weight on
//! the right) whose weight `w` comes from `dequantize` and whose activation
//! is not already dequantized, the pass inserts, before the matmul,
//!
//! ```text
//! %s  = absmax_scale %x {block = B, qmax = 2^(bits-1) - 1}   // [.., n, ceil(k/B)]
//! %q  = quantize %x, %s {axis = last, block = B}             // i<bits>, nearest-even, saturating
//! %xq = dequantize %q, %s {axis = last, block = B}           // back to x's float type
//! ```
//!
//! and makes `%xq` the matmul's activation. The result is what the
//! interpreter computes for that graph: nothing is approximated silently,
//! the change is in the IR for every later pass and backend to see. The
//! error against the unquantized matmul is the activation's quantization
//! error (at most half a step, `scale / 2`, per element); the CPU kernel
//! for the quantized form is within the bound `codegen/blockdot.rs`
//! documents of the interpreter's result of the quantized graph.
//!
//! Limits: activations of a float type (`f32`, `f16`, `bf16`, ...), `bits`
//! 2 to 8, `block` at least 1. With `bits = 8`, `block = 32` and `i4` or
//! `i8` weights in groups of 32 with f16 scales, `lowbit run --backend
//! cpu` runs the block-dot kernel; otherwise the float kernels multiply
//! the dequantized activation (or the interpreter runs it).

use crate::pass::{Pass, PassError, Statistics};
use crate::registry::{OptionInfo, OptionKind, PassInfo, PassOptions, StatisticInfo};
use lowbit_ir::{ElemType, Function, Granularity, Op, OpKind, Rounding, TensorType};

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    argument: "quantize-activations",
    name: "QuantizeActivations",
    summary: "Opt-in: quantize the float activations of weight-quantized matmuls per block (absmax_scale, quantize, dequantize)",
    options: &[
        OptionInfo {
            name: "bits",
            kind: OptionKind::UInt,
            default: "8",
            description: "Bits of the signed activation codes (2 to 8)",
        },
        OptionInfo {
            name: "block",
            kind: OptionKind::UInt,
            default: "32",
            description: "Activation elements per scale, along k",
        },
    ],
    statistics: &[StatisticInfo {
        name: "num-quantized",
        description: "Number of matmul activations quantized",
    }],
    create,
};

fn create(o: &PassOptions) -> Box<dyn Pass> {
    Box::new(QuantizeActivations {
        bits: o.uint("bits"),
        block: o.uint("block"),
        stats: Statistics::new(INFO.statistics),
    })
}

/// The `quantize-activations` pass.
pub struct QuantizeActivations {
    bits: u64,
    block: u64,
    stats: Statistics,
}

/// Whether `op` is a float matmul with a dequantized weight on the right
/// and an activation that is not already a `dequantize` result.
fn qualifies(f: &Function, op: Op) -> bool {
    let d = f.op(op);
    let weight_from_dequantize = match &d.kind {
        OpKind::MatMul { .. } => d.operands.get(1).is_some_and(|&w| {
            f.def_op(w)
                .is_some_and(|o| matches!(f.op(o).kind, OpKind::Dequantize { .. }))
        }),
        OpKind::QMatMul { weight_lhs, .. } => !weight_lhs,
        _ => false,
    };
    let Some(&x) = d.operands.first() else {
        return false;
    };
    let xt = f.ty(x);
    weight_from_dequantize
        && xt.elem.is_float()
        && xt.rank() >= 2
        && xt.shape.last().is_some_and(|&k| k > 0)
        && !f
            .def_op(x)
            .is_some_and(|o| matches!(f.op(o).kind, OpKind::Dequantize { .. }))
}

impl Pass for QuantizeActivations {
    fn info(&self) -> &'static PassInfo {
        &INFO
    }

    fn option_values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("bits", self.bits.to_string()),
            ("block", self.block.to_string()),
        ]
    }

    fn statistics(&self) -> &Statistics {
        &self.stats
    }

    fn run(&mut self, f: &mut Function) -> Result<bool, PassError> {
        let fail = |message: String| PassError {
            pass: INFO.argument.into(),
            function: f.name.clone(),
            message,
        };
        if !(2..=8).contains(&self.bits) {
            return Err(fail(format!(
                "option bits = {} is outside 2..=8",
                self.bits
            )));
        }
        if self.block == 0 {
            return Err(fail("option block must be at least 1".into()));
        }
        let qmax = (1u64 << (self.bits - 1)) - 1;
        let code = ElemType::Int {
            bits: self.bits as u8,
            signed: true,
        };
        let targets: Vec<Op> = f
            .ops()
            .iter()
            .copied()
            .filter(|&op| qualifies(f, op))
            .collect();
        for &op in &targets {
            let x = f.op(op).operands[0];
            let xt = f.ty(x).clone();
            let axis = (xt.rank() - 1) as u32;
            let mut sshape = xt.shape.clone();
            if let Some(k) = sshape.last_mut() {
                *k = k.div_ceil(self.block);
            }
            let granularity = Granularity::Blocked {
                blocks: vec![(axis, self.block)],
            };
            let s_op = f.insert_op_before(
                op,
                OpKind::AbsMaxScale {
                    block: self.block,
                    qmax,
                },
                vec![x],
                vec![TensorType::new(sshape, xt.elem)],
            );
            let s = f.result(s_op);
            let q_op = f.insert_op_before(
                op,
                OpKind::Quantize {
                    granularity: granularity.clone(),
                    rounding: Rounding::NearestEven,
                    saturate: true,
                    stochastic: None,
                },
                vec![x, s],
                vec![TensorType::new(xt.shape.clone(), code)],
            );
            let q = f.result(q_op);
            let d_op = f.insert_op_before(
                op,
                OpKind::Dequantize { granularity },
                vec![q, s],
                vec![TensorType::new(xt.shape.clone(), xt.elem)],
            );
            let xq = f.result(d_op);
            f.op_mut(op).operands[0] = xq;
        }
        self.stats.add("num-quantized", targets.len() as u64);
        Ok(!targets.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::ty;
    use lowbit_ir::verifier::verify_function;
    use lowbit_ir::Overflow;

    /// `matmul x[n, k], dequantize(w[k, m] i4, s[kb, m] f16)`.
    fn q4_matmul(n: u64, k: u64, m: u64) -> Function {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[n, k], "f32"));
        let w = f.add_param("w", ty(&[k, m], "i4"));
        let s = f.add_param("s", ty(&[k.div_ceil(32), m], "f16"));
        let wd = f.push(
            OpKind::Dequantize {
                granularity: Granularity::Blocked {
                    blocks: vec![(0, 32)],
                },
            },
            vec![w, s],
            ty(&[k, m], "f32"),
        );
        let y = f.push(
            OpKind::MatMul {
                overflow: Overflow::Wrap,
            },
            vec![x, wd],
            ty(&[n, m], "f32"),
        );
        f.outputs.push(("y".into(), y));
        f
    }

    #[test]
    fn inserts_the_quantization_chain_once() {
        let mut f = q4_matmul(3, 70, 5);
        let mut pass = create(&PassOptions::defaults(&INFO));
        assert!(pass.run(&mut f).unwrap());
        assert_eq!(verify_function(&f), vec![]);
        let names: Vec<&str> = f.ops().iter().map(|&o| f.op(o).kind.name()).collect();
        assert_eq!(
            names,
            [
                "dequantize",
                "absmax_scale",
                "quantize",
                "dequantize",
                "matmul"
            ]
        );
        let s = f.result(f.ops()[1]);
        assert_eq!(f.ty(s).shape, vec![3, 3], "ceil(70 / 32) scales per row");
        let q = f.result(f.ops()[2]);
        assert_eq!(f.ty(q).elem.to_string(), "i8");
        assert_eq!(pass.statistics().get("num-quantized"), 1);
        // The activation is now dequantized: a second run changes nothing.
        assert!(!pass.run(&mut f).unwrap());
        assert_eq!(f.ops().len(), 5);
    }

    #[test]
    fn leaves_float_weights_and_integer_matmuls_alone() {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[2, 4], "f32"));
        let w = f.add_param("w", ty(&[4, 3], "f32"));
        let y = f.push(
            OpKind::MatMul {
                overflow: Overflow::Wrap,
            },
            vec![x, w],
            ty(&[2, 3], "f32"),
        );
        f.outputs.push(("y".into(), y));
        let before = f.clone();
        let mut pass = create(&PassOptions::defaults(&INFO));
        assert!(!pass.run(&mut f).unwrap());
        assert!(f.structurally_eq(&before));
    }

    #[test]
    fn bits_set_the_code_type_and_range() {
        let mut f = q4_matmul(1, 32, 2);
        let mut o = PassOptions::defaults(&INFO);
        o.set(&INFO, "bits", "4").unwrap();
        o.set(&INFO, "block", "16").unwrap();
        let mut pass = create(&o);
        assert!(pass.run(&mut f).unwrap());
        assert_eq!(verify_function(&f), vec![]);
        let scale = &f.op(f.ops()[1]).kind;
        assert_eq!(*scale, OpKind::AbsMaxScale { block: 16, qmax: 7 });
        assert_eq!(f.ty(f.result(f.ops()[2])).elem.to_string(), "i4");
        o.set(&INFO, "bits", "9").unwrap();
        let err = create(&o).run(&mut q4_matmul(1, 32, 2)).unwrap_err();
        assert!(err.message.contains("bits = 9"), "{err}");
    }
}
