//! `lowbit run`: run a model's entry function on input tensor files and
//! write (or print) its outputs. Models are lowbit IR text (`.lbir`) or ONNX
//! (`.onnx`, imported by `lowbit_onnx::import`). They run on the reference
//! interpreter, or with `--backend cpu` (feature `cpu`) with their quantized
//! matmuls on JIT kernels (see `cpu_run`); other backends are refused with a
//! message saying so.

use crate::args::{self, Spec};
use crate::{source_name, write_stdout, Failure};
use lowbit::interp::run_function;
use lowbit::ir::printer::format_value;
use lowbit::ir::{Function, Tensor, TensorType};
use lowbit::numerics::ElemType;
use lowbit::onnx::tensor_io::{read_tensor, write_pb};
use std::path::{Path, PathBuf};

/// `lowbit run --help`.
pub const HELP: &str = "\
Run a model on input tensors and write its outputs.

Usage: lowbit run MODEL [--input NAME=FILE]... [OPTIONS]

MODEL is an ONNX model (.onnx; external data is read from files next to
it) or lowbit IR text (.lbir; '-' reads standard input); its entry function
(@main, else the first) is run. ONNX graph inputs and outputs keep their
names.

Options:
  --input NAME=FILE       Bind graph input NAME to a tensor file: an ONNX
                          TensorProto (.pb) or a NumPy array (.npy). Repeat
                          for each input. '--input FILE' uses the tensor name
                          stored in a .pb file.
  --backend BACKEND       interp | cpu | cranelift | gpu (default: the
                          fastest in this build: cpu when built with the CPU
                          backend, else interp). 'interp' is the bit-exact
                          reference interpreter; 'cpu' runs matmuls of
                          dequantized constant weights (with a following
                          bias add and relu/gelu/silu) and integer matmuls
                          with constant weights (with an i32 bias, relu and
                          requant_dyadic) on JIT kernels and the other ops
                          on the interpreter, and says so on standard error
  --output-dir DIR        Write every output as DIR/<output name>.pb (ONNX
                          TensorProto with the declared element type);
                          default '.'; created if missing
  --print                 Print every output to standard output as
                          'NAME: TYPE = VALUES'; files are then written only
                          when --output-dir is given
  -h, --help              Show this help

Exit status: 0 on success, 1 on any error, with one message on standard
error naming the input, file or op at fault.
";

const SPECS: &[Spec] = &[
    Spec {
        long: "input",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "backend",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "output-dir",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "print",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "help",
        short: Some('h'),
        takes_value: false,
    },
];

/// Backends `--backend` may name, and which of them this build has.
const BACKENDS: &[&str] = &["interp", "cpu", "cranelift", "gpu"];
#[cfg(feature = "cpu")]
const AVAILABLE: &[&str] = &["interp", "cpu"];
#[cfg(not(feature = "cpu"))]
const AVAILABLE: &[&str] = &["interp"];
/// The fastest backend of this build, used when `--backend` is not given
/// (INTERFACES.md: "defaults to the fastest one available").
#[cfg(feature = "cpu")]
const DEFAULT_BACKEND: &str = "cpu";
#[cfg(not(feature = "cpu"))]
const DEFAULT_BACKEND: &str = "interp";

