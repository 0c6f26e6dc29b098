//! One function per ONNX operator: checks the node's inputs and
//! attributes, computes the result types (static shapes) and emits lowbit
//! ops. Errors are plain messages; the caller prefixes the node.
//!
//! Mapping notes (the ONNX spec is the reference for each):
//! * `QuantizeLinear`/`DequantizeLinear` map to `quantize`/`dequantize`
//!   with the granularity the scale's shape and `axis`/`block_size` give;
//!   integer outputs always saturate, float outputs (float8/float4) follow
//!   `saturate`. The IR's quotient `x / y_scale` is rounded to f32 for
//!   f32/f16/bf16 operands, which is onnxruntime's f32 division (see
//!   `lowbit-interp`), so codes match it at ties for any scale. A float
//!   (float8/float4) `y_zero_point` only sets the output type: its value is
//!   dropped, as onnxruntime and the ONNX reference implementation ignore
//!   it. A `QuantizeLinear` on int32 input (opsets 10–19; onnxruntime has
//!   no kernel for it) is cast to f64 first, so it divides in f64.
//! * `Cast`: float → int truncates toward zero (then wraps, as C casts do on
//!   the platforms onnxruntime runs on; out of range is undefined in the
//!   spec); int → int wraps; to float8 the `saturate` attribute applies;
//!   to float8e8m0 `round_mode` too; other float targets round to nearest
//!   even and overflow to infinity. To BOOL (`u1`): `x != 0` with NaN
//!   true, built from saturating casts (see `cast_to_bool`).
//! * `MatMulInteger`/`ConvInteger`/`QLinearMatMul`: operands minus their
//!   zero points in i32, then an exact integer `matmul`/`conv2d`;
//!   `QLinearMatMul` then rescales in f32 exactly as onnxruntime does
//!   (`f32(acc) · f32(f32(a_scale · b_scale) / y_scale)`, rounded half to
//!   even, plus `y_zero_point`, saturated), with `a`'s scale and zero point
//!   per tensor or per row and `b`'s per tensor or per column.
//! * `LayerNormalization`'s optional `Mean`/`InvStdDev` outputs are
//!   computed beside the fused `layer_norm` (see `norm_stats`), in f64 and
//!   rounded to `stash_type`.
//! * `DynamicQuantizeLinear` is expanded into `reduce_min`/`reduce_max`,
//!   f32 arithmetic and `quantize`, as onnxruntime computes it: `y_scale =
//!   (max(x, 0) − min(x, 0)) / 255` in f32, except that a zero range (all
//!   zeros) gives scale 1 where the spec's formula would divide by zero;
//!   `y_zero_point = saturate(round(−min / y_scale))` with an f32 quotient;
//!   `y` quantizes with the f32 quotient `x / y_scale`. Bit-exact against
//!   onnxruntime except for NaN inputs (its min/max skip NaN; here NaN
//!   propagates into the scale).
//! * `Mul(Cast(q), scale)` and `Mul(Cast(q) - zp, scale)` with `q` a
//!   low-bit constant (a weight dequantized by hand) become `dequantize q,
//!   scale[, zp]` when the scale and zero point are per-tensor or per-axis
//!   constants and the zero point is integer-valued in `q`'s range
//!   (bit-exact); any other `Cast` of a low-bit constant to float is kept
//!   and noted for `lowbit explain`.
//! * `MatMulNBits` (com.microsoft): the packed weight becomes a `u<bits>`
//!   constant of shape `[K, N]` with `[ceil(K/block), N]` scales and zero
//!   points, then `dequantize {axis = 0, block_size}` and `matmul`; the
//!   weight stays packed. Float zero points that are integers in range
//!   become `u<bits>` codes; fractional ones make the codes `cast` to the
//!   scales' type first (noted on the cast, dequantize and matmul: no
//!   low-bit kernel applies). A non-trivial `g_idx` expands scales and zero
//!   points to one row per row of K (`block_size` 1).

use super::{Importer, Val};
use crate::proto::onnx::{AttributeProto, NodeProto};
use crate::tensor_io::{elem_type_from_onnx, tensor_from_proto};
use lowbit_ir::verifier::broadcast_shapes;
use lowbit_ir::{
    BinaryOp, ElemType, FloatFormat, Granularity, OpKind, Overflow, ReduceOp, Rounding, Tensor,
    TensorType, UnaryOp,
};
use std::rc::Rc;

type R<T> = Result<T, String>;

/// ONNX's BOOL.
const U1: ElemType = ElemType::Int {
    bits: 1,
    signed: false,
};

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).and_then(|a| a.i)
}

fn attr_f(node: &NodeProto, name: &str) -> Option<f32> {
    attr(node, name).and_then(|a| a.f)
}

fn attr_s(node: &NodeProto, name: &str) -> R<Option<String>> {
    attr(node, name)
        .and_then(|a| a.s.clone())
        .map(|s| String::from_utf8(s).map_err(|_| format!("attribute '{name}' is not UTF-8")))
        .transpose()
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// A normalized axis in `0..rank`.
fn axis(a: i64, rank: usize, what: &str) -> R<usize> {
    let r = rank as i64;
    let n = if a < 0 { a + r } else { a };
    if (0..r).contains(&n) {
        Ok(n as usize)
    } else {
        Err(format!("{what} {a} is out of range for rank {rank}"))
    }
}

fn fmt_shape(s: &[u64]) -> String {
    let v: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", v.join(", "))
}

/// The values of a known integer tensor (shape inputs).
fn const_ints(v: &Val, what: &str) -> R<Vec<i64>> {
    let t = v.konst().ok_or_else(|| {
        format!("{what} must be a constant (an initializer or computed from constants): lowbit needs static shapes")
    })?;
    let ints = t
        .to_i128()
        .ok_or_else(|| format!("{what} must be an integer tensor, got {}", t.elem))?;
    ints.into_iter()
        .map(|i| i64::try_from(i).map_err(|_| format!("{what} value {i} does not fit in int64")))
        .collect()
}

/// The element count of a shape, or an error when it overflows.
fn checked_product(dims: &[u64]) -> R<u64> {
    dims.iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("the element count of {} overflows", fmt_shape(dims)))
}

fn i64_tensor(values: &[i64]) -> Tensor {
    Tensor {
        elem: ElemType::I64,
        shape: vec![values.len() as u64],
        codes: values.iter().map(|&v| v as u64).collect(),
    }
}

fn scalar(elem: ElemType, v: f64) -> Tensor {
    Tensor {
        elem,
        shape: vec![],
        codes: vec![elem.encode(v, Rounding::NearestEven, false)],
    }
}

fn same_float_elem(a: &Val, b: &Val, what: &str) -> R<()> {
    if a.ty.elem != b.ty.elem {
        return Err(format!(
            "{what}: element types differ ({} and {})",
            a.ty.elem, b.ty.elem
        ));
    }
    Ok(())
}

fn want_float(v: &Val, what: &str) -> R<()> {
    if v.ty.elem.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be a float tensor, got {}", v.ty.elem))
    }
}

