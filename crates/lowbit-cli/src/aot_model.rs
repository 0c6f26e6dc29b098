//! `lowbit compile MODEL --emit so|obj|asm`: a whole model compiled ahead
//! of time into a shared library (or one relocatable object to link into
//! a program, or that object as one assembly file) with a C entry point
//! `int lowbit_<name>_run(const float *in0, ..., float *out0, ...)` and a
//! header declaring it.
//!
//! Every `matmul`/`qmatmul` the CPU kernels take (see `cpu_run`) becomes
//! one kernel in an LLVM object, with its weights pre-packed into constant
//! globals of that object. The ops around them that a driver does in a
//! few lines — `add` (same shape, or a constant broadcast along the last
//! dimension or a scalar), `relu`, `reshape` (an alias) — are emitted as C
//! in a generated driver, linked with the object by the system C compiler
//! (`cc`, or `$CC`). Limits: every run-time value must be `f32`, the
//! kernels' float paths only (no integer W8A8/W1A1 kernels yet), only the
//! module's first function; any other op is refused, naming the op and
//! why, and nothing is written.
//!
//! Accuracy: the driver's `add`/`relu` are exact f32 operations, equal to
//! the interpreter's; each kernel matmul is within the bound stated in
//! `lowbit_llvm::codegen`.

use crate::cpu_run::plan_matmul;
use lowbit::interp::eval_op;
use lowbit::ir::{BinaryOp, Function, Module, Op, OpKind, Tensor, Value};
use lowbit::numerics::ElemType;
use lowbit_llvm::aot::{emit_model, Emit, ModelKernel};
use lowbit_llvm::{CpuTarget, GemmSpec};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// What `--emit so`/`obj` builds before linking.
pub struct Artifacts {
    /// The kernels and constant data: an object file, or assembly text
    /// when compiled for `--emit asm`.
    pub object: Vec<u8>,
    /// The generated C driver (defines the entry point).
    pub driver: String,
    /// The C header declaring the entry point.
    pub header: String,
}

/// `name` turned into a C identifier fragment.
pub fn c_ident(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn label(f: &Function, op: Op) -> String {
    let name = f.op(op).kind.name();
    match f.op_spans.get(&op) {
        Some(sp) => format!("'{name}' at line {}", sp.line),
        None => format!(
            "'{name}' (op #{})",
            f.ops().iter().position(|&o| o == op).unwrap_or(0)
        ),
    }
}

fn constant_of(f: &Function, v: Value) -> Option<Tensor> {
    let d = f.op(f.def_op(v)?);
    if !matches!(d.kind, OpKind::Constant(_)) {
        return None;
    }
    eval_op(&d.kind, &[], &[f.ty(v).clone()])
        .ok()
        .map(|mut t| t.remove(0))
}

fn f32_bytes(t: &Tensor) -> Vec<u8> {
    t.codes
        .iter()
        .flat_map(|&c| (c as u32).to_le_bytes())
        .collect()
}

struct Gen<'a> {
    f: &'a Function,
    sym: String,
    kernels: Vec<(String, GemmSpec)>,
    data: Vec<(String, Vec<u8>)>,
    body: String,
    /// The C expression holding each run-time value.
    vars: HashMap<Value, String>,
    tmp: usize,
}

