//! The kernels' epilogues: the float kernels' activations, computed in
//! registers (ReLU, GELU in erf and tanh forms, SiLU), and the W8A8/W4A8
//! kernels' `i32` bias and ReLU on 16-row panels (before their dyadic
//! requantization).
//!
//! A tile's outputs (up to 8) are gathered into one vector, widened to
//! `f64`, and the activation is evaluated with arithmetic written from the
//! maths (no libm calls):
//! * `exp(y)` for `y <= 0`: `y = n ln2 + r` with `n = round(y / ln2)`,
//!   `|r| <= ln2/2`, `e^r` by its Taylor polynomial of degree 9
//!   (truncation `< 2^-37`), and `2^n` as the product of two powers of two
//!   built in the exponent field, so results down to the subnormals are
//!   formed without overflow of the exponent; `y < -745.5` gives 0;
//! * `sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e)` with `e = exp(-|z|)`, which
//!   never overflows and keeps full relative accuracy in both tails;
//!   SiLU is `x · sigmoid(x)` and the tanh GELU is `x · sigmoid(2u)`,
//!   `u = √(2/π)(x + 0.044715 x³)` (the identity `(1 + tanh u) / 2 =
//!   sigmoid(2u)`; `u` is formed with the interpreter's operations, in the
//!   same order);
//! * `erfc(a)`, `a = |x| / √2`: for `a < 2`, `1 − erf(a)` with
//!   `erf(a) = 2/√π · a · e^{−a²} · Σ_{n<=24} (2a²)^n / (2n+1)!!` (a series
//!   of positive terms: no cancellation inside it); for `a >= 2`, Laplace's
//!   continued fraction `erfc(a) = e^{−a²}/√π · 1/(a + (1/2)/(a + 1/(a +
//!   (3/2)/(a + …))))` to depth 24, evaluated by the forward three-term
//!   recurrence (one division); both are within `2^-32` relative of
//!   `erfc` on their ranges (checked numerically in f64 when the depths
//!   were chosen: the smallest that reach it). GELU is `x/2 · (x >= 0 ? 2 − erfc(a) : erfc(a))`.
//!
//! Error bound: every `f64` result is within `2^-30` relative of the exact
//! function of the `f32` input (the `erfc` magnifies the relative error of
//! `a²` by at most `2a² < 2^11` in the range where the result is not 0,
//! which stays below `2^-40`), so after the one rounding to `f32`, which
//! moves it by at most half an ulp, the output is within one f32 ulp of
//! the interpreter's (which evaluates in
//! `f64` and rounds once) for GELU and SiLU. The interpreter's tanh GELU
//! computes `1 + tanh(u)`, which cancels for negative `x`: there it is
//! itself only within `|x| · 2^-52` (absolute), so the tanh form's bound is
//! one ulp plus `|x| · 2^-50`. In practice (`tests/epilogues.rs`, 4962
//! probe values from subnormals to `f32::MAX`) every GELU and SiLU output
//! equals the interpreter's bit for bit, and 94 % of the tanh form's.
//! Special values follow the interpreter: NaN
//! stays NaN; both GELU forms give `+inf` at `+inf` and NaN at `-inf`
//! (`-inf · 0`), as the ONNX formula, onnxruntime and the interpreter do;
//! SiLU gives `+inf` and NaN likewise.
//!
//! The activation runs only on the last k pass (the others store partial
//! sums), behind one branch.

