//! The op set and op attributes.
//!
//! Every op has a name and a dictionary of attributes in the text format;
//! [`OpKind::attrs`] and [`OpKind::from_parts`] convert between that generic
//! form and the typed [`OpKind`], so the printer and parser need no per-op code.
//! Attributes equal to their default are not printed.
//!
//! Operand conventions (`[x]` is optional):
//! * `constant` — no operands.
//! * `quantize x, scale[, zero_point]`, `dequantize q, scale[, zero_point]`.
//! * `requantize q, in_scale, in_zero_point, out_scale, out_zero_point`.
//! * `gemm a, b[, c]`; `layer_norm x, gamma[, beta]`; `rms_norm x, gamma`.
//! * `conv2d x, w[, bias]`; `gather data, indices`; `concat x0, x1, ...`
//!   (one or more).
//! * `qmatmul x, wq, scale[, zero_point][, bias][, out_scale[, out_zero_point]]`
//!   (the optional operands are announced by the `zero_point`/`bias`
//!   attributes and, for a requantize epilogue, `requant_type` and
//!   `out_zero_point`).
//! * `matmul_int a, b[, a_zero_point, b_zero_point]` (both or neither).
//! * `requant_dyadic acc[, zero_point]`.
//! * `mark_outliers x {columns = [..]}`: the identity, marking columns
//!   (indices of the last axis) of an activation as outlier features that a
//!   mixed decomposition (LLM.int8()) keeps out of the quantized kernel.
//! * everything else takes its data operands only.

use crate::types::TensorType;
use lowbit_numerics::{ElemType, Overflow, Rounding, StochasticRounding};
use std::fmt;
use std::sync::Arc;

/// An attribute value in the generic op form.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// Integer.
    Int(i64),
    /// Floating-point number.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Bare identifier (enumerations such as rounding modes).
    Ident(String),
    /// List of integers.
    Ints(Vec<i64>),
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(i) => write!(f, "{i}"),
            Attr::Float(x) => write!(f, "{x:?}"),
            Attr::Bool(b) => write!(f, "{b}"),
            Attr::Ident(s) => f.write_str(s),
            Attr::Ints(v) => {
                let s: Vec<String> = v.iter().map(|i| i.to_string()).collect();
                write!(f, "[{}]", s.join(", "))
            }
        }
    }
}

/// Which elements share a scale (and zero point).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Granularity {
    /// One scale for the whole tensor (scale shape `[]` or `[1]`).
    #[default]
    PerTensor,
    /// One scale per index along `axis` (scale shape `[dim(axis)]`).
    PerAxis {
        /// The quantized axis.
        axis: u32,
    },
    /// Blocks along one or more axes (ONNX blocked quantization, GPTQ groups,
    /// MX and NVFP4 blocks). The scale has the tensor's rank; along a blocked
    /// axis its size is `ceil(dim / block)`, along the other axes `dim`.
    Blocked {
        /// `(axis, block size)` pairs, sorted by axis.
        blocks: Vec<(u32, u64)>,
    },
}

impl Granularity {
    /// The scale shape this granularity needs for a tensor of `shape`.
    pub fn scale_shape(&self, shape: &[u64]) -> Result<Vec<u64>, String> {
        let rank = shape.len();
        let check = |axis: u32| {
            if (axis as usize) < rank {
                Ok(axis as usize)
            } else {
                Err(format!("axis {axis} is out of range for rank {rank}"))
            }
        };
        match self {
            Granularity::PerTensor => Ok(vec![]),
            Granularity::PerAxis { axis } => Ok(vec![shape[check(*axis)?]]),
            Granularity::Blocked { blocks } => {
                let mut s = shape.to_vec();
                for &(axis, b) in blocks {
                    let a = check(axis)?;
                    if b == 0 {
                        return Err("block size must be positive".into());
                    }
                    s[a] = shape[a].div_ceil(b);
                }
                Ok(s)
            }
        }
    }

    /// Index into the (row-major) scale tensor for the element at `idx`.
    pub fn scale_index(&self, idx: &[u64], scale_shape: &[u64]) -> usize {
        match self {
            Granularity::PerTensor => 0,
            Granularity::PerAxis { axis } => idx[*axis as usize] as usize,
            Granularity::Blocked { blocks } => {
                let mut flat = 0u64;
                for (d, &i) in idx.iter().enumerate() {
                    let b = blocks
                        .iter()
                        .find(|(a, _)| *a as usize == d)
                        .map(|(_, b)| *b)
                        .unwrap_or(1);
                    flat = flat * scale_shape[d] + i / b;
                }
                flat as usize
            }
        }
    }

    fn push_attrs(&self, out: &mut Vec<(&'static str, Attr)>) {
        match self {
            Granularity::PerTensor => {}
            Granularity::PerAxis { axis } => out.push(("axis", Attr::Int(*axis as i64))),
            Granularity::Blocked { blocks } if blocks.len() == 1 => {
                out.push(("axis", Attr::Int(blocks[0].0 as i64)));
                out.push(("block_size", Attr::Int(blocks[0].1 as i64)));
            }
            Granularity::Blocked { blocks } => {
                out.push((
                    "block_axes",
                    Attr::Ints(blocks.iter().map(|b| b.0 as i64).collect()),
                ));
                out.push((
                    "block_sizes",
                    Attr::Ints(blocks.iter().map(|b| b.1 as i64).collect()),
                ));
            }
        }
    }

    fn from_attrs(a: &mut AttrReader) -> Result<Granularity, String> {
        let axis = a.opt_uint("axis")?;
        let block = a.opt_uint("block_size")?;
        let axes = a.opt_ints("block_axes")?;
        let sizes = a.opt_ints("block_sizes")?;
        match (axis, block, axes, sizes) {
            (None, None, None, None) => Ok(Granularity::PerTensor),
            (Some(axis), None, None, None) => Ok(Granularity::PerAxis { axis: axis as u32 }),
            (Some(axis), Some(b), None, None) => Ok(Granularity::Blocked {
                blocks: vec![(axis as u32, b)],
            }),
            (None, None, Some(axes), Some(sizes)) => {
                if axes.len() != sizes.len() || axes.is_empty() {
                    return Err(
                        "block_axes and block_sizes must be non-empty and of equal length".into(),
                    );
                }
                let mut blocks = Vec::new();
                for (a, s) in axes.iter().zip(&sizes) {
                    if *a < 0 || *s < 0 {
                        return Err("block_axes and block_sizes must be non-negative".into());
                    }
                    blocks.push((*a as u32, *s as u64));
                }
                blocks.sort();
                if blocks.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err("block_axes names an axis twice".into());
                }
                Ok(Granularity::Blocked { blocks })
            }
            (None, Some(_), _, _) => Err("block_size needs an axis".into()),
            _ => Err("use either axis[/block_size] or block_axes/block_sizes".into()),
        }
    }
}

/// Element-wise binary arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b` (integers truncate toward zero)
    Div,
    /// `a ^ b` (floats only)
    Pow,
    /// `min(a, b)` (NaN wins)
    Min,
    /// `max(a, b)` (NaN wins)
    Max,
}

/// Element-wise unary functions. `neg` also takes integers; the others
/// are float-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `sqrt(x)`
    Sqrt,
    /// `exp(x)`
    Exp,
    /// `1 / (1 + exp(-x))`
    Sigmoid,
    /// `tanh(x)`
    Tanh,
    /// The error function.
    Erf,
}

impl UnaryOp {
    /// Every unary op, in text-format order.
    pub const ALL: [UnaryOp; 6] = [
        UnaryOp::Neg,
        UnaryOp::Sqrt,
        UnaryOp::Exp,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Erf,
    ];

