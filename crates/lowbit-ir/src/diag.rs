//! Diagnostics: errors tied to a source position and, where known, an op.

use std::fmt;

/// A position in a source file (1-based line and column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The input is invalid.
    Error,
    /// Additional information attached to an error.
    Note,
}

/// One message about the input, with where it applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or note.
    pub severity: Severity,
    /// Where in the source, if known.
    pub span: Option<Span>,
    /// The message, without position or severity prefix.
    pub message: String,
}

impl Diagnostic {
    /// An error at an optional position.
    pub fn error(span: Option<Span>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            span,
            message: message.into(),
        }
    }

    /// Renders as `file:line:col: error: message` (the file may be empty).
    pub fn render(&self, file: &str) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Note => "note",
        };
        match (self.span, file.is_empty()) {
            (Some(s), false) => format!("{file}:{s}: {sev}: {}", self.message),
            (Some(s), true) => format!("{s}: {sev}: {}", self.message),
            (None, false) => format!("{file}: {sev}: {}", self.message),
            (None, true) => format!("{sev}: {}", self.message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(""))
    }
}

impl std::error::Error for Diagnostic {}
