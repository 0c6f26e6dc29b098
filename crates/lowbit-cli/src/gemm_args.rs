//! The GEMM-spec options shared by `lowbit bench gemm` and
//! `lowbit compile gemm`: `--m --k --n --weight [--group] [--scale]
//! [--zero-point] [--tensor-scale T] --act [--schedule direct|bit-serial|amx]
//! [--act-quant i8:32|none]`.

use crate::args::{Args, Spec};
use crate::Failure;
use lowbit::ir::IntSchedule;
use lowbit_llvm::{ActQuant, Dim, Epilogue, GemmSpec, TensorScale, WeightGranularity, WeightSpec};

/// Option table entries for a GEMM spec.
pub const GEMM_SPECS: &[Spec] = &[
    Spec {
        long: "m",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "k",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "n",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "weight",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "group",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "scale",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "zero-point",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "tensor-scale",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "act",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "schedule",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "act-quant",
        short: None,
        takes_value: true,
    },
];

fn required<'a>(a: &'a Args, name: &str) -> Result<&'a str, Failure> {
    a.last(name)
        .ok_or_else(|| Failure::usage(format!("missing --{name}")))
}

fn positive(a: &Args, name: &str) -> Result<usize, Failure> {
    let v = required(a, name)?;
    match v.parse::<usize>() {
        Ok(x) if x > 0 => Ok(x),
        _ => Err(Failure::usage(format!(
            "--{name} expects a positive integer, got '{v}'"
        ))),
    }
}

fn elem(name: &str, v: &str) -> Result<lowbit::ElemType, Failure> {
    v.parse()
        .map_err(|e| Failure::usage(format!("--{name}: '{v}' is not an element type: {e}")))
}

/// Builds the spec; `n_dynamic` allows `--n ?` (a kernel for any n).
pub fn gemm_spec(a: &Args, n_dynamic: bool) -> Result<GemmSpec, Failure> {
    let n = match a.last("n") {
        Some("?") if n_dynamic => Dim::Dynamic,
        _ => Dim::Static(positive(a, "n")?),
    };
    let granularity = match a.last("group") {
        None => WeightGranularity::PerChannel,
        Some(_) => WeightGranularity::Group(positive(a, "group")?),
    };
    let tensor_scale = match a.last("tensor-scale") {
        None => None,
        Some(v) => match v.parse::<f32>() {
            Ok(t) if t.is_finite() => Some(TensorScale::new(t)),
            _ => {
                return Err(Failure::usage(format!(
                    "--tensor-scale expects a finite number, got '{v}'"
                )))
            }
        },
    };
    // Integer weights times integer activations: `direct` multiplies
    // whole integers (W8A8), `bit-serial` sums AND-popcounts of bit-planes
    // (WxAy); b1 x b1 is bit-serial either way; `amx` is W8A8/W4A8 on
    // AMX-INT8 tiles (the JIT refuses it where the host has none).
    let schedule = match a.last("schedule") {
        None | Some("direct") => IntSchedule::Direct,
        Some("bit-serial") => IntSchedule::BitSerial,
        Some("amx") => IntSchedule::Amx,
        Some(v) => {
            return Err(Failure::usage(format!(
                "--schedule expects direct, bit-serial or amx, got '{v}'"
            )))
        }
    };
    // Opt-in activation quantization (the IR's `quantize-activations`):
    // `i8:32` quantizes f32 activations per call to i8 per 32-block.
    let act_quant = match a.last("act-quant") {
        None | Some("none") => None,
        Some("i8:32") => Some(ActQuant::I8_32),
        Some(v) => {
            return Err(Failure::usage(format!(
                "--act-quant expects i8:32 or none, got '{v}'"
            )))
        }
    };
    Ok(GemmSpec {
        m: positive(a, "m")?,
        k: positive(a, "k")?,
        n,
        weight: WeightSpec {
            dtype: elem("weight", required(a, "weight")?)?,
            granularity,
            scale: elem("scale", a.last("scale").unwrap_or("f16"))?,
            zero_point: a.has("zero-point"),
            layout: None,
            tensor_scale,
        },
        act: elem("act", required(a, "act")?)?,
        epilogue: Epilogue::default(),
        schedule,
        act_quant,
    })
}