/// Lowers one node; returns its outputs in order.
pub(crate) fn lower(
    im: &mut Importer,
    node: &NodeProto,
    op_type: &str,
    domain: &str,
    version: i64,
) -> R<Vec<Val>> {
    let one = |v: Val| Ok(vec![v]);
    if domain == "com.microsoft" {
        return match op_type {
            "MatMulNBits" => one(matmul_nbits(im, node)?),
            _ => Err("unsupported operator".into()),
        };
    }
    match op_type {
        "Identity" => one(im.input(node, 0)?),
        "Constant" => one(constant_node(im, node)?),
        "Shape" => one(shape_node(im, node)?),
        "Reshape" => one(reshape_node(im, node)?),
        "Flatten" => {
            let x = im.input(node, 0)?;
            let a = attr_i(node, "axis").unwrap_or(1);
            let r = x.ty.rank() as i64;
            let a = if a < 0 { a + r } else { a };
            if !(0..=r).contains(&a) {
                return Err(format!("axis {a} is out of range for rank {r}"));
            }
            let outer = checked_product(&x.ty.shape[..a as usize])?;
            let inner = checked_product(&x.ty.shape[a as usize..])?;
            one(reshape_to(im, &x, vec![outer, inner])?)
        }
        "Squeeze" | "Unsqueeze" => one(squeeze_node(im, node, op_type == "Unsqueeze")?),
        "Transpose" => {
            let x = im.input(node, 0)?;
            let rank = x.ty.rank();
            let perm = attr_ints(node, "perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
            let mut seen = vec![false; rank];
            let mut p = Vec::with_capacity(rank);
            for &a in &perm {
                let a = axis(a, rank, "perm entry")?;
                if std::mem::replace(&mut seen[a], true) {
                    return Err(format!("perm {perm:?} repeats axis {a}"));
                }
                p.push(a as u32);
            }
            if p.len() != rank {
                return Err(format!("perm {perm:?} does not list all {rank} axes"));
            }
            let shape: Vec<u64> = p.iter().map(|&a| x.ty.shape[a as usize]).collect();
            let ty = TensorType::new(shape, x.ty.elem);
            one(im.emit(OpKind::Transpose { perm: p }, &[&x], ty)?)
        }
        "Concat" => {
            let n = node.input.len();
            let mut xs = Vec::with_capacity(n);
            for i in 0..n {
                xs.push(im.input(node, i)?);
            }
            let first = xs.first().ok_or("Concat needs at least one input")?;
            let a = axis(
                attr_i(node, "axis").ok_or("missing attribute 'axis'")?,
                first.ty.rank(),
                "axis",
            )?;
            let mut shape = first.ty.shape.clone();
            for (i, x) in xs.iter().enumerate().skip(1) {
                let ok = x.ty.elem == first.ty.elem
                    && x.ty.rank() == first.ty.rank()
                    && (0..x.ty.rank()).all(|d| d == a || x.ty.shape[d] == first.ty.shape[d]);
                if !ok {
                    return Err(format!(
                        "shape mismatch: input #{i} ({}) cannot be joined to input #0 ({}) along axis {a}",
                        x.ty, first.ty
                    ));
                }
                shape[a] = shape[a]
                    .checked_add(x.ty.shape[a])
                    .ok_or("the joined dimension overflows")?;
            }
            if xs.len() == 1 {
                return one(xs.remove(0));
            }
            let ty = TensorType::new(shape, first.ty.elem);
            let refs: Vec<&Val> = xs.iter().collect();
            one(im.emit(OpKind::Concat { axis: a as i64 }, &refs, ty)?)
        }
        "Slice" => one(slice_node(im, node)?),
        "Gather" => {
            let (data, idx) = (im.input(node, 0)?, im.input(node, 1)?);
            let a = axis(attr_i(node, "axis").unwrap_or(0), data.ty.rank(), "axis")?;
            if !idx.ty.elem.is_int() {
                return Err(format!(
                    "indices must be int32 or int64, got {}",
                    idx.ty.elem
                ));
            }
            let mut shape = data.ty.shape[..a].to_vec();
            shape.extend(&idx.ty.shape);
            shape.extend(&data.ty.shape[a + 1..]);
            let ty = TensorType::new(shape, data.ty.elem);
            one(im.emit(OpKind::Gather { axis: a as i64 }, &[&data, &idx], ty)?)
        }
        "Expand" => {
            let x = im.input(node, 0)?;
            let s = const_ints(&im.input(node, 1)?, "the shape input")?;
            let s: Vec<u64> = s
                .iter()
                .map(|&d| {
                    u64::try_from(d).map_err(|_| format!("negative dim {d} in the shape input"))
                })
                .collect::<R<_>>()?;
            let out = broadcast_shapes(&x.ty.shape, &s).ok_or_else(|| {
                format!(
                    "shape mismatch: {} does not broadcast with {}",
                    fmt_shape(&x.ty.shape),
                    fmt_shape(&s)
                )
            })?;
            if out == x.ty.shape {
                return one(x);
            }
            let ty = TensorType::new(out, x.ty.elem);
            one(im.emit(OpKind::Broadcast, &[&x], ty)?)
        }
        "Cast" => {
            let x = im.input(node, 0)?;
            let to = attr_i(node, "to").ok_or("missing attribute 'to'")?;
            let elem = elem_type_from_onnx(to as i32)?;
            let y = cast(im, node, &x, elem)?;
            note_low_bit_cast(im, node, &x, &y);
            one(y)
        }
        "CastLike" => {
            let x = im.input(node, 0)?;
            let like = im.input(node, 1)?;
            let y = cast(im, node, &x, like.ty.elem)?;
            note_low_bit_cast(im, node, &x, &y);
            one(y)
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            let op = match op_type {
                "Add" => BinaryOp::Add,
                "Sub" => BinaryOp::Sub,
                "Mul" => BinaryOp::Mul,
                _ => BinaryOp::Div,
            };
            let (a, b) = (im.input(node, 0)?, im.input(node, 1)?);
            if op == BinaryOp::Mul {
                if let Some(d) = scaled_cast(im, &a, &b)?.or(scaled_cast(im, &b, &a)?) {
                    return one(d);
                }
            }
            let y = binary(im, op, &a, &b)?;
            if op == BinaryOp::Sub {
                centered_cast(im, &a, &b, &y);
            }
            one(y)
        }
        "Pow" => {
            let (a, b) = (im.input(node, 0)?, im.input(node, 1)?);
            want_float(&a, "the base")?;
            let b = if b.ty.elem == a.ty.elem {
                b
            } else {
                let ty = b.ty.with_elem(a.ty.elem);
                im.emit(
                    OpKind::Cast {
                        rounding: Rounding::NearestEven,
                        saturate: false,
                        stochastic: None,
                    },
                    &[&b],
                    ty,
                )?
            };
            one(binary(im, BinaryOp::Pow, &a, &b)?)
        }
        "Sqrt" | "Neg" | "Sigmoid" | "Tanh" | "Erf" => {
            let op = match op_type {
                "Sqrt" => UnaryOp::Sqrt,
                "Neg" => UnaryOp::Neg,
                "Sigmoid" => UnaryOp::Sigmoid,
                "Tanh" => UnaryOp::Tanh,
                _ => UnaryOp::Erf,
            };
            let x = im.input(node, 0)?;
            if op != UnaryOp::Neg {
                want_float(&x, "the input")?;
            }
            let ty = x.ty.clone();
            one(im.emit(OpKind::Unary { op }, &[&x], ty)?)
        }
        "Relu" => {
            let x = im.input(node, 0)?;
            let ty = x.ty.clone();
            one(im.emit(OpKind::Relu, &[&x], ty)?)
        }
        "Gelu" => {
            let x = im.input(node, 0)?;
            want_float(&x, "the input")?;
            let tanh = match attr_s(node, "approximate")?.as_deref() {
                None | Some("none") => false,
                Some("tanh") => true,
                Some(o) => {
                    return Err(format!(
                        "attribute 'approximate' must be none or tanh, not '{o}'"
                    ))
                }
            };
            let ty = x.ty.clone();
            one(im.emit(OpKind::Gelu { tanh }, &[&x], ty)?)
        }
        "Softmax" | "LogSoftmax" => {
            let x = im.input(node, 0)?;
            want_float(&x, "the input")?;
            let a = axis(attr_i(node, "axis").unwrap_or(-1), x.ty.rank(), "axis")? as i64;
            let kind = if op_type == "Softmax" {
                OpKind::Softmax { axis: a }
            } else {
                OpKind::LogSoftmax { axis: a }
            };
            let ty = x.ty.clone();
            one(im.emit(kind, &[&x], ty)?)
        }
        "LayerNormalization" | "RMSNormalization" => norm_node(im, node, op_type),
        "MatMul" => {
            let (a, b) = (im.input(node, 0)?, im.input(node, 1)?);
            let elem = a.ty.elem;
            one(matmul(im, &a, &b, elem)?)
        }
        "Gemm" => one(gemm_node(im, node)?),
        "MatMulInteger" => {
            let a = zero_pointed(im, node, 0, 2, ZpAxis::Rows)?;
            let b = zero_pointed(im, node, 1, 3, ZpAxis::Cols)?;
            one(matmul(im, &a, &b, ElemType::I32)?)
        }
        "QLinearMatMul" => one(qlinear_matmul(im, node)?),
        "DynamicQuantizeLinear" => dynamic_quantize(im, node),
        "QuantizeLinear" => one(quantize_node(im, node, version)?),
        "DequantizeLinear" => one(dequantize_node(im, node, version)?),
        "Conv" => {
            let (x, w) = (im.input(node, 0)?, im.input(node, 1)?);
            want_float(&x, "the input")?;
            same_float_elem(&x, &w, "input and weight")?;
            let b = im.opt_input(node, 2)?;
            let elem = x.ty.elem;
            one(conv(im, node, &x, &w, b.as_ref(), elem)?)
        }
        "ConvInteger" => {
            let x = zero_pointed(im, node, 0, 2, ZpAxis::Tensor)?;
            let w = zero_pointed(im, node, 1, 3, ZpAxis::OutChannels)?;
            one(conv(im, node, &x, &w, None, ElemType::I32)?)
        }
        _ => Err("unsupported operator".into()),
    }
}

fn binary(im: &mut Importer, op: BinaryOp, a: &Val, b: &Val) -> R<Val> {
    if a.ty.elem != b.ty.elem {
        return Err(format!(
            "operand element types differ ({} and {})",
            a.ty.elem, b.ty.elem
        ));
    }
    let shape = broadcast_shapes(&a.ty.shape, &b.ty.shape).ok_or_else(|| {
        format!(
            "shape mismatch: {} and {} do not broadcast",
            fmt_shape(&a.ty.shape),
            fmt_shape(&b.ty.shape)
        )
    })?;
    let ty = TensorType::new(shape, a.ty.elem);
    im.emit(
        OpKind::Binary {
            op,
            overflow: Overflow::Wrap,
        },
        &[a, b],
        ty,
    )
}

fn reshape_to(im: &mut Importer, x: &Val, shape: Vec<u64>) -> R<Val> {
    if shape == x.ty.shape {
        return Ok(x.clone());
    }
    let ty = TensorType::new(shape, x.ty.elem);
    if ty.num_elements() != x.ty.num_elements() {
        return Err(format!(
            "shape mismatch: cannot reshape {} to {}",
            x.ty,
            fmt_shape(&ty.shape)
        ));
    }
    if let Some(d) = x.const_bytes() {
        // A default-layout constant's bytes are its row-major codes, the
        // same for any shape: share them (weights are never decoded).
        return Ok(im.constant_bytes(ty, d.clone()));
    }
    if let Some(t) = x.konst() {
        // Reshaping a constant is free: keep one constant (weights included).
        let t = Tensor {
            elem: t.elem,
            shape: ty.shape.clone(),
            codes: t.codes.clone(),
        };
        return Ok(im.constant(t));
    }
    im.emit(OpKind::Reshape, &[x], ty)
}

fn constant_node(im: &mut Importer, node: &NodeProto) -> R<Val> {
    if let Some(t) = attr(node, "value").and_then(|a| a.t.as_ref()) {
        let (_, t) = tensor_from_proto(t)?;
        return Ok(im.constant(t));
    }
    if let Some(f) = attr_f(node, "value_float") {
        return Ok(im.constant(scalar(ElemType::F32, f as f64)));
    }
    if let Some(a) = attr(node, "value_floats") {
        let t = Tensor::from_f64(
            ElemType::F32,
            vec![a.floats.len() as u64],
            &a.floats.iter().map(|&f| f as f64).collect::<Vec<_>>(),
        )?;
        return Ok(im.constant(t));
    }
    if let Some(i) = attr_i(node, "value_int") {
        let mut t = i64_tensor(&[i]);
        t.shape.clear();
        return Ok(im.constant(t));
    }
    if let Some(v) = attr_ints(node, "value_ints") {
        return Ok(im.constant(i64_tensor(&v)));
    }
    Err(
        "only tensor, float(s) and int(s) values are supported (no sparse or string constants)"
            .into(),
    )
}

fn shape_node(im: &mut Importer, node: &NodeProto) -> R<Val> {
    let x = im.input(node, 0)?;
    let r = x.ty.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(attr_i(node, "start").unwrap_or(0));
    let end = clamp(attr_i(node, "end").unwrap_or(r));
    let dims: Vec<i64> = x.ty.shape[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(im.constant(i64_tensor(&dims)))
}

fn reshape_node(im: &mut Importer, node: &NodeProto) -> R<Val> {
    let x = im.input(node, 0)?;
    let want = const_ints(&im.input(node, 1)?, "the shape input")?;
    let allowzero = attr_i(node, "allowzero").unwrap_or(0) != 0;
    let mut shape = Vec::with_capacity(want.len());
    let mut infer = None;
    for (i, &d) in want.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            0 if !allowzero => shape.push(*x.ty.shape.get(i).ok_or_else(|| {
                format!(
                    "shape entry {i} is 0 (copy) but the input has rank {}",
                    x.ty.rank()
                )
            })?),
            d if d >= 0 => shape.push(d as u64),
            _ => return Err(format!("invalid shape {want:?}")),
        }
    }
    if let Some(i) = infer {
        let known = checked_product(&shape)?;
        let total = x.ty.num_elements();
        if known == 0 || total % known != 0 {
            return Err(format!(
                "shape mismatch: cannot reshape {} to {want:?}",
                x.ty
            ));
        }
        shape[i] = total / known;
    }
    reshape_to(im, &x, shape)
}

