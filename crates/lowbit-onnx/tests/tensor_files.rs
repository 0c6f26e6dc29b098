//! Reads the Python-written fixtures of `tests/data` (made by
//! `scripts/make_tensor_fixtures.py` with onnx and numpy) and checks every
//! decoded tensor against `expected.json`; checks round trips through
//! `write_pb`/`write_npy`, byte-for-byte agreement with what onnx and numpy
//! write, the errors of malformed files, and atomic writes.

use lowbit_ir::tensor::Tensor;
use lowbit_numerics::ElemType;
use lowbit_onnx::tensor_io::{read_tensor, write_npy, write_pb, write_tensor};
use proptest::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(data_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn entries<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key].as_array().unwrap()
}

fn value_matches(want: &Value, got: f64) -> bool {
    match want {
        Value::String(s) if s == "nan" => got.is_nan(),
        Value::String(s) if s == "inf" => got == f64::INFINITY,
        Value::String(s) if s == "-inf" => got == f64::NEG_INFINITY,
        Value::Number(n) => {
            let w = n.as_f64().unwrap();
            w == got && w.is_sign_negative() == got.is_sign_negative()
        }
        _ => false,
    }
}

#[test]
fn python_written_files_decode_as_expected() {
    let exp = expected();
    let files = entries(&exp, "files");
    assert!(files.len() >= 60, "fixture list looks truncated");
    for e in files {
        let file = e["file"].as_str().unwrap();
        let (name, t) = read_tensor(&data_dir().join(file)).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(t.elem.to_string(), e["elem"].as_str().unwrap(), "{file}");
        let shape: Vec<u64> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.shape, shape, "{file}");
        assert_eq!(name.as_deref(), e["name"].as_str(), "{file}");
        let codes: Vec<u64> = e["codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        assert_eq!(t.codes, codes, "{file}");
        let values = e["values"].as_array().unwrap();
        for (i, (w, g)) in values.iter().zip(t.to_f64()).enumerate() {
            assert!(
                value_matches(w, g),
                "{file}[{i}]: expected {w}, decoded {g}"
            );
        }
    }
}

#[test]
fn malformed_files_give_one_line_errors_naming_the_file() {
    let exp = expected();
    let errors = entries(&exp, "errors");
    assert!(!errors.is_empty());
    for e in errors {
        let file = e["file"].as_str().unwrap();
        let path = data_dir().join(file);
        let err = match read_tensor(&path) {
            Ok(_) => panic!("{file}: read succeeded, expected an error"),
            Err(err) => err,
        };
        let msg = err.to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains(e["contains"].as_str().unwrap()),
            "{file}: {msg}"
        );
        assert!(!msg.contains('\n'), "{file}: multi-line error: {msg}");
        assert_eq!(err.path(), path);
    }
}

