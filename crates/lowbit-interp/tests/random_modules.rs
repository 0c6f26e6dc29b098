//! The interpreter runs every function of random well-typed modules on
//! random inputs without panicking. The only run-time error a verified
//! function may raise is an integer division by zero; every result has the
//! type its function declares.

use lowbit_interp::{eval_op, run_function, InterpError};
use lowbit_ir::testing::random_module;
use lowbit_ir::testing::Rng;
use lowbit_ir::verifier::{verify_function, verify_module};
use lowbit_ir::{ElemType, Function, OpKind, Tensor, TensorType};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Inputs for every parameter: random codes, biased toward zero, the sign
/// bit and all-ones (NaN, infinity, minimum integers) a quarter of the time.
fn inputs(f: &Function, rng: &mut Rng) -> Vec<(String, Tensor)> {
    f.params
        .iter()
        .map(|(name, v)| (name.clone(), random_tensor(f.ty(*v), rng)))
        .collect()
}

fn random_tensor(ty: &TensorType, rng: &mut Rng) -> Tensor {
    let mask = ty.elem.code_mask();
    let n: u64 = ty.shape.iter().product();
    let codes = (0..n)
        .map(|_| match rng.next_u64() % 8 {
            0 => 0,
            1 => mask,
            2 => 1u64 << (ty.elem.bits() - 1),
            _ => rng.next_u64() & mask,
        })
        .collect();
    Tensor::new(ty.elem, ty.shape.clone(), codes).expect("codes fit the shape")
}

fn check(seed: u64, size: usize) -> Result<(), String> {
    let m = random_module(seed, size);
    verify_module(&m).map_err(|d| format!("seed {seed} size {size}: does not verify: {}", d[0]))?;
    let mut rng = Rng::new(seed);
    for f in &m.functions {
        let args = inputs(f, &mut rng);
        let ctx = || format!("seed {seed} size {size} @{}", f.name);
        let run = catch_unwind(AssertUnwindSafe(|| run_function(f, &args)))
            .map_err(|_| format!("{}: interpreter panicked", ctx()))?;
        match run {
            Ok(outs) => {
                if outs.len() != f.outputs.len() {
                    return Err(format!(
                        "{}: {} outputs, expected {}",
                        ctx(),
                        outs.len(),
                        f.outputs.len()
                    ));
                }
                for ((name, t), (want_name, v)) in outs.iter().zip(&f.outputs) {
                    let want = f.ty(*v);
                    if name != want_name || t.shape != want.shape || t.elem != want.elem {
                        return Err(format!(
                            "{}: output {name} is {:?}x{}, declared {want_name}: {want}",
                            ctx(),
                            t.shape,
                            t.elem
                        ));
                    }
                    let mask = t.elem.code_mask();
                    if t.codes.iter().any(|c| c & !mask != 0) {
                        return Err(format!(
                            "{}: output {name} has codes wider than {}",
                            ctx(),
                            t.elem
                        ));
                    }
                }
            }
            Err(InterpError::Op {
                op: "div",
                ref message,
                ..
            }) if message.contains("division by zero") => {}
            Err(e) => return Err(format!("{}: unexpected error: {e}", ctx())),
        }
    }
    Ok(())
}

/// Fails the test with the count and the first ten failures, if any: the
/// sweeps collect every failure first so one report shows how widespread
/// a problem is.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

#[test]
fn random_modules_run_without_panics() {
    let mut failures = Vec::new();
    for seed in 0..3000u64 {
        for size in [1, 8, 24, 60] {
            if let Err(e) = check(seed, size) {
                failures.push(e);
            }
        }
    }
    assert_no_failures(&failures);
}

/// Element types swapped in by [`mutate`]: the widest and narrowest of each
/// family, where overflow and edge cases live.
const SWAPS: &[&str] = &[
    "i1",
    "u1",
    "b1",
    "i64",
    "u64",
    "i63",
    "u63",
    "f64",
    "f32",
    "f8E8M0FNU",
    "f4E2M1FN",
    "fE2M1F",
];

/// How one op's types are perturbed: every element type swapped for one,
/// or just one operand's or the result's (same shapes, so the op may still
/// verify), or each type perturbed on its own (usually ill typed).
enum Perturb {
    AllElems(ElemType),
    OneElem(ElemType, usize),
    Each,
}