impl Gen<'_> {
    fn data(&mut self, bytes: Vec<u8>) -> String {
        let name = format!("{}_d{}", self.sym, self.data.len());
        self.data.push((name.clone(), bytes));
        name
    }

    fn alloc(&mut self, elems: u64) -> String {
        let v = format!("t{}", self.tmp);
        self.tmp += 1;
        let _ = writeln!(
            self.body,
            "  float *{v} = (float *)calloc({}, sizeof(float));\n  if (!{v}) goto fail;\n  bufs[nbufs++] = {v};",
            elems.max(1)
        );
        v
    }

    fn var(&self, op: Op, v: Value) -> Result<String, String> {
        self.vars.get(&v).cloned().ok_or_else(|| {
            format!(
                "{}: an operand is not a run-time f32 value the driver computes",
                label(self.f, op)
            )
        })
    }

    fn op(&mut self, op: Op) -> Result<(), String> {
        let f = self.f;
        let d = f.op(op);
        let unsupported = |why: String| format!("unsupported: {}: {why}", label(f, op));
        for &r in &d.results {
            if f.ty(r).elem != ElemType::F32 {
                return Err(unsupported(format!(
                    "its result is {}; compiled libraries handle f32 values only",
                    f.ty(r)
                )));
            }
        }
        match &d.kind {
            OpKind::MatMul { .. } | OpKind::MatMulInt { .. } | OpKind::QMatMul { .. } => {
                let p = plan_matmul(f, op).map_err(&unsupported)?;
                if p.spec.is_integer() || p.spec.act != ElemType::F32 {
                    return Err(unsupported(
                        "only the f32-activation float kernels are compiled ahead of time yet".into(),
                    ));
                }
                if f.ty(d.operands[0]).rank() != 2 {
                    return Err(unsupported(
                        "only 2-D activations are compiled ahead of time yet".into(),
                    ));
                }
                let bias = match p.bias {
                    Some(b) => {
                        let t = constant_of(f, b).ok_or_else(|| {
                            unsupported("the bias is not a constant".into())
                        })?;
                        Some(self.data(f32_bytes(&t)))
                    }
                    None => None,
                };
                let x = self.var(op, d.operands[0])?;
                let (m, k, k_pad) = (p.spec.m, p.spec.k, p.spec.k_pad());
                let n = f.ty(d.operands[0]).shape[0];
                let kname = format!("{}_k{}", self.sym, self.kernels.len());
                let w = self.data(p.weights.codes().to_vec());
                let s = self.data(p.weights.scales().to_vec());
                let z = if p.weights.zero_points().is_empty() {
                    "NULL".to_string()
                } else {
                    self.data(p.weights.zero_points().to_vec())
                };
                self.kernels.push((kname.clone(), p.spec));
                let xp = if k_pad == k {
                    x
                } else {
                    // The kernel reads rows of k_pad with zeros after k.
                    let xp = self.alloc(n * k_pad as u64);
                    let _ = writeln!(
                        self.body,
                        "  for (size_t r = 0; r < {n}; r++) memcpy({xp} + r * {k_pad}, {x} + r * {k}, {k} * sizeof(float));"
                    );
                    xp
                };
                let y = self.alloc(n * m as u64);
                let _ = writeln!(
                    self.body,
                    "  {kname}({xp}, {w}, {s}, {z}, {}, {y}, {n}, 0, {m});",
                    bias.map_or("NULL".to_string(), |b| format!("(const float *){b}"))
                );
                self.vars.insert(d.results[0], y);
            }
            OpKind::Binary {
                op: BinaryOp::Add, ..
            } => {
                let rt = f.ty(d.results[0]);
                let (a, b) = (d.operands[0], d.operands[1]);
                let (run, other) = if self.vars.contains_key(&a) {
                    (a, b)
                } else {
                    (b, a)
                };
                let x = self.var(op, run)?;
                if f.ty(run).shape != rt.shape {
                    return Err(unsupported(
                        "the run-time operand is broadcast; only the other operand may be".into(),
                    ));
                }
                let ot = f.ty(other);
                let last = rt.shape.last().copied().unwrap_or(1);
                let o = match self.vars.get(&other) {
                    Some(v) => v.clone(),
                    None => {
                        let t = constant_of(f, other).ok_or_else(|| {
                            unsupported("an operand is neither computed nor a constant".into())
                        })?;
                        format!("((const float *){})", self.data(f32_bytes(&t)))
                    }
                };
                let n = rt.num_elements();
                let idx = if ot.shape == rt.shape {
                    "i".to_string()
                } else if ot.num_elements() == 1 {
                    "0".to_string()
                } else if ot.num_elements() == last
                    && ot.shape.iter().rev().skip(1).all(|&d| d == 1)
                {
                    format!("i % {last}")
                } else {
                    return Err(unsupported(format!(
                        "broadcasting {ot} to {rt} is not the last-dimension or scalar form the driver does"
                    )));
                };
                let y = self.alloc(n);
                let _ = writeln!(
                    self.body,
                    "  for (size_t i = 0; i < {n}; i++) {y}[i] = {x}[i] + {o}[{idx}];"
                );
                self.vars.insert(d.results[0], y);
            }
            OpKind::Relu => {
                let x = self.var(op, d.operands[0])?;
                let n = f.ty(d.results[0]).num_elements();
                let y = self.alloc(n);
                // NaN passes through, as in the interpreter.
                let _ = writeln!(
                    self.body,
                    "  for (size_t i = 0; i < {n}; i++) {{ float v = {x}[i]; {y}[i] = (v > 0.0f || v != v) ? v : 0.0f; }}"
                );
                self.vars.insert(d.results[0], y);
            }
            OpKind::Reshape => {
                let x = self.var(op, d.operands[0])?;
                self.vars.insert(d.results[0], x);
            }
            OpKind::Constant(_) => {}
            other => {
                return Err(unsupported(format!(
                    "'{}' has no CPU kernel or driver code (compiled libraries take matmul/qmatmul with quantized constant weights, add, relu and reshape)",
                    other.name()
                )))
            }
        }
        Ok(())
    }
}

