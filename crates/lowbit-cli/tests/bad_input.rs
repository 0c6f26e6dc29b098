//! Robustness of the `lowbit` driver on bad input: mutated and truncated
//! `.lbir` files (from the lit tests and the bundled example) and malformed
//! `.npy`/`.pb` tensor files fed to `lowbit opt` and `lowbit run`. Every run
//! must exit 0 or 1 (never 101, the panic status, nor by a signal); a
//! failure prints an error whose first line names the file at fault, and
//! `-o OUT` / `--output-dir DIR` leave no file behind.

use lowbit::ir::testing::Rng;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LOWBIT: &str = env!("CARGO_BIN_EXE_lowbit");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bad_input-{name}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("scratch directory");
    d
}

/// Tokens spliced into `.lbir` text: wrong types, arities, numbers and
/// punctuation.
const SOUP: &[&str] = &[
    "i65",
    "u0",
    "f33",
    "fE9M9",
    "b2",
    "tensor<0xf32>",
    "tensor<4294967296x4294967296xf32>",
    "tensor<f32>",
    "tensor<1x1x1x1xi4>",
    "99999999999999999999",
    "-1",
    "0",
    "nan",
    "-inf",
    "%0",
    "%999",
    "%x",
    ",",
    ":",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "<",
    ">",
    "->",
    "=",
    "axis = 7",
    "perm = [1, 1]",
    "block_size = 0",
    "rounding = sideways",
    "add",
    "matmul",
    "return",
    "func",
    "@main",
    "dense<[]>",
    "dense<\"0x\">",
    "dense_resource<r9>",
    "#layout<msb>",
    "{-#",
    "#-}",
    "\"",
    "//",
    "\n",
];

/// One random corruption of `text`: truncation, a deleted span, a spliced
/// token, or a duplicated or dropped line.
fn mutate(text: &str, rng: &mut Rng) -> String {
    let at = |rng: &mut Rng, s: &str| {
        let mut i = rng.below(s.len() + 1);
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let mut s = text.to_string();
    match rng.below(5) {
        0 => s.truncate(at(rng, text)),
        1 => {
            let a = at(rng, text);
            let mut b = (a + 1 + rng.below(8)).min(s.len());
            while !s.is_char_boundary(b) {
                b += 1;
            }
            s.replace_range(a..b, "");
        }
        2 => {
            let a = at(rng, text);
            s.insert_str(a, SOUP[rng.below(SOUP.len())]);
        }
        3 | 4 => {
            let mut lines: Vec<&str> = text.lines().collect();
            let i = rng.below(lines.len());
            if rng.below(2) == 0 {
                lines.insert(i, lines[i]);
            } else {
                lines.remove(i);
            }
            s = lines.join("\n");
        }
        _ => unreachable!(),
    }
    s
}

/// Checks the contract on one finished run: exit 0 or 1; on 1, the first
/// line of standard error names one of `names`.
fn check(out: &Output, what: &str, names: &[&Path]) -> Result<bool, String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => {
            let first = stderr.lines().next().unwrap_or("");
            let named = names.iter().any(|p| first.contains(&*p.to_string_lossy()));
            if !named || stderr.contains("panicked") {
                return Err(format!("{what}: error does not name the file:\n{stderr}"));
            }
            Ok(false)
        }
        code => Err(format!("{what}: exit status {code:?}\n{stderr}")),
    }
}

/// The `.lbir` files the mutations start from.
fn seeds() -> Vec<(PathBuf, String)> {
    let mut files = vec![repo().join("examples/mlp.lbir")];
    for dir in ["lit-tests/parse", "lit-tests/run", "lit-tests/verify"] {
        let mut in_dir: Vec<PathBuf> = fs::read_dir(repo().join(dir))
            .expect("lit test directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "lbir"))
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    files
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).expect("readable seed file");
            (p, text)
        })
        .collect()
}

/// `lowbit opt` (with the default pipeline) on mutated modules: exit 0 or
/// 1, the error names the file, and `-o` leaves nothing on failure.
#[test]
fn opt_on_mutated_lbir() {
    let dir = scratch("opt");
    let model = dir.join("model.lbir");
    let out = dir.join("out.lbir");
    let mut failures = Vec::new();
    let (mut ok, mut err) = (0, 0);
    for (n, (path, text)) in seeds().iter().enumerate() {
        for k in 0..30u64 {
            let mut rng = Rng::new((n as u64) << 8 | k);
            let bad = mutate(text, &mut rng);
            fs::write(&model, &bad).expect("write model");
            let run = Command::new(LOWBIT)
                .arg("opt")
                .arg(&model)
                .args(["--passes=canonicalize,cse,dce", "--verify-each", "-o"])
                .arg(&out)
                .output()
                .expect("run lowbit");
            let what = format!("opt on {} mutation {k}", path.display());
            match check(&run, &what, &[&model]) {
                Ok(true) => {
                    ok += 1;
                    let _ = fs::remove_file(&out);
                }
                Ok(false) => {
                    err += 1;
                    if out.exists() {
                        failures.push(format!("{what}: failed but left {}", out.display()));
                    }
                }
                Err(e) => failures.push(format!("{e}\n--- input ---\n{bad}")),
            }
        }
    }
    let left: Vec<_> = fs::read_dir(&dir)
        .expect("scratch")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "model.lbir")
        .collect();
    assert!(left.is_empty(), "stray files: {left:?}");
    assert!(ok > 20 && err > 200, "{ok} succeeded, {err} failed");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `lowbit run` of the bundled example, mutated, on its real input.