/// Runs `lowbit run` with the arguments after the command name.
pub fn main(argv: &[String]) -> Result<(), Failure> {
    let a = args::parse(argv, SPECS).map_err(Failure::usage)?;
    if a.has("help") {
        return write_stdout(HELP);
    }
    let model = a.one_positional("missing MODEL").map_err(Failure::usage)?;
    check_backend(a.last("backend"))?;
    let (module, src) = crate::compile_cmd::load_model_and_source(model)?;
    let shown = source_name(model);
    // The run owns the entry function (the rest of the module goes), so
    // that the CPU backend can release weights as it packs them.
    let entry = module.entry().map(|f| f.name.clone());
    let f = module
        .functions
        .into_iter()
        .find(|f| Some(&f.name) == entry.as_ref())
        .ok_or_else(|| Failure::msg(format!("{shown}: the module has no functions")))?;

    let inputs = read_inputs(&f, a.all("input"), shown)?;
    let render = |e: lowbit::interp::InterpError| match &src {
        Some(src) => Failure::rendered(src.render(&[e.to_diagnostic()], shown)),
        None => Failure::msg(format!("{shown}: {e}")),
    };
    let out_types: Vec<TensorType> = f.outputs.iter().map(|(_, v)| f.ty(*v).clone()).collect();
    let outputs = match a.last("backend").unwrap_or(DEFAULT_BACKEND) {
        #[cfg(feature = "cpu")]
        "cpu" => {
            let r = crate::cpu_run::run_owned(f, inputs).map_err(render)?;
            // Never silent: say which ops ran on kernels and which did not.
            eprintln!("lowbit run: {}", r.summary());
            r.outputs
        }
        _ => run_function(&f, &inputs).map_err(render)?,
    };

    if a.has("print") {
        let mut text = String::new();
        for ((name, t), ty) in outputs.iter().zip(&out_types) {
            text.push_str(&format!("{name}: {ty} = {}\n", format_tensor(t)));
        }
        write_stdout(&text)?;
    }
    if !a.has("print") || a.has("output-dir") {
        write_outputs(Path::new(a.last("output-dir").unwrap_or(".")), &outputs)?;
    }
    Ok(())
}

fn check_backend(requested: Option<&str>) -> Result<(), Failure> {
    let Some(b) = requested else {
        return Ok(());
    };
    if AVAILABLE.contains(&b) {
        Ok(())
    } else if BACKENDS.contains(&b) {
        Err(Failure::msg(format!(
            "backend '{b}' is not available in this build (available: {})",
            AVAILABLE.join(", ")
        )))
    } else {
        Err(Failure::usage(format!(
            "unknown backend '{b}' (expected one of: {})",
            BACKENDS.join(", ")
        )))
    }
}

/// Reads every `--input`, checking names and types against `f`'s
/// parameters, and returns them in parameter order.
fn read_inputs(
    f: &Function,
    specs: &[String],
    model: &str,
) -> Result<Vec<(String, Tensor)>, Failure> {
    let param_names: Vec<&str> = f.params.iter().map(|(n, _)| n.as_str()).collect();
    let mut given: Vec<(String, String, Tensor)> = Vec::new();
    for spec in specs {
        let (name, file) = match spec.split_once('=') {
            Some((n, file)) => (Some(n.to_string()), file),
            None => (None, spec.as_str()),
        };
        if file.is_empty() || name.as_deref() == Some("") {
            return Err(Failure::usage(format!(
                "--input '{spec}': expected NAME=FILE or FILE"
            )));
        }
        let (stored, t) = read_tensor(Path::new(file)).map_err(|e| {
            let who = name
                .as_deref()
                .map_or(String::new(), |n| format!("input '{n}': "));
            Failure::msg(format!("{who}{e}"))
        })?;
        let name = name.or(stored).ok_or_else(|| {
            Failure::msg(format!(
                "--input {file}: the file stores no tensor name; use --input NAME={file}"
            ))
        })?;
        if !param_names.contains(&name.as_str()) {
            return Err(Failure::msg(format!(
                "input '{name}': @{} has no such input (inputs: {}; from {file})",
                f.name,
                param_names.join(", ")
            )));
        }
        if given.iter().any(|(n, _, _)| *n == name) {
            return Err(Failure::msg(format!(
                "input '{name}' is given more than once"
            )));
        }
        given.push((name, file.to_string(), t));
    }
    let mut inputs = Vec::with_capacity(f.params.len());
    for (pname, v) in &f.params {
        let want = f.ty(*v);
        let Some(i) = given.iter().position(|(n, _, _)| n == pname) else {
            return Err(Failure::msg(format!(
                "{model}: input '{pname}': missing (expected a {want}); pass --input {pname}=FILE"
            )));
        };
        let (name, file, t) = given.swap_remove(i);
        if t.elem != want.elem || t.shape != want.shape {
            return Err(Failure::msg(format!(
                "input '{name}': expected {}, got {} (from {file})",
                TensorType::new(want.shape.clone(), want.elem),
                t.ty()
            )));
        }
        inputs.push((name, t));
    }
    Ok(inputs)
}

