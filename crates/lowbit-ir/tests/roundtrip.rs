//! Text round trip: `parse(print(m)) == m` and `print(parse(print(m))) ==
//! print(m)` for random well-typed modules, plus a no-panic check on
//! corrupted text.

use lowbit_ir::parser::parse_module;
use lowbit_ir::printer::print_module;
use lowbit_ir::testing::random_module;
use lowbit_ir::Module;
use proptest::prelude::*;

fn round_trip(m: &Module) -> Result<(), String> {
    let text = print_module(m);
    let parsed = parse_module(&text).map_err(|d| format!("{}\nin:\n{text}", d[0]))?;
    if parsed != *m {
        return Err(format!(
            "parsed module differs:\n{text}\nreprinted:\n{}",
            print_module(&parsed)
        ));
    }
    let again = print_module(&parsed);
    if again != text {
        return Err(format!("reprinted text differs:\n{text}\nvs\n{again}"));
    }
    // Every op is mapped to the line it was printed on, at its first token.
    for f in &parsed.functions {
        for &op in f.ops() {
            let span = f.op_spans.get(&op).ok_or("op without a span")?;
            let line = text.lines().nth(span.line as usize - 1).unwrap_or("");
            if span.col != 5 || !line.starts_with("    %") {
                return Err(format!("op span {span} points at {line:?}"));
            }
        }
        if f.span.is_none() || f.return_span.is_none() {
            return Err(format!("@{} has no header or return span", f.name));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_modules_round_trip(seed in any::<u64>(), size in 0usize..40) {
        let m = random_module(seed, size);
        if let Err(e) = round_trip(&m) {
            prop_assert!(false, "seed {seed} size {size}: {e}");
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Corrupting printed text (cutting, deleting or replacing a span) gives
    /// an error or a module, never a panic.
    #[test]
    fn corrupted_text_never_panics(
        seed in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        len in 0usize..8,
        with in "[ -~\n]{0,3}",
    ) {
        let text = print_module(&random_module(seed, 8));
        let at = cut.index(text.len() + 1);
        let end = (at + len).min(text.len());
        let mut bad = text.clone();
        bad.replace_range(at..end, &with);
        let _ = parse_module(&bad);
    }
}

const SOUP: &[&str] = &[
    "%x",
    "%0",
    "%y",
    "=",
    ",",
    ":",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "<",
    ">",
    "->",
    "x",
    "tensor",
    "tensor<4xf32>",
    "tensor<2x2xi4",
    "#layout<",
    "msb",
    "tile",
    "=2x2",
    "interleave=",
    "bitplanes",
    "add",
    "relu",
    "constant",
    "dense<",
    "dense_resource<r0>",
    "\"0x0102\"",
    "\"0x1\"",
    "1",
    "-8",
    "1.5e3",
    "-inf",
    "nan",
    "99999999999999999999999",
    "axis",
    "perm",
    "true",
    "return",
    "func",
    "@g",
    "module",
    "{-#",
    "resources",
    "#-}",
    "r0",
    "//",
    "\n",
    "tensor<0xb1>",
    "i65",
    "fE9M9",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random token sequences after a valid function header exercise every
    /// error path; none may panic.
    #[test]
    fn token_soup_never_panics(picks in prop::collection::vec(0..SOUP.len(), 0..40)) {
        let mut src = String::from("func @f(%x: tensor<4xf32>) -> tensor<4xf32> {\n");
        for i in picks {
            src.push_str(SOUP[i]);
            src.push(' ');
        }
        let _ = parse_module(&src);
    }
}

/// A fixed seed sweep that also checks that the generator reaches every part
/// of the format, so the round trip above cannot silently test less.
#[test]
fn seed_sweep_round_trips_and_covers_the_format() {
    let mut all = String::new();
    for seed in 0..300 {
        let m = random_module(seed, 25);
        if let Err(e) = round_trip(&m) {
            panic!("seed {seed}: {e}");
        }
        all.push_str(&print_module(&m));
    }
    let features = [
        "dense<[",
        "dense<\"0x",
        "dense_resource<",
        "{-#",
        "#layout<msb",
        "tile=",
        "interleave=",
        "bitplanes",
        "xfE",
        "xf8E8M0FNU",
        "xb1",
        "xi3",
        "func @f1",
        "%in.",
        "nan",
        "inf",
        "block_size = ",
        "block_axes = ",
        "{axis = ",
        "rounding = ",
        "saturate = false",
        "saturate = true",
        "overflow = saturate",
        "trans_a = true",
        "alpha = ",
        "approximate = tanh",
        "epsilon = ",
        "perm = [",
        "output0: ",
        "y0: ",
    ];
    for f in features {
        assert!(all.contains(f), "no generated module contains {f:?}");
    }
    let ops = [
        "add",
        "sub",
        "mul",
        "div",
        "relu",
        "gelu",
        "silu",
        "quantize",
        "dequantize",
        "cast",
        "matmul",
        "gemm",
        "transpose",
        "reshape",
        "softmax",
        "layer_norm",
        "rms_norm",
        "relayout",
    ];
    for op in ops {
        assert!(
            all.contains(&format!("= {op} %")),
            "no generated module uses {op}"
        );
    }
}
