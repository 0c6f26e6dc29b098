//! `lowbit compile`: import a model and emit it: `--emit ir` (the
//! imported, optionally optimized, lowbit IR text) or, with the CPU
//! backend, `--emit so` (a shared library and its C header), `--emit
//! obj` (one relocatable object and its header) or `--emit asm` (that
//! object as assembly) or `--emit llvm` (the kernels and weights as LLVM
//! IR, the C driver beside it), see `aot_model`. Every other emit kind is refused with a message saying
//! so, after the model has been imported and checked.

use crate::args::{self, Spec};
use crate::output::write_atomic_with;
use crate::{parse_source, source_name, write_stdout, write_stdout_with, Failure};
use lowbit::ir::printer::{write_module_with, PrintOptions};
use lowbit::ir::source::Source;
use lowbit::ir::{verifier::verify_module, Module};
use lowbit::onnx::import_model;
use lowbit::opt::PassManager;
use std::path::Path;

/// `lowbit compile --help`.
pub const HELP: &str = "\
Compile a model ahead of time.

Usage: lowbit compile MODEL -o OUT [OPTIONS]
       lowbit compile gemm --m M --k K --n N|? --weight DTYPE ... -o OUT
           (one CPU kernel as obj, asm or llvm; see 'lowbit compile gemm --help')

MODEL is an ONNX model (.onnx) or lowbit IR text (.lbir; '-' reads standard
input).

Options:
  -o, --output OUT        Where to write the result ('-' for standard output)
  --emit KIND             obj | so | asm | llvm | ptx | ir | mlir (default so).
                          Available: 'ir' (the imported lowbit IR text),
                          'so' (CPU backend): a shared library OUT with the
                          C entry point int lowbit_<name>_run(const float
                          *in0, ..., float *out0, ...) (0 on success), its
                          header next to it (OUT with extension .h), the
                          weights pre-packed inside; 'obj': the same as
                          one relocatable object OUT (link it into a
                          program: cc main.c OUT); 'asm': that object as
                          one assembly file (cc -c OUT assembles it);
                          'llvm': the kernels and packed weights as LLVM
                          IR OUT, the C driver that defines the entry
                          point beside it (OUT with extension .c; build
                          with llc -relocation-model=pic -filetype=obj
                          and cc; --target aarch64 allowed). <name> is
                          OUT's file stem without a 'lib' prefix; a
                          module's further functions @f get
                          lowbit_<name>_<f>_run; lowbit_<name>_set_threads
                          (n) splits the kernels' rows over n threads
                          (default 1). Needs a C compiler and linker ('cc'
                          or $CC; not for llvm). Models whose ops do not
                          all map onto CPU kernels are refused
  --passes PIPELINE       Run a pass pipeline before emitting (as lowbit opt)
  --target TARGET         x86_64 | aarch64 | nvptx
  --cpu CPU               native | a CPU name LLVM knows (kernel features
                          for x86-64-v3, haswell, skylake-avx512, znver4,
                          ...; model+feature adds features); an unknown
                          name is refused. matmul_int {schedule = amx}
                          needs a CPU with AMX-INT8 (native on such a
                          host, sapphirerapids, ...+amxint8)
  --sm SM                 80 | 89 | 90a
  --print-ir-after-all, --print-ir-after=PASS, --print-ir-before=PASS
                          Dump the IR around passes to standard error
  -h, --help              Show this help

Exit status: 0 on success, 1 on any error, with one message on standard
error naming the node, file or op at fault; OUT is never half-written.
";

const SPECS: &[Spec] = &[
    Spec {
        long: "output",
        short: Some('o'),
        takes_value: true,
    },
    Spec {
        long: "emit",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "passes",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "target",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "cpu",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "sm",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "print-ir-after-all",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "print-ir-after",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "print-ir-before",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "help",
        short: Some('h'),
        takes_value: false,
    },
];

const EMITS: &[&str] = &["obj", "so", "asm", "llvm", "ptx", "ir", "mlir"];
const TARGETS: &[&str] = &["x86_64", "aarch64", "nvptx"];

/// Loads a model: ONNX by extension, lowbit IR text otherwise.
pub fn load_model(model: &str) -> Result<Module, Failure> {
    load_model_and_source(model).map(|(m, _)| m)
}

/// [`load_model`], also returning the IR source it parsed (`None` for
/// ONNX) so that later errors, such as the interpreter's, can be rendered
/// against it (a file's lines are read again, see [`parse_source`]). Parse
/// and verifier errors are rendered here.
pub fn load_model_and_source(model: &str) -> Result<(Module, Option<Source>), Failure> {
    let is_onnx = Path::new(model)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if is_onnx {
        let m = import_model(Path::new(model)).map_err(|e| Failure::msg(e.to_string()))?;
        return Ok((m, None));
    }
    let (parsed, src) = parse_source(model)?;
    let m = parsed
        .and_then(|m| verify_module(&m).map(|()| m))
        .map_err(|d| Failure::rendered(src.render(&d, source_name(model))))?;
    Ok((m, Some(src)))
}