#[test]
fn run_on_mutated_lbir() {
    let dir = scratch("run-model");
    let model = dir.join("model.lbir");
    let outs = dir.join("outs");
    let input = repo().join("examples/mlp_input.npy");
    let mlp = fs::read_to_string(repo().join("examples/mlp.lbir")).expect("example");
    let mut sources = vec![mlp];
    for f in ["constants_only.lbir", "layouts.lbir"] {
        sources.push(fs::read_to_string(repo().join("lit-tests/run").join(f)).expect("lit"));
    }
    let mut failures = Vec::new();
    let (mut ok, mut err) = (0, 0);
    for (n, text) in sources.iter().enumerate() {
        for k in 0..150u64 {
            let mut rng = Rng::new(0xABCD ^ (n as u64) << 16 | k);
            let bad = mutate(text, &mut rng);
            fs::write(&model, &bad).expect("write model");
            let _ = fs::remove_dir_all(&outs);
            let mut cmd = Command::new(LOWBIT);
            cmd.arg("run").arg(&model).arg("--output-dir").arg(&outs);
            if n == 0 {
                cmd.arg(format!("--input=x={}", input.display()));
            }
            let run = cmd.output().expect("run lowbit");
            let what = format!("run on mutation {k} of source {n}");
            match check(&run, &what, &[&model, &input]) {
                Ok(true) => ok += 1,
                Ok(false) => {
                    err += 1;
                    let written = fs::read_dir(&outs).map(|d| d.count()).unwrap_or(0);
                    if written != 0 {
                        failures.push(format!("{what}: failed but wrote {written} files"));
                    }
                }
                Err(e) => failures.push(format!("{e}\n--- input ---\n{bad}")),
            }
        }
    }
    assert!(ok > 50 && err > 150, "{ok} succeeded, {err} failed");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Corrupted tensor files: truncated at every few bytes, bytes flipped,
/// and hand-made bad headers.
fn bad_tensor_files(dir: &Path) -> Vec<PathBuf> {
    let input = fs::read(repo().join("examples/mlp_input.npy")).expect("example input");
    let data = repo().join("crates/lowbit-onnx/tests/data");
    let pb = fs::read(data.join("f32_raw.pb")).expect("test data");
    let mut files = Vec::new();
    let mut put = |name: String, bytes: &[u8]| {
        let p = dir.join(name);
        fs::write(&p, bytes).expect("write tensor file");
        files.push(p);
    };
    for cut in (0..input.len()).step_by(7) {
        put(format!("cut{cut}.npy"), &input[..cut]);
    }
    for cut in 0..pb.len() {
        put(format!("cut{cut}.pb"), &pb[..cut]);
    }
    let mut rng = Rng::new(7);
    for i in 0..60u32 {
        let (src, ext) = if i.is_multiple_of(2) {
            (&input, "npy")
        } else {
            (&pb, "pb")
        };
        let mut b = src.clone();
        let limit = if ext == "npy" { 128 } else { b.len() };
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(limit.min(b.len()));
            b[at] ^= 1 << rng.below(8);
        }
        put(format!("flip{i}.{ext}"), &b);
    }
    let npy = |header: &str, data: &[u8]| {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(data);
        v
    };
    let headers = [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 64), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (64, 1), }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 32), }",
        "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 64), }",
        "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 64), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 64), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 64, ), 'extra': 1}",
        "{'descr': '<U4', 'fortran_order': False, 'shape': (1, 64), }",
        "{'descr': '<f4', 'shape': (1, 64), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1 64), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 64)",
        "[]",
        "",
    ];
    for (i, h) in headers.iter().enumerate() {
        put(format!("header{i}.npy"), &npy(h, &[0u8; 250]));
    }
    put("wrong.txt".into(), b"1 2 3");
    files
}

/// `lowbit run` of the example with a malformed or mismatched input: an
/// error naming the tensor file, nothing written.
#[test]
fn run_with_bad_tensor_files() {
    let dir = scratch("run-inputs");
    let outs = dir.join("outs");
    let model = repo().join("examples/mlp.lbir");
    let mut failures = Vec::new();
    let files = bad_tensor_files(&dir);
    let mut ok = 0;
    for f in &files {
        let _ = fs::remove_dir_all(&outs);
        let run = Command::new(LOWBIT)
            .arg("run")
            .arg(&model)
            .arg(format!("--input=x={}", f.display()))
            .arg("--output-dir")
            .arg(&outs)
            .output()
            .expect("run lowbit");
        let what = format!("run with {}", f.display());
        match check(&run, &what, &[f]) {
            Ok(true) => ok += 1,
            Ok(false) => {
                if outs.exists() {
                    failures.push(format!("{what}: failed but created {}", outs.display()));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(files.len() > 150, "only {} files", files.len());
    // Only flips in the data bytes (not the header) may still give a valid input.
    assert!(
        ok < files.len() / 4,
        "{ok} of {} bad files accepted",
        files.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
