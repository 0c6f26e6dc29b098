//! Single-tensor files: ONNX `TensorProto` (`.pb`) and NumPy (`.npy`).
//!
//! The format is chosen by the file extension. A [`Tensor`]'s codes are the
//! raw bit patterns of its elements, so every conversion here is bit-exact:
//! no value is ever rounded.
//!
//! **`.pb`** reads every ONNX element type that lowbit can hold: FLOAT,
//! DOUBLE, FLOAT16, BFLOAT16, (U)INT8/16/32/64, BOOL (as `u1`), the four FLOAT8
//! types, FLOAT8E8M0, FLOAT4E2M1, FLOAT6E2M3/E3M2, (U)INT4 and (U)INT2, from
//! `raw_data` or from the typed field the schema assigns to the type
//! (`float_data`, `int32_data`, `int64_data`, `double_data`, `uint64_data`).
//! Sub-byte types are packed LSB first (ONNX's rule), which is lowbit's
//! default layout. Not supported: STRING and COMPLEX tensors, external data
//! and segmented tensors. Writing uses `raw_data` and fails for element types
//! ONNX cannot represent (`i3`, `b1`, `tf32`, custom floats, ...).
//!
//! **`.npy`** reads and writes NumPy's built-in dtypes `f2 f4 f8 i1 i2 i4 i8
//! u1 u2 u4 u8 b1` (`b1` is `u1` in lowbit), either byte order, C order only.
//! `ml_dtypes` arrays (bfloat16, float8, int4, ...) are saved by NumPy as
//! anonymous void dtypes (`<V1`, `<V2`) that do not say what they hold, so
//! they are rejected: use `.pb` for those types.
//!
//! Writes are atomic: the file is written under a temporary name in the
//! target directory and renamed into place, so a failed write leaves no
//! partial file. Every error is one line naming the file and the problem.

use crate::proto::onnx::tensor_proto::{DataLocation, DataType};
use crate::proto::onnx::TensorProto;
use lowbit_ir::tensor::{pack_stream, unpack_stream, Tensor};
use lowbit_ir::types::PackOrder;
use lowbit_ir::ConstData;
use lowbit_numerics::{ElemType, FloatFormat};
use prost::Message;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A tensor file could not be read or written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorIoError {
    path: PathBuf,
    message: String,
}

impl TensorIoError {
    fn new(path: &Path, message: impl Into<String>) -> TensorIoError {
        TensorIoError {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// The file at fault.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What went wrong, without the file name.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TensorIoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for TensorIoError {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Pb,
    Npy,
}

fn file_kind(path: &Path) -> Result<FileKind, TensorIoError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("pb") => Ok(FileKind::Pb),
        Some("npy") => Ok(FileKind::Npy),
        _ => Err(TensorIoError::new(
            path,
            "unknown tensor file type: expected a .pb (ONNX TensorProto) or .npy (NumPy) file",
        )),
    }
}

/// Reads a tensor from a `.pb` or `.npy` file, with its name if the file
/// stores one (only non-empty `TensorProto` names count).
pub fn read_tensor(path: &Path) -> Result<(Option<String>, Tensor), TensorIoError> {
    let kind = file_kind(path)?;
    let bytes =
        std::fs::read(path).map_err(|e| TensorIoError::new(path, format!("cannot read: {e}")))?;
    let result = match kind {
        // The file buffer moves into `Bytes` (no copy), so `raw_data` is a
        // slice of it: reading a `.pb` holds the file and the codes, not a
        // third, tensor-sized copy of the raw bytes.
        FileKind::Pb => decode_pb(prost::bytes::Bytes::from(bytes)),
        FileKind::Npy => npy_decode(&bytes).map(|t| (None, t)),
    };
    result.map_err(|m| TensorIoError::new(path, m))
}

/// Writes `t` as an ONNX `TensorProto` named `name` (no name if empty), with
/// the element type the tensor has, atomically.
pub fn write_pb(path: &Path, name: &str, t: &Tensor) -> Result<(), TensorIoError> {
    let proto = tensor_to_proto(name, t).map_err(|m| TensorIoError::new(path, m))?;
    write_atomic(path, &proto.encode_to_vec())
}

/// Writes `t` as a NumPy `.npy` file (format 1.0), atomically.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), TensorIoError> {
    let bytes = npy_encode(t).map_err(|m| TensorIoError::new(path, m))?;
    write_atomic(path, &bytes)
}