fn write_outputs(dir: &Path, outputs: &[(String, Tensor)]) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Failure::msg(format!(
            "cannot create output directory '{}': {e}",
            dir.display()
        ))
    })?;
    if let Some((name, _)) = outputs.iter().find(|(name, _)| {
        name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\'])
    }) {
        return Err(Failure::msg(format!(
            "output '{name}' cannot be used as a file name"
        )));
    }
    // A failed run must not leave some outputs fresh and others stale or
    // missing, so the outputs already written are removed again.
    let mut written: Vec<PathBuf> = Vec::with_capacity(outputs.len());
    for (name, t) in outputs {
        let path: PathBuf = dir.join(format!("{name}.pb"));
        if let Err(e) = write_pb(&path, name, t) {
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
            return Err(Failure::msg(format!("output '{name}': {e}")));
        }
        written.push(path);
    }
    Ok(())
}

/// A tensor's values as a nested list by shape (a bare value for scalars),
/// each element spelled as in the IR text; NaNs other than the format's
/// canonical one show their code.
pub fn format_tensor(t: &Tensor) -> String {
    let items: Vec<String> = t.codes.iter().map(|&c| format_elem(t.elem, c)).collect();
    if t.shape.is_empty() {
        return items.into_iter().next().unwrap_or_default();
    }
    nest(&items, &t.shape)
}

fn format_elem(elem: ElemType, code: u64) -> String {
    format_value(elem, code).unwrap_or_else(|| format!("nan(0x{code:X})"))
}

fn nest(items: &[String], shape: &[u64]) -> String {
    let inner: u64 = shape[1..].iter().product();
    if shape.len() <= 1 || inner == 0 {
        let parts: Vec<String> = if shape.len() <= 1 {
            items.to_vec()
        } else {
            (0..shape[0]).map(|_| nest(&[], &shape[1..])).collect()
        };
        return format!("[{}]", parts.join(", "));
    }
    let parts: Vec<String> = items
        .chunks(inner as usize)
        .map(|c| nest(c, &shape[1..]))
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_nested_values() {
        let i4: ElemType = "i4".parse().unwrap();
        let t = Tensor::new(i4, vec![2, 3], vec![1, 2, 3, 0xF, 0x8, 0]).unwrap();
        assert_eq!(format_tensor(&t), "[[1, 2, 3], [-1, -8, 0]]");
        let t = Tensor::from_f64(ElemType::F32, vec![], &[1.5]).unwrap();
        assert_eq!(format_tensor(&t), "1.5");
        let t = Tensor::new(ElemType::F32, vec![2, 0], vec![]).unwrap();
        assert_eq!(format_tensor(&t), "[[], []]");
        let t = Tensor::new(ElemType::F32, vec![1], vec![0x7FC0_0001]).unwrap();
        assert_eq!(format_tensor(&t), "[nan(0x7FC00001)]");
    }

    #[test]
    fn backends_are_checked() {
        assert!(check_backend(None).is_ok());
        assert!(check_backend(Some("interp")).is_ok());
        #[cfg(feature = "cpu")]
        assert!(check_backend(Some("cpu")).is_ok());
        match check_backend(Some("gpu")) {
            Err(Failure::Message(m)) => {
                assert!(
                    m.starts_with(
                        "backend 'gpu' is not available in this build (available: interp"
                    ),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(check_backend(Some("tpu")), Err(Failure::Usage(_))));
    }
}
