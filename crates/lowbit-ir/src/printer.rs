//! The `.lbir` text printer.
//!
//! ```text
//! module {
//!   func @main(%x: tensor<4x8xf32>) -> (y: tensor<4x2xf32>) {
//!     %0 = constant dense<[1, -2, 3, 0]> : tensor<4xi4>
//!     %1 = constant dense<"0x3C00BC00"> : tensor<2xf16>
//!     %2 = constant dense_resource<r0> : tensor<8x2xi4>
//!     %3 = dequantize %2, %1 {axis = 1} : (tensor<8x2xi4>, tensor<2xf16>) -> tensor<8x2xf32>
//!     %4 = matmul %x, %3 : (tensor<4x8xf32>, tensor<8x2xf32>) -> tensor<4x2xf32>
//!     return %4
//!   }
//! }
//! {-#
//!   resources: {
//!     r0: "0x..."
//!   }
//! #-}
//! ```
//!
//! Parameters keep their names; op results are numbered densely in op order.
//! Constants print as a list of values when small (and every value prints
//! exactly), as a hex blob of their physical bytes up to
//! [`INLINE_HEX_LIMIT`] bytes, and as a named entry of the trailing
//! resource section beyond that.

use crate::function::{Function, Module, Op, Value};
use crate::ops::{ConstData, OpKind};
use crate::tensor::Tensor;
use crate::types::TensorType;
use lowbit_numerics::ElemType;
use std::collections::HashMap;
use std::fmt::Write;

/// Constants with at most this many elements print as a value list.
pub const LIST_LIMIT: usize = 16;
/// Constants with at most this many bytes print as an inline hex blob.
pub const INLINE_HEX_LIMIT: usize = 256;

/// Printing choices.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrintOptions {
    /// Print each resource payload as `__elided__` with its size instead of
    /// its bytes: for reading IR dumps of real models. Such text does not
    /// parse back (the parser says so).
    pub elide_resources: bool,
}

/// Prints a module in the text format.
pub fn print_module(m: &Module) -> String {
    print_module_with(m, PrintOptions::default())
}

/// Prints a module with the given options.
pub fn print_module_with(m: &Module, opts: PrintOptions) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_module_with(m, opts, &mut out);
    // Everything written is ASCII apart from names, which are UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Writes a module in the text format to `w`, streaming the resource
/// section: large constants are written as hex chunk by chunk straight
/// from the module's bytes, so printing a model holds no text copy of its
/// weights (only the ops' text is built in memory first).
pub fn write_module_with(
    m: &Module,
    opts: PrintOptions,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut p = Printer::default();
    p.out.push_str("module {\n");
    for f in &m.functions {
        p.function(f);
    }
    p.out.push_str("}\n");
    w.write_all(p.out.as_bytes())?;
    if !p.resources.is_empty() {
        w.write_all(b"{-#\n  resources: {\n")?;
        let n = p.resources.len();
        for (i, (name, bytes)) in p.resources.iter().enumerate() {
            let sep = if i + 1 < n { "," } else { "" };
            if opts.elide_resources {
                writeln!(
                    w,
                    "    {name}: __elided__{sep} // {} bytes",
                    bytes.bytes().len()
                )?;
            } else {
                write!(w, "    {name}: \"0x")?;
                write_hex(w, bytes.bytes())?;
                writeln!(w, "\"{sep}")?;
            }
        }
        w.write_all(b"  }\n#-}\n")?;
    }
    Ok(())
}

/// Writes `bytes` as upper-case hex (what [`hex`] returns) in chunks.
fn write_hex(w: &mut dyn std::io::Write, bytes: &[u8]) -> std::io::Result<()> {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 8192];
    for chunk in bytes.chunks(buf.len() / 2) {
        for (i, &b) in chunk.iter().enumerate() {
            buf[2 * i] = DIGITS[(b >> 4) as usize];
            buf[2 * i + 1] = DIGITS[(b & 15) as usize];
        }
        w.write_all(&buf[..2 * chunk.len()])?;
    }
    Ok(())
}

/// Prints one function (without the module wrapper or resources; large
/// constants are then inlined as hex).
pub fn print_function(f: &Function) -> String {
    let mut p = Printer {
        inline_everything: true,
        ..Printer::default()
    };
    p.function(f);
    p.out
}

#[derive(Default)]
struct Printer {
    out: String,
    /// Large constants, shared with the module (not copied).
    resources: Vec<(String, ConstData)>,
    inline_everything: bool,
}

/// A parameter or output name as the text format writes it: plain names
/// (`[A-Za-z_][A-Za-z0-9_.$-]*`, without `->`) as they are, anything else
/// (ONNX names such as `onnx::MatMul_1` or `/layer.0/Add_output_0`) in
/// double quotes, with `\\`, `\"` and `\XX` (hex) for control characters.
pub fn quote_name(name: &str) -> std::borrow::Cow<'_, str> {
    let b = name.as_bytes();
    let plain = b
        .first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.$-".contains(c))
        && !name.contains("->")
        && !matches!(name, "tensor" | "return");
    if plain {
        return name.into();
    }
    quote_string(name).into()
}

