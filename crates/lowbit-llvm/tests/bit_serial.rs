//! The bit-serial WxAy kernels against the reference interpreter: the IR's
//! `matmul_int x, transpose(w)[, za, zw] {schedule = bit_serial}` to `i32`
//! (wrapping), or `matmul` for `b1` weights, on random ragged shapes (k not
//! a multiple of 64 or 512, m and n not multiples of the tiles), across k
//! passes (n >= 4) and in the single pass of decoding (n < 4), on the host
//! and, on x86, on an AVX2-only CPU (the portable popcount).

mod common;

use common::{t, Rng};
use lowbit_interp::eval_op;
use lowbit_ir::{IntSchedule, OpKind, Overflow, Tensor, TensorType};
use lowbit_llvm::{compile, Activations, CpuTarget, Dim, GemmKernel, GemmSpec, PackedWeights};
use lowbit_numerics::ElemType;

fn random(rng: &mut Rng, elem: ElemType, shape: [usize; 2]) -> Tensor {
    let codes = (0..shape[0] * shape[1])
        .map(|_| rng.next() & elem.code_mask())
        .collect();
    Tensor::new(elem, vec![shape[0] as u64, shape[1] as u64], codes).unwrap()
}

/// The interpreter's result for `x [n, k]` times `w [m, k]` transposed,
/// with zero points `(za, zw)` as codes of the operand types.
fn reference(x: &Tensor, w: &Tensor, zps: Option<(u64, u64)>) -> Vec<i64> {
    let (n, k, m) = (x.shape[0], x.shape[1], w.shape[0]);
    let wt = eval_op(
        &OpKind::Transpose { perm: vec![1, 0] },
        &[w],
        &[TensorType::new(vec![k, m], w.elem)],
    )
    .unwrap()
    .remove(0);
    let rt = [TensorType::new(vec![n, m], ElemType::I32)];
    let y = if w.elem == ElemType::Bipolar {
        let op = OpKind::MatMul {
            overflow: Overflow::Wrap,
        };
        eval_op(&op, &[x, &wt], &rt)
    } else {
        let op = OpKind::MatMulInt {
            overflow: Overflow::Wrap,
            schedule: IntSchedule::BitSerial,
        };
        match zps {
            None => eval_op(&op, &[x, &wt], &rt),
            Some((za, zw)) => {
                let za = Tensor::new(x.elem, vec![], vec![za]).unwrap();
                let zw = Tensor::new(w.elem, vec![], vec![zw]).unwrap();
                eval_op(&op, &[x, &wt, &za, &zw], &rt)
            }
        }
    }
    .unwrap()
    .remove(0);
    y.to_i128().unwrap().into_iter().map(|v| v as i64).collect()
}

fn run(kernel: &GemmKernel, x: &Tensor, w: &Tensor, zps: Option<(u64, u64)>) -> Vec<i64> {
    let spec = kernel.spec();
    let packed = PackedWeights::pack_int(spec, w).unwrap();
    let n = x.shape[0] as usize;
    let mut y = vec![0i32; n * spec.m];
    let codes: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
    let acts = Activations::Codes(x.elem, &codes);
    match zps {
        None => kernel.run_int(acts, &packed, &mut y, n, 2).unwrap(),
        Some((za, zw)) => {
            let val = |e: ElemType, c: u64| e.decode_int(c).unwrap() as i32;
            kernel
                .run_int_zero_points(
                    acts,
                    &packed,
                    (val(x.elem, za), val(w.elem, zw)),
                    &mut y,
                    n,
                    2,
                )
                .unwrap()
        }
    }
    y.into_iter().map(i64::from).collect()
}

/// Checks `weight x act` on several ragged shapes, with zero points when
/// asked, on the host and (x86) on Haswell.
fn check(weight: &str, act: &str, zero_points: bool, seed: u64) {
    let (we, ae) = (t(weight), t(act));
    let mut rng = Rng(seed);
    let host = CpuTarget::host().unwrap();
    // (m, k, n): tails of every tile shape, k below, across and far past
    // one 512-element plane block, several k passes at n >= 4.
    let shapes = [
        (1, 1, 1),
        (7, 513, 5),
        (5, 1000, 3),
        (9, 70, 6),
        (6, 4700, 9),
        (3, 20_000, 4),
    ];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        let w = random(&mut rng, we, [m, k]);
        let x = random(&mut rng, ae, [n, k]);
        let zps = zero_points.then(|| (rng.next() & ae.code_mask(), rng.next() & we.code_mask()));
        let want = reference(&x, &w, zps);
        let mut spec = GemmSpec::bit_serial(m, k, Dim::Dynamic, we, ae);
        spec.weight.zero_point = zero_points;
        let kernel = compile(&spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(
            run(&kernel, &x, &w, zps),
            want,
            "{spec} (m, k, n) = ({m}, {k}, {n})"
        );
        if host.triple.starts_with("x86_64") && i < 4 {
            let hsw = CpuTarget::named("x86_64", "haswell").unwrap();
            let portable = GemmKernel::compile_uncached(&spec, &hsw).unwrap();
            assert_eq!(run(&portable, &x, &w, zps), want, "{spec} (avx2)");
        }
    }
}

