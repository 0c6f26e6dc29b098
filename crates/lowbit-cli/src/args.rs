//! A small command-line parser: `--name`, `--name=value`, `--name value`,
//! short aliases such as `-o`, `--` to end options, and `-` as a positional
//! (standard input). Each command declares its options in a table, so
//! unknown or malformed options are reported instead of ignored.

use std::collections::HashMap;

/// One declared option.
pub struct Spec {
    /// Long name without dashes (`print-ir-after`).
    pub long: &'static str,
    /// Optional one-letter alias (`o` for `-o`).
    pub short: Option<char>,
    /// Whether the option takes a value.
    pub takes_value: bool,
}

/// Parsed arguments.
#[derive(Debug, Default)]
pub struct Args {
    /// Positional arguments, in order.
    pub positional: Vec<String>,
    values: HashMap<&'static str, Vec<String>>,
}

impl Args {
    /// Whether a flag (or a valued option) was given.
    pub fn has(&self, long: &str) -> bool {
        self.values.contains_key(long)
    }

    /// Every value given for `long`, in order.
    pub fn all(&self, long: &str) -> &[String] {
        self.values.get(long).map_or(&[], |v| v.as_slice())
    }

    /// The last value given for `long`.
    pub fn last(&self, long: &str) -> Option<&str> {
        self.all(long).last().map(String::as_str)
    }

    /// The one positional argument a command takes (its input file), or
    /// the usage error: `missing` when there is none, `unexpected argument
    /// '...'` naming the first extra one.
    pub fn one_positional(&self, missing: &str) -> Result<&str, String> {
        match self.positional.as_slice() {
            [p] => Ok(p.as_str()),
            [] => Err(missing.to_string()),
            [_, extra, ..] => Err(format!("unexpected argument '{extra}'")),
        }
    }
}

/// Parses `argv` (without the program and command names) against `specs`.
pub fn parse(argv: &[String], specs: &[Spec]) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = argv.iter();
    let mut only_positional = false;
    while let Some(arg) = it.next() {
        if only_positional || arg == "-" || !arg.starts_with('-') {
            out.positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        let (spec, inline) = if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let spec = specs
                .iter()
                .find(|s| s.long == name)
                .ok_or_else(|| format!("unknown option '--{name}'"))?;
            (spec, inline)
        } else {
            let mut chars = arg[1..].chars();
            let c = chars.next().unwrap_or('-');
            let rest: String = chars.collect();
            let spec = specs
                .iter()
                .find(|s| s.short == Some(c))
                .ok_or_else(|| format!("unknown option '{arg}'"))?;
            let inline = (!rest.is_empty()).then(|| rest.trim_start_matches('=').to_string());
            (spec, inline)
        };
        let entry = out.values.entry(spec.long).or_default();
        if spec.takes_value {
            let v = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("option '--{}' needs a value", spec.long))?,
            };
            entry.push(v);
        } else if inline.is_some() {
            return Err(format!("option '--{}' takes no value", spec.long));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[Spec] = &[
        Spec {
            long: "passes",
            short: None,
            takes_value: true,
        },
        Spec {
            long: "verify-each",
            short: None,
            takes_value: false,
        },
        Spec {
            long: "output",
            short: Some('o'),
            takes_value: true,
        },
    ];

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_every_form() {
        let a = parse(
            &argv(&[
                "f.lbir",
                "--passes=cse",
                "--verify-each",
                "-o",
                "out",
                "--passes",
                "dce",
                "-",
            ]),
            SPECS,
        )
        .unwrap();
        assert_eq!(a.positional, ["f.lbir", "-"]);
        assert_eq!(a.all("passes"), ["cse", "dce"]);
        assert_eq!(a.last("output"), Some("out"));
        assert!(a.has("verify-each"));
        let a = parse(&argv(&["-oout", "--", "--verify-each"]), SPECS).unwrap();
        assert_eq!(a.last("output"), Some("out"));
        assert_eq!(a.positional, ["--verify-each"]);
    }

    #[test]
    fn rejects_bad_options() {
        let e = parse(&argv(&["--frob"]), SPECS).unwrap_err();
        assert_eq!(e, "unknown option '--frob'");
        let e = parse(&argv(&["--passes"]), SPECS).unwrap_err();
        assert!(e.contains("needs a value"), "{e}");
        let e = parse(&argv(&["--verify-each=1"]), SPECS).unwrap_err();
        assert!(e.contains("takes no value"), "{e}");
        assert!(parse(&argv(&["-x"]), SPECS).is_err());
    }

    #[test]
    fn one_positional_names_what_is_missing_or_extra() {
        let one = |s: &[&str]| {
            parse(&argv(s), SPECS)
                .unwrap()
                .one_positional("missing MODEL")
                .map(str::to_string)
        };
        assert_eq!(one(&["-", "--verify-each"]), Ok("-".to_string()));
        assert_eq!(one(&["--verify-each"]), Err("missing MODEL".to_string()));
        assert_eq!(
            one(&["a.lbir", "b.lbir", "c.lbir"]),
            Err("unexpected argument 'b.lbir'".to_string())
        );
    }
}
