//! The block-dot path (opt-in activation quantization) against the
//! interpreter: the per-call activation codes and scales equal the
//! interpreter's `absmax_scale` + `quantize` bit for bit, and the kernel's
//! result is within the bound `codegen/blockdot.rs` declares of the
//! interpreter's `matmul(dequantize(q_x, s_x), transpose(dequantize(w,
//! s_w)))`, on random ragged shapes (n = 1, 3, 8, 17; m not a multiple of
//! 16; k not a multiple of 32), `i4` and `i8` weights, on 1 and 2 threads,
//! static and dynamic n.

mod common;

use common::{f32_tensor, interp_quantize, t, BlockdotCase, Rng};
use lowbit_ir::Tensor;
use lowbit_llvm::actquant::quantize_activations;
use lowbit_llvm::{compile, CpuError, Dim, GemmSpec, PackedWeights};
use lowbit_numerics::ElemType;

/// Activation values with the edge cases of the scale rule: all-zero
/// blocks, signed zeros, subnormals, tiny and large magnitudes, ties.
fn awkward_values(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| match (i / 32) % 6 {
            0 => 0.0,
            1 => {
                if i % 2 == 0 {
                    -0.0
                } else {
                    f32::from_bits(1 + (rng.next() % 50) as u32)
                }
            }
            2 => (rng.unit() as f32 - 0.5) * 1e-38,
            // Scale 1 (the block starts with 127) and half-integers:
            // ties, rounded to even.
            3 if i % 32 == 0 => 127.0,
            3 => ((rng.next() % 255) as f32 - 127.0) * 0.5,
            4 => (rng.unit() as f32 - 0.5) * 3e38,
            _ => (rng.unit() as f32 - 0.5) * 4.0,
        })
        .collect()
}

#[test]
fn activation_codes_and_scales_equal_the_interpreter() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for &(n, k) in &[(1usize, 32usize), (3, 70), (8, 200), (17, 45)] {
        let spec = GemmSpec::blockdot(16, k, Dim::Dynamic);
        let mut x = awkward_values(&mut rng, n * k);
        // A NaN and infinities in some blocks.
        if n * k > 100 {
            x[5] = f32::NAN;
            x[70] = f32::INFINITY;
            x[99] = f32::NEG_INFINITY;
        }
        let xt = f32_tensor(&[n as u64, k as u64], &x);
        let (s, q) = interp_quantize(&xt);
        for threads in [1, 2] {
            let got = quantize_activations(&spec, &x, n, threads);
            let k_pad = spec.k_pad();
            let nb = k_pad / 32;
            for r in 0..n {
                for j in 0..k_pad {
                    let want = if j < k {
                        q.codes[r * k + j] as u8 as i8
                    } else {
                        0
                    };
                    assert_eq!(
                        got.codes[r * k_pad + j],
                        want,
                        "code ({r}, {j}) of n={n} k={k}, x = {}",
                        x.get(r * k + j).copied().unwrap_or(0.0)
                    );
                }
                for b in 0..nb {
                    let want = s.codes[r * nb + b] as u32;
                    assert_eq!(
                        got.scales[r * nb + b].to_bits(),
                        want,
                        "scale ({r}, {b}) of n={n} k={k}"
                    );
                    let sum: i32 = got.codes[r * k_pad + 32 * b..r * k_pad + 32 * (b + 1)]
                        .iter()
                        .map(|&c| i32::from(c))
                        .sum();
                    assert_eq!(got.corrections[r * nb + b], -8 * sum);
                }
            }
        }
    }
}

/// Runs one random case through the kernel and the interpreter.
fn check_case(rng: &mut Rng, m: usize, k: usize, n: usize, dim: Dim, threads: usize, wdt: &str) {
    let case = BlockdotCase::random(rng, m, k, n, dim, wdt);
    let kernel = compile(&case.spec).unwrap();
    let y = case.run(&kernel, threads);
    case.assert_within_bound(&y, &format!("threads={threads}"));
}