    /// The op name in the text format.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Exp => "exp",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Erf => "erf",
        }
    }
}

/// A reduction over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// The smallest element (NaN wins).
    Min,
    /// The largest element (NaN wins).
    Max,
}

/// The element-wise epilogue of a fused op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    /// None.
    #[default]
    None,
    /// `relu`.
    Relu,
    /// `gelu` (erf form).
    Gelu,
    /// `gelu {approximate = tanh}`.
    GeluTanh,
    /// `silu`.
    Silu,
}

impl Activation {
    /// The spelling in the text format.
    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "none",
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Silu => "silu",
        }
    }

    fn parse(s: &str) -> Result<Activation, String> {
        Ok(match s {
            "none" => Activation::None,
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            "gelu_tanh" => Activation::GeluTanh,
            "silu" => Activation::Silu,
            _ => {
                return Err(format!(
                    "attribute 'activation' must be none, relu, gelu, gelu_tanh or silu, not '{s}'"
                ))
            }
        })
    }
}

/// The requantize epilogue of `qmatmul`: the float result (rounded to
/// `float_type`, after bias and activation) is quantized exactly as
/// `quantize y, out_scale[, out_zero_point]` with these attributes would.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QRequant {
    /// The float type of the product before quantization.
    pub float_type: ElemType,
    /// Granularity of the output scale (over the result shape).
    pub granularity: Granularity,
    /// Rounding of `y / out_scale` (the quotient rounded to the quotient
    /// format first, exactly as `Quantize` does).
    pub rounding: Rounding,
    /// Clamp (true) or wrap out-of-range values.
    pub saturate: bool,
    /// An output zero point follows the output scale.
    pub has_zero_point: bool,
}

/// How `matmul_int` computes its (identical) result; a hint for backends,
/// chosen by the e-graph optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum IntSchedule {
    /// Multiply-accumulate on whole integers (VNNI, `mma.s8`).
    #[default]
    Direct,
    /// Sum over bit-plane pairs of AND-popcount products, with sign and
    /// zero-point corrections.
    BitSerial,
    /// Multiply-accumulate on 16 x 16 x 64 tiles of 8-bit integers (x86
    /// AMX-INT8 `tdpbusd`): `i8`/`u8` operands only, and only on a target
    /// with AMX; the optimizer never chooses it by itself.
    Amx,
}

impl IntSchedule {
    /// The spelling in the text format.
    pub fn name(self) -> &'static str {
        match self {
            IntSchedule::Direct => "direct",
            IntSchedule::BitSerial => "bit_serial",
            IntSchedule::Amx => "amx",
        }
    }
}

