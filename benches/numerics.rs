//! Conversions per second between `f32` and each format, in both
//! directions, beside the `copy_from_slice` ceiling on the same buffers.
//!
//! Run: `cargo bench -p lowbit-numerics --bench numerics`
//! (add `-- encode/f8E4M3FN` etc. to filter).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lowbit_numerics::block::{
    dequantize, dequantize_reference, quantize, quantize_reference, BlockFormat,
};
use lowbit_numerics::convert::{simd_level, Codec};
use lowbit_numerics::pack::{merge_bitplanes, plane_words, split_bitplanes};
use lowbit_numerics::{ElemType, EncodeOptions, Rounding};
use std::time::Duration;

/// Elements per buffer: 64 Ki f32 = 256 KiB in, at most as much out.
const N: usize = 1 << 16;

const FORMATS: [&str; 10] = [
    "f8E4M3FN",
    "f8E4M3FNUZ",
    "f8E5M2",
    "f6E2M3FN",
    "f6E3M2FN",
    "f4E2M1FN",
    "f8E8M0FNU",
    "f16",
    "bf16",
    "tf32",
];

fn input() -> Vec<f32> {
    let mut s = 0x1234_5678u64;
    (0..N)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u32 << 24) as f32 - 0.5) * 600.0
        })
        .collect()
}

fn run<C: lowbit_numerics::convert::Code>(c: &mut Criterion, xs: &[f32], name: &str) {
    let elem: ElemType = name.parse().unwrap_or(ElemType::F32);
    let codec = Codec::new(elem, EncodeOptions::new(Rounding::NearestEven, true));
    let mut codes = vec![C::default(); N];
    let mut back = vec![0f32; N];
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| codec.encode(black_box(xs), &mut codes))
    });
    g.finish();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| codec.decode(black_box(&codes), &mut back))
    });
    g.finish();
}

fn conversions(c: &mut Criterion) {
    eprintln!("bulk conversion level: {}", simd_level());
    let xs = input();
    for name in FORMATS {
        let bits = name.parse::<ElemType>().map(|e| e.bits()).unwrap_or(32);
        if bits <= 8 {
            run::<u8>(c, &xs, name);
        } else if bits <= 16 {
            run::<u16>(c, &xs, name);
        } else {
            run::<u32>(c, &xs, name);
        }
    }
    // A directed mode takes the general lane (nearest-even has a shortcut).
    let tz = Codec::new(
        "f8E4M3FN".parse().unwrap_or(ElemType::F32),
        EncodeOptions::new(Rounding::TowardZero, true),
    );
    let mut codes = vec![0u8; N];
    let mut g = c.benchmark_group("encode_toward_zero");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("f8E4M3FN", |b| {
        b.iter(|| tz.encode(black_box(&xs), &mut codes))
    });
    g.finish();
    // The scalar encoder, for comparison.
    let e4m3: ElemType = "f8E4M3FN".parse().unwrap_or(ElemType::F32);
    let mut out = vec![0u8; N];
    let mut g = c.benchmark_group("encode_scalar");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("f8E4M3FN", |b| {
        b.iter(|| {
            for (x, o) in black_box(&xs).iter().zip(out.iter_mut()) {
                *o = e4m3.encode(*x as f64, Rounding::NearestEven, true) as u8;
            }
        })
    });
    g.finish();
}

fn ceiling(c: &mut Criterion) {
    let xs = input();
    let mut g = c.benchmark_group("memcpy");
    for (label, bytes) in [("f32 (4 B/elem)", 4usize), ("u8 (1 B/elem)", 1)] {
        let src = vec![0u8; N * bytes];
        let mut dst = vec![0u8; N * bytes];
        g.throughput(Throughput::Elements(N as u64));
        g.bench_function(label, |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
    }
    let mut dst = vec![0f32; N];
    g.bench_function("f32 slice", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&xs)))
    });
    g.finish();
}

fn blocks(c: &mut Criterion) {
    let xs = input();
    let mut g = c.benchmark_group("block");
    g.throughput(Throughput::Elements(N as u64));
    for name in ["mxfp8_e4m3", "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4"] {
        let Ok(f) = name.parse::<BlockFormat>() else {
            continue;
        };
        g.bench_function(format!("quantize/{name}"), |b| {
            b.iter(|| quantize(&f, black_box(&xs), &[N / 256, 256], 1))
        });
        if let Ok(q) = quantize(&f, &xs, &[N / 256, 256], 1) {
            g.bench_function(format!("dequantize/{name}"), |b| {
                b.iter(|| dequantize(black_box(&q)))
            });
            // The element-by-element oracle, for comparison within one run.
            if name != "mxfp6_e2m3" && name != "mxint8" {
                g.bench_function(format!("quantize_reference/{name}"), |b| {
                    b.iter(|| quantize_reference(&f, black_box(&xs), &[N / 256, 256], 1))
                });
                g.bench_function(format!("dequantize_reference/{name}"), |b| {
                    b.iter(|| dequantize_reference(black_box(&q)))
                });
            }
        }
    }
    let codes: Vec<u8> = (0..N).map(|i| (i * 7 % 16) as u8).collect();
    let mut planes = vec![0u64; plane_words(N) * 4];
    let mut back = vec![0u8; N];
    g.bench_function("split_bitplanes/4", |b| {
        b.iter(|| split_bitplanes(black_box(&codes), 4, &mut planes))
    });
    g.bench_function("merge_bitplanes/4", |b| {
        b.iter(|| merge_bitplanes(black_box(&planes), 4, &mut back))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
}

criterion_group! {
    name = benches;
    config = config();
    targets = conversions, ceiling, blocks
}
criterion_main!(benches);
