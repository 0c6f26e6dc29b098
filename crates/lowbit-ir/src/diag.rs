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

/// Renders diagnostics compiler-style: each as `file:line:col: error: msg`,
/// then (when the position is known and inside `src`) the source line and
/// a `^` under the column. Tabs before the column are kept in the caret
/// line so the caret lines up in a terminal.
pub fn render_with_source(diags: &[Diagnostic], file: &str, src: &str) -> String {
    let lines: Vec<&str> = src.lines().collect();
    render_with_lines(diags, file, |n| {
        (n as usize)
            .checked_sub(1)
            .and_then(|i| lines.get(i))
            .map(|l| l.to_string())
    })
}

/// [`render_with_source`] with the source lines from `line` (1-based line
/// number to the line's text without its ending, `None` when there is no
/// such line), for sources that are not kept whole (see
/// [`crate::source::Source`]).
pub fn render_with_lines(
    diags: &[Diagnostic],
    file: &str,
    line: impl Fn(u32) -> Option<String>,
) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.render(file));
        out.push('\n');
        let Some(span) = d.span else { continue };
        let Some(line) = line(span.line) else {
            continue;
        };
        out.push_str(&line);
        out.push('\n');
        let before = (span.col as usize).saturating_sub(1);
        let mut caret: String = line
            .chars()
            .chain(std::iter::repeat(' '))
            .take(before)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        caret.push('^');
        out.push_str(&caret);
        out.push('\n');
    }
    out
}

/// One `// expected-error ...` (or `expected-note`) directive.
#[derive(Debug)]
struct Expectation {
    /// Line the directive is written on (1-based).
    written_at: usize,
    /// Line the diagnostic must be on (1-based).
    line: usize,
    severity: Severity,
    text: String,
}