#[test]
fn kernel_is_within_the_bound_on_ragged_shapes() {
    let mut rng = Rng(0x0bad_cafe_f00d_d00d);
    for &(m, k, n) in &[
        (1usize, 32usize, 1usize),
        (21, 45, 3),
        (37, 100, 8),
        (50, 257, 17),
        (16, 64, 8),
        (70, 31, 1),
    ] {
        // q4_0-style i4 weights and q8_0-style i8 weights.
        for wt in ["i4", "i8"] {
            for threads in [1, 2] {
                check_case(&mut rng, m, k, n, Dim::Static(n), threads, wt);
            }
            check_case(&mut rng, m, k, n, Dim::Dynamic, 2, wt);
        }
    }
}

#[test]
fn groups_of_64_and_a_static_n_mismatch() {
    let mut rng = Rng(7);
    // Group 64: two blocks share each weight scale.
    let mut spec = GemmSpec::blockdot(20, 130, Dim::Static(2));
    spec.weight.granularity = lowbit_llvm::WeightGranularity::Group(64);
    let wq = Tensor::new(
        t("i4"),
        vec![20, 130],
        (0..20 * 130).map(|_| rng.next() & 0xF).collect(),
    )
    .unwrap();
    let scales = Tensor::from_f64(ElemType::F16, vec![20, 3], &[0.5; 60]).unwrap();
    let packed = PackedWeights::pack(&spec, &wq, &scales, None).unwrap();
    let kernel = compile(&spec).unwrap();
    // Activations that quantize exactly (integers, and every block starts
    // with 127, so each block's scale is 1): the result is the exact
    // integer product times 0.5.
    let x: Vec<f32> = (0..2 * 130)
        .map(|i| {
            if (i % 130) % 32 == 0 {
                127.0
            } else {
                ((i * 37) % 255) as f32 - 127.0
            }
        })
        .collect();
    let mut y = vec![0f32; 2 * 20];
    kernel
        .run(x.as_slice(), &packed, None, &mut y, 2, 2)
        .unwrap();
    for c in 0..2 {
        for r in 0..20 {
            let exact: i64 = (0..130)
                .map(|j| {
                    let w = ((wq.codes[r * 130 + j] as i64) << 60) >> 60;
                    w * x[c * 130 + j] as i64
                })
                .sum();
            assert_eq!(f64::from(y[c * 20 + r]), exact as f64 * 0.5, "y[{c}, {r}]");
        }
    }
    let err = kernel
        .run(x.as_slice(), &packed, None, &mut y, 3, 1)
        .unwrap_err();
    assert!(matches!(err, CpuError::BufferSize { .. }), "{err}");
}

#[test]
fn unsupported_block_dot_specs_say_why() {
    let mut spec = GemmSpec::blockdot(16, 64, Dim::Dynamic);
    spec.weight.scale = ElemType::F32;
    let e = spec.check("host").unwrap_err().to_string();
    assert!(e.contains("f16 weight scales"), "{e}");
    let mut spec = GemmSpec::blockdot(16, 64, Dim::Dynamic);
    spec.weight.dtype = t("u4");
    let e = spec.check("host").unwrap_err().to_string();
    assert!(e.contains("i4 (q4_0) or i8 (q8_0) weights"), "{e}");
    let mut spec = GemmSpec::blockdot(16, 64, Dim::Dynamic);
    spec.act_quant = Some(lowbit_llvm::ActQuant { bits: 4, block: 32 });
    let e = spec.check("host").unwrap_err().to_string();
    assert!(e.contains("i8 per 32-block"), "{e}");
}

