//! The pass registry: every built-in pass with its argument, name, summary,
//! options and statistics, and the typed option values passes are built from.

use crate::pass::Pass;
use crate::passes::{canonicalize, cse, dce, egraph, quantize_activations};
use std::fmt;

/// The type of a pass option's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionKind {
    /// A non-negative integer (decimal, or with a `KiB`/`MiB`/`GiB` suffix).
    UInt,
    /// `true` or `false`.
    Bool,
    /// A name (`x86-64-v3`).
    Text,
    /// A comma-separated list of names (`fuse-dequant,layout`); in a
    /// pipeline, the entries after the first continue the list until the
    /// next `name=value`.
    List,
}

impl fmt::Display for OptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptionKind::UInt => "uint",
            OptionKind::Bool => "bool",
            OptionKind::Text => "name",
            OptionKind::List => "list",
        })
    }
}

/// Declaration of one pass option.
#[derive(Debug)]
pub struct OptionInfo {
    /// Name as written in a pipeline (`max-folded-bytes`).
    pub name: &'static str,
    /// Value type.
    pub kind: OptionKind,
    /// Default value, as text.
    pub default: &'static str,
    /// What it controls.
    pub description: &'static str,
}

/// Declaration of one statistic counter.
#[derive(Debug)]
pub struct StatisticInfo {
    /// Name (`num-folded`).
    pub name: &'static str,
    /// What it counts.
    pub description: &'static str,
}

/// A registered pass.
pub struct PassInfo {
    /// Pipeline argument (`canonicalize`).
    pub argument: &'static str,
    /// CamelCase name for dumps and reports (`Canonicalizer`).
    pub name: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// Declared options.
    pub options: &'static [OptionInfo],
    /// Declared statistics.
    pub statistics: &'static [StatisticInfo],
    /// Builds the pass from validated options.
    pub create: fn(&PassOptions) -> Box<dyn Pass>,
}

impl fmt::Debug for PassInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassInfo")
            .field("argument", &self.argument)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PassInfo {
    /// The option declaration called `name`.
    pub fn option(&self, name: &str) -> Option<&'static OptionInfo> {
        self.options.iter().find(|o| o.name == name)
    }
}

/// Every built-in pass, in the order `--list-passes` shows them.
pub fn registry() -> &'static [PassInfo] {
    static REGISTRY: [PassInfo; 5] = [
        canonicalize::INFO,
        cse::INFO,
        dce::INFO,
        egraph::INFO,
        quantize_activations::INFO,
    ];
    &REGISTRY
}

/// The pass with pipeline argument `argument`.
pub fn lookup(argument: &str) -> Option<&'static PassInfo> {
    registry().iter().find(|p| p.argument == argument)
}

/// The registry as the text `lowbit opt --list-passes` prints.
pub fn describe_registry() -> String {
    let mut s = String::from("Available passes:\n");
    for p in registry() {
        s.push_str(&format!("  {} ({}): {}\n", p.argument, p.name, p.summary));
        for o in p.options {
            s.push_str(&format!(
                "    {}=<{}>  {} (default: {})\n",
                o.name, o.kind, o.description, o.default
            ));
        }
        for st in p.statistics {
            s.push_str(&format!("    statistic {}: {}\n", st.name, st.description));
        }
    }
    s
}