/// Writes `t` as `.pb` or `.npy` by the extension of `path`; `.npy` files
/// have no place for `name`.
pub fn write_tensor(path: &Path, name: &str, t: &Tensor) -> Result<(), TensorIoError> {
    match file_kind(path)? {
        FileKind::Pb => write_pb(path, name, t),
        FileKind::Npy => write_npy(path, t),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TensorIoError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .ok_or_else(|| TensorIoError::new(path, "cannot write: not a file path"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        // Best effort: the temporary may not exist if creating it failed.
        let _ = std::fs::remove_file(&tmp);
        TensorIoError::new(path, format!("cannot write: {e}"))
    })
}

// ---------------------------------------------------------------------------
// ONNX element types

const fn int(bits: u8) -> ElemType {
    ElemType::Int { bits, signed: true }
}

const fn uint(bits: u8) -> ElemType {
    ElemType::Int {
        bits,
        signed: false,
    }
}

/// Every ONNX data type lowbit can hold, with its lowbit element type.
const ONNX_TYPES: [(DataType, ElemType); 25] = [
    (DataType::Float, ElemType::F32),
    (DataType::Uint8, uint(8)),
    (DataType::Int8, int(8)),
    (DataType::Uint16, uint(16)),
    (DataType::Int16, int(16)),
    (DataType::Int32, int(32)),
    (DataType::Int64, int(64)),
    (DataType::Bool, uint(1)),
    (DataType::Float16, ElemType::F16),
    (DataType::Double, ElemType::Float(FloatFormat::F64)),
    (DataType::Uint32, uint(32)),
    (DataType::Uint64, uint(64)),
    (DataType::Bfloat16, ElemType::BF16),
    (
        DataType::Float8e4m3fn,
        ElemType::Float(FloatFormat::F8E4M3FN),
    ),
    (
        DataType::Float8e4m3fnuz,
        ElemType::Float(FloatFormat::F8E4M3FNUZ),
    ),
    (DataType::Float8e5m2, ElemType::Float(FloatFormat::F8E5M2)),
    (
        DataType::Float8e5m2fnuz,
        ElemType::Float(FloatFormat::F8E5M2FNUZ),
    ),
    (DataType::Uint4, uint(4)),
    (DataType::Int4, int(4)),
    (DataType::Float4e2m1, ElemType::Float(FloatFormat::F4E2M1FN)),
    (
        DataType::Float8e8m0,
        ElemType::Float(FloatFormat::F8E8M0FNU),
    ),
    (DataType::Uint2, uint(2)),
    (DataType::Int2, int(2)),
    (DataType::Float6e2m3, ElemType::Float(FloatFormat::F6E2M3FN)),
    (DataType::Float6e3m2, ElemType::Float(FloatFormat::F6E3M2FN)),
];

/// The lowbit element type of an ONNX `TensorProto.DataType` value.
pub fn elem_type_from_onnx(data_type: i32) -> Result<ElemType, String> {
    let dt =
        DataType::try_from(data_type).map_err(|_| format!("unknown ONNX data_type {data_type}"))?;
    match dt {
        DataType::Undefined => Err("data_type is UNDEFINED".into()),
        DataType::String | DataType::Complex64 | DataType::Complex128 => Err(format!(
            "{} tensors are not supported (lowbit has no such element type)",
            dt.as_str_name()
        )),
        _ => ONNX_TYPES
            .iter()
            .find(|(d, _)| *d == dt)
            .map(|(_, e)| *e)
            .ok_or_else(|| format!("{} tensors are not supported", dt.as_str_name())),
    }
}

/// The ONNX data type that stores `elem` exactly, if there is one.
pub fn onnx_data_type(elem: ElemType) -> Option<DataType> {
    ONNX_TYPES.iter().find(|(_, e)| *e == elem).map(|(d, _)| *d)
}

/// The typed repeated field that carries a data type when `raw_data` is absent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TypedField {
    Float,
    Int32,
    Int64,
    Double,
    Uint64,
}

impl TypedField {
    fn of(dt: DataType) -> TypedField {
        match dt {
            DataType::Float => TypedField::Float,
            DataType::Double => TypedField::Double,
            DataType::Int64 => TypedField::Int64,
            DataType::Uint32 | DataType::Uint64 => TypedField::Uint64,
            _ => TypedField::Int32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TypedField::Float => "float_data",
            TypedField::Int32 => "int32_data",
            TypedField::Int64 => "int64_data",
            TypedField::Double => "double_data",
            TypedField::Uint64 => "uint64_data",
        }
    }

    fn len(self, p: &TensorProto) -> usize {
        match self {
            TypedField::Float => p.float_data.len(),
            TypedField::Int32 => p.int32_data.len(),
            TypedField::Int64 => p.int64_data.len(),
            TypedField::Double => p.double_data.len(),
            TypedField::Uint64 => p.uint64_data.len(),
        }
    }

    const ALL: [TypedField; 5] = [
        TypedField::Float,
        TypedField::Int32,
        TypedField::Int64,
        TypedField::Double,
        TypedField::Uint64,
    ];
}

// ---------------------------------------------------------------------------
// TensorProto

fn decode_pb(bytes: prost::bytes::Bytes) -> Result<(Option<String>, Tensor), String> {
    tensor_from_proto(&decode_proto(bytes)?)
}

/// Decodes a `TensorProto` whose `raw_data` shares `bytes`' buffer.
fn decode_proto(bytes: prost::bytes::Bytes) -> Result<TensorProto, String> {
    TensorProto::decode(bytes).map_err(|e| format!("not a valid ONNX TensorProto ({e})"))
}

