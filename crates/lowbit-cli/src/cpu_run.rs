//! `lowbit run --backend cpu`: runs a function with its quantized matmuls
//! on the JIT-compiled CPU kernels of `lowbit-llvm`.
//!
//! What maps onto a kernel (everything else runs on the interpreter):
//! * a float `matmul x, w` with `w = dequantize(q, scale[, zero_point])` to
//!   `f32` of constants, or `w = mul(dequantize(q, s), t)` with `t` a scalar
//!   `f32` constant (NVFP4's tensor scale), and the optimizer's fused
//!   `qmatmul x, q, scale[, zp][, bias]` with any activation (ReLU, GELU,
//!   tanh GELU, SiLU run in the kernel's epilogue). `x` is `f32`/`f16`/
//!   `bf16` of shape `[.., n, k]` (leading dims flattened into the kernel's
//!   `n`), the product `f32`, `q` a 2-D `[k, m]` tensor of a type the
//!   kernels decode, scales per output column (`axis = 1`), per tensor, or
//!   in blocks along `k` (`axis = 0`, block size 16 or a multiple of 32).
//!   In the unfused graph a following `add` of an `f32 [m]` bias and a
//!   `relu`/`gelu`/`silu` fold into the kernel too, when each intermediate
//!   value has no other use. A `qmatmul` requantize epilogue (to `f32`,
//!   then `quantize`) runs the kernel and then the `quantize` on the
//!   interpreter, and the summary says so;
//! * an integer `matmul` or `matmul_int` to `i32` (wrapping) with a
//!   constant `i8`, `i4` or `u4` weight and `u8`/`i8` activations (the
//!   exact W8A8/W4A8 kernel; `matmul_int`'s constant per-tensor zero points
//!   are folded into the packed weights as `w − zw`, when that fits `i4` or
//!   `i8`, and into the kernel's per-row offsets as `−zx·Σ(w − zw)`), with,
//!   folded into the kernel, a following wrapping `add` of a constant
//!   `i32 [m]` bias, a
//!   `relu`, and a `requant_dyadic` to `i8` (saturating, nearest-even,
//!   per-tensor or per output column, multipliers below 2^31, shifts up to
//!   62), on the AMX-INT8 kernel instead for `matmul_int {schedule = amx}`
//!   (`i8`, `i4` and `u4` weights as they are, 4-bit ones kept 4-bit;
//!   any other integer weights less their zero point packed as `i4` or
//!   `i8`, whichever is the narrowest that holds them; never another
//!   kernel in its place); `b1` × `b1` (the W1A1
//!   popcount kernel); or, for
//!   `matmul_int {schedule = bit_serial}` and any other 1- to 8-bit integer
//!   or `b1` weight with 1- to 8-bit integer activations, the bit-serial
//!   kernel (constant zero points, no epilogue). These are bit-exact;
//! * the opt-in `quantize-activations` form, a float matmul (or `qmatmul`)
//!   whose activation is `dequantize(quantize(x, s), s)` with
//!   `s = absmax_scale x {block = 32, qmax = 127}` (to `i8`, nearest-even,
//!   saturating, blocked by 32 along the last axis): with `i4` or `i8`
//!   weights in groups of 32 with f16 scales and no epilogue, the block-dot
//!   kernel takes `x` itself and quantizes it per call exactly as the
//!   interpreter does (within `codegen/blockdot.rs`'s bound); otherwise the
//!   float kernels multiply the dequantized activation.
//!
//! Memory: the dequantized `f32` weights are never built, and the weight
//! codes are never decoded to a `u64` each: they are packed straight from
//! the constant's bytes ([`TransposedCodes`], `PackedWeights::pack_with`).
//! Kernels are compiled when the plans are made, but [`run_owned`] packs
//! each matmul's weights only when the matmul runs and drops them after
//! it, releases a weight constant's bytes (weights, scales, zero points)
//! from the function it owns once no later op reads them, and drops each
//! value after its last use; so a run holds the model's constants plus
//! one matmul's packed weights (BENCHMARKS.md "Memory"). Constants that
//! share one buffer (an imported ONNX file) free it with the last of them,
//! so the model's bytes stay resident to the last matmul. A packing error
//! (not expected once a plan is made) fails the run at that op instead of
//! leaving the op to the interpreter. [`CpuRun::summary`] lists what ran where and
//! why each unmatched matmul (or `requant_dyadic` after a mapped matmul)
//! did not map; `lowbit run` prints it on standard error. Float results are
//! within the bounds documented in `lowbit_llvm::codegen` of the
//! interpreter's, not bit-identical (so a `qmatmul` requantize epilogue may
//! differ by one unit where the float result lies within that bound of a
//! rounding boundary).

use lowbit::interp::{eval_op, InterpError};
use lowbit::ir::{
    BinaryOp, ConstData, Function, Granularity, IntSchedule, Layout, Op, OpKind, QRequant, Tensor,
    TensorType, Value,
};
use lowbit::numerics::{ElemType, Overflow, Rounding};
use lowbit_llvm::{
    compile, ActQuant, Activation, Activations, Dim, Epilogue, GemmKernel, GemmSpec, PackedWeights,
    Requant, TensorScale, WeightGranularity, WeightSpec,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What ran where.
pub struct CpuRun {
    /// The outputs, in function order.
    pub outputs: Vec<(String, Tensor)>,
    /// `(op label, kernel)` for each matmul on a CPU kernel.
    pub on_cpu: Vec<(String, String)>,
    /// `(op label, reason)` for each matmul-like op left to the interpreter.
    pub not_mapped: Vec<(String, String)>,
    /// Op names run on the interpreter, with counts.
    pub on_interp: Vec<(String, usize)>,
}

impl CpuRun {
    /// The notice `lowbit run` prints on standard error.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "backend cpu: {} matmul(s) on JIT kernels",
            self.on_cpu.len()
        );
        for (op, k) in &self.on_cpu {
            s.push_str(&format!("\n  {op}: {k}"));
        }
        if self.on_interp.is_empty() {
            s.push_str("\nno op ran on the interpreter");
        } else {
            let parts: Vec<String> = self
                .on_interp
                .iter()
                .map(|(n, c)| format!("{n} x{c}"))
                .collect();
            s.push_str(&format!(
                "\nran on the reference interpreter (no CPU kernel for them yet): {}",
                parts.join(", ")
            ));
        }
        for (op, why) in &self.not_mapped {
            s.push_str(&format!("\n  {op} not on a CPU kernel: {why}"));
        }
        s
    }
}