fn squeeze_node(im: &mut Importer, node: &NodeProto, unsqueeze: bool) -> R<Val> {
    let x = im.input(node, 0)?;
    // Opset 13 moved `axes` from an attribute to an input.
    let axes = match im.opt_input(node, 1)? {
        Some(a) => Some(const_ints(&a, "the axes input")?),
        None => attr_ints(node, "axes"),
    };
    let shape = if unsqueeze {
        let axes = axes.ok_or("missing the axes input")?;
        let out_rank = x.ty.rank() + axes.len();
        let mut norm: Vec<usize> = axes
            .iter()
            .map(|&a| axis(a, out_rank, "axis"))
            .collect::<R<_>>()?;
        norm.sort_unstable();
        if norm.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("axes {axes:?} repeat an axis"));
        }
        let mut src = x.ty.shape.iter();
        (0..out_rank)
            .map(|d| {
                if norm.contains(&d) {
                    1
                } else {
                    src.next().copied().unwrap_or(1)
                }
            })
            .collect()
    } else {
        let rank = x.ty.rank();
        let drop: Vec<usize> = match axes {
            Some(axes) => {
                let v: Vec<usize> = axes
                    .iter()
                    .map(|&a| axis(a, rank, "axis"))
                    .collect::<R<_>>()?;
                if let Some(&d) = v.iter().find(|&&d| x.ty.shape[d] != 1) {
                    return Err(format!("cannot squeeze axis {d} of size {}", x.ty.shape[d]));
                }
                v
            }
            None => (0..rank).filter(|&d| x.ty.shape[d] == 1).collect(),
        };
        (0..rank)
            .filter(|d| !drop.contains(d))
            .map(|d| x.ty.shape[d])
            .collect()
    };
    reshape_to(im, &x, shape)
}

fn slice_node(im: &mut Importer, node: &NodeProto) -> R<Val> {
    let x = im.input(node, 0)?;
    let rank = x.ty.rank();
    let starts = const_ints(&im.input(node, 1)?, "starts")?;
    let ends = const_ints(&im.input(node, 2)?, "ends")?;
    let axes = match im.opt_input(node, 3)? {
        Some(a) => const_ints(&a, "axes")?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match im.opt_input(node, 4)? {
        Some(s) => const_ints(&s, "steps")?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have the same length".into());
    }
    let mut out_starts: Vec<u64> = vec![0; rank];
    let mut out_steps: Vec<i64> = vec![1; rank];
    let mut shape = x.ty.shape.clone();
    let mut seen = vec![false; rank];
    for i in 0..starts.len() {
        let a = axis(axes[i], rank, "axis")?;
        if std::mem::replace(&mut seen[a], true) {
            return Err(format!("axis {a} is sliced twice"));
        }
        let step = steps[i] as i128;
        if step == 0 {
            return Err("a step is 0".into());
        }
        let d = x.ty.shape[a] as i128;
        let norm = |v: i64| {
            let v = v as i128;
            if v < 0 {
                v + d
            } else {
                v
            }
        };
        if d == 0 {
            // Nothing to select (and no valid index to clamp to).
            shape[a] = 0;
            continue;
        }
        let (start, end) = if step > 0 {
            (norm(starts[i]).clamp(0, d), norm(ends[i]).clamp(0, d))
        } else {
            (
                norm(starts[i]).clamp(0, d - 1),
                norm(ends[i]).clamp(-1, d - 1),
            )
        };
        let count = if step > 0 {
            ((end - start).max(0) + step - 1) / step
        } else {
            ((start - end).max(0) + (-step) - 1) / (-step)
        };
        shape[a] = count as u64;
        if count > 0 {
            out_starts[a] = start as u64;
            out_steps[a] = step as i64;
        }
    }
    if shape == x.ty.shape && out_steps.iter().all(|&s| s == 1) {
        return Ok(x);
    }
    let ty = TensorType::new(shape, x.ty.elem);
    im.emit(
        OpKind::Slice {
            starts: out_starts,
            steps: out_steps,
        },
        &[&x],
        ty,
    )
}

fn is_float8(f: FloatFormat) -> bool {
    [
        FloatFormat::F8E4M3FN,
        FloatFormat::F8E4M3FNUZ,
        FloatFormat::F8E5M2,
        FloatFormat::F8E5M2FNUZ,
        FloatFormat::F8E8M0FNU,
    ]
    .contains(&f)
}

fn cast(im: &mut Importer, node: &NodeProto, x: &Val, to: ElemType) -> R<Val> {
    if to == x.ty.elem {
        return Ok(x.clone());
    }
    if to == U1 {
        return cast_to_bool(im, x);
    }
    if to.bits() == 1 && to.is_int() {
        return Err(format!("cannot cast {} to {to}", x.ty.elem));
    }
    let (rounding, saturate) = match (x.ty.elem.is_float(), to.float()) {
        // Truncation toward zero, as C's float-to-int conversion.
        (true, None) => (Rounding::TowardZero, false),
        (_, Some(f)) if is_float8(f) => {
            let saturate = attr_i(node, "saturate").unwrap_or(1) != 0;
            let rounding = if f == FloatFormat::F8E8M0FNU {
                match attr_s(node, "round_mode")?.as_deref() {
                    None | Some("up") => Rounding::Up,
                    Some("down") => Rounding::Down,
                    Some("nearest") => Rounding::NearestAway,
                    Some(o) => return Err(format!("unknown round_mode '{o}'")),
                }
            } else {
                Rounding::NearestEven
            };
            (rounding, saturate)
        }
        _ => (Rounding::NearestEven, false),
    };
    let ty = x.ty.with_elem(to);
    im.emit(
        OpKind::Cast {
            rounding,
            saturate,
            stochastic: None,
        },
        &[x],
        ty,
    )
}

/// A `Cast` of a low-bit constant (2 to 8 bits: a quantized weight or
/// zero point) to float makes quantized data float outside any
/// `dequantize`: the model spells out its dequantization in float
/// arithmetic. Noted so `lowbit explain` says so; a `Mul` by a scale
/// after it becomes a `dequantize` ([`scaled_cast`]), which leaves the
/// cast (and its note) unused and dropped.
fn note_low_bit_cast(im: &mut Importer, node: &NodeProto, x: &Val, y: &Val) {
    let bits = x.ty.elem.bits();
    if !x.is_const() || !(2..=8).contains(&bits) || !y.ty.elem.is_float() || x.v == y.v {
        return;
    }
    im.low_bit_casts.insert(
        y.v,
        HandDequant {
            q: x.clone(),
            zp: None,
        },
    );
    let name = node.input.first().map_or("", String::as_str);
    im.note(
        y,
        node,
        format!("the {} constant '{name}' {}", x.ty.elem, fmt_shape(&x.ty.shape)),
        format!(
            "a Cast to {}, not DequantizeLinear: the model dequantizes in float arithmetic, which is imported as written, so no low-bit kernel sees this data",
            y.ty.elem
        ),
    );
}

/// A low-bit constant made float by hand: `Cast(q)` (no zero point) or
/// `Cast(q) - zp` with `zp` an integer-valued constant in `q`'s range,
/// held as a tensor of `q`'s element type shaped as the model gave it
/// (broadcasting to `q`).
#[derive(Clone, Debug)]
pub(crate) struct HandDequant {
    pub q: Val,
    pub zp: Option<Tensor>,
}

/// Records `y = Sub(c, z)` as a centered hand dequantization when `c` is
/// `Cast(q)` of an integer constant and `z` a constant of integer values in
/// `q`'s range (a float constant, or `Cast` of a constant of `q`'s type);
/// the float `sub` stays as emitted for any other user.
fn centered_cast(im: &mut Importer, c: &Val, z: &Val, y: &Val) {
    let Some(HandDequant { q, zp: None }) = im.low_bit_casts.get(&c.v).cloned() else {
        return;
    };
    if !q.ty.elem.is_int() || y.ty.shape != c.ty.shape {
        return;
    }
    let zt = match im.low_bit_casts.get(&z.v) {
        Some(HandDequant { q: zq, zp: None }) if zq.ty.elem == q.ty.elem => zq.konst(),
        Some(_) => None,
        None => z.konst().and_then(|t| {
            let elem = q.ty.elem;
            let codes = t
                .codes
                .iter()
                .map(|&code| {
                    // In range exactly when the saturated code reads back.
                    let v = t.elem.decode(code);
                    let c = elem.encode(v, Rounding::NearestEven, true);
                    (t.elem.is_float() && v.fract() == 0.0 && elem.decode(c) == v).then_some(c)
                })
                .collect::<Option<Vec<u64>>>()?;
            Some(Rc::new(Tensor {
                elem,
                shape: t.shape.clone(),
                codes,
            }))
        }),
    };
    if let Some(zt) = zt {
        im.low_bit_casts.insert(
            y.v,
            HandDequant {
                q,
                zp: Some((*zt).clone()),
            },
        );
    }
}

/// The axis along which a constant of `shape` varies when broadcast to
/// `full` (aligned to the right): `Ok(None)` for one value, `Ok(Some(a))`
/// for one per index of axis `a`, `Err(())` otherwise.
fn broadcast_axis(shape: &[u64], full: &[u64]) -> Result<Option<usize>, ()> {
    if shape.len() > full.len() {
        return Err(());
    }
    let lead = full.len() - shape.len();
    let big: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] != 1).collect();
    match big[..] {
        [] => Ok(None),
        [i] if shape[i] == full[i + lead] => Ok(Some(i + lead)),
        _ => Err(()),
    }
}

