//! Helper for `gen_onnx_proto.sh`: compiles an ONNX `.proto` file with the
//! pure-Rust `protox` compiler and turns it into Rust with `prost-build`, so no
//! system `protoc` is needed. Usage: `gen_onnx_proto <onnx.proto> <out.rs> <onnx version>`.

use std::path::Path;
use std::process::ExitCode;

fn run(proto: &Path, out: &Path, version: &str) -> Result<(), String> {
    let dir = proto
        .parent()
        .ok_or_else(|| format!("{}: no parent directory", proto.display()))?;
    let file = proto
        .file_name()
        .ok_or_else(|| format!("{}: not a file", proto.display()))?;
    let fds = protox::compile([file], [dir]).map_err(|e| format!("{}: {e}", proto.display()))?;
    let tmp = std::env::temp_dir().join(format!("gen_onnx_proto_{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    prost_build::Config::new()
        // Tensor payloads as `bytes::Bytes`: decoding from a `Bytes` buffer
        // then slices the model file instead of copying every weight.
        .bytes([".onnx.TensorProto.raw_data"])
        .out_dir(&tmp)
        .compile_fds(fds)
        .map_err(|e| format!("prost-build: {e}"))?;
    // The proto declares `package onnx`, so prost-build names its output onnx.rs.
    let generated = tmp.join("onnx.rs");
    let body = std::fs::read_to_string(&generated)
        .map_err(|e| format!("{}: {e}", generated.display()))?;
    let header = format!(
        "// @generated from onnx/{} of the `onnx` {} Python package by\n\
         // scripts/gen_onnx_proto.sh (protox + prost-build). Do not edit by hand:\n\
         // regenerate with `scripts/gen_onnx_proto.sh` from the workspace root.\n\n",
        file.to_string_lossy(),
        version
    );
    std::fs::write(out, header + &body).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: gen_onnx_proto <onnx.proto> <out.rs> <onnx version>");
        return ExitCode::from(2);
    }
    match run(Path::new(&args[1]), Path::new(&args[2]), &args[3]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_onnx_proto: {e}");
            ExitCode::FAILURE
        }
    }
}
