//! Reference interpreter: the bit-exact semantics of every lowbit op.
//!
//! This crate *defines* what each op computes; every backend and every
//! rewrite is tested against it. [`run_function`] executes a function on
//! named inputs; [`eval_op`] evaluates one op (constant folding uses it).
//! Values are logical tensors ([`Tensor`]: element codes in row-major
//! order); a layout only matters where bytes are read (`constant`), so
//! `relayout` is the identity on values. Nothing here panics on a malformed
//! or unverified function: operand counts, element types, shapes and
//! broadcasting are checked at run time and reported as [`InterpError`]s
//! that name the op.
//!
//! # Numeric conventions
//!
//! * **Floats** of every format are decoded exactly to `f64`
//!   ([`ElemType::decode`]); the op is computed in `f64` (IEEE double,
//!   no fused multiply-add) and rounded **once** to the result type by
//!   [`ElemType::encode`] with nearest-even rounding and no saturation,
//!   unless the op has its own `rounding`/`saturate`. Overflow therefore
//!   gives infinity where the format has it, NaN where it has only NaN, and
//!   the largest finite value in finite-only formats (`f4E2M1FN`, …).
//! * **Integers** (`i1`–`i64`, `u1`–`u64`) and `b1` (code 0 = −1,
//!   code 1 = +1) are computed exactly (in `i128`, or wider where a `u64`
//!   product needs it) and then wrapped (two's complement, keep the low
//!   bits) or saturated (clamped to the type's range) as the op's
//!   `overflow` says (default wrap). A `b1` result is +1 for a value ≥ 0 and
//!   −1 otherwise.
//! * **Float → integer** (`quantize`, `requantize`, `cast`): the real value
//!   is rounded to an integer with the op's rounding mode, the zero point is
//!   added, then the sum is clamped (saturate) or wrapped. NaN counts as 0.
//!   Under wrap, ±∞ and finite values of magnitude ≥ 2¹¹⁷ (all multiples of
//!   2⁶⁴) wrap to 0 (so the result is the zero point); under saturate they
//!   clamp. For a `b1` result the value is +1 when `v + zp ≥ 0` or NaN (no
//!   rounding first: sign binarization).
//! * **The quantization quotient** (`quantize`, `requantize`, and the
//!   requantize epilogue of `qmatmul`): `x / scale` is *not* computed in
//!   `f64` but in the operands' own precision, at least `f32`, as
//!   onnxruntime (and any `f32` kernel) does. The quotient format is `f32`
//!   when every value of each float operand's format is an `f32` value
//!   (`f32`, `tf32`, `f16`, `bf16`, all fp8/fp6/fp4 formats, `f8E8M0FNU`;
//!   for `requantize` the two scales and a float `q`; a float zero point
//!   counts for float results), and `f64` otherwise (an `f64` operand, or a
//!   custom format with more precision or range than `f32`); see
//!   [`quotient_format`]. The quotient is the exact quotient rounded
//!   **once**, nearest-even, to that format (IEEE division: a zero scale
//!   gives ±∞ or NaN), and the op's rounding then applies to that rounded
//!   quotient. So near a tie the result is the code an `f32` division
//!   gives: `0.35f32 / 0.1f32` is `3.5` in `f32` and quantizes to 4, while
//!   the `f64` quotient `3.4999999` would give 3. Checked against
//!   onnxruntime 1.31 (`QuantizeLinear` to int4/uint4/int8/uint8/int16/
//!   uint16 per tensor, per axis and blocked, with `f32` and `f16` inputs,
//!   and to the four fp8 formats; `DynamicQuantizeLinear`): its MLAS
//!   kernels divide in `f32` (not multiply by a reciprocal, and `f16` inputs
//!   are widened to `f32`, not divided in `f16`), which this rule matches
//!   bit for bit on random, non-power-of-two scales. Known differences from
//!   onnxruntime, by design: a NaN input gives the zero point here (NaN
//!   counts as 0) but the type's minimum there; onnxruntime ignores a
//!   float8 zero point (the importer drops it, see `lowbit-onnx`); and its
//!   non-saturating `f8E4M3FN` conversion turns some overflowing values
//!   (480 to 495) into 448 where lowbit, `ml_dtypes` and the ONNX
//!   reference give NaN (464 ties to 448 and 465 is NaN everywhere).
//! * **Integer → float** (`cast`) rounds the exact integer once with the
//!   op's rounding, even for 64-bit values.
//! * **Stochastic rounding** (`quantize` and `cast` with `rounding =
//!   stochastic, seed = N, random_bits = B`): wherever the rules above
//!   round, element `i` of the result (row-major index) rounds with
//!   `StochasticRounding::new(N, B).random(i)` from `lowbit-numerics`, so a
//!   result depends only on the operands, the seed and the index.
//!
//! # Ops
//!
//! Shapes are static; "broadcast" is numpy's rule (right-aligned, a dim of 1
//! stretches). Every op has exactly one result.
//!
//! * `constant`: `Tensor::from_bytes(result type, payload)`: the payload is
//!   the physical bytes of the result type's layout.
//! * `quantize x, scale[, zp]`: `x` and `scale` are floats; `zp` has the
//!   result's element type and the scale's shape; the scale's shape is
//!   `Granularity::scale_shape(x.shape)` (per tensor: `[]` or `[1]`). The
//!   element at index `i` uses scale `s` and zero point `z` at
//!   `i`'s scale index (blocked: `i[d] / block[d]` along blocked dims; a
//!   ragged last block simply has fewer elements). `v = x / s` rounded
//!   once to the quotient format (`f32` unless an operand is wider; see
//!   *the quantization quotient* above; IEEE: `s = 0` gives ±∞ or NaN).
//!   Integral result: `round(v) + z` then clamp (`saturate = true`, the
//!   default) or wrap. Float result: `encode(v ⊕ z, rounding, saturate)`
//!   where `v ⊕ z` is the sum rounded nearest-even to the quotient format,
//!   as a kernel computing in that format adds it (`v` alone when there is
//!   no `zp`; with `z = 0` it is `v`, except that `−0 ⊕ 0 = +0`); so
//!   without saturation out-of-range values become ∞/NaN per format.
//! * `dequantize q, scale[, zp]`: float result
//!   `(q − z) · s`: integral `q − z` exactly in `i128`, then converted to
//!   `f64` (exact up to 53 bits), times `s`; float `q`: `(q − z) · s` in `f64`.
//!   Rounded nearest-even to the result type.
//! * `requantize q, s_in, zp_in, s_out, zp_out`: `v = (q − zp_in) · s_in`
//!   kept exact (integral `q − zp_in` in `i128`; for float `q` the
//!   difference in `f64`), then `v / s_out` is rounded once to the quotient
//!   format (`f32` when both scales, and a float `q`, are within `f32`) and
//!   quantized as `quantize` does with the op's rounding and saturation.
//!   With an exact `f32` dequantized value it therefore equals
//!   `quantize(dequantize(q, s_in, zp_in) : f32, s_out, zp_out)`.
//!   `in_*`/`out_*` granularities index the input/output scales by `q`'s
//!   shape.
//! * `cast` (same shape): int → int exact then wrap (default) or clamp
//!   (`saturate`); float → int as above; int/float → float
//!   `encode(x, rounding, saturate)`; `b1` → int is ±1.
//! * `matmul a, b`: `[..., m, k] × [..., k, n] → [..., m, n]`, batch dims
//!   broadcast; both operands rank ≥ 2. Float operands (any formats, a
//!   float result): each output is `((0 + a₀b₀) + a₁b₁) + …` in `f64` in `k`
//!   order, starting from `+0.0`, rounded once. Integral operands (ints or
//!   `b1`, an integer result): the exact sum, then wrap/saturate per
//!   `overflow`.
//! * `gemm a, b[, c]`: 2-D; `op(a)` is `aᵀ` with `trans_a`, likewise `b`;
//!   `c` broadcasts to `[M, N]`. Float: `alpha · acc + beta · c` in `f64`
//!   (`alpha · acc` without `c`), `acc` as in `matmul`, rounded once.
//!   Integral: `alpha = beta = 1` is required; `acc + c` exactly, then
//!   wrap/saturate.
//! * `add`/`sub`/`mul`/`div`: both operands and the result have one element
//!   type; broadcast. Float: the `f64` operation rounded to the type
//!   (for `f32`/`f16`/`bf16` this equals the native operation, since `f64`
//!   has more than twice their precision). Integral: exact, then
//!   wrap/saturate; `div` truncates toward zero and a zero divisor is an
//!   error (`'div' op: integer division by zero`).
//! * `relu`: float `x > 0 ? x : +0.0` (NaN stays NaN); integers `max(x, 0)`
//!   with the operand's type. `b1` has no zero and is rejected.
//! * `gelu`: `0.5 · x · (1 + erf(x/√2))`, evaluated as
//!   `0.5 · x · erfc(−x/√2)` so the negative tail keeps full precision
//!   (`x/√2` is carried to twice double precision and corrected to first
//!   order; erf/erfc: see [`special`]); with `approximate = tanh`:
//!   `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`, `x³ = x·x·x`.
//! * `silu`: `x / (1 + exp(−x))`.
//! * `softmax {axis}`: per slice along `axis`: `m = max`, `eᵢ = exp(xᵢ − m)`,
//!   `yᵢ = eᵢ / Σ eⱼ` (sum in index order). A NaN anywhere in a slice makes the
//!   slice NaN; a slice whose max is ±∞ gives NaN.
//! * `layer_norm x, gamma[, beta] {axis, epsilon}`: over dims `axis..rank`
//!   (gamma/beta have exactly those dims): `mean = Σx / n`,
//!   `var = Σ(x − mean)² / n` (biased, two passes),
//!   `y = (x − mean) / sqrt(var + eps) · gamma + beta`.
//! * `rms_norm x, gamma {axis, epsilon}`: `y = x / sqrt(Σx² / n + eps) · gamma`.
//!   The float unary and normalization ops take float operands (any
//!   formats) and round to the (float) result type.
//! * `reshape` (same element type and count), `transpose {perm}` (result
//!   dim `i` is operand dim `perm[i]`), `relayout` (same shape and element
//!   type): element values unchanged.
//! * `pow` (floats), `min`/`max` (NaN propagates; integers exact) broadcast
//!   like `add`. `neg`, `sqrt`, `exp`, `sigmoid`, `tanh`, `erf`: `f64`
//!   rounded once; `neg` on integers is exact then wrapped.
//! * `log_softmax {axis}`: `x − m − ln Σ exp(x − m)` per slice.
//! * `reduce_min`/`reduce_max {axes}`: reduced dims kept as 1; NaN wins.
//! * `concat {axis}`, `slice {starts, steps}` (result dims from the result
//!   type; out-of-range reads are errors), `gather {axis}` (negative
//!   indices count from the end; out of range is an error), `broadcast`
//!   (numpy rule to the result shape): values unchanged.
//! * `conv2d x, w[, bias] {strides, pads, dilations, group}`: NCHW, zero
//!   padding; float sums in `f64` rounded once, integral sums exact.
//! * `qmatmul x, wq, scale[, zp][, bias] {dequant_type, activation, ...}`:
//!   exactly `act(matmul(x, dequantize(wq, scale, zp)) + bias)` with the
//!   dequantized weight rounded to `dequant_type` and the product, the bias
//!   sum and the activation each rounded to the result type, as the
//!   unfused ops do (`weight_lhs` swaps the matmul operands). With a
//!   requantize epilogue (`requant_type`, trailing `out_scale[, out_zp]`)
//!   that float result is typed `requant_type` and the op returns exactly
//!   `quantize(y, out_scale[, out_zp])` with the op's `rounding`,
//!   `saturate` and output granularity. Backends may
//!   skip the intermediate roundings; their kernels are checked against
//!   this definition within their own declared bound.
//! * `matmul_int a, b[, za, zb] {overflow, schedule}`: integer operands;
//!   `Σ_k (a − za)(b − zb)` exactly (zero points are single elements of the
//!   operand's type), then wrap/saturate. `schedule = bit_serial` computes
//!   the same sum from AND-popcounts of bit-planes (two's-complement sign
//!   plane weighted `−2^(p−1)`) minus the zero-point corrections.
//! * `mark_outliers x {columns}`: the identity (the mark is for the
//!   optimizer's mixed decomposition).
//! * `requant_dyadic acc[, zp] {multiplier, shift, rounding, saturate}`:
//!   `round(acc · multiplier / 2^shift) + zp` exactly on integers, with the
//!   op's rounding mode (default nearest-even, as `quantize`), then clamp
//!   (default) or wrap to the result type.
#![deny(missing_docs)]

