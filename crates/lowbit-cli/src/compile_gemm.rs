//! `lowbit compile gemm ...`: ahead-of-time output of one GEMM kernel
//! (LLVM IR, assembly or an object file) for the host or a named target,
//! from the spec options of `lowbit bench gemm`. `compile_cmd` hands the
//! command here when MODEL is the word `gemm`.
//!
//! The help text spells out the C ABI of every kernel kind: what each of
//! the six pointer arguments holds for float weights, W8A8/W4A8 (three
//! `int32 [m_pad]` requantize arrays in `scales`, the per-row `i32`
//! offsets in `zero_points`, an `int32 [m]` bias), W1A1 and bit-serial
//! (column sums, row sums, zero points). The authoritative layouts are in
//! `lowbit_llvm::codegen` and its child modules.
//!
//! Limits: `--emit so|ptx|ir|mlir` are not implemented for kernels and say
//! so.

use crate::args::{self, Spec};
use crate::gemm_args::{gemm_spec, GEMM_SPECS};
use crate::output::write_atomic;
use crate::Failure;
use lowbit_llvm::aot::{emit, Emit};
use lowbit_llvm::CpuTarget;
use std::io::Write;
use std::path::Path;

/// `lowbit compile gemm --help`.
pub const HELP: &str = "\
Compile a kernel ahead of time.

Usage: lowbit compile gemm --m M --k K --n N|? --weight DTYPE [--group G]
           [--scale DTYPE] [--zero-point] [--tensor-scale T] --act DTYPE
           [--schedule direct|bit-serial] [--act-quant i8:32] -o OUT
           [--target x86_64|aarch64] [--cpu native|NAME]
           [--emit obj|asm|llvm]

Emits the GEMM kernel Y[n,m] = X[n,k] . W[m,k]^T (spec options as in
'lowbit bench gemm'; --n ? makes n a run-time argument). The object exports
the C function

  void lowbit_gemm(const float *x, const uint8_t *w, const uint8_t *scales,
                   const uint8_t *zero_points, const float *bias, float *y,
                   int64_t n, int64_t row_begin, int64_t row_end);

  -o OUT            output file ('-' for standard output; written atomically)
  --target ARCH     x86_64 or aarch64 (default: the host)
  --cpu NAME        an LLVM CPU name, or native (default: native on the
                    host architecture, generic otherwise)
  --emit KIND       obj (default), asm or llvm (optimized LLVM IR)

Integer kernels write int32_t y. Bit-serial kernels (--schedule
bit-serial) take x as bit-planes ([n, k_pad/512, planes, 64 bytes]), the
activation row sums in 'scales', the weight row sums in 'zero_points' and
the zero points (int32_t za, zw) in 'bias' (lowbit_llvm::codegen::bitserial).

What each pointer holds, per kernel (k_pad: k rounded up to the kernel's
block; m_pad: m rounded up to 16 on W8A8/W4A8, else m; all row-major):

  float weights (--act f32/f16/bf16/...):
    x            float [n, k_pad], zeros after k
    w            the packed weight codes, m rows (lowbit_llvm::pack)
    scales       the packed group scales (the --scale type)
    zero_points  the packed zero-point codes (with --zero-point)
    bias         float [m] (read only by kernels with a bias epilogue)
    y            float [n, m]
  W8A8/W4A8 (--weight i8|i4|u4 --act u8|i8, direct schedule):
    x            uint8_t [n, k_pad]; i8 activations offset by +128
    w            panels of 16 rows (lowbit_llvm::spec), m_pad rows
    scales       three int32_t [m_pad] arrays, one after the other: the
                 requantize multiplier, right shift and output zero point
                 (read only by kernels with the requantize epilogue:
                 y8 = clamp(round_half_even(v * mult / 2^shift) + zp,
                 -128, 127))
    zero_points  int32_t [m_pad] row offsets added to every output:
                 -(o + za) * rowsum(w), o = 128 for i8 activations,
                 za the activation zero point (wrapping)
    bias         int32_t [m] (read only by kernels with a bias epilogue;
                 added with wrapping)
    y            int32_t [n, m] (int8_t [n, m] when requantizing)
  W1A1 (--weight b1 --act b1):
    x, w         packed b1 codes, 1 bit per element (1: +1, 0: -1),
                 k_pad bits per row
    scales, zero_points, bias  not read
    y            int32_t [n, m]
  bit-serial (--schedule bit-serial):
    x            activation bit-planes [n, k_pad/512, planes, 64 bytes]
    w            weight bit-planes [m, k_pad/512, planes, 64 bytes]
    scales       int32_t [n] activation column sums (read for b1 weights
                 or zero points)
    zero_points  int32_t [m] weight row sums (read with zero points)
    bias         int32_t [2] = {za, zw} (read with zero points)
    y            int32_t [n, m]
  block-dot (--act-quant i8:32, --weight i4|i8 --group 32 --act f32):
    x            int8_t [n, k_pad] activation codes per 32-block
                 (lowbit_llvm::actquant; k_pad: k rounded up to 32)
    w            u4 codes w + 8 (i8: u8 codes w + 128) in panels of 16
                 rows, m_pad rows
    scales       f16 weight scales [m_pad / 16, k_pad / 32, 16]
    zero_points  float [n, k_pad / 32] activation block scales
    bias         int32_t [n, k_pad / 32] block corrections,
                 -8 * sum(codes) (i8 weights: -128 * sum(codes))
    y            float [n, m]