/// A constant tensor laid out for a granularity: a scalar (`axis` None) or
/// one value per index of `axis`, replicated from a scalar if need be.
fn laid_out(t: &Tensor, axis: Option<usize>, full: &[u64]) -> Tensor {
    match axis {
        None => Tensor {
            elem: t.elem,
            shape: vec![],
            codes: t.codes[..1].to_vec(),
        },
        Some(a) => {
            let n = full[a] as usize;
            let codes = if t.codes.len() == n {
                t.codes.clone()
            } else {
                vec![t.codes[0]; n]
            };
            Tensor {
                elem: t.elem,
                shape: vec![n as u64],
                codes,
            }
        }
    }
}

/// `Mul(Cast(q), scale)` or `Mul(Cast(q) - zp, scale)` (see
/// [`HandDequant`]) with `scale` a float constant of the cast's type, the
/// scale and zero point each one value or one per index of the same single
/// axis: `dequantize q, scale[, zp]` with that granularity, so the weight
/// stays quantized. Bit-exact: the code minus its zero point is exact in
/// the float type and `dequantize` rounds the exact product once, as the
/// float `Mul` does. `None` when the pattern does not apply.
fn scaled_cast(im: &mut Importer, c: &Val, s: &Val) -> R<Option<Val>> {
    let Some(HandDequant { q, zp }) = im.low_bit_casts.get(&c.v).cloned() else {
        return Ok(None);
    };
    let Some(st) = s.konst() else {
        return Ok(None);
    };
    if s.ty.elem != c.ty.elem || st.codes.is_empty() {
        return Ok(None);
    }
    let full = &c.ty.shape;
    let Ok(s_axis) = broadcast_axis(&s.ty.shape, full) else {
        return Ok(None);
    };
    let z_axis = match &zp {
        None => None,
        Some(z) => match broadcast_axis(&z.shape, full) {
            Ok(a) => a,
            Err(()) => return Ok(None),
        },
    };
    let axis = match (s_axis, z_axis) {
        (Some(a), Some(b)) if a != b => return Ok(None),
        (a, b) => a.or(b),
    };
    if zp.as_ref().is_some_and(|z| z.codes.is_empty()) {
        return Ok(None);
    }
    let g = match axis {
        None => Granularity::PerTensor,
        Some(a) => Granularity::PerAxis { axis: a as u32 },
    };
    let scale = im.constant(laid_out(&st, axis, full));
    let mut ops = vec![q.clone(), scale];
    if let Some(z) = &zp {
        ops.push(im.constant(laid_out(z, axis, full)));
    }
    let refs: Vec<&Val> = ops.iter().collect();
    let ty = q.ty.with_elem(c.ty.elem);
    im.emit(OpKind::Dequantize { granularity: g }, &refs, ty)
        .map(Some)
}

/// ONNX's cast to BOOL: `x != 0`, with NaN true. lowbit has no comparison
/// op, so it is built from casts that clamp into `u1`: `cast(x, up,
/// saturate)` is 1 exactly for `x > 0` (NaN counts as 0), the same on `-x`
/// for `x < 0`, and `1 - cast(x·0 + 1)` is 1 exactly for NaN and ±∞.
/// Floats are first widened to f64 (exact) so `x·0 + 1` is representable
/// in every source format (f8E8M0FNU has no zero). Integers skip the
/// negation (it overflows at the minimum): `x < 0` is the `b1` sign bit.
fn cast_to_bool(im: &mut Importer, x: &Val) -> R<Val> {
    let u1 = x.ty.with_elem(U1);
    let clamp = |im: &mut Importer, v: &Val, rounding: Rounding| {
        im.emit(
            OpKind::Cast {
                rounding,
                saturate: true,
                stochastic: None,
            },
            &[v],
            u1.clone(),
        )
    };
    let one = im.constant(scalar(U1, 1.0));
    let positive = clamp(im, x, Rounding::Up)?;
    let other = if x.ty.elem.is_float() {
        let xf = if x.ty.elem == ElemType::Float(FloatFormat::F64) {
            x.clone()
        } else {
            clamp_free_cast(im, x, ElemType::Float(FloatFormat::F64))?
        };
        let neg_ty = xf.ty.clone();
        let neg = im.emit(OpKind::Unary { op: UnaryOp::Neg }, &[&xf], neg_ty)?;
        let negative = clamp(im, &neg, Rounding::Up)?;
        let zero = im.constant(scalar(ElemType::Float(FloatFormat::F64), 0.0));
        let fone = im.constant(scalar(ElemType::Float(FloatFormat::F64), 1.0));
        let z = binary(im, BinaryOp::Mul, &xf, &zero)?;
        let z = binary(im, BinaryOp::Add, &z, &fone)?;
        let finite = clamp(im, &z, Rounding::TowardZero)?;
        let not_finite = binary(im, BinaryOp::Sub, &one, &finite)?;
        binary(im, BinaryOp::Max, &negative, &not_finite)?
    } else {
        let sign = clamp_free_cast(im, x, ElemType::Bipolar)?;
        // b1 → u1 under saturation: -1 clamps to 0, +1 stays 1.
        let non_negative = clamp(im, &sign, Rounding::NearestEven)?;
        binary(im, BinaryOp::Sub, &one, &non_negative)?
    };
    binary(im, BinaryOp::Max, &positive, &other)
}

/// A value-preserving (exact or sign-only) cast without saturation.
fn clamp_free_cast(im: &mut Importer, x: &Val, to: ElemType) -> R<Val> {
    let ty = x.ty.with_elem(to);
    im.emit(
        OpKind::Cast {
            rounding: Rounding::NearestEven,
            saturate: false,
            stochastic: None,
        },
        &[x],
        ty,
    )
}

fn norm_node(im: &mut Importer, node: &NodeProto, op_type: &str) -> R<Vec<Val>> {
    let x = im.input(node, 0)?;
    want_float(&x, "the input")?;
    let stats = node.output.iter().skip(1).any(|o| !o.is_empty());
    if op_type == "RMSNormalization" && stats {
        return Err("RMSNormalization has only one output (Y)".into());
    }
    let a = axis(attr_i(node, "axis").unwrap_or(-1), x.ty.rank(), "axis")?;
    let epsilon = attr_f(node, "epsilon").unwrap_or(1e-5) as f64;
    let dims = x.ty.shape[a..].to_vec();
    // Scale and bias may broadcast to the normalized dims; lowbit's ops take
    // them at exactly those dims.
    let fit = |im: &mut Importer, v: Val, what: &str| -> R<Val> {
        want_float(&v, what)?;
        let b = broadcast_shapes(&v.ty.shape, &dims);
        if b.as_deref() != Some(&dims[..]) {
            return Err(format!(
                "shape mismatch: {what} {} does not broadcast to the normalized dims {}",
                fmt_shape(&v.ty.shape),
                fmt_shape(&dims)
            ));
        }
        if v.ty.shape == dims {
            return Ok(v);
        }
        let ty = TensorType::new(dims.clone(), v.ty.elem);
        im.emit(OpKind::Broadcast, &[&v], ty)
    };
    let scale = im.input(node, 1)?;
    let scale = fit(im, scale, "scale")?;
    let ty = x.ty.clone();
    if op_type == "RMSNormalization" {
        return Ok(vec![im.emit(
            OpKind::RmsNorm {
                axis: a as i64,
                epsilon,
            },
            &[&x, &scale],
            ty,
        )?]);
    }
    let bias = match im.opt_input(node, 2)? {
        Some(b) => Some(fit(im, b, "bias")?),
        None => None,
    };
    let mut ops = vec![&x, &scale];
    if let Some(b) = &bias {
        ops.push(b);
    }
    let y = im.emit(
        OpKind::LayerNorm {
            axis: a as i64,
            epsilon,
        },
        &ops,
        ty,
    )?;
    if !stats {
        return Ok(vec![y]);
    }
    let stash = attr_i(node, "stash_type").unwrap_or(1);
    let stash = elem_type_from_onnx(stash as i32)
        .ok()
        .filter(|e| e.is_float())
        .ok_or_else(|| format!("stash_type {stash} is not a float type"))?;
    let (mean, inv_std) = norm_stats(im, &x, a, epsilon, stash)?;
    Ok(vec![y, mean, inv_std])
}