/// A static `n = 1` runs four panels per tile call and a one-panel tile
/// for the last 1-3 of a row range: panel counts
/// 1, 3, 6, 8, 9, 19 and 69 with ragged m and k, on one thread (all
/// panels in one call) and two (row chunks of 8-72 rows, so some groups
/// start and end mid-panel and rely on the row mask).
#[test]
fn panel_groups_at_n_1_with_remainders() {
    let mut rng = Rng(0x5eed_0f0f_ba11_0001);
    for &(m, k) in &[
        (45usize, 77usize),
        (300, 333),
        (16, 40),
        (87, 64),
        (128, 96),
        (141, 32),
        (1100, 333),
    ] {
        for wt in ["i4", "i8"] {
            for threads in [1, 2] {
                check_case(&mut rng, m, k, 1, Dim::Static(1), threads, wt);
            }
        }
    }
}

/// Row chunks shrink towards the end of the rows (`jit.rs`
/// `row_chunks`: 4-panel groups at n = 1, 8-row tiles at other n):
/// m long enough for several chunk sizes, ragged m and k, on one, two and
/// three threads.
#[test]
fn shrinking_row_chunks_with_ragged_ends() {
    let mut rng = Rng(0x5eed_0f0f_ba11_0003);
    for &(m, k, n, dim) in &[
        (2050usize, 64usize, 1usize, Dim::Static(1)),
        (1000, 45, 1, Dim::Static(1)),
        (777, 40, 3, Dim::Static(3)),
    ] {
        for wt in ["i4", "i8"] {
            for threads in [1, 2, 3] {
                check_case(&mut rng, m, k, n, dim, threads, wt);
            }
        }
    }
}

/// Other n run two panels per tile call (`btile_8x2`, `btile_1x2`), a last
/// odd panel of a row range computed twice: panel counts 1, 2,
/// 3 and 5 with ragged m and k, n = 2, 8, 9 (eight columns, then one),
/// 16 (two 8-column tiles, no one-column tile) and 11 at a run-time n, on
/// one thread and two (row chunks that start and end mid-panel).
#[test]
fn panel_pairs_at_other_n_with_remainders() {
    let mut rng = Rng(0x5eed_0f0f_ba11_0002);
    for &(m, k, n, dim) in &[
        (13usize, 45usize, 2usize, Dim::Static(2)),
        (32, 64, 8, Dim::Static(8)),
        (45, 77, 9, Dim::Static(9)),
        (80, 33, 16, Dim::Static(16)),
        (70, 100, 11, Dim::Dynamic),
        (37, 96, 8, Dim::Dynamic),
    ] {
        for wt in ["i4", "i8"] {
            for threads in [1, 2] {
                check_case(&mut rng, m, k, n, dim, threads, wt);
            }
        }
    }
}

/// The tile functions a block-dot module holds: panel-group tiles (n > 1:
/// a last group past the row range repeats its last panel; n = 1: a
/// one-panel tile takes the last panels), and one-column tiles only where
/// the columns do not divide into tile-wide ones (each tile costs JIT
/// time).
#[test]
fn block_dot_modules_hold_only_the_tiles_they_call() {
    use inkwell::context::Context;
    use lowbit_llvm::codegen::build_module;
    use lowbit_llvm::CpuTarget;
    let target = CpuTarget::named("x86_64", "sapphirerapids").unwrap();
    let tiles = |n: Dim| -> Vec<String> {
        let ctx = Context::create();
        let module = build_module(&ctx, &GemmSpec::blockdot(4096, 1024, n), &target).unwrap();
        let mut names: Vec<String> = module
            .get_functions()
            .filter(|f| f.count_basic_blocks() > 0)
            .map(|f| f.get_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("btile_"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(tiles(Dim::Static(1)), ["btile_1", "btile_1x4"]);
    assert_eq!(tiles(Dim::Static(8)), ["btile_8x2"]);
    assert_eq!(tiles(Dim::Static(16)), ["btile_8x2"]);
    assert_eq!(tiles(Dim::Static(3)), ["btile_3x2"]);
    assert_eq!(tiles(Dim::Static(9)), ["btile_1x2", "btile_8x2"]);
    assert_eq!(tiles(Dim::Dynamic), ["btile_1x2", "btile_8x2"]);
}
