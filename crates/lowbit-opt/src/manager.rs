//! The pass manager: runs passes over every function of a module, with
//! MLIR-style instrumentation (IR dumps, verification after each pass, timing
//! and statistics reports).
//!
//! Dumps are written to a caller-supplied sink (the CLI passes stderr) headed
//! by `// -----// IR Dump After <Name> (<argument>) //----- //` (or `Before`)
//! and show the whole module. `print_after_change` compares the printed
//! module before and after the pass, so it never prints an unchanged module
//! even if a pass over-reports changes.

use crate::pass::{Pass, PassError};
use crate::pipeline::{parse_pipeline, print_pipeline, PipelineError};
use lowbit_ir::printer::{print_module, print_module_with, PrintOptions};
use lowbit_ir::verifier::verify_module;
use lowbit_ir::{Diagnostic, Module};
use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// What the manager reports while it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instrumentation {
    /// Dump the module before each pass whose argument is listed.
    pub print_before: Vec<String>,
    /// Dump the module after each pass whose argument is listed.
    pub print_after: Vec<String>,
    /// Dump the module before every pass.
    pub print_before_all: bool,
    /// Dump the module after every pass.
    pub print_after_all: bool,
    /// Dump the module after every pass that changed it.
    pub print_after_change: bool,
    /// Verify the module after every pass; a failure names the pass.
    pub verify_each: bool,
    /// Measure the wall time of every pass.
    pub time_passes: bool,
    /// Print resource payloads as `__elided__` in dumps.
    pub elide_resources: bool,
}

/// Why a pipeline run stopped.
#[derive(Debug)]
pub enum RunError {
    /// A pass reported an error.
    Pass(PassError),
    /// The module failed to verify after a pass (`pass` is `None` when
    /// verification only ran at the end of the pipeline).
    Verify {
        /// `(name, argument)` of the pass after which verification failed.
        pass: Option<(&'static str, &'static str)>,
        /// The verifier's errors.
        diagnostics: Vec<Diagnostic>,
    },
    /// Writing a dump failed.
    Io(io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Pass(e) => e.fmt(f),
            RunError::Verify {
                pass: Some((name, arg)),
                ..
            } => write!(f, "verification failed after pass '{arg}' ({name})"),
            RunError::Verify { pass: None, .. } => f.write_str(
                "verification failed after the pass pipeline (rerun with --verify-each to find the pass)",
            ),
            RunError::Io(e) => write!(f, "cannot write IR dump: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<PassError> for RunError {
    fn from(e: PassError) -> RunError {
        RunError::Pass(e)
    }
}

impl From<io::Error> for RunError {
    fn from(e: io::Error) -> RunError {
        RunError::Io(e)
    }
}

/// A sequence of passes plus instrumentation settings.
#[derive(Default)]
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    /// Dump, verification and timing settings.
    pub instrumentation: Instrumentation,
    timings: Vec<Duration>,
    verify_time: Duration,
    total_time: Duration,
}

impl PassManager {
    /// An empty manager.
    pub fn new() -> PassManager {
        PassManager::default()
    }

    /// A manager running the passes of a textual pipeline.
    pub fn parse(pipeline: &str) -> Result<PassManager, PipelineError> {
        let mut pm = PassManager::new();
        for p in parse_pipeline(pipeline)? {
            pm.add(p);
        }
        Ok(pm)
    }

    /// Appends a pass.
    pub fn add(&mut self, pass: Box<dyn Pass>) {
        self.passes.push(pass);
        self.timings.push(Duration::ZERO);
    }

    /// The passes, in order.
    pub fn passes(&self) -> &[Box<dyn Pass>] {
        &self.passes
    }

    /// The pipeline as text, options spelled out.
    pub fn pipeline_string(&self) -> String {
        print_pipeline(&self.passes)
    }

    /// Runs every pass over every function of `m`, writing dumps to `dumps`.
    /// Returns whether any pass changed the module. The module is verified
    /// after every pass with `verify_each`, otherwise once at the end.
    pub fn run(&mut self, m: &mut Module, dumps: &mut dyn Write) -> Result<bool, RunError> {
        let start = Instant::now();
        let result = self.run_passes(m, dumps);
        self.total_time += start.elapsed();
        result
    }

