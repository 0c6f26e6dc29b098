//! Pass manager, textual pipelines and the built-in passes.
//!
//! Modelled on MLIR's pass infrastructure: every pass has a pipeline
//! argument (`canonicalize`), a CamelCase name (`Canonicalizer`), a summary,
//! typed options and statistics counters, all declared in one
//! [registry](registry). A pipeline is text such as
//! `canonicalize{max-folded-bytes=1024},cse,dce`; [`parse_pipeline`] turns it
//! into passes and reports errors with their column. The [`PassManager`]
//! runs the passes over every function of a module and provides the usual
//! instrumentation: IR dumps before/after passes, verification after each
//! pass and per-pass timing.
//!
//! Passes work on one [`Function`](lowbit_ir::Function) at a time; there are
//! no module-level passes yet.
//!
//! ```
//! use lowbit_ir::{parser::parse_module, printer::print_module};
//! use lowbit_opt::PassManager;
//!
//! let src = "module {
//!   func @main(%x: tensor<2xi8>) -> (y: tensor<2xi8>) {
//!     %0 = constant dense<[1, 1]> : tensor<2xi8>
//!     %1 = mul %x, %0 : (tensor<2xi8>, tensor<2xi8>) -> tensor<2xi8>
//!     return %1
//!   }
//! }";
//! let mut module = parse_module(src).expect("valid IR");
//! let mut pm = PassManager::parse("canonicalize,cse,dce").expect("valid pipeline");
//! pm.instrumentation.verify_each = true;
//! let changed = pm.run(&mut module, &mut std::io::sink()).expect("passes succeed");
//! assert!(changed);
//! assert!(print_module(&module).contains("return %x"));
//! ```
#![deny(missing_docs)]

pub mod manager;
pub mod pass;
pub mod passes;
pub mod pipeline;
pub mod registry;

pub use manager::{Instrumentation, PassManager, RunError};
pub use pass::{Pass, PassError, Statistic, Statistics};
pub use pipeline::{parse_pipeline, PipelineError};
pub use registry::{lookup, registry, OptionInfo, OptionKind, PassInfo, PassOptions};