/// A string in double quotes with [`quote_name`]'s escapes.
pub fn quote_string(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(s, "\\{:02X}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Uppercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

impl Printer {
    fn function(&mut self, f: &Function) {
        let mut names: HashMap<Value, String> = HashMap::new();
        let params: Vec<String> = f
            .params
            .iter()
            .map(|(n, v)| {
                names.insert(*v, format!("%{}", quote_name(n)));
                format!("%{}: {}", quote_name(n), f.ty(*v))
            })
            .collect();
        let outs: Vec<String> = f
            .outputs
            .iter()
            .map(|(n, v)| format!("{}: {}", quote_name(n), f.ty(*v)))
            .collect();
        let _ = writeln!(
            self.out,
            "  func @{}({}) -> ({}) {{",
            f.name,
            params.join(", "),
            outs.join(", ")
        );
        // Results are numbered `%0, %1, ...`; a parameter may be named like
        // a number (ONNX allows `"62"`, printed `%"62"`, which the parser
        // reads as the same name as `%62`), so numbers taken by parameter
        // names are skipped.
        let taken: std::collections::HashSet<&str> =
            f.params.iter().map(|(n, _)| n.as_str()).collect();
        let mut next = 0usize;
        for &op in f.ops() {
            let d = f.op(op);
            let results: Vec<String> = d
                .results
                .iter()
                .map(|r| {
                    while taken.contains(next.to_string().as_str()) {
                        next += 1;
                    }
                    let n = format!("%{next}");
                    next += 1;
                    names.insert(*r, n.clone());
                    n
                })
                .collect();
            let name_of = |v: &Value| {
                names
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| format!("%<bad {v:?}>"))
            };
            self.out.push_str("    ");
            if !results.is_empty() {
                let _ = write!(self.out, "{} = ", results.join(", "));
            }
            self.out.push_str(d.kind.name());
            if let OpKind::Constant(c) = &d.kind {
                let ty = f.ty(d.results[0]);
                let payload = self.constant_payload(ty, c);
                let _ = write!(self.out, " {payload} : {ty}");
                self.note(f, op);
                continue;
            }
            let operands: Vec<String> = d.operands.iter().map(name_of).collect();
            if !operands.is_empty() {
                let _ = write!(self.out, " {}", operands.join(", "));
            }
            let attrs = d.kind.attrs();
            if !attrs.is_empty() {
                let a: Vec<String> = attrs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                let _ = write!(self.out, " {{{}}}", a.join(", "));
            }
            let in_tys: Vec<String> = d.operands.iter().map(|v| f.ty(*v).to_string()).collect();
            let out_tys: Vec<String> = d.results.iter().map(|v| f.ty(*v).to_string()).collect();
            let outs = if out_tys.len() == 1 {
                out_tys[0].clone()
            } else {
                format!("({})", out_tys.join(", "))
            };
            let _ = write!(self.out, " : ({}) -> {outs}", in_tys.join(", "));
            self.note(f, op);
        }
        let rets: Vec<String> = f
            .outputs
            .iter()
            .map(|(_, v)| {
                names
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| format!("%<bad {v:?}>"))
            })
            .collect();
        let _ = writeln!(self.out, "    return {}", rets.join(", "));
        self.out.push_str("  }\n");
    }

    /// The op's importer note, if any, then the end of the line.
    fn note(&mut self, f: &Function, op: Op) {
        if let Some(n) = f.op_notes.get(&op) {
            let _ = write!(
                self.out,
                " note {{node = {}, op_type = {}, what = {}, why = {}}}",
                quote_string(&n.node),
                quote_string(&n.op_type),
                quote_string(&n.what),
                quote_string(&n.why)
            );
        }
        self.out.push('\n');
    }

    fn constant_payload(&mut self, ty: &TensorType, data: &ConstData) -> String {
        let bytes = data.bytes();
        if ty.num_elements() as usize <= LIST_LIMIT {
            if let Ok(t) = Tensor::from_bytes(ty, bytes) {
                if let Some(list) = value_list(&t) {
                    return format!("dense<{list}>");
                }
            }
        }
        if bytes.len() <= INLINE_HEX_LIMIT || self.inline_everything {
            return format!("dense<\"0x{}\">", hex(bytes));
        }
        let name = format!("r{}", self.resources.len());
        self.resources.push((name.clone(), data.clone()));
        format!("dense_resource<{name}>")
    }
}

/// `[v0, v1, ...]` (nested by shape) if every value prints exactly.
fn value_list(t: &Tensor) -> Option<String> {
    let mut items = Vec::with_capacity(t.codes.len());
    for &c in &t.codes {
        items.push(format_value(t.elem, c)?);
    }
    if t.shape.is_empty() {
        return items.pop();
    }
    Some(nest(&items, &t.shape))
}

fn nest(items: &[String], shape: &[u64]) -> String {
    if shape.len() <= 1 {
        return format!("[{}]", items.join(", "));
    }
    let inner: u64 = shape[1..].iter().product();
    let parts: Vec<String> = if inner == 0 {
        Vec::new()
    } else {
        items
            .chunks(inner as usize)
            .map(|c| nest(c, &shape[1..]))
            .collect()
    };
    format!("[{}]", parts.join(", "))
}

/// One element as text, or `None` if the text would not read back to the
/// same code (a NaN other than the canonical one, say).
pub fn format_value(elem: ElemType, code: u64) -> Option<String> {
    match elem {
        ElemType::Float(f) => {
            let v = f.decode(code);
            if v.is_nan() {
                return (f.nan_code() == Some(code)).then(|| "nan".to_string());
            }
            if v.is_infinite() {
                return Some(if v > 0.0 { "inf" } else { "-inf" }.to_string());
            }
            Some(format!("{v:?}"))
        }
        _ => elem.decode_int(code).map(|i| i.to_string()),
    }
}