/// A constant payload: the physical bytes of the result type's layout.
///
/// The bytes are shared, not copied, between clones; their owner may be any
/// byte container (a `Vec`, or a slice of a larger buffer such as the
/// importer's model file), so that large weights are held once.
#[derive(Clone)]
pub struct ConstData(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl ConstData {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> ConstData {
        ConstData(Arc::new(bytes))
    }
    /// Shares the bytes of `owner` (kept alive as long as any clone).
    pub fn from_shared(owner: impl AsRef<[u8]> + Send + Sync + 'static) -> ConstData {
        ConstData(Arc::new(owner))
    }
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl PartialEq for ConstData {
    fn eq(&self, other: &ConstData) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for ConstData {}

impl std::fmt::Debug for ConstData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConstData").field(&self.bytes()).finish()
    }
}

/// What an op does, with its typed attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// A constant tensor.
    Constant(ConstData),
    /// `q = clamp(round(x / scale) + zero_point)`; float to any type.
    ///
    /// The quotient `x / scale` is computed in the operands' precision, at
    /// least `f32`: rounded once (nearest-even) to `f32` when every value
    /// of `x`'s and the scale's formats (and of a float zero point's) is an
    /// `f32` value (f16, bf16, tf32, fp8, fp6, fp4, e8m0, f32), to `f64`
    /// otherwise. `rounding` then rounds that quotient; a float result adds
    /// a float zero point in the quotient format before encoding. This is
    /// what onnxruntime's `QuantizeLinear` computes (`f32` division, also
    /// for `f16` inputs), so near a tie the code matches it, not the exact
    /// quotient. The interpreter crate documents the details.
    Quantize {
        /// Scale granularity.
        granularity: Granularity,
        /// Rounding of the quotient `x / scale` (itself already rounded to
        /// the quotient format, see above).
        rounding: Rounding,
        /// Clamp (true) or wrap/overflow to inf/NaN (false) out-of-range values.
        saturate: bool,
        /// Stochastic rounding instead of `rounding` (which is then
        /// `nearest_even` and unused): element `i` of the result (row-major)
        /// rounds with the stream's random bits for index `i`.
        stochastic: Option<StochasticRounding>,
    },
    /// `x = (q - zero_point) * scale`.
    Dequantize {
        /// Scale granularity.
        granularity: Granularity,
    },
    /// `quantize(dequantize(q, in), out)` with the dequantized value kept
    /// exact: `(q − in_zp) · in_scale / out_scale` is rounded once to the
    /// quotient format (`f32` when both scales are within `f32`, else
    /// `f64`, as for `Quantize`), then rounded to an integer, offset by
    /// `out_zp` and clamped or wrapped.
    Requantize {
        /// Granularity of the input scale.
        in_granularity: Granularity,
        /// Granularity of the output scale.
        out_granularity: Granularity,
        /// Rounding of the rescaled value.
        rounding: Rounding,
        /// Clamp out-of-range results.
        saturate: bool,
    },
    /// Element type conversion.
    Cast {
        /// Rounding when the value is not representable.
        rounding: Rounding,
        /// Clamp out-of-range values (integers wrap otherwise).
        saturate: bool,
        /// Stochastic rounding instead of `rounding`, as on `quantize`.
        stochastic: Option<StochasticRounding>,
    },
    /// Batched, broadcasting matrix product `[.., m, k] x [.., k, n]`.
    MatMul {
        /// Integer results: wrap or saturate the exact sum.
        overflow: Overflow,
    },
    /// `alpha * op(a) * op(b) + beta * c`.
    Gemm {
        /// Transpose `a`.
        trans_a: bool,
        /// Transpose `b`.
        trans_b: bool,
        /// Product scale.
        alpha: f64,
        /// Bias scale.
        beta: f64,
        /// Integer results: wrap or saturate.
        overflow: Overflow,
    },
    /// Broadcasting element-wise arithmetic.
    Binary {
        /// Which operation.
        op: BinaryOp,
        /// Integer results: wrap or saturate.
        overflow: Overflow,
    },
    /// `max(x, 0)`.
    Relu,
    /// Gaussian error linear unit.
    Gelu {
        /// Use the tanh approximation.
        tanh: bool,
    },
    /// `x * sigmoid(x)`.
    Silu,
    /// Softmax along an axis.
    Softmax {
        /// The reduced axis (negative counts from the end).
        axis: i64,
    },
    /// Layer normalization over the dims from `axis` to the last.
    LayerNorm {
        /// First normalized axis (negative counts from the end).
        axis: i64,
        /// Added to the variance.
        epsilon: f64,
    },
    /// RMS normalization over the dims from `axis` to the last.
    RmsNorm {
        /// First normalized axis (negative counts from the end).
        axis: i64,
        /// Added to the mean square.
        epsilon: f64,
    },
    /// Same elements, new shape (given by the result type).
    Reshape,
    /// Permutes dims: result dim `i` is operand dim `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<u32>,
    },
    /// Same values, new layout (given by the result type).
    Relayout,
    /// Element-wise unary function.
    Unary {
        /// Which function.
        op: UnaryOp,
    },
    /// `log(softmax(x))` along an axis.
    LogSoftmax {
        /// The reduced axis (negative counts from the end).
        axis: i64,
    },
    /// Reduction over `axes`; the result keeps the reduced dims with size 1.
    Reduce {
        /// Which reduction.
        op: ReduceOp,
        /// The reduced axes (sorted, distinct).
        axes: Vec<u32>,
    },
    /// Joins operands along an axis (all other dims equal).
    Concat {
        /// The joined axis (negative counts from the end).
        axis: i64,
    },
    /// Strided slice: result element `i` along dim `d` is operand element
    /// `starts[d] + i * steps[d]`; the result type gives the counts.
    Slice {
        /// First index per dim (in range).
        starts: Vec<u64>,
        /// Step per dim (non-zero, may be negative).
        steps: Vec<i64>,
    },
    /// `data` indexed along `axis` by an integer `indices` tensor (negative
    /// indices count from the end): result shape
    /// `data[..axis] ++ indices ++ data[axis+1..]`.
    Gather {
        /// The indexed axis (negative counts from the end).
        axis: i64,
    },
    /// Numpy-broadcasts the operand to the result type's shape.
    Broadcast,
    /// 2-D convolution `[N, C, H, W] * [M, C/group, kH, kW] (+ bias[M])`.
    Conv2d {
        /// Strides (height, width).
        strides: [u64; 2],
        /// Padding (top, left, bottom, right).
        pads: [u64; 4],
        /// Dilations (height, width).
        dilations: [u64; 2],
        /// Number of channel groups.
        group: u64,
        /// Integer results: wrap or saturate the exact sum.
        overflow: Overflow,
    },
    /// Dequantization fused into a matrix product, with an epilogue:
    /// `act(matmul(x, dequantize(wq, scale, zp)) + bias)` (operands swapped
    /// with `weight_lhs`), each step rounded exactly as the unfused ops
    /// round: the dequantized weight to `dequant_type`, the product, the
    /// sum and the activation to the result type.
    QMatMul {
        /// Granularity of the weight scale.
        granularity: Granularity,
        /// Element type the weight is dequantized to (rounded once).
        dequant_type: ElemType,
        /// A weight zero point follows the scale.
        has_zero_point: bool,
        /// A bias operand comes last (broadcast to the result).
        has_bias: bool,
        /// The weight is the left operand: `matmul(w, x)`.
        weight_lhs: bool,
        /// The epilogue activation.
        activation: Activation,
        /// A requantize epilogue: the result is then the quantized type.
        requant: Option<QRequant>,
    },
    /// Integer matrix product with zero points:
    /// `Σ_k (a - za)(b - zb)` exactly, then wrap/saturate.
    MatMulInt {
        /// Wrap or saturate the exact sum to the result type.
        overflow: Overflow,
        /// How it is computed (the result does not depend on it).
        schedule: IntSchedule,
    },
    /// The identity on values; marks `columns` (indices of the last axis,
    /// strictly increasing) as outlier features (LLM.int8()). The e-graph
    /// optimizer's mixed decomposition computes their products in float and
    /// the rest through the quantized kernel; nothing else reads the mark.
    MarkOutliers {
        /// The outlier columns.
        columns: Vec<u64>,
    },
    /// Dynamic symmetric block scale (the activation side of ggml-style
    /// `q4_0 x q8_0` products): along the last axis, in blocks of `block`
    /// consecutive elements (the last block of a row may be shorter),
    /// `scale[.., j] = max_{i in block j} |x[.., i]| / qmax`, the division
    /// rounded once (nearest-even) to the result type, which is the
    /// operand's float type; a NaN in a block makes its scale NaN. The
    /// result has the operand's shape with the last dimension
    /// `ceil(k / block)`. With `quantize x, scale {axis = last, block}` to
    /// `i8` (`qmax = 127`) it gives the per-block 8-bit activation codes of
    /// `quantize-activations` (an all-zero block has scale 0, and `0 / 0`
    /// quantizes to the zero point 0).
    AbsMaxScale {
        /// Elements per block along the last axis (positive).
        block: u64,
        /// The largest code magnitude (positive): 127 for 8-bit codes.
        qmax: u64,
    },
    /// Dyadic requantization (HAWQ-V3):
    /// `round(acc · multiplier / 2^shift) + zp`, computed exactly on
    /// integers, then clamped or wrapped. With
    /// an `axis`, element `i` uses `multiplier[i[axis]]` and `shift[i[axis]]`
    /// (per-output-channel scales); without, both lists have one entry.
    RequantDyadic {
        /// Integer multipliers (0 ≤ m < 2^62), one per channel.
        multiplier: Vec<i64>,
        /// Right shifts (0 ≤ shift ≤ 126), one per channel.
        shift: Vec<u32>,
        /// The channel axis of the accumulator, if per-channel.
        axis: Option<u32>,
        /// Rounding of the exact quotient.
        rounding: Rounding,
        /// Clamp (true) or wrap.
        saturate: bool,
    },
}

/// Every op name the text format knows.
pub const OP_NAMES: &[&str] = &[
    "constant",
    "quantize",
    "dequantize",
    "requantize",
    "cast",
    "matmul",
    "gemm",
    "add",
    "sub",
    "mul",
    "div",
    "relu",
    "gelu",
    "silu",
    "softmax",
    "layer_norm",
    "rms_norm",
    "reshape",
    "transpose",
    "relayout",
    "pow",
    "min",
    "max",
    "neg",
    "sqrt",
    "exp",
    "sigmoid",
    "tanh",
    "erf",
    "log_softmax",
    "reduce_min",
    "reduce_max",
    "concat",
    "slice",
    "gather",
    "broadcast",
    "mark_outliers",
    "conv2d",
    "qmatmul",
    "matmul_int",
    "requant_dyadic",
    "absmax_scale",
];

