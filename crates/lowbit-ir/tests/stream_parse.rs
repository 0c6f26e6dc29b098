//! The streaming parser (`parse_module_reader`) against the in-memory one
//! (`parse_module`): the same module (spans and notes included) or the
//! same first error, on the lit corpus, on random modules, on corrupted
//! and truncated text and on token soup, read in chunks of every size from
//! one byte up; and diagnostics rendered from a file read again line by
//! line equal those rendered from the whole text.

use lowbit_ir::diag::render_with_source;
use lowbit_ir::parser::{parse_module, parse_module_file, parse_module_reader};
use lowbit_ir::printer::print_module;
use lowbit_ir::testing::random_module;
use lowbit_ir::{Diagnostic, Module};
use proptest::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A reader that hands out at most `chunk` bytes per call, so that every
/// state of the scanner meets a buffer boundary.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn read_in_chunks(text: &str, chunk: usize) -> Result<Module, Vec<Diagnostic>> {
    let r = Chunked {
        data: text.as_bytes(),
        chunk,
    };
    match parse_module_reader(r) {
        Ok(read) => read.module,
        Err(e) => panic!("reading from memory failed: {e}"),
    }
}

/// Whether two parses agree in everything the parser fills in.
fn same(a: &Result<Module, Vec<Diagnostic>>, b: &Result<Module, Vec<Diagnostic>>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            a == b
                && print_module(a) == print_module(b)
                && a.functions.iter().zip(&b.functions).all(|(f, g)| {
                    f.op_spans == g.op_spans
                        && f.span == g.span
                        && f.return_span == g.return_span
                        && f.op_notes == g.op_notes
                })
        }
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

fn outcome(r: &Result<Module, Vec<Diagnostic>>) -> String {
    match r {
        Ok(m) => format!("module:\n{}", print_module(m)),
        Err(d) => format!("error: {}", d[0]),
    }
}

/// Checks the reader against `parse_module` for the given chunk sizes.
fn check(text: &str, chunks: &[usize]) -> Result<(), String> {
    let want = parse_module(text);
    for &chunk in chunks {
        let got = read_in_chunks(text, chunk);
        if !same(&want, &got) {
            return Err(format!(
                "chunk {chunk}: string parse gave {}\nreader gave {}\nfor:\n{text}",
                outcome(&want),
                outcome(&got)
            ));
        }
    }
    Ok(())
}

fn lit_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            lit_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "lbir") {
            out.push(p);
        }
    }
}

#[test]
fn lit_corpus_reads_the_same_from_a_stream() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lit-tests");
    let mut files = Vec::new();
    lit_files(&root, &mut files);
    files.sort();
    // The corpus holds valid and invalid files, hex constants and
    // resources; if it moves, this test must not pass on nothing.
    assert!(files.len() >= 50, "found only {} .lbir files", files.len());
    let mut hex_files = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        hex_files += text.contains("\"0x") as usize;
        if let Err(e) = check(&text, &[1, 7, 1 << 16]) {
            panic!("{}: {e}", path.display());
        }
        // The file path reads the same, and renders its errors the same.
        let (got, source) = parse_module_file(path).unwrap();
        let want = parse_module(&text);
        assert!(same(&want, &got), "{}", path.display());
        if let Err(d) = &want {
            assert_eq!(
                source.render(d, "f.lbir"),
                render_with_source(d, "f.lbir", &text),
                "{}",
                path.display()
            );
        }
        // Printing what was read gives text that reads back to the same.
        if let Ok(m) = got {
            let printed = print_module(&m);
            let again = read_in_chunks(&printed, 1 << 16).unwrap();
            assert_eq!(print_module(&again), printed, "{}", path.display());
        }
    }
    assert!(hex_files >= 3, "only {hex_files} files with hex strings");
}

/// Hex in every position the format allows a string: a dense payload, a
/// resource, a note value and a quoted output name, plus strings that look
/// like hex but are not (a comment, a quoted value name, odd and mixed-case
/// digits in a note).
const SAMPLE: &str = "module {\n  func @main(%x: tensor<2xf16>) -> (\"0xABCD\": tensor<2xf16>, y: tensor<2xf16>) {\n    \
    %0 = constant dense<\"0x003C00BC\"> : tensor<2xf16> // \"0x12\"\n    \
    %\"0x12\" = constant dense_resource<r0> : tensor<2xf16>\n    \
    %2 = add %0, %\"0x12\" {overflow = wrap} : (tensor<2xf16>, tensor<2xf16>) -> tensor<2xf16> note {node = \"0x1\", op_type = \"0xaB\", what = \"0x0102\", why = \"0X0a\"}\n    \
    return %2, %x\n  }\n}\n{-#\n  resources: {\n    r0: \"0x0000003C\"\n  }\n#-}\n";

#[test]
fn every_truncation_and_corruption_of_a_sample_reads_the_same() {
    check(SAMPLE, &[1, 2, 3, 5, 1 << 16]).unwrap();
    assert!(
        parse_module(SAMPLE).is_ok(),
        "{}",
        outcome(&parse_module(SAMPLE))
    );
    for (i, _) in SAMPLE.char_indices() {
        // Truncated files, including inside every hex string.
        check(&SAMPLE[..i], &[1, 1 << 16]).unwrap();
        for with in ["g", "\"", "\n", "\0", "\\", "a", "A", "é", ""] {
            let mut bad = SAMPLE.to_string();
            let end = i + SAMPLE[i..].chars().next().map_or(0, char::len_utf8);
            bad.replace_range(i..end, with);
            check(&bad, &[1, 1 << 16]).unwrap();
        }
    }
}

