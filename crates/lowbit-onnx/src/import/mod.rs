//! ONNX model import: a `ModelProto` becomes a lowbit [`Module`] with one
//! function, `@main`.
//!
//! * Graph inputs become parameters (named as in the graph; every dim must
//!   be a concrete number), graph outputs the function's outputs, in order,
//!   with the graph's names. Inputs that also have an initializer are
//!   constants (ONNX's "default value" inputs).
//! * Initializers and `Constant` nodes become `constant` ops **in their own
//!   element type**: int4/uint4/int2/int8/float8/float4 weights stay
//!   quantized, so `DequantizeLinear(weight) → MatMul` imports as
//!   `dequantize(constant) → matmul` for the optimizer to fuse. Nothing is
//!   dequantized at import. Where quantized data must become float outside
//!   such a `dequantize` (MatMulNBits with fractional float zero points, an
//!   ONNX `Cast` of a low-bit constant to float not followed by a `Mul` by a
//!   per-tensor or per-axis scale, which imports as a `dequantize`), the ops doing it and the
//!   matmul consuming it carry an [`lowbit_ir::OpNote`] naming the node and
//!   the cause, which `lowbit explain` reports.
//! * Memory: an initializer's `raw_data` becomes its constant's bytes
//!   without being decoded, and [`import_model`] decodes the file as one
//!   shared buffer that those constants slice, so importing holds the
//!   weights about once (BENCHMARKS.md, "Memory"). Values are decoded to
//!   [`Tensor`]s only where a lowering reads them, and then dropped.
//! * Initializers with external data are read from files next to the model
//!   (`location`, `offset`, `length`), confined to the model's directory.
//! * Each node resolves to its operator version through the model's opset
//!   imports ([`opset`]); an unknown op, domain or version is refused,
//!   naming the node.
//! * Shapes are static: every value's type is computed by per-op rules in
//!   [`lower`]. Shape computations on constants (`Shape`, `Gather`,
//!   `Concat`, arithmetic on small int64/int32 tensors) are evaluated at
//!   import; the shape inputs of `Reshape`, `Slice`, `Expand`, `Squeeze`
//!   and `Unsqueeze` must be constant.
//!
//! Every problem is an [`ImportError`] with one line naming the node (name,
//! op type, domain, opset), initializer, input or file at fault. The result
//! passes [`lowbit_ir::verifier::verify_module`]; a failure there is
//! reported as an import error too, never a panic.
//!
//! Limits: one graph (no subgraphs, functions or training info); models
//! must fit in one protobuf (2 GB) apart from external data; sparse
//! initializers, STRING/COMPLEX tensors and sequence/map types are refused.

mod lower;
pub mod opset;

use crate::proto::onnx::tensor_proto::DataLocation;
use crate::proto::onnx::{type_proto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::tensor_io::{elem_type_from_onnx, take_raw_constant, tensor_from_proto};
use lowbit_ir::{ConstData, Function, Module, OpKind, Tensor, TensorType, Value};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path};
use std::rc::Rc;

/// Why a model could not be imported: one line naming what is at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError {
    message: String,
}