/// Compiles the module's first function into an object (or, with `what`
/// = [`Emit::Asm`], assembly), driver and header with entry point
/// `lowbit_<name>_run`.
pub fn compile_model(
    module: &Module,
    name: &str,
    target: &CpuTarget,
    what: Emit,
) -> Result<Artifacts, String> {
    let f = module
        .functions
        .first()
        .ok_or("the model has no function")?;
    let sym = format!("lowbit_{}", c_ident(name));
    // Walk back from the outputs: a mapped matmul needs only its activation.
    let mut needed: HashSet<Value> = f.outputs.iter().map(|(_, v)| *v).collect();
    for &op in f.ops().iter().rev() {
        let d = f.op(op);
        if !d.results.iter().any(|r| needed.contains(r)) {
            continue;
        }
        if matches!(
            d.kind,
            OpKind::MatMul { .. } | OpKind::MatMulInt { .. } | OpKind::QMatMul { .. }
        ) {
            needed.insert(d.operands[0]);
        } else {
            needed.extend(d.operands.iter().copied());
        }
    }
    let mut g = Gen {
        f,
        sym: sym.clone(),
        kernels: Vec::new(),
        data: Vec::new(),
        body: String::new(),
        vars: HashMap::new(),
        tmp: 0,
    };
    let mut params = Vec::new();
    let mut doc = String::new();
    // Element counts as macros, so callers can size their buffers.
    let mut sizes = String::new();
    for (i, (pname, v)) in f.params.iter().enumerate() {
        let t = f.ty(*v);
        if t.elem != ElemType::F32 {
            return Err(format!(
                "unsupported: input '{pname}' is {t}; compiled libraries take f32 inputs only"
            ));
        }
        let c = format!("in{i}_{}", c_ident(pname));
        let _ = writeln!(doc, " *   {c}: input '{pname}', {t}, row-major");
        let _ = writeln!(
            sizes,
            "#define {}_IN{i}_ELEMS {}",
            sym.to_uppercase(),
            t.num_elements()
        );
        params.push(format!("const float *{c}"));
        g.vars.insert(*v, c);
    }
    for &op in f.ops() {
        if f.op(op).results.iter().any(|r| needed.contains(r)) {
            g.op(op)?;
        }
    }
    for (i, (oname, v)) in f.outputs.iter().enumerate() {
        let t = f.ty(*v);
        let c = format!("out{i}_{}", c_ident(oname));
        let src = g.vars.get(v).cloned().ok_or_else(|| {
            format!("unsupported: output '{oname}' is not computed at run time (a constant or non-f32 value)")
        })?;
        let _ = writeln!(doc, " *   {c}: output '{oname}', {t}, row-major");
        let _ = writeln!(
            sizes,
            "#define {}_OUT{i}_ELEMS {}",
            sym.to_uppercase(),
            t.num_elements()
        );
        let _ = writeln!(
            g.body,
            "  memcpy({c}, {src}, {} * sizeof(float));",
            t.num_elements()
        );
        params.push(format!("float *{c}"));
    }
    let proto = format!("int {sym}_run({})", params.join(", "));
    let header = format!(
        "/* Generated by lowbit compile from function @{fname}.\n * {proto}\n{doc} * Returns 0 on success, non-zero if memory for intermediates ran out.\n * The weights are packed into the compiled code; calls are thread-safe.\n */\n#ifndef {guard}_H\n#define {guard}_H\n{sizes}#ifdef __cplusplus\nextern \"C\" {{\n#endif\n{proto};\n#ifdef __cplusplus\n}}\n#endif\n#endif\n",
        fname = f.name,
        guard = sym.to_uppercase(),
    );
    let mut driver = String::from(
        "/* Generated by lowbit: the driver of a compiled model. */\n#include <stddef.h>\n#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n",
    );
    for (k, _) in &g.kernels {
        let _ = writeln!(driver, "void {k}(const float *, const uint8_t *, const uint8_t *, const uint8_t *, const float *, float *, int64_t, int64_t, int64_t);");
    }
    for (d, _) in &g.data {
        let _ = writeln!(driver, "extern const uint8_t {d}[];");
    }
    let _ = write!(
        driver,
        "__attribute__((visibility(\"default\"))) {proto} {{\n  void *bufs[{}];\n  size_t nbufs = 0;\n  int rc = 0;\n{}  goto done;\nfail:\n  rc = 1;\ndone:\n  while (nbufs > 0) free(bufs[--nbufs]);\n  return rc;\n}}\n",
        g.tmp.max(1),
        g.body
    );
    let kernels: Vec<ModelKernel> = g
        .kernels
        .iter()
        .map(|(s, spec)| ModelKernel {
            spec,
            symbol: s.clone(),
        })
        .collect();
    let object = emit_model(&kernels, &g.data, target, what).map_err(|e| e.to_string())?;
    Ok(Artifacts {
        object,
        driver,
        header,
    })
}