/// Option values for one pass, checked against its declarations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassOptions {
    values: Vec<(&'static str, u64)>,
    texts: Vec<(&'static str, String)>,
}

impl PassOptions {
    /// The defaults of every declared option.
    pub fn defaults(info: &PassInfo) -> PassOptions {
        let mut o = PassOptions::default();
        for decl in info.options {
            if matches!(decl.kind, OptionKind::Text | OptionKind::List) {
                o.texts.push((decl.name, decl.default.to_string()));
                continue;
            }
            // Defaults are static text in this crate; the registry test
            // checks each one parses.
            if let Ok(v) = parse_value(decl, decl.default) {
                o.values.push((decl.name, v));
            }
        }
        o
    }

    /// Sets `name` from its text form, checking the name and the value.
    pub fn set(&mut self, info: &PassInfo, name: &str, value: &str) -> Result<(), String> {
        let decl = info.option(name).ok_or_else(|| {
            let known: Vec<&str> = info.options.iter().map(|o| o.name).collect();
            if known.is_empty() {
                format!("pass '{}' has no options (got '{name}')", info.argument)
            } else {
                format!(
                    "pass '{}' has no option '{name}' (options: {})",
                    info.argument,
                    known.join(", ")
                )
            }
        })?;
        if matches!(decl.kind, OptionKind::Text | OptionKind::List) {
            match self.texts.iter_mut().find(|(n, _)| *n == decl.name) {
                Some(slot) => slot.1 = value.to_string(),
                None => self.texts.push((decl.name, value.to_string())),
            }
            return Ok(());
        }
        let v = parse_value(decl, value)?;
        match self.values.iter_mut().find(|(n, _)| *n == decl.name) {
            Some(slot) => slot.1 = v,
            None => self.values.push((decl.name, v)),
        }
        Ok(())
    }

    /// An unsigned option's value (0 when undeclared).
    pub fn uint(&self, name: &str) -> u64 {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// A name or list option's text (empty when undeclared).
    pub fn text(&self, name: &str) -> &str {
        self.texts
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// A list option's entries.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.text(name)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// A boolean option's value (false when undeclared).
    pub fn flag(&self, name: &str) -> bool {
        self.uint(name) != 0
    }
}

fn parse_value(decl: &OptionInfo, text: &str) -> Result<u64, String> {
    match decl.kind {
        OptionKind::Bool => match text {
            "true" | "1" => Ok(1),
            "false" | "0" => Ok(0),
            _ => Err(format!(
                "option '{}' expects true or false, not '{text}'",
                decl.name
            )),
        },
        OptionKind::Text | OptionKind::List => Ok(0),
        OptionKind::UInt => {
            let (digits, unit) = [("KiB", 1u64 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
                .iter()
                .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|d| (d, *unit)))
                .unwrap_or((text, 1));
            digits
                .parse::<u64>()
                .ok()
                .and_then(|v| v.checked_mul(unit))
                .ok_or_else(|| {
                    format!(
                        "option '{}' expects a non-negative integer, not '{text}'",
                        decl.name
                    )
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for p in registry() {
            assert!(seen.insert(p.argument), "duplicate pass {}", p.argument);
            let opts = PassOptions::defaults(p);
            for o in p.options {
                assert!(
                    parse_value(o, o.default).is_ok(),
                    "{}: {}",
                    p.argument,
                    o.name
                );
            }
            let pass = (p.create)(&opts);
            assert_eq!(pass.argument(), p.argument);
            let stats: Vec<&str> = pass.statistics().iter().map(|s| s.name).collect();
            let declared: Vec<&str> = p.statistics.iter().map(|s| s.name).collect();
            assert_eq!(stats, declared);
        }
    }

    #[test]
    fn option_values_are_checked() {
        let info = lookup("canonicalize").unwrap();
        let mut o = PassOptions::defaults(info);
        assert_eq!(o.uint("max-folded-bytes"), 16 << 20);
        o.set(info, "max-folded-bytes", "4KiB").unwrap();
        assert_eq!(o.uint("max-folded-bytes"), 4096);
        let e = o.set(info, "max-folded-bytes", "-1").unwrap_err();
        assert!(e.contains("non-negative integer"), "{e}");
        let e = o.set(info, "nope", "1").unwrap_err();
        assert!(e.contains("has no option 'nope'"), "{e}");
        let e = PassOptions::default()
            .set(lookup("dce").unwrap(), "x", "1")
            .unwrap_err();
        assert!(e.contains("has no options"), "{e}");
    }
}