/// Converts an in-memory `TensorProto` to a tensor and its (non-empty) name.
pub fn tensor_from_proto(p: &TensorProto) -> Result<(Option<String>, Tensor), String> {
    let name = p.name.clone().filter(|n| !n.is_empty());
    let label = match &name {
        Some(n) => format!("tensor '{n}'"),
        None => "tensor".to_string(),
    };
    if p.data_location == Some(DataLocation::External as i32) || !p.external_data.is_empty() {
        let location = p
            .external_data
            .iter()
            .find(|kv| kv.key.as_deref() == Some("location"))
            .and_then(|kv| kv.value.clone())
            .map(|l| format!(" (in '{l}')"))
            .unwrap_or_default();
        return Err(format!(
            "{label} keeps its data in an external file{location}; external data is not supported for input tensors"
        ));
    }
    if p.segment.is_some() {
        return Err(format!(
            "{label} is a segment of a larger tensor; segmented tensors are not supported"
        ));
    }
    let data_type = p
        .data_type
        .ok_or_else(|| format!("{label} has no data_type"))?;
    let elem = elem_type_from_onnx(data_type).map_err(|m| format!("{label}: {m}"))?;
    let dt = DataType::try_from(data_type)
        .map_err(|_| format!("{label}: unknown ONNX data_type {data_type}"))?;
    let shape = dims_to_shape(&p.dims).map_err(|m| format!("{label}: {m}"))?;
    let n = element_count(&shape).map_err(|m| format!("{label}: {m}"))?;
    let codes = if let Some(raw) = &p.raw_data {
        if let Some(f) = TypedField::ALL.iter().find(|f| f.len(p) > 0) {
            return Err(format!("{label} has both raw_data and {}", f.name()));
        }
        codes_from_raw(dt, elem, n, raw)
    } else {
        if !p.string_data.is_empty() {
            return Err(format!(
                "{label}: string_data is only valid for STRING tensors"
            ));
        }
        let field = TypedField::of(dt);
        if let Some(f) = TypedField::ALL
            .iter()
            .find(|f| **f != field && f.len(p) > 0)
        {
            return Err(format!(
                "{label}: {} is not valid for {} tensors (expected raw_data or {})",
                f.name(),
                dt.as_str_name(),
                field.name()
            ));
        }
        codes_from_typed(p, dt, elem, n, field)
    }
    .map_err(|m| format!("{label} of type {}: {m}", dt.as_str_name()))?;
    let t = Tensor::new(elem, shape, codes).map_err(|m| format!("{label}: {m}"))?;
    Ok((name, t))
}

/// Takes a tensor's `raw_data` out of `p` as the physical bytes of an IR
/// constant of the returned type in its default layout, without decoding
/// the elements: ONNX's raw bytes are little-endian codes packed
/// low-bits-first (int4/uint4/int2/uint2/float4/float6 included), which is
/// the IR's default layout, apart from the padding bits of an odd-sized
/// sub-byte tensor, which are cleared here as the IR keeps them zero. The
/// result is byte-for-byte what [`tensor_from_proto`] followed by
/// `Tensor::to_bytes` gives.
///
/// Returns `None`, leaving `p` untouched, for anything else (typed data
/// fields, BOOL's one byte per element, external or segmented data, an
/// unknown type, a byte count that does not match): the caller then uses
/// [`tensor_from_proto`], which also reports what is wrong.
pub fn take_raw_constant(p: &mut TensorProto) -> Option<(lowbit_ir::TensorType, ConstData)> {
    let external =
        p.data_location == Some(DataLocation::External as i32) || !p.external_data.is_empty();
    if external || p.segment.is_some() || TypedField::ALL.iter().any(|f| f.len(p) > 0) {
        return None;
    }
    let dt = DataType::try_from(p.data_type?).ok()?;
    if dt == DataType::Bool {
        return None;
    }
    let elem = elem_type_from_onnx(dt as i32).ok()?;
    let shape = dims_to_shape(&p.dims).ok()?;
    let n = element_count(&shape).ok()?;
    let total_bits = n.checked_mul(elem.bits() as usize)?;
    let raw = p.raw_data.as_ref()?;
    if raw.len() != total_bits.div_ceil(8) {
        return None;
    }
    let bytes = p.raw_data.take()?;
    let tail = total_bits % 8;
    let pad = if tail == 0 { 0 } else { !((1u8 << tail) - 1) };
    let data = match bytes.last() {
        // Set padding bits: the only case that copies the bytes.
        Some(&last) if last & pad != 0 => {
            let mut v = bytes.to_vec();
            if let Some(l) = v.last_mut() {
                *l &= !pad;
            }
            ConstData::new(v)
        }
        // A slice of the decoded buffer (the model file): shared, not copied.
        _ => ConstData::from_shared(bytes),
    };
    Some((lowbit_ir::TensorType::new(shape, elem), data))
}

fn dims_to_shape(dims: &[i64]) -> Result<Vec<u64>, String> {
    dims.iter()
        .enumerate()
        .map(|(i, &d)| u64::try_from(d).map_err(|_| format!("dimension {i} is negative ({d})")))
        .collect()
}

/// The element count of a shape, as a `usize` that memory could hold.
fn element_count(shape: &[u64]) -> Result<usize, String> {
    if shape.contains(&0) {
        return Ok(0);
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))
}

fn codes_from_raw(dt: DataType, elem: ElemType, n: usize, raw: &[u8]) -> Result<Vec<u64>, String> {
    if dt == DataType::Bool {
        if raw.len() != n {
            return Err(format!(
                "raw_data is {} bytes, expected {n} (one byte per element)",
                raw.len()
            ));
        }
        return bool_codes(raw);
    }
    let bits = elem.bits() as usize;
    let need = n
        .checked_mul(bits)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| "too many elements".to_string())?;
    if raw.len() != need {
        return Err(format!(
            "raw_data is {} bytes, expected {need} for {n} elements of {bits} bits",
            raw.len()
        ));
    }
    Ok(unpack_stream(raw, n, bits as u32, PackOrder::LsbFirst))
}

fn bool_codes(bytes: &[u8]) -> Result<Vec<u64>, String> {
    bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| match b {
            0 | 1 => Ok(b as u64),
            _ => Err(format!("boolean element {i} is byte {b} (must be 0 or 1)")),
        })
        .collect()
}

