//! The interpreter is the oracle: on random small functions mixing
//! constants, arithmetic, movements and casts over integer and narrow float
//! types (including NaN, infinity and signed-zero codes), the pipeline
//! `canonicalize,cse,dce` must not change any output bit.

use lowbit_interp::run_function;
use lowbit_ir::{
    BinaryOp, ElemType, Function, OpKind, Overflow, Rounding, Tensor, TensorType, Value,
};
use lowbit_opt::PassManager;
use proptest::prelude::*;

const ELEMS: &[&str] = &[
    "i4",
    "i8",
    "u4",
    "b1",
    "f4E2M1FN",
    "f8E4M3FNUZ",
    "f8E4M3FN",
    "f16",
];

#[derive(Clone, Debug)]
enum Step {
    Constant(Vec<u64>),
    Binary(u8, usize, usize, bool),
    Relu(usize),
    ReshapeRoundTrip(usize),
    TransposeTwice(usize),
    CastSame(usize, bool),
}

/// Codes biased toward the interesting ones: 0, 1.0/1, the sign bit, all ones.
fn code(elem: ElemType) -> impl Strategy<Value = u64> {
    let one = elem.encode(1.0, Rounding::NearestEven, false);
    let sign = 1u64 << (elem.bits() - 1);
    let mask = elem.code_mask();
    prop_oneof![
        Just(0),
        Just(one),
        Just(sign),
        Just(mask),
        any::<u64>().prop_map(move |c| c & mask)
    ]
}

fn step(elem: ElemType) -> impl Strategy<Value = Step> {
    prop_oneof![
        prop::collection::vec(code(elem), 4).prop_map(Step::Constant),
        // Splats, so that identities such as `x + 0` get a chance to apply.
        code(elem).prop_map(|c| Step::Constant(vec![c; 4])),
        (0u8..4, any::<usize>(), any::<usize>(), any::<bool>())
            .prop_map(|(o, a, b, s)| Step::Binary(o, a, b, s)),
        any::<usize>().prop_map(Step::Relu),
        any::<usize>().prop_map(Step::ReshapeRoundTrip),
        any::<usize>().prop_map(Step::TransposeTwice),
        (any::<usize>(), any::<bool>()).prop_map(|(a, s)| Step::CastSame(a, s)),
    ]
}

fn build(elem: ElemType, steps: &[Step]) -> Function {
    let t4 = TensorType::new(vec![4], elem);
    let t22 = TensorType::new(vec![2, 2], elem);
    let mut f = Function::new("main");
    let mut pool: Vec<Value> = vec![f.add_param("x", t4.clone())];
    for s in steps {
        let pick = |i: &usize| pool[i % pool.len()];
        let v = match s {
            Step::Constant(codes) => {
                let t = Tensor::new(elem, vec![4], codes.clone()).expect("4 codes");
                f.push(OpKind::constant_of(&t, &t4), vec![], t4.clone())
            }
            Step::Binary(o, a, b, sat) => {
                let op = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div][*o as usize];
                let overflow = if *sat {
                    Overflow::Saturate
                } else {
                    Overflow::Wrap
                };
                let (a, b) = (pick(a), pick(b));
                f.push(OpKind::Binary { op, overflow }, vec![a, b], t4.clone())
            }
            Step::Relu(a) => {
                let a = pick(a);
                f.push(OpKind::Relu, vec![a], t4.clone())
            }
            Step::ReshapeRoundTrip(a) => {
                let a = pick(a);
                let r = f.push(OpKind::Reshape, vec![a], t22.clone());
                f.push(OpKind::Reshape, vec![r], t4.clone())
            }
            Step::TransposeTwice(a) => {
                let a = pick(a);
                let r = f.push(OpKind::Reshape, vec![a], t22.clone());
                let t = f.push(OpKind::Transpose { perm: vec![1, 0] }, vec![r], t22.clone());
                let t = f.push(OpKind::Transpose { perm: vec![1, 0] }, vec![t], t22.clone());
                f.push(OpKind::Reshape, vec![t], t4.clone())
            }
            Step::CastSame(a, saturate) => {
                let a = pick(a);
                let kind = OpKind::Cast {
                    rounding: Rounding::NearestEven,
                    saturate: *saturate,
                    stochastic: None,
                };
                f.push(kind, vec![a], t4.clone())
            }
        };
        pool.push(v);
    }
    let n = pool.len();
    for (i, v) in pool[n.saturating_sub(3)..].iter().enumerate() {
        f.outputs.push((format!("y{i}"), *v));
    }
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10000))]

    #[test]
    fn pipeline_keeps_every_output_bit(
        (elem, steps, input) in prop::sample::select(ELEMS)
            .prop_map(|e| e.parse::<ElemType>().expect("known type"))
            .prop_flat_map(|elem| (
                Just(elem),
                prop::collection::vec(step(elem), 1..10),
                prop::collection::vec(code(elem), 4),
            ))
    ) {
        let f = build(elem, &steps);
        let x = Tensor::new(elem, vec![4], input).expect("4 codes");
        let inputs = vec![("x".to_string(), x)];
        // Programs that fail at run time (integer division by zero) may
        // lose the failing op if it is dead; only successful runs compare.
        let Ok(want) = run_function(&f, &inputs) else { return Ok(()) };
        let mut m = lowbit_ir::Module { functions: vec![f] };
        let mut pm = PassManager::parse("canonicalize,cse,dce").expect("valid pipeline");
        pm.instrumentation.verify_each = true;
        pm.run(&mut m, &mut std::io::sink()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = run_function(&m.functions[0], &inputs)
            .map_err(|e| TestCaseError::fail(format!("optimized function fails: {e}")))?;
        prop_assert_eq!(
            &got, &want,
            "optimized:\n{}", lowbit_ir::printer::print_function(&m.functions[0])
        );
    }
}