/// A matmul (with the ops fused after it) that maps onto a kernel: its
/// spec, packed weights and epilogue operands (shared by the JIT run and
/// the ahead-of-time compiler, `aot_model`).
pub struct Plan {
    /// The kernel's spec.
    pub spec: GemmSpec,
    /// The weights, to be packed for `spec` ([`Plan::pack`]).
    pub weights: WeightSource,
    /// The matmul op.
    pub op: Op,
    /// The activation operand.
    pub x: Value,
    /// The run-time `f32` bias operand of a float kernel's epilogue.
    pub bias: Option<Value>,
    /// The constant `i32` bias of the W8A8/W4A8 epilogue (the graph's
    /// bias; an activation zero point is in the packed row offsets).
    pub int_bias: Option<Vec<i32>>,
    /// The W8A8 dyadic requantization (per output column).
    pub requant: Option<DyadicParams>,
    /// A `qmatmul` requantize epilogue, run on the interpreter after the
    /// kernel: the `quantize` op and its scale (and zero point) operands.
    pub quantize: Option<(OpKind, Vec<Value>)>,
    /// The ops fused after the matmul, innermost first (empty for a
    /// matmul alone); the plan computes the last one's result.
    pub fused: Vec<Op>,
    /// Bit-serial `matmul_int` zero points `(za, zw)` (constants; the
    /// W8A8/W4A8 kernel has them in its packed weights and row offsets).
    pub zero_points: Option<(i32, i32)>,
}

impl Plan {
    /// Packs the weights for the plan's kernel, reading the constant's
    /// bytes directly.
    pub fn pack(&self) -> Result<PackedWeights, String> {
        let src = self.weights.codes.in_default_layout()?;
        let read = src.reader();
        match &self.weights.kind {
            SourceKind::Float {
                scales,
                zero_points,
            } => {
                let s = scales.decode()?;
                let z = zero_points.as_ref().map(|z| z.decode()).transpose()?;
                PackedWeights::pack_with(&self.spec, read, &s, z.as_ref())
            }
            SourceKind::Int {
                center: None,
                act_zero_point,
            } => PackedWeights::pack_int_with(&self.spec, read, *act_zero_point),
            SourceKind::Int {
                center: Some(zw),
                act_zero_point,
            } => {
                // `centered_type` checked that every weight is an integer
                // and that `w - zw` fits the spec's type (the packer masks
                // it to that width).
                let elem = src.elem;
                let centered =
                    |r, c| (elem.decode_int(read(r, c)).unwrap_or(0) - i128::from(*zw)) as u64;
                PackedWeights::pack_int_with(&self.spec, centered, *act_zero_point)
            }
        }
        .map_err(|e| format!("packing the weights: {e}"))
    }
}

/// Dyadic requantization parameters, one per output column.
pub struct DyadicParams {
    /// The multipliers (below 2^31).
    pub multipliers: Vec<i32>,
    /// The right shifts (up to 62).
    pub shifts: Vec<u32>,
    /// The output zero point.
    pub zero_point: i8,
}

/// A plan with its JIT-compiled kernel.
struct Mapped {
    kernel: Arc<GemmKernel>,
    plan: Plan,
}

/// Compiles a plan's kernel.
fn jit(p: Plan) -> Result<Mapped, String> {
    Ok(Mapped {
        kernel: compile(&p.spec).map_err(|e| e.to_string())?,
        plan: p,
    })
}

fn label(f: &Function, op: Op) -> String {
    let name = f.op(op).kind.name();
    match f.op_spans.get(&op) {
        Some(sp) => format!("'{name}' at line {}", sp.line),
        None => format!("'{name}' (op #{})", op_index(f, op)),
    }
}

fn op_index(f: &Function, op: Op) -> usize {
    f.ops().iter().position(|&o| o == op).unwrap_or(0)
}

fn constant_of(f: &Function, v: Value) -> Result<Tensor, String> {
    let op = f
        .def_op(v)
        .ok_or("the weight is a function input, not a constant")?;
    let d = f.op(op);
    if !matches!(d.kind, OpKind::Constant(_)) {
        return Err(format!(
            "the weight comes from '{}', not a constant",
            d.kind.name()
        ));
    }
    let mut t = eval_op(&d.kind, &[], &[f.ty(v).clone()]).map_err(|e| e.to_string())?;
    Ok(t.remove(0))
}

/// The codes of a rank-2 constant `[rows, cols]` (a weight `[k, m]`) in
/// transposed order (the kernel's `[m, k]`), read straight from the
/// constant's default-layout bytes, which it shares with the function
/// rather than copies: no `u64` per element (8 bytes, 16 times an `i4`
/// weight) is built to pack a weight.
#[derive(Clone)]
pub struct TransposedCodes {
    data: ConstData,
    /// The constant's layout (see [`TransposedCodes::in_default_layout`]).
    layout: Layout,
    elem: ElemType,
    /// The constant's `[rows, cols]`: the kernel's `k` and `m`.
    rows: usize,
    cols: usize,
    /// The constant op, whose bytes `run_owned` releases once packed.
    op: Op,
}

impl TransposedCodes {
    /// The constant `v` (its bytes shared, their size checked).
    fn of(f: &Function, v: Value) -> Result<TransposedCodes, String> {
        let ty = f.ty(v);
        let op = f
            .def_op(v)
            .ok_or("the weight is a function input, not a constant")?;
        let OpKind::Constant(d) = &f.op(op).kind else {
            return Err(format!(
                "the weight comes from '{}', not a constant",
                f.op(op).kind.name()
            ));
        };
        if ty.shape.len() != 2 {
            return Err(format!("the weight has rank {}, not 2", ty.shape.len()));
        }
        if d.bytes().len() as u64 != ty.byte_size() {
            return Err(format!(
                "the weight's constant has {} bytes, its type {ty} needs {}",
                d.bytes().len(),
                ty.byte_size()
            ));
        }
        Ok(TransposedCodes {
            data: d.clone(),
            layout: ty.layout.clone(),
            elem: ty.elem,
            rows: ty.shape[0] as usize,
            cols: ty.shape[1] as usize,
            op,
        })
    }

    /// These codes with default-layout bytes, which the readers below
    /// assume: themselves, or, for a constant in another layout, a copy
    /// re-encoded through its decoded codes (a `u64` each while it is
    /// made), held only as long as the caller keeps it.
    fn in_default_layout(&self) -> Result<std::borrow::Cow<'_, TransposedCodes>, String> {
        if self.layout.is_default() {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        let shape = vec![self.rows as u64, self.cols as u64];
        let ty = TensorType::new(shape, self.elem).with_layout(self.layout.clone());
        let t = Tensor::from_bytes(&ty, self.data.bytes())?;
        Ok(std::borrow::Cow::Owned(TransposedCodes {
            data: ConstData::new(t.to_bytes(&Layout::default())),
            layout: Layout::default(),
            ..self.clone()
        }))
    }

    /// `(m, k)`: the kernel's view of the `[k, m]` weight.
    fn mk(&self) -> (usize, usize) {
        (self.cols, self.rows)
    }

    /// Reads the code of kernel element `(r, c)` (row `r` of the kernel's
    /// `[m, k]`, i.e. constant element `[c, r]`); default layout only.
    fn reader(&self) -> impl Fn(usize, usize) -> u64 + '_ {
        let (bytes, bits, m) = (self.data.bytes(), self.elem.bits() as usize, self.cols);
        move |r, c| stream_code(bytes, c * m + r, bits)
    }

    /// Every code in the constant's own order; default layout only.
    fn codes(&self) -> impl Iterator<Item = u64> + '_ {
        let (bytes, bits) = (self.data.bytes(), self.elem.bits() as usize);
        (0..self.rows * self.cols).map(move |s| stream_code(bytes, s, bits))
    }
}