#[test]
fn errors_keep_their_position_and_snippet() {
    let cases = [
        // A malformed hex constant: the error points at its string.
        (
            "func @f() -> tensor<2xi8> {\n  %0 = constant dense<\"0x01G2\"> : tensor<2xi8>\n  return %0\n}\n",
            "2:23: error: invalid hex digit 'G' in payload",
        ),
        // Truncated in the middle of the hex digits.
        (
            "func @f() -> tensor<2xi8> {\n  %0 = constant dense<\"0x01",
            "2:23: error: unterminated string",
        ),
        // After a decoded hex string on the same line: columns count its text.
        (
            "func @f() -> tensor<2xi8> {\n  %0 = constant dense<\"0x0102\"> : tensor<3xi8>\n  return %0\n}\n",
            "2:23: error: hex payload has 2 bytes but tensor<3xi8> needs 3",
        ),
        (
            "func @f() -> tensor<2xi8> {\n  %0 = constant dense<\"0x0102\"> ; tensor<2xi8>\n}\n",
            "2:33: error: unexpected character ';'",
        ),
        (
            "func @f() -> tensor<2xi8> {\n  %0 = constant dense<\"0x0102\"> : tensor<2xi8> \"0xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n}\n",
            "2:48: error: expected an op or 'return', found string \"0xAAAAAAAAAAAAAAAAAAAAAA...\"",
        ),
    ];
    let dir = std::env::temp_dir().join(format!("lowbit-stream-parse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (text, first)) in cases.iter().enumerate() {
        let want = parse_module(text);
        let Err(d) = &want else {
            panic!("case {i} parsed");
        };
        let path = dir.join(format!("case{i}.lbir"));
        std::fs::write(&path, text).unwrap();
        let (got, source) = parse_module_file(&path).unwrap();
        assert!(same(&want, &got), "case {i}: {}", outcome(&got));
        let shown = source.render(d, "f.lbir");
        assert_eq!(shown, render_with_source(d, "f.lbir", text), "case {i}");
        let head = shown.lines().next().unwrap_or("");
        assert_eq!(head, format!("f.lbir:{first}"), "case {i}");
        let line = d[0].span.map_or(0, |s| s.line as usize);
        let snippet = shown.lines().nth(1).unwrap_or("");
        assert_eq!(
            snippet,
            text.lines().nth(line - 1).unwrap_or(""),
            "case {i}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A long hex constant (decoded in blocks of pairs) with one digit changed
/// at places around the block and buffer boundaries: a bad digit, the other
/// case, a quote, a line end; each reads as the in-memory parser reads it.
#[test]
fn long_hex_constants_with_a_bad_digit_anywhere_read_the_same() {
    let n = 5000;
    let digits: String = (0..n)
        .map(|i| format!("{:02X}", (i * 37 % 256) as u8))
        .collect();
    let text = format!(
        "func @f() -> (a: tensor<{n}xi8>, b: tensor<{n}xi8>) {{\n  %0 = constant dense<\"0x{digits}\"> : tensor<{n}xi8>\n  %1 = constant dense<\"0x{lower}\"> : tensor<{n}xi8>\n  return %0, %1\n}}\n",
        lower = digits.to_lowercase()
    );
    check(&text, &[1, 7, 4096, 1 << 16]).unwrap();
    let open = "dense<\"0x";
    let first = text.find(open).unwrap() + open.len();
    let second = text.rfind(open).unwrap() + open.len();
    for base in [first, second] {
        for off in [0, 1, 2, 3, 2046, 2047, 2048, 2049, 4095, 4096, 9998, 9999] {
            for with in ["g", "a", "A", "\"", "\n", ""] {
                let mut bad = text.clone();
                bad.replace_range(base + off..base + off + 1, with);
                check(&bad, &[7, 1 << 16]).unwrap();
            }
        }
    }
}

/// A pipe cannot be read twice: its text is kept for the snippet, and
/// opening it again (which would wait for a writer) is never tried.
#[test]
fn a_pipe_is_read_whole_and_its_errors_still_show_the_line() {
    let dir = std::env::temp_dir().join(format!("lowbit-stream-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("model.lbir");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    let text = "func @f() -> tensor<2xi8> {\n  %0 = constant dense<\"0x01G2\"> : tensor<2xi8>\n}\n";
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, text).unwrap())
    };
    let (got, source) = parse_module_file(&fifo).unwrap();
    writer.join().unwrap();
    assert!(matches!(source, lowbit_ir::source::Source::Text(_)));
    let Err(d) = &got else {
        panic!("parsed");
    };
    assert_eq!(source.render(d, "p"), render_with_source(d, "p", text),);
    assert!(source.render(d, "p").contains("dense<\"0x01G2\">"));
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    /// Random well-typed modules print to text that reads the same from a
    /// stream (the printer writes hex payloads and resources for them).
    #[test]
    fn random_modules_read_the_same(seed in any::<u64>(), size in 0usize..30, chunk in 1usize..64) {
        let text = print_module(&random_module(seed, size));
        if let Err(e) = check(&text, &[chunk]) {
            prop_assert!(false, "seed {seed}: {e}");
        }
    }

    /// Corrupted printed text gives the same module or the same error.
    #[test]
    fn corrupted_text_reads_the_same(
        seed in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        len in 0usize..8,
        with in "[ -~\n]{0,3}",
    ) {
        let text = print_module(&random_module(seed, 8));
        let at = cut.index(text.len() + 1);
        let end = (at + len).min(text.len());
        let mut bad = text.clone();
        bad.replace_range(at..end, &with);
        if let Err(e) = check(&bad, &[3]) {
            prop_assert!(false, "{e}");
        }
    }
}