/// LayerNormalization's `Mean` and `InvStdDev` outputs: the mean and
/// `1 / sqrt(variance + epsilon)` over dims `axis..`, shaped like `x` with
/// those dims 1. lowbit has no sum reduction, so sums are `matmul`s with a
/// ones column, all in f64 (`matmul` sums in f64 and rounds once); the
/// variance is two-pass (`mean((x - mean)²)`), then rounded to `stash`.
fn norm_stats(
    im: &mut Importer,
    x: &Val,
    a: usize,
    epsilon: f64,
    stash: ElemType,
) -> R<(Val, Val)> {
    let f64e = ElemType::Float(FloatFormat::F64);
    let outer = checked_product(&x.ty.shape[..a])?;
    let inner = checked_product(&x.ty.shape[a..])?;
    let xf = if x.ty.elem == f64e {
        x.clone()
    } else {
        clamp_free_cast(im, x, f64e)?
    };
    let x2 = reshape_to(im, &xf, vec![outer, inner])?;
    let len = usize::try_from(inner).map_err(|_| "the normalized dims are too large")?;
    let ones = im.constant(Tensor {
        elem: f64e,
        shape: vec![inner, 1],
        codes: vec![1f64.to_bits(); len],
    });
    let count = im.constant(scalar(f64e, inner as f64));
    let mean_of = |im: &mut Importer, v: &Val| -> R<Val> {
        let sum = matmul(im, v, &ones, f64e)?;
        binary(im, BinaryOp::Div, &sum, &count)
    };
    let mean = mean_of(im, &x2)?;
    let d = binary(im, BinaryOp::Sub, &x2, &mean)?;
    let d2 = binary(im, BinaryOp::Mul, &d, &d)?;
    let var = mean_of(im, &d2)?;
    let eps = im.constant(scalar(f64e, epsilon));
    let var = binary(im, BinaryOp::Add, &var, &eps)?;
    let sd_ty = var.ty.clone();
    let sd = im.emit(OpKind::Unary { op: UnaryOp::Sqrt }, &[&var], sd_ty)?;
    let fone = im.constant(scalar(f64e, 1.0));
    let inv = binary(im, BinaryOp::Div, &fone, &sd)?;
    let mut shape = x.ty.shape[..a].to_vec();
    shape.resize(x.ty.rank(), 1);
    let finish = |im: &mut Importer, v: Val| -> R<Val> {
        let v = reshape_to(im, &v, shape.clone())?;
        if stash == f64e {
            Ok(v)
        } else {
            clamp_free_cast(im, &v, stash)
        }
    };
    Ok((finish(im, mean)?, finish(im, inv)?))
}

/// `matmul` with ONNX's rank-1 rules (a vector operand gains a unit dim
/// that the result then drops).
fn matmul(im: &mut Importer, a: &Val, b: &Val, out: ElemType) -> R<Val> {
    if a.ty.elem.is_float() != b.ty.elem.is_float() {
        return Err(format!(
            "operand element types differ ({} and {})",
            a.ty.elem, b.ty.elem
        ));
    }
    if a.ty.rank() == 0 || b.ty.rank() == 0 {
        return Err("MatMul operands must not be scalars".into());
    }
    let a2 = if a.ty.rank() == 1 {
        reshape_to(im, a, vec![1, a.ty.shape[0]])?
    } else {
        a.clone()
    };
    let b2 = if b.ty.rank() == 1 {
        reshape_to(im, b, vec![b.ty.shape[0], 1])?
    } else {
        b.clone()
    };
    let (ra, rb) = (a2.ty.rank(), b2.ty.rank());
    let (m, k) = (a2.ty.shape[ra - 2], a2.ty.shape[ra - 1]);
    let (k2, n) = (b2.ty.shape[rb - 2], b2.ty.shape[rb - 1]);
    if k != k2 {
        return Err(format!(
            "shape mismatch: inner dimensions differ ({} x {})",
            a.ty, b.ty
        ));
    }
    let mut shape =
        broadcast_shapes(&a2.ty.shape[..ra - 2], &b2.ty.shape[..rb - 2]).ok_or_else(|| {
            format!(
                "shape mismatch: batch dims of {} and {} do not broadcast",
                a.ty, b.ty
            )
        })?;
    shape.extend([m, n]);
    let ty = TensorType::new(shape.clone(), out);
    let y = im.emit(
        OpKind::MatMul {
            overflow: Overflow::Wrap,
        },
        &[&a2, &b2],
        ty,
    )?;
    let mut want = shape;
    if b.ty.rank() == 1 {
        want.pop();
    }
    if a.ty.rank() == 1 {
        let n = want.len();
        want.remove(n - if b.ty.rank() == 1 { 1 } else { 2 });
    }
    reshape_to(im, &y, want)
}

fn gemm_node(im: &mut Importer, node: &NodeProto) -> R<Val> {
    let (a, b) = (im.input(node, 0)?, im.input(node, 1)?);
    want_float(&a, "A")?;
    same_float_elem(&a, &b, "A and B")?;
    if a.ty.rank() != 2 || b.ty.rank() != 2 {
        return Err(format!(
            "shape mismatch: A and B must be 2-D, got {} and {}",
            a.ty, b.ty
        ));
    }
    let trans_a = attr_i(node, "transA").unwrap_or(0) != 0;
    let trans_b = attr_i(node, "transB").unwrap_or(0) != 0;
    let alpha = attr_f(node, "alpha").unwrap_or(1.0) as f64;
    let beta = attr_f(node, "beta").unwrap_or(1.0) as f64;
    let (m, k) = if trans_a {
        (a.ty.shape[1], a.ty.shape[0])
    } else {
        (a.ty.shape[0], a.ty.shape[1])
    };
    let (k2, n) = if trans_b {
        (b.ty.shape[1], b.ty.shape[0])
    } else {
        (b.ty.shape[0], b.ty.shape[1])
    };
    if k != k2 {
        return Err(format!(
            "shape mismatch: inner dimensions differ ({k} and {k2})"
        ));
    }
    let c = im.opt_input(node, 2)?;
    let mut ops = vec![&a, &b];
    if let Some(c) = &c {
        same_float_elem(&a, c, "A and C")?;
        if broadcast_shapes(&c.ty.shape, &[m, n]).as_deref() != Some(&[m, n][..]) {
            return Err(format!(
                "shape mismatch: C {} does not broadcast to [{m}, {n}]",
                c.ty
            ));
        }
        ops.push(c);
    }
    let ty = TensorType::new(vec![m, n], a.ty.elem);
    im.emit(
        OpKind::Gemm {
            trans_a,
            trans_b,
            alpha,
            beta,
            overflow: Overflow::Wrap,
        },
        &ops,
        ty,
    )
}

/// Where an integer op's zero point applies.
#[derive(Clone, Copy, PartialEq)]
enum ZpAxis {
    /// One per row of a matrix `A` (`[M]`, per the last-but-one dim).
    Rows,
    /// One per column of a matrix `B` (`[N]`, the last dim).
    Cols,
    /// One for the whole tensor.
    Tensor,
    /// One per output channel (dim 0 of a conv weight).
    OutChannels,
}

/// Input `i` cast to i32 minus its zero point (input `zp`), or the input
/// itself when it has no zero point.
fn zero_pointed(im: &mut Importer, node: &NodeProto, i: usize, zp: usize, at: ZpAxis) -> R<Val> {
    let x = im.input(node, i)?;
    if !x.ty.elem.is_int() {
        return Err(format!(
            "input #{i} must be an integer tensor, got {}",
            x.ty.elem
        ));
    }
    let Some(z) = im.opt_input(node, zp)? else {
        return Ok(x);
    };
    if z.ty.elem != x.ty.elem {
        return Err(format!(
            "zero point #{zp} has element type {}, input #{i} has {}",
            z.ty.elem, x.ty.elem
        ));
    }
    let to_i32 = |im: &mut Importer, v: &Val| {
        let ty = v.ty.with_elem(ElemType::I32);
        im.emit(
            OpKind::Cast {
                rounding: Rounding::NearestEven,
                saturate: false,
                stochastic: None,
            },
            &[v],
            ty,
        )
    };
    let xi = to_i32(im, &x)?;
    let zi = to_i32(im, &z)?;
    let n = z.ty.num_elements();
    let zi = if n == 1 {
        reshape_to(im, &zi, vec![])?
    } else {
        let rank = x.ty.rank();
        let shape = match at {
            ZpAxis::Rows if rank >= 2 && n == x.ty.shape[rank - 2] => vec![n, 1],
            ZpAxis::Cols if rank >= 1 && n == x.ty.shape[rank - 1] => vec![n],
            ZpAxis::OutChannels if rank == 4 && n == x.ty.shape[0] => vec![n, 1, 1, 1],
            _ => {
                return Err(format!(
                    "zero point #{zp} of shape {} does not fit input #{i} ({})",
                    fmt_shape(&z.ty.shape),
                    x.ty
                ))
            }
        };
        reshape_to(im, &zi, shape)?
    };
    binary(im, BinaryOp::Sub, &xi, &zi)
}