/// Runs `lowbit compile` with the arguments after the command name.
pub fn main(argv: &[String]) -> Result<(), Failure> {
    // `lowbit compile gemm ...` compiles one CPU kernel from a spec.
    #[cfg(feature = "cpu")]
    if argv.first().map(String::as_str) == Some("gemm") {
        return crate::compile_gemm::main(argv);
    }
    let a = args::parse(argv, SPECS).map_err(Failure::usage)?;
    if a.has("help") {
        return write_stdout(HELP);
    }
    let model = a.one_positional("missing MODEL").map_err(Failure::usage)?;
    let out = a
        .last("output")
        .ok_or_else(|| Failure::usage("missing -o OUT"))?;
    let emit = a.last("emit").unwrap_or("so");
    if !EMITS.contains(&emit) {
        return Err(Failure::usage(format!(
            "unknown --emit '{emit}' (expected one of: {})",
            EMITS.join(", ")
        )));
    }
    if let Some(t) = a.last("target") {
        if !TARGETS.contains(&t) {
            return Err(Failure::usage(format!(
                "unknown --target '{t}' (expected one of: {})",
                TARGETS.join(", ")
            )));
        }
    }
    let mut pm = PassManager::parse(a.last("passes").unwrap_or(""))
        .map_err(|e| Failure::msg(e.to_string()))?;
    pm.instrumentation.print_after_all = a.has("print-ir-after-all");
    pm.instrumentation.print_after = a.all("print-ir-after").to_vec();
    pm.instrumentation.print_before = a.all("print-ir-before").to_vec();

    let mut module = load_model(model)?;
    let stderr = std::io::stderr();
    pm.run(&mut module, &mut stderr.lock())
        .map_err(|e| Failure::msg(format!("{model}: {e}")))?;
    #[cfg(feature = "cpu")]
    if ["so", "obj", "asm", "llvm"].contains(&emit) {
        return emit_native(&module, out, emit, a.last("target"), a.last("cpu"));
    }
    if emit != "ir" {
        return Err(Failure::msg(format!(
            "--emit {emit} is not available in this build: there is no code generator yet (use --emit ir)"
        )));
    }
    // Streamed: the weights' hex is never one String.
    let write = |w: &mut dyn std::io::Write| write_module_with(&module, PrintOptions::default(), w);
    match out {
        "-" => write_stdout_with(write),
        path => write_atomic_with(Path::new(path), write).map_err(Failure::msg),
    }
}

/// `--emit so` (the library `out`), `--emit obj` (one relocatable object
/// `out`), `--emit asm` (one assembly file `out`) or `--emit llvm` (the
/// kernels and weights as LLVM IR `out`, the C driver beside it), and the
/// header beside it.
#[cfg(feature = "cpu")]
fn emit_native(
    module: &Module,
    out: &str,
    emit: &str,
    arch: Option<&str>,
    cpu: Option<&str>,
) -> Result<(), Failure> {
    if out == "-" {
        let what = match emit {
            "so" => "a library",
            "obj" => "an object",
            "llvm" => "LLVM IR, its C driver",
            _ => "assembly",
        };
        return Err(Failure::usage(format!(
            "--emit {emit} writes {what} and its header: give a file for -o"
        )));
    }
    let host = lowbit_llvm::CpuTarget::host().map_err(|e| Failure::msg(e.to_string()))?;
    let host_arch = host.triple.split('-').next().unwrap_or("").to_string();
    // LLVM IR needs no C compiler: it may be for another architecture.
    let arch = match arch.filter(|t| *t != host_arch) {
        Some("nvptx") if emit == "llvm" => {
            return Err(Failure::msg(
                "--emit llvm of a whole model is for the cpu backend: --target nvptx is not supported",
            ))
        }
        Some(t) if emit != "llvm" => {
            return Err(Failure::msg(format!(
                "--emit {emit} builds the driver with the host C compiler: --target {t} (not the host's {host_arch}) is not supported yet"
            )))
        }
        Some(t) => t.to_string(),
        None => host_arch.clone(),
    };
    let path = Path::new(out);
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| Failure::usage(format!("-o '{out}' has no file name")))?;
    let name = stem
        .strip_prefix("lib")
        .filter(|s| !s.is_empty())
        .unwrap_or(stem);
    let target = match cpu {
        None | Some("native") if arch == host_arch => Ok(host),
        None => lowbit_llvm::CpuTarget::named(&arch, "generic"),
        Some(c) => lowbit_llvm::CpuTarget::named(&arch, c),
    }
    .map_err(|e| Failure::msg(e.to_string()))?;
    let kind = match emit {
        "asm" => lowbit_llvm::aot::Emit::Asm,
        "llvm" => lowbit_llvm::aot::Emit::LlvmIr,
        _ => lowbit_llvm::aot::Emit::Obj,
    };
    let art = crate::aot_model::compile_model(module, name, &target, kind).map_err(Failure::msg)?;
    let header = path.with_extension("h");
    match emit {
        "so" => crate::aot_model::link_shared(&art, path, &header),
        "obj" => crate::aot_model::link_object(&art, path, &header),
        "llvm" => crate::aot_model::write_llvm(&art, path, &path.with_extension("c"), &header),
        _ => crate::aot_model::write_assembly(&art, path, &header),
    }
    .map_err(Failure::msg)
}