/// Element `s` of a default-layout byte stream of `bits`-bit codes: stream
/// bits `[s*bits, (s+1)*bits)`, bit `b` being bit `b % 8` of byte `b / 8`
/// (LSB first; the caller checked the length).
#[inline]
fn stream_code(bytes: &[u8], s: usize, bits: usize) -> u64 {
    if bits <= 8 {
        // Within two bytes (the common sub-byte and byte weights).
        let start = s * bits;
        let (first, shift) = (start / 8, start % 8);
        let hi = if shift + bits > 8 {
            bytes[first + 1]
        } else {
            0
        };
        let w = u16::from_le_bytes([bytes[first], hi]);
        return u64::from(w >> shift) & ((1u64 << bits) - 1);
    }
    if bits.is_multiple_of(8) {
        let nb = bits / 8;
        let mut b = [0u8; 8];
        b[..nb].copy_from_slice(&bytes[s * nb..(s + 1) * nb]);
        return u64::from_le_bytes(b);
    }
    let start = s * bits;
    let (first, shift) = (start / 8, start % 8);
    let span = (shift + bits).div_ceil(8);
    let mut w = 0u128;
    for (j, &b) in bytes[first..first + span].iter().enumerate() {
        w |= u128::from(b) << (8 * j);
    }
    ((w >> shift) as u64) & ((1u64 << bits) - 1)
}

/// A constant operand of the packing besides the weight (scales, zero
/// points), kept as its bytes until packed (decoded, each a `u64` per
/// element, only then), with the re-layout the kernel wants.
#[derive(Clone)]
struct ConstOperand {
    data: ConstData,
    ty: TensorType,
    op: Op,
    relayout: Relayout,
}

/// How a scale-shaped operand becomes the kernel's `[m, groups]`.
#[derive(Clone, Copy)]
enum Relayout {
    /// Already one per output column.
    AsIs,
    /// One for the tensor, repeated for each of `m` columns.
    Widen(usize),
    /// `[groups, m]` blocks along `k`, transposed.
    Transpose,
}

impl ConstOperand {
    fn of(f: &Function, v: Value, relayout: Relayout) -> Result<ConstOperand, String> {
        let op = f
            .def_op(v)
            .ok_or("the weight is a function input, not a constant")?;
        let OpKind::Constant(data) = &f.op(op).kind else {
            return Err(format!(
                "the weight comes from '{}', not a constant",
                f.op(op).kind.name()
            ));
        };
        if matches!(relayout, Relayout::Transpose) && f.ty(v).rank() != 2 {
            return Err(format!("the blocked scales {} are not rank 2", f.ty(v)));
        }
        Ok(ConstOperand {
            data: data.clone(),
            ty: f.ty(v).clone(),
            op,
            relayout,
        })
    }

    /// The operand decoded and re-laid out.
    fn decode(&self) -> Result<Tensor, String> {
        let kind = OpKind::Constant(self.data.clone());
        let t = eval_op(&kind, &[], std::slice::from_ref(&self.ty))
            .map_err(|e| e.to_string())?
            .remove(0);
        Ok(match self.relayout {
            Relayout::AsIs => t,
            Relayout::Widen(m) => Tensor {
                elem: t.elem,
                shape: vec![m as u64],
                codes: vec![t.codes.first().copied().unwrap_or(0); m],
            },
            Relayout::Transpose => transpose(&t),
        })
    }
}

/// A plan's weights, still to be packed ([`Plan::pack`]): `lowbit run`
/// packs each just before its matmul runs and drops the packed form after
/// it, so the packed weights of one matmul are alive at a time.
#[derive(Clone)]
pub struct WeightSource {
    /// The weight constant's codes.
    pub codes: TransposedCodes,
    kind: SourceKind,
}

impl WeightSource {
    /// The constant ops the packing reads.
    fn constants(&self) -> Vec<Op> {
        let mut ops = vec![self.codes.op];
        if let SourceKind::Float {
            scales,
            zero_points,
        } = &self.kind
        {
            ops.push(scales.op);
            ops.extend(zero_points.as_ref().map(|z| z.op));
        }
        ops
    }
}

#[derive(Clone)]
enum SourceKind {
    /// Dequant-fused float kernels: scales (and zero points).
    Float {
        scales: Box<ConstOperand>,
        zero_points: Option<Box<ConstOperand>>,
    },
    /// Integer kernels: the weights, less `center` when given (as
    /// [`centered_type`] chose), and the activation zero point folded into
    /// the W8A8/W4A8 row offsets.
    Int {
        center: Option<i64>,
        act_zero_point: i64,
    },
}

/// `[rows, cols]` row-major codes transposed to `[cols, rows]`.
fn transpose(t: &Tensor) -> Tensor {
    let (r, c) = (t.shape[0] as usize, t.shape[1] as usize);
    let mut codes = vec![0u64; r * c];
    for i in 0..r {
        for j in 0..c {
            codes[j * r + i] = t.codes[i * c + j];
        }
    }
    Tensor {
        elem: t.elem,
        shape: vec![c as u64, r as u64],
        codes,
    }
}

/// Rows `n` of an activation `[.., n, k]`: the product of all but the
/// last dimension (leading dimensions are flattened into the kernel's `n`).
fn rows_of(t: &TensorType) -> Result<usize, String> {
    if t.shape.len() < 2 {
        return Err(format!("the activation must have rank 2 or more, not {t}"));
    }
    Ok(t.shape[..t.shape.len() - 1].iter().product::<u64>() as usize)
}

/// A plan for `spec` with nothing fused.
fn plain(spec: GemmSpec, weights: WeightSource, op: Op, x: Value) -> Plan {
    Plan {
        spec,
        weights,
        op,
        x,
        bias: None,
        int_bias: None,
        requant: None,
        quantize: None,
        fused: Vec::new(),
        zero_points: None,
    }
}

/// The single element of a constant scalar (any shape of one element).
fn scalar_of(f: &Function, v: Value, what: &str) -> Result<Tensor, String> {
    if !f
        .def_op(v)
        .is_some_and(|o| matches!(f.op(o).kind, OpKind::Constant(_)))
    {
        return Err(format!("the {what} is not a constant"));
    }
    let t = constant_of(f, v)?;
    if t.codes.len() != 1 {
        return Err(format!("the {what} is not a single element"));
    }
    Ok(t)
}

fn is_bit_serial(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::MatMulInt {
            schedule: IntSchedule::BitSerial,
            ..
        }
    )
}

/// `i4` and `u4`: the 4-bit weights of the W4A8 kernel.
const I4: ElemType = ElemType::Int {
    bits: 4,
    signed: true,
};
const U4: ElemType = ElemType::Int {
    bits: 4,
    signed: false,
};

fn is_byte(e: ElemType) -> bool {
    [ElemType::U8, ElemType::I8].contains(&e)
}