/// A `QLinearMatMul` scale or zero point of `a` (`rows`) or `b`, shaped to
/// broadcast against the matrix `x` and the `[.., M, N]` product: one
/// value becomes a scalar; a 1-D tensor of one per row of `a` becomes `[M,
/// 1]`, one per column of `b` stays `[N]`; the spec's N-D forms (`[.., M,
/// 1]` for `a`, `[.., 1, N]` for `b`, batch dims 1 or equal) are kept.
fn row_col_param(im: &mut Importer, p: &Val, x: &Val, rows: bool, what: &str) -> R<Val> {
    if p.ty.num_elements() == 1 {
        return reshape_to(im, p, vec![]);
    }
    let r = x.ty.rank();
    let (want, per) = if rows {
        ("one per row of a", "row")
    } else {
        ("one per column of b", "column")
    };
    let bad = || {
        format!(
            "{what} of shape {} must be one value or {want} ({}): per-{per} quantization of {} takes [{}] or the {}-D form",
            fmt_shape(&p.ty.shape),
            if rows { "[M] or [.., M, 1]" } else { "[N] or [.., 1, N]" },
            x.ty,
            if r >= 2 { x.ty.shape[if rows { r - 2 } else { r - 1 }] } else { 0 },
            r
        )
    };
    if r < 2 {
        return Err(bad());
    }
    let (m, n) = (x.ty.shape[r - 2], x.ty.shape[r - 1]);
    let len = if rows { m } else { n };
    if p.ty.shape == [len] {
        return if rows {
            reshape_to(im, p, vec![len, 1])
        } else {
            Ok(p.clone())
        };
    }
    let ps = &p.ty.shape;
    let fits = ps.len() == r
        && if rows {
            ps[r - 2] == m && ps[r - 1] == 1
        } else {
            ps[r - 2] == 1 && ps[r - 1] == n
        }
        && ps[..r - 2]
            .iter()
            .zip(&x.ty.shape[..r - 2])
            .all(|(&a, &b)| a == 1 || a == b);
    if fits {
        Ok(p.clone())
    } else {
        Err(bad())
    }
}

/// `x` minus its zero point, in i32.
fn minus_zero_point(im: &mut Importer, x: &Val, zp: Option<Val>, rows: bool, what: &str) -> R<Val> {
    if !x.ty.elem.is_int() {
        return Err(format!(
            "{what} must be an integer tensor, got {}",
            x.ty.elem
        ));
    }
    let xi = clamp_free_cast(im, x, ElemType::I32)?;
    let Some(z) = zp else {
        return Ok(xi);
    };
    if z.ty.elem != x.ty.elem {
        return Err(format!(
            "the zero point of {what} has element type {}, {what} has {}",
            z.ty.elem, x.ty.elem
        ));
    }
    let z = row_col_param(im, &z, x, rows, &format!("the zero point of {what}"))?;
    let zi = clamp_free_cast(im, &z, ElemType::I32)?;
    binary(im, BinaryOp::Sub, &xi, &zi)
}

/// ONNX `QLinearMatMul` with onnxruntime's arithmetic: the exact i32
/// product of the zero-point-centered operands, then per output element
/// `saturate(round_half_even(f32(acc) ·f32 S) + y_zero_point)` with `S =
/// f32(f32(a_scale · b_scale) / y_scale)`, every step an f32 op as
/// onnxruntime's CPU kernel does it. `a`'s scale and zero point may be per
/// row and `b`'s per column (see [`row_col_param`]); onnxruntime itself
/// accepts per-column `b` only.
fn qlinear_matmul(im: &mut Importer, node: &NodeProto) -> R<Val> {
    let (a, a_scale) = (im.input(node, 0)?, im.input(node, 1)?);
    let (b, b_scale) = (im.input(node, 3)?, im.input(node, 4)?);
    let (y_scale, y_zp) = (im.input(node, 6)?, im.input(node, 7)?);
    let (a_zp, b_zp) = (im.opt_input(node, 2)?, im.opt_input(node, 5)?);
    for (v, what) in [
        (&a_scale, "a_scale"),
        (&b_scale, "b_scale"),
        (&y_scale, "y_scale"),
    ] {
        if v.ty.elem != ElemType::F32 {
            return Err(format!("{what} must be float32, got {}", v.ty.elem));
        }
    }
    if y_scale.ty.num_elements() != 1 || y_zp.ty.num_elements() != 1 {
        return Err(format!(
            "y_scale and y_zero_point must be one value each (per-tensor), got {} and {}",
            fmt_shape(&y_scale.ty.shape),
            fmt_shape(&y_zp.ty.shape)
        ));
    }
    let ai = minus_zero_point(im, &a, a_zp, true, "a")?;
    let bi = minus_zero_point(im, &b, b_zp, false, "b")?;
    let acc = matmul(im, &ai, &bi, ElemType::I32)?;
    let a_s = row_col_param(im, &a_scale, &a, true, "a_scale")?;
    let b_s = row_col_param(im, &b_scale, &b, false, "b_scale")?;
    let ab = binary(im, BinaryOp::Mul, &a_s, &b_s)?;
    let y_s = reshape_to(im, &y_scale, vec![])?;
    let s = binary(im, BinaryOp::Div, &ab, &y_s)?;
    let accf = clamp_free_cast(im, &acc, ElemType::F32)?;
    let x = binary(im, BinaryOp::Mul, &accf, &s)?;
    if x.ty.shape != acc.ty.shape {
        return Err(format!(
            "shape mismatch: the scales ({}) do not broadcast to the product {}",
            fmt_shape(&s.ty.shape),
            acc.ty
        ));
    }
    let one = im.constant(scalar(ElemType::F32, 1.0));
    let y_z = reshape_to(im, &y_zp, vec![])?;
    let ty = acc.ty.with_elem(y_zp.ty.elem);
    im.emit(
        OpKind::Quantize {
            granularity: Granularity::PerTensor,
            rounding: Rounding::NearestEven,
            saturate: true,
            stochastic: None,
        },
        &[&x, &one, &y_z],
        ty,
    )
}

fn dynamic_quantize(im: &mut Importer, node: &NodeProto) -> R<Vec<Val>> {
    let x = im.input(node, 0)?;
    if x.ty.elem != ElemType::F32 {
        return Err(format!("the input must be float32, got {}", x.ty.elem));
    }
    if x.ty.num_elements() == 0 {
        return Err("the input is empty".into());
    }
    let f32s = |shape: Vec<u64>| TensorType::new(shape, ElemType::F32);
    let axes: Vec<u32> = (0..x.ty.rank() as u32).collect();
    let kept = vec![1; x.ty.rank()];
    let extreme = |im: &mut Importer, op| -> R<Val> {
        let r = im.emit(
            OpKind::Reduce {
                op,
                axes: axes.clone(),
            },
            &[&x],
            f32s(kept.clone()),
        )?;
        reshape_to(im, &r, vec![])
    };
    let mn = extreme(im, ReduceOp::Min)?;
    let mx = extreme(im, ReduceOp::Max)?;
    // The range always includes 0 (spec: adjusted min/max).
    let zero = im.constant(scalar(ElemType::F32, 0.0));
    let mn = binary(im, BinaryOp::Min, &mn, &zero)?;
    let mx = binary(im, BinaryOp::Max, &mx, &zero)?;
    let range = binary(im, BinaryOp::Sub, &mx, &mn)?;
    let qmax = im.constant(scalar(ElemType::F32, 255.0));
    let scale = binary(im, BinaryOp::Div, &range, &qmax)?;
    // onnxruntime uses scale 1 for an all-zero input. range ≥ 0 (or NaN),
    // so rounding it up into u1 with saturation gives 1 exactly when it is
    // non-zero (NaN counts as 0, and NaN + 1 stays NaN below); adding
    // 1 − that indicator changes only the zero scale (x + 0 = x).
    let u1 = TensorType::new(vec![], U1);
    let nonzero = im.emit(
        OpKind::Cast {
            rounding: Rounding::Up,
            saturate: true,
            stochastic: None,
        },
        &[&range],
        u1,
    )?;
    let nonzero = clamp_free_cast(im, &nonzero, ElemType::F32)?;
    let one = im.constant(scalar(ElemType::F32, 1.0));
    let is_zero = binary(im, BinaryOp::Sub, &one, &nonzero)?;
    let scale = binary(im, BinaryOp::Add, &scale, &is_zero)?;
    // zero point = saturate(round(qmin - min / scale)), qmin = 0.
    let ratio = binary(im, BinaryOp::Div, &mn, &scale)?;
    let izp = im.emit(OpKind::Unary { op: UnaryOp::Neg }, &[&ratio], f32s(vec![]))?;
    let quant = || OpKind::Quantize {
        granularity: Granularity::PerTensor,
        rounding: Rounding::NearestEven,
        saturate: true,
        stochastic: None,
    };
    let zp = im.emit(
        quant(),
        &[&izp, &one],
        TensorType::new(vec![], ElemType::U8),
    )?;
    let y = im.emit(quant(), &[&x, &scale, &zp], x.ty.with_elem(ElemType::U8))?;
    Ok(vec![y, scale, zp])
}

