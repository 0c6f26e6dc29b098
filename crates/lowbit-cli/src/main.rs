//! The `lowbit` command-line driver: `lowbit opt`, `lowbit run` and
//! `lowbit compile`.
//!
//! Each command lives in its own module with its help text; errors are
//! values ([`Failure`]) turned into one message on standard error and exit
//! status 1 here, so no user input can make the driver panic.

#[cfg(feature = "cpu")]
mod aot_model;
mod args;
#[cfg(feature = "cpu")]
mod bench_cmd;
mod compile_cmd;
#[cfg(feature = "cpu")]
mod compile_gemm;
#[cfg(feature = "cpu")]
mod cpu_run;
mod explain_cmd;
#[cfg(feature = "cpu")]
mod gemm_args;
mod opt_cmd;
mod output;
mod run_cmd;

use std::io::Read;
use std::process::ExitCode;

const HELP: &str = "\
lowbit: a compiler for low-precision neural-network kernels

Usage: lowbit <COMMAND> [ARGS]

Commands:
  opt      Run a pass pipeline over lowbit IR text (.lbir) and print the result
  run      Run a model (.onnx or .lbir) on inputs (.pb or .npy) and write its outputs
  compile  Import a model (.onnx or .lbir) and emit it (this build: --emit ir),
           or 'compile gemm ...': one CPU kernel as object, assembly or LLVM IR
  explain  Show the schedule the optimizer picks per op, with costs and reasons
  bench    Benchmark a kernel against this machine's measured roofline

Options:
  -h, --help       Show this help ('lowbit <COMMAND> --help' for a command)
  -V, --version    Show the version

Exit status: 0 on success, 1 on any error, with one message on standard
error naming the file, line and op at fault.
";

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Bad command line: printed with a pointer to `--help`.
    Usage(String),
    /// One message, printed after the command name.
    Message(String),
    /// Fully rendered text (diagnostics), printed as is.
    Rendered(String),
}

impl Failure {
    /// A command-line error.
    pub fn usage(m: impl Into<String>) -> Failure {
        Failure::Usage(m.into())
    }
    /// A one-line error.
    pub fn msg(m: impl Into<String>) -> Failure {
        Failure::Message(m.into())
    }
    /// Pre-rendered diagnostics.
    pub fn rendered(m: impl Into<String>) -> Failure {
        Failure::Rendered(m.into())
    }
}

/// Writes to standard output; a closed pipe (`lowbit ... | head`) is an
/// error value rather than the panic `print!` would raise.
pub fn write_stdout(text: &str) -> Result<(), Failure> {
    write_stdout_with(|w| w.write_all(text.as_bytes()))
}

/// Writes what `fill` writes to standard output, buffered (for streamed
/// IR text).
pub fn write_stdout_with(
    fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    fill(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::msg(format!("cannot write standard output: {e}")))
}

/// The name diagnostics show for a source path: `<stdin>` for `-`, the
/// path itself otherwise.
pub fn source_name(path: &str) -> &str {
    if path == "-" {
        "<stdin>"
    } else {
        path
    }
}

/// Parses IR text from a file, or from standard input for `-`, and gives
/// the source its diagnostics are rendered against. A file is read as a
/// stream (its hex constants decoded as they are read, the text not kept:
/// a model's text is about twice its weights) and its lines are read again
/// for diagnostics; standard input cannot be read again, so it is kept.
pub fn parse_source(
    path: &str,
) -> Result<
    (
        Result<lowbit::ir::Module, Vec<lowbit::ir::Diagnostic>>,
        lowbit::ir::source::Source,
    ),
    Failure,
> {
    use lowbit::ir::parser::{parse_module, parse_module_file};
    use lowbit::ir::source::Source;
    if path == "-" {
        let src = read_source(path)?;
        return Ok((parse_module(&src), Source::Text(src)));
    }
    parse_module_file(std::path::Path::new(path))
        .map_err(|e| Failure::msg(format!("cannot read '{path}': {e}")))
}

/// Reads a source file, or standard input for `-`.
pub fn read_source(path: &str) -> Result<String, Failure> {
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::msg(format!("cannot read standard input: {e}")))?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| Failure::msg(format!("cannot read '{path}': {e}")))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match argv.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => {
            eprint!("{HELP}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cmd {
        "-h" | "--help" | "help" => write_stdout(HELP),
        "-V" | "--version" => write_stdout(&format!("lowbit {}\n", env!("CARGO_PKG_VERSION"))),
        "opt" => opt_cmd::main(rest),
        "run" => run_cmd::main(rest),
        "compile" => compile_cmd::main(rest),
        "explain" => explain_cmd::main(rest),
        #[cfg(feature = "cpu")]
        "bench" => bench_cmd::main(rest),
        #[cfg(not(feature = "cpu"))]
        "bench" => Err(Failure::msg(
            "this lowbit was built without the cpu backend (feature 'cpu')",
        )),
        other => Err(Failure::usage(format!("unknown command '{other}'"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let name = match cmd {
                "opt" | "run" | "compile" | "explain" | "bench" => format!("lowbit {cmd}"),
                _ => "lowbit".to_string(),
            };
            match f {
                Failure::Usage(m) => eprintln!("{name}: {m}\nTry '{name} --help'."),
                Failure::Message(m) => eprintln!("{name}: {m}"),
                Failure::Rendered(m) => eprint!("{m}"),
            }
            ExitCode::FAILURE
        }
    }
}