impl ImportError {
    fn new(message: impl Into<String>) -> ImportError {
        ImportError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ImportError {}

/// Imports the ONNX model at `path`; external data is read relative to its
/// directory.
pub fn import_model(path: &Path) -> Result<Module, ImportError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ImportError::new(format!("cannot read '{}': {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let with_path = |e: ImportError| ImportError::new(format!("{}: {}", path.display(), e.message));
    // Decoding from a `Bytes` buffer makes every initializer's `raw_data` a
    // slice of the file rather than a copy; the constants then share the
    // file buffer, so the weights are in memory once.
    let model = decode(prost::bytes::Bytes::from(bytes)).map_err(with_path)?;
    import_owned(model, Some(dir)).map_err(with_path)
}

fn decode(bytes: impl prost::bytes::Buf) -> Result<ModelProto, ImportError> {
    ModelProto::decode(bytes).map_err(|e| {
        ImportError::new(format!(
            "not a valid ONNX model: the protobuf does not decode ({e})"
        ))
    })
}

/// Imports a serialized `ModelProto`. `base_dir` is where external data
/// files live; without it, a model with external data is refused.
pub fn import_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Module, ImportError> {
    import_owned(decode(bytes)?, base_dir)
}

/// Imports a decoded `ModelProto` (see [`import_bytes`]). This copies the
/// model; [`import_owned`] moves initializer data into the module instead.
pub fn import_proto(model: &ModelProto, base_dir: Option<&Path>) -> Result<Module, ImportError> {
    import_owned(model.clone(), base_dir)
}

/// Imports a decoded `ModelProto`, consuming it: initializers' `raw_data`
/// moves into the IR constants (in the IR's default layout, without being
/// decoded), and each initializer's proto is freed as soon as it is read,
/// so the import holds the weights once.
pub fn import_owned(mut model: ModelProto, base_dir: Option<&Path>) -> Result<Module, ImportError> {
    let mut graph = model
        .graph
        .take()
        .ok_or_else(|| ImportError::new("not a valid ONNX model: it has no graph"))?;
    let mut opsets: HashMap<String, i64> = HashMap::new();
    for o in &model.opset_import {
        let domain = opset::normalize_domain(o.domain.as_deref().unwrap_or("")).to_string();
        let version = o.version.unwrap_or(0);
        opsets.insert(domain, version);
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(ImportError::new("sparse initializers are not supported"));
    }
    let mut im = Importer {
        f: Function::new("main"),
        env: HashMap::new(),
        base_dir,
        opsets,
        low_bit_casts: HashMap::new(),
    };

    let init_names: HashSet<String> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.clone())
        .collect();
    for input in &graph.input {
        let name = input.name.clone().unwrap_or_default();
        if init_names.contains(&name) {
            continue;
        }
        let ty = input_type(input)?;
        let v = im.f.add_param(name.clone(), ty.clone());
        im.env.insert(name, Val::dynamic(v, ty));
    }
    for t in std::mem::take(&mut graph.initializer) {
        let name = t.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(ImportError::new("an initializer has no name"));
        }
        let val = im.initializer(t, &name)?;
        im.env.insert(name, val);
    }
    for node in &graph.node {
        im.node(node)?;
    }
    for out in &graph.output {
        let name = out.name.clone().unwrap_or_default();
        let val = im.env.get(&name).cloned().ok_or_else(|| {
            ImportError::new(format!(
                "graph output '{name}' is not produced by any node, initializer or input"
            ))
        })?;
        check_declared(out, &val.ty)?;
        im.f.outputs.push((name, val.v));
    }
    let mut f = im.f;
    remove_unused(&mut f);
    let module = Module { functions: vec![f] };
    lowbit_ir::verifier::verify_module(&module).map_err(|d| {
        let first = d.first().map(|d| d.message.clone()).unwrap_or_default();
        ImportError::new(format!("the imported IR does not verify: {first}"))
    })?;
    Ok(module)
}

/// An imported value: its IR value, type, and its contents when known at
/// import time (initializers, constants and folded shape computations).
#[derive(Clone, Debug)]
pub(crate) struct Val {
    pub v: Value,
    pub ty: TensorType,
    konst: Option<Konst>,
}

/// The contents of a value known at import. Initializers keep only the
/// constant's physical bytes (shared with the IR `constant`), so a weight
/// is never held as one `u64` per element for the whole import; the codes
/// are decoded on demand ([`Val::konst`]) by the few lowerings that need
/// them, and dropped after.
#[derive(Clone, Debug)]
enum Konst {
    Decoded(Rc<Tensor>),
    /// Bytes in the default layout of the value's type (checked when made).
    Bytes(ConstData),
}

impl Val {
    /// A value computed at run time.
    pub fn dynamic(v: Value, ty: TensorType) -> Val {
        Val { v, ty, konst: None }
    }

    /// Whether the contents are known at import.
    pub fn is_const(&self) -> bool {
        self.konst.is_some()
    }