/// Maps an integer `matmul x, w` or `matmul_int x, w[, zx, zw]` to `i32`
/// (wrapping) with a constant `w` (and constant per-tensor zero points):
/// `b1 x b1` onto the W1A1 kernel; `u8`/`i8` activations on the direct
/// schedule onto the W8A8/W4A8 kernel when the centered weights `w - zw`
/// are `i8`, `i4` or `u4` (or fit `i4`/`i8`, see [`center`]), with `zx`
/// folded into the kernel's per-row offsets (`−zx · Σ_k (w - zw)[k, r]`,
/// exact modulo 2^32 like the wrapping result); `schedule = amx` onto the
/// AMX-INT8 kernel when the activations are `u8`/`i8` and `w - zw` is
/// `i8`, `i4` or `u4` or fits `i8` (else not on any kernel, with the
/// reason); everything else (other
/// widths, `schedule = bit_serial`) onto the bit-serial kernel, which
/// takes both zero points at run time.
fn map_int_matmul(f: &Function, op: Op) -> Result<Plan, String> {
    let d = f.op(op);
    let (x, w) = (d.operands[0], d.operands[1]);
    let (xt, rt) = (f.ty(x), f.ty(d.results[0]));
    let wraps = matches!(
        d.kind,
        OpKind::MatMul {
            overflow: Overflow::Wrap
        } | OpKind::MatMulInt {
            overflow: Overflow::Wrap,
            ..
        }
    );
    if rt.elem != ElemType::I32 || !wraps {
        return Err(format!(
            "integer kernels write i32 and wrap on overflow, not {} ({})",
            rt.elem,
            d.kind
                .attrs()
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let n = rows_of(xt)?;
    let q = TransposedCodes::of(f, w)?;
    let zero_points = match d.operands.get(2..4) {
        Some(&[za, zw]) => {
            let value = |v: Value, what: &str| -> Result<i32, String> {
                let t = scalar_of(f, v, &format!("{what} zero point"))?;
                t.to_i128()
                    .and_then(|v| v.first().copied())
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| format!("the {what} zero point {} is not one integer", t.ty()))
            };
            Some((value(za, "activation")?, value(zw, "weight")?))
        }
        _ => None,
    };
    let (m, k) = q.mk();
    let n = Dim::Static(n);
    let int = |codes: TransposedCodes, center: Option<i64>, act_zero_point: i64| WeightSource {
        codes,
        kind: SourceKind::Int {
            center,
            act_zero_point,
        },
    };
    let (zx, zw) = zero_points.unwrap_or((0, 0));
    if matches!(
        d.kind,
        OpKind::MatMulInt {
            schedule: IntSchedule::Amx,
            ..
        }
    ) {
        // `matmul_int {schedule = amx}` runs on the AMX kernel or not on
        // a kernel at all (never on another one in its place); the JIT
        // refuses it (and the op stays on the interpreter, with the
        // reason) where the host has no AMX-INT8.
        if !is_byte(xt.elem) {
            return Err(format!(
                "the amx schedule multiplies u8 or i8 activations, not {}",
                xt.elem
            ));
        }
        // `i8`, `i4` and `u4` weights as they are (4-bit ones stay 4-bit
        // in memory: the kernel splits them per k block); any other
        // integer weights less their zero point in the narrowest of `i4`
        // and `i8` that holds them all (the centering path writes each
        // value, sign-extended, at the spec's width).
        let elem = match centered_type(&q, i64::from(zw)) {
            Ok(e) if [ElemType::I8, I4, U4].contains(&e) => e,
            _ => {
                let (lo, hi) = centered_range(&q, i64::from(zw))?;
                if lo < -128 || hi > 127 {
                    return Err(format!(
                        "the amx schedule takes i8, i4 or u4 weights (W8A8/W4A8): these {} weights less {zw} span {lo}..={hi}",
                        q.elem
                    ));
                }
                ElemType::I8
            }
        };
        let mut spec = GemmSpec::int(m, k, n, elem, xt.elem);
        spec.schedule = IntSchedule::Amx;
        spec.check("cpu").map_err(|e| e.to_string())?;
        let center = (elem != q.elem || zw != 0).then_some(i64::from(zw));
        return Ok(plain(spec, int(q, center, i64::from(zx)), op, x));
    }
    if xt.elem == ElemType::Bipolar {
        // b1 x b1 is the W1A1 kernel on the direct and bit-serial
        // schedules.
        if q.elem != ElemType::Bipolar {
            return Err(format!("b1 activations need b1 weights, not {}", q.elem));
        }
        if zero_points.is_some_and(|z| z != (0, 0)) {
            return Err("the W1A1 kernel takes no zero points".into());
        }
        let spec = GemmSpec::binary(m, k, n);
        spec.check("cpu").map_err(|e| e.to_string())?;
        return Ok(plain(spec, int(q, None, 0), op, x));
    }
    if !is_bit_serial(&d.kind) && is_byte(xt.elem) {
        // The weights w - zw packed as they are (zw = 0) or in the
        // narrowest type holding them; zx goes into the row offsets.
        let vnni_types = [ElemType::I8, I4, U4];
        if let Some(elem) = centered_type(&q, i64::from(zw))
            .ok()
            .filter(|e| vnni_types.contains(e))
        {
            let spec = GemmSpec::int(m, k, n, elem, xt.elem);
            spec.check("cpu").map_err(|e| e.to_string())?;
            let center = (zw != 0).then_some(i64::from(zw));
            return Ok(plain(spec, int(q, center, i64::from(zx)), op, x));
        }
    }
    // The bit-serial kernel checks the element types itself.
    let mut spec = GemmSpec::bit_serial(m, k, n, q.elem, xt.elem);
    spec.weight.zero_point = zero_points.is_some();
    spec.check("cpu").map_err(|e| e.to_string())?;
    let mut p = plain(spec, int(q, None, 0), op, x);
    p.zero_points = zero_points;
    Ok(p)
}

/// The type of the integer weights `w - zw`: `w`'s own when `zw` is 0,
/// else the narrowest kernel weight type that holds them all (`i4`, then
/// `i8`), found by one pass over the constant's bytes.
fn centered_type(w: &TransposedCodes, zw: i64) -> Result<ElemType, String> {
    if zw == 0 {
        return Ok(w.elem);
    }
    let (lo, hi) = centered_range(w, zw)?;
    let bits = if (-8..=7).contains(&lo) && (-8..=7).contains(&hi) {
        4
    } else if (-128..=127).contains(&lo) && (-128..=127).contains(&hi) {
        8
    } else {
        return Err(format!(
            "the centered weights w - {zw} span {lo}..={hi}, beyond i8"
        ));
    };
    Ok(ElemType::Int { bits, signed: true })
}

/// The smallest and largest of the integer weights `w - zw` (and 0), by
/// one pass over the constant's bytes.
fn centered_range(w: &TransposedCodes, zw: i64) -> Result<(i128, i128), String> {
    let w = w.in_default_layout()?;
    let (mut lo, mut hi) = (0i128, 0i128);
    for c in w.codes() {
        let v = w
            .elem
            .decode_int(c)
            .ok_or_else(|| format!("{} weights are not integers", w.elem))?
            - i128::from(zw);
        (lo, hi) = (lo.min(v), hi.max(v));
    }
    Ok((lo, hi))
}

/// Tries to map `matmul x, w`, `matmul_int x, w` or `qmatmul x, wq, ...`
/// (op `op`) onto a kernel spec; the error says why it does not map.
pub fn plan_matmul(f: &Function, op: Op) -> Result<Plan, String> {
    let d = f.op(op);
    let (x, w) = (d.operands[0], d.operands[1]);
    let xt = f.ty(x);
    match &d.kind {
        OpKind::MatMul { .. } | OpKind::MatMulInt { .. } if xt.elem.is_integral() => {
            return map_int_matmul(f, op)
        }
        OpKind::QMatMul {
            granularity,
            dequant_type,
            has_zero_point,
            has_bias,
            weight_lhs,
            activation,
            requant,
        } => {
            if *weight_lhs {
                return Err("the weight is the left operand".into());
            }
            if *dequant_type != ElemType::F32 {
                return Err(format!(
                    "the weight is dequantized to {dequant_type}, not f32"
                ));
            }
            let act = *activation;
            let z = has_zero_point.then(|| d.operands[3]);
            let nfloat = 3 + *has_zero_point as usize + *has_bias as usize;
            let bias = if *has_bias {
                let b = d.operands[nfloat - 1];
                let m = f.ty(w).shape.get(1).copied().unwrap_or(0);
                check_bias(f, b, m, ElemType::F32)?;
                Some(b)
            } else {
                None
            };
            let quantize = match requant {
                None => {
                    if f.ty(d.results[0]).elem != ElemType::F32 {
                        return Err(format!(
                            "the result is {}, the kernels write f32",
                            f.ty(d.results[0]).elem
                        ));
                    }
                    None
                }
                Some(QRequant {
                    float_type,
                    granularity,
                    rounding,
                    saturate,
                    ..
                }) => {
                    if *float_type != ElemType::F32 {
                        return Err(format!(
                            "the requantize epilogue quantizes a {float_type} product; the kernels write f32"
                        ));
                    }
                    Some((
                        OpKind::Quantize {
                            granularity: granularity.clone(),
                            rounding: *rounding,
                            saturate: *saturate,
                            stochastic: None,
                        },
                        d.operands[nfloat..].to_vec(),
                    ))
                }
            };
            let epilogue = Epilogue {
                bias: bias.is_some(),
                activation: act,
                requantize: false,
            };
            let mut p = map_dequantized(f, op, (w, d.operands[2], z), granularity, epilogue, None)?;
            p.bias = bias;
            p.quantize = quantize;
            return Ok(p);
        }
        OpKind::MatMul { .. } => {}
        other => return Err(format!("'{}' has no CPU kernel", other.name())),
    }
    if f.ty(d.results[0]).elem != ElemType::F32 {
        return Err(format!(
            "the result is {}, the kernels write f32",
            f.ty(d.results[0]).elem
        ));
    }
    if f.ty(w).elem != ElemType::F32 {
        return Err(format!(
            "the weight is dequantized to {}, not f32",
            f.ty(w).elem
        ));
    }
    let deq = f
        .def_op(w)
        .ok_or("the weight is a function input, not a dequantized constant")?;
    let mut dd = f.op(deq);
    let mut tensor_scale = None;
    // NVFP4's two-level scale: `mul(dequantize(q, s), t)`, `t` a scalar f32
    // constant.
    if let OpKind::Binary {
        op: BinaryOp::Mul, ..
    } = dd.kind
    {
        let defs: Vec<Option<Op>> = dd.operands.iter().map(|&v| f.def_op(v)).collect();
        let which = defs
            .iter()
            .position(|o| o.is_some_and(|o| matches!(f.op(o).kind, OpKind::Dequantize { .. })));
        let (Some(i), Some(&Some(inner))) = (which, which.map(|i| &defs[i])) else {
            return Err("the weight is a 'mul', but of no 'dequantize'".into());
        };
        let t = scalar_of(f, dd.operands[1 - i], "tensor scale of the weight's 'mul'")?;
        if t.elem != ElemType::F32 || f.ty(dd.operands[i]).shape != f.ty(w).shape {
            return Err(format!(
                "the weight's 'mul' is not by a scalar f32 constant (a {} {})",
                f.ty(dd.operands[1 - i]),
                t.elem
            ));
        }
        tensor_scale = Some(TensorScale(t.codes[0] as u32));
        dd = f.op(inner);
    }
    let OpKind::Dequantize { granularity } = &dd.kind else {
        return Err(format!(
            "the weight comes from '{}', not from 'dequantize'",
            dd.kind.name()
        ));
    };
    map_dequantized(
        f,
        op,
        (dd.operands[0], dd.operands[1], dd.operands.get(2).copied()),
        granularity,
        Epilogue::default(),
        tensor_scale,
    )
}

/// Checks that `b` holds one `elem` per output column: shape `[m]` (or
/// with leading 1s).
fn check_bias(f: &Function, b: Value, m: u64, elem: ElemType) -> Result<(), String> {
    let bt = f.ty(b);
    if bt.elem != elem || bt.num_elements() != m || bt.shape.iter().rev().skip(1).any(|&d| d != 1) {
        return Err(format!("the bias {bt} is not one {elem} per output column"));
    }
    Ok(())
}

/// Maps matmul `op` (activation operand 0) with a weight `dequantize(q, s[, z])` of
/// constants (times a tensor scale) onto a dequant-fused kernel.
fn map_dequantized(
    f: &Function,
    op: Op,
    (qv, sv, zv): (Value, Value, Option<Value>),
    granularity: &Granularity,
    epilogue: Epilogue,
    tensor_scale: Option<TensorScale>,
) -> Result<Plan, String> {
    let x = f.op(op).operands[0];
    // The opt-in quantized activation (`quantize-activations`): the
    // block-dot kernel takes the float activation and quantizes it itself,
    // when the weights suit it; otherwise the float kernel multiplies the
    // dequantized activation (the graph's value) exactly as any other.
    let quantized = quantized_activation(f, x);
    let xt = f.ty(x);
    if ![ElemType::F32, ElemType::F16, ElemType::BF16].contains(&xt.elem) {
        return Err(format!(
            "the activation must be an f32/f16/bf16 tensor, not {xt}"
        ));
    }
    let n = rows_of(xt)?;
    // Read from the constant's bytes when packed: nothing weight-sized here.
    let qt = TransposedCodes::of(f, qv)?;
    let (m, k) = qt.mk();
    // Scales (and zero points) are re-laid out as [m, groups] for the
    // kernel when packed.
    let (gran, relayout) = match granularity {
        Granularity::PerAxis { axis: 1 } => (WeightGranularity::PerChannel, Relayout::AsIs),
        Granularity::PerTensor => (WeightGranularity::PerChannel, Relayout::Widen(m)),
        Granularity::Blocked { blocks } if blocks.len() == 1 && blocks[0].0 == 0 => (
            WeightGranularity::Group(blocks[0].1 as usize),
            Relayout::Transpose,
        ),
        g => {
            return Err(format!(
                "scales {g:?} are not per output column or blocked along k"
            ))
        }
    };
    let s = ConstOperand::of(f, sv, relayout)?;
    let z = match zv {
        Some(zv) => Some(ConstOperand::of(f, zv, relayout)?),
        None => None,
    };
    let spec = GemmSpec {
        m,
        k,
        n: Dim::Static(n),
        weight: WeightSpec {
            dtype: qt.elem,
            granularity: gran,
            scale: s.ty.elem,
            zero_point: z.is_some(),
            layout: None,
            tensor_scale,
        },
        act: xt.elem,
        epilogue,
        schedule: IntSchedule::Direct,
        act_quant: None,
    };
    let weights = WeightSource {
        codes: qt,
        kind: SourceKind::Float {
            scales: Box::new(s),
            zero_points: z.map(Box::new),
        },
    };
    if let Some(x0) = quantized {
        let bd = GemmSpec {
            act_quant: Some(ActQuant::I8_32),
            ..spec.clone()
        };
        if bd.check("host").is_ok() {
            return Ok(plain(bd, weights, op, x0));
        }
    }
    Ok(plain(spec, weights, op, x))
}

/// If `x` is `dequantize(quantize(x0, s), s)` with `s = absmax_scale(x0)
/// {block = 32, qmax = 127}`, both blocked by 32 along the last axis, the
/// quantize to `i8`, nearest-even and saturating, without zero points,
/// and `x0` is `f32`: the form `quantize-activations {bits=8 block=32}`
/// writes, which the block-dot kernel computes from `x0` (its activation
/// codes are the interpreter's bit for bit). Returns `x0`.
fn quantized_activation(f: &Function, x: Value) -> Option<Value> {
    let deq = f.op(f.def_op(x)?);
    let OpKind::Dequantize { granularity } = &deq.kind else {
        return None;
    };
    let (&[qv, sv], rank) = (&deq.operands[..], f.ty(x).rank()) else {
        return None;
    };
    let blocked = Granularity::Blocked {
        blocks: vec![(rank.checked_sub(1)? as u32, 32)],
    };
    let quant = f.op(f.def_op(qv)?);
    let scale = f.op(f.def_op(sv)?);
    let ok = *granularity == blocked
        && f.ty(x).elem == ElemType::F32
        && f.ty(qv).elem == ElemType::I8
        && quant.kind
            == OpKind::Quantize {
                granularity: blocked,
                rounding: Rounding::NearestEven,
                saturate: true,
                stochastic: None,
            }
        && quant.operands.len() == 2
        && quant.operands[1] == sv
        && scale.kind
            == OpKind::AbsMaxScale {
                block: 32,
                qmax: 127,
            }
        && scale.operands[0] == quant.operands[0]
        && f.ty(quant.operands[0]).elem == ElemType::F32;
    ok.then_some(quant.operands[0])
}

/// Ops that may follow a matmul into one kernel, outermost first
/// (`requant_dyadic`, then an activation, then `add`).
fn chain_stage(k: &OpKind) -> Option<u8> {
    match k {
        OpKind::RequantDyadic { .. } => Some(3),
        OpKind::Relu | OpKind::Gelu { .. } | OpKind::Silu => Some(2),
        OpKind::Binary {
            op: BinaryOp::Add, ..
        } => Some(1),
        _ => None,
    }
}

/// The matmul and the ops after it, innermost first, of a chain ending at
/// `end` (`[add] [relu|gelu|silu] [requant_dyadic]` over a `matmul` or
/// `matmul_int`), each intermediate value used only by the next op.
fn chain_of(f: &Function, end: Op, uses: &HashMap<Value, usize>) -> Option<(Op, Vec<Op>)> {
    let mut fused = Vec::new();
    let mut cur = end;
    let mut below = 4u8;
    loop {
        let d = f.op(cur);
        let stage = chain_stage(&d.kind)?;
        if stage >= below {
            return None;
        }
        below = stage;
        fused.push(cur);
        let is_mm = |v: &Value| {
            f.def_op(*v).is_some_and(|o| {
                matches!(
                    f.op(o).kind,
                    OpKind::MatMul { .. } | OpKind::MatMulInt { .. }
                )
            })
        };
        let next = if stage == 1 {
            *d.operands.iter().find(|v| is_mm(v))?
        } else {
            d.operands[0]
        };
        if uses.get(&next) != Some(&1) {
            return None;
        }
        let op = f.def_op(next)?;
        if is_mm(&next) {
            fused.reverse();
            return Some((op, fused));
        }
        cur = op;
    }
}

/// Plans the matmul `base` with the ops `fused` after it folded into the
/// kernel's epilogue. The error says whether the matmul alone failed
/// (`true`) or one of the fused ops did not fit (`false`).
fn plan_chain(f: &Function, base: Op, fused: &[Op]) -> Result<Plan, (bool, String)> {
    let mut p = plan_matmul(f, base).map_err(|e| (true, e))?;
    let fail = |e: String| (false, e);
    let m = p.spec.m;
    let mut prev = f.op(base).results[0];
    for &op in fused {
        let d = f.op(op);
        let rt = f.ty(d.results[0]);
        let what = d.kind.name();
        match &d.kind {
            OpKind::Binary {
                op: BinaryOp::Add,
                overflow,
            } => {
                if rt != f.ty(prev) {
                    return Err(fail(format!(
                        "the '{what}' result {rt} is not the matmul's {}",
                        f.ty(prev)
                    )));
                }
                let b = if d.operands[0] == prev {
                    d.operands[1]
                } else {
                    d.operands[0]
                };
                if p.spec.is_integer() {
                    if *overflow != Overflow::Wrap {
                        return Err(fail("the i32 bias add saturates; the kernel wraps".into()));
                    }
                    check_bias(f, b, m as u64, ElemType::I32).map_err(fail)?;
                    let t = constant_of(f, b).map_err(|e| fail(format!("the i32 bias: {e}")))?;
                    let old = p.int_bias.take().unwrap_or_else(|| vec![0; m]);
                    p.int_bias = Some(
                        old.iter()
                            .zip(&t.codes)
                            .map(|(&a, &c)| a.wrapping_add(c as u32 as i32))
                            .collect(),
                    );
                } else {
                    check_bias(f, b, m as u64, ElemType::F32).map_err(fail)?;
                    p.bias = Some(b);
                }
                p.spec.epilogue.bias = true;
            }
            OpKind::Relu | OpKind::Gelu { .. } | OpKind::Silu => {
                if rt != f.ty(prev) {
                    return Err(fail(format!("'{what}' changes the type to {rt}")));
                }
                p.spec.epilogue.activation = match d.kind {
                    OpKind::Relu => Activation::Relu,
                    OpKind::Gelu { tanh: false } => Activation::Gelu,
                    OpKind::Gelu { tanh: true } => Activation::GeluTanh,
                    _ => Activation::Silu,
                };
            }
            OpKind::RequantDyadic {
                multiplier,
                shift,
                axis,
                rounding,
                saturate,
            } => {
                if rt.elem != ElemType::I8 || !*saturate || *rounding != Rounding::NearestEven {
                    return Err(fail(format!(
                        "the kernel requantizes to i8 with saturation and nearest-even rounding, not to {} ({}, {rounding:?})",
                        rt.elem,
                        if *saturate { "saturating" } else { "wrapping" }
                    )));
                }
                let rank = f.ty(prev).rank() as u32;
                let per_col = match axis {
                    None => false,
                    Some(a) if *a + 1 == rank => true,
                    Some(a) => {
                        return Err(fail(format!(
                            "the multipliers run along axis {a}, not the output columns"
                        )))
                    }
                };
                let widen = |v: &[i64]| if per_col { v.to_vec() } else { vec![v[0]; m] };
                let mults: Vec<i64> = widen(multiplier);
                let shifts: Vec<i64> =
                    widen(&shift.iter().map(|&s| i64::from(s)).collect::<Vec<_>>());
                if mults.len() != m || mults.iter().any(|&v| !(0..1 << 31).contains(&v)) {
                    return Err(fail(
                        "the kernel's multipliers are i32: each must be below 2^31".into(),
                    ));
                }
                if shifts.iter().any(|&s| s > 62) {
                    return Err(fail("the kernel's shifts go up to 62".into()));
                }
                let zero_point = match d.operands.get(1) {
                    None => 0,
                    Some(&z) => {
                        let t = scalar_of(f, z, "output zero point").map_err(fail)?;
                        t.codes[0] as u8 as i8
                    }
                };
                p.requant = Some(DyadicParams {
                    multipliers: mults.iter().map(|&v| v as i32).collect(),
                    shifts: shifts.iter().map(|&s| s as u32).collect(),
                    zero_point,
                });
                p.spec.epilogue.requantize = true;
            }
            _ => return Err(fail(format!("'{what}' does not fuse into a kernel"))),
        }
        prev = d.results[0];
    }
    p.spec.check("the host").map_err(|e| fail(e.to_string()))?;
    p.fused = fused.to_vec();
    Ok(p)
}

/// Runs a mapped plan on activation `x`; the result has `shape` and the
/// kernel's element type (`f32`, `i32`, or `i8` when requantized).
fn run_mapped(
    m: &Mapped,
    weights: &PackedWeights,
    x: &Tensor,
    bias: Option<&Tensor>,
    shape: &[u64],
) -> Result<Tensor, String> {
    let spec = m.kernel.spec();
    // Leading dimensions flattened: `x` is `[n, k]` row-major.
    let n = x.codes.len() / spec.k;
    if spec.is_integer() {
        let bytes: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
        let signed: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
        let acts = if spec.is_binary() {
            Activations::B1(&bytes)
        } else if spec.is_bit_serial() {
            Activations::Codes(x.elem, &bytes)
        } else if x.elem == ElemType::I8 {
            Activations::I8(&signed)
        } else {
            Activations::U8(&bytes)
        };
        let bias = m.plan.int_bias.as_deref();
        if let Some(rq) = &m.plan.requant {
            let mut y = vec![0i8; n * spec.m];
            let r = Requant {
                multipliers: &rq.multipliers,
                shifts: &rq.shifts,
                zero_point: rq.zero_point,
            };
            m.kernel
                .run_requant_bias(acts, weights, bias, &r, &mut y, n, 0)
                .map_err(|e| e.to_string())?;
            return Tensor::new(
                ElemType::I8,
                shape.to_vec(),
                y.iter().map(|&v| u64::from(v as u8)).collect(),
            );
        }
        let mut y = vec![0i32; n * spec.m];
        match m.plan.zero_points {
            Some(z) => m.kernel.run_int_zero_points(acts, weights, z, &mut y, n, 0),
            None => m.kernel.run_int_bias(acts, weights, bias, &mut y, n, 0),
        }
        .map_err(|e| e.to_string())?;
        return Tensor::new(
            ElemType::I32,
            shape.to_vec(),
            y.iter().map(|&v| u64::from(v as u32)).collect(),
        );
    }
    let mut y = vec![0f32; n * spec.m];
    let f32s: Vec<f32>;
    let f16s: Vec<half::f16>;
    let bf16s: Vec<half::bf16>;
    let acts = if x.elem == ElemType::F32 {
        f32s = x.codes.iter().map(|&c| f32::from_bits(c as u32)).collect();
        Activations::F32(&f32s)
    } else if x.elem == ElemType::F16 {
        f16s = x
            .codes
            .iter()
            .map(|&c| half::f16::from_bits(c as u16))
            .collect();
        Activations::F16(&f16s)
    } else {
        bf16s = x
            .codes
            .iter()
            .map(|&c| half::bf16::from_bits(c as u16))
            .collect();
        Activations::BF16(&bf16s)
    };
    let bias: Option<Vec<f32>> =
        bias.map(|b| b.codes.iter().map(|&c| f32::from_bits(c as u32)).collect());
    m.kernel
        .run(acts, weights, bias.as_deref(), &mut y, n, 0)
        .map_err(|e| e.to_string())?;
    Tensor::new(
        ElemType::F32,
        shape.to_vec(),
        y.iter().map(|v| u64::from(v.to_bits())).collect(),
    )
}

/// Counts one run of `name` on the interpreter.
fn count(on_interp: &mut Vec<(String, usize)>, name: &str) {
    match on_interp.iter_mut().find(|(n, _)| n == name) {
        Some((_, c)) => *c += 1,
        None => on_interp.push((name.to_string(), 1)),
    }
}

/// Maps the function's matmuls (with what fuses after them) onto kernels:
/// chains first, outermost end first, each tried at full length and then
/// shorter; then the remaining matmuls alone. `accept` turns a plan into
/// what the caller keeps (the JIT compiles its kernel; the ahead-of-time
/// compiler keeps the plan), or says why it cannot take it, which counts
/// as not mapped. The map is keyed by the op whose result the plan
/// computes (a chain's last op). Shared by `lowbit run --backend cpu` and
/// `lowbit compile` (`aot_model`), so both map exactly the same.
pub fn map_plans<T>(
    f: &Function,
    not_mapped: &mut Vec<(String, String)>,
    mut accept: impl FnMut(Plan) -> Result<T, String>,
) -> HashMap<Op, T> {
    let uses = f.use_counts();
    let mut mapped: HashMap<Op, T> = HashMap::new();
    let mut done: HashSet<Op> = HashSet::new();
    for &op in f.ops().iter().rev() {
        if done.contains(&op) {
            continue;
        }
        let Some((base, fused)) = chain_of(f, op, &uses) else {
            continue;
        };
        done.extend(&fused);
        for len in (1..=fused.len()).rev() {
            let end = fused[len - 1];
            match plan_chain(f, base, &fused[..len]) {
                Ok(p) => match accept(p) {
                    Ok(m) => {
                        mapped.insert(end, m);
                        done.insert(base);
                        break;
                    }
                    Err(why) => not_mapped.push((label(f, end), why)),
                },
                // The matmul alone does not map: its own entry says why.
                Err((true, _)) => break,
                Err((false, why)) => {
                    if len == fused.len() || !matches!(f.op(end).kind, OpKind::Binary { .. }) {
                        not_mapped.push((label(f, end), why));
                    }
                }
            }
        }
    }
    for &op in f.ops() {
        if done.contains(&op)
            || !matches!(
                f.op(op).kind,
                OpKind::MatMul { .. } | OpKind::MatMulInt { .. } | OpKind::QMatMul { .. }
            )
        {
            continue;
        }
        match plan_matmul(f, op).and_then(&mut accept) {
            Ok(m) => {
                mapped.insert(op, m);
            }
            Err(why) => not_mapped.push((label(f, op), why)),
        }
    }
    mapped
}

/// Runs `f` on `inputs` (already checked against its parameters); see
/// [`run_owned`] (here the caller keeps the function and its constants).
#[cfg(test)]
pub fn run(f: &Function, inputs: &[(String, Tensor)]) -> Result<CpuRun, InterpError> {
    run_owned(f.clone(), inputs.to_vec())
}

fn op_err(f: &Function, op: Op, message: String) -> InterpError {
    InterpError::Op {
        op: f.op(op).kind.name(),
        span: f.op_spans.get(&op).copied(),
        message,
    }
}

fn operand<'a>(
    f: &Function,
    op: Op,
    env: &'a HashMap<Value, Tensor>,
    v: &Value,
) -> Result<&'a Tensor, InterpError> {
    env.get(v)
        .ok_or_else(|| op_err(f, op, "operand not computed".into()))
}