    fn run_passes(&mut self, m: &mut Module, dumps: &mut dyn Write) -> Result<bool, RunError> {
        let ins = self.instrumentation.clone();
        let mut any_change = false;
        for (i, pass) in self.passes.iter_mut().enumerate() {
            let (name, arg) = (pass.name(), pass.argument());
            let listed = |l: &[String]| l.iter().any(|p| p == arg);
            if ins.print_before_all || listed(&ins.print_before) {
                dump(dumps, "Before", name, arg, m, ins.elide_resources)?;
            }
            let before = ins.print_after_change.then(|| print_module(m));
            let t = Instant::now();
            let mut changed = false;
            for f in &mut m.functions {
                changed |= pass.run(f)?;
            }
            self.timings[i] += t.elapsed();
            any_change |= changed;
            let changed_text = before.is_some_and(|b| b != print_module(m));
            if ins.print_after_all || listed(&ins.print_after) || changed_text {
                dump(dumps, "After", name, arg, m, ins.elide_resources)?;
            }
            if ins.verify_each {
                let t = Instant::now();
                let verdict = verify_module(m);
                self.verify_time += t.elapsed();
                verdict.map_err(|diagnostics| RunError::Verify {
                    pass: Some((name, arg)),
                    diagnostics,
                })?;
            }
        }
        if !ins.verify_each && !self.passes.is_empty() {
            verify_module(m).map_err(|diagnostics| RunError::Verify {
                pass: None,
                diagnostics,
            })?;
        }
        Ok(any_change)
    }

    /// MLIR-style execution time report of the runs so far.
    pub fn timing_report(&self) -> String {
        let rule =
            "===-------------------------------------------------------------------------===\n";
        let total = self.total_time.as_secs_f64();
        let pct = |d: f64| if total > 0.0 { 100.0 * d / total } else { 0.0 };
        let mut s = String::new();
        s.push_str(rule);
        s.push_str("                         ... Execution time report ...\n");
        s.push_str(rule);
        s.push_str(&format!("  Total Execution Time: {total:.4} seconds\n\n"));
        s.push_str("  ----Wall Time----  ----Name----\n");
        let mut line = |secs: f64, name: &str| {
            s.push_str(&format!("  {secs:8.4} ({:5.1}%)  {name}\n", pct(secs)));
        };
        for (p, d) in self.passes.iter().zip(&self.timings) {
            line(d.as_secs_f64(), p.name());
        }
        if self.instrumentation.verify_each {
            line(self.verify_time.as_secs_f64(), "Verifier");
        }
        line(total, "Total");
        s
    }

    /// Statistics of every pass with at least one counter.
    pub fn statistics_report(&self) -> String {
        let rule =
            "===-------------------------------------------------------------------------===\n";
        let mut s = String::new();
        s.push_str(rule);
        s.push_str("                         ... Pass statistics report ...\n");
        s.push_str(rule);
        for p in &self.passes {
            let stats: Vec<_> = p.statistics().iter().collect();
            if stats.is_empty() {
                continue;
            }
            s.push_str(&format!("{} ({})\n", p.name(), p.argument()));
            for st in stats {
                s.push_str(&format!(
                    "  (S) {} {} - {}\n",
                    st.value, st.name, st.description
                ));
            }
        }
        s
    }
}

fn dump(
    out: &mut dyn Write,
    when: &str,
    name: &str,
    arg: &str,
    m: &Module,
    elide_resources: bool,
) -> io::Result<()> {
    writeln!(out, "// -----// IR Dump {when} {name} ({arg}) //----- //")?;
    let opts = PrintOptions { elide_resources };
    out.write_all(print_module_with(m, opts).as_bytes())?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::ty;
    use lowbit_ir::{Function, OpKind};

    /// `y = relu(x)` plus one dead `silu`.
    fn module() -> Module {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[4], "f32"));
        let y = f.push(OpKind::Relu, vec![x], ty(&[4], "f32"));
        f.push(OpKind::Silu, vec![x], ty(&[4], "f32"));
        f.outputs.push(("y".into(), y));
        Module { functions: vec![f] }
    }

    fn run(pipeline: &str, ins: Instrumentation) -> (PassManager, Module, String) {
        let mut pm = PassManager::parse(pipeline).unwrap();
        pm.instrumentation = ins;
        let mut m = module();
        let mut dumps = Vec::new();
        pm.run(&mut m, &mut dumps).unwrap();
        (pm, m, String::from_utf8(dumps).unwrap())
    }

    fn banners(dumps: &str) -> Vec<&str> {
        dumps
            .lines()
            .filter(|l| l.starts_with("// -----//"))
            .collect()
    }

    #[test]
    fn dumps_after_all_and_selected_passes() {
        let all = Instrumentation {
            print_after_all: true,
            ..Instrumentation::default()
        };
        let (_, m, dumps) = run("cse,dce", all);
        assert_eq!(
            banners(&dumps),
            [
                "// -----// IR Dump After CSE (cse) //----- //",
                "// -----// IR Dump After DCE (dce) //----- //"
            ]
        );
        assert_eq!(m.functions[0].ops().len(), 1);
        let before = Instrumentation {
            print_before: vec!["dce".into()],
            ..Instrumentation::default()
        };
        let (_, _, dumps) = run("cse,dce,dce", before);
        assert_eq!(banners(&dumps).len(), 2);
        assert!(dumps.starts_with("// -----// IR Dump Before DCE (dce) //----- //\nmodule {\n"));
        assert!(
            dumps.contains("silu"),
            "before dce the dead op is still there"
        );
    }

    #[test]
    fn after_change_dumps_only_changes() {
        let ins = Instrumentation {
            print_after_change: true,
            ..Instrumentation::default()
        };
        let (_, _, dumps) = run("cse,dce,dce,canonicalize", ins);
        assert_eq!(
            banners(&dumps),
            ["// -----// IR Dump After DCE (dce) //----- //"]
        );
    }

    #[test]
    fn timing_and_statistics_reports() {
        let ins = Instrumentation {
            time_passes: true,
            verify_each: true,
            ..Instrumentation::default()
        };
        let (pm, _, _) = run("cse,dce", ins);
        let t = pm.timing_report();
        assert!(t.contains("... Execution time report ..."), "{t}");
        let names: Vec<&str> = t
            .lines()
            .filter(|l| l.contains("%)"))
            .filter_map(|l| l.split("  ").last())
            .collect();
        assert_eq!(names, ["CSE", "DCE", "Verifier", "Total"], "{t}");
        let s = pm.statistics_report();
        assert!(
            s.contains("DCE (dce)\n  (S) 1 num-erased - Number of ops erased"),
            "{s}"
        );
        assert_eq!(pm.pipeline_string(), "cse,dce");
    }
}