    /// The contents when known at import, decoded (for byte-backed
    /// constants, a fresh decode the caller drops when done).
    pub fn konst(&self) -> Option<Rc<Tensor>> {
        match self.konst.as_ref()? {
            Konst::Decoded(t) => Some(t.clone()),
            // The byte count was checked against the type when the
            // constant was made, so this decode cannot fail.
            Konst::Bytes(d) => Tensor::from_bytes(&self.ty, d.bytes()).ok().map(Rc::new),
        }
    }

    /// The default-layout bytes of a byte-backed constant.
    pub fn const_bytes(&self) -> Option<&ConstData> {
        match self.konst.as_ref()? {
            Konst::Bytes(d) => Some(d),
            Konst::Decoded(_) => None,
        }
    }
}

pub(crate) struct Importer<'a> {
    pub f: Function,
    /// ONNX value name to imported value.
    pub env: HashMap<String, Val>,
    base_dir: Option<&'a Path>,
    opsets: HashMap<String, i64>,
    /// Low-bit constants made float by hand (`Cast(q)`, `Cast(q) - zp`),
    /// by the float value: a `Mul` by a scale then makes them a
    /// `dequantize` instead.
    pub low_bit_casts: HashMap<Value, lower::HandDequant>,
}

/// Results with at most this many elements are computed at import when all
/// operands are known and the result is an integer tensor of 32 or 64 bits
/// (shape arithmetic). Weights are never folded: they stay quantized.
const FOLD_LIMIT: u64 = 4096;