/// Checks diagnostics against the expectations written in `src`, like
/// MLIR's `-verify-diagnostics`. In a `//` comment,
/// `expected-error {{text}}` expects an error on the same line whose message
/// contains `text`; `expected-error@+N {{text}}` and `@-N` expect it `N`
/// lines below or above. `expected-note` works the same for notes. Every
/// expectation must be met by its own diagnostic and every diagnostic must
/// be expected. The error lists every problem, one per line, by line
/// number.
pub fn check_expected_diagnostics(src: &str, diags: &[Diagnostic]) -> Result<(), String> {
    let line_count = src.lines().count();
    let mut problems: Vec<(usize, String)> = Vec::new();
    let mut expected = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let Some(comment) = line.find("//").map(|p| &line[p..]) else {
            continue;
        };
        parse_directives(i + 1, comment, line_count, &mut expected, &mut problems);
    }
    let matched = match_diagnostics(&expected, diags);
    for (e, hit) in expected.iter().zip(&matched.expected_hit) {
        if !hit {
            problems.push((
                e.written_at,
                format!(
                    "expected {} on line {} was not produced: {{{{{}}}}}",
                    severity_name(e.severity),
                    e.line,
                    e.text
                ),
            ));
        }
    }
    for (d, hit) in diags.iter().zip(&matched.diag_hit) {
        if !hit {
            let line = d.span.map_or(0, |s| s.line as usize);
            let at = match d.span {
                Some(s) => format!("at {s}"),
                None => "without a position".to_string(),
            };
            problems.push((
                line,
                format!(
                    "unexpected {} {at}: {}",
                    severity_name(d.severity),
                    d.message
                ),
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort_by_key(|(line, _)| *line);
    let lines: Vec<String> = problems
        .into_iter()
        .map(|(line, msg)| {
            if line == 0 {
                msg
            } else {
                format!("line {line}: {msg}")
            }
        })
        .collect();
    Err(lines.join("\n"))
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Note => "note",
    }
}

/// Reads every directive in one comment.
fn parse_directives(
    lineno: usize,
    comment: &str,
    line_count: usize,
    expected: &mut Vec<Expectation>,
    problems: &mut Vec<(usize, String)>,
) {
    let mut rest = comment;
    loop {
        let found = [
            ("expected-error", Severity::Error),
            ("expected-note", Severity::Note),
        ]
        .into_iter()
        .filter_map(|(k, sev)| rest.find(k).map(|p| (p, k, sev)))
        .min_by_key(|(p, _, _)| *p);
        let Some((pos, keyword, severity)) = found else {
            return;
        };
        rest = &rest[pos + keyword.len()..];
        let mut offset: i64 = 0;
        let has_offset = rest.starts_with('@');
        if let Some(after_at) = rest.strip_prefix('@') {
            let sign_len = 1;
            let sign = match after_at.chars().next() {
                Some('+') => 1,
                Some('-') => -1,
                _ => {
                    problems.push((
                        lineno,
                        format!("malformed {keyword} directive: '@' must be followed by +N or -N"),
                    ));
                    continue;
                }
            };
            let digits: String = after_at[sign_len..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            let Ok(n) = digits.parse::<i64>() else {
                problems.push((
                    lineno,
                    format!("malformed {keyword} directive: '@' must be followed by +N or -N"),
                ));
                continue;
            };
            offset = sign * n;
            rest = &after_at[sign_len + digits.len()..];
        }
        let body = rest.trim_start();
        let Some(text_start) = body.strip_prefix("{{") else {
            // Without `@` the keyword may just be prose in a comment (as in
            // MLIR); with one, it was meant as a directive.
            if has_offset {
                problems.push((
                    lineno,
                    format!("malformed {keyword} directive: expected {{{{text}}}}"),
                ));
            }
            continue;
        };
        let Some(end) = text_start.find("}}") else {
            problems.push((
                lineno,
                format!("malformed {keyword} directive: missing closing }}}}"),
            ));
            return;
        };
        let target = lineno as i64 + offset;
        if target < 1 || target > line_count as i64 {
            problems.push((
                lineno,
                format!("{keyword} directive points at line {target}, outside the file"),
            ));
        } else {
            expected.push(Expectation {
                written_at: lineno,
                line: target as usize,
                severity,
                text: text_start[..end].to_string(),
            });
        }
        rest = &text_start[end + 2..];
    }
}

struct Matching {
    expected_hit: Vec<bool>,
    diag_hit: Vec<bool>,
}

/// Pairs diagnostics with expectations one to one, as many as possible
/// (augmenting paths), so that overlapping texts such as `{{a}}` and
/// `{{ab}}` on one line cannot steal each other's diagnostic.
fn match_diagnostics(expected: &[Expectation], diags: &[Diagnostic]) -> Matching {
    let fits = |e: &Expectation, d: &Diagnostic| {
        d.severity == e.severity
            && d.span.is_some_and(|s| s.line as usize == e.line)
            && d.message.contains(&e.text)
    };
    let candidates: Vec<Vec<usize>> = diags
        .iter()
        .map(|d| {
            (0..expected.len())
                .filter(|&j| fits(&expected[j], d))
                .collect()
        })
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; expected.len()];
    fn augment(
        d: usize,
        candidates: &[Vec<usize>],
        owner: &mut [Option<usize>],
        visited: &mut [bool],
    ) -> bool {
        for &e in &candidates[d] {
            if visited[e] {
                continue;
            }
            visited[e] = true;
            if owner[e].is_none_or(|other| augment(other, candidates, owner, visited)) {
                owner[e] = Some(d);
                return true;
            }
        }
        false
    }
    let mut diag_hit = vec![false; diags.len()];
    for (d, hit) in diag_hit.iter_mut().enumerate() {
        let mut visited = vec![false; expected.len()];
        *hit = augment(d, &candidates, &mut owner, &mut visited);
    }
    Matching {
        expected_hit: owner.iter().map(Option::is_some).collect(),
        diag_hit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32, col: u32, msg: &str) -> Diagnostic {
        Diagnostic::error(Some(Span { line, col }), msg)
    }

    const SRC: &str = "module {\n\
        // expected-error@+1 {{inner dimensions differ}}\n\
        %0 = matmul\n\
        %1 = add // expected-error {{element types differ}}\n\
        %2 = relu\n\
        // expected-error@-1 {{'relu' op}}\n\
        }\n";

    #[test]
    fn expectations_met_exactly() {
        let diags = vec![
            at(
                3,
                1,
                "'matmul' op: inner dimensions differ: lhs k = 4, rhs k = 2",
            ),
            at(
                4,
                1,
                "'add' op: operand element types differ: lhs f32, rhs f16",
            ),
            at(
                5,
                1,
                "'relu' op: result shape [2] differs from operand shape [3]",
            ),
        ];
        assert_eq!(check_expected_diagnostics(SRC, &diags), Ok(()));
    }

    #[test]
    fn missing_and_unexpected_are_listed_by_line() {
        let diags = vec![
            at(
                3,
                1,
                "'matmul' op: inner dimensions differ: lhs k = 4, rhs k = 2",
            ),
            at(
                4,
                1,
                "'add' op: result shape [1] differs from the broadcast shape [2]",
            ),
            at(7, 1, "'func' @f: function has no outputs"),
            Diagnostic::error(None, "no position"),
        ];
        let e = check_expected_diagnostics(SRC, &diags).unwrap_err();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(
            lines,
            vec![
                "unexpected error without a position: no position",
                "line 4: expected error on line 4 was not produced: {{element types differ}}",
                "line 4: unexpected error at 4:1: 'add' op: result shape [1] differs from the broadcast shape [2]",
                "line 6: expected error on line 5 was not produced: {{'relu' op}}",
                "line 7: unexpected error at 7:1: 'func' @f: function has no outputs",
            ]
        );
    }

    #[test]
    fn wrong_line_does_not_match() {
        let diags = vec![
            at(2, 1, "'matmul' op: inner dimensions differ"),
            at(4, 1, "'add' op: operand element types differ"),
            at(5, 1, "'relu' op: x"),
        ];
        let e = check_expected_diagnostics(SRC, &diags).unwrap_err();
        assert!(
            e.contains("line 2: expected error on line 3 was not produced"),
            "{e}"
        );
        assert!(e.contains("line 2: unexpected error at 2:1"), "{e}");
    }

    #[test]
    fn each_diagnostic_meets_one_expectation() {
        let src = "x // expected-error {{a}} expected-error {{ab}}\n";
        // Both texts match "ab"; the matching must still pair "a" with "a".
        let diags = vec![at(1, 1, "ab"), at(1, 2, "a")];
        assert_eq!(check_expected_diagnostics(src, &diags), Ok(()));
        let one = vec![at(1, 1, "ab")];
        let e = check_expected_diagnostics(src, &one).unwrap_err();
        assert_eq!(e.lines().count(), 1, "{e}");
        let twice = vec![at(1, 1, "ab"), at(1, 2, "ab"), at(1, 3, "ab")];
        let e = check_expected_diagnostics(src, &twice).unwrap_err();
        assert!(e.contains("unexpected error at 1:"), "{e}");
    }

    #[test]
    fn notes_need_note_directives() {
        let src = "x // expected-note {{see here}}\n";
        let note = Diagnostic {
            severity: Severity::Note,
            span: Some(Span { line: 1, col: 1 }),
            message: "see here".into(),
        };
        assert_eq!(
            check_expected_diagnostics(src, std::slice::from_ref(&note)),
            Ok(())
        );
        let e = check_expected_diagnostics(src, &[at(1, 1, "see here")]).unwrap_err();
        assert!(
            e.contains("expected note on line 1 was not produced"),
            "{e}"
        );
        assert!(e.contains("unexpected error at 1:1"), "{e}");
    }

    #[test]
    fn malformed_directives_are_errors() {
        for (src, want) in [
            (
                "a // expected-error@x {{m}}\n",
                "'@' must be followed by +N or -N",
            ),
            (
                "a // expected-error@+ {{m}}\n",
                "'@' must be followed by +N or -N",
            ),
            ("a // expected-error@+0 m\n", "expected {{text}}"),
            ("a // expected-error {{m\n", "missing closing }}"),
            (
                "a // expected-error@+5 {{m}}\n",
                "points at line 6, outside the file",
            ),
            (
                "a // expected-error@-1 {{m}}\n",
                "points at line 0, outside the file",
            ),
        ] {
            let e = check_expected_diagnostics(src, &[]).unwrap_err();
            assert!(e.starts_with("line 1: ") && e.contains(want), "{src}: {e}");
        }
    }

    #[test]
    fn no_directives_no_diagnostics_is_ok() {
        assert_eq!(check_expected_diagnostics("module {}\n", &[]), Ok(()));
        // Text outside a comment is not a directive.
        let e = check_expected_diagnostics("expected-error {{m}}\n", &[at(1, 1, "m")]);
        assert!(e.is_err());
        // A mention in prose is not a directive.
        let src = "// see expected-error in the docs\n";
        assert_eq!(check_expected_diagnostics(src, &[]), Ok(()));
    }

    #[test]
    fn renders_caret_under_column() {
        let src = "module {\n\tfunc @f() {\n    %0 = add %a, %b\n}\n";
        let diags = vec![
            at(3, 10, "'add' op: operand element types differ"),
            at(2, 2, "'func' @f: function has no outputs"),
            Diagnostic::error(None, "whole file"),
            at(40, 1, "past the end"),
        ];
        let out = render_with_source(&diags, "t.lbir", src);
        assert_eq!(
            out,
            "t.lbir:3:10: error: 'add' op: operand element types differ\n\
             \x20   %0 = add %a, %b\n\
             \x20        ^\n\
             t.lbir:2:2: error: 'func' @f: function has no outputs\n\
             \tfunc @f() {\n\
             \t^\n\
             t.lbir: error: whole file\n\
             t.lbir:40:1: error: past the end\n"
        );
    }
}
