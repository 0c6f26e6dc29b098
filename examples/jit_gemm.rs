//! The library JIT in a few lines: describe a q4_0-like GEMM (4-bit codes,
//! groups of 32, f16 scales), pack the weights once, compile on first use,
//! run on your own buffers, and get the cached kernel the second time
//! (from memory; from disk in a later process when `LOWBIT_CACHE_DIR` is set).
//!
//! Run with `cargo run --release -p lowbit-llvm --example jit_gemm`; it
//! exits non-zero if the kernel's result leaves the declared error bound
//! (scripts/test.sh runs it).

use lowbit_ir::Tensor;
use lowbit_llvm::{compile, Dim, GemmSpec, PackedWeights};
use lowbit_numerics::ElemType;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (m, k) = (512, 1000); // k is deliberately not a multiple of 32
    let i4: ElemType = "i4".parse()?;
    let spec = GemmSpec::new(m, k, Dim::Dynamic, i4, 32);

    // Logical weights, as a `dequantize` op would take them: codes [m, k],
    // f16 scales [m, ceil(k/32)].
    let codes: Vec<u64> = (0..m * k).map(|i| ((i * 7 + i / 13) % 16) as u64).collect();
    let w = Tensor::new(i4, vec![m as u64, k as u64], codes)?;
    let groups = k.div_ceil(32);
    let svals: Vec<f64> = (0..m * groups)
        .map(|i| 0.01 + (i % 5) as f64 * 0.002)
        .collect();
    let scales = Tensor::from_f64(ElemType::F16, vec![m as u64, groups as u64], &svals)?;
    let packed = PackedWeights::pack(&spec, &w, &scales, None)?;
    println!(
        "packed weights: {} ({} bytes)",
        packed.ir_type(),
        packed.byte_len()
    );

    let kernel = compile(&spec)?;
    println!(
        "compiled {} for {} in {:.1} ms ({:?}; set LOWBIT_CACHE_DIR to keep kernels on disk)",
        kernel.spec(),
        kernel.target().describe(),
        kernel.compile_time().as_secs_f64() * 1e3,
        kernel.origin()
    );

    let n = 3;
    let x: Vec<f32> = (0..n * k).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    let mut y = vec![0f32; n * m];
    kernel.run(x.as_slice(), &packed, None, &mut y, n, 2)?;

    // A plain f64 reference, to show what the kernel computes, and the
    // crate's declared bound for f32 kernels: |y - y_ref| <= (k_pad/16 + 8)
    // * 2^-24 * sum |x * w| (see `lowbit_llvm::codegen`'s docs).
    let k_pad = k.div_ceil(32) * 32;
    let mut worst = 0f64;
    for c in 0..n {
        for r in 0..m {
            let (mut acc, mut mag) = (0f64, 0f64);
            for j in 0..k {
                let q = i4.decode(w.codes[r * k + j]);
                let s = ElemType::F16.decode(scales.codes[r * groups + j / 32]);
                acc += f64::from(x[c * k + j]) * q * s;
                mag += (f64::from(x[c * k + j]) * q * s).abs();
            }
            let err = (acc - f64::from(y[c * m + r])).abs();
            let bound = (k_pad as f64 / 16.0 + 8.0) * f64::powi(2.0, -24) * mag;
            if err > bound {
                return Err(format!(
                    "y[{c}][{r}] = {} is {err:e} from {acc} (bound {bound:e})",
                    y[c * m + r]
                )
                .into());
            }
            worst = worst.max(err);
        }
    }
    println!(
        "y[0][0..4] = {:?}; max |error| vs f64 = {worst:.3e} (within the declared bound)",
        &y[..4]
    );

    // A buffer of the wrong size is an error, not memory corruption.
    let Err(err) = kernel.run(&x[..10], &packed, None, &mut y, n, 2) else {
        return Err("a 10-element x was accepted for n = 3".into());
    };
    println!("wrong x size -> {err}");

    // The second request for the same spec is served from the cache.
    let again = compile(&spec)?;
    let hit = Arc::ptr_eq(&kernel, &again);
    println!("cache hit: {hit}");
    if !hit {
        return Err("the second compile of the same spec missed the cache".into());
    }
    Ok(())
}