impl Importer<'_> {
    /// Emits a `constant`.
    pub fn constant(&mut self, t: Tensor) -> Val {
        let ty = TensorType::new(t.shape.clone(), t.elem);
        let v = self
            .f
            .push(OpKind::constant_of(&t, &ty), vec![], ty.clone());
        Val {
            v,
            ty,
            konst: Some(Konst::Decoded(Rc::new(t))),
        }
    }

    /// Emits a `constant` of type `ty` (default layout) from its physical
    /// bytes, which the caller has checked are `ty.byte_size()` long.
    pub fn constant_bytes(&mut self, ty: TensorType, data: ConstData) -> Val {
        let v = self
            .f
            .push(OpKind::Constant(data.clone()), vec![], ty.clone());
        Val {
            v,
            ty,
            konst: Some(Konst::Bytes(data)),
        }
    }

    /// Emits an op (or, for shape arithmetic on known operands, its value).
    pub fn emit(&mut self, kind: OpKind, operands: &[&Val], ty: TensorType) -> Result<Val, String> {
        let foldable = ty.num_elements() <= FOLD_LIMIT
            && ty.elem.is_int()
            && ty.elem.bits() >= 32
            && !operands.is_empty()
            && operands.iter().all(|o| o.is_const());
        if foldable {
            let owned: Vec<Rc<Tensor>> = operands.iter().filter_map(|o| o.konst()).collect();
            let ts: Vec<&Tensor> = owned.iter().map(|t| &**t).collect();
            let mut out = lowbit_interp::eval_op(&kind, &ts, std::slice::from_ref(&ty))
                .map_err(|e| e.to_string())?;
            if let Some(t) = out.pop() {
                return Ok(self.constant(t));
            }
        }
        let v = self
            .f
            .push(kind, operands.iter().map(|o| o.v).collect(), ty.clone());
        Ok(Val::dynamic(v, ty))
    }

    /// Emits an initializer's `constant`. Raw data moves into the constant
    /// as it is (see [`take_raw_constant`]); typed data fields, BOOL and
    /// malformed tensors go through [`tensor_from_proto`].
    fn initializer(&mut self, t: TensorProto, name: &str) -> Result<Val, ImportError> {
        let external =
            t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty();
        let mut proto = if external {
            self.load_external(t, name)?
        } else {
            t
        };
        if let Some((ty, data)) = take_raw_constant(&mut proto) {
            return Ok(self.constant_bytes(ty, data));
        }
        let tensor = tensor_from_proto(&proto)
            .map(|(_, t)| t)
            .map_err(|m| ImportError::new(format!("initializer '{name}': {m}")))?;
        Ok(self.constant(tensor))
    }

    /// `t` with its external data read into `raw_data`.
    fn load_external(&self, mut t: TensorProto, name: &str) -> Result<TensorProto, ImportError> {
        let err = |m: String| ImportError::new(format!("initializer '{name}': {m}"));
        let get = |key: &str| {
            t.external_data
                .iter()
                .find(|kv| kv.key.as_deref() == Some(key))
                .and_then(|kv| kv.value.clone())
        };
        let location =
            get("location").ok_or_else(|| err("external data without a 'location'".into()))?;
        let parse = |key: &str| -> Result<Option<u64>, ImportError> {
            get(key)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| err(format!("external data '{key}' is not a number: '{v}'")))
                })
                .transpose()
        };
        let offset = parse("offset")?.unwrap_or(0);
        let length = parse("length")?;
        let rel = Path::new(&location);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
        {
            return Err(err(format!(
                "external data location '{location}' must be a relative path inside the model's directory"
            )));
        }
        let dir = self.base_dir.ok_or_else(|| {
            err(format!(
                "its data is in the external file '{location}', but the model was not loaded from a file"
            ))
        })?;
        let path = dir.join(rel);
        let bytes = read_range(&path, offset, length)
            .map_err(|m| err(format!("external data file '{}': {m}", path.display())))?;
        t.external_data.clear();
        t.data_location = None;
        t.raw_data = Some(bytes.into());
        Ok(t)
    }

    fn node(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        let op_type = node.op_type.as_deref().unwrap_or("");
        let domain = opset::normalize_domain(node.domain.as_deref().unwrap_or(""));
        let version_of_domain = self.opsets.get(domain).copied();
        let label = || {
            let name = node.name.as_deref().unwrap_or("");
            let shown_domain = if domain.is_empty() { "ai.onnx" } else { domain };
            let opset = version_of_domain
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into());
            format!("node '{name}' ({op_type}, domain {shown_domain}, opset {opset})")
        };
        let version = opset::resolve(domain, op_type, version_of_domain)
            .map_err(|m| ImportError::new(format!("{}: {m}", label())))?;
        let outputs = lower::lower(self, node, op_type, domain, version)
            .map_err(|m| ImportError::new(format!("{}: {m}", label())))?;
        for (name, val) in node.output.iter().zip(outputs) {
            if !name.is_empty() {
                self.env.insert(name.clone(), val);
            }
        }
        Ok(())
    }

    /// Records at the op defining `v` that node `node` turned quantized
    /// data into float outside a fusable `dequantize` (see
    /// [`lowbit_ir::OpNote`]); `lowbit explain` reports it.
    pub fn note(&mut self, v: &Val, node: &NodeProto, what: String, why: String) {
        let note = lowbit_ir::OpNote {
            node: node.name.clone().unwrap_or_default(),
            op_type: node.op_type.clone().unwrap_or_default(),
            what,
            why,
        };
        self.f.note_value(v.v, note);
    }

    /// Input `i` of a node, `None` when absent or given as `""`.
    pub fn opt_input(&self, node: &NodeProto, i: usize) -> Result<Option<Val>, String> {
        match node.input.get(i).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(name) => self.env.get(name).cloned().map(Some).ok_or_else(|| {
                format!(
                    "input '{name}' is not produced by any earlier node, initializer or graph input"
                )
            }),
        }
    }

    /// A required input.
    pub fn input(&self, node: &NodeProto, i: usize) -> Result<Val, String> {
        self.opt_input(node, i)?
            .ok_or_else(|| format!("missing required input #{i}"))
    }
}

/// Reads `length` bytes (to the end of the file when `None`) from `offset`.
fn read_range(path: &Path, offset: u64, length: Option<u64>) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let end = match length {
        Some(l) => offset.checked_add(l),
        None => Some(size),
    };
    match end {
        Some(end) if offset <= size && end <= size => {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| e.to_string())?;
            let n = usize::try_from(end - offset).map_err(|_| "too large".to_string())?;
            let mut buf = vec![0u8; n];
            file.read_exact(&mut buf).map_err(|e| e.to_string())?;
            Ok(buf)
        }
        _ => Err(format!(
            "offset {offset} and length {} run past its end ({size} bytes)",
            length.map_or("(rest)".to_string(), |l| l.to_string())
        )),
    }
}