/// Runs `build` in a fresh temporary directory holding `a`'s object
/// (`model.o`) and driver (`driver.c`), then removes the directory.
fn in_build_dir<T>(
    a: &Artifacts,
    build: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, String> {
    let stamp = format!(
        "lowbit-aot-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let dir = std::env::temp_dir().join(stamp);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = (|| {
        let (obj, drv) = (dir.join("model.o"), dir.join("driver.c"));
        std::fs::write(&obj, &a.object)
            .map_err(|e| format!("cannot write {}: {e}", obj.display()))?;
        std::fs::write(&drv, &a.driver)
            .map_err(|e| format!("cannot write {}: {e}", drv.display()))?;
        build(&dir)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs the system C compiler (`$CC`, else `cc`) with `args`.
fn run_cc(what: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let o = Command::new(&cc).args(args).output().map_err(|e| {
        format!("--emit {what} needs a C compiler and linker: cannot run '{cc}': {e}")
    })?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the {what} with '{cc}' failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Links `a` into the shared library `out` with the system C compiler and
/// writes the header to `header`; both appear whole or not at all.
pub fn link_shared(a: &Artifacts, out: &Path, header: &Path) -> Result<(), String> {
    in_build_dir(a, |dir| {
        let so = dir.join("model.so");
        run_cc(
            "so",
            &[
                "-shared".as_ref(),
                "-fPIC".as_ref(),
                "-O2".as_ref(),
                "-o".as_ref(),
                so.as_os_str(),
                dir.join("driver.c").as_os_str(),
                dir.join("model.o").as_os_str(),
            ],
        )?;
        let bytes = std::fs::read(&so).map_err(|e| format!("cannot read {}: {e}", so.display()))?;
        crate::output::write_atomic(header, a.header.as_bytes())?;
        crate::output::write_atomic(out, &bytes)
    })
}

/// Builds one relocatable object `out` (the driver compiled by the system
/// C compiler, then merged with the kernels' object by a relocatable link,
/// `cc -r`) and writes the header to `header`. The entry point is the only
/// symbol of default visibility; kernels and weights are hidden, so a
/// program links the object directly (`cc main.c model.o`).
pub fn link_object(a: &Artifacts, out: &Path, header: &Path) -> Result<(), String> {
    in_build_dir(a, |dir| {
        let (drv_o, merged) = (dir.join("driver.o"), dir.join("merged.o"));
        run_cc(
            "obj",
            &[
                "-c".as_ref(),
                "-fPIC".as_ref(),
                "-O2".as_ref(),
                "-o".as_ref(),
                drv_o.as_os_str(),
                dir.join("driver.c").as_os_str(),
            ],
        )?;
        run_cc(
            "obj",
            &[
                "-r".as_ref(),
                "-nostdlib".as_ref(),
                "-o".as_ref(),
                merged.as_os_str(),
                drv_o.as_os_str(),
                dir.join("model.o").as_os_str(),
            ],
        )?;
        let bytes =
            std::fs::read(&merged).map_err(|e| format!("cannot read {}: {e}", merged.display()))?;
        crate::output::write_atomic(header, a.header.as_bytes())?;
        crate::output::write_atomic(out, &bytes)
    })
}

/// Writes one assembly file `out`: the driver compiled to assembly by the
/// system C compiler (`cc -S`), then the kernels' and weights' assembly
/// (`a.object` compiled with [`Emit::Asm`]); the header goes to `header`.
/// `cc -c out` assembles it into the object `--emit obj` writes.
pub fn write_assembly(a: &Artifacts, out: &Path, header: &Path) -> Result<(), String> {
    in_build_dir(a, |dir| {
        let drv_s = dir.join("driver.s");
        run_cc(
            "asm",
            &[
                "-S".as_ref(),
                "-fPIC".as_ref(),
                "-O2".as_ref(),
                "-o".as_ref(),
                drv_s.as_os_str(),
                dir.join("driver.c").as_os_str(),
            ],
        )?;
        let mut text =
            std::fs::read(&drv_s).map_err(|e| format!("cannot read {}: {e}", drv_s.display()))?;
        text.extend_from_slice(b"\n# lowbit: kernels and packed weights\n");
        text.extend_from_slice(&a.object);
        crate::output::write_atomic(header, a.header.as_bytes())?;
        crate::output::write_atomic(out, &text)
    })
}

#[cfg(test)]
mod tests {
    use super::c_ident;

    #[test]
    fn c_identifiers_are_valid() {
        assert_eq!(c_ident("mlp"), "mlp");
        assert_eq!(c_ident("my-model.v2"), "my_model_v2");
        assert_eq!(c_ident("9lives"), "_9lives");
        assert_eq!(c_ident(""), "_");
    }
}
