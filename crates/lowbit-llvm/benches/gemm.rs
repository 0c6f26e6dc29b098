//! Criterion benches of the CPU GEMM kernels, sized so that a whole run
//! takes about a minute: q4_0-like (i4, groups of 32, f16 scales) and
//! q8_0-like (i8, same) decoding (n = 1) and a small batch (n = 8) at
//! 4096 x 4096, the batch with opt-in activation quantization (the
//! block-dot kernel), the q4_0 decode and batch again with a bias + GELU
//! epilogue (its cost over the plain kernel), and W8A8 (u8 x i8 -> i32)
//! at n = 512 on 1024 x 1024. Weights rotate over copies larger than the last-level
//! cache (`lowbit_llvm::bench`, as `lowbit bench gemm`), so decoding reads
//! them from DRAM. Throughput is reported in weight bytes per call for the
//! memory-bound shapes and in multiply-adds for W8A8.
//!
//! Run: `cargo bench -p lowbit-llvm --bench gemm` (add a filter such as
//! `-- decode` to pick benches). Threads: all cores, or `LOWBIT_THREADS`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lowbit_llvm::bench::{BenchActivations, Rotation};
use lowbit_llvm::{compile, Activation, Dim, GemmSpec};
use lowbit_numerics::ElemType;
use std::hint::black_box;
use std::time::Duration;

fn threads() -> usize {
    std::env::var("LOWBIT_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Benches `spec` at `n` rows, weights rotated; `flops` reports the
/// throughput in multiply-adds instead of weight bytes.
fn bench_spec(c: &mut Criterion, name: &str, spec: GemmSpec, n: usize, flops: bool) {
    let kernel = compile(&spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let mut rotation = Rotation::for_spec(&spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let xs = BenchActivations::new(n, spec.k);
    let bias = vec![0.25f32; spec.m];
    let bias = spec.epilogue.bias.then_some(&bias[..]);
    let mut y = vec![0f32; n * spec.m];
    let mut yi = vec![0i32; n * spec.m];
    let threads = threads();
    let mut group = c.benchmark_group("gemm");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.throughput(if flops {
        Throughput::Elements((spec.m * spec.k * n) as u64)
    } else {
        Throughput::Bytes(rotation.copy_bytes() as u64)
    });
    group.bench_function(name, |b| {
        b.iter(|| {
            let w = rotation.next_copy();
            let r = if spec.is_integer() {
                kernel.run_int(xs.get(spec.act), w, &mut yi, n, threads)
            } else {
                kernel.run(xs.get(spec.act), w, bias, &mut y, n, threads)
            };
            r.unwrap_or_else(|e| panic!("{spec}: {e}"));
            black_box((&y, &yi));
        })
    });
    group.finish();
}

fn q_like(bits: &str, n: usize) -> GemmSpec {
    let dtype: ElemType = bits.parse().unwrap_or_else(|e| panic!("{bits}: {e}"));
    GemmSpec::new(4096, 4096, Dim::Static(n), dtype, 32)
}

fn gemm(c: &mut Criterion) {
    bench_spec(
        c,
        "decode q4_0-like 4096x4096 n=1",
        q_like("i4", 1),
        1,
        false,
    );
    let mut gelu1 = q_like("i4", 1);
    gelu1.epilogue.bias = true;
    gelu1.epilogue.activation = Activation::Gelu;
    bench_spec(
        c,
        "decode q4_0-like 4096x4096 n=1 +bias gelu",
        gelu1,
        1,
        false,
    );
    bench_spec(
        c,
        "decode q8_0-like 4096x4096 n=1",
        q_like("i8", 1),
        1,
        false,
    );
    bench_spec(c, "q4_0-like 4096x4096 n=8", q_like("i4", 8), 8, false);
    // The opt-in activation quantization (`--act-quant i8:32`): not the
    // exact product, see `codegen/blockdot.rs`.
    bench_spec(
        c,
        "q4_0 x q8_0 act-quant 4096x4096 n=8",
        GemmSpec::blockdot(4096, 4096, Dim::Static(8)),
        8,
        false,
    );
    let mut gelu = q_like("i4", 8);
    gelu.epilogue.bias = true;
    gelu.epilogue.activation = Activation::Gelu;
    bench_spec(c, "q4_0-like 4096x4096 n=8 +bias gelu", gelu, 8, false);
    let w8a8 = GemmSpec::int8(1024, 1024, Dim::Static(512), ElemType::U8);
    bench_spec(c, "W8A8 u8xi8 1024x1024 n=512", w8a8, 512, true);
}

criterion_group!(benches, gemm);
criterion_main!(benches);
