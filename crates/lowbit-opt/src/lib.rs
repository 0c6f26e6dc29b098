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