#[test]
fn missing_file_is_an_error() {
    let path = data_dir().join("no_such_tensor.pb");
    let msg = read_tensor(&path).unwrap_err().to_string();
    assert!(msg.contains("no_such_tensor.pb: cannot read"), "{msg}");
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowbit-onnx-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every fixture survives write_pb -> read_tensor unchanged, and so do those
/// NumPy can hold through write_npy; the files Rust writes are byte-identical
/// to onnx's `numpy_helper.from_array` and to `numpy.save` (little endian).
#[test]
fn fixtures_round_trip_and_match_python_bytes() {
    let dir = scratch("roundtrip");
    let exp = expected();
    let mut npy_checked = 0;
    for e in entries(&exp, "files") {
        let file = e["file"].as_str().unwrap();
        let src = data_dir().join(file);
        let (name, t) = read_tensor(&src).unwrap();
        let name = name.unwrap_or_default();

        let pb = dir.join("t.pb");
        write_pb(&pb, &name, &t).unwrap();
        let (back_name, back) = read_tensor(&pb).unwrap();
        assert_eq!(back, t, "{file}");
        assert_eq!(back_name.unwrap_or_default(), name, "{file}");
        if file.ends_with("_raw.pb") || file == "empty_f32.pb" {
            let ours = std::fs::read(&pb).unwrap();
            assert_eq!(
                ours,
                std::fs::read(&src).unwrap(),
                "{file}: bytes differ from onnx's"
            );
        }

        let npy = dir.join("t.npy");
        match write_npy(&npy, &t) {
            Ok(()) => {
                assert_eq!(read_tensor(&npy).unwrap(), (None, t.clone()), "{file}");
                let src_bytes = std::fs::read(&src).unwrap();
                let big_endian = src_bytes.windows(2).any(|w| w == b"'>");
                if file.ends_with(".npy") && !big_endian {
                    assert_eq!(
                        std::fs::read(&npy).unwrap(),
                        src_bytes,
                        "{file}: bytes differ from numpy's"
                    );
                    npy_checked += 1;
                }
            }
            Err(err) => {
                let msg = err.to_string();
                assert!(msg.contains("has no NumPy dtype"), "{file}: {msg}");
                assert!(msg.contains(&t.elem.to_string()), "{file}: {msg}");
            }
        }
    }
    assert!(npy_checked >= 8);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_writes_leave_no_file_behind() {
    let dir = scratch("atomic");
    let target = dir.join("out.pb");
    std::fs::write(&target, b"old contents").unwrap();
    let i3 = Tensor::new("i3".parse().unwrap(), vec![2], vec![1, 2]).unwrap();
    let msg = write_pb(&target, "x", &i3).unwrap_err().to_string();
    assert!(
        msg.contains("out.pb") && msg.contains("element type i3"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"old contents");

    let missing = dir.join("no/such/dir/out.npy");
    let f32 = Tensor::new(ElemType::F32, vec![1], vec![0]).unwrap();
    let msg = write_npy(&missing, &f32).unwrap_err().to_string();
    assert!(msg.contains("out.npy: cannot write"), "{msg}");

    // The target is replaced as a whole and no temporary is left over.
    write_tensor(&target, "x", &f32).unwrap();
    assert_eq!(
        read_tensor(&target).unwrap(),
        (Some("x".into()), f32.clone())
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["out.pb".to_string()]);

    let msg = write_tensor(&dir.join("out.bin"), "x", &f32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("out.bin: unknown tensor file type"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The element types with an ONNX data type; every one round-trips.
const ONNX_ELEMS: [&str; 25] = [
    "f32",
    "u8",
    "i8",
    "u16",
    "i16",
    "i32",
    "i64",
    "u1",
    "f16",
    "f64",
    "u32",
    "u64",
    "bf16",
    "f8E4M3FN",
    "f8E4M3FNUZ",
    "f8E5M2",
    "f8E5M2FNUZ",
    "u4",
    "i4",
    "f4E2M1FN",
    "f8E8M0FNU",
    "u2",
    "i2",
    "f6E2M3FN",
    "f6E3M2FN",
];

fn arb_tensor() -> impl Strategy<Value = Tensor> {
    (0..ONNX_ELEMS.len(), prop::collection::vec(0u64..4, 0..4)).prop_flat_map(|(i, shape)| {
        let elem: ElemType = ONNX_ELEMS[i].parse().unwrap();
        let n: u64 = shape.iter().product();
        prop::collection::vec(any::<u64>(), n as usize)
            .prop_map(move |codes| Tensor::new(elem, shape.clone(), codes).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_tensors_round_trip(t in arb_tensor()) {
        let dir = scratch("prop");
        let pb = dir.join("p.pb");
        write_pb(&pb, "p", &t).unwrap();
        prop_assert_eq!(read_tensor(&pb).unwrap(), (Some("p".to_string()), t.clone()));
        let npy = dir.join("p.npy");
        if write_npy(&npy, &t).is_ok() {
            prop_assert_eq!(read_tensor(&npy).unwrap(), (None, t));
        }
    }
}

/// Reads back, with onnx's own `numpy_helper.to_array`, a file that
/// `write_pb` wrote for every ONNX element type, covering the whole code space
/// of the types of up to 8 bits. Needs the workspace venv (`scripts/setup.sh`);
/// without it the test says so and checks nothing else.
#[test]
fn onnx_python_reads_what_rust_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let probe = std::process::Command::new(&python)
        .args(["-c", "import onnx, ml_dtypes"])
        .output();
    if !matches!(probe, Ok(ref o) if o.status.success()) {
        eprintln!(
            "skipped: {} with onnx and ml_dtypes not found",
            python.display()
        );
        return;
    }
    let dir = scratch("python");
    let mut args = Vec::new();
    let mut want = Vec::new();
    for ty in ONNX_ELEMS {
        let elem: ElemType = ty.parse().unwrap();
        let count = 1u64 << elem.bits().min(8);
        let codes: Vec<u64> = (0..count)
            .map(|c| c.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - elem.bits()) | c)
            .collect();
        let t = Tensor::new(elem, vec![count], codes).unwrap();
        let path = dir.join(format!("{ty}.pb"));
        write_pb(&path, ty, &t).unwrap();
        args.push(format!("{}={}", path.display(), elem.bits()));
        want.push(t.codes);
    }
    let script = r#"
import sys, numpy as np, onnx
from onnx import numpy_helper
for arg in sys.argv[1:]:
    path, bits = arg.rsplit("=", 1)
    t = onnx.load_tensor(path)
    a = np.ascontiguousarray(numpy_helper.to_array(t)).reshape(-1)
    size = a.dtype.itemsize
    u = a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[size]).astype(np.uint64)
    mask = (1 << int(bits)) - 1
    print(t.name, " ".join(str(int(x) & mask) for x in u))
"#;
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), ONNX_ELEMS.len());
    for ((line, ty), codes) in lines.iter().zip(ONNX_ELEMS).zip(&want) {
        let mut parts = line.split(' ');
        assert_eq!(parts.next(), Some(ty));
        let got: Vec<u64> = parts.map(|c| c.parse().unwrap()).collect();
        assert_eq!(&got, codes, "{ty}: onnx decoded different codes");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every prefix and many one-byte corruptions of every fixture read without a
/// panic; a prefix of a valid file is never accepted with a different shape.
#[test]
fn truncated_and_corrupted_files_never_panic() {
    let dir = scratch("corrupt");
    let mut entries: Vec<_> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pb" || e == "npy"))
        .collect();
    entries.sort();
    for src in entries {
        let bytes = std::fs::read(&src).unwrap();
        let full = read_tensor(&src).ok();
        let ext = src.extension().unwrap().to_str().unwrap();
        let path = dir.join(format!("c.{ext}"));
        for len in 0..bytes.len() {
            std::fs::write(&path, &bytes[..len]).unwrap();
            if let (Ok((_, t)), Some((_, f))) = (read_tensor(&path), &full) {
                // A protobuf prefix can end between fields; it must then
                // not claim the full tensor's shape with other data.
                assert!(
                    t.shape != f.shape || t == *f,
                    "{}: prefix {len}",
                    src.display()
                );
            }
        }
        for i in (0..bytes.len()).step_by(3) {
            let mut b = bytes.clone();
            b[i] ^= 0xa5;
            std::fs::write(&path, &b).unwrap();
            let _ = read_tensor(&path);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