mod conv;
mod elementwise;
mod fused;
mod indexing;
mod linalg;
mod movement;
mod norm;
mod num;
mod quant;
mod shape;
pub mod special;

pub use quant::quotient_format;

use lowbit_ir::{Diagnostic, ElemType, Function, OpKind, Span, Tensor, TensorType, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Why a function or op could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterpError {
    /// An op failed: bad operands or types, or a run-time fault such as an
    /// integer division by zero.
    Op {
        /// The op's name (`div`, `matmul`, ...).
        op: &'static str,
        /// The op's source position, when the function came from text.
        span: Option<Span>,
        /// What went wrong.
        message: String,
    },
    /// An input does not fit the function's signature.
    Input {
        /// The parameter (input) name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The function itself is malformed (a value used before it is defined).
    Function {
        /// What went wrong.
        message: String,
    },
}

impl InterpError {
    fn op(op: &'static str, message: impl Into<String>) -> InterpError {
        InterpError::Op {
            op,
            span: None,
            message: message.into(),
        }
    }

    /// The source position of the failing op, if known.
    pub fn span(&self) -> Option<Span> {
        match self {
            InterpError::Op { span, .. } => *span,
            _ => None,
        }
    }

    /// The error as a diagnostic (with the op's position, if known), for
    /// rendering as `file:line:col: error: ...`.
    pub fn to_diagnostic(&self) -> Diagnostic {
        Diagnostic::error(self.span(), self.to_string())
    }
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpError::Op { op, message, .. } => write!(f, "'{op}' op: {message}"),
            InterpError::Input { name, message } => write!(f, "input '{name}': {message}"),
            InterpError::Function { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for InterpError {}

/// Evaluates one op on operand tensors, producing one tensor per result
/// type. Layouts of `result_types` only matter for `constant` (whose
/// payload is physical bytes); results are logical tensors.
pub fn eval_op(
    kind: &OpKind,
    operands: &[&Tensor],
    result_types: &[TensorType],
) -> Result<Vec<Tensor>, InterpError> {
    let name = kind.name();
    let (lo, hi) = kind.operand_range();
    if operands.len() < lo || operands.len() > hi {
        let want = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo} to {hi}")
        };
        return Err(InterpError::op(
            name,
            format!("expected {want} operands, got {}", operands.len()),
        ));
    }
    let [rt] = result_types else {
        return Err(InterpError::op(
            name,
            format!("expected 1 result type, got {}", result_types.len()),
        ));
    };
    eval_checked(kind, operands, rt)
        .map(|t| vec![t])
        .map_err(|m| InterpError::op(name, m))
}

/// Results beyond this many elements (512 GiB of codes) are refused up
/// front rather than aborting on a failed allocation.
const MAX_RESULT_ELEMENTS: usize = 1 << 36;

fn eval_checked(kind: &OpKind, ops: &[&Tensor], rt: &TensorType) -> Result<Tensor, String> {
    for (i, t) in ops.iter().enumerate() {
        let n = shape::count(&t.shape).map_err(|e| format!("operand #{i}: {e}"))?;
        if n != t.codes.len() {
            return Err(format!(
                "operand #{i} has {} elements but its shape {} needs {n}",
                t.codes.len(),
                shape::fmt_shape(&t.shape)
            ));
        }
    }
    let n = shape::count(&rt.shape).map_err(|e| format!("result type {rt}: {e}"))?;
    if n > MAX_RESULT_ELEMENTS {
        return Err(format!(
            "result type {rt} has {n} elements, more than the interpreter's limit of 2^36"
        ));
    }
    match kind {
        OpKind::Constant(data) => movement::constant(data.bytes(), rt),
        OpKind::Quantize {
            granularity,
            rounding,
            saturate,
            stochastic,
        } => quant::quantize(
            granularity,
            quant::OpRounding::new(*rounding, *stochastic),
            *saturate,
            ops,
            rt,
        ),
        OpKind::Dequantize { granularity } => quant::dequantize(granularity, ops, rt),
        OpKind::Requantize {
            in_granularity,
            out_granularity,
            rounding,
            saturate,
        } => quant::requantize(
            in_granularity,
            out_granularity,
            *rounding,
            *saturate,
            ops,
            rt,
        ),
        OpKind::Cast {
            rounding,
            saturate,
            stochastic,
        } => quant::cast(
            quant::OpRounding::new(*rounding, *stochastic),
            *saturate,
            ops[0],
            rt,
        ),
        OpKind::MatMul { overflow } => linalg::matmul(*overflow, ops[0], ops[1], rt),
        OpKind::Gemm {
            trans_a,
            trans_b,
            alpha,
            beta,
            overflow,
        } => linalg::gemm(
            linalg::GemmAttrs {
                trans_a: *trans_a,
                trans_b: *trans_b,
                alpha: *alpha,
                beta: *beta,
                overflow: *overflow,
            },
            ops,
            rt,
        ),
        OpKind::Binary { op, overflow } => elementwise::binary(*op, *overflow, ops[0], ops[1], rt),
        OpKind::Relu => elementwise::relu(ops[0], rt),
        OpKind::Gelu { tanh } => elementwise::float_unary(ops[0], rt, |x| {
            if *tanh {
                elementwise::gelu_tanh(x)
            } else {
                elementwise::gelu_erf(x)
            }
        }),
        OpKind::Silu => elementwise::float_unary(ops[0], rt, elementwise::silu),
        OpKind::Softmax { axis } => norm::softmax(*axis, ops[0], rt),
        OpKind::LayerNorm { axis, epsilon } => norm::layer_norm(*axis, *epsilon, ops, rt),
        OpKind::RmsNorm { axis, epsilon } => norm::rms_norm(*axis, *epsilon, ops, rt),
        OpKind::Reshape => movement::reshape(ops[0], rt),
        OpKind::Transpose { perm } => movement::transpose(perm, ops[0], rt),
        OpKind::Relayout => movement::relayout(ops[0], rt),
        OpKind::MarkOutliers { .. } => movement::relayout(ops[0], rt),
        OpKind::Unary { op } => elementwise::unary(*op, ops[0], rt),
        OpKind::LogSoftmax { axis } => norm::log_softmax(*axis, ops[0], rt),
        OpKind::Reduce { op, axes } => indexing::reduce(*op, axes, ops[0], rt),
        OpKind::AbsMaxScale { block, qmax } => quant::absmax_scale(*block, *qmax, ops[0], rt),
        OpKind::Concat { axis } => indexing::concat(*axis, ops, rt),
        OpKind::Slice { starts, steps } => indexing::slice(starts, steps, ops[0], rt),
        OpKind::Gather { axis } => indexing::gather(*axis, ops[0], ops[1], rt),
        OpKind::Broadcast => indexing::broadcast(ops[0], rt),
        OpKind::Conv2d {
            strides,
            pads,
            dilations,
            group,
            overflow,
        } => conv::conv2d(
            &conv::ConvAttrs {
                strides: *strides,
                pads: *pads,
                dilations: *dilations,
                group: *group,
                overflow: *overflow,
            },
            ops,
            rt,
        ),
        OpKind::QMatMul {
            granularity,
            dequant_type,
            has_zero_point,
            has_bias,
            weight_lhs,
            activation,
            requant,
        } => fused::qmatmul(
            fused::QMatMulAttrs {
                granularity,
                dequant_type: *dequant_type,
                has_zero_point: *has_zero_point,
                has_bias: *has_bias,
                weight_lhs: *weight_lhs,
                activation: *activation,
                requant: requant.as_ref(),
            },
            ops,
            rt,
        ),
        OpKind::MatMulInt { overflow, schedule } => {
            fused::matmul_int(*overflow, *schedule, ops, rt)
        }
        OpKind::RequantDyadic {
            multiplier,
            shift,
            axis,
            rounding,
            saturate,
        } => fused::requant_dyadic(
            fused::Dyadic {
                multiplier,
                shift,
                axis: *axis,
                rounding: *rounding,
                saturate: *saturate,
            },
            ops,
            rt,
        ),
    }
}

/// Runs a function on named inputs and returns its outputs, named, in the
/// function's output order.
///
/// Every parameter needs exactly one input of exactly its type (shape and
/// element type; layouts do not apply to logical tensors). Ops run in
/// order; each intermediate tensor is dropped right after its last use.
pub fn run_function(
    f: &Function,
    inputs: &[(String, Tensor)],
) -> Result<Vec<(String, Tensor)>, InterpError> {
    run_function_with_stats(f, inputs).map(|(out, _)| out)
}

/// Memory statistics of one [`run_function_with_stats`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// The most tensors alive at once (inputs and intermediates).
    pub peak_live_tensors: usize,
    /// The most element codes alive at once (8 bytes each in memory).
    pub peak_live_elements: usize,
}

/// [`run_function`], also reporting how much was alive at the peak.
pub fn run_function_with_stats(
    f: &Function,
    inputs: &[(String, Tensor)],
) -> Result<(Vec<(String, Tensor)>, RunStats), InterpError> {
    let mut seen = HashSet::new();
    for (name, _) in inputs {
        if !seen.insert(name.as_str()) {
            return Err(InterpError::Input {
                name: name.clone(),
                message: "given more than once".into(),
            });
        }
        if !f.params.iter().any(|(p, _)| p == name) {
            let known: Vec<&str> = f.params.iter().map(|(p, _)| p.as_str()).collect();
            return Err(InterpError::Input {
                name: name.clone(),
                message: format!(
                    "function @{} has no such parameter (parameters: {})",
                    f.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
    }

    let undefined = |what: String| InterpError::Function {
        message: format!("function @{}: {what}", f.name),
    };
    let outputs: HashSet<Value> = f.outputs.iter().map(|(_, v)| *v).collect();
    // Position of the last op reading each value, to free it right after.
    let mut last_use: HashMap<Value, usize> = HashMap::new();
    for (pos, &op) in f.ops().iter().enumerate() {
        for &v in &f.op(op).operands {
            last_use.insert(v, pos);
        }
    }
    let needed = |v: &Value| outputs.contains(v) || last_use.contains_key(v);

    let mut env: HashMap<Value, Tensor> = HashMap::new();
    let mut stats = RunStats::default();
    let mut live_elements = 0usize;
    for (name, v) in &f.params {
        if !f.has_value(*v) {
            return Err(undefined(format!("parameter %{name} has no value")));
        }
        let ty = f.ty(*v);
        let Some((_, t)) = inputs.iter().find(|(n, _)| n == name) else {
            return Err(InterpError::Input {
                name: name.clone(),
                message: format!("missing (expected a {ty})"),
            });
        };
        check_input(name, ty, t)?;
        if needed(v) {
            live_elements += t.codes.len();
            env.insert(*v, t.clone());
        }
    }
    stats.peak_live_tensors = env.len();
    stats.peak_live_elements = live_elements;

    for (pos, &op) in f.ops().iter().enumerate() {
        let data = f.op(op);
        let name = data.kind.name();
        let span = f.op_spans.get(&op).copied();
        let at = |message: String| InterpError::Op {
            op: name,
            span,
            message,
        };
        let mut operands = Vec::with_capacity(data.operands.len());
        for (i, v) in data.operands.iter().enumerate() {
            match env.get(v) {
                Some(t) => operands.push(t),
                None => return Err(at(format!("operand #{i} is not defined before this op"))),
            }
        }
        let mut result_types = Vec::with_capacity(data.results.len());
        for v in &data.results {
            if !f.has_value(*v) {
                return Err(at("a result has no value".into()));
            }
            result_types.push(f.ty(*v).clone());
        }
        let results = eval_op(&data.kind, &operands, &result_types).map_err(|e| match e {
            InterpError::Op { message, .. } => at(message),
            other => other,
        })?;
        for (v, t) in data.results.iter().zip(results) {
            if needed(v) {
                live_elements += t.codes.len();
                env.insert(*v, t);
            }
        }
        stats.peak_live_tensors = stats.peak_live_tensors.max(env.len());
        stats.peak_live_elements = stats.peak_live_elements.max(live_elements);
        for v in &data.operands {
            if last_use.get(v) == Some(&pos) && !outputs.contains(v) {
                if let Some(t) = env.remove(v) {
                    live_elements -= t.codes.len();
                }
            }
        }
    }

    let out = f
        .outputs
        .iter()
        .map(|(name, v)| match env.get(v) {
            Some(t) => Ok((name.clone(), t.clone())),
            None => Err(undefined(format!("output '{name}' is never defined"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((out, stats))
}

fn check_input(name: &str, ty: &TensorType, t: &Tensor) -> Result<(), InterpError> {
    let err = |message: String| InterpError::Input {
        name: name.to_string(),
        message,
    };
    let got = TensorType::new(t.shape.clone(), t.elem);
    if t.elem != ty.elem || t.shape != ty.shape {
        let want = TensorType::new(ty.shape.clone(), ty.elem);
        return Err(err(format!("expected {want}, got {got}")));
    }
    let n = shape::count(&t.shape).map_err(err)?;
    if n != t.codes.len() {
        return Err(err(format!(
            "{got} needs {n} elements, got {}",
            t.codes.len()
        )));
    }
    let mask = t.elem.code_mask();
    if let Some(i) = t.codes.iter().position(|&c| c & !mask != 0) {
        return Err(err(format!(
            "element {i} has code {:#x}, wider than {} bits",
            t.codes[i],
            t.elem.bits()
        )));
    }
    Ok(())
}

/// Builds a result tensor directly from codes already masked to `elem`.
fn tensor(elem: ElemType, shape: &[u64], codes: Vec<u64>) -> Tensor {
    Tensor {
        elem,
        shape: shape.to_vec(),
        codes,
    }
}