/// How many elements one `int32_data` entry carries: sub-byte integer and
/// FLOAT4 types are packed into a byte per entry; everything else (FLOAT6
/// included) has one element per entry.
fn int32_elements_per_entry(dt: DataType) -> usize {
    match dt {
        DataType::Int4 | DataType::Uint4 | DataType::Float4e2m1 => 2,
        DataType::Int2 | DataType::Uint2 => 4,
        _ => 1,
    }
}

fn check_count(field: TypedField, got: usize, need: usize, n: usize) -> Result<(), String> {
    if got != need {
        return Err(format!(
            "{} has {got} entries, expected {need} for {n} elements",
            field.name()
        ));
    }
    Ok(())
}

fn codes_from_typed(
    p: &TensorProto,
    dt: DataType,
    elem: ElemType,
    n: usize,
    field: TypedField,
) -> Result<Vec<u64>, String> {
    if n > 0 && field.len(p) == 0 {
        return Err(format!(
            "has no data (neither raw_data nor {})",
            field.name()
        ));
    }
    match field {
        TypedField::Float => {
            check_count(field, p.float_data.len(), n, n)?;
            Ok(p.float_data.iter().map(|v| v.to_bits() as u64).collect())
        }
        TypedField::Double => {
            check_count(field, p.double_data.len(), n, n)?;
            Ok(p.double_data.iter().map(|v| v.to_bits()).collect())
        }
        TypedField::Int64 => {
            check_count(field, p.int64_data.len(), n, n)?;
            Ok(p.int64_data.iter().map(|&v| v as u64).collect())
        }
        TypedField::Uint64 => {
            check_count(field, p.uint64_data.len(), n, n)?;
            let mask = elem.code_mask();
            p.uint64_data
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v & !mask != 0 {
                        Err(format!("uint64_data[{i}] = {v} is out of range"))
                    } else {
                        Ok(v)
                    }
                })
                .collect()
        }
        TypedField::Int32 => {
            let per = int32_elements_per_entry(dt);
            check_count(field, p.int32_data.len(), n.div_ceil(per), n)?;
            if per > 1 {
                let bytes = p
                    .int32_data
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        u8::try_from(v).map_err(|_| {
                            format!("int32_data[{i}] = {v} is not a byte of packed elements")
                        })
                    })
                    .collect::<Result<Vec<u8>, String>>()?;
                return Ok(unpack_stream(&bytes, n, elem.bits(), PackOrder::LsbFirst));
            }
            // Signed integers are stored by value, every other type by its
            // unsigned bit pattern.
            let (lo, hi) = match elem {
                ElemType::Int { signed: true, .. } => elem.int_range().unwrap_or((0, 0)),
                _ => (0, elem.code_mask() as i128),
            };
            p.int32_data
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if (v as i128) < lo || (v as i128) > hi {
                        Err(format!(
                            "int32_data[{i}] = {v} is out of range [{lo}, {hi}]"
                        ))
                    } else {
                        Ok((v as i64 as u64) & elem.code_mask())
                    }
                })
                .collect()
        }
    }
}

/// Converts a tensor to a `TensorProto` with `raw_data`; `name` is omitted
/// when empty.
pub fn tensor_to_proto(name: &str, t: &Tensor) -> Result<TensorProto, String> {
    let dt = onnx_data_type(t.elem).ok_or_else(|| {
        format!(
            "element type {} has no ONNX TensorProto data type; ONNX stores only f16, bf16, f32, f64, \
             the OCP fp8/fp6/fp4 formats, f8E8M0FNU, i2/i4/i8..i64, u1 (BOOL), u2/u4/u8..u64",
            t.elem
        )
    })?;
    check_consistent(t)?;
    let mask = t.elem.code_mask();
    let raw = if dt == DataType::Bool {
        t.codes.iter().map(|&c| (c & mask) as u8).collect()
    } else {
        let codes: Vec<u64> = t.codes.iter().map(|&c| c & mask).collect();
        pack_stream(&codes, t.elem.bits(), PackOrder::LsbFirst)
    };
    let dims = t
        .shape
        .iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| format!("dimension {d} does not fit in an ONNX int64"))
        })
        .collect::<Result<Vec<i64>, String>>()?;
    Ok(TensorProto {
        dims,
        data_type: Some(dt as i32),
        name: (!name.is_empty()).then(|| name.to_string()),
        raw_data: Some(raw.into()),
        ..TensorProto::default()
    })
}

