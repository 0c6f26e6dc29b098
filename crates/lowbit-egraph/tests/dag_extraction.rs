//! DAG-aware extraction on the benchmark's transformer: with tree costs a
//! deep graph's activations are charged once per path to them, so their
//! costs grow geometrically with depth and, in f64, swamp the few hundred
//! nanoseconds that separate a fused from an unfused projection; costing
//! each shared class once keeps the comparison exact at any depth.

#[allow(dead_code)]
#[path = "../benches/optimize.rs"]
mod bench;

use lowbit_egraph::{optimize_function, Config};

/// Every projection of a 32-layer decoder (7 per layer) is dequant-fused,
/// no `dequantize` is left, and every MLP gate takes its SiLU as an
/// epilogue, as in the one-layer graph.
#[test]
fn every_layer_of_a_deep_decoder_is_fused() {
    let cfg = Config::new("x86-64-v4".parse().unwrap());
    for layers in [1usize, 32] {
        let f = bench::transformer(layers, 256, 16);
        let o = optimize_function(&f, &cfg).unwrap();
        let count = |name: &str| o.report.ops.iter().filter(|r| r.op == name).count();
        assert_eq!(count("qmatmul"), 7 * layers, "{layers} layers");
        assert_eq!(count("dequantize"), 0, "{layers} layers");
        assert_eq!(count("silu"), 0, "{layers} layers");
        assert!(o
            .report
            .ops
            .iter()
            .filter(|r| r.op == "qmatmul")
            .all(|r| r.schedule == "dequant-fused"));
    }
}