The kernels built here have no epilogue; 'lowbit compile' of a model can
fuse one (bias, ReLU, requantize) into the same ABI.

--emit so|ptx|ir|mlir are not implemented for kernels yet.
";

fn specs() -> Vec<Spec> {
    let mut v: Vec<Spec> = GEMM_SPECS
        .iter()
        .map(|s| Spec {
            long: s.long,
            short: s.short,
            takes_value: s.takes_value,
        })
        .collect();
    for (long, short, takes_value) in [
        ("output", Some('o'), true),
        ("target", None, true),
        ("cpu", None, true),
        ("emit", None, true),
        ("help", Some('h'), false),
    ] {
        v.push(Spec {
            long,
            short,
            takes_value,
        });
    }
    v
}

/// Runs `lowbit compile gemm` (`argv` starts with `gemm`).
pub fn main(argv: &[String]) -> Result<(), Failure> {
    let specs = specs();
    let a = args::parse(argv, &specs).map_err(Failure::usage)?;
    if a.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    if a.positional.first().map(String::as_str) != Some("gemm") {
        return Err(Failure::usage("expected 'gemm' and a kernel spec"));
    }
    if let Some(extra) = a.positional.get(1) {
        return Err(Failure::usage(format!("unexpected argument '{extra}'")));
    }
    let what = match a.last("emit").unwrap_or("obj") {
        "obj" => Emit::Obj,
        "asm" => Emit::Asm,
        "llvm" => Emit::LlvmIr,
        e @ ("so" | "ptx" | "ir" | "mlir") => {
            return Err(Failure::msg(format!(
                "--emit {e} is not implemented yet for the cpu backend (use obj, asm or llvm)"
            )))
        }
        e => return Err(Failure::usage(format!("unknown --emit kind '{e}'"))),
    };
    let out = a
        .last("output")
        .ok_or_else(|| Failure::usage("missing -o OUT"))?;
    let spec = gemm_spec(&a, true)?;
    let host = CpuTarget::host().map_err(|e| Failure::msg(e.to_string()))?;
    let host_arch = host.triple.split('-').next().unwrap_or("").to_string();
    let arch = a.last("target").unwrap_or(&host_arch);
    if arch == "nvptx" {
        return Err(Failure::msg(
            "--target nvptx is not part of the cpu backend (not implemented yet)",
        ));
    }
    let default_cpu = if arch == host_arch {
        "native"
    } else {
        "generic"
    };
    let target = CpuTarget::named(arch, a.last("cpu").unwrap_or(default_cpu))
        .map_err(|e| Failure::msg(e.to_string()))?;
    let bytes = emit(&spec, &target, what).map_err(|e| Failure::msg(e.to_string()))?;
    if out == "-" {
        let mut o = std::io::stdout().lock();
        o.write_all(&bytes)
            .and_then(|()| o.flush())
            .map_err(|e| Failure::msg(format!("cannot write standard output: {e}")))
    } else {
        write_atomic(Path::new(out), &bytes).map_err(Failure::msg)
    }
}