/// The values a needed op reads: a mapped op only its activation, bias
/// and requantize operands (the weight is packed from the constant's
/// bytes, the fused ops are computed by the kernel).
fn reads_of(f: &Function, op: Op, mapped: Option<&Mapped>) -> Vec<Value> {
    match mapped {
        Some(m) => {
            let mut v = vec![m.plan.x];
            v.extend(m.plan.bias);
            if let Some((_, ops)) = &m.plan.quantize {
                v.extend(ops);
            }
            v
        }
        None => f.op(op).operands.clone(),
    }
}

/// Runs mapped op `op` with its packed weights; the summary line's kernel
/// text comes back with the result.
fn run_plan(
    f: &Function,
    op: Op,
    m: &Mapped,
    packed: &PackedWeights,
    env: &HashMap<Value, Tensor>,
    on_interp: &mut Vec<(String, usize)>,
) -> Result<(Tensor, String), InterpError> {
    let x = operand(f, op, env, &m.plan.x)?;
    let bias = m
        .plan
        .bias
        .as_ref()
        .map(|b| operand(f, op, env, b))
        .transpose()?;
    let rt = f.ty(f.op(op).results[0]);
    let mut y = run_mapped(m, packed, x, bias, &rt.shape).map_err(|e| op_err(f, op, e))?;
    let mut what = m.kernel.spec().to_string();
    if !m.plan.fused.is_empty() {
        let names: Vec<String> = m.plan.fused.iter().map(|&o| label(f, o)).collect();
        what.push_str(&format!(" (fused: {})", names.join(", ")));
    }
    if let Some((kind, ops)) = &m.plan.quantize {
        let mut args = vec![&y];
        for v in ops {
            args.push(operand(f, op, env, v)?);
        }
        y = eval_op(kind, &args, std::slice::from_ref(rt))
            .map_err(|e| op_err(f, op, format!("requantize epilogue: {e}")))?
            .remove(0);
        what.push_str(", then quantize on the interpreter");
        count(on_interp, "quantize (qmatmul requantize epilogue)");
    }
    Ok((y, what))
}

