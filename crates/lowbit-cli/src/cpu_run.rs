//! `lowbit run --backend cpu`: runs a function with its quantized matmuls
//! on the JIT-compiled CPU kernels of `lowbit-llvm`.
//!
//! A `matmul x, w` (or the optimizer's fused `qmatmul x, wq, scale[, zp]
//! [, bias]` with a ReLU or no activation) maps onto a kernel when `x` is a 2-D `f32`/`f16`/`bf16`
//! tensor `[n, k]`, the result is `f32`, and `w` is
//! `dequantize(q, scale[, zero_point])` to `f32` of constants, with `q` a
//! 2-D `[k, m]` tensor of a type the kernels decode and scales per output
//! column (`axis = 1`), per tensor, or in blocks along `k` (`axis = 0`,
//! block size a multiple of 32). The weights are packed once, before the
//! run; the dequantized `f32` weights are never built.
//!
//! An integer `matmul` or `matmul_int` (with constant per-tensor zero
//! points or none) to `i32` (wrapping) with a constant `w` maps
//! onto the exact W8A8/W4A8 kernel (`x` `u8`/`i8`, `w` `i8`/`i4`/`u4`) or the W1A1
//! popcount kernel (`x` and `w` `b1`); its results are bit-identical.
//!
//! Every other op runs on the reference interpreter, and the run says so:
//! [`CpuRun::summary`] lists what ran where and why each unmatched matmul
//! did not map, and `lowbit run` prints it on standard error. Results of
//! kernel matmuls are within the bound documented in `lowbit_llvm::codegen`
//! of the interpreter's, not bit-identical.