impl Perturb {
    fn pick(rng: &mut Rng) -> Perturb {
        let s = SWAPS[(rng.next_u64() % SWAPS.len() as u64) as usize];
        let e = s.parse().expect("a valid spelling");
        match rng.next_u64() % 3 {
            0 => Perturb::AllElems(e),
            1 => Perturb::OneElem(e, (rng.next_u64() % 6) as usize),
            _ => Perturb::Each,
        }
    }

    /// The `i`-th type of the op (operands, then the result).
    fn apply(&self, i: usize, ty: &TensorType, rng: &mut Rng) -> TensorType {
        match self {
            Perturb::AllElems(e) => TensorType::new(ty.shape.clone(), *e),
            Perturb::OneElem(e, at) if *at == i => TensorType::new(ty.shape.clone(), *e),
            Perturb::OneElem(..) => ty.clone(),
            Perturb::Each => mutate(ty, rng),
        }
    }
}

/// Usually the same type; sometimes another element type, a dimension
/// changed to 1 or 2, or a dimension dropped or added.
fn mutate(ty: &TensorType, rng: &mut Rng) -> TensorType {
    let mut t = ty.clone();
    if rng.next_u64().is_multiple_of(3) {
        let s = SWAPS[(rng.next_u64() % SWAPS.len() as u64) as usize];
        t.elem = s.parse::<ElemType>().expect("a valid spelling");
    }
    match rng.next_u64() % 8 {
        0 if !t.shape.is_empty() => {
            let i = (rng.next_u64() % t.shape.len() as u64) as usize;
            t.shape[i] = 1 + rng.next_u64() % 2;
        }
        1 if !t.shape.is_empty() => {
            t.shape.remove(0);
        }
        2 => t.shape.insert(0, 1 + rng.next_u64() % 2),
        _ => {}
    }
    t
}

/// Whether a function of just this op, on parameters of the operands'
/// types, passes the verifier.
fn verifies(kind: &OpKind, operands: &[Tensor], results: &[TensorType]) -> bool {
    let mut f = Function::new("one");
    let params = operands
        .iter()
        .enumerate()
        .map(|(i, t)| f.add_param(format!("p{i}"), t.ty()))
        .collect();
    let op = f.append_op(kind.clone(), params, results.to_vec());
    let out = f.op(op).results[0];
    f.outputs.push(("out".into(), out));
    verify_function(&f).is_empty()
}

/// `eval_op` on ill-typed operands and result types (every op kind the
/// generator makes, with operand and result types perturbed) returns a
/// result or an error, never panics: the interpreter checks types itself.
/// When the perturbed op still verifies, it must also evaluate.
#[test]
fn ill_typed_ops_never_panic() {
    let mut failures = Vec::new();
    let mut evaluated = 0;
    for seed in 0..1500u64 {
        let m = random_module(seed, 12);
        let mut rng = Rng::new(seed.wrapping_mul(0x9E37));
        for f in &m.functions {
            for &op in f.ops() {
                let data = f.op(op);
                let how = Perturb::pick(&mut rng);
                let operands: Vec<Tensor> = data
                    .operands
                    .iter()
                    .enumerate()
                    .map(|(i, v)| random_tensor(&how.apply(i, f.ty(*v), &mut rng), &mut rng))
                    .collect();
                let refs: Vec<&Tensor> = operands.iter().collect();
                let results: Vec<TensorType> = data
                    .results
                    .iter()
                    .map(|v| how.apply(data.operands.len(), f.ty(*v), &mut rng))
                    .collect();
                evaluated += 1;
                let run = catch_unwind(AssertUnwindSafe(|| eval_op(&data.kind, &refs, &results)));
                let tys: Vec<String> = operands.iter().map(|t| t.ty().to_string()).collect();
                let show = || {
                    format!(
                        "seed {seed}: '{}' on ({}) -> {}",
                        data.kind.name(),
                        tys.join(", "),
                        results[0]
                    )
                };
                match run {
                    Err(_) => failures.push(format!("{} panicked", show())),
                    // What the verifier accepts, the interpreter must run.
                    Ok(Err(e))
                        if !e.to_string().contains("division by zero")
                            && verifies(&data.kind, &operands, &results) =>
                    {
                        failures.push(format!("{} verifies but fails: {e}", show()))
                    }
                    Ok(_) => {}
                }
            }
        }
    }
    assert!(evaluated > 10_000, "only {evaluated} ops evaluated");
    assert_no_failures(&failures);
}