/// The granularity a (de)quantization's scale shape and attributes give.
fn granularity(
    node: &NodeProto,
    data: &TensorType,
    scale: &TensorType,
    version: i64,
) -> R<Granularity> {
    let block = if version >= 21 {
        attr_i(node, "block_size").unwrap_or(0)
    } else {
        0
    };
    if block < 0 {
        return Err(format!("block_size must be non-negative, got {block}"));
    }
    let rank = data.rank();
    if block == 0 && scale.num_elements() == 1 && scale.rank() <= 1 {
        return Ok(Granularity::PerTensor);
    }
    let a = axis(attr_i(node, "axis").unwrap_or(1), rank, "axis")?;
    if block == 0 {
        if scale.shape != [data.shape[a]] {
            return Err(format!(
                "shape mismatch: a per-axis scale along axis {a} of {} must have shape [{}], got {}",
                fmt_shape(&data.shape),
                data.shape[a],
                fmt_shape(&scale.shape)
            ));
        }
        return Ok(Granularity::PerAxis { axis: a as u32 });
    }
    let g = Granularity::Blocked {
        blocks: vec![(a as u32, block as u64)],
    };
    let want = g.scale_shape(&data.shape)?;
    if scale.shape != want {
        return Err(format!(
            "shape mismatch: a blocked scale (axis {a}, block_size {block}) for {} must have shape {}, got {}",
            fmt_shape(&data.shape),
            fmt_shape(&want),
            fmt_shape(&scale.shape)
        ));
    }
    Ok(g)
}

fn quantize_node(im: &mut Importer, node: &NodeProto, version: i64) -> R<Val> {
    let x = im.input(node, 0)?;
    let scale = im.input(node, 1)?;
    want_float(&scale, "y_scale")?;
    let zp = im.opt_input(node, 2)?;
    let out = match (&zp, attr_i(node, "output_dtype").unwrap_or(0)) {
        (Some(z), 0) => z.ty.elem,
        (Some(z), dt) => {
            let e = elem_type_from_onnx(dt as i32)?;
            if e != z.ty.elem {
                return Err(format!(
                    "output_dtype {e} differs from the zero point's element type {}",
                    z.ty.elem
                ));
            }
            e
        }
        (None, 0) => ElemType::U8,
        (None, dt) => elem_type_from_onnx(dt as i32)?,
    };
    let x = if x.ty.elem.is_float() {
        x
    } else if x.ty.elem == ElemType::I32 {
        let ty = x.ty.with_elem(ElemType::Float(FloatFormat::F64));
        im.emit(
            OpKind::Cast {
                rounding: Rounding::NearestEven,
                saturate: false,
                stochastic: None,
            },
            &[&x],
            ty,
        )?
    } else {
        return Err(format!("x must be float or int32, got {}", x.ty.elem));
    };
    let g = granularity(node, &x.ty, &scale.ty, version)?;
    let saturate = out.is_integral() || attr_i(node, "saturate").unwrap_or(1) != 0;
    let mut ops = vec![&x, &scale];
    match &zp {
        Some(z) if out.is_integral() => ops.push(z),
        // A float zero point's value is ignored (see the module docs), but
        // its shape must still be the scale's.
        Some(z) if z.ty.shape != scale.ty.shape => {
            return Err(format!(
                "y_zero_point has shape {} but y_scale has {}",
                fmt_shape(&z.ty.shape),
                fmt_shape(&scale.ty.shape)
            ))
        }
        _ => {}
    }
    let ty = x.ty.with_elem(out);
    im.emit(
        OpKind::Quantize {
            granularity: g,
            rounding: Rounding::NearestEven,
            saturate,
            stochastic: None,
        },
        &ops,
        ty,
    )
}

fn dequantize_node(im: &mut Importer, node: &NodeProto, version: i64) -> R<Val> {
    let q = im.input(node, 0)?;
    let scale = im.input(node, 1)?;
    want_float(&scale, "x_scale")?;
    let zp = im.opt_input(node, 2)?;
    if let Some(z) = &zp {
        if z.ty.elem != q.ty.elem {
            return Err(format!(
                "x_zero_point has element type {}, x has {}",
                z.ty.elem, q.ty.elem
            ));
        }
    }
    let out = match attr_i(node, "output_dtype").unwrap_or(0) {
        0 if scale.ty.elem == ElemType::Float(FloatFormat::F8E8M0FNU) => {
            return Err("an E8M0 x_scale needs output_dtype".into())
        }
        0 => scale.ty.elem,
        dt => elem_type_from_onnx(dt as i32)?,
    };
    if !out.is_float() {
        return Err(format!("the output type must be float, got {out}"));
    }
    let g = granularity(node, &q.ty, &scale.ty, version)?;
    let mut ops = vec![&q, &scale];
    if let Some(z) = &zp {
        ops.push(z);
    }
    let ty = q.ty.with_elem(out);
    im.emit(OpKind::Dequantize { granularity: g }, &ops, ty)
}

fn conv(
    im: &mut Importer,
    node: &NodeProto,
    x: &Val,
    w: &Val,
    b: Option<&Val>,
    out: ElemType,
) -> R<Val> {
    if x.ty.rank() != 4 || w.ty.rank() != 4 {
        return Err(format!(
            "only 2-D convolutions (4-D input and weight) are supported, got {} and {}",
            x.ty, w.ty
        ));
    }
    let two = |name: &str, default: u64| -> R<[u64; 2]> {
        match attr_ints(node, name) {
            None => Ok([default; 2]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x > 0) => Ok([v[0] as u64, v[1] as u64]),
            Some(v) => Err(format!(
                "attribute '{name}' must be two positive numbers, got {v:?}"
            )),
        }
    };
    let strides = two("strides", 1)?;
    let dilations = two("dilations", 1)?;
    let group = attr_i(node, "group").unwrap_or(1);
    if group < 1 {
        return Err(format!("group must be positive, got {group}"));
    }
    let (h, wd) = (x.ty.shape[2], x.ty.shape[3]);
    let (kh, kw) = (w.ty.shape[2], w.ty.shape[3]);
    if let Some(ks) = attr_ints(node, "kernel_shape") {
        if ks != [kh as i64, kw as i64] {
            return Err(format!(
                "kernel_shape {ks:?} differs from the weight's {kh}x{kw}"
            ));
        }
    }
    let auto = attr_s(node, "auto_pad")?.unwrap_or_else(|| "NOTSET".into());
    let pads = match auto.as_str() {
        "NOTSET" => match attr_ints(node, "pads") {
            None => [0; 4],
            Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
                [p[0] as u64, p[1] as u64, p[2] as u64, p[3] as u64]
            }
            Some(p) => {
                return Err(format!(
                    "attribute 'pads' must be four non-negative numbers, got {p:?}"
                ))
            }
        },
        "VALID" => [0; 4],
        "SAME_UPPER" | "SAME_LOWER" => {
            let total = |size: u64, k: u64, s: u64, d: u64| {
                let out = size.div_ceil(s).max(1);
                (out - 1)
                    .checked_mul(s)
                    .zip((k.max(1) - 1).checked_mul(d))
                    .and_then(|(a, b)| a.checked_add(b)?.checked_add(1))
                    .map(|need| need.saturating_sub(size))
            };
            let overflow = || "the padding overflows".to_string();
            let th = total(h, kh, strides[0], dilations[0]).ok_or_else(overflow)?;
            let tw = total(wd, kw, strides[1], dilations[1]).ok_or_else(overflow)?;
            let split = |t: u64| {
                if auto == "SAME_UPPER" {
                    (t / 2, t - t / 2)
                } else {
                    (t - t / 2, t / 2)
                }
            };
            let ((t, bo), (l, r)) = (split(th), split(tw));
            [t, l, bo, r]
        }
        o => return Err(format!("unknown auto_pad '{o}'")),
    };
    let (n, c, m, cg) = (x.ty.shape[0], x.ty.shape[1], w.ty.shape[0], w.ty.shape[1]);
    let g = group as u64;
    if cg.checked_mul(g) != Some(c) || m % g != 0 {
        return Err(format!(
            "shape mismatch: input has {c} channels, weight {m}x{cg} with group {g}"
        ));
    }
    let size = |len: u64, k: u64, p: u64, s: u64, d: u64| {
        let span = d.checked_mul(k.max(1) - 1)?.checked_add(1)?;
        len.checked_add(p)?.checked_sub(span).map(|v| v / s + 1)
    };
    let (Some(oh), Some(ow)) = (
        pads[0]
            .checked_add(pads[2])
            .and_then(|p| size(h, kh, p, strides[0], dilations[0])),
        pads[1]
            .checked_add(pads[3])
            .and_then(|p| size(wd, kw, p, strides[1], dilations[1])),
    ) else {
        return Err("shape mismatch: the kernel is larger than the padded input".into());
    };
    let mut ops = vec![x, w];
    if let Some(b) = b {
        if b.ty.shape != [m] || b.ty.elem != x.ty.elem {
            return Err(format!(
                "the bias must be {} of shape [{m}], got {}",
                x.ty.elem, b.ty
            ));
        }
        ops.push(b);
    }
    let ty = TensorType::new(vec![n, m, oh, ow], out);
    im.emit(
        OpKind::Conv2d {
            strides,
            pads,
            dilations,
            group: g,
            overflow: Overflow::Wrap,
        },
        &ops,
        ty,
    )
}

