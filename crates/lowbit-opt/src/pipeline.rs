//! Textual pass pipelines: `canonicalize{max-folded-bytes=1MiB},cse,dce`.
//!
//! Grammar: passes separated by commas; each pass is its registry argument,
//! optionally followed by `{name=value, ...}` (entries separated by commas or
//! spaces). Whitespace around names is ignored. Errors carry the 1-based
//! column (in characters) of the offending text. Nested pipelines
//! (`func.func(...)`) are not supported: every pass runs on every function.

use crate::pass::Pass;
use crate::registry::{lookup, PassOptions};
use std::fmt;

/// A pipeline syntax or lookup error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineError {
    /// The pipeline text.
    pub pipeline: String,
    /// 1-based column of the error.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid pass pipeline '{}' at column {}: {}",
            self.pipeline, self.column, self.message
        )
    }
}

impl std::error::Error for PipelineError {}

/// Parses a pipeline into freshly built passes, in order.
pub fn parse_pipeline(text: &str) -> Result<Vec<Box<dyn Pass>>, PipelineError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
        text,
    };
    let mut passes = Vec::new();
    p.skip_ws();
    if p.at_end() {
        return Ok(passes);
    }
    loop {
        passes.push(p.pass()?);
        p.skip_ws();
        match p.peek() {
            None => return Ok(passes),
            Some(',') => p.pos += 1,
            Some(c) => {
                return Err(p.error(p.pos, format!("expected ',' between passes, found '{c}'")))
            }
        }
    }
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    text: &'a str,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

impl Parser<'_> {
    fn error(&self, pos: usize, message: String) -> PipelineError {
        PipelineError {
            pipeline: self.text.to_string(),
            column: pos + 1,
            message,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn name(&mut self, what: &str) -> Result<(usize, String), PipelineError> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        if start == self.pos {
            let found = match self.peek() {
                Some(c) => format!("'{c}'"),
                None => "end of pipeline".to_string(),
            };
            return Err(self.error(start, format!("expected {what}, found {found}")));
        }
        Ok((start, self.chars[start..self.pos].iter().collect()))
    }

    /// Appends `,name` entries to a list value up to the next `name=value`
    /// option or the closing brace.
    fn continue_list(&mut self, value: &mut String) {
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.peek() != Some(',') {
                self.pos = save;
                return;
            }
            self.pos += 1;
            self.skip_ws();
            let start = self.pos;
            while self.peek().is_some_and(is_name_char) {
                self.pos += 1;
            }
            let item: String = self.chars[start..self.pos].iter().collect();
            let end = self.pos;
            self.skip_ws();
            if item.is_empty() || self.peek() == Some('=') {
                self.pos = save;
                return;
            }
            self.pos = end;
            value.push(',');
            value.push_str(&item);
        }
    }

    fn pass(&mut self) -> Result<Box<dyn Pass>, PipelineError> {
        let (start, name) = self.name("a pass name")?;
        let info = lookup(&name).ok_or_else(|| {
            self.error(
                start,
                format!("unknown pass '{name}' (see 'lowbit opt --list-passes')"),
            )
        })?;
        let mut options = PassOptions::defaults(info);
        self.skip_ws();
        if self.peek() == Some('{') {
            self.pos += 1;
            loop {
                self.skip_ws();
                match self.peek() {
                    Some('}') => {
                        self.pos += 1;
                        break;
                    }
                    Some(',') => {
                        self.pos += 1;
                        continue;
                    }
                    None => {
                        return Err(self.error(self.pos, "unterminated '{' in pass options".into()))
                    }
                    Some(_) => {}
                }
                let (opt_start, key) = self.name("an option name")?;
                self.skip_ws();
                if self.peek() != Some('=') {
                    return Err(self.error(self.pos, format!("expected '=' after option '{key}'")));
                }
                self.pos += 1;
                self.skip_ws();
                let vstart = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| !c.is_whitespace() && c != ',' && c != '}')
                {
                    self.pos += 1;
                }
                let mut value: String = self.chars[vstart..self.pos].iter().collect();
                let is_list = info
                    .option(&key)
                    .is_some_and(|o| o.kind == crate::registry::OptionKind::List);
                if is_list {
                    self.continue_list(&mut value);
                }
                if value.is_empty() {
                    return Err(self.error(vstart, format!("missing value for option '{key}'")));
                }
                options
                    .set(info, &key, &value)
                    .map_err(|m| self.error(opt_start, m))?;
            }
        }
        Ok((info.create)(&options))
    }
}

/// Prints passes back as a pipeline, with every option value spelled out.
pub fn print_pipeline(passes: &[Box<dyn Pass>]) -> String {
    passes
        .iter()
        .map(|p| {
            let opts = p.option_values();
            if opts.is_empty() {
                p.argument().to_string()
            } else {
                let o: Vec<String> = opts.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{}{{{}}}", p.argument(), o.join(" "))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> PipelineError {
        match parse_pipeline(text) {
            Ok(_) => panic!("'{text}' should not parse"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_passes_and_options() {
        let p = parse_pipeline(" canonicalize{max-folded-bytes=1KiB, max-iterations=3} , cse,dce ")
            .unwrap();
        let args: Vec<&str> = p.iter().map(|p| p.argument()).collect();
        assert_eq!(args, ["canonicalize", "cse", "dce"]);
        assert_eq!(
            print_pipeline(&p),
            "canonicalize{max-folded-bytes=1024 max-iterations=3 fold=true},cse,dce"
        );
        assert!(parse_pipeline("").unwrap().is_empty());
        let p = parse_pipeline("canonicalize{fold=false max-iterations=1}").unwrap();
        assert!(print_pipeline(&p).contains("max-iterations=1 fold=false"));
    }

    #[test]
    fn errors_name_the_column() {
        let e = err("canonicalize,frob");
        assert_eq!(
            (e.column, e.message.contains("unknown pass 'frob'")),
            (14, true)
        );
        let e = err("cse,");
        assert_eq!(e.column, 5);
        assert!(
            e.message.contains("expected a pass name, found end"),
            "{}",
            e.message
        );
        let e = err("canonicalize{bogus=1}");
        assert_eq!(e.column, 14);
        assert!(e.message.contains("no option 'bogus'"), "{}", e.message);
        let e = err("canonicalize{max-folded-bytes=lots}");
        assert!(e.message.contains("non-negative integer"), "{}", e.message);
        let e = err("canonicalize{max-folded-bytes=1");
        assert!(e.message.contains("unterminated"), "{}", e.message);
        let e = err("cse dce");
        assert_eq!(e.column, 5);
        let e = err("canonicalize{fold}");
        assert!(e.message.contains("expected '='"), "{}", e.message);
        let p = parse_pipeline("egraph{rules=fuse-dequant, layout ,target=sm_80}").unwrap();
        assert_eq!(
            print_pipeline(&p),
            "egraph{rules=fuse-dequant,layout target=sm_80 iter-limit=30 node-limit=200000 time-limit-ms=10000 allow-approx-dyadic=false}"
        );
        let e = err("dce{x=1}");
        assert!(e.message.contains("has no options"), "{}", e.message);
    }
}