use lowbit::interp::{eval_op, InterpError};
use lowbit::ir::{Activation as IrActivation, Function, Granularity, Op, OpKind, Tensor, Value};
use lowbit::numerics::{ElemType, Overflow};
use lowbit_llvm::{
    compile, Activation, Activations, Dim, Epilogue, GemmKernel, GemmSpec, PackedWeights,
    WeightGranularity, WeightSpec,
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

/// A matmul that maps onto a kernel: its spec and packed weights (shared
/// by the JIT run and the ahead-of-time compiler, `aot_model`).
pub struct Plan {
    /// The kernel's spec.
    pub spec: GemmSpec,
    /// The weights, packed for `spec`.
    pub weights: PackedWeights,
    /// The `qmatmul` bias operand, passed to the kernel's epilogue.
    pub bias: Option<Value>,
    /// A `qmatmul` activation the kernel lacks, run on the interpreter.
    pub post: Option<IrActivation>,
}

/// A matmul mapped onto a JIT-compiled kernel, with its packed weights.
struct Mapped {
    kernel: Arc<GemmKernel>,
    weights: PackedWeights,
    bias: Option<Value>,
    post: Option<IrActivation>,
}

/// Maps `op` onto a JIT-compiled kernel.
fn map_matmul(f: &Function, op: Op) -> Result<Mapped, String> {
    let p = plan_matmul(f, op)?;
    Ok(Mapped {
        kernel: compile(&p.spec).map_err(|e| e.to_string())?,
        weights: p.weights,
        bias: p.bias,
        post: p.post,
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

/// Maps an integer `matmul x, w` or `matmul_int x, w` to `i32` (wrapping)
/// with a constant `w` onto the
/// W8A8/W4A8 (`u8`/`i8` x `i8`/`i4`/`u4`, per-tensor zero points folded in)
/// or W1A1 (`b1` x `b1`) kernel.
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
    if xt.shape.len() != 2 {
        return Err(format!("the activation must be 2-D, not {xt}"));
    }
    let q = constant_of(f, w)?;
    if q.shape.len() != 2 {
        return Err(format!("the weight has rank {}, not 2", q.shape.len()));
    }
    let (k, m) = (q.shape[0] as usize, q.shape[1] as usize);
    let n = Dim::Static(xt.shape[0] as usize);
    // matmul_int's per-tensor zero points: constants, folded into the
    // packed weights (w - zw) and the kernel's row offsets (zx).
    let zero = |i: usize, what: &str| -> Result<i64, String> {
        let Some(&v) = d.operands.get(i) else {
            return Ok(0);
        };
        let t = constant_of(f, v).map_err(|e| format!("the {what} zero point: {e}"))?;
        match t.to_i128().as_deref() {
            Some(&[z]) => i64::try_from(z).map_err(|_| format!("{what} zero point {z}")),
            _ => Err(format!(
                "the {what} zero point must be one integer, not {}",
                t.ty()
            )),
        }
    };
    let (zx, zw) = (zero(2, "activation")?, zero(3, "weight")?);
    let (spec, q) = if xt.elem == ElemType::Bipolar {
        if q.elem != ElemType::Bipolar {
            return Err(format!("b1 activations need b1 weights, not {}", q.elem));
        }
        if (zx, zw) != (0, 0) {
            return Err("the W1A1 kernel takes no zero points".into());
        }
        (GemmSpec::binary(m, k, n), q)
    } else {
        let q = center(&q, zw)?;
        (GemmSpec::int(m, k, n, q.elem, xt.elem), q)
    };
    // The kernel's own check names what is unsupported (e.g. u8 weights).
    spec.check("host").map_err(|e| e.to_string())?;
    let weights =
        PackedWeights::pack_int_centered(&spec, &transpose(&q), zx).map_err(|e| e.to_string())?;
    Ok(Plan {
        spec,
        weights,
        bias: None,
        post: None,
    })
}

/// The integer weights `w - zw`: unchanged when `zw` is 0, else in the
/// narrowest kernel weight type that holds them (`i4`, then `i8`).
fn center(w: &Tensor, zw: i64) -> Result<Tensor, String> {
    if zw == 0 {
        return Ok(w.clone());
    }
    let vals: Vec<i128> = w
        .to_i128()
        .ok_or_else(|| format!("{} weights are not integers", w.elem))?
        .into_iter()
        .map(|v| v - i128::from(zw))
        .collect();
    let (lo, hi) = vals
        .iter()
        .fold((0i128, 0i128), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let bits = if (-8..=7).contains(&lo) && (-8..=7).contains(&hi) {
        4
    } else if (-128..=127).contains(&lo) && (-128..=127).contains(&hi) {
        8
    } else {
        return Err(format!(
            "the centered weights w - {zw} span {lo}..={hi}, beyond i8"
        ));
    };
    let mask = (1i128 << bits) - 1;
    Tensor::new(
        ElemType::Int { bits, signed: true },
        w.shape.clone(),
        vals.iter().map(|&v| (v & mask) as u64).collect(),
    )
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
            if requant.is_some() {
                return Err("the requantize epilogue of 'qmatmul' has no CPU kernel yet".into());
            }
            if *weight_lhs {
                return Err("the weight is the left operand".into());
            }
            if *dequant_type != ElemType::F32 {
                return Err(format!(
                    "the weight is dequantized to {dequant_type}, not f32"
                ));
            }
            // GELU and SiLU have no kernel epilogue yet: the kernel does
            // the product and bias, the interpreter the activation (and
            // the summary says so).
            let (act, post) = match activation {
                IrActivation::None => (Activation::None, None),
                IrActivation::Relu => (Activation::Relu, None),
                a => (Activation::None, Some(*a)),
            };
            let z = has_zero_point.then(|| d.operands[3]);
            let bias = if *has_bias {
                let b = d.operands[d.operands.len() - 1];
                let bt = f.ty(b);
                let m = f.ty(w).shape.get(1).copied().unwrap_or(0);
                if bt.elem != ElemType::F32
                    || bt.num_elements() != m
                    || bt.shape.iter().rev().skip(1).any(|&d| d != 1)
                {
                    return Err(format!("the bias {bt} is not one f32 per output column"));
                }
                Some(b)
            } else {
                None
            };
            let epilogue = Epilogue {
                bias: bias.is_some(),
                activation: act,
                requantize: false,
            };
            let mut mapped = map_dequantized(f, op, (w, d.operands[2], z), granularity, epilogue)?;
            mapped.bias = bias;
            mapped.post = post;
            return Ok(mapped);
        }
        OpKind::MatMul { .. } => {}
        other => return Err(format!("'{}' has no CPU kernel", other.name())),
    }
    let deq = f
        .def_op(w)
        .ok_or("the weight is a function input, not a dequantized constant")?;
    let dd = f.op(deq);
    let OpKind::Dequantize { granularity } = &dd.kind else {
        return Err(format!(
            "the weight comes from '{}', not from 'dequantize'",
            dd.kind.name()
        ));
    };
    if f.ty(w).elem != ElemType::F32 {
        return Err(format!(
            "the weight is dequantized to {}, not f32",
            f.ty(w).elem
        ));
    }
    map_dequantized(
        f,
        op,
        (dd.operands[0], dd.operands[1], dd.operands.get(2).copied()),
        granularity,
        Epilogue::default(),
    )
}

/// Maps op `op` with activation operand 0, f32 result, and a weight that
/// is `dequantize(q, s[, z])` of constants, onto a dequant-fused kernel.
fn map_dequantized(
    f: &Function,
    op: Op,
    (qv, sv, zv): (Value, Value, Option<Value>),
    granularity: &Granularity,
    epilogue: Epilogue,
) -> Result<Plan, String> {
    let d = f.op(op);
    let (xt, rt) = (f.ty(d.operands[0]), f.ty(d.results[0]));
    if rt.elem != ElemType::F32 {
        return Err(format!("the result is {}, the kernels write f32", rt.elem));
    }
    if xt.shape.len() != 2 || ![ElemType::F32, ElemType::F16, ElemType::BF16].contains(&xt.elem) {
        return Err(format!(
            "the activation must be a 2-D f32/f16/bf16 tensor, not {xt}"
        ));
    }
    let q = constant_of(f, qv)?;
    let s = constant_of(f, sv)?;
    let z = match zv {
        Some(zv) => Some(constant_of(f, zv)?),
        None => None,
    };
    if q.shape.len() != 2 {
        return Err(format!("the weight has rank {}, not 2", q.shape.len()));
    }
    let (k, m) = (q.shape[0] as usize, q.shape[1] as usize);
    // Scales (and zero points) re-laid out as [m, groups] for the kernel.
    let (gran, s, z) = match granularity {
        Granularity::PerAxis { axis: 1 } => (WeightGranularity::PerChannel, s, z),
        Granularity::PerTensor => {
            let widen = |t: Tensor| Tensor {
                elem: t.elem,
                shape: vec![m as u64],
                codes: vec![t.codes[0]; m],
            };
            (WeightGranularity::PerChannel, widen(s), z.map(widen))
        }
        Granularity::Blocked { blocks } if blocks.len() == 1 && blocks[0].0 == 0 => (
            WeightGranularity::Group(blocks[0].1 as usize),
            transpose(&s),
            z.as_ref().map(transpose),
        ),
        g => {
            return Err(format!(
                "scales {g:?} are not per output column or blocked along k"
            ))
        }
    };
    let spec = GemmSpec {
        m,
        k,
        n: Dim::Static(xt.shape[0] as usize),
        weight: WeightSpec {
            dtype: q.elem,
            granularity: gran,
            scale: s.elem,
            zero_point: z.is_some(),
            layout: None,
            tensor_scale: None,
        },
        act: xt.elem,
        epilogue,
    };
    let weights =
        PackedWeights::pack(&spec, &transpose(&q), &s, z.as_ref()).map_err(|e| e.to_string())?;
    Ok(Plan {
        spec,
        weights,
        bias: None,
        post: None,
    })
}

fn run_mapped(m: &Mapped, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, String> {
    let spec = m.kernel.spec();
    let n = x.shape[0] as usize;
    if spec.is_integer() {
        let mut y = vec![0i32; n * spec.m];
        let bytes: Vec<u8> = x.codes.iter().map(|&c| c as u8).collect();
        let signed: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
        let acts = if spec.is_binary() {
            Activations::B1(&bytes)
        } else if x.elem == ElemType::I8 {
            Activations::I8(&signed)
        } else {
            Activations::U8(&bytes)
        };
        m.kernel
            .run_int(acts, &m.weights, &mut y, n, 0)
            .map_err(|e| e.to_string())?;
        return Tensor::new(
            ElemType::I32,
            vec![n as u64, spec.m as u64],
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
        .run(acts, &m.weights, bias.as_deref(), &mut y, n, 0)
        .map_err(|e| e.to_string())?;
    Tensor::new(
        ElemType::F32,
        vec![n as u64, spec.m as u64],
        y.iter().map(|v| u64::from(v.to_bits())).collect(),
    )
}

/// Runs `f` on `inputs` (already checked against its parameters).
pub fn run(f: &Function, inputs: &[(String, Tensor)]) -> Result<CpuRun, InterpError> {
    let op_err = |op: Op, message: String| InterpError::Op {
        op: f.op(op).kind.name(),
        span: f.op_spans.get(&op).copied(),
        message,
    };
    let mut mapped: HashMap<Op, Mapped> = HashMap::new();
    let mut not_mapped = Vec::new();
    for &op in f.ops() {
        if matches!(
            f.op(op).kind,
            OpKind::MatMul { .. } | OpKind::MatMulInt { .. } | OpKind::QMatMul { .. }
        ) {
            match map_matmul(f, op) {
                Ok(m) => {
                    mapped.insert(op, m);
                }
                Err(why) => not_mapped.push((label(f, op), why)),
            }
        }
    }
    // Values the run needs: walk back from the outputs; a mapped matmul
    // needs only its activation (its weight is packed already).
    let mut needed: HashSet<Value> = f.outputs.iter().map(|(_, v)| *v).collect();
    for &op in f.ops().iter().rev() {
        let d = f.op(op);
        if !d.results.iter().any(|r| needed.contains(r)) {
            continue;
        }
        if let Some(m) = mapped.get(&op) {
            needed.insert(d.operands[0]);
            needed.extend(m.bias);
        } else {
            needed.extend(d.operands.iter().copied());
        }
    }
    let mut env: HashMap<Value, Tensor> = HashMap::new();
    for ((_, v), (_, t)) in f.params.iter().zip(inputs) {
        env.insert(*v, t.clone());
    }
    let mut on_cpu = Vec::new();
    let mut on_interp: Vec<(String, usize)> = Vec::new();
    for &op in f.ops() {
        let d = f.op(op);
        if !d.results.iter().any(|r| needed.contains(r)) {
            continue;
        }
        let operand = |v: &Value| {
            env.get(v)
                .ok_or_else(|| op_err(op, "operand not computed".into()))
        };
        let results = if let Some(m) = mapped.get(&op) {
            let x = operand(&d.operands[0])?;
            let bias = m.bias.as_ref().map(operand).transpose()?;
            let mut y = run_mapped(m, x, bias).map_err(|e| op_err(op, e))?;
            let mut what = m.kernel.spec().to_string();
            if let Some(a) = m.post {
                let (kind, name) = match a {
                    IrActivation::Gelu => (OpKind::Gelu { tanh: false }, "gelu"),
                    IrActivation::GeluTanh => (OpKind::Gelu { tanh: true }, "gelu"),
                    _ => (OpKind::Silu, "silu"),
                };
                y = eval_op(&kind, &[&y], &[f.ty(d.results[0]).clone()])
                    .map_err(|e| op_err(op, e.to_string()))?
                    .remove(0);
                what.push_str(&format!(", then {name} on the interpreter"));
                let name = format!("{name} (qmatmul epilogue)");
                match on_interp.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, c)) => *c += 1,
                    None => on_interp.push((name, 1)),
                }
            }
            on_cpu.push((label(f, op), what));
            vec![y]
        } else {
            let args: Vec<&Tensor> = d.operands.iter().map(operand).collect::<Result<_, _>>()?;
            let types: Vec<_> = d.results.iter().map(|r| f.ty(*r).clone()).collect();
            let name = d.kind.name();
            if !matches!(d.kind, OpKind::Constant(_)) {
                match on_interp.iter_mut().find(|(n, _)| n == name) {
                    Some((_, c)) => *c += 1,
                    None => on_interp.push((name.to_string(), 1)),
                }
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
        for (r, t) in d.results.iter().zip(results) {
            env.insert(*r, t);
        }
    }
    let outputs = f
        .outputs
        .iter()
        .map(|(name, v)| {
            env.get(v)
                .cloned()
                .map(|t| (name.clone(), t))
                .ok_or_else(|| InterpError::Function {
                    message: format!("output '{name}' was not computed"),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(CpuRun {
        outputs,
        on_cpu,
        not_mapped,
        on_interp,
    })
}