use super::Gen;
use crate::error::CpuError;
use crate::spec::Activation;
use inkwell::types::VectorType;
use inkwell::values::{FloatValue, FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::{FloatPredicate, IntPredicate};

/// Series terms of `erf` below the switch (`n = 0..=ERF_TERMS`).
const ERF_TERMS: u32 = 24;
/// Depth of the `erfc` continued fraction.
const ERFC_DEPTH: u32 = 24;
/// Degree of the Taylor polynomial of `e^r`, `|r| <= ln2/2`.
const EXP_DEGREE: usize = 9;
/// Where the erfc evaluation switches from the series to the fraction.
const ERFC_SWITCH: f64 = 2.0;
/// Above this `a` the fraction's recurrence could overflow; `erfc(a)` is
/// 0 in f64 from `a ≈ 26.6` on, so `a` is clamped here.
const ERFC_CLAMP: f64 = 27.0;
/// `1/√π`.
const FRAC_1_SQRT_PI: f64 = 0.5641895835477563;
/// `√(2/π)`, correctly rounded (the interpreter's constant).
const SQRT_2_OVER_PI: f64 = 0.7978845608028654;

impl<'a, 'ctx> Gen<'a, 'ctx> {
    /// Stores each `(address, value)` of a float tile, applying the spec's
    /// activation when `last` (an `i64` flag) is nonzero.
    pub(super) fn float_epilogue(
        &self,
        f: FunctionValue<'ctx>,
        outs: &[(PointerValue<'ctx>, FloatValue<'ctx>)],
        last: IntValue<'ctx>,
    ) -> Result<(), CpuError> {
        let act = self.spec.epilogue.activation;
        if act == Activation::None || outs.is_empty() {
            for &(p, v) in outs {
                self.b.build_store(p, v)?;
            }
            return Ok(());
        }
        let is_last = self
            .b
            .build_int_compare(IntPredicate::NE, last, self.i64c(0), "last")?;
        let act_bb = self.ctx.append_basic_block(f, "act");
        let raw_bb = self.ctx.append_basic_block(f, "raw");
        let done = self.ctx.append_basic_block(f, "done");
        self.b.build_conditional_branch(is_last, act_bb, raw_bb)?;
        self.b.position_at_end(raw_bb);
        for &(p, v) in outs {
            self.b.build_store(p, v)?;
        }
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(act_bb);
        if act == Activation::Relu {
            for &(p, v) in outs {
                // NaN stays NaN, like the interpreter's relu (UGT is true
                // for unordered operands).
                let keep = self.b.build_float_compare(
                    FloatPredicate::UGT,
                    v,
                    self.f32t.const_zero(),
                    "pos",
                )?;
                let r = self
                    .b
                    .build_select(keep, v, self.f32t.const_zero(), "relu")?;
                self.b.build_store(p, r)?;
            }
        } else {
            let n = outs.len() as u32;
            let mut xv = self.f32t.vec_type(n).get_poison();
            for (i, &(_, v)) in outs.iter().enumerate() {
                xv = self.b.build_insert_element(
                    xv,
                    v,
                    self.i32t.const_int(i as u64, false),
                    "xv",
                )?;
            }
            let vd = self.ctx.f64_type().vec_type(n);
            let x = self.b.build_float_ext(xv, vd, "xd")?;
            let y = match act {
                Activation::Silu => self.silu_f64(x)?,
                Activation::GeluTanh => self.gelu_tanh_f64(x)?,
                _ => self.gelu_erf_f64(x)?,
            };
            let y = self.b.build_float_trunc(y, self.f32t.vec_type(n), "y")?;
            for (i, &(p, _)) in outs.iter().enumerate() {
                let e =
                    self.b
                        .build_extract_element(y, self.i32t.const_int(i as u64, false), "ye")?;
                self.b.build_store(p, e)?;
            }
        }
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(done);
        Ok(())
    }

    /// W8A8/W4A8 epilogue, first step: `v + bias[r..r + 16]` (wrapping;
    /// `bias` is an `i32 [m]` buffer, `v` the 16 rows `r..r + 16` of one
    /// panel) when the spec has a bias, else `v`. Rows at or past `m` (the
    /// last panel's padding) read nothing: a masked load gives them 0, so
    /// the buffer needs no padding.
    pub(super) fn int_bias(
        &self,
        v: VectorValue<'ctx>,
        bias: PointerValue<'ctx>,
        r: IntValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        if !self.spec.epilogue.bias {
            return Ok(v);
        }
        let lanes = v.get_type().get_size();
        let vt = self.i32t.vec_type(lanes);
        let bo = self.b.build_int_mul(r, self.i64c(4), "bo")?;
        let bp = self.gep(bias, bo)?;
        let bv = if self.spec.m.is_multiple_of(lanes as usize) {
            self.load(vt, bp, 4)?.into_vector_value()
        } else {
            // Lane `l` is row `r + l`: read it only below `m`.
            let idx = VectorType::const_vector(
                &(0..lanes)
                    .map(|l| self.i64t.const_int(u64::from(l), false))
                    .collect::<Vec<_>>(),
            );
            let i64v = self.i64t.vec_type(lanes);
            let rv =
                self.b
                    .build_insert_element(i64v.get_undef(), r, self.i32t.const_zero(), "rv")?;
            let rv = self.b.build_shuffle_vector(
                rv,
                i64v.get_undef(),
                self.i32t.vec_type(lanes).const_zero(),
                "rs",
            )?;
            let rows = self.b.build_int_add(rv, idx, "rows")?;
            let m = VectorType::const_vector(&vec![
                self.i64t.const_int(self.spec.m as u64, false);
                lanes as usize
            ]);
            let mask = self
                .b
                .build_int_compare(IntPredicate::ULT, rows, m, "inm")?;
            self.call_intrinsic(
                "llvm.masked.load",
                &[vt.into(), self.ptr.into()],
                // LLVM 22's form: no alignment operand (the pointer is
                // only assumed byte-aligned, which x86 masked loads need
                // no more than).
                &[bp.into(), mask.into(), vt.const_zero().into()],
            )?
            .into_vector_value()
        };
        Ok(self.b.build_int_add(v, bv, "vb")?)
    }

    /// W8A8/W4A8 epilogue, second step: `max(v, 0)` per lane when the spec
    /// has a ReLU — only where `last` (an `i64` flag) is nonzero, when
    /// given (a k pass before the last stores a partial sum).
    pub(super) fn int_relu(
        &self,
        v: VectorValue<'ctx>,
        last: Option<IntValue<'ctx>>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        if self.spec.epilogue.activation != Activation::Relu {
            return Ok(v);
        }
        let zero = v.get_type().const_zero();
        let pos = self
            .b
            .build_int_compare(IntPredicate::SGT, v, zero, "pos")?;
        let relu = self
            .b
            .build_select(pos, v, zero, "relu")?
            .into_vector_value();
        Ok(match last {
            None => relu,
            Some(l) => {
                let is_last = self
                    .b
                    .build_int_compare(IntPredicate::NE, l, self.i64c(0), "il")?;
                self.b
                    .build_select(is_last, relu, v, "relu")?
                    .into_vector_value()
            }
        })
    }

    /// The constant `v` in every lane of `like`'s type.
    fn splat_d(&self, like: VectorValue<'ctx>, v: f64) -> VectorValue<'ctx> {
        let t = self.ctx.f64_type();
        VectorType::const_vector(&vec![t.const_float(v); like.get_type().get_size() as usize])
    }

    fn splat_i64_like(&self, like: VectorValue<'ctx>, v: i64) -> VectorValue<'ctx> {
        VectorType::const_vector(&vec![
            self.i64t.const_int(v as u64, true);
            like.get_type().get_size() as usize
        ])
    }

    fn fsel(
        &self,
        c: VectorValue<'ctx>,
        a: VectorValue<'ctx>,
        b: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        Ok(self.b.build_select(c, a, b, "sel")?.into_vector_value())
    }

    fn fabs_d(&self, x: VectorValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        let neg = self.b.build_float_neg(x, "neg")?;
        let lt = self
            .b
            .build_float_compare(FloatPredicate::OLT, x, self.splat_d(x, 0.0), "lt")?;
        self.fsel(lt, neg, x)
    }

    /// `Σ c_i t^i` by Horner's rule (`coeffs` from degree 0 up), each
    /// step one `llvm.fma` ([`Gen::fma`]): rounded once, one instruction
    /// of latency per step of the serial recurrence.
    fn horner(&self, t: VectorValue<'ctx>, coeffs: &[f64]) -> Result<VectorValue<'ctx>, CpuError> {
        let mut p = self.splat_d(t, 0.0);
        for &c in coeffs.iter().rev() {
            p = self.fma(p, t, self.splat_d(t, c))?;
        }
        Ok(p)
    }

    /// `e^y` for `y <= 0` (or NaN), see the module docs.
    fn exp_neg_f64(&self, y: VectorValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        let b = &self.b;
        // Below the cut-off (and for NaN, whose callers propagate it through
        // `x`) the result is 0; the clamp keeps n in range, the 2^n factors
        // normal, and the float-to-int conversion defined.
        let tiny =
            b.build_float_compare(FloatPredicate::ULT, y, self.splat_d(y, -745.5), "tiny")?;
        let y = self.fsel(tiny, self.splat_d(y, -746.0), y)?;
        // round-to-nearest of y/ln2 by adding and removing 1.5 * 2^52
        // (exact for |y/ln2| < 2^51).
        let magic = self.splat_d(y, 6755399441055744.0);
        let t = b.build_float_mul(y, self.splat_d(y, std::f64::consts::LOG2_E), "t")?;
        let t = b.build_float_add(t, magic, "t")?;
        let n = b.build_float_sub(t, magic, "n")?;
        // r = y - n ln2: n ln2 rounds by < 2^-43 absolute for |n| <= 1077.
        let nl = b.build_float_mul(n, self.splat_d(y, std::f64::consts::LN_2), "nl")?;
        let r = b.build_float_sub(y, nl, "r")?;
        let mut coeffs = [1.0f64; EXP_DEGREE + 1];
        for i in 1..=EXP_DEGREE {
            coeffs[i] = coeffs[i - 1] / i as f64;
        }
        let p = self.horner(r, &coeffs)?;
        let vi = self.i64t.vec_type(y.get_type().get_size());
        let ni = b.build_float_to_signed_int(n, vi, "ni")?;
        let n1 = b.build_right_shift(ni, self.splat_i64_like(y, 1), true, "n1")?;
        let n2 = b.build_int_sub(ni, n1, "n2")?;
        let pow2 = |k: VectorValue<'ctx>| -> Result<VectorValue<'ctx>, CpuError> {
            let e = b.build_int_add(k, self.splat_i64_like(y, 1023), "eb")?;
            let e = b.build_left_shift(e, self.splat_i64_like(y, 52), "eb")?;
            Ok(b.build_bit_cast(e, y.get_type(), "p2")?.into_vector_value())
        };
        let e = b.build_float_mul(p, pow2(n1)?, "e")?;
        let e = b.build_float_mul(e, pow2(n2)?, "e")?;
        self.fsel(tiny, self.splat_d(y, 0.0), e)
    }

    /// `sigmoid(z)`, see the module docs.
    fn sigmoid_f64(&self, z: VectorValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        let b = &self.b;
        let a = self.fabs_d(z)?;
        let e = self.exp_neg_f64(b.build_float_neg(a, "na")?)?;
        let one = self.splat_d(z, 1.0);
        let nonneg = b.build_float_compare(FloatPredicate::OGE, z, self.splat_d(z, 0.0), "nn")?;
        let num = self.fsel(nonneg, one, e)?;
        let den = b.build_float_add(one, e, "den")?;
        Ok(b.build_float_div(num, den, "sig")?)
    }

    fn silu_f64(&self, x: VectorValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        let s = self.sigmoid_f64(x)?;
        Ok(self.b.build_float_mul(x, s, "silu")?)
    }

    fn gelu_tanh_f64(&self, x: VectorValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        let b = &self.b;
        // SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x)), as the interpreter.
        let x3 = b.build_float_mul(x, x, "x2")?;
        let x3 = b.build_float_mul(x3, x, "x3")?;
        let c = b.build_float_mul(self.splat_d(x, 0.044715), x3, "cx3")?;
        let inner = b.build_float_add(x, c, "in")?;
        let u = b.build_float_mul(self.splat_d(x, SQRT_2_OVER_PI), inner, "u")?;
        let u2 = b.build_float_add(u, u, "2u")?;
        let s = self.sigmoid_f64(u2)?;
        Ok(b.build_float_mul(x, s, "gelu")?)
    }

    fn gelu_erf_f64(&self, x: VectorValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        let b = &self.b;
        let ax = self.fabs_d(x)?;
        let a = b.build_float_mul(ax, self.splat_d(x, std::f64::consts::FRAC_1_SQRT_2), "a")?;
        let big =
            b.build_float_compare(FloatPredicate::OGT, a, self.splat_d(x, ERFC_CLAMP), "big")?;
        let a = self.fsel(big, self.splat_d(x, ERFC_CLAMP), a)?;
        let t = b.build_float_mul(a, a, "t")?;
        let ea = self.exp_neg_f64(b.build_float_neg(t, "nt")?)?;
        // Series: erf(a) = 2/√π · a · e^{-a²} · Σ (2t)^n / (2n+1)!!, in t.
        let mut coeffs = vec![1.0f64];
        for n in 1..=ERF_TERMS {
            let prev = coeffs[n as usize - 1];
            coeffs.push(prev * 2.0 / (2 * n + 1) as f64);
        }
        let s = self.horner(t, &coeffs)?;
        let erf = b.build_float_mul(s, a, "erf")?;
        let erf = b.build_float_mul(erf, ea, "erf")?;
        let erf = b.build_float_mul(erf, self.splat_d(x, 2.0 * FRAC_1_SQRT_PI), "erf")?;
        let one = self.splat_d(x, 1.0);
        let erfc_small = b.build_float_sub(one, erf, "erfcs")?;
        // Fraction: A_j = a A_{j-1} + (j/2) A_{j-2} (same for B), from
        // A_{-1} = 1, A_0 = a, B_{-1} = 0, B_0 = 1; erfc = e^{-a²}/√π · B/A.
        let (mut a2, mut a1) = (one, a);
        let (mut b2, mut b1) = (self.splat_d(x, 0.0), one);
        for j in 1..=ERFC_DEPTH {
            let cj = self.splat_d(x, j as f64 / 2.0);
            // (j/2) A_{j-2} is ready a step early: one fma of latency
            // per level.
            let na = self.fma(a, a1, b.build_float_mul(cj, a2, "ra")?)?;
            let nb = self.fma(a, b1, b.build_float_mul(cj, b2, "rb")?)?;
            (a2, a1, b2, b1) = (a1, na, b1, nb);
        }
        let q = b.build_float_div(b1, a1, "q")?;
        let erfc_big = b.build_float_mul(q, ea, "erfcb")?;
        let erfc_big = b.build_float_mul(erfc_big, self.splat_d(x, FRAC_1_SQRT_PI), "erfcb")?;
        let small =
            b.build_float_compare(FloatPredicate::OLT, a, self.splat_d(x, ERFC_SWITCH), "sm")?;
        let erfc = self.fsel(small, erfc_small, erfc_big)?;
        let nonneg = b.build_float_compare(FloatPredicate::OGE, x, self.splat_d(x, 0.0), "nn")?;
        let two = self.splat_d(x, 2.0);
        let tail = self.fsel(nonneg, b.build_float_sub(two, erfc, "t2")?, erfc)?;
        let half_x = b.build_float_mul(x, self.splat_d(x, 0.5), "hx")?;
        let y = b.build_float_mul(half_x, tail, "gelu")?;
        // +inf gives +inf and -inf gives NaN (`-inf · 0`), as the spec's
        // formula evaluated in IEEE arithmetic, onnxruntime and the
        // interpreter do.
        let pinf = b.build_float_compare(
            FloatPredicate::OEQ,
            x,
            self.splat_d(x, f64::INFINITY),
            "pinf",
        )?;
        let ninf = b.build_float_compare(
            FloatPredicate::OEQ,
            x,
            self.splat_d(x, f64::NEG_INFINITY),
            "ninf",
        )?;
        let y = self.fsel(pinf, x, y)?;
        self.fsel(ninf, self.splat_d(x, f64::NAN), y)
    }
}
