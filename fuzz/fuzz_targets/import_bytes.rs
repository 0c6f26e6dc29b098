//! Fuzzes the ONNX importer: any byte string must import or fail with an
//! error, never panic, and an imported module must verify and print text
//! that parses back to the same module.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = lowbit_onnx::import_bytes(data, None) {
        assert!(lowbit_ir::verifier::verify_module(&m).is_ok());
        let text = lowbit_ir::printer::print_module(&m);
        let back = lowbit_ir::parser::parse_module(&text).expect("printed IR parses");
        assert!(back == m, "print/parse round trip changed the module");
    }
});