/// `Tensor`'s fields are public, so a tensor built by hand may disagree with
/// its shape; refuse to write such a file rather than a corrupt one.
fn check_consistent(t: &Tensor) -> Result<(), String> {
    let n = element_count(&t.shape)?;
    if n != t.codes.len() {
        return Err(format!(
            "tensor of shape {:?} has {} element codes, expected {n}",
            t.shape,
            t.codes.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// NumPy .npy

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// NumPy dtype code (without byte order) and item size for an element type.
fn npy_dtype(elem: ElemType) -> Option<(&'static str, usize)> {
    Some(match elem {
        ElemType::Float(f) if f == FloatFormat::F16 => ("f2", 2),
        ElemType::Float(f) if f == FloatFormat::F32 => ("f4", 4),
        ElemType::Float(f) if f == FloatFormat::F64 => ("f8", 8),
        ElemType::Int {
            bits: 1,
            signed: false,
        } => ("b1", 1),
        ElemType::Int { bits, signed } if matches!(bits, 8 | 16 | 32 | 64) => {
            let code = match (signed, bits) {
                (true, 8) => "i1",
                (true, 16) => "i2",
                (true, 32) => "i4",
                (true, _) => "i8",
                (false, 8) => "u1",
                (false, 16) => "u2",
                (false, 32) => "u4",
                (false, _) => "u8",
            };
            (code, bits as usize / 8)
        }
        _ => return None,
    })
}

fn elem_from_npy_code(code: &str) -> Option<(ElemType, usize)> {
    Some(match code {
        "f2" => (ElemType::F16, 2),
        "f4" => (ElemType::F32, 4),
        "f8" => (ElemType::Float(FloatFormat::F64), 8),
        "i1" => (int(8), 1),
        "i2" => (int(16), 2),
        "i4" => (int(32), 4),
        "i8" => (int(64), 8),
        "u1" => (uint(8), 1),
        "u2" => (uint(16), 2),
        "u4" => (uint(32), 4),
        "u8" => (uint(64), 8),
        "b1" => (uint(1), 1),
        _ => return None,
    })
}

fn npy_encode(t: &Tensor) -> Result<Vec<u8>, String> {
    let (code, size) = npy_dtype(t.elem).ok_or_else(|| {
        format!(
            "element type {} has no NumPy dtype (.npy holds f16, f32, f64, i8..i64, u8..u64 and u1 \
             as bool); write a .pb TensorProto instead",
            t.elem
        )
    })?;
    check_consistent(t)?;
    let order = if size == 1 { '|' } else { '<' };
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header =
        format!("{{'descr': '{order}{code}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so the data starts on a 64-byte boundary, as NumPy does; the header
    // ends with a newline.
    let prefix = NPY_MAGIC.len() + 2 + 2;
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - prefix - header.len() - 1));
    header.push('\n');
    let hlen = u16::try_from(header.len())
        .map_err(|_| "npy header is too long (rank too large)".to_string())?;
    let mut out = Vec::with_capacity(total + t.codes.len() * size);
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&hlen.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    let mask = t.elem.code_mask();
    for &c in &t.codes {
        out.extend_from_slice(&(c & mask).to_le_bytes()[..size]);
    }
    Ok(out)
}

fn npy_decode(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.len() < 10 || !bytes.starts_with(NPY_MAGIC) {
        return Err("not a NumPy .npy file (bad magic string)".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            let b = bytes
                .get(8..12)
                .ok_or("npy file is truncated in its header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        _ => return Err(format!("unsupported npy format version {major}.{minor}")),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or("npy file is truncated in its header")?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| "npy header is not valid text".to_string())?;
    let h = parse_npy_header(header).map_err(|m| format!("bad npy header: {m}"))?;
    let (elem, size, big_endian) = npy_descr(&h.descr)?;
    if h.fortran_order {
        return Err("Fortran-order arrays are not supported; save the array in C order".into());
    }
    let n = element_count(&h.shape)?;
    let data = &bytes[end..];
    let need = n
        .checked_mul(size)
        .ok_or("npy shape has too many elements")?;
    if data.len() != need {
        return Err(format!(
            "npy data is {} bytes, expected {need} for shape {:?} of dtype '{}'",
            data.len(),
            h.shape,
            h.descr
        ));
    }
    let codes = if elem == uint(1) {
        bool_codes(data)?
    } else {
        data.chunks_exact(size)
            .map(|chunk| {
                let mut buf = [0u8; 8];
                buf[..size].copy_from_slice(chunk);
                if big_endian {
                    buf[..size].reverse();
                }
                u64::from_le_bytes(buf)
            })
            .collect()
    };
    Tensor::new(elem, h.shape, codes)
}

/// Element type, item size and byte order (true = big endian) of a descr.
fn npy_descr(descr: &str) -> Result<(ElemType, usize, bool), String> {
    let (order, code) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('=', descr),
    };
    if code.starts_with('V') {
        return Err(format!(
            "npy dtype '{descr}' is an anonymous void type (how NumPy saves ml_dtypes arrays such \
             as bfloat16, float8 or int4): its element type is unknown; use a .pb TensorProto for \
             these types"
        ));
    }
    let (elem, size) = elem_from_npy_code(code).ok_or_else(|| {
        format!("unsupported npy dtype '{descr}' (supported: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1)")
    })?;
    let big_endian = match order {
        '>' => true,
        '<' => false,
        _ if size == 1 => false,
        // A file's "native" order is the writer's, which the file does not record.
        _ => return Err(format!("npy dtype '{descr}' does not state its byte order")),
    };
    Ok((elem, size, big_endian))
}

struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

enum PyValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

/// Parses the Python dict literal of an npy header: string keys; string,
/// bool and tuple-of-int values (the only forms NumPy writes for plain arrays).
fn parse_npy_header(text: &str) -> Result<NpyHeader, String> {
    let mut p = PyLit {
        s: text.trim_end_matches(['\n', ' ', '\0']).as_bytes(),
        i: 0,
    };
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let value = p.value()?;
        match (key.as_str(), value) {
            ("descr", PyValue::Str(s)) => descr = Some(s),
            ("fortran_order", PyValue::Bool(b)) => fortran = Some(b),
            ("shape", PyValue::Tuple(t)) => shape = Some(t),
            ("descr" | "fortran_order" | "shape", _) => {
                return Err(format!("'{key}' has a value of the wrong kind"))
            }
            _ => return Err(format!("unexpected key '{key}'")),
        }
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            break;
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err("text after the closing '}'".into());
    }
    Ok(NpyHeader {
        descr: descr.ok_or("missing 'descr'")?,
        fortran_order: fortran.ok_or("missing 'fortran_order'")?,
        shape: shape.ok_or("missing 'shape'")?,
    })
}

struct PyLit<'a> {
    s: &'a [u8],
    i: usize,
}

impl PyLit<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at offset {}", c as char, self.i))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a string at offset {}", self.i)),
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == quote {
                let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                return Ok(s);
            }
            if c == b'\\' {
                return Err("escaped characters in strings are not supported".into());
            }
            self.i += 1;
        }
        Err("unterminated string".into())
    }

    fn value(&mut self) -> Result<PyValue, String> {
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(PyValue::Str),
            Some(b'(') => self.tuple().map(PyValue::Tuple),
            Some(b'[') => Err("structured dtypes are not supported".into()),
            _ if self.s[self.i..].starts_with(b"True") => {
                self.i += 4;
                Ok(PyValue::Bool(true))
            }
            _ if self.s[self.i..].starts_with(b"False") => {
                self.i += 5;
                Ok(PyValue::Bool(false))
            }
            _ => Err(format!("unexpected value at offset {}", self.i)),
        }
    }

    fn tuple(&mut self) -> Result<Vec<u64>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Ok(dims);
            }
            if self.peek() == Some(b'-') {
                return Err(format!("shape dimension {} is negative", dims.len()));
            }
            let start = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            let d: u64 = digits
                .parse()
                .map_err(|_| format!("expected a dimension at offset {start}"))?;
            // Python 2 era files may mark long integers with an `L` suffix.
            self.eat(b'L');
            dims.push(d);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.pb` input's `raw_data` is a slice of the file buffer, not a
    /// copy of it.
    #[test]
    fn pb_raw_data_shares_the_file_buffer() {
        let t = Tensor::new(
            ElemType::F32,
            vec![3, 5],
            (0..15u64).map(|i| i << 20).collect(),
        )
        .unwrap();
        let buf = tensor_to_proto("x", &t).unwrap().encode_to_vec();
        let bytes = prost::bytes::Bytes::from(buf);
        let range = bytes.as_ptr_range();
        let p = decode_proto(bytes.clone()).unwrap();
        let raw = p.raw_data.as_ref().expect("raw_data");
        assert_eq!(raw.len(), 60);
        assert!(range.contains(&raw.as_ptr()), "raw_data was copied");
        assert_eq!(decode_pb(bytes).unwrap(), (Some("x".to_string()), t));
    }

    /// The direct-bytes path ([`take_raw_constant`]) gives exactly the
    /// bytes and type that decoding to a `Tensor` and packing it in the
    /// default layout gives, for every raw-data type, odd element counts
    /// and set padding bits included.
    #[test]
    fn raw_constants_match_decoded_tensors() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        };
        for (dt, elem) in ONNX_TYPES {
            for dims in [
                vec![1i64],
                vec![3],
                vec![5],
                vec![3, 3],
                vec![2, 7],
                vec![0, 4],
            ] {
                let n: i64 = dims.iter().product();
                let nbytes = (n as usize * elem.bits() as usize).div_ceil(8);
                // Random bytes: padding bits of odd-sized sub-byte tensors
                // are often set, which the IR must clear.
                let raw: Vec<u8> = (0..nbytes).map(|_| next()).collect();
                let p = TensorProto {
                    dims: dims.clone(),
                    data_type: Some(dt as i32),
                    raw_data: Some(raw.into()),
                    ..TensorProto::default()
                };
                let mut q = p.clone();
                let got = take_raw_constant(&mut q);
                if dt == DataType::Bool {
                    // One byte per element: decoded, never taken raw.
                    assert!(got.is_none());
                    assert_eq!(q, p);
                    continue;
                }
                let (ty, data) = got.expect("raw data of the right size is taken");
                assert!(q.raw_data.is_none(), "{dt:?}: the bytes were moved out");
                let (_, t) = tensor_from_proto(&p).expect("valid tensor");
                assert_eq!(ty, t.ty(), "{dt:?} {dims:?}");
                assert_eq!(
                    data.bytes(),
                    t.to_bytes(&lowbit_ir::Layout::default()),
                    "{dt:?} {dims:?}"
                );
            }
        }
    }

    /// Anything the direct path cannot take as it is stays for
    /// `tensor_from_proto`, untouched.
    #[test]
    fn raw_constants_leave_other_protos_alone() {
        let base = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::Int4 as i32),
            raw_data: Some(vec![0x21, 0x03].into()),
            ..TensorProto::default()
        };
        let wrong_size = TensorProto {
            raw_data: Some(vec![0x21].into()),
            ..base.clone()
        };
        let typed_too = TensorProto {
            int32_data: vec![1],
            ..base.clone()
        };
        let external = TensorProto {
            data_location: Some(DataLocation::External as i32),
            ..base.clone()
        };
        let no_type = TensorProto {
            data_type: None,
            ..base.clone()
        };
        for p in [wrong_size, typed_too, external, no_type] {
            let mut q = p.clone();
            assert!(take_raw_constant(&mut q).is_none(), "{p:?}");
            assert_eq!(q, p);
        }
        let mut q = base.clone();
        let (_, data) = take_raw_constant(&mut q).expect("taken");
        assert_eq!(data.bytes(), [0x21, 0x03]);
    }

    fn t(elem: &str, shape: &[u64], codes: &[u64]) -> Tensor {
        Tensor::new(elem.parse().unwrap(), shape.to_vec(), codes.to_vec()).unwrap()
    }

    fn proto(dt: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dt as i32),
            ..TensorProto::default()
        }
    }

    fn err_of(p: &TensorProto) -> String {
        match tensor_from_proto(p) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn int4_raw_is_low_nibble_first() {
        let x = t("i4", &[3], &[0x1, 0xf, 0x7]);
        let p = tensor_to_proto("w", &x).unwrap();
        assert_eq!(p.raw_data.as_deref(), Some(&[0xf1u8, 0x07][..]));
        assert_eq!(p.data_type, Some(DataType::Int4 as i32));
        assert_eq!(tensor_from_proto(&p).unwrap(), (Some("w".into()), x));
    }

    #[test]
    fn float6_raw_matches_onnx_bit_order() {
        // byte0 = x0 | (x1 & 3) << 6; byte1 = x1 >> 2 | (x2 & 0xf) << 4; byte2 = x2 >> 4 | x3 << 2
        let (x0, x1, x2, x3) = (0x2a, 0x15, 0x3c, 0x03);
        let x = t("f6E2M3FN", &[4], &[x0, x1, x2, x3]);
        let p = tensor_to_proto("", &x).unwrap();
        let want = vec![
            (x0 | (x1 & 3) << 6) as u8,
            (x1 >> 2 | (x2 & 0xf) << 4) as u8,
            (x2 >> 4 | x3 << 2) as u8,
        ];
        assert_eq!(p.raw_data, Some(want.into()));
        assert_eq!(p.name, None);
    }

    #[test]
    fn bool_is_one_byte_per_element() {
        let x = t("u1", &[3], &[1, 0, 1]);
        let p = tensor_to_proto("b", &x).unwrap();
        assert_eq!(p.raw_data.as_deref(), Some(&[1u8, 0, 1][..]));
        let mut bad = p.clone();
        bad.raw_data = Some(vec![1, 2, 0].into());
        assert!(err_of(&bad).contains("boolean element 1 is byte 2"));
    }

    #[test]
    fn typed_fields_decode() {
        let mut p = proto(DataType::Int8, &[3]);
        p.int32_data = vec![-3, 0, 127];
        let (_, x) = tensor_from_proto(&p).unwrap();
        assert_eq!(x.to_i128().unwrap(), vec![-3, 0, 127]);

        let mut p = proto(DataType::Uint4, &[3]);
        p.int32_data = vec![0x21, 0x0f];
        let (_, x) = tensor_from_proto(&p).unwrap();
        assert_eq!(x.codes, vec![1, 2, 0xf]);

        let mut p = proto(DataType::Int2, &[5]);
        p.int32_data = vec![0b1110_0100, 0b11];
        let (_, x) = tensor_from_proto(&p).unwrap();
        assert_eq!(x.to_i128().unwrap(), vec![0, 1, -2, -1, -1]);

        let mut p = proto(DataType::Float16, &[2]);
        p.int32_data = vec![0x3c00, 0xc000];
        let (_, x) = tensor_from_proto(&p).unwrap();
        assert_eq!(x.to_f64(), vec![1.0, -2.0]);

        let mut p = proto(DataType::Uint32, &[1]);
        p.uint64_data = vec![u32::MAX as u64];
        assert_eq!(
            tensor_from_proto(&p).unwrap().1.codes,
            vec![u32::MAX as u64]
        );

        let mut p = proto(DataType::Int64, &[2]);
        p.int64_data = vec![i64::MIN, -1];
        let (_, x) = tensor_from_proto(&p).unwrap();
        assert_eq!(x.to_i128().unwrap(), vec![i64::MIN as i128, -1]);

        let mut p = proto(DataType::Double, &[1]);
        p.double_data = vec![-0.25];
        assert_eq!(tensor_from_proto(&p).unwrap().1.to_f64(), vec![-0.25]);

        let mut p = proto(DataType::Float, &[1]);
        p.float_data = vec![1.5];
        assert_eq!(tensor_from_proto(&p).unwrap().1.to_f64(), vec![1.5]);
    }

    #[test]
    fn malformed_protos_are_errors() {
        let mut p = proto(DataType::Float, &[2, -1]);
        p.raw_data = Some(vec![].into());
        assert!(err_of(&p).contains("dimension 1 is negative (-1)"));

        let mut p = proto(DataType::Float, &[3]);
        p.raw_data = Some(vec![0; 8].into());
        assert!(err_of(&p).contains("raw_data is 8 bytes, expected 12"));

        let mut p = proto(DataType::Float, &[2]);
        p.float_data = vec![1.0];
        assert!(err_of(&p).contains("float_data has 1 entries, expected 2"));

        let mut p = proto(DataType::Float, &[1]);
        p.int32_data = vec![1];
        assert!(err_of(&p).contains("int32_data is not valid for FLOAT tensors"));

        let mut p = proto(DataType::Float, &[1]);
        p.raw_data = Some(vec![0; 4].into());
        p.float_data = vec![1.0];
        assert!(err_of(&p).contains("both raw_data and float_data"));

        let p = proto(DataType::Float, &[2]);
        assert!(err_of(&p).contains("has no data"));

        let mut p = proto(DataType::Int8, &[1]);
        p.int32_data = vec![200];
        assert!(err_of(&p).contains("int32_data[0] = 200 is out of range [-128, 127]"));

        let mut p = proto(DataType::Int4, &[2]);
        p.int32_data = vec![256];
        assert!(err_of(&p).contains("not a byte of packed elements"));

        let mut p = proto(DataType::String, &[1]);
        p.string_data = vec![b"x".to_vec()];
        assert!(err_of(&p).contains("STRING tensors are not supported"));

        let mut p = proto(DataType::Float, &[1]);
        p.data_type = Some(99);
        assert!(err_of(&p).contains("unknown ONNX data_type 99"));

        let mut p = proto(DataType::Float, &[1]);
        p.data_type = None;
        assert!(err_of(&p).contains("no data_type"));

        let mut p = proto(DataType::Float, &[i64::MAX, i64::MAX]);
        p.raw_data = Some(vec![].into());
        assert!(err_of(&p).contains("too many elements"));
    }

    #[test]
    fn external_data_is_rejected_with_its_location() {
        let mut p = proto(DataType::Float, &[4]);
        p.name = Some("w".into());
        p.data_location = Some(DataLocation::External as i32);
        p.external_data = vec![crate::proto::onnx::StringStringEntryProto {
            key: Some("location".into()),
            value: Some("weights.bin".into()),
        }];
        let e = err_of(&p);
        assert!(e.contains("tensor 'w'"), "{e}");
        assert!(e.contains("'weights.bin'"), "{e}");
        assert!(
            e.contains("external data is not supported for input tensors"),
            "{e}"
        );
    }

    #[test]
    fn unrepresentable_types_are_named() {
        for ty in ["i3", "b1", "tf32", "fE3M4", "i1", "u7"] {
            let elem: ElemType = ty.parse().unwrap();
            let x = Tensor::new(elem, vec![1], vec![0]).unwrap();
            let e = tensor_to_proto("", &x).unwrap_err();
            assert!(e.contains(&format!("element type {ty} has no ONNX")), "{e}");
        }
        let x = t("bf16", &[1], &[0]);
        assert!(npy_encode(&x)
            .unwrap_err()
            .contains("bf16 has no NumPy dtype"));
    }

    #[test]
    fn inconsistent_tensor_is_not_written() {
        let x = Tensor {
            elem: ElemType::F32,
            shape: vec![2, 2],
            codes: vec![0; 3],
        };
        assert!(tensor_to_proto("", &x)
            .unwrap_err()
            .contains("3 element codes, expected 4"));
        assert!(npy_encode(&x)
            .unwrap_err()
            .contains("3 element codes, expected 4"));
    }

    fn npy_with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = NPY_MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn npy_header_is_numpy_shaped() {
        fn header(b: &[u8]) -> &str {
            let end = 10 + u16::from_le_bytes([b[8], b[9]]) as usize;
            assert_eq!(end % 64, 0, "data must start 64-byte aligned");
            std::str::from_utf8(&b[10..end]).unwrap()
        }
        let b = npy_encode(&t("f32", &[2, 3], &[0; 6])).unwrap();
        let h = header(&b);
        assert!(h.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(h.ends_with(" \n"));
        assert_eq!(b.len(), 128 + 24);
        let s = npy_encode(&t("i8", &[], &[5])).unwrap();
        assert!(header(&s).contains("'descr': '|i1'"));
        assert!(header(&s).contains("'shape': ()"));
        let v = npy_encode(&t("u1", &[4], &[1, 0, 0, 1])).unwrap();
        assert!(header(&v).contains("'descr': '|b1'"));
        assert!(header(&v).contains("'shape': (4,)"));
    }

    #[test]
    fn npy_big_endian_and_variants() {
        let b = npy_with_header(
            "{\"descr\":\">i2\",\"shape\":(2L,),\"fortran_order\":False}\n",
            &[0xff, 0xfe, 0x00, 0x07],
        );
        let x = npy_decode(&b).unwrap();
        assert_eq!(x.to_i128().unwrap(), vec![-2, 7]);
        let b = npy_with_header(
            "{'descr': '|i1', 'fortran_order': False, 'shape': (1, 1, 2), }",
            &[0x80, 1],
        );
        assert_eq!(npy_decode(&b).unwrap().shape, vec![1, 1, 2]);
    }

    #[test]
    fn malformed_npy_is_an_error() {
        let cases: [(&str, &[u8], &str); 10] = [
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                &[0; 16],
                "Fortran-order",
            ),
            (
                "{'descr': '<V2', 'fortran_order': False, 'shape': (1,), }",
                &[0; 2],
                "anonymous void",
            ),
            (
                "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                &[0; 8],
                "unsupported npy dtype '<c8'",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
                &[0; 8],
                "npy data is 8 bytes, expected 12",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                &[],
                "negative",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False}",
                &[],
                "missing 'shape'",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': True}",
                &[0; 4],
                "unexpected key 'x'",
            ),
            (
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
                "structured",
            ),
            (
                "{'descr': 'f4', 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
                "byte order",
            ),
            (
                "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }",
                &[1, 3],
                "boolean element 1",
            ),
        ];
        for (header, data, want) in cases {
            let e = npy_decode(&npy_with_header(header, data)).unwrap_err();
            assert!(e.contains(want), "{header}: {e}");
        }
        assert!(npy_decode(b"\x93NUMPY\x01\x00\xff\x00{")
            .unwrap_err()
            .contains("truncated"));
        assert!(npy_decode(b"PK\x03\x04 not npy")
            .unwrap_err()
            .contains("bad magic"));
        assert!(npy_decode(b"\x93NUMPY\x09\x00\x00\x00")
            .unwrap_err()
            .contains("version 9.0"));
    }

    #[test]
    fn type_table_round_trips() {
        for code in 0..40 {
            if let Ok(elem) = elem_type_from_onnx(code) {
                assert_eq!(onnx_data_type(elem).map(|d| d as i32), Some(code), "{elem}");
            }
        }
        assert!(elem_type_from_onnx(DataType::Complex64 as i32).is_err());
    }
}
