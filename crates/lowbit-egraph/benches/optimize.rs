//! Optimizer time against graph size: transformer decoder layers (RMSNorm,
//! Q/K/V/O projections, attention, gated MLP) with int4 GPTQ-style weights
//! (blocks of 32 along k, f16 scales), 1 to 32 layers, every rule set,
//! extraction for x86-64-v4. `LOWBIT_BENCH_DMODEL` sets the model width
//! (default 256: the graph has the node count of a full-size model, only
//! smaller payloads, which the optimizer does not read).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lowbit_egraph::{optimize_function, Config};
use lowbit_ir::{
    BinaryOp, ElemType, Function, Granularity, OpKind, Overflow, Tensor, TensorType, Value,
};

fn konst(f: &mut Function, ty: TensorType) -> Value {
    let t = Tensor::new(
        ty.elem,
        ty.shape.clone(),
        vec![0; ty.num_elements() as usize],
    )
    .expect("zero tensor");
    f.push(OpKind::constant_of(&t, &ty), vec![], ty)
}

/// `x @ dequantize(w)` with a fresh int4 weight `[k, n]`.
fn linear(f: &mut Function, x: Value, seq: u64, k: u64, n: u64) -> Value {
    let w = konst(f, TensorType::new(vec![k, n], "i4".parse().expect("i4")));
    let s = konst(f, TensorType::new(vec![k.div_ceil(32), n], ElemType::F16));
    let g = Granularity::Blocked {
        blocks: vec![(0, 32)],
    };
    let d = f.push(
        OpKind::Dequantize { granularity: g },
        vec![w, s],
        TensorType::new(vec![k, n], ElemType::F16),
    );
    f.push(
        OpKind::MatMul {
            overflow: Overflow::Wrap,
        },
        vec![x, d],
        TensorType::new(vec![seq, n], ElemType::F16),
    )
}

/// A decoder of `layers` layers of width `d`.
pub fn transformer(layers: usize, d: u64, seq: u64) -> Function {
    let mut f = Function::new("decoder");
    let t = |s: &[u64]| TensorType::new(s.to_vec(), ElemType::F16);
    let mut x = f.add_param("x", t(&[seq, d]));
    let bin = |op| OpKind::Binary {
        op,
        overflow: Overflow::Wrap,
    };
    let mm = OpKind::MatMul {
        overflow: Overflow::Wrap,
    };
    for _ in 0..layers {
        let g1 = konst(&mut f, t(&[d]));
        let rms = OpKind::RmsNorm {
            axis: -1,
            epsilon: 1e-5,
        };
        let h = f.push(rms.clone(), vec![x, g1], t(&[seq, d]));
        let q = linear(&mut f, h, seq, d, d);
        let k = linear(&mut f, h, seq, d, d);
        let v = linear(&mut f, h, seq, d, d);
        let kt = f.push(
            OpKind::Transpose { perm: vec![1, 0] },
            vec![k],
            t(&[d, seq]),
        );
        let sc = f.push(mm.clone(), vec![q, kt], t(&[seq, seq]));
        let p = f.push(OpKind::Softmax { axis: -1 }, vec![sc], t(&[seq, seq]));
        let a = f.push(mm.clone(), vec![p, v], t(&[seq, d]));
        let o = linear(&mut f, a, seq, d, d);
        x = f.push(bin(BinaryOp::Add), vec![x, o], t(&[seq, d]));
        let g2 = konst(&mut f, t(&[d]));
        let h2 = f.push(rms, vec![x, g2], t(&[seq, d]));
        let ff = d * 11 / 4;
        let gate = linear(&mut f, h2, seq, d, ff);
        let up = linear(&mut f, h2, seq, d, ff);
        let act = f.push(OpKind::Silu, vec![gate], t(&[seq, ff]));
        let m = f.push(bin(BinaryOp::Mul), vec![act, up], t(&[seq, ff]));
        let down = linear(&mut f, m, seq, ff, d);
        x = f.push(bin(BinaryOp::Add), vec![x, down], t(&[seq, d]));
    }
    f.outputs.push(("y".into(), x));
    f
}

fn bench(c: &mut Criterion) {
    let d: u64 = std::env::var("LOWBIT_BENCH_DMODEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let cfg = Config::new("x86-64-v4".parse().expect("target"));
    let mut group = c.benchmark_group("egraph-optimize");
    group.sample_size(10);
    for layers in [1usize, 2, 4, 8, 16, 32] {
        let f = transformer(layers, d, 16);
        group.bench_with_input(BenchmarkId::from_parameter(layers), &f, |b, f| {
            b.iter(|| optimize_function(f, &cfg).expect("optimizes"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
