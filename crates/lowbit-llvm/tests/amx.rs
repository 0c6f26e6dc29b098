//! The AMX-INT8 W8A8 schedule (`GemmKernel::compile_amx`) against the
//! interpreter's `matmul` to `i32`, bit for bit: ragged m (partial panels,
//! an odd number of panels, rows split between threads inside a panel),
//! n (not a multiple of the 32 activation rows a block takes) and k (not
//! a multiple of the 64-element tile depth), `u8` and `i8` activations;
//! and the specs and hosts it refuses.

use lowbit_interp::eval_op;
use lowbit_ir::{OpKind, Overflow, Tensor, TensorType};
use lowbit_llvm::{
    Activations, CpuError, CpuTarget, Dim, Epilogue, GemmKernel, GemmSpec, PackedWeights,
};
use lowbit_numerics::ElemType;

fn t(s: &str) -> ElemType {
    s.parse().unwrap()
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_codes(rng: &mut Rng, elem: ElemType, rows: usize, cols: usize) -> Tensor {
    let codes = (0..rows * cols).map(|_| rng.next() & 0xff).collect();
    Tensor::new(elem, vec![rows as u64, cols as u64], codes).unwrap()
}

/// The interpreter's `x · wᵀ` as `i32` (wrapping).
fn int_reference(x: &Tensor, w: &Tensor) -> Vec<i32> {
    let (m, k) = (w.shape[0], w.shape[1]);
    let wt = eval_op(
        &OpKind::Transpose { perm: vec![1, 0] },
        &[w],
        &[TensorType::new(vec![k, m], w.elem)],
    )
    .unwrap()
    .remove(0);
    let y = eval_op(
        &OpKind::MatMul {
            overflow: Overflow::Wrap,
        },
        &[x, &wt],
        &[TensorType::new(vec![x.shape[0], m], ElemType::I32)],
    )
    .unwrap()
    .remove(0);
    y.to_i128().unwrap().into_iter().map(|v| v as i32).collect()
}

fn has_amx() -> bool {
    let host = CpuTarget::host().unwrap();
    let llvm = host.has("amx-tile") && host.has("amx-int8");
    // So that the bit-exactness test cannot skip silently where the CPU
    // has AMX: Linux lists it in /proc/cpuinfo, and LLVM must agree.
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let listed = info.contains(" amx_tile") && info.contains(" amx_int8");
        assert_eq!(
            llvm, listed,
            "LLVM's host features and /proc/cpuinfo disagree on AMX"
        );
    }
    llvm
}

#[test]
fn amx_w8a8_is_bit_exact() {
    if !has_amx() {
        // Covered by `amx_refuses_what_it_cannot_run` on such hosts.
        return;
    }
    let mut rng = Rng(0xa3c5);
    for case_no in 0..18 {
        let act = if case_no % 2 == 0 { t("u8") } else { t("i8") };
        // The last cases span several row blocks (8 panel pairs), column
        // blocks (256 activation rows) and k blocks (512).
        let big = case_no >= 14;
        let m = 1 + rng.below(if big { 700 } else { 120 }) as usize;
        let k = 1 + rng.below(if big { 1300 } else { 1500 }) as usize;
        let n = 1 + rng.below(if big { 600 } else { 70 }) as usize;
        let dim = if case_no % 3 == 0 {
            Dim::Dynamic
        } else {
            Dim::Static(n)
        };
        let spec = GemmSpec::int8(m, k, dim, act);
        let w = random_codes(&mut rng, t("i8"), m, k);
        let x = random_codes(&mut rng, act, n, k);
        let want = int_reference(&x, &w);
        let kernel = GemmKernel::compile_amx(&spec).unwrap();
        let packed = PackedWeights::pack_int(&spec, &w).unwrap();
        let u: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
        let i: Vec<i8> = x.codes.iter().map(|&c| c as u8 as i8).collect();
        for threads in [1, 2] {
            let xs = if act == t("u8") {
                Activations::U8(&u)
            } else {
                Activations::I8(&i)
            };
            let mut y = vec![0i32; n * m];
            kernel.run_int(xs, &packed, &mut y, n, threads).unwrap();
            assert_eq!(y, want, "{spec} n={n}, {threads} threads");
        }
    }
}

#[test]
fn amx_refuses_what_it_cannot_run() {
    let unsupported = |spec: &GemmSpec| {
        matches!(
            GemmKernel::compile_amx(spec),
            Err(CpuError::Unsupported { .. })
        )
    };
    // 4-bit weights and epilogues are not on this schedule.
    assert!(unsupported(&GemmSpec::int(
        64,
        64,
        Dim::Dynamic,
        t("i4"),
        t("u8")
    )));
    let mut biased = GemmSpec::int8(64, 64, Dim::Dynamic, t("u8"));
    biased.epilogue = Epilogue {
        bias: true,
        ..Epilogue::default()
    };
    assert!(unsupported(&biased));
    // A plain W8A8 spec compiles exactly where the host has AMX-INT8.
    let plain = GemmSpec::int8(64, 64, Dim::Dynamic, t("u8"));
    assert_eq!(!unsupported(&plain), has_amx());
}