#[test]
fn w2a2_unsigned_is_bit_exact() {
    check("u2", "u2", false, 1);
}

#[test]
fn w2a2_signed_is_bit_exact() {
    check("i2", "i2", false, 2);
}

#[test]
fn w2a2_mixed_signs_are_bit_exact() {
    check("i2", "u2", false, 3);
    check("u2", "i2", false, 4);
}

#[test]
fn w1a8_bipolar_weights_are_bit_exact() {
    check("b1", "i8", false, 5);
    check("b1", "u8", false, 6);
}

#[test]
fn w1a8_one_bit_integer_weights_are_bit_exact() {
    check("u1", "i8", false, 7);
    check("i1", "u8", false, 8);
}

#[test]
fn w3a4_is_bit_exact() {
    check("i3", "u4", false, 9);
    check("u3", "i4", true, 10);
}

#[test]
fn w4a4_with_zero_points_is_bit_exact() {
    check("u4", "u4", true, 11);
    check("i4", "i4", true, 12);
}

/// `b1 x b1` asked for on the bit-serial schedule is the W1A1 xor kernel.
#[test]
fn w1a1_under_the_bit_serial_schedule_is_bit_exact() {
    let mut rng = Rng(15);
    for (m, k, n) in [(7, 513, 5), (3, 2000, 1), (9, 64, 4)] {
        let spec = GemmSpec::bit_serial(m, k, Dim::Dynamic, ElemType::Bipolar, ElemType::Bipolar);
        assert!(spec.is_binary() && !spec.is_bit_serial(), "{spec}");
        let w = random(&mut rng, ElemType::Bipolar, [m, k]);
        let x = random(&mut rng, ElemType::Bipolar, [n, k]);
        assert_eq!(
            run(&compile(&spec).unwrap(), &x, &w, None),
            reference(&x, &w, None),
            "{spec}"
        );
    }
}

/// Pairs too wide for per-pair accumulators take the shift-and-add form.
#[test]
fn wide_pairs_shift_and_add_bit_exact() {
    check("i8", "u8", true, 13);
    check("u5", "i6", false, 14);
}

/// A sum past i32 wraps exactly like the interpreter's `overflow = wrap`.
#[test]
fn bit_serial_wraps_like_the_interpreter() {
    let (m, k, n) = (2, 40_000, 2);
    let w = Tensor::new(t("u8"), vec![m, k], vec![255; (m * k) as usize]).unwrap();
    let x = Tensor::new(t("u8"), vec![n, k], vec![255; (n * k) as usize]).unwrap();
    let zps = Some((0, 0));
    let mut spec = GemmSpec::bit_serial(m as usize, k as usize, Dim::Static(2), t("u8"), t("u8"));
    spec.weight.zero_point = true;
    let want = reference(&x, &w, zps);
    assert!(want.iter().all(|&v| v != 255 * 255 * k as i64));
    assert_eq!(run(&compile(&spec).unwrap(), &x, &w, zps), want);
}

/// Specs the bit-serial kernel cannot run say why.
#[test]
fn unsupported_bit_serial_specs_are_refused() {
    let bad = [
        GemmSpec::bit_serial(4, 64, Dim::Dynamic, t("i16"), t("u8")),
        GemmSpec::bit_serial(4, 64, Dim::Dynamic, t("u4"), t("f32")),
        GemmSpec::bit_serial(4, 64, Dim::Dynamic, t("u4"), t("i9")),
        {
            let mut s = GemmSpec::bit_serial(4, 64, Dim::Dynamic, ElemType::Bipolar, t("u8"));
            s.weight.zero_point = true;
            s
        },
    ];
    for s in bad {
        let e = s.check("host").unwrap_err().to_string();
        assert!(e.contains("gemm"), "{s}: {e}");
    }
    // Without the schedule, narrow weights are not W8A8.
    let direct = GemmSpec {
        schedule: IntSchedule::Direct,
        ..GemmSpec::bit_serial(4, 64, Dim::Dynamic, t("u2"), t("u2"))
    };
    let e = direct.check("host").unwrap_err().to_string();
    assert!(e.contains("bit-serial"), "{e}");
}

/// The packed weights are the IR type `[m, k_pad]` with layout
/// `tile = 1x512, bitplanes`.
#[test]
fn packed_weights_are_the_ir_bitplane_type() {
    let mut rng = Rng(99);
    let spec = GemmSpec::bit_serial(3, 600, Dim::Dynamic, t("i3"), t("u2"));
    let w = random(&mut rng, t("i3"), [3, 600]);
    let packed = PackedWeights::pack_int(&spec, &w).unwrap();
    let ty = packed.ir_type();
    assert_eq!(
        ty.to_string(),
        "tensor<3x1024xi3, #layout<tile=1x512, bitplanes>>"
    );
    let back = Tensor::from_bytes(&ty, packed.codes()).unwrap();
    for r in 0..3 {
        assert_eq!(
            back.codes[r * 1024..r * 1024 + 600],
            w.codes[r * 600..(r + 1) * 600]
        );
        assert!(back.codes[r * 1024 + 600..(r + 1) * 1024]
            .iter()
            .all(|&c| c == 0));
    }
}
