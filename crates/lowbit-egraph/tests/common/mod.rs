//! Helpers shared by the e-graph tests: parse, optimize, compare on the
//! interpreter.
#![allow(dead_code)]

use lowbit_egraph::{optimize_function, Config, Optimized};
use lowbit_ir::parser::parse_module;
use lowbit_ir::printer;
use lowbit_ir::target::Target;
use lowbit_ir::{Function, Tensor, TensorType};

/// Parses a module and returns its first function.
pub fn parse(src: &str) -> Function {
    match parse_module(src) {
        Ok(mut m) => m.functions.remove(0),
        Err(d) => panic!("{d:?}"),
    }
}

/// Optimizes with the given rule sets and target.
pub fn optimize(f: &Function, rules: &[&str], target: &str) -> Optimized {
    let mut cfg = Config::new(target.parse::<Target>().unwrap());
    cfg.rules = rules.iter().map(|s| s.to_string()).collect();
    let o = optimize_function(f, &cfg).unwrap_or_else(|e| panic!("{e}"));
    let diags = lowbit_ir::verifier::verify_function(&o.function);
    assert!(diags.is_empty(), "{diags:?}\n{}", text(&o.function));
    o
}

/// The function as text.
pub fn text(f: &Function) -> String {
    let m = lowbit_ir::Module {
        functions: vec![f.clone()],
    };
    printer::print_module(&m)
}

/// Op names, constants left out.
pub fn op_names(f: &Function) -> Vec<&'static str> {
    f.ops()
        .iter()
        .map(|&o| f.op(o).kind.name())
        .filter(|n| *n != "constant")
        .collect()
}

/// A small deterministic generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A random tensor of a type: integers over their whole range, floats in
/// [-4, 4] with a few special values.
pub fn random_tensor(ty: &TensorType, rng: &mut Rng) -> Tensor {
    let n = ty.num_elements() as usize;
    if ty.elem.is_float() {
        let vals: Vec<f64> = (0..n)
            .map(|_| match rng.next() % 16 {
                0 => 0.0,
                1 => -0.0,
                _ => ((rng.next() % 8001) as f64 - 4000.0) / 1000.0,
            })
            .collect();
        Tensor::from_f64(ty.elem, ty.shape.clone(), &vals).unwrap()
    } else {
        let codes = (0..n).map(|_| rng.next() & ty.elem.code_mask()).collect();
        Tensor::new(ty.elem, ty.shape.clone(), codes).unwrap()
    }
}

/// One random tensor for every parameter of `f`, by name: the inputs
/// each comparison below feeds to both functions.
fn random_inputs(f: &Function, rng: &mut Rng) -> Vec<(String, Tensor)> {
    f.params
        .iter()
        .map(|(n, v)| (n.clone(), random_tensor(f.ty(*v), rng)))
        .collect()
}

/// Runs both functions on the same random inputs and asserts bit-exact
/// equal outputs. Where the input function fails (an integer division by
/// zero, say) the optimized one may do anything: it may have dropped the
/// failing dead op.
pub fn assert_same_on_interp(a: &Function, b: &Function, seed: u64, trials: usize) -> usize {
    let mut rng = Rng(seed | 1);
    let mut compared = 0;
    for _ in 0..trials {
        let inputs = random_inputs(a, &mut rng);
        let ra = lowbit_interp::run_function(a, &inputs);
        let rb = lowbit_interp::run_function(b, &inputs);
        match (ra, rb) {
            (Ok(x), Ok(y)) => {
                for ((na, ta), (_, tb)) in x.iter().zip(&y) {
                    assert_eq!(
                        ta.codes,
                        tb.codes,
                        "output {na} differs\n{}\n{}",
                        text(a),
                        text(b)
                    );
                }
                compared += 1;
            }
            (Err(_), _) => {}
            (Ok(_), Err(e)) => panic!(
                "the optimized function failed: {e}\n{}\n{}",
                text(a),
                text(b)
            ),
        }
    }
    compared
}

/// Runs both functions on the same random inputs and asserts that every
/// integer output differs by at most `units`; returns the number of runs
/// compared and the largest difference seen.
pub fn compare_within(
    a: &Function,
    b: &Function,
    seed: u64,
    trials: usize,
    units: i128,
) -> (usize, i128) {
    let mut rng = Rng(seed | 1);
    let (mut compared, mut worst) = (0, 0i128);
    for _ in 0..trials {
        let inputs = random_inputs(a, &mut rng);
        let Ok(x) = lowbit_interp::run_function(a, &inputs) else {
            continue;
        };
        let y = lowbit_interp::run_function(b, &inputs)
            .unwrap_or_else(|e| panic!("the optimized function failed: {e}\n{}", text(b)));
        for ((na, ta), (_, tb)) in x.iter().zip(&y) {
            let (va, vb) = (ta.to_i128().unwrap(), tb.to_i128().unwrap());
            for (p, q) in va.iter().zip(&vb) {
                let d = (p - q).abs();
                worst = worst.max(d);
                assert!(
                    d <= units,
                    "output {na}: {p} vs {q}\n{}\n{}",
                    text(a),
                    text(b)
                );
            }
        }
        compared += 1;
    }
    (compared, worst)
}

/// Unit roundoff and half the smallest subnormal of a float type (f16,
/// bf16, f32).
pub fn roundoff(elem: lowbit_ir::ElemType) -> (f64, f64) {
    match elem.to_string().as_str() {
        "f16" => (2f64.powi(-11), 2f64.powi(-25)),
        "bf16" => (2f64.powi(-8), 2f64.powi(-134)),
        "f32" => (2f64.powi(-24), 2f64.powi(-150)),
        other => panic!("no roundoff for {other}"),
    }
}

/// For a function of one float input `x` (`[.., m, k]`) whose output is
/// `x @ W` with `W` (`k x n`, row-major f64 values) dequantized: runs both
/// functions on random inputs and asserts every output element of `b`
/// is within `5u·Σ_k|x_k·w_k| + 4η` of `a`'s (the mixed decomposition's
/// declared bound). Returns the runs compared and the largest error seen
/// as a fraction of the bound.
pub fn mixed_bound_holds(
    a: &Function,
    b: &Function,
    w: &[f64],
    (k, n): (usize, usize),
    seed: u64,
    trials: usize,
) -> (usize, f64) {
    let mut rng = Rng(seed | 1);
    let (mut compared, mut worst) = (0, 0f64);
    for _ in 0..trials {
        let inputs = random_inputs(a, &mut rng);
        let x = inputs[0].1.to_f64();
        let ya = lowbit_interp::run_function(a, &inputs).unwrap();
        let yb = lowbit_interp::run_function(b, &inputs).unwrap();
        let (ta, tb) = (&ya[0].1, &yb[0].1);
        let (u, eta) = roundoff(ta.elem);
        let (va, vb) = (ta.to_f64(), tb.to_f64());
        for (i, (p, q)) in va.iter().zip(&vb).enumerate() {
            let (row, col) = (i / n, i % n);
            let mag: f64 = (0..k)
                .map(|kk| (x[row * k + kk] * w[kk * n + col]).abs())
                .sum();
            let bound = 5.0 * u * mag + 4.0 * eta;
            let d = (p - q).abs();
            assert!(
                d <= bound,
                "element {i}: {p} vs {q}, |d| = {d:e} > {bound:e}\n{}\n{}",
                text(a),
                text(b)
            );
            if bound > 0.0 {
                worst = worst.max(d / bound);
            }
        }
        compared += 1;
    }
    (compared, worst)
}