/// Runs `f` on `inputs` (already checked against its parameters), owning
/// both so that memory goes as soon as the run is done with it: each
/// matmul's weights are packed from the constant's bytes just before its
/// kernel runs and dropped after it, a weight constant's bytes are
/// released from `f` once no later op reads them, and each value (the
/// inputs included) is dropped after its last use. Besides the model's
/// constants, one matmul's packed weights are alive at a time. Constants
/// sharing one buffer (the ONNX importer's file) free it with the last of
/// them.
pub fn run_owned(mut f: Function, inputs: Vec<(String, Tensor)>) -> Result<CpuRun, InterpError> {
    let mut not_mapped = Vec::new();
    let mut mapped = map_plans(&f, &mut not_mapped, jit);
    // Values the run needs: walk back from the outputs. Along the way,
    // count the needed ops reading each value and the plans reading each
    // weight constant: what is left of these counts after an op says what
    // can be dropped.
    let outputs: HashSet<Value> = f.outputs.iter().map(|(_, v)| *v).collect();
    let mut needed = outputs.clone();
    let mut reads: HashMap<Value, usize> = HashMap::new();
    let mut plans_of: HashMap<Op, usize> = HashMap::new();
    let mut run_order = Vec::new();
    for &op in f.ops().iter().rev() {
        if !f.op(op).results.iter().any(|r| needed.contains(r)) {
            continue;
        }
        let m = mapped.get(&op);
        if let Some(m) = m {
            for c in m.plan.weights.constants() {
                *plans_of.entry(c).or_default() += 1;
            }
        }
        for v in reads_of(&f, op, m) {
            needed.insert(v);
            *reads.entry(v).or_default() += 1;
        }
        run_order.push(op);
    }
    run_order.reverse();
    let mut env: HashMap<Value, Tensor> = HashMap::new();
    for ((_, v), (_, t)) in f.params.iter().zip(inputs) {
        env.insert(*v, t);
    }
    let mut on_cpu = Vec::new();
    let mut on_interp: Vec<(String, usize)> = Vec::new();
    for op in run_order {
        let m = mapped.remove(&op);
        let read = reads_of(&f, op, m.as_ref());
        let results = if let Some(m) = m {
            let packed = m.plan.pack().map_err(|e| op_err(&f, op, e))?;
            let (y, what) = run_plan(&f, op, &m, &packed, &env, &mut on_interp)?;
            on_cpu.push((label(&f, m.plan.op), what));
            let consts = m.plan.weights.constants();
            // The plan's share of the constants' bytes and the packed
            // weights go now; the function's share once no other plan and
            // no interpreted op reads the constant.
            drop((m, packed));
            for c in consts {
                let left = plans_of.get_mut(&c).map(|n| {
                    *n -= 1;
                    *n
                });
                if left == Some(0) && !f.op(c).results.iter().any(|r| needed.contains(r)) {
                    f.op_mut(c).kind = OpKind::Constant(ConstData::new(Vec::new()));
                }
            }
            vec![y]
        } else {
            let d = f.op(op);
            let args: Vec<&Tensor> = d
                .operands
                .iter()
                .map(|v| operand(&f, op, &env, v))
                .collect::<Result<_, _>>()?;
            let types: Vec<_> = d.results.iter().map(|r| f.ty(*r).clone()).collect();
            if !matches!(d.kind, OpKind::Constant(_)) {
                count(&mut on_interp, d.kind.name());
            }
            eval_op(&d.kind, &args, &types).map_err(|e| match e {
                InterpError::Op { op: o, message, .. } => InterpError::Op {
                    op: o,
                    span: f.op_spans.get(&op).copied(),
                    message,
                },
                other => other,
            })?
        };
        // Values read here for the last time go (outputs stay).
        for v in read {
            let left = reads.get_mut(&v).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) && !outputs.contains(&v) {
                env.remove(&v);
            }
        }
        for (r, t) in f.op(op).results.iter().zip(results) {
            env.insert(*r, t);
        }
    }
    let mut outputs = Vec::with_capacity(f.outputs.len());
    for (i, (name, v)) in f.outputs.iter().enumerate() {
        // An output value named twice is cloned for all but its last name.
        let again = f.outputs[i + 1..].iter().any(|(_, w)| w == v);
        let t = if again {
            env.get(v).cloned()
        } else {
            env.remove(v)
        };
        let t = t.ok_or_else(|| InterpError::Function {
            message: format!("output '{name}' was not computed"),
        })?;
        outputs.push((name.clone(), t));
    }
    Ok(CpuRun {
        outputs,
        on_cpu,
        not_mapped,
        on_interp,
    })
}

#[cfg(test)]
#[path = "cpu_run_tests.rs"]
mod tests;