/// The static tensor type of a graph input.
fn input_type(info: &ValueInfoProto) -> Result<TensorType, ImportError> {
    let name = info.name.as_deref().unwrap_or("");
    let err = |m: String| ImportError::new(format!("graph input '{name}': {m}"));
    let (elem, shape) = tensor_type_of(info).map_err(err)?;
    let Some(shape) = shape else {
        return Err(err(
            "has no shape; lowbit needs static shapes (give every dim a value, e.g. with onnxruntime.tools.make_dynamic_shape_fixed)".into(),
        ));
    };
    let mut dims = Vec::with_capacity(shape.len());
    for (i, d) in shape.into_iter().enumerate() {
        match d {
            Dim::Value(v) => dims.push(v),
            Dim::Param(p) => {
                return Err(err(format!(
                    "dim {i} is symbolic ('{p}'); lowbit needs static shapes: fix it to a number, e.g. `python -m onnxruntime.tools.make_dynamic_shape_fixed --dim_param {p} --dim_value N in.onnx out.onnx`"
                )))
            }
            Dim::Unknown => {
                return Err(err(format!(
                    "dim {i} has no value; lowbit needs static shapes"
                )))
            }
        }
    }
    Ok(TensorType::new(dims, elem))
}

enum Dim {
    Value(u64),
    Param(String),
    Unknown,
}

/// The element type and (if given) shape a value info declares.
fn tensor_type_of(
    info: &ValueInfoProto,
) -> Result<(lowbit_ir::ElemType, Option<Vec<Dim>>), String> {
    use crate::proto::onnx::tensor_shape_proto::dimension::Value as D;
    let Some(type_proto::Value::TensorType(t)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err("is not a tensor (sequences, maps and optionals are not supported)".into());
    };
    let elem = elem_type_from_onnx(t.elem_type.unwrap_or(0))?;
    let shape = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(D::DimValue(v)) if *v >= 0 => Dim::Value(*v as u64),
                Some(D::DimParam(p)) if !p.is_empty() => Dim::Param(p.clone()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    Ok((elem, shape))
}

/// Checks a graph output's declared type (where it declares one) against
/// the imported one.
fn check_declared(info: &ValueInfoProto, got: &TensorType) -> Result<(), ImportError> {
    let name = info.name.as_deref().unwrap_or("");
    if info.r#type.is_none() {
        return Ok(());
    }
    let (elem, shape) = tensor_type_of(info)
        .map_err(|m| ImportError::new(format!("graph output '{name}': {m}")))?;
    let mismatch = |what: String| {
        ImportError::new(format!(
            "graph output '{name}': shape mismatch: the graph declares {what}, the nodes compute {got}"
        ))
    };
    if elem != got.elem {
        return Err(mismatch(format!("element type {elem}")));
    }
    if let Some(dims) = shape {
        let consistent = dims.len() == got.shape.len()
            && dims.iter().zip(&got.shape).all(|(d, &g)| match d {
                Dim::Value(v) => *v == g,
                _ => true,
            });
        if !consistent {
            let shown: Vec<String> = dims
                .iter()
                .map(|d| match d {
                    Dim::Value(v) => v.to_string(),
                    Dim::Param(p) => p.clone(),
                    Dim::Unknown => "?".into(),
                })
                .collect();
            return Err(mismatch(format!("shape [{}]", shown.join(", "))));
        }
    }
    Ok(())
}

/// Drops ops whose results nothing uses (folded shape computations, unused
/// initializers).
fn remove_unused(f: &mut Function) {
    loop {
        let uses = f.use_counts();
        let dead: HashSet<_> = f
            .ops()
            .iter()
            .copied()
            .filter(|&op| {
                f.op(op)
                    .results
                    .iter()
                    .all(|r| uses.get(r).copied().unwrap_or(0) == 0)
            })
            .collect();
        if dead.is_empty() {
            return;
        }
        f.remove_ops(&dead);
    }
}
