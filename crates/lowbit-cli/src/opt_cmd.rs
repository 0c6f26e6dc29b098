//! `lowbit opt`: parse, verify, run a pass pipeline, print the result.

use crate::args::{self, Spec};
use crate::output::write_atomic_with;
use crate::{parse_source, read_source, source_name, write_stdout, write_stdout_with, Failure};
use lowbit::ir::diag::check_expected_diagnostics;
use lowbit::ir::source::Source;
use lowbit::ir::{
    parser::parse_module,
    printer::{write_module_with, PrintOptions},
    verifier::verify_module,
    Module,
};
use lowbit::opt::manager::RunError;
use lowbit::opt::registry::{describe_registry, lookup};
use lowbit::opt::{Instrumentation, PassManager};
use std::path::Path;

/// `lowbit opt --help`.
pub const HELP: &str = "\
Run a pass pipeline over lowbit IR text and print the result.

Usage: lowbit opt FILE.lbir [OPTIONS]

FILE.lbir is lowbit IR text; '-' reads standard input. The input is parsed
and verified before any pass runs. The resulting module is printed to
standard output (or to -o OUT). IR dumps and reports go to standard error.

Options:
  --passes PIPELINE         Passes to run, comma-separated, with options in
                            braces: 'canonicalize{max-folded-bytes=1MiB},cse,dce'
                            (default: no passes; the input is printed back)
  --list-passes             List every pass with its options and statistics
  --print-ir-before=PASS    Dump the IR before each run of PASS (repeatable;
                            PASS is a pipeline name such as 'cse')
  --print-ir-after=PASS     Dump the IR after each run of PASS (repeatable)
  --print-ir-before-all     Dump the IR before every pass
  --print-ir-after-all      Dump the IR after every pass
  --print-ir-after-change   Dump the IR after every pass that changed it
  --verify-each             Verify the IR after every pass; a failure names
                            the pass (otherwise it is verified once at the end)
  --time-passes             Report the wall time of every pass
  --pass-statistics         Report the statistics counters of every pass
  --elide-resources         Print large constant payloads (the resource
                            section) as __elided__ in dumps and output, for
                            reading; such output does not parse back
  --dump-pass-pipeline      Print the pipeline, every option spelled out
  --verify-diagnostics      Check parse and verifier errors against the
                            '// expected-error@+N {{text}}' comments of the
                            input instead of reporting them; exit 0 if they
                            all match
  -o, --output OUT          Write the result to OUT (atomically) instead of
                            standard output
  -h, --help                Show this help

Dumps are headed '// -----// IR Dump After <Pass> (<pass-arg>) //----- //'
(or 'Before').

Exit status: 0 on success, 1 on any error (message on standard error, with
FILE:line:col for errors in the input).
";

const SPECS: &[Spec] = &[
    Spec {
        long: "passes",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "list-passes",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "print-ir-before",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "print-ir-after",
        short: None,
        takes_value: true,
    },
    Spec {
        long: "print-ir-before-all",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "print-ir-after-all",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "print-ir-after-change",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "verify-each",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "time-passes",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "pass-statistics",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "elide-resources",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "dump-pass-pipeline",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "verify-diagnostics",
        short: None,
        takes_value: false,
    },
    Spec {
        long: "output",
        short: Some('o'),
        takes_value: true,
    },
    Spec {
        long: "help",
        short: Some('h'),
        takes_value: false,
    },
];

/// Runs `lowbit opt` with the arguments after the command name.
pub fn main(argv: &[String]) -> Result<(), Failure> {
    let a = args::parse(argv, SPECS).map_err(Failure::usage)?;
    if a.has("help") {
        return write_stdout(HELP);
    }
    if a.has("list-passes") {
        return write_stdout(&describe_registry());
    }
    let file = a
        .one_positional("missing input file (use '-' for standard input)")
        .map_err(Failure::usage)?;
    let mut pm = PassManager::parse(a.last("passes").unwrap_or(""))
        .map_err(|e| Failure::msg(e.to_string()))?;
    pm.instrumentation = instrumentation(&a)?;
    if a.has("dump-pass-pipeline") {
        eprintln!("{}", pm.pipeline_string());
    }

    let shown = source_name(file);
    let verify = |m: Module| verify_module(&m).map(|()| m);
    // --verify-diagnostics reads the expectations from the whole text;
    // otherwise a file is parsed as a stream (see `parse_source`).
    let (parsed, src) = if a.has("verify-diagnostics") {
        let text = read_source(file)?;
        let parsed = parse_module(&text).and_then(verify);
        let diags = parsed.as_ref().err().cloned().unwrap_or_default();
        check_expected_diagnostics(&text, &diags)
            .map_err(|e| Failure::msg(format!("{shown}: {e}")))?;
        if !diags.is_empty() {
            return Ok(());
        }
        (parsed, Source::Text(text))
    } else {
        let (parsed, src) = parse_source(file)?;
        (parsed.and_then(verify), src)
    };
    let mut module = parsed.map_err(|d| Failure::rendered(src.render(&d, shown)))?;

    let stderr = std::io::stderr();
    let result = pm.run(&mut module, &mut stderr.lock());
    if a.has("time-passes") {
        eprint!("{}", pm.timing_report());
    }
    if a.has("pass-statistics") {
        eprint!("{}", pm.statistics_report());
    }
    if let Err(e) = result {
        let mut msg = format!("{shown}: error: {e}\n");
        if let RunError::Verify { diagnostics, .. } = &e {
            msg.push_str(&src.render(diagnostics, shown));
        }
        return Err(Failure::rendered(msg));
    }

    let opts = PrintOptions {
        elide_resources: a.has("elide-resources"),
    };
    // Streamed: the weights' hex is never one String.
    let write = |w: &mut dyn std::io::Write| write_module_with(&module, opts, w);
    match a.last("output") {
        None | Some("-") => write_stdout_with(write),
        Some(path) => write_atomic_with(Path::new(path), write).map_err(Failure::msg),
    }
}

fn instrumentation(a: &args::Args) -> Result<Instrumentation, Failure> {
    let passes = |flag: &str| -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        for list in a.all(flag) {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if lookup(name).is_none() {
                    return Err(Failure::usage(format!(
                        "unknown pass '{name}' in --{flag} (see 'lowbit opt --list-passes')"
                    )));
                }
                out.push(name.to_string());
            }
        }
        Ok(out)
    };
    Ok(Instrumentation {
        print_before: passes("print-ir-before")?,
        print_after: passes("print-ir-after")?,
        print_before_all: a.has("print-ir-before-all"),
        print_after_all: a.has("print-ir-after-all"),
        print_after_change: a.has("print-ir-after-change"),
        verify_each: a.has("verify-each"),
        time_passes: a.has("time-passes"),
        elide_resources: a.has("elide-resources"),
    })
}