/// `MatMulNBits`'s optional `g_idx` (act-order: the quantization group of
/// each row of K). `None` when absent or equal to `i / block_size`; else
/// the groups, which the caller expands to one scale row per row of K.
fn g_idx(
    im: &mut Importer,
    node: &NodeProto,
    k: usize,
    block: usize,
    blocks: usize,
) -> R<Option<Vec<usize>>> {
    let Some(g) = im.opt_input(node, 4)? else {
        return Ok(None);
    };
    let gt = g.konst().ok_or("g_idx must be an initializer")?;
    if !matches!(gt.elem, ElemType::I32 | ElemType::I64) || gt.codes.len() != k {
        return Err(format!("g_idx must be int32 or int64 [{k}], got {}", g.ty));
    }
    let mut groups = Vec::with_capacity(k);
    for (i, &c) in gt.codes.iter().enumerate() {
        let v = gt.elem.decode_int(c).unwrap_or(-1);
        match usize::try_from(v) {
            Ok(v) if v < blocks => groups.push(v),
            _ => {
                return Err(format!(
                    "g_idx[{i}] = {v} is not a group index in [0, {blocks})"
                ))
            }
        }
    }
    let identity = groups.iter().enumerate().all(|(i, &g)| g == i / block);
    Ok((!identity).then_some(groups))
}

/// onnxruntime's `MatMulNBits`: `Y = A · dequant(B)ᵀ (+ bias)`.
fn matmul_nbits(im: &mut Importer, node: &NodeProto) -> R<Val> {
    let a = im.input(node, 0)?;
    want_float(&a, "A")?;
    let need = |n: &str| attr_i(node, n).ok_or_else(|| format!("missing attribute '{n}'"));
    let (k, n) = (need("K")?, need("N")?);
    let bits = attr_i(node, "bits").unwrap_or(4);
    let block = need("block_size")?;
    if k <= 0 || n <= 0 || block < 16 || !(block as u64).is_power_of_two() {
        return Err(format!(
            "K = {k} and N = {n} must be positive and block_size = {block} a power of two of at least 16"
        ));
    }
    if !matches!(bits, 2 | 4 | 8) {
        return Err(format!("bits = {bits} is not supported (2, 4 or 8)"));
    }
    let (k, n, block, bits) = (k as usize, n as usize, block as usize, bits as u32);
    let blocks = k.div_ceil(block);
    let groups = g_idx(im, node, k, block, blocks)?;
    let blob = block * bits as usize / 8;
    let b = im.input(node, 1)?;
    let bt = b.konst().ok_or("B must be an initializer")?;
    let expected = n.checked_mul(blocks).and_then(|v| v.checked_mul(blob));
    if bt.elem != ElemType::U8 || expected != Some(bt.codes.len()) {
        return Err(format!(
            "B must be uint8 [{n}, {blocks}, {blob}], got {}",
            b.ty
        ));
    }
    let per_byte = 8 / bits as usize;
    let mask = (1u64 << bits) - 1;
    // Element (row r, k) sits in byte k / per_byte of row r, low bits first.
    let code = |row: &[u64], i: usize| (row[i / per_byte] >> ((i % per_byte) as u32 * bits)) & mask;
    let row_bytes = blocks * blob;
    let qelem = ElemType::uint(bits as u8).map_err(|e| e.to_string())?;
    let mut w = vec![0u64; k * n];
    for r in 0..n {
        let row = &bt.codes[r * row_bytes..(r + 1) * row_bytes];
        for (i, slot) in (0..k).map(|i| i * n + r).enumerate() {
            w[slot] = code(row, i);
        }
    }
    let wq = im.constant(Tensor {
        elem: qelem,
        shape: vec![k as u64, n as u64],
        codes: w,
    });
    let scales = im.input(node, 2)?;
    let st = scales.konst().ok_or("scales must be an initializer")?;
    if !st.elem.is_float() || st.codes.len() != n * blocks {
        return Err(format!(
            "scales must be float with {n} x {blocks} elements, got {}",
            scales.ty
        ));
    }
    if st.elem != a.ty.elem {
        return Err(format!(
            "scales ({}) must have A's element type ({})",
            st.elem, a.ty.elem
        ));
    }
    // Scales and zero points are [N, blocks] row-major; lowbit wants them
    // [blocks, N] (or, with a non-trivial g_idx, one row per row of K).
    let rows = if groups.is_some() { k } else { blocks };
    let arrange = |codes: &[u64]| {
        let mut t = vec![0u64; n * rows];
        for r in 0..n {
            for j in 0..rows {
                let g = groups.as_ref().map_or(j, |g| g[j]);
                t[j * n + r] = codes[r * blocks + g];
            }
        }
        t
    };
    let sshape = vec![rows as u64, n as u64];
    let s = im.constant(Tensor {
        elem: st.elem,
        shape: sshape.clone(),
        codes: arrange(&st.codes),
    });
    let mut wq = wq;
    // Set when the codes had to be cast to float: (what, why).
    let mut float_note: Option<(String, String)> = None;
    let zp_codes = match im.opt_input(node, 3)? {
        None => vec![1u64 << (bits - 1); n * blocks],
        Some(z) => {
            let zt = z.konst().ok_or("zero_points must be an initializer")?;
            if zt.elem == st.elem {
                if zt.codes.len() != n * blocks {
                    return Err(format!(
                        "float zero_points must have {} elements ({n} x {blocks}), got {}",
                        n * blocks,
                        zt.codes.len()
                    ));
                }
                let max = ((1u64 << bits) - 1) as f64;
                let vals: Vec<f64> = zt.codes.iter().map(|&c| zt.elem.decode(c)).collect();
                if vals
                    .iter()
                    .all(|&v| v.fract() == 0.0 && (0.0..=max).contains(&v))
                {
                    // Integral zero points in range: exactly the packed form.
                    vals.iter().map(|&v| v as u64).collect()
                } else {
                    // `(q - zp) · s` with a fractional zp: the codes are cast
                    // (exactly) to the scales' float type so `dequantize`
                    // can subtract a float zero point; the weight constant
                    // itself stays packed, but every kernel downstream
                    // reads float codes. Noted for `lowbit explain`.
                    let fty = TensorType::new(vec![k as u64, n as u64], st.elem);
                    wq = im.emit(
                        OpKind::Cast {
                            rounding: Rounding::NearestEven,
                            saturate: false,
                            stochastic: None,
                        },
                        &[&wq],
                        fty,
                    )?;
                    let (i, bad) = vals
                        .iter()
                        .enumerate()
                        .find(|(_, v)| v.fract() != 0.0 || !(0.0..=max).contains(*v))
                        .map_or((0, 0.0), |(i, v)| (i, *v as f32));
                    float_note = Some((
                        format!(
                            "the u{bits} weight codes of '{}' ([K, N] = [{k}, {n}])",
                            node.input.get(1).map_or("", String::as_str)
                        ),
                        format!(
                            "zero_points '{}' are not integers in [0, {max}] (e.g. {bad} for column {}, block {}); dequantize takes zero points in the codes' type, so the codes are cast to {} first and no low-bit kernel applies",
                            node.input.get(3).map_or("", String::as_str),
                            i / blocks,
                            i % blocks,
                            st.elem
                        ),
                    ));
                    zt.codes.clone()
                }
            } else {
                if zt.elem != ElemType::U8 {
                    return Err(format!(
                        "zero_points must be packed uint8 or the scales' type ({}), got {}",
                        st.elem, zt.elem
                    ));
                }
                let zrow = (blocks * bits as usize).div_ceil(8);
                if zt.codes.len() != n * zrow {
                    return Err(format!(
                        "zero_points must have {} bytes ({n} rows of {zrow}), got {}",
                        n * zrow,
                        zt.codes.len()
                    ));
                }
                let mut z = vec![0u64; n * blocks];
                for r in 0..n {
                    let row = &zt.codes[r * zrow..(r + 1) * zrow];
                    for j in 0..blocks {
                        z[r * blocks + j] = code(row, j);
                    }
                }
                z
            }
        }
    };
    let zp = im.constant(Tensor {
        elem: wq.ty.elem,
        shape: sshape,
        codes: arrange(&zp_codes),
    });
    let dq_ty = TensorType::new(vec![k as u64, n as u64], a.ty.elem);
    let block_rows = if groups.is_some() { 1 } else { block as u64 };
    let g = Granularity::Blocked {
        blocks: vec![(0, block_rows)],
    };
    let wf = im.emit(
        OpKind::Dequantize { granularity: g },
        &[&wq, &s, &zp],
        dq_ty,
    )?;
    if a.ty.shape.last() != Some(&(k as u64)) {
        return Err(format!(
            "shape mismatch: A {} does not end in K = {k}",
            a.ty
        ));
    }
    let y = matmul(im, &a, &wf, a.ty.elem)?;
    if let Some((what, why)) = float_note {
        im.note(&wq, node, what.clone(), why.clone());
        im.note(&wf, node, what.clone(), why.clone());
        // The matmul itself (under the reshape a rank-1 A adds).
        let mm = match im.f.def_op(y.v) {
            Some(op) if matches!(im.f.op(op).kind, OpKind::Reshape) => im.f.op(op).operands[0],
            _ => y.v,
        };
        im.f.note_value(
            mm,
            lowbit_ir::OpNote {
                node: node.name.clone().unwrap_or_default(),
                op_type: "MatMulNBits".into(),
                what,
                why,
            },
        );
    }
    match im.opt_input(node, 5)? {
        None => Ok(y),
        Some(bias) => binary(im, BinaryOp::Add, &y, &bias),
    }
}