impl OpKind {
    /// The op's name in the text format.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Constant(_) => "constant",
            OpKind::Quantize { .. } => "quantize",
            OpKind::Dequantize { .. } => "dequantize",
            OpKind::Requantize { .. } => "requantize",
            OpKind::Cast { .. } => "cast",
            OpKind::MatMul { .. } => "matmul",
            OpKind::Gemm { .. } => "gemm",
            OpKind::Binary { op, .. } => match op {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "sub",
                BinaryOp::Mul => "mul",
                BinaryOp::Div => "div",
                BinaryOp::Pow => "pow",
                BinaryOp::Min => "min",
                BinaryOp::Max => "max",
            },
            OpKind::Relu => "relu",
            OpKind::Gelu { .. } => "gelu",
            OpKind::Silu => "silu",
            OpKind::Softmax { .. } => "softmax",
            OpKind::LayerNorm { .. } => "layer_norm",
            OpKind::RmsNorm { .. } => "rms_norm",
            OpKind::Reshape => "reshape",
            OpKind::Transpose { .. } => "transpose",
            OpKind::Relayout => "relayout",
            OpKind::Unary { op } => op.name(),
            OpKind::LogSoftmax { .. } => "log_softmax",
            OpKind::Reduce { op, .. } => match op {
                ReduceOp::Min => "reduce_min",
                ReduceOp::Max => "reduce_max",
            },
            OpKind::Concat { .. } => "concat",
            OpKind::Slice { .. } => "slice",
            OpKind::Gather { .. } => "gather",
            OpKind::Broadcast => "broadcast",
            OpKind::MarkOutliers { .. } => "mark_outliers",
            OpKind::Conv2d { .. } => "conv2d",
            OpKind::QMatMul { .. } => "qmatmul",
            OpKind::MatMulInt { .. } => "matmul_int",
            OpKind::RequantDyadic { .. } => "requant_dyadic",
            OpKind::AbsMaxScale { .. } => "absmax_scale",
        }
    }

    /// Allowed operand counts (inclusive range).
    pub fn operand_range(&self) -> (usize, usize) {
        match self {
            OpKind::Constant(_) => (0, 0),
            OpKind::Quantize { .. } | OpKind::Dequantize { .. } => (2, 3),
            OpKind::Requantize { .. } => (5, 5),
            OpKind::MatMul { .. } | OpKind::Binary { .. } => (2, 2),
            OpKind::Gemm { .. } | OpKind::LayerNorm { .. } => (2, 3),
            OpKind::RmsNorm { .. } | OpKind::Gather { .. } => (2, 2),
            OpKind::Conv2d { .. } => (2, 3),
            OpKind::Concat { .. } => (1, usize::MAX),
            OpKind::QMatMul {
                has_zero_point,
                has_bias,
                requant,
                ..
            } => {
                let rq = requant
                    .as_ref()
                    .map_or(0, |r| 1 + r.has_zero_point as usize);
                let n = 3 + *has_zero_point as usize + *has_bias as usize + rq;
                (n, n)
            }
            OpKind::MatMulInt { .. } => (2, 4),
            OpKind::RequantDyadic { .. } => (1, 2),
            _ => (1, 1),
        }
    }

    /// Whether the op rounds stochastically (`rounding = stochastic`).
    /// Its result is still a function of its operands, the seed and each
    /// element's row-major index, but rewrites that assume a deterministic
    /// rounding mode, or that move elements, must leave it alone.
    pub fn is_stochastic(&self) -> bool {
        matches!(
            self,
            OpKind::Quantize {
                stochastic: Some(_),
                ..
            } | OpKind::Cast {
                stochastic: Some(_),
                ..
            }
        )
    }

    /// Whether the op has no side effects and its result depends only on its
    /// operands (all ops today; kept explicit for passes).
    pub fn is_pure(&self) -> bool {
        true
    }

    /// Non-default attributes, in a fixed order.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut out = Vec::new();
        let rounding = |out: &mut Vec<(&'static str, Attr)>, r: Rounding| {
            if r != Rounding::NearestEven {
                out.push(("rounding", Attr::Ident(r.name().into())));
            }
        };
        // A stochastic op's `rounding` field is unused (the verifier
        // requires nearest_even), so it is not printed.
        let stochastic =
            |out: &mut Vec<(&'static str, Attr)>, r: Rounding, s: &Option<StochasticRounding>| {
                match s {
                    // Seeds above i64::MAX print as their two's complement
                    // value and parse back to the same bits.
                    Some(s) => {
                        out.push(("rounding", Attr::Ident("stochastic".into())));
                        out.push(("seed", Attr::Int(s.seed() as i64)));
                        out.push(("random_bits", Attr::Int(s.bits() as i64)));
                    }
                    None => rounding(out, r),
                }
            };
        let overflow = |out: &mut Vec<(&'static str, Attr)>, o: Overflow| {
            if o != Overflow::Wrap {
                out.push(("overflow", Attr::Ident(o.name().into())));
            }
        };
        match self {
            OpKind::Quantize {
                granularity,
                rounding: r,
                saturate,
                stochastic: st,
            } => {
                granularity.push_attrs(&mut out);
                stochastic(&mut out, *r, st);
                if !saturate {
                    out.push(("saturate", Attr::Bool(false)));
                }
            }
            OpKind::Dequantize { granularity } => granularity.push_attrs(&mut out),
            OpKind::Requantize {
                in_granularity,
                out_granularity,
                rounding: r,
                saturate,
            } => {
                let mut a = Vec::new();
                in_granularity.push_attrs(&mut a);
                out.extend(a.into_iter().map(|(k, v)| (prefixed("in_", k), v)));
                let mut a = Vec::new();
                out_granularity.push_attrs(&mut a);
                out.extend(a.into_iter().map(|(k, v)| (prefixed("out_", k), v)));
                rounding(&mut out, *r);
                if !saturate {
                    out.push(("saturate", Attr::Bool(false)));
                }
            }
            OpKind::Cast {
                rounding: r,
                saturate,
                stochastic: st,
            } => {
                stochastic(&mut out, *r, st);
                if *saturate {
                    out.push(("saturate", Attr::Bool(true)));
                }
            }
            OpKind::MatMul { overflow: o } | OpKind::Binary { overflow: o, .. } => {
                overflow(&mut out, *o)
            }
            OpKind::LogSoftmax { axis } => {
                if *axis != -1 {
                    out.push(("axis", Attr::Int(*axis)));
                }
            }
            OpKind::Concat { axis } | OpKind::Gather { axis } => {
                out.push(("axis", Attr::Int(*axis)))
            }
            OpKind::Reduce { axes, .. } => {
                out.push(("axes", Attr::Ints(axes.iter().map(|&a| a as i64).collect())))
            }
            OpKind::Slice { starts, steps } => {
                out.push((
                    "starts",
                    Attr::Ints(starts.iter().map(|&s| s as i64).collect()),
                ));
                out.push(("steps", Attr::Ints(steps.clone())));
            }
            OpKind::Conv2d {
                strides,
                pads,
                dilations,
                group,
                overflow: o,
            } => {
                let ints = |v: &[u64]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
                if *strides != [1, 1] {
                    out.push(("strides", ints(strides)));
                }
                if *pads != [0; 4] {
                    out.push(("pads", ints(pads)));
                }
                if *dilations != [1, 1] {
                    out.push(("dilations", ints(dilations)));
                }
                if *group != 1 {
                    out.push(("group", Attr::Int(*group as i64)));
                }
                overflow(&mut out, *o);
            }
            OpKind::Gemm {
                trans_a,
                trans_b,
                alpha,
                beta,
                overflow: o,
            } => {
                if *trans_a {
                    out.push(("trans_a", Attr::Bool(true)));
                }
                if *trans_b {
                    out.push(("trans_b", Attr::Bool(true)));
                }
                if *alpha != 1.0 {
                    out.push(("alpha", Attr::Float(*alpha)));
                }
                if *beta != 1.0 {
                    out.push(("beta", Attr::Float(*beta)));
                }
                overflow(&mut out, *o);
            }
            OpKind::Gelu { tanh } => {
                if *tanh {
                    out.push(("approximate", Attr::Ident("tanh".into())));
                }
            }
            OpKind::Softmax { axis } => {
                if *axis != -1 {
                    out.push(("axis", Attr::Int(*axis)));
                }
            }
            OpKind::LayerNorm { axis, epsilon } | OpKind::RmsNorm { axis, epsilon } => {
                if *axis != -1 {
                    out.push(("axis", Attr::Int(*axis)));
                }
                if *epsilon != 1e-5 {
                    out.push(("epsilon", Attr::Float(*epsilon)));
                }
            }
            OpKind::Transpose { perm } => {
                out.push(("perm", Attr::Ints(perm.iter().map(|&p| p as i64).collect())))
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
                granularity.push_attrs(&mut out);
                out.push(("dequant_type", Attr::Ident(dequant_type.to_string())));
                if *has_zero_point {
                    out.push(("zero_point", Attr::Bool(true)));
                }
                if *has_bias {
                    out.push(("bias", Attr::Bool(true)));
                }
                if *weight_lhs {
                    out.push(("weight_lhs", Attr::Bool(true)));
                }
                if *activation != Activation::None {
                    out.push(("activation", Attr::Ident(activation.name().into())));
                }
                if let Some(rq) = requant {
                    out.push(("requant_type", Attr::Ident(rq.float_type.to_string())));
                    let mut a = Vec::new();
                    rq.granularity.push_attrs(&mut a);
                    out.extend(a.into_iter().map(|(k, v)| (prefixed("out_", k), v)));
                    if rq.has_zero_point {
                        out.push(("out_zero_point", Attr::Bool(true)));
                    }
                    rounding(&mut out, rq.rounding);
                    if !rq.saturate {
                        out.push(("saturate", Attr::Bool(false)));
                    }
                }
            }
            OpKind::MatMulInt {
                overflow: o,
                schedule,
            } => {
                overflow(&mut out, *o);
                if *schedule != IntSchedule::Direct {
                    out.push(("schedule", Attr::Ident(schedule.name().into())));
                }
            }
            OpKind::RequantDyadic {
                multiplier,
                shift,
                axis,
                rounding: r,
                saturate,
            } => {
                if let Some(a) = axis {
                    out.push(("axis", Attr::Int(*a as i64)));
                }
                let list = |v: Vec<i64>| match v[..] {
                    [one] if axis.is_none() => Attr::Int(one),
                    _ => Attr::Ints(v),
                };
                out.push(("multiplier", list(multiplier.clone())));
                out.push(("shift", list(shift.iter().map(|&s| s as i64).collect())));
                rounding(&mut out, *r);
                if !saturate {
                    out.push(("saturate", Attr::Bool(false)));
                }
            }
            OpKind::MarkOutliers { columns } => out.push((
                "columns",
                Attr::Ints(columns.iter().map(|&c| c as i64).collect()),
            )),
            OpKind::AbsMaxScale { block, qmax } => {
                out.push(("block", Attr::Int(*block as i64)));
                out.push(("qmax", Attr::Int(*qmax as i64)));
            }
            OpKind::Constant(_)
            | OpKind::Relu
            | OpKind::Silu
            | OpKind::Reshape
            | OpKind::Relayout
            | OpKind::Unary { .. }
            | OpKind::Broadcast => {}
        }
        out
    }

    /// Builds an op from its generic form (name and attributes). Constants
    /// are not built here: the parser reads their payload itself.
    pub fn from_parts(name: &str, attrs: Vec<(String, Attr)>) -> Result<OpKind, String> {
        let mut a = AttrReader { attrs };
        if let Some(op) = UnaryOp::ALL.into_iter().find(|u| u.name() == name) {
            a.finish(name)?;
            return Ok(OpKind::Unary { op });
        }
        let kind = match name {
            "quantize" => {
                let granularity = Granularity::from_attrs(&mut a)?;
                let (rounding, stochastic) = a.rounding_or_stochastic()?;
                OpKind::Quantize {
                    granularity,
                    rounding,
                    saturate: a.opt_bool("saturate")?.unwrap_or(true),
                    stochastic,
                }
            }
            "dequantize" => OpKind::Dequantize {
                granularity: Granularity::from_attrs(&mut a)?,
            },
            "requantize" => {
                let in_granularity = Granularity::from_attrs(&mut a.with_prefix("in_"))?;
                let out_granularity = Granularity::from_attrs(&mut a.with_prefix("out_"))?;
                OpKind::Requantize {
                    in_granularity,
                    out_granularity,
                    rounding: a.rounding()?,
                    saturate: a.opt_bool("saturate")?.unwrap_or(true),
                }
            }
            "cast" => {
                let (rounding, stochastic) = a.rounding_or_stochastic()?;
                OpKind::Cast {
                    rounding,
                    saturate: a.opt_bool("saturate")?.unwrap_or(false),
                    stochastic,
                }
            }
            "matmul" => OpKind::MatMul {
                overflow: a.overflow()?,
            },
            "gemm" => OpKind::Gemm {
                trans_a: a.opt_bool("trans_a")?.unwrap_or(false),
                trans_b: a.opt_bool("trans_b")?.unwrap_or(false),
                alpha: a.opt_float("alpha")?.unwrap_or(1.0),
                beta: a.opt_float("beta")?.unwrap_or(1.0),
                overflow: a.overflow()?,
            },
            "add" | "sub" | "mul" | "div" | "pow" | "min" | "max" => OpKind::Binary {
                op: match name {
                    "add" => BinaryOp::Add,
                    "sub" => BinaryOp::Sub,
                    "mul" => BinaryOp::Mul,
                    "pow" => BinaryOp::Pow,
                    "min" => BinaryOp::Min,
                    "max" => BinaryOp::Max,
                    _ => BinaryOp::Div,
                },
                overflow: a.overflow()?,
            },
            "relu" => OpKind::Relu,
            "gelu" => OpKind::Gelu {
                tanh: match a.opt_ident("approximate")?.as_deref() {
                    None | Some("none") => false,
                    Some("tanh") => true,
                    Some(o) => {
                        return Err(format!(
                            "attribute 'approximate' must be none or tanh, not '{o}'"
                        ))
                    }
                },
            },
            "silu" => OpKind::Silu,
            "softmax" => OpKind::Softmax {
                axis: a.opt_int("axis")?.unwrap_or(-1),
            },
            "layer_norm" => OpKind::LayerNorm {
                axis: a.opt_int("axis")?.unwrap_or(-1),
                epsilon: a.opt_float("epsilon")?.unwrap_or(1e-5),
            },
            "rms_norm" => OpKind::RmsNorm {
                axis: a.opt_int("axis")?.unwrap_or(-1),
                epsilon: a.opt_float("epsilon")?.unwrap_or(1e-5),
            },
            "reshape" => OpKind::Reshape,
            "transpose" => {
                let perm = a
                    .opt_ints("perm")?
                    .ok_or("transpose needs a 'perm' attribute")?;
                if perm.iter().any(|&p| p < 0) {
                    return Err("'perm' entries must be non-negative".into());
                }
                OpKind::Transpose {
                    perm: perm.into_iter().map(|p| p as u32).collect(),
                }
            }
            "relayout" => OpKind::Relayout,
            "mark_outliers" => {
                let columns = a
                    .int_or_ints("columns")?
                    .ok_or("mark_outliers needs a 'columns' attribute")?;
                if let Some(c) = columns.iter().find(|c| **c < 0) {
                    return Err(format!(
                        "attribute 'columns' must list non-negative integers, not {c}"
                    ));
                }
                OpKind::MarkOutliers {
                    columns: columns.into_iter().map(|c| c as u64).collect(),
                }
            }
            "log_softmax" => OpKind::LogSoftmax {
                axis: a.opt_int("axis")?.unwrap_or(-1),
            },
            "absmax_scale" => {
                let positive = |a: &mut AttrReader, what: &str| -> Result<u64, String> {
                    match a.opt_int(what)? {
                        Some(v) if v > 0 => Ok(v as u64),
                        Some(v) => Err(format!(
                            "absmax_scale attribute '{what}' must be positive, not {v}"
                        )),
                        None => Err(format!("absmax_scale needs a '{what}' attribute")),
                    }
                };
                OpKind::AbsMaxScale {
                    block: positive(&mut a, "block")?,
                    qmax: positive(&mut a, "qmax")?,
                }
            }
            "reduce_min" | "reduce_max" => {
                let axes = a
                    .opt_ints("axes")?
                    .ok_or("reduction needs an 'axes' attribute")?;
                if axes.iter().any(|&x| x < 0) || axes.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("'axes' must be sorted, distinct and non-negative".into());
                }
                OpKind::Reduce {
                    op: if name == "reduce_min" {
                        ReduceOp::Min
                    } else {
                        ReduceOp::Max
                    },
                    axes: axes.into_iter().map(|x| x as u32).collect(),
                }
            }
            "concat" => OpKind::Concat {
                axis: a
                    .opt_int("axis")?
                    .ok_or("concat needs an 'axis' attribute")?,
            },
            "gather" => OpKind::Gather {
                axis: a
                    .opt_int("axis")?
                    .ok_or("gather needs an 'axis' attribute")?,
            },
            "slice" => {
                let starts = a.opt_ints("starts")?.ok_or("slice needs 'starts'")?;
                let steps = a.opt_ints("steps")?.ok_or("slice needs 'steps'")?;
                if starts.len() != steps.len() {
                    return Err("'starts' and 'steps' must have one entry per dim".into());
                }
                if starts.iter().any(|&x| x < 0) || steps.contains(&0) {
                    return Err("'starts' must be non-negative and 'steps' non-zero".into());
                }
                OpKind::Slice {
                    starts: starts.into_iter().map(|x| x as u64).collect(),
                    steps,
                }
            }
            "broadcast" => OpKind::Broadcast,
            "conv2d" => {
                let fixed = |a: &mut AttrReader, key: &str, n: usize, default: u64| match a
                    .opt_ints(key)?
                {
                    None => Ok(vec![default; n]),
                    Some(v) if v.len() == n && v.iter().all(|&x| x >= 0) => {
                        Ok(v.into_iter().map(|x| x as u64).collect::<Vec<u64>>())
                    }
                    Some(_) => Err(format!(
                        "attribute '{key}' must list {n} non-negative integers"
                    )),
                };
                let strides = fixed(&mut a, "strides", 2, 1)?;
                let pads = fixed(&mut a, "pads", 4, 0)?;
                let dilations = fixed(&mut a, "dilations", 2, 1)?;
                OpKind::Conv2d {
                    strides: [strides[0], strides[1]],
                    pads: [pads[0], pads[1], pads[2], pads[3]],
                    dilations: [dilations[0], dilations[1]],
                    group: a.opt_uint("group")?.unwrap_or(1),
                    overflow: a.overflow()?,
                }
            }
            "qmatmul" => OpKind::QMatMul {
                granularity: Granularity::from_attrs(&mut a)?,
                dequant_type: {
                    let t = a
                        .opt_ident("dequant_type")?
                        .ok_or("qmatmul needs a 'dequant_type' attribute")?;
                    t.parse::<ElemType>()
                        .map_err(|e| format!("attribute 'dequant_type': {e}"))?
                },
                has_zero_point: a.opt_bool("zero_point")?.unwrap_or(false),
                has_bias: a.opt_bool("bias")?.unwrap_or(false),
                weight_lhs: a.opt_bool("weight_lhs")?.unwrap_or(false),
                activation: match a.opt_ident("activation")? {
                    None => Activation::None,
                    Some(s) => Activation::parse(&s)?,
                },
                // Without `requant_type` the epilogue's attributes stay
                // unread, so `finish` reports them as unknown.
                requant: match a.opt_ident("requant_type")? {
                    None => None,
                    Some(t) => {
                        let float_type = t
                            .parse::<ElemType>()
                            .map_err(|e| format!("attribute 'requant_type': {e}"))?;
                        let has_zero_point = a.opt_bool("out_zero_point")?.unwrap_or(false);
                        let mut out = a.with_prefix("out_");
                        let granularity = Granularity::from_attrs(&mut out)
                            .map_err(|e| format!("output scale: {e}"))?;
                        if let Some((k, _)) = out.attrs.first() {
                            return Err(format!("op 'qmatmul' has no attribute 'out_{k}'"));
                        }
                        Some(QRequant {
                            float_type,
                            granularity,
                            rounding: a.rounding()?,
                            saturate: a.opt_bool("saturate")?.unwrap_or(true),
                            has_zero_point,
                        })
                    }
                },
            },
            "matmul_int" => OpKind::MatMulInt {
                overflow: a.overflow()?,
                schedule: match a.opt_ident("schedule")?.as_deref() {
                    None | Some("direct") => IntSchedule::Direct,
                    Some("bit_serial") => IntSchedule::BitSerial,
                    Some("amx") => IntSchedule::Amx,
                    Some(o) => {
                        return Err(format!(
                            "attribute 'schedule' must be direct, bit_serial or amx, not '{o}'"
                        ))
                    }
                },
            },
            "requant_dyadic" => {
                let axis = a.opt_uint("axis")?.map(|x| x as u32);
                let multiplier = a
                    .int_or_ints("multiplier")?
                    .ok_or("requant_dyadic needs a 'multiplier' attribute")?;
                if let Some(m) = multiplier.iter().find(|m| !(0..1i64 << 62).contains(*m)) {
                    return Err(format!(
                        "attribute 'multiplier' must be in [0, 2^62), not {m}"
                    ));
                }
                let shift = a
                    .int_or_ints("shift")?
                    .ok_or("requant_dyadic needs a 'shift' attribute")?;
                if let Some(s) = shift.iter().find(|s| !(0..=126).contains(*s)) {
                    return Err(format!("attribute 'shift' must be in [0, 126], not {s}"));
                }
                if multiplier.len() != shift.len() || multiplier.is_empty() {
                    return Err(format!(
                        "attributes 'multiplier' ({}) and 'shift' ({}) need one entry per channel each",
                        multiplier.len(),
                        shift.len()
                    ));
                }
                if axis.is_none() && multiplier.len() != 1 {
                    return Err(format!(
                        "{} multipliers need an 'axis' attribute naming the channel axis",
                        multiplier.len()
                    ));
                }
                OpKind::RequantDyadic {
                    multiplier,
                    shift: shift.into_iter().map(|s| s as u32).collect(),
                    axis,
                    rounding: a.rounding()?,
                    saturate: a.opt_bool("saturate")?.unwrap_or(true),
                }
            }
            "constant" => return Err("constant needs a payload".into()),
            _ => return Err(format!("unknown op '{name}'")),
        };
        a.finish(name)?;
        Ok(kind)
    }

    /// The result type of a constant of this type built from a tensor.
    pub fn constant_of(t: &crate::Tensor, ty: &TensorType) -> OpKind {
        OpKind::Constant(ConstData::new(t.to_bytes(&ty.layout)))
    }
}

