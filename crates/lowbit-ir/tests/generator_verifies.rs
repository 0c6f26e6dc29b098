//! The random-module generator and the verifier agree: every module that
//! `random_module` builds is well typed, so `verify_module` accepts it, both
//! as built and after a text round trip (where ops carry source spans).

use lowbit_ir::parser::parse_module;
use lowbit_ir::printer::print_module;
use lowbit_ir::testing::random_module;
use lowbit_ir::verifier::verify_module;

fn check(seed: u64, size: usize) -> Result<(), String> {
    let m = random_module(seed, size);
    let show = |d: Vec<lowbit_ir::diag::Diagnostic>, text: &str| {
        let msgs: Vec<String> = d.iter().map(|d| d.render("gen.lbir")).collect();
        format!("seed {seed} size {size}:\n{}\n{text}", msgs.join("\n"))
    };
    let text = print_module(&m);
    verify_module(&m).map_err(|d| show(d, &text))?;
    let parsed = parse_module(&text).map_err(|d| show(d, &text))?;
    verify_module(&parsed).map_err(|d| show(d, &text))
}

#[test]
fn every_generated_module_verifies() {
    let mut failures = Vec::new();
    for seed in 0..600 {
        for size in [0, 1, 5, 20, 40] {
            if let Err(e) = check(seed, size) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing modules; first:\n{}",
        failures.len(),
        failures[0]
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Seeds far from the fixed sweep, larger functions.
    #[test]
    fn random_seeds_verify(seed in proptest::prelude::any::<u64>(), size in 0usize..80) {
        if let Err(e) = check(seed, size) {
            proptest::prop_assert!(false, "{e}");
        }
    }
}
