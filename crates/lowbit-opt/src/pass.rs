//! The [`Pass`] trait, pass errors and statistics counters.

use lowbit_ir::Function;
use std::fmt;

/// A transformation of one function.
///
/// Passes are built from their registry entry ([`crate::registry`]) with
/// parsed options; the manager calls [`Pass::run`] once per function.
pub trait Pass {
    /// The registry entry this pass was built from (name, argument, summary,
    /// option and statistic declarations).
    fn info(&self) -> &'static crate::registry::PassInfo;

    /// CamelCase name used in dumps and reports, e.g. `Canonicalizer`.
    fn name(&self) -> &'static str {
        self.info().name
    }

    /// The pipeline argument, e.g. `canonicalize`.
    fn argument(&self) -> &'static str {
        self.info().argument
    }

    /// One-line description.
    fn summary(&self) -> &'static str {
        self.info().summary
    }

    /// Current option values as `(name, value)` text, in declaration order
    /// (used to print a pipeline back).
    fn option_values(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Counters accumulated over every run of this pass.
    fn statistics(&self) -> &Statistics;

    /// Transforms `f`; returns whether anything changed. On error the
    /// function may be partly transformed and must not be used further.
    fn run(&mut self, f: &mut Function) -> Result<bool, PassError>;
}

/// A failure inside a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassError {
    /// The pass argument (`canonicalize`).
    pub pass: String,
    /// The function being transformed.
    pub function: String,
    /// What went wrong, naming the op.
    pub message: String,
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pass '{}' failed on @{}: {}",
            self.pass, self.function, self.message
        )
    }
}

impl std::error::Error for PassError {}

/// One named counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statistic {
    /// Name, e.g. `num-folded`.
    pub name: &'static str,
    /// What it counts.
    pub description: &'static str,
    /// Current value.
    pub value: u64,
}

/// The counters of one pass, declared by its registry entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    counters: Vec<Statistic>,
}

impl Statistics {
    /// Zeroed counters for the declared `(name, description)` pairs.
    pub fn new(decls: &[crate::registry::StatisticInfo]) -> Statistics {
        Statistics {
            counters: decls
                .iter()
                .map(|d| Statistic {
                    name: d.name,
                    description: d.description,
                    value: 0,
                })
                .collect(),
        }
    }

    /// Adds `n` to the counter `name`. Names are fixed by the pass itself,
    /// so an undeclared name is a bug in the pass and is caught by tests.
    pub fn add(&mut self, name: &str, n: u64) {
        let found = self.counters.iter_mut().find(|c| c.name == name);
        debug_assert!(found.is_some(), "undeclared statistic '{name}'");
        if let Some(c) = found {
            c.value += n;
        }
    }

    /// The value of counter `name` (0 when undeclared).
    pub fn get(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.value)
    }

    /// Every counter, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = &Statistic> {
        self.counters.iter()
    }
}
