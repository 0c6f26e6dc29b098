//! Stand-ins for `lowbit_ir::diag::{render_with_source,
//! check_expected_diagnostics}` until those land in this branch; same
//! signatures, reduced output (no source carets). Removed on merge.

use lowbit::ir::Diagnostic;

/// Each diagnostic as `file:line:col: error: msg`, one per line.
pub fn render_with_source(diags: &[Diagnostic], file: &str, _src: &str) -> String {
    diags.iter().map(|d| d.render(file) + "\n").collect()
}

/// MLIR-style `// expected-error[@+N|@-N] {{text}}` matching.
pub fn check_expected_diagnostics(src: &str, diags: &[Diagnostic]) -> Result<(), String> {
    let mut expected: Vec<(usize, String)> = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let Some(at) = line.find("expected-error") else {
            continue;
        };
        let rest = &line[at + "expected-error".len()..];
        let (offset, rest) = match rest.strip_prefix('@') {
            Some(r) => {
                let end = r
                    .find(|c: char| c.is_whitespace() || c == '{')
                    .unwrap_or(r.len());
                let n: i64 = r[..end]
                    .parse()
                    .map_err(|_| format!("line {}: bad offset '@{}'", i + 1, &r[..end]))?;
                (n, &r[end..])
            }
            None => (0, rest),
        };
        let text = rest
            .split_once("{{")
            .and_then(|(_, t)| t.split_once("}}"))
            .map(|(t, _)| t.to_string())
            .ok_or_else(|| format!("line {}: expected-error needs {{{{text}}}}", i + 1))?;
        let target = i as i64 + 1 + offset;
        expected.push((usize::try_from(target).unwrap_or(0), text));
    }
    let mut used = vec![false; diags.len()];
    let mut problems = Vec::new();
    for (line, text) in &expected {
        let hit = diags.iter().enumerate().position(|(k, d)| {
            !used[k]
                && d.span.is_some_and(|s| s.line as usize == *line)
                && d.message.contains(text.as_str())
        });
        match hit {
            Some(k) => used[k] = true,
            None => problems.push(format!(
                "line {line}: expected error was not produced: {{{{{text}}}}}"
            )),
        }
    }
    for (d, u) in diags.iter().zip(&used) {
        if !u {
            problems.push(format!("unexpected {}", d.render("")));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