#[cfg(test)]
mod verify_tests {
    use super::*;
    use crate::pass::Statistics;
    use crate::passes::test_util::ty;
    use crate::registry::{PassInfo, PassOptions};
    use lowbit_ir::{Function, OpKind};

    /// A deliberately wrong pass: replaces the function by an ill-typed one.
    struct Breaker(Statistics);

    static BREAKER: PassInfo = PassInfo {
        argument: "break-types",
        name: "BreakTypes",
        summary: "test only",
        options: &[],
        statistics: &[],
        create: |_: &PassOptions| -> Box<dyn Pass> { Box::new(Breaker(Statistics::default())) },
    };

    impl Pass for Breaker {
        fn info(&self) -> &'static PassInfo {
            &BREAKER
        }
        fn statistics(&self) -> &Statistics {
            &self.0
        }
        fn run(&mut self, f: &mut Function) -> Result<bool, PassError> {
            // relu keeps its operand's type, so f32 in and i8 out is invalid.
            let mut g = Function::new(f.name.clone());
            let x = g.add_param("x", ty(&[4], "f32"));
            let r = g.push(OpKind::Relu, vec![x], ty(&[4], "i8"));
            g.outputs.push(("y".into(), r));
            *f = g;
            Ok(true)
        }
    }

    fn module() -> Module {
        let mut f = Function::new("main");
        let x = f.add_param("x", ty(&[4], "f32"));
        let y = f.push(OpKind::Relu, vec![x], ty(&[4], "f32"));
        f.outputs.push(("y".into(), y));
        Module { functions: vec![f] }
    }

    #[test]
    fn verify_each_names_the_failing_pass() {
        let mut pm = PassManager::parse("dce").unwrap();
        pm.add((BREAKER.create)(&PassOptions::default()));
        pm.add(PassManager::parse("cse").unwrap().passes.remove(0));
        pm.instrumentation.verify_each = true;
        let err = pm.run(&mut module(), &mut io::sink()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "verification failed after pass 'break-types' (BreakTypes)"
        );
        let RunError::Verify { diagnostics, .. } = err else {
            panic!("expected a verification error");
        };
        assert!(!diagnostics.is_empty());
    }

    #[test]
    fn without_verify_each_the_end_result_is_still_verified() {
        let mut pm = PassManager::new();
        pm.add((BREAKER.create)(&PassOptions::default()));
        let err = pm.run(&mut module(), &mut io::sink()).unwrap_err();
        assert!(
            err.to_string().contains("rerun with --verify-each"),
            "{err}"
        );
    }
}