fn prefixed(prefix: &str, key: &'static str) -> &'static str {
    match (prefix, key) {
        ("in_", "axis") => "in_axis",
        ("in_", "block_size") => "in_block_size",
        ("in_", "block_axes") => "in_block_axes",
        ("in_", "block_sizes") => "in_block_sizes",
        ("out_", "axis") => "out_axis",
        ("out_", "block_size") => "out_block_size",
        ("out_", "block_axes") => "out_block_axes",
        ("out_", "block_sizes") => "out_block_sizes",
        _ => key,
    }
}

/// Takes typed attributes out of a generic attribute list, so that unknown
/// or duplicated attributes can be reported at the end.
struct AttrReader {
    attrs: Vec<(String, Attr)>,
}

impl AttrReader {
    fn take(&mut self, key: &str) -> Option<Attr> {
        let i = self.attrs.iter().position(|(k, _)| k == key)?;
        Some(self.attrs.remove(i).1)
    }
    fn with_prefix(&mut self, prefix: &str) -> AttrReader {
        let mut taken = Vec::new();
        self.attrs.retain(|(k, v)| {
            if let Some(rest) = k.strip_prefix(prefix) {
                taken.push((rest.to_string(), v.clone()));
                false
            } else {
                true
            }
        });
        AttrReader { attrs: taken }
    }
    fn opt_int(&mut self, key: &str) -> Result<Option<i64>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Attr::Int(i)) => Ok(Some(i)),
            Some(o) => Err(format!("attribute '{key}' must be an integer, not {o}")),
        }
    }
    fn opt_uint(&mut self, key: &str) -> Result<Option<u64>, String> {
        match self.opt_int(key)? {
            Some(i) if i < 0 => Err(format!("attribute '{key}' must be non-negative, not {i}")),
            o => Ok(o.map(|i| i as u64)),
        }
    }
    fn opt_float(&mut self, key: &str) -> Result<Option<f64>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Attr::Float(x)) => Ok(Some(x)),
            Some(Attr::Int(i)) => Ok(Some(i as f64)),
            Some(o) => Err(format!("attribute '{key}' must be a number, not {o}")),
        }
    }
    fn opt_bool(&mut self, key: &str) -> Result<Option<bool>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Attr::Bool(b)) => Ok(Some(b)),
            Some(o) => Err(format!("attribute '{key}' must be true or false, not {o}")),
        }
    }
    fn opt_ident(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Attr::Ident(s)) => Ok(Some(s)),
            Some(o) => Err(format!("attribute '{key}' must be a name, not {o}")),
        }
    }
    fn opt_ints(&mut self, key: &str) -> Result<Option<Vec<i64>>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(o) => Err(format!(
                "attribute '{key}' must be a list of integers, not {o}"
            )),
        }
    }
    fn int_or_ints(&mut self, key: &str) -> Result<Option<Vec<i64>>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Attr::Int(i)) => Ok(Some(vec![i])),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(o) => Err(format!(
                "attribute '{key}' must be an integer or a list of integers, not {o}"
            )),
        }
    }
    fn rounding(&mut self) -> Result<Rounding, String> {
        self.opt_ident("rounding")?
            .map(|s| s.parse())
            .transpose()
            .map(|r| r.unwrap_or_default())
    }
    /// `rounding = <mode>`, or `rounding = stochastic, seed = N,
    /// random_bits = B` (both required; `seed` is the stream's 64 bits,
    /// negative values standing for seeds of 2^63 and above).
    fn rounding_or_stochastic(&mut self) -> Result<(Rounding, Option<StochasticRounding>), String> {
        let seed = self.opt_int("seed")?;
        let bits = self.opt_int("random_bits")?;
        match self.opt_ident("rounding")? {
            Some(s) if s == "stochastic" => {
                let seed = seed.ok_or(
                    "'rounding = stochastic' needs a 'seed' attribute (an integer)".to_string(),
                )?;
                let bits = bits.ok_or(
                    "'rounding = stochastic' needs a 'random_bits' attribute (1 to 64)".to_string(),
                )?;
                let bits = u32::try_from(bits)
                    .ok()
                    .filter(|b| (1..=64).contains(b))
                    .ok_or_else(|| {
                        format!("attribute 'random_bits' must be 1 to 64, not {bits}")
                    })?;
                let st = StochasticRounding::new(seed as u64, bits).map_err(|e| e.to_string())?;
                Ok((Rounding::NearestEven, Some(st)))
            }
            other => {
                if seed.is_some() || bits.is_some() {
                    let k = if seed.is_some() {
                        "seed"
                    } else {
                        "random_bits"
                    };
                    return Err(format!(
                        "attribute '{k}' is only allowed with 'rounding = stochastic'"
                    ));
                }
                let r = other
                    .map(|s| {
                        s.parse::<Rounding>()
                            .map_err(|e| format!("{e}, or stochastic with seed and random_bits"))
                    })
                    .transpose()?;
                Ok((r.unwrap_or_default(), None))
            }
        }
    }
    fn overflow(&mut self) -> Result<Overflow, String> {
        self.opt_ident("overflow")?
            .map(|s| s.parse())
            .transpose()
            .map(|r| r.unwrap_or_default())
    }
    fn finish(self, op: &str) -> Result<(), String> {
        match self.attrs.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("op '{op}' has no attribute '{k}'")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_form_round_trips() {
        let ops = vec![
            OpKind::Quantize {
                granularity: Granularity::Blocked {
                    blocks: vec![(1, 32)],
                },
                rounding: Rounding::NearestAway,
                saturate: false,
                stochastic: None,
            },
            OpKind::Quantize {
                granularity: Granularity::PerAxis { axis: 1 },
                rounding: Rounding::NearestEven,
                saturate: true,
                stochastic: StochasticRounding::new(42, 12).ok(),
            },
            OpKind::Cast {
                rounding: Rounding::NearestEven,
                saturate: true,
                // A seed above i64::MAX prints as a negative integer.
                stochastic: StochasticRounding::new(u64::MAX - 5, 64).ok(),
            },
            OpKind::Requantize {
                in_granularity: Granularity::PerAxis { axis: 0 },
                out_granularity: Granularity::Blocked {
                    blocks: vec![(0, 2), (1, 4)],
                },
                rounding: Rounding::NearestEven,
                saturate: true,
            },
            OpKind::Gemm {
                trans_a: false,
                trans_b: true,
                alpha: 0.5,
                beta: 1.0,
                overflow: Overflow::Saturate,
            },
            OpKind::Transpose { perm: vec![1, 0] },
            OpKind::LayerNorm {
                axis: 1,
                epsilon: 1e-6,
            },
            OpKind::Gelu { tanh: true },
            OpKind::Unary { op: UnaryOp::Erf },
            OpKind::Binary {
                op: BinaryOp::Pow,
                overflow: Overflow::Wrap,
            },
            OpKind::LogSoftmax { axis: 0 },
            OpKind::Reduce {
                op: ReduceOp::Max,
                axes: vec![0, 2],
            },
            OpKind::Concat { axis: -1 },
            OpKind::Gather { axis: 1 },
            OpKind::Slice {
                starts: vec![0, 3],
                steps: vec![1, -2],
            },
            OpKind::Broadcast,
            OpKind::MarkOutliers {
                columns: vec![1, 5],
            },
            OpKind::AbsMaxScale {
                block: 32,
                qmax: 127,
            },
            OpKind::Conv2d {
                strides: [2, 1],
                pads: [1, 1, 0, 0],
                dilations: [1, 2],
                group: 2,
                overflow: Overflow::Saturate,
            },
            OpKind::Conv2d {
                strides: [1, 1],
                pads: [0; 4],
                dilations: [1, 1],
                group: 1,
                overflow: Overflow::Wrap,
            },
            OpKind::QMatMul {
                granularity: Granularity::Blocked {
                    blocks: vec![(0, 32)],
                },
                dequant_type: ElemType::F16,
                has_zero_point: true,
                has_bias: true,
                weight_lhs: false,
                activation: Activation::GeluTanh,
                requant: None,
            },
            OpKind::QMatMul {
                granularity: Granularity::PerAxis { axis: 1 },
                dequant_type: ElemType::F32,
                has_zero_point: false,
                has_bias: true,
                weight_lhs: true,
                activation: Activation::Relu,
                requant: Some(QRequant {
                    float_type: ElemType::F16,
                    granularity: Granularity::PerAxis { axis: 0 },
                    rounding: Rounding::Down,
                    saturate: false,
                    has_zero_point: true,
                }),
            },
            OpKind::QMatMul {
                granularity: Granularity::PerTensor,
                dequant_type: ElemType::F32,
                has_zero_point: true,
                has_bias: false,
                weight_lhs: false,
                activation: Activation::None,
                requant: Some(QRequant {
                    float_type: ElemType::F32,
                    granularity: Granularity::PerTensor,
                    rounding: Rounding::NearestEven,
                    saturate: true,
                    has_zero_point: false,
                }),
            },
            OpKind::MatMulInt {
                overflow: Overflow::Saturate,
                schedule: IntSchedule::BitSerial,
            },
            OpKind::MatMulInt {
                overflow: Overflow::Wrap,
                schedule: IntSchedule::Amx,
            },
            OpKind::RequantDyadic {
                multiplier: vec![1 << 30],
                shift: vec![37],
                axis: None,
                rounding: Rounding::NearestAway,
                saturate: false,
            },
            OpKind::RequantDyadic {
                multiplier: vec![1 << 30, 3, 0],
                shift: vec![37, 0, 126],
                axis: Some(1),
                rounding: Rounding::Down,
                saturate: true,
            },
        ];
        for op in ops {
            let attrs = op
                .attrs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(OpKind::from_parts(op.name(), attrs).unwrap(), op);
        }
    }

    #[test]
    fn stochastic_rounding_attributes() {
        let parts = |kv: &[(&str, Attr)]| -> Vec<(String, Attr)> {
            kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
        };
        let st = |s: &str| ("rounding", Attr::Ident(s.into()));
        let op = OpKind::from_parts(
            "cast",
            parts(&[
                st("stochastic"),
                ("seed", Attr::Int(7)),
                ("random_bits", Attr::Int(5)),
            ]),
        )
        .unwrap();
        assert!(op.is_stochastic());
        let want = vec![
            ("rounding", Attr::Ident("stochastic".into())),
            ("seed", Attr::Int(7)),
            ("random_bits", Attr::Int(5)),
        ];
        assert_eq!(op.attrs(), want);
        let e = OpKind::from_parts(
            "quantize",
            parts(&[st("stochastic"), ("seed", Attr::Int(1))]),
        )
        .unwrap_err();
        assert!(e.contains("needs a 'random_bits'"), "{e}");
        let e = OpKind::from_parts(
            "quantize",
            parts(&[st("stochastic"), ("random_bits", Attr::Int(8))]),
        )
        .unwrap_err();
        assert!(e.contains("needs a 'seed'"), "{e}");
        for bad in [0, 65, -1] {
            let e = OpKind::from_parts(
                "cast",
                parts(&[
                    st("stochastic"),
                    ("seed", Attr::Int(1)),
                    ("random_bits", Attr::Int(bad)),
                ]),
            )
            .unwrap_err();
            assert!(e.contains("'random_bits' must be 1 to 64"), "{e}");
        }
        let e = OpKind::from_parts("cast", parts(&[st("up"), ("seed", Attr::Int(1))])).unwrap_err();
        assert!(
            e.contains("'seed' is only allowed with 'rounding = stochastic'"),
            "{e}"
        );
        let e =
            OpKind::from_parts("quantize", parts(&[("random_bits", Attr::Int(3))])).unwrap_err();
        assert!(e.contains("'random_bits' is only allowed"), "{e}");
        let e = OpKind::from_parts(
            "cast",
            parts(&[
                st("stochastic"),
                ("seed", Attr::Float(1.5)),
                ("random_bits", Attr::Int(3)),
            ]),
        )
        .unwrap_err();
        assert!(e.contains("'seed' must be an integer"), "{e}");
        // Requantize has no stochastic mode.
        let e = OpKind::from_parts("requantize", parts(&[st("stochastic")])).unwrap_err();
        assert!(e.contains("unknown rounding mode 'stochastic'"), "{e}");
        let det = OpKind::from_parts("cast", parts(&[st("down")])).unwrap();
        assert!(!det.is_stochastic());
    }

    #[test]
    fn absmax_scale_attributes_must_be_positive() {
        let parts = |b: i64, q: Option<i64>| {
            let mut v = vec![("block".to_string(), Attr::Int(b))];
            if let Some(q) = q {
                v.push(("qmax".to_string(), Attr::Int(q)));
            }
            OpKind::from_parts("absmax_scale", v)
        };
        assert_eq!(
            parts(32, Some(127)),
            Ok(OpKind::AbsMaxScale {
                block: 32,
                qmax: 127
            })
        );
        let e = parts(0, Some(127)).unwrap_err();
        assert!(e.contains("'block' must be positive, not 0"), "{e}");
        let e = parts(32, Some(-1)).unwrap_err();
        assert!(e.contains("'qmax' must be positive, not -1"), "{e}");
        let e = parts(32, None).unwrap_err();
        assert!(e.contains("needs a 'qmax' attribute"), "{e}");
    }

    #[test]
    fn bad_attributes_are_named() {
        let e = OpKind::from_parts("relu", vec![("axis".into(), Attr::Int(1))]).unwrap_err();
        assert!(e.contains("no attribute 'axis'"), "{e}");
        let e = OpKind::from_parts("frobnicate", vec![]).unwrap_err();
        assert!(e.contains("unknown op"), "{e}");
        let e =
            OpKind::from_parts("quantize", vec![("block_size".into(), Attr::Int(32))]).unwrap_err();
        assert!(e.contains("needs an axis"), "{e}");
        let e = OpKind::from_parts("qmatmul", vec![]).unwrap_err();
        assert!(e.contains("needs a 'dequant_type'"), "{e}");
        let dq = || ("dequant_type".to_string(), Attr::Ident("f32".into()));
        // Epilogue attributes without `requant_type` are unknown.
        let e = OpKind::from_parts(
            "qmatmul",
            vec![dq(), ("saturate".into(), Attr::Bool(false))],
        )
        .unwrap_err();
        assert!(e.contains("no attribute 'saturate'"), "{e}");
        let e = OpKind::from_parts(
            "qmatmul",
            vec![
                dq(),
                ("requant_type".into(), Attr::Ident("f32".into())),
                ("out_bogus".into(), Attr::Int(1)),
            ],
        )
        .unwrap_err();
        assert!(e.contains("no attribute 'out_bogus'"), "{e}");
        let e = OpKind::from_parts(
            "requant_dyadic",
            vec![
                ("multiplier".into(), Attr::Int(-1)),
                ("shift".into(), Attr::Int(3)),
            ],
        )
        .unwrap_err();
        assert!(e.contains("'multiplier' must be in"), "{e}");
        let e = OpKind::from_parts(
            "requant_dyadic",
            vec![
                ("multiplier".into(), Attr::Ints(vec![1, 2])),
                ("shift".into(), Attr::Ints(vec![3, 4])),
            ],
        )
        .unwrap_err();
        assert!(e.contains("need an 'axis'"), "{e}");
        let e = OpKind::from_parts(
            "requant_dyadic",
            vec![
                ("axis".into(), Attr::Int(0)),
                ("multiplier".into(), Attr::Ints(vec![1, 2])),
                ("shift".into(), Attr::Ints(vec![3])),
            ],
        )
        .unwrap_err();
        assert!(e.contains("one entry per channel"), "{e}");
        let e = OpKind::from_parts(
            "matmul_int",
            vec![("schedule".into(), Attr::Ident("magic".into()))],
        )
        .unwrap_err();
        assert!(e.contains("direct, bit_serial or amx"), "{e}");
    }

    #[test]
    fn scale_shapes() {
        let g = Granularity::Blocked {
            blocks: vec![(1, 32)],
        };
        assert_eq!(g.scale_shape(&[4, 70]).unwrap(), vec![4, 3]);
        assert_eq!(g.scale_index(&[2, 65], &[4, 3]), 2 * 3 + 2);
        assert!(Granularity::PerAxis { axis: 2 }
            .scale_shape(&[4, 4])
            .is_err());
    }
}
