//! Lowering a [`GemmSpec`] to LLVM IR.
//!
//! The module has one exported function (C ABI)
//! `void lowbit_gemm(const float *x, const u8 *w, const u8 *scales,
//! const u8 *zero_points, const float *bias, float *y, i64 n, i64 row_begin,
//! i64 row_end)` computing rows `row_begin..row_end` of every output column:
//! `y[c * m + r] = act(sum_j x[c * k_pad + j] * deq(w[r, j]) + bias[r])`.
//! `x` is `f32 [n, k_pad]` with zeros after `k`.
//!
//! Work is cut into register tiles of `R` weight rows by `C` activation
//! columns (8x1 for the decode case, the last 4 - 7 rows of a range by
//! 1x1 row by row; 4x8, then 4x4, when `n >= 4`; 1x1 for the last rows;
//! without AVX-512 no 8x1 or 4x8, 2x4 instead of 4x4 and 4x1 as the
//! decoding tile), one internal function per tile shape (with a static
//! `n`, only the shapes its column walk calls: 4x8 and 1x1 at n = 8).
//! With a run-time `n` the 4x8 tile also takes the last `n % 8 >= 4`
//! columns (its second half shifted back onto columns already computed,
//! so nothing past `n` is touched) instead of a 4x4 tile: 4x8, 8x1 and
//! 1x1 are all that kernel compiles (JIT time: BENCHMARKS.md). The
//! 4x8 tile runs its columns in two halves per chunk of 16 blocks and keeps the first
//! half's decoded weights in an L1 buffer for the second, so each weight is
//! decoded once for 8 columns (with a run-time n and the second half
//! skipped, the first half keeps nothing). A tile walks the row's
//! 32-element blocks: each block is loaded packed, unpacked to codes with
//! shifts and masks (or bit-plane masks), converted to `<32 x float>`,
//! shifted by the zero point, multiplied by its group's scale — which is
//! exactly the interpreter's `dequantize` result, rounded once to f32 — and
//! fused into the accumulators with `llvm.fma`. The weights are never
//! written back to memory as floats. LLVM splits the 32-lane vectors into
//! the target's registers (2 zmm with AVX-512, 4 ymm with AVX2). With
//! AVX-512, 4-bit codes are instead looked up (`vpermd`) in a 16-entry
//! table of the group's dequantized values, built once per row and group
//! with one broadcast multiply. Scales are decoded 16 at a time into a
//! per-tile stack buffer, so the k loop only broadcasts an f32 from it
//! (a row's last, partial run of scales is decoded once per tile call,
//! before the k loop).
//!
//! JIT time: LLVM's instruction selection takes most of a kernel's
//! compile time, about in proportion to the code, so code that runs once
//! per tile call is written as loops, not unrolled: the tiles' epilogues
//! (each output's reduction, bias, activation and store) loop over the
//! outputs, and the kernel's loop nest calls each tile from one call site
//! per row-tile loop. Loops inside the k loop are avoided: a loop over
//! the rows around the scale refill made the 4x8 tile's k loop spill 25
//! values (BENCHMARKS.md, "fkern").
//!
//! The float tiles take all of k in one pass, so each weight row is one
//! sequential stream for the hardware prefetchers (software prefetching of
//! the weight rows, 512 B to 8 KiB ahead, was slower; so was storing a
//! tile's 8 rows interleaved as one stream: BENCHMARKS.md, "decode
//! layout"). Each row's scales, by contrast, are read 16 at a time, a
//! stream too slow for the hardware prefetchers: when a tile decodes a run
//! of scales it prefetches the next cache line of each row's scales (and
//! zero points). Every
//! accumulator has 16 lanes (both halves of a block go into one), so the
//! 4x4 tile's 16 accumulators fit in the AVX-512 registers with the
//! decoded weights (its activations come from L2), and the 8x1 tile's 8
//! with the 8 rows' tables. The W1A1 path walks k in passes of 32768 bits
//! when `n >= 4`: the first pass stores each output, later ones add to it.
//!
//! Accuracy (float paths): each output is the f32 sum of f32 products in
//! 16 lane accumulators, each lane summing `k_pad/16` products in order,
//! then a tree of 4 levels, so
//! `|y - y_ref| <= (k_pad/16 + 8) * 2^-24 * (sum_j |x_j * w_j| + |bias|)`
//! against the interpreter's f64 result (see `tests/`); a tensor scale `t`
//! (NVFP4) is folded into each group scale as `round_f32(s * t)`, two more
//! roundings of each weight against the graph `mul(dequantize(w, s), t)`,
//! so the factor grows by 2. Scales are decoded in registers too: E8M0 by
//! placing the code in an f64 exponent field (narrowed exactly to f32),
//! E4M3 through f16 as the weights. With groups of 16 each block takes two
//! scales, one per lane half. The W8A8/W4A8 path (`codegen/vnni.rs`:
//! `vpdpbusd` outer-product tiles over 16-row weight panels) and the W1A1
//! path are exact (wrapping i32, like the interpreter); so is the
//! W8A8/W4A8 epilogue: an `i32` bias added with wrapping, ReLU, then the
//! dyadic requantization.
//!
//! Epilogue activations of the float paths (GELU, tanh GELU, SiLU) are
//! evaluated in registers (see `codegen/epilogue.rs`), within one f32 ulp of the
//! interpreter's result of the same pre-activation value (tanh GELU: plus
//! `|x| · 2^-50`); with them the bound above is multiplied by 1.2 (their
//! largest slope) before that term is added.
//!
//! Block-dot specs (`GemmSpec::act_quant`: activations quantized per call
//! to `i8` per 32-block, the IR's `quantize-activations` form) run the
//! `vpdpbusd` kernel of `codegen/blockdot.rs`, with its own bound against
//! the interpreter's result of the quantized graph:
//! `|y - y_ref| <= (k_pad/32 + 8) * 2^-24 * sum_j |x̂_j * w_j|`, `x̂` the
//! dequantized activation. The JIT builds the AMX-INT8 form of it
//! (`codegen/amxdot.rs`, [`build_amx_module`]: one AMX dot per block,
//! bit-identical) for a static `n >= 8` (`i8`: `n >= 9`) on a host with AMX-INT8, and
//! `lowbit compile` for the same shapes on an AMX-INT8 target
//! ([`crate::aot::blockdot_on_amx`]).
//!
//! Bit-serial specs (WxAy over bit-planes) and the W1A1 tiles (XOR-popcount
//! over packed `b1` signs) are emitted by the child module [`bitserial`],
//! with the same entry-point signature (its docs say what each argument
//! holds there); the W1A1 entry point shares the float path's loop nest
//! below. The helpers here (function declaration, the k-pass loop, tile
//! sweeps, row pointers, intrinsic calls) serve all the kernels.

mod epilogue;

use crate::error::CpuError;
use crate::spec::{BlockFormat, Dim, GemmSpec, WeightKind, BLOCK, INT_BLOCK};
use crate::target::CpuTarget;
use inkwell::attributes::AttributeLoc;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicMetadataTypeEnum, FloatType, IntType, PointerType, VectorType};
use inkwell::values::{BasicValue, FloatValue, FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::{AddressSpace, IntPredicate};
use lowbit_ir::target::VectorIsa;

pub mod bitserial;

/// Name of the exported kernel entry point.
pub const KERNEL_SYMBOL: &str = "lowbit_gemm";

/// Lanes of the IR vectors: one packed block.
const LANES: u32 = BLOCK as u32;

/// Blocks per chunk of a split tile (4 rows x 16 decoded blocks: 8 KiB of
/// stack, in L1 when the second half of the columns reads it).
const SPLIT_BLOCKS: u64 = 16;

/// Extra bytes of a split tile's decode buffer, so that it can start at
/// a chosen offset modulo 4 KiB from the activations (see `emit_tile`).
const DBUF_ALIAS_SLACK: u64 = 4096;

/// Where a split tile's decode buffer starts after the activations,
/// modulo 4 KiB: 15.5 blocks of 128 bytes (see `emit_tile`).
const DBUF_ALIAS_DISTANCE: u64 = 15 * 128 + 64;

/// Scales decoded per vector by the float tiles (into a per-tile stack
/// buffer, so the k loop only broadcasts an f32 from it).
const SCALE_RUN: u32 = 16;

/// How far past a run of scales (and zero points) the float tiles
/// prefetch when they decode it: the next cache line.
const SCALE_PREFETCH_BYTES: u64 = 64;

pub(crate) mod amx;
pub(crate) mod amxdot;
mod blockdot;
mod vnni;

struct Gen<'a, 'ctx> {
    ctx: &'ctx Context,
    module: &'a Module<'ctx>,
    b: Builder<'ctx>,
    spec: &'a GemmSpec,
    kind: WeightKind,
    target: &'a CpuTarget,
    f32t: FloatType<'ctx>,
    i8t: IntType<'ctx>,
    i16t: IntType<'ctx>,
    i32t: IntType<'ctx>,
    i64t: IntType<'ctx>,
    ptr: PointerType<'ctx>,
    vf: VectorType<'ctx>,
    lut: Option<Lut<'ctx>>,
}

/// The table-lookup decoder for 4-bit codes on AVX-512: `vpermps` picks
/// lane `i` of a 16-float table by the low 4 bits of index lane `i`, so a
/// nibble becomes its dequantized float in one instruction.
struct Lut<'ctx> {
    /// `decode(code)` for codes 0..16.
    table: VectorValue<'ctx>,
    /// `llvm.x86.avx512.permvar.sf.512`.
    permute: FunctionValue<'ctx>,
}

/// Tile-function parameters, in order.
struct TileArgs<'ctx> {
    x: PointerValue<'ctx>,
    w: PointerValue<'ctx>,
    s: PointerValue<'ctx>,
    z: PointerValue<'ctx>,
    bias: PointerValue<'ctx>,
    y: PointerValue<'ctx>,
}

/// A declared function's parameters: the six kernel buffers, then the
/// i64 values.
struct Params<'ctx> {
    f: FunctionValue<'ctx>,
    ptrs: Vec<PointerValue<'ctx>>,
    ints: Vec<IntValue<'ctx>>,
}

/// One pass of [`Gen::emit_k_passes`].
struct KPass<'ctx> {
    /// The pass's first unit (k group or block).
    k: IntValue<'ctx>,
    /// `k + step` (may pass the last unit).
    end: IntValue<'ctx>,
    /// 1 on the first pass, else 0 (i64).
    first: IntValue<'ctx>,
    /// 1 on the last pass, else 0 (i64).
    last: IntValue<'ctx>,
}

/// Builds the LLVM module for `spec` on `target` (the spec must have passed
/// [`GemmSpec::check`]).
pub fn build_module<'ctx>(
    ctx: &'ctx Context,
    spec: &GemmSpec,
    target: &CpuTarget,
) -> Result<Module<'ctx>, CpuError> {
    if spec.is_amx() {
        // Its callers pack activations into tiles and ask Linux for the
        // tile state (`jit.rs`, a model library's driver): a lone kernel
        // object has neither.
        return Err(spec.unsupported(
            &target.describe(),
            "the amx schedule needs a caller that packs activation tiles: the JIT (GemmKernel) or a whole model (lowbit compile MODEL); a lone kernel takes the direct schedule",
        ));
    }
    let kind = spec
        .weight_kind()
        .ok_or_else(|| CpuError::Llvm(format!("no weight decoder for {}", spec.weight.dtype)))?;
    let module = ctx.create_module("lowbit_gemm");
    module.set_triple(&inkwell::targets::TargetTriple::create(&target.triple));
    let f32t = ctx.f32_type();
    let lut = if target.kernel_paths().vector == VectorIsa::Avx512 && spec.weight.dtype.bits() == 4
    {
        let permute = Intrinsic::find("llvm.x86.avx512.permvar.sf.512")
            .and_then(|i| i.get_declaration(&module, &[]))
            .ok_or_else(|| {
                CpuError::Llvm("llvm.x86.avx512.permvar.sf.512 is not available".into())
            })?;
        let vals: Vec<FloatValue> = (0..16u64)
            .map(|c| f32t.const_float(spec.weight.dtype.decode(c)))
            .collect();
        Some(Lut {
            table: VectorType::const_vector(&vals),
            permute,
        })
    } else {
        None
    };
    let g = Gen::new(ctx, &module, spec, kind, target, lut);
    if spec.is_bit_serial() {
        g.emit_bit_serial_kernel()?;
    } else {
        g.emit_kernel()?;
    }
    verified(module)
}

/// `module` if LLVM's verifier accepts it, else its first complaint.
fn verified(module: Module<'_>) -> Result<Module<'_>, CpuError> {
    module.verify().map_err(|e| {
        let e = e.to_string();
        let first = e.lines().next().unwrap_or("");
        CpuError::Llvm(format!("generated IR does not verify: {first}"))
    })?;
    Ok(module)
}

impl<'a, 'ctx> Gen<'a, 'ctx> {
    /// A generator emitting into `module` for `spec` on `target`.
    fn new(
        ctx: &'ctx Context,
        module: &'a Module<'ctx>,
        spec: &'a GemmSpec,
        kind: WeightKind,
        target: &'a CpuTarget,
        lut: Option<Lut<'ctx>>,
    ) -> Gen<'a, 'ctx> {
        let f32t = ctx.f32_type();
        Gen {
            ctx,
            lut,
            module,
            b: ctx.create_builder(),
            spec,
            kind,
            target,
            f32t,
            i8t: ctx.i8_type(),
            i16t: ctx.i16_type(),
            i32t: ctx.i32_type(),
            i64t: ctx.i64_type(),
            ptr: ctx.ptr_type(AddressSpace::default()),
            vf: f32t.vec_type(LANES),
        }
    }
}

impl<'a, 'ctx> Gen<'a, 'ctx> {
    fn i64c(&self, v: u64) -> IntValue<'ctx> {
        self.i64t.const_int(v, false)
    }

    fn set_attrs(&self, f: FunctionValue<'ctx>) {
        let mut attrs = vec![
            ("target-cpu", self.target.cpu.as_str()),
            ("target-features", self.target.features.as_str()),
        ];
        if self.target.triple.starts_with("x86_64") {
            // Without these, LLVM's Intel tuning keeps vectors at 256 bits
            // even where AVX-512 exists; without AVX-512 they change nothing.
            attrs.push(("prefer-vector-width", "512"));
            attrs.push(("min-legal-vector-width", "512"));
        }
        for (k, v) in attrs {
            if !v.is_empty() {
                f.add_attribute(
                    AttributeLoc::Function,
                    self.ctx.create_string_attribute(k, v),
                );
            }
        }
        let nounwind = inkwell::attributes::Attribute::get_named_enum_kind_id("nounwind");
        f.add_attribute(
            AttributeLoc::Function,
            self.ctx.create_enum_attribute(nounwind, 0),
        );
    }

    /// `ptr + offset` bytes.
    fn gep(
        &self,
        p: PointerValue<'ctx>,
        offset: IntValue<'ctx>,
    ) -> Result<PointerValue<'ctx>, CpuError> {
        // SAFETY: offsets stay inside the buffers whose sizes the caller
        // checked against the spec before calling the kernel.
        Ok(unsafe { self.b.build_in_bounds_gep(self.i8t, p, &[offset], "p")? })
    }

    /// A load with an explicit alignment: packed weights and scales live
    /// in byte buffers, so their loads must not assume the type's alignment.
    fn load<T: inkwell::types::BasicType<'ctx>>(
        &self,
        ty: T,
        p: PointerValue<'ctx>,
        align: u32,
    ) -> Result<inkwell::values::BasicValueEnum<'ctx>, CpuError> {
        let v = self.b.build_load(ty, p, "ld")?;
        if let Some(inst) = v.as_instruction_value() {
            inst.set_alignment(align)
                .map_err(|e| CpuError::Llvm(format!("load alignment: {e}")))?;
        }
        Ok(v)
    }

    fn splat_f(&self, v: FloatValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        let one =
            self.b
                .build_insert_element(self.vf.get_poison(), v, self.i32t.const_zero(), "one")?;
        let mask = self.i32t.vec_type(LANES).const_zero();
        Ok(self
            .b
            .build_shuffle_vector(one, self.vf.get_poison(), mask, "splat")?)
    }

    fn splat_i(&self, ty: IntType<'ctx>, v: u64) -> VectorValue<'ctx> {
        let c = ty.const_int(v, false);
        VectorType::const_vector(&vec![c; LANES as usize])
    }

    fn shuffle_mask(&self, idx: impl Iterator<Item = u64>) -> VectorValue<'ctx> {
        let v: Vec<IntValue> = idx.map(|i| self.i32t.const_int(i, false)).collect();
        VectorType::const_vector(&v)
    }

    /// Concatenates two vectors of equal length.
    fn concat(
        &self,
        a: VectorValue<'ctx>,
        c: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        let n = a.get_type().get_size() as u64;
        Ok(self
            .b
            .build_shuffle_vector(a, c, self.shuffle_mask(0..2 * n), "cat")?)
    }

    /// Emits a counted loop `for (i = start; i < end; i += step) body(i)`
    /// and returns the final counter value (valid after the loop).
    fn emit_loop(
        &self,
        f: FunctionValue<'ctx>,
        start: IntValue<'ctx>,
        cond: impl Fn(IntValue<'ctx>) -> Result<IntValue<'ctx>, CpuError>,
        step: u64,
        body: impl FnOnce(IntValue<'ctx>) -> Result<(), CpuError>,
    ) -> Result<IntValue<'ctx>, CpuError> {
        self.emit_loop_by(f, start, cond, self.i64c(step), body)
    }

    /// [`Gen::emit_loop`] with a step computed at run time.
    fn emit_loop_by(
        &self,
        f: FunctionValue<'ctx>,
        start: IntValue<'ctx>,
        cond: impl Fn(IntValue<'ctx>) -> Result<IntValue<'ctx>, CpuError>,
        step: IntValue<'ctx>,
        body: impl FnOnce(IntValue<'ctx>) -> Result<(), CpuError>,
    ) -> Result<IntValue<'ctx>, CpuError> {
        let pre = self
            .b
            .get_insert_block()
            .ok_or_else(|| CpuError::Llvm("builder is not positioned".into()))?;
        let head = self.ctx.append_basic_block(f, "head");
        let bodyb = self.ctx.append_basic_block(f, "body");
        let exit = self.ctx.append_basic_block(f, "exit");
        self.b.build_unconditional_branch(head)?;
        self.b.position_at_end(head);
        let i = self.b.build_phi(self.i64t, "i")?;
        i.add_incoming(&[(&start, pre)]);
        let iv = i.as_basic_value().into_int_value();
        let c = cond(iv)?;
        self.b.build_conditional_branch(c, bodyb, exit)?;
        self.b.position_at_end(bodyb);
        body(iv)?;
        let next = self.b.build_int_add(iv, step, "next")?;
        let latch = self
            .b
            .get_insert_block()
            .ok_or_else(|| CpuError::Llvm("builder is not positioned".into()))?;
        self.b.build_unconditional_branch(head)?;
        i.add_incoming(&[(&next, latch)]);
        self.b.position_at_end(exit);
        Ok(iv)
    }

    /// `for (i = start; i < end; i++) body(i)` with an unsigned bound;
    /// returns the final counter (see [`Gen::emit_loop`]).
    fn emit_range(
        &self,
        f: FunctionValue<'ctx>,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        body: impl FnOnce(IntValue<'ctx>) -> Result<(), CpuError>,
    ) -> Result<IntValue<'ctx>, CpuError> {
        self.emit_loop(
            f,
            start,
            |i| Ok(self.b.build_int_compare(IntPredicate::ULT, i, end, "lc")?),
            1,
            body,
        )
    }

    /// `lo..hi` (signed bounds) in steps of `step` with `wide` while a
    /// whole step fits, then the rest one at a time with `single`.
    fn sweep(
        &self,
        f: FunctionValue<'ctx>,
        lo: IntValue<'ctx>,
        hi: IntValue<'ctx>,
        step: u64,
        wide: impl FnOnce(IntValue<'ctx>) -> Result<(), CpuError>,
        single: impl FnOnce(IntValue<'ctx>) -> Result<(), CpuError>,
    ) -> Result<(), CpuError> {
        self.sweep_by(f, lo, hi, (step, 1), wide, single)
    }

    /// [`Gen::sweep`] with the rest in steps of `rest_step` (the caller
    /// knows the rest is a multiple of it: a static rest taken in one
    /// step by a tile exactly that wide).
    fn sweep_by(
        &self,
        f: FunctionValue<'ctx>,
        lo: IntValue<'ctx>,
        hi: IntValue<'ctx>,
        (step, rest_step): (u64, u64),
        wide: impl FnOnce(IntValue<'ctx>) -> Result<(), CpuError>,
        rest: impl FnOnce(IntValue<'ctx>) -> Result<(), CpuError>,
    ) -> Result<(), CpuError> {
        let i = self.emit_loop(f, lo, |i| self.fits(i, step, hi), step, wide)?;
        self.emit_loop(
            f,
            i,
            |i| Ok(self.b.build_int_compare(IntPredicate::SLT, i, hi, "tc")?),
            rest_step,
            rest,
        )?;
        Ok(())
    }

    /// The unsigned minimum of `a` and `b`.
    fn umin(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>, CpuError> {
        let lt = self.b.build_int_compare(IntPredicate::ULT, a, b, "lt")?;
        Ok(self.b.build_select(lt, a, b, "min")?.into_int_value())
    }

    /// Declares `name(x, w, s, z, bias, y, i64 x ints)` (the six kernel
    /// buffers, then `ints` i64 values) with the target attributes and
    /// positions the builder at its entry. A `tile` is internal and never
    /// inlined: one call covers a whole k pass, so inlining the tiles into
    /// the loop nest would only multiply the code (and the JIT time).
    fn function(&self, name: &str, ints: usize, tile: bool) -> Result<Params<'ctx>, CpuError> {
        let mut args: Vec<BasicMetadataTypeEnum> = vec![self.ptr.into(); 6];
        args.extend(std::iter::repeat_n(
            BasicMetadataTypeEnum::from(self.i64t),
            ints,
        ));
        let fty = self.ctx.void_type().fn_type(&args, false);
        let linkage = tile.then_some(Linkage::Internal);
        let f = self.module.add_function(name, fty, linkage);
        self.set_attrs(f);
        if tile {
            let noinline = inkwell::attributes::Attribute::get_named_enum_kind_id("noinline");
            f.add_attribute(
                AttributeLoc::Function,
                self.ctx.create_enum_attribute(noinline, 0),
            );
        }
        let entry = self.ctx.append_basic_block(f, "entry");
        self.b.position_at_end(entry);
        let params: Vec<_> = f.get_param_iter().collect();
        Ok(Params {
            f,
            ptrs: params[..6].iter().map(|v| v.into_pointer_value()).collect(),
            ints: params[6..].iter().map(|v| v.into_int_value()).collect(),
        })
    }

    /// Declares the exported [`KERNEL_SYMBOL`] (buffers, `n`, `row_begin`,
    /// `row_end`) and positions the builder at its entry.
    fn kernel_function(&self) -> Result<Params<'ctx>, CpuError> {
        self.function(KERNEL_SYMBOL, 3, false)
    }

    /// Calls the tile function `tile` with the kernel's six buffers and
    /// then `ints`, in the order [`Gen::function`] declared them.
    fn call_tile(
        &self,
        tile: FunctionValue<'ctx>,
        ptrs: &[PointerValue<'ctx>],
        ints: &[IntValue<'ctx>],
    ) -> Result<(), CpuError> {
        let args: Vec<inkwell::values::BasicMetadataValueEnum> = ptrs
            .iter()
            .map(|&p| p.into())
            .chain(ints.iter().map(|&i| i.into()))
            .collect();
        self.b.build_call(tile, &args, "")?;
        Ok(())
    }

    /// `count` stack accumulators of type `ty`, each set to zero.
    fn zeroed_accs<T: inkwell::types::BasicType<'ctx> + Copy>(
        &self,
        ty: T,
        count: u32,
    ) -> Result<Vec<PointerValue<'ctx>>, CpuError> {
        (0..count)
            .map(|_| {
                let a = self.b.build_alloca(ty, "acc")?;
                self.b
                    .build_store(a, ty.as_basic_type_enum().const_zero())?;
                Ok(a)
            })
            .collect()
    }

    /// `base + i` for `i` in `0..count`: a tile's row or column indices.
    fn indices(&self, base: IntValue<'ctx>, count: u32) -> Result<Vec<IntValue<'ctx>>, CpuError> {
        (0..count)
            .map(|i| Ok(self.b.build_int_add(base, self.i64c(i as u64), "i")?))
            .collect()
    }

    /// `p + i * stride` bytes for each index `i`: the starts of rows of a
    /// row-major buffer.
    fn row_ptrs(
        &self,
        p: PointerValue<'ctx>,
        idx: &[IntValue<'ctx>],
        stride: u64,
    ) -> Result<Vec<PointerValue<'ctx>>, CpuError> {
        idx.iter()
            .map(|&i| self.gep(p, self.b.build_int_mul(i, self.i64c(stride), "ro")?))
            .collect()
    }

    /// `p + (base + i) * stride` bytes for `i` in `0..count`: the rows
    /// of a row-major buffer a tile reads, from its first index.
    fn strided_ptrs(
        &self,
        p: PointerValue<'ctx>,
        base: IntValue<'ctx>,
        count: u32,
        stride: u64,
    ) -> Result<Vec<PointerValue<'ctx>>, CpuError> {
        (0..count)
            .map(|i| {
                let idx = self.b.build_int_add(base, self.i64c(i as u64), "i")?;
                self.gep(p, self.b.build_int_mul(idx, self.i64c(stride), "ro")?)
            })
            .collect()
    }

    /// `lhs + add <= bound` (signed; the i64 ranges used are far from
    /// overflow).
    fn fits(
        &self,
        lhs: IntValue<'ctx>,
        add: u64,
        bound: IntValue<'ctx>,
    ) -> Result<IntValue<'ctx>, CpuError> {
        let e = self.b.build_int_add(lhs, self.i64c(add), "e")?;
        Ok(self
            .b
            .build_int_compare(IntPredicate::SLE, e, bound, "fits")?)
    }

    /// The address of the `i32`/`f32` output `y[col, row]` (`y` is
    /// `[n, m]`).
    fn y_ptr(
        &self,
        y: PointerValue<'ctx>,
        col: IntValue<'ctx>,
        row: IntValue<'ctx>,
    ) -> Result<PointerValue<'ctx>, CpuError> {
        let yi = self
            .b
            .build_int_mul(col, self.i64c(self.spec.m as u64), "yi")?;
        let yi = self.b.build_int_add(yi, row, "yi")?;
        self.gep(y, self.b.build_int_mul(yi, self.i64c(4), "yo")?)
    }

    /// Calls the intrinsic `name`, declared for the overload types
    /// `overloads` (empty for a target intrinsic with fixed types), and
    /// returns its value.
    fn call_intrinsic(
        &self,
        name: &str,
        overloads: &[inkwell::types::BasicTypeEnum<'ctx>],
        args: &[inkwell::values::BasicMetadataValueEnum<'ctx>],
    ) -> Result<inkwell::values::BasicValueEnum<'ctx>, CpuError> {
        let f = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, overloads))
            .ok_or_else(|| CpuError::Llvm(format!("{name} is not available")))?;
        self.b
            .build_call(f, args, name)?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| CpuError::Llvm(format!("{name} returned no value")))
    }

    /// Prefetches (for reading, into all cache levels) the line at
    /// `p + offset` bytes. The address may lie past the buffer (a prefetch
    /// never faults), so it is formed without `inbounds`.
    fn prefetch(&self, p: PointerValue<'ctx>, offset: u64) -> Result<(), CpuError> {
        // SAFETY: the pointer is only prefetched, never dereferenced.
        let q = unsafe { self.b.build_gep(self.i8t, p, &[self.i64c(offset)], "pf")? };
        let f = Intrinsic::find("llvm.prefetch")
            .and_then(|i| i.get_declaration(self.module, &[self.ptr.into()]))
            .ok_or_else(|| CpuError::Llvm("llvm.prefetch is not available".into()))?;
        let i32c = |v: u64| self.i32t.const_int(v, false).into();
        // (address, read, locality 3 = keep in all levels, data cache)
        self.b
            .build_call(f, &[q.into(), i32c(0), i32c(3), i32c(1)], "")?;
        Ok(())
    }

    /// [`Gen::call_intrinsic`] for an overloaded intrinsic of one vector
    /// operand, returning a vector.
    fn call_unary(
        &self,
        name: &str,
        v: VectorValue<'ctx>,
    ) -> Result<inkwell::values::BasicValueEnum<'ctx>, CpuError> {
        self.call_intrinsic(name, &[v.get_type().into()], &[v.into()])
    }

    /// The k pass loop shared by the kernels: passes of `chunk` units
    /// over `units` (one pass when `n < 4`, where no activations are
    /// reused across rows so each weight row stays one sequential stream,
    /// or when requantizing, which needs the whole sum at once). `body`
    /// gets the pass's first unit, the step, and whether it is the first
    /// and the last pass (as i64 0/1).
    fn emit_k_passes(
        &self,
        f: FunctionValue<'ctx>,
        n: IntValue<'ctx>,
        units: u64,
        chunk: u64,
        body: impl FnOnce(KPass<'ctx>) -> Result<(), CpuError>,
    ) -> Result<(), CpuError> {
        let few = if self.spec.epilogue.requantize {
            self.ctx.bool_type().const_int(1, false)
        } else {
            self.b
                .build_int_compare(IntPredicate::SLT, n, self.i64c(4), "few")?
        };
        let step = self
            .b
            .build_select(few, self.i64c(units), self.i64c(chunk), "step")?
            .into_int_value();
        self.emit_loop_by(
            f,
            self.i64c(0),
            |k| {
                Ok(self
                    .b
                    .build_int_compare(IntPredicate::ULT, k, self.i64c(units), "kc")?)
            },
            step,
            |k| {
                let first = self
                    .b
                    .build_int_compare(IntPredicate::EQ, k, self.i64c(0), "first")?;
                let first = self.b.build_int_z_extend(first, self.i64t, "first")?;
                let end = self.b.build_int_add(k, step, "end")?;
                let last =
                    self.b
                        .build_int_compare(IntPredicate::UGE, end, self.i64c(units), "last")?;
                let last = self.b.build_int_z_extend(last, self.i64t, "last")?;
                body(KPass {
                    k,
                    end,
                    first,
                    last,
                })
            },
        )?;
        Ok(())
    }

    /// `n` lanes of the constant `v` of type `ty`.
    fn splat_n(&self, ty: IntType<'ctx>, n: u32, v: u64) -> VectorValue<'ctx> {
        VectorType::const_vector(&vec![ty.const_int(v, false); n as usize])
    }

    /// Decodes the [`SCALE_RUN`] scales at `p` (the spec's scale type) to
    /// f32 in one vector, times the tensor scale if there is one
    /// (`round_f32(s * t)`). Each lane is the scalar decode of its code, so
    /// converting scales 16 at a time changes no value.
    fn load_scales(&self, p: PointerValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        use lowbit_numerics::{ElemType, FloatFormat};
        let n = SCALE_RUN;
        let s = self.spec.weight.scale;
        let vf = self.f32t.vec_type(n);
        let nan = VectorType::const_vector(&vec![self.f32t.const_float(f64::NAN); n as usize]);
        let v = if s == ElemType::F32 {
            self.load(vf, p, 1)?.into_vector_value()
        } else if s == ElemType::F16 {
            let h = self.load(self.ctx.f16_type().vec_type(n), p, 1)?;
            self.b.build_float_ext(h.into_vector_value(), vf, "s")?
        } else if s == ElemType::Float(FloatFormat::F8E8M0FNU) {
            // 2^(e - 127) as an f64 (exponent field e + 896: normal for
            // every code, 2^-127 included), narrowed exactly to f32; code
            // 0xFF is NaN.
            let e = self.load(self.i8t.vec_type(n), p, 1)?.into_vector_value();
            let e = self.b.build_int_z_extend(e, self.i64t.vec_type(n), "e")?;
            let biased = self
                .b
                .build_int_add(e, self.splat_n(self.i64t, n, 1023 - 127), "eb")?;
            let bits = self
                .b
                .build_left_shift(biased, self.splat_n(self.i64t, n, 52), "eb")?;
            let d = self
                .b
                .build_bit_cast(bits, self.ctx.f64_type().vec_type(n), "sd")?
                .into_vector_value();
            let v = self.b.build_float_trunc(d, vf, "s")?;
            let is_nan = self.b.build_int_compare(
                IntPredicate::EQ,
                e,
                self.splat_n(self.i64t, n, 0xff),
                "enan",
            )?;
            self.b
                .build_select(is_nan, nan, v, "s")?
                .into_vector_value()
        } else if s == ElemType::Float(FloatFormat::F8E4M3FN) {
            // As the E4M3 weight decoder.
            let c = self.load(self.i8t.vec_type(n), p, 1)?.into_vector_value();
            self.e4m3_via_f16(c, vf)?
        } else {
            // bf16: the high half of an f32.
            let h = self.load(self.i16t.vec_type(n), p, 1)?.into_vector_value();
            let w = self.b.build_int_z_extend(h, self.i32t.vec_type(n), "sw")?;
            let w = self
                .b
                .build_left_shift(w, self.splat_n(self.i32t, n, 16), "sw")?;
            self.b.build_bit_cast(w, vf, "s")?.into_vector_value()
        };
        Ok(match self.spec.weight.tensor_scale {
            None => v,
            Some(t) => {
                let tv = VectorType::const_vector(&vec![
                    self.f32t.const_float(f64::from(t.value()));
                    n as usize
                ]);
                self.b.build_float_mul(v, tv, "st")?
            }
        })
    }

    /// Loads one zero-point code and returns its value as f32.
    fn load_zero_point(&self, p: PointerValue<'ctx>) -> Result<FloatValue<'ctx>, CpuError> {
        let code = self.b.build_load(self.i8t, p, "zc")?.into_int_value();
        Ok(match self.kind {
            WeightKind::Int { bits, signed: true } => {
                let sh = self.i8t.const_int(8 - bits as u64, false);
                let v = self.b.build_left_shift(code, sh, "zs")?;
                let v = self.b.build_right_shift(v, sh, true, "zs")?;
                self.b.build_signed_int_to_float(v, self.f32t, "z")?
            }
            _ => self.b.build_unsigned_int_to_float(code, self.f32t, "z")?,
        })
    }

    /// Unpacks the block at `p` into 32 codes, one per byte lane.
    fn load_codes(&self, p: PointerValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        let v8 = |n: u32| self.i8t.vec_type(n);
        Ok(match self.spec.block_format() {
            BlockFormat::Bytes => self.load(v8(LANES), p, 1)?.into_vector_value(),
            BlockFormat::Interleaved { bits } => {
                let per = 8 / bits;
                let n = LANES / per;
                let raw = self.load(v8(n), p, 1)?.into_vector_value();
                let mask = VectorType::const_vector(&vec![
                    self.i8t
                        .const_int((1u64 << bits) - 1, false);
                    n as usize
                ]);
                let mut parts = Vec::new();
                for i in 0..per {
                    let sh =
                        VectorType::const_vector(&vec![
                            self.i8t.const_int((i * bits) as u64, false);
                            n as usize
                        ]);
                    let v = self.b.build_right_shift(raw, sh, false, "nib")?;
                    // The top part needs no mask: the shift cleared it.
                    let v = if i + 1 == per {
                        v
                    } else {
                        self.b.build_and(v, mask, "nib")?
                    };
                    parts.push(v);
                }
                while parts.len() > 1 {
                    let mut next = Vec::new();
                    for pair in parts.chunks(2) {
                        next.push(self.concat(pair[0], pair[1])?);
                    }
                    parts = next;
                }
                parts[0]
            }
            BlockFormat::BitPlanes { bits } => {
                let mut acc = v8(LANES).const_zero();
                let bool_vec = self.ctx.bool_type().vec_type(LANES);
                for k in 0..bits {
                    let pk = self.gep(p, self.i64c(4 * k as u64))?;
                    let plane = self.load(self.i32t, pk, 1)?.into_int_value();
                    let m = self
                        .b
                        .build_bit_cast(plane, bool_vec, "m")?
                        .into_vector_value();
                    let v = self.b.build_int_z_extend(m, v8(LANES), "bit")?;
                    let v = if k == 0 {
                        v
                    } else {
                        self.b
                            .build_left_shift(v, self.splat_i(self.i8t, k as u64), "bit")?
                    };
                    acc = self.b.build_or(acc, v, "codes")?;
                }
                acc
            }
        })
    }

    /// Converts 32 codes to their f32 values (before scale and zero point).
    fn decode(&self, codes: VectorValue<'ctx>) -> Result<VectorValue<'ctx>, CpuError> {
        let vf = self.vf;
        Ok(match self.kind {
            WeightKind::Int { bits, signed } => {
                if signed && bits < 8 {
                    let sh = self.splat_i(self.i8t, 8 - bits as u64);
                    let v = self.b.build_left_shift(codes, sh, "sx")?;
                    let v = self.b.build_right_shift(v, sh, true, "sx")?;
                    self.b.build_signed_int_to_float(v, vf, "wf")?
                } else if signed {
                    self.b.build_signed_int_to_float(codes, vf, "wf")?
                } else {
                    self.b.build_unsigned_int_to_float(codes, vf, "wf")?
                }
            }
            WeightKind::Bipolar => {
                // code 0 -> -1, code 1 -> +1
                let v = self
                    .b
                    .build_left_shift(codes, self.splat_i(self.i8t, 1), "b")?;
                let v = self.b.build_int_sub(v, self.splat_i(self.i8t, 1), "b")?;
                self.b.build_signed_int_to_float(v, vf, "wf")?
            }
            WeightKind::F8E5M2 => {
                // An E5M2 byte is the high byte of the f16 with the same value.
                let v16 = self.i16t.vec_type(LANES);
                let w = self.b.build_int_z_extend(codes, v16, "h")?;
                let w = self
                    .b
                    .build_left_shift(w, self.splat_i(self.i16t, 8), "h")?;
                let h = self
                    .b
                    .build_bit_cast(w, self.ctx.f16_type().vec_type(LANES), "h")?
                    .into_vector_value();
                self.b.build_float_ext(h, vf, "wf")?
            }
            WeightKind::F4E2M1FN => {
                // The f16 with the same sign, exponent and mantissa bits is
                // 2^-14 of the E2M1 value, subnormals included; E2M1FN has
                // no infinities or NaNs.
                let (f, _) = self.minifloat_via_f16(codes, vf, 0x8, 12, 9, 16384.0)?;
                f
            }
            WeightKind::F8E4M3FN => {
                // Via f16 (bias 15, so 2^-8 of the E4M3 value, subnormals
                // included), rescaled by 2^8 (exact); E4M3FN has no
                // infinities and its only NaNs are S.1111.111.
                self.e4m3_via_f16(codes, vf)?
            }
        })
    }

    /// Decodes sub-f16 float codes by placing their sign, exponent and
    /// mantissa bits into an f16 (`sign_mask` is the code's sign bit,
    /// moved left by `sign_shift`; the rest moved left by `em_shift`),
    /// widening to f32 and multiplying by `rescale`, the power of two that
    /// corrects the bias difference (exact). Returns the values and the
    /// codes' magnitude bits (for NaN checks).
    fn minifloat_via_f16(
        &self,
        codes: VectorValue<'ctx>,
        vf: VectorType<'ctx>,
        sign_mask: u64,
        sign_shift: u64,
        em_shift: u64,
        rescale: f64,
    ) -> Result<(VectorValue<'ctx>, VectorValue<'ctx>), CpuError> {
        let n = codes.get_type().get_size();
        let v16 = self.i16t.vec_type(n);
        let w = self.b.build_int_z_extend(codes, v16, "h")?;
        let sign = self
            .b
            .build_and(w, self.splat_n(self.i16t, n, sign_mask), "sgn")?;
        let sign = self
            .b
            .build_left_shift(sign, self.splat_n(self.i16t, n, sign_shift), "sgn")?;
        let mag = self
            .b
            .build_and(w, self.splat_n(self.i16t, n, sign_mask - 1), "mag")?;
        let em = self
            .b
            .build_left_shift(mag, self.splat_n(self.i16t, n, em_shift), "em")?;
        let bits = self.b.build_or(sign, em, "hb")?;
        let h = self
            .b
            .build_bit_cast(bits, self.ctx.f16_type().vec_type(n), "h")?
            .into_vector_value();
        let f = self.b.build_float_ext(h, vf, "wf")?;
        let k = VectorType::const_vector(&vec![self.f32t.const_float(rescale); n as usize]);
        let f = self.b.build_float_mul(f, k, "wf")?;
        Ok((f, mag))
    }

    /// Decodes E4M3FN codes (one per i8 lane; weights and scales alike)
    /// to `vf`: via f16 (bias 15, so 2^-8 of the E4M3 value, subnormals
    /// included), rescaled by 2^8 (exact); E4M3FN has no infinities and
    /// its only NaNs are S.1111.111.
    fn e4m3_via_f16(
        &self,
        codes: VectorValue<'ctx>,
        vf: VectorType<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        let n = codes.get_type().get_size();
        let (f, mag) = self.minifloat_via_f16(codes, vf, 0x80, 8, 7, 256.0)?;
        let is_nan = self.b.build_int_compare(
            IntPredicate::EQ,
            mag,
            self.splat_n(self.i16t, n, 0x7f),
            "nan",
        )?;
        let nan = VectorType::const_vector(&vec![self.f32t.const_float(f64::NAN); n as usize]);
        Ok(self
            .b
            .build_select(is_nan, nan, f, "wf")?
            .into_vector_value())
    }

    /// Dequantizes the interleaved 4-bit block at `p` through this row's
    /// group tables: the low nibbles are elements 0..16 (first table), the
    /// high ones 16..32 (second table; the same one unless groups are 16).
    fn lut_block(
        &self,
        l: &Lut<'ctx>,
        (lut_lo, lut_hi): (VectorValue<'ctx>, VectorValue<'ctx>),
        p: PointerValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        let raw = self.load(self.i8t.vec_type(16), p, 1)?.into_vector_value();
        let v32 = self.i32t.vec_type(16);
        let idx = self.b.build_int_z_extend(raw, v32, "idx")?;
        let hi_idx = self.b.build_right_shift(
            idx,
            VectorType::const_vector(&[self.i32t.const_int(4, false); 16]),
            false,
            "hidx",
        )?;
        let pick =
            |lut: VectorValue<'ctx>, i: VectorValue<'ctx>| -> Result<VectorValue<'ctx>, CpuError> {
                self.b
                    .build_call(l.permute, &[lut.into(), i.into()], "w")?
                    .try_as_basic_value()
                    .basic()
                    .map(|v| v.into_vector_value())
                    .ok_or_else(|| CpuError::Llvm("vpermps returned no value".into()))
            };
        // The permute ignores all but the low 4 index bits: no mask needed.
        let lo = pick(lut_lo, idx)?;
        let hi = pick(lut_hi, hi_idx)?;
        self.concat(lo, hi)
    }

    /// Whether a tile of `cols` columns runs them in two halves per chunk
    /// of blocks, decoding each weight once (8 columns: 4x8 accumulators
    /// do not fit in the registers at once). Chunks hold whole groups, so
    /// groups must be at most `SPLIT_BLOCKS` blocks and divide it.
    fn split_cols(&self, cols: u32) -> bool {
        cols > 4 && (SPLIT_BLOCKS as usize).is_multiple_of(self.spec.blocks_per_group())
    }

    /// `a * b + c` per lane, rounded once (`llvm.fma` on `a`'s vector type).
    fn fma(
        &self,
        a: VectorValue<'ctx>,
        b: VectorValue<'ctx>,
        c: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, CpuError> {
        Ok(self
            .call_intrinsic(
                "llvm.fma",
                &[a.get_type().into()],
                &[a.into(), b.into(), c.into()],
            )?
            .into_vector_value())
    }

    /// Lanes `from..from + 16` of a 32-lane vector.
    fn half(&self, v: VectorValue<'ctx>, from: u64) -> Result<VectorValue<'ctx>, CpuError> {
        Ok(self
            .b
            .build_shuffle_vector(v, v, self.shuffle_mask(from..from + 16), "h")?)
    }

    /// Horizontal sum of a float vector (32 or 16 lanes) as a tree of
    /// halves (the order the accuracy bound in the module docs counts).
    fn reduce(&self, v: VectorValue<'ctx>) -> Result<FloatValue<'ctx>, CpuError> {
        Ok(self.reduce_tree(v)?.into_float_value())
    }

    /// Horizontal sum of a float or integer vector as a tree of halves
    /// (`lo + hi` until one lane is left).
    fn reduce_tree(
        &self,
        mut v: VectorValue<'ctx>,
    ) -> Result<inkwell::values::BasicValueEnum<'ctx>, CpuError> {
        let float = v.get_type().get_element_type().is_float_type();
        let mut w = v.get_type().get_size() as u64;
        while w > 1 {
            w /= 2;
            let lo = self
                .b
                .build_shuffle_vector(v, v, self.shuffle_mask(0..w), "lo")?;
            let hi = self
                .b
                .build_shuffle_vector(v, v, self.shuffle_mask(w..2 * w), "hi")?;
            v = if float {
                self.b.build_float_add(lo, hi, "sum")?
            } else {
                self.b.build_int_add(lo, hi, "sum")?
            };
        }
        Ok(self
            .b
            .build_extract_element(v, self.i32t.const_zero(), "dot")?)
    }

    /// Emits `tile_RxC(x, w, s, z, bias, y, r0, c0, g0, first, last, live)`:
    /// the groups from `g0` (0: the kernel makes one pass over k) to the end
    /// of rows `r0..r0+R`, columns `c0..c0+live` (`live` is `C`, or for a
    /// split tile anything from `C/2` to `C`). The
    /// float kernels make one pass over k, so `first` and `last` are
    /// always 1 (the shared loop nest passes them): each call starts its
    /// outputs (with the bias) and applies the activation
    /// ([`Gen::float_epilogue`]).
    ///
    /// With `live < C` (so one wide tile serves a run-time n's last
    /// columns, instead of a narrower tile compiled for them) a split
    /// tile's second half is moved back to end at column `c0 + live`: it
    /// recomputes some of the first half's columns, with the same bits
    /// (the same products in the same order), and reads and writes no
    /// column past `n`. With `live = C/2` it skips the second half. Each
    /// half's activation rows stay one base plus constant offsets, as
    /// without the shift (per-column clamped pointers, 8 loop-invariant
    /// addresses instead, made the static n = 8 kernel 2 - 4 % slower).
    ///
    /// Each accumulator has 16 lanes (both halves of a block go into it), so
    /// the 4x4 and 8x1 tiles' accumulators fit in registers; every tile
    /// shape sums in the same order, so results do not depend on how the
    /// rows were split into tiles (or over threads).
    fn emit_tile(&self, rows: u32, cols: u32) -> Result<FunctionValue<'ctx>, CpuError> {
        let acc_t = self.f32t.vec_type(LANES / 2);
        let spec = self.spec;
        let Params { f, ptrs, ints } = self.function(&format!("tile_{rows}x{cols}"), 6, true)?;
        let a = TileArgs {
            x: ptrs[0],
            w: ptrs[1],
            s: ptrs[2],
            z: ptrs[3],
            bias: ptrs[4],
            y: ptrs[5],
        };
        // `ints[3]` and `ints[4]` (first and last pass) are always 1 here.
        let (r0, c0, g0, live) = (ints[0], ints[1], ints[2], ints[5]);
        // A split tile's accumulators live in memory between its halves
        // (see `local` below): one array, so the epilogue can walk them in
        // a loop; otherwise one alloca each, promoted to registers.
        let split = self.split_cols(cols);
        let acc_arr = || -> Result<PointerValue<'ctx>, CpuError> {
            let arr = self
                .b
                .build_array_alloca(acc_t, self.i64c((rows * cols) as u64), "accs")?;
            if let Some(inst) = arr.as_instruction() {
                inst.set_alignment(64)
                    .map_err(|e| CpuError::Llvm(format!("alloca alignment: {e}")))?;
            }
            Ok(arr)
        };
        let (accs, acc_array) = if split {
            let arr = acc_arr()?;
            let bytes = u64::from(rows * cols * LANES / 2 * 4);
            self.b
                .build_memset(arr, 64, self.i8t.const_zero(), self.i64c(bytes))?;
            let ptrs = (0..rows * cols)
                .map(|i| self.gep(arr, self.i64c(u64::from(i * LANES / 2 * 4))))
                .collect::<Result<Vec<_>, CpuError>>()?;
            (ptrs, Some(arr))
        } else {
            // With more than one output, the accumulators are stored into
            // an array after the k loop for the epilogue's loop (see
            // `tile_epilogue`).
            let arr = if rows * cols > 1 {
                Some(acc_arr()?)
            } else {
                None
            };
            (self.zeroed_accs(acc_t, rows * cols)?, arr)
        };

        let kb = (spec.k_pad() / BLOCK) as u64;
        let bpg = spec.blocks_per_group() as u64;
        let ngroups = spec.groups_per_row() as u64;
        let spb = spec.scales_per_block();
        let steps = spec.k_steps() as u64;
        let row_bytes = spec.row_bytes() as u64;
        let block_bytes = spec.block_format().block_bytes() as u64;
        let sbytes = spec.scale_bytes() as u64;
        let k_pad = spec.k_pad() as u64;

        let rows_idx = self.indices(r0, rows)?;
        // Each column's offset from `c0`: the second half of a split tile
        // is shifted back by `C - live` (see above).
        let half_cols = if split {
            cols as usize / 2
        } else {
            cols as usize
        };
        let shift = self
            .b
            .build_int_sub(live, self.i64c(cols as u64), "shift")?;
        let second_c0 = self.b.build_int_add(c0, shift, "c0s")?;
        // Whether a split tile's second half runs (`live` past the first
        // half): only then does the first half keep its decoded blocks.
        // With a static n the tile always runs all its columns (no
        // shifted call), so there is no branch.
        let second_runs = if spec.n == Dim::Dynamic {
            Some(self.b.build_int_compare(
                IntPredicate::UGT,
                live,
                self.i64c(cols as u64 / 2),
                "second",
            )?)
        } else {
            None
        };
        let col_offsets = (0..cols as usize)
            .map(|c| {
                if c < half_cols {
                    Ok(self.i64c(c as u64))
                } else {
                    Ok(self.b.build_int_add(shift, self.i64c(c as u64), "co")?)
                }
            })
            .collect::<Result<Vec<_>, CpuError>>()?;
        // Each column's activation row (f32): per half, one base and
        // constant offsets.
        let x_base = |first: IntValue<'ctx>| {
            self.gep(
                a.x,
                self.b.build_int_mul(first, self.i64c(k_pad * 4), "xb")?,
            )
        };
        let (x_first, x_second) = (x_base(c0)?, x_base(second_c0)?);
        let x_rows = (0..cols as usize)
            .map(|c| {
                let base = if c < half_cols { x_first } else { x_second };
                self.gep(base, self.i64c(c as u64 * k_pad * 4))
            })
            .collect::<Result<Vec<_>, CpuError>>()?;
        let w_rows = self.row_ptrs(a.w, &rows_idx, row_bytes)?;

        // Decoded scales of the current run, per row, the bytes of a
        // row's last (partial) run, and (when there is one) that run
        // decoded, per row.
        let sbuf = self.b.build_array_alloca(
            self.f32t,
            self.i64c(rows as u64 * SCALE_RUN as u64),
            "sbuf",
        )?;
        let tbuf =
            self.b
                .build_array_alloca(self.i8t, self.i64c(SCALE_RUN as u64 * sbytes), "tbuf")?;
        let tail_buf = if !ngroups.is_multiple_of(SCALE_RUN as u64) {
            Some(self.b.build_array_alloca(
                self.f32t,
                self.i64c(rows as u64 * SCALE_RUN as u64),
                "tailbuf",
            )?)
        } else {
            None
        };
        // Whole-vector stores into the buffers: align them for it.
        for buf in [Some(sbuf), Some(tbuf), tail_buf].into_iter().flatten() {
            if let Some(inst) = buf.as_instruction() {
                inst.set_alignment(64)
                    .map_err(|e| CpuError::Llvm(format!("alloca alignment: {e}")))?;
            }
        }
        // The scales of tile row `ri` (run-time index) from scale `base`.
        let row_scales = |ri: IntValue<'ctx>, base: IntValue<'ctx>| {
            let row = self.b.build_int_add(r0, ri, "sr")?;
            let row0 = self.b.build_int_mul(row, self.i64c(ngroups), "si")?;
            let idx = self.b.build_int_add(row0, base, "si")?;
            let so = self.b.build_int_mul(idx, self.i64c(sbytes), "so")?;
            self.gep(a.s, so)
        };
        // Row `ri`'s run in `sbuf`.
        let sbuf_row = |ri: IntValue<'ctx>| {
            self.gep(
                sbuf,
                self.b
                    .build_int_mul(ri, self.i64c(SCALE_RUN as u64 * 4), "sbo")?,
            )
        };
        // One pass covers all of k (see `emit_kernel`).
        let g1 = self.i64c(steps);
        // A split tile (see `split_cols`) runs its columns in two halves
        // per chunk of SPLIT_BLOCKS blocks: the first half decodes each
        // block and also keeps it in `dbuf` (8 KiB, L1), the second half
        // reads it back, so each weight is decoded once for 8 columns.
        //
        // The first half stores into `dbuf` while it loads the columns'
        // activations, both advancing 128 bytes a block, so an
        // activation load meets, modulo 4 KiB, the store of the block
        // `d / 128` blocks before it, `d` the distance from the
        // activations to `dbuf` (to each of its rows: they are 2 KiB
        // apart) modulo 4 KiB. A store still in the store buffer then
        // holds the load back (4K aliasing). `d` was wherever the stack
        // and the caller's buffers fell: the same k loop ran up to 15 %
        // slower at a run-time n = 4 after an unrelated change to the
        // stack frame, and as before once placed (BENCHMARKS.md,
        // "fkern"; 4K aliasing is the likely cause, not a measured
        // one). So `dbuf` starts at `d` =
        // DBUF_ALIAS_DISTANCE from the first column's activations (the
        // rows at 15.5 and 31.5 blocks, about 120 stores back: past the
        // store buffer), inside an alloca 4 KiB larger.
        let dbuf = if split {
            let slack = DBUF_ALIAS_SLACK / (BLOCK as u64 * 4);
            let d = self.b.build_array_alloca(
                self.vf,
                self.i64c(rows as u64 * SPLIT_BLOCKS + slack),
                "dbuf",
            )?;
            if let Some(inst) = d.as_instruction() {
                inst.set_alignment(64)
                    .map_err(|e| CpuError::Llvm(format!("alloca alignment: {e}")))?;
            }
            let di = self.b.build_ptr_to_int(d, self.i64t, "di")?;
            let xi = self.b.build_ptr_to_int(x_first, self.i64t, "xi")?;
            let want = self
                .b
                .build_int_add(xi, self.i64c(DBUF_ALIAS_DISTANCE), "dw")?;
            let off = self.b.build_int_sub(want, di, "doff")?;
            let off = self
                .b
                .build_and(off, self.i64c((DBUF_ALIAS_SLACK - 1) & !63), "doff")?;
            Some(self.gep(d, off)?)
        } else {
            None
        };
        // `dbuf` slot of row `r` and block `blk` of the chunk from `base`.
        let dslot = |r: usize, blk: IntValue<'ctx>, base: IntValue<'ctx>| {
            let i = self.b.build_int_sub(blk, base, "di")?;
            let i = self
                .b
                .build_int_add(i, self.i64c(r as u64 * SPLIT_BLOCKS), "di")?;
            let o = self.b.build_int_mul(i, self.i64c(BLOCK as u64 * 4), "do")?;
            let d = dbuf.ok_or_else(|| CpuError::Llvm("no decode buffer".into()))?;
            self.gep(d, o)
        };
        // Split: each half's accumulators live in registers during its
        // loop (`local`, promoted by mem2reg); between the halves they go
        // through `accs` with volatile accesses, which LLVM leaves in
        // memory; otherwise all 32 stay live in both loops and spill.
        let local: Vec<PointerValue> = if split {
            (0..rows * cols)
                .map(|_| Ok(self.b.build_alloca(acc_t, "lacc")?))
                .collect::<Result<_, CpuError>>()?
        } else {
            Vec::new()
        };
        let acc_ptrs: &[PointerValue] = if split { &local } else { &accs };
        // Moves the accumulators of columns `cols_of` from `accs` into
        // `local`, or back (`into_accs`).
        let swap_accs = |cols_of: std::ops::Range<usize>, into_accs: bool| {
            for r in 0..rows as usize {
                for c in cols_of.clone() {
                    let i = r * cols as usize + c;
                    let (from, to) = if into_accs {
                        (local[i], accs[i])
                    } else {
                        (accs[i], local[i])
                    };
                    let v = self.b.build_load(acc_t, from, "va")?;
                    if !into_accs {
                        if let Some(ins) = v.as_instruction_value() {
                            ins.set_volatile(true)
                                .map_err(|e| CpuError::Llvm(format!("volatile: {e}")))?;
                        }
                    }
                    let st = self.b.build_store(to, v)?;
                    if into_accs {
                        st.set_volatile(true)
                            .map_err(|e| CpuError::Llvm(format!("volatile: {e}")))?;
                    }
                }
            }
            Ok::<(), CpuError>(())
        };
        // The FMAs of row `r`'s decoded block `ws` with the activations
        // `xs` of columns `cols_of`.
        let fmas = |r: usize,
                    ws: VectorValue<'ctx>,
                    xs: &[VectorValue<'ctx>],
                    cols_of: std::ops::Range<usize>|
         -> Result<(), CpuError> {
            for (c, &xv) in cols_of.zip(xs) {
                let ap = acc_ptrs[r * cols as usize + c];
                let acc = self.b.build_load(acc_t, ap, "a")?.into_vector_value();
                let acc = self.fma(self.half(ws, 0)?, self.half(xv, 0)?, acc)?;
                let acc = self.fma(self.half(ws, 16)?, self.half(xv, 16)?, acc)?;
                self.b.build_store(ap, acc)?;
            }
            Ok(())
        };
        let load_xs = |blk: IntValue<'ctx>, cols_of: std::ops::Range<usize>| {
            let xo = self
                .b
                .build_int_mul(blk, self.i64c(BLOCK as u64 * 4), "xo")?;
            x_rows[cols_of]
                .iter()
                .map(|&xr| {
                    let p = self.gep(xr, xo)?;
                    Ok(self.load(self.vf, p, 4)?.into_vector_value())
                })
                .collect::<Result<Vec<VectorValue>, CpuError>>()
        };
        // A row's last run of scales, when the row's scale count is not a
        // multiple of SCALE_RUN: decoded for every row before the k loop
        // (a loop over the rows, outside the k loop: a row loop inside it
        // made the 4x8 tile's k loop spill its accumulators), from a
        // zeroed copy (reading a whole run there would leave the scale
        // array), the lanes past the last scale set to 0.
        let tail = match ngroups % SCALE_RUN as u64 {
            0 => None,
            count => {
                let run = SCALE_RUN as u64;
                let tailbuf = tail_buf.ok_or_else(|| CpuError::Llvm("no tail buffer".into()))?;
                let live: Vec<IntValue> = (0..run)
                    .map(|l| self.ctx.bool_type().const_int(u64::from(l < count), false))
                    .collect();
                let live = VectorType::const_vector(&live);
                let zeros = self.f32t.vec_type(SCALE_RUN).const_zero();
                let base = self.i64c(ngroups - count);
                self.emit_range(f, self.i64c(0), self.i64c(rows as u64), |ri| {
                    self.b
                        .build_memset(tbuf, 1, self.i8t.const_zero(), self.i64c(run * sbytes))?;
                    self.b.build_memcpy(
                        tbuf,
                        1,
                        row_scales(ri, base)?,
                        1,
                        self.i64c(count * sbytes),
                    )?;
                    let v = self.load_scales(tbuf)?;
                    let v = self
                        .b
                        .build_select(live, v, zeros, "s")?
                        .into_vector_value();
                    let o = self.b.build_int_mul(ri, self.i64c(run * 4), "to")?;
                    self.b.build_store(self.gep(tailbuf, o)?, v)?;
                    Ok(())
                })?;
                Some(tailbuf)
            }
        };
        // One group step: scales, tables, and its blocks for the first
        // `half_cols` columns (all of them unless split; split, each decoded
        // block is also stored in `dbuf`, relative to block `dbase`).
        let group_body = |g: IntValue<'ctx>, dbase: Option<IntValue<'ctx>>| {
            // Every SCALE_RUN scale indices (and at the pass start),
            // each row's next run of scales is decoded in one vector
            // into `sbuf`; a run past the row's last group is padded
            // with scale 0, which the zero-code padding meets.
            let sidx = self.b.build_int_mul(g, self.i64c(spb as u64), "sidx")?;
            let run = SCALE_RUN as u64;
            let within = self.b.build_and(sidx, self.i64c(run - 1), "within")?;
            let at_start = self.b.build_int_compare(IntPredicate::EQ, g, g0, "gs")?;
            let aligned = self
                .b
                .build_int_compare(IntPredicate::EQ, within, self.i64c(0), "al")?;
            let refill = self.b.build_or(at_start, aligned, "refill")?;
            let fill_b = self.ctx.append_basic_block(f, "sfill");
            let full_b = self.ctx.append_basic_block(f, "sfull");
            let cont_b = self.ctx.append_basic_block(f, "scont");
            self.b.build_conditional_branch(refill, fill_b, cont_b)?;
            self.b.position_at_end(fill_b);
            let base = self.b.build_int_sub(sidx, within, "base")?;
            match tail {
                None => self.b.build_unconditional_branch(full_b)?,
                Some(tailbuf) => {
                    // The row's last, partial run was decoded before the
                    // loop: copy it in (one vector per row).
                    let tail_b = self.ctx.append_basic_block(f, "stail");
                    let base_end = self.b.build_int_add(base, self.i64c(run), "bend")?;
                    let full = self.b.build_int_compare(
                        IntPredicate::ULE,
                        base_end,
                        self.i64c(ngroups),
                        "full",
                    )?;
                    self.b.build_conditional_branch(full, full_b, tail_b)?;
                    self.b.position_at_end(tail_b);
                    self.b
                        .build_memcpy(sbuf, 64, tailbuf, 64, self.i64c(rows as u64 * run * 4))?;
                    self.b.build_unconditional_branch(cont_b)?
                }
            };
            self.b.position_at_end(full_b);
            // Each row's scales (and zero points) are a stream of their own,
            // too short and slow for the hardware prefetchers: the loads of
            // every run missed to DRAM and stalled the k loop. Prefetch the
            // line after this run's (measured best against 128 and 256 bytes:
            // BENCHMARKS.md, "decode layout").
            for r in 0..rows as u64 {
                let sp = row_scales(self.i64c(r), base)?;
                self.prefetch(sp, SCALE_PREFETCH_BYTES)?;
                if spec.weight.zero_point {
                    let row0 =
                        self.b
                            .build_int_mul(rows_idx[r as usize], self.i64c(ngroups), "zi")?;
                    let idx = self.b.build_int_add(row0, base, "zi")?;
                    self.prefetch(self.gep(a.z, idx)?, SCALE_PREFETCH_BYTES)?;
                }
                let v = self.load_scales(sp)?;
                self.b.build_store(sbuf_row(self.i64c(r))?, v)?;
            }
            self.b.build_unconditional_branch(cont_b)?;
            self.b.position_at_end(cont_b);

            // One scale (and zero point) per lane half when a block
            // holds two groups of 16.
            let mut scales = Vec::new();
            // Each row's (low-half, high-half) scale, for the tables.
            let mut scale_pairs = Vec::new();
            let mut zps = Vec::new();
            let halves = |lo: FloatValue<'ctx>, hi: FloatValue<'ctx>| {
                let l = self.splat_f(lo)?;
                let h = self.splat_f(hi)?;
                Ok::<_, CpuError>(self.b.build_shuffle_vector(
                    l,
                    h,
                    self.shuffle_mask((0..16).chain(LANES as u64..LANES as u64 + 16)),
                    "sv",
                )?)
            };
            let buffered = |r: usize, plus: u64| {
                let i = self
                    .b
                    .build_int_add(within, self.i64c(r as u64 * run + plus), "bi")?;
                let o = self.b.build_int_mul(i, self.i64c(4), "bo")?;
                Ok::<_, CpuError>(
                    self.load(self.f32t, self.gep(sbuf, o)?, 4)?
                        .into_float_value(),
                )
            };
            for (ri, &r) in rows_idx.iter().enumerate() {
                let row0 = self.b.build_int_mul(r, self.i64c(ngroups), "si")?;
                if spb == 1 {
                    let s0 = buffered(ri, 0)?;
                    scale_pairs.push((s0, s0));
                    scales.push(self.splat_f(s0)?);
                    if spec.weight.zero_point {
                        let idx = self.b.build_int_add(row0, g, "si")?;
                        zps.push(self.splat_f(self.load_zero_point(self.gep(a.z, idx)?)?)?);
                    }
                    continue;
                }
                let (s0, s1) = (buffered(ri, 0)?, buffered(ri, 1)?);
                scale_pairs.push((s0, s1));
                scales.push(halves(s0, s1)?);
                if spec.weight.zero_point {
                    let g2 = self.b.build_int_mul(g, self.i64c(2), "g2")?;
                    let i0 = self.b.build_int_add(row0, g2, "si")?;
                    let g2n = self.b.build_int_add(g2, self.i64c(1), "g2n")?;
                    let has_hi = self.b.build_int_compare(
                        IntPredicate::ULT,
                        g2n,
                        self.i64c(ngroups),
                        "hashi",
                    )?;
                    let i1 = self.b.build_int_add(i0, self.i64c(1), "si")?;
                    let i1 = self.b.build_select(has_hi, i1, i0, "si")?.into_int_value();
                    let z0 = self.load_zero_point(self.gep(a.z, i0)?)?;
                    let z1 = self.load_zero_point(self.gep(a.z, i1)?)?;
                    zps.push(halves(z0, z1)?);
                }
            }
            // With a 16-entry table, each row's group gets its own table
            // of dequantized values `(decode(c) - z) * s`: the same f32
            // roundings as the arithmetic path, once per group.
            let luts: Vec<(VectorValue, VectorValue)> = match &self.lut {
                None => Vec::new(),
                Some(l) => (0..rows as usize)
                    .map(|r| {
                        let half = |v: VectorValue<'ctx>,
                                    from: u64|
                         -> Result<VectorValue<'ctx>, CpuError> {
                            Ok(self.b.build_shuffle_vector(
                                v,
                                v,
                                self.shuffle_mask(from..from + 16),
                                "h",
                            )?)
                        };
                        let table = |from: u64| -> Result<VectorValue<'ctx>, CpuError> {
                            let mut t = l.table;
                            if spec.weight.zero_point {
                                t = self.b.build_float_sub(t, half(zps[r], from)?, "tz")?;
                            }
                            // The scale splatted straight to 16 lanes
                            // (taking half of the 32-lane one lets
                            // LLVM move the multiply after the permute,
                            // one more permute per half block).
                            let sc = if from == 0 {
                                scale_pairs[r].0
                            } else {
                                scale_pairs[r].1
                            };
                            let v16 = self.f32t.vec_type(16);
                            let one = self.b.build_insert_element(
                                v16.get_poison(),
                                sc,
                                self.i32t.const_zero(),
                                "one",
                            )?;
                            let sv = self.b.build_shuffle_vector(
                                one,
                                v16.get_poison(),
                                self.i32t.vec_type(16).const_zero(),
                                "splat",
                            )?;
                            let t = self.b.build_float_mul(t, sv, "lut")?;
                            if spb == 1 {
                                return Ok(t);
                            }
                            // A table used once: without a fence the x86
                            // combiner moves the multiply after the
                            // permute (a second permute per half block).
                            Ok(self
                                .call_unary("llvm.arithmetic.fence", t)?
                                .into_vector_value())
                        };
                        let lo = table(0)?;
                        let hi = if spb == 1 { lo } else { table(16)? };
                        Ok((lo, hi))
                    })
                    .collect::<Result<_, CpuError>>()?,
            };
            let block = |blk: IntValue<'ctx>| -> Result<(), CpuError> {
                let xs = load_xs(blk, 0..half_cols)?;
                let wo = self.b.build_int_mul(blk, self.i64c(block_bytes), "wo")?;
                for r in 0..rows as usize {
                    let p = self.gep(w_rows[r], wo)?;
                    let ws = match &self.lut {
                        Some(l) => self.lut_block(l, luts[r], p)?,
                        None => {
                            let mut wf = self.decode(self.load_codes(p)?)?;
                            if spec.weight.zero_point {
                                wf = self.b.build_float_sub(wf, zps[r], "wz")?;
                            }
                            self.b.build_float_mul(wf, scales[r], "ws")?
                        }
                    };
                    match (dbase, second_runs) {
                        (Some(base), None) => {
                            self.b.build_store(dslot(r, blk, base)?, ws)?;
                        }
                        (Some(base), Some(runs)) => {
                            // At `live` <= C/2 (a run-time n's last 4
                            // columns) nothing reads them back: skip the
                            // stores (a tenth of an in-cache n = 4 call;
                            // BENCHMARKS.md, "fkern").
                            let st_b = self.ctx.append_basic_block(f, "dstore");
                            let nx_b = self.ctx.append_basic_block(f, "dnext");
                            self.b.build_conditional_branch(runs, st_b, nx_b)?;
                            self.b.position_at_end(st_b);
                            self.b.build_store(dslot(r, blk, base)?, ws)?;
                            self.b.build_unconditional_branch(nx_b)?;
                            self.b.position_at_end(nx_b);
                        }
                        (None, _) => {}
                    }
                    fmas(r, ws, &xs, 0..half_cols)?;
                }
                Ok(())
            };
            if bpg == 1 {
                // One block per group (groups of 32): no inner loop.
                return block(g);
            }
            let b_start = self.b.build_int_mul(g, self.i64c(bpg), "bs")?;
            let b_end = self.b.build_int_add(b_start, self.i64c(bpg), "be")?;
            let b_end = self.umin(b_end, self.i64c(kb))?;
            self.emit_range(f, b_start, b_end, block)?;
            Ok(())
        };
        if !split {
            self.emit_range(f, g0, g1, |g| group_body(g, None))?;
        } else {
            let chunk = SPLIT_BLOCKS / bpg;
            self.emit_loop(
                f,
                g0,
                |g| Ok(self.b.build_int_compare(IntPredicate::ULT, g, g1, "gc")?),
                chunk,
                |gc| {
                    let ge = self.b.build_int_add(gc, self.i64c(chunk), "ge")?;
                    let ge = self.umin(ge, g1)?;
                    let base = self.b.build_int_mul(gc, self.i64c(bpg), "db")?;
                    swap_accs(0..half_cols, false)?;
                    self.emit_range(f, gc, ge, |g| group_body(g, Some(base)))?;
                    swap_accs(0..half_cols, true)?;
                    // The second half of the columns over the same blocks,
                    // unless the first half covered all live columns.
                    let second = self.ctx.append_basic_block(f, "second");
                    let after = self.ctx.append_basic_block(f, "after");
                    let more = self.b.build_int_compare(
                        IntPredicate::UGT,
                        live,
                        self.i64c(half_cols as u64),
                        "more",
                    )?;
                    self.b.build_conditional_branch(more, second, after)?;
                    self.b.position_at_end(second);
                    swap_accs(half_cols..cols as usize, false)?;
                    let be = self.b.build_int_mul(ge, self.i64c(bpg), "be")?;
                    let be = self.umin(be, self.i64c(kb))?;
                    self.emit_range(f, base, be, |blk| {
                        let xs = load_xs(blk, half_cols..cols as usize)?;
                        for r in 0..rows as usize {
                            let ws = self
                                .b
                                .build_load(self.vf, dslot(r, blk, base)?, "dw")?
                                .into_vector_value();
                            fmas(r, ws, &xs, half_cols..cols as usize)?;
                        }
                        Ok(())
                    })?;
                    swap_accs(half_cols..cols as usize, true)?;
                    self.b.build_unconditional_branch(after)?;
                    self.b.position_at_end(after);
                    Ok(())
                },
            )?;
        }

        // Each output's address and value before the activation. The
        // float kernels make one pass over k (`emit_kernel`), so every
        // call starts its outputs and ends them with the activation.
        // A row's columns are stored from the last to the first, so where
        // a shifted second half meets the first, the first half's value is
        // the one left: the same bits when the second half ran, and the
        // right ones when it was skipped (its accumulators stayed 0).
        if let Some(arr) = acc_array {
            if !split {
                for (i, &acc) in accs.iter().enumerate() {
                    let v = self.b.build_load(acc_t, acc, "a")?;
                    let o = self.i64c(i as u64 * u64::from(LANES / 2 * 4));
                    self.b.build_store(self.gep(arr, o)?, v)?;
                }
            }
            let half = if split { cols / 2 } else { cols };
            self.tile_epilogue(f, &a, arr, (r0, c0, shift), (rows, cols, half))?;
            self.b.build_return(None)?;
            return Ok(f);
        }
        let mut outs = Vec::with_capacity((rows * cols) as usize);
        for r in 0..rows as usize {
            let bias = self.row_bias(&a, rows_idx[r])?;
            for c in (0..cols as usize).rev() {
                // (The one-output tile; wider ones loop in
                // `tile_epilogue`.) Each accumulator is loaded and summed
                // where its output is made. Summing the 4x8 tile's 32
                // together (two per shuffle pair, less code to compile)
                // made its k loop spill 6 accumulators: n = 8 ran 5 - 10 %
                // slower in most data layouts (BENCHMARKS.md).
                let acc = self
                    .b
                    .build_load(acc_t, accs[r * cols as usize + c], "a")?
                    .into_vector_value();
                let dot = self.reduce(acc)?;
                let col = self.b.build_int_add(c0, col_offsets[c], "c")?;
                let yp = self.y_ptr(a.y, col, rows_idx[r])?;
                let v = match bias {
                    Some(bv) => self.b.build_float_add(dot, bv, "yb")?,
                    None => dot,
                };
                outs.push((yp, v));
            }
        }
        self.float_epilogue(f, &outs, self.i64c(1))?;
        self.b.build_return(None)?;
        Ok(f)
    }

    /// Row `row`'s bias (`f32`), when the epilogue adds one.
    fn row_bias(
        &self,
        a: &TileArgs<'ctx>,
        row: IntValue<'ctx>,
    ) -> Result<Option<FloatValue<'ctx>>, CpuError> {
        if !self.spec.epilogue.bias {
            return Ok(None);
        }
        let bo = self.b.build_int_mul(row, self.i64c(4), "bo")?;
        Ok(Some(
            self.b
                .build_load(self.f32t, self.gep(a.bias, bo)?, "bias")?
                .into_float_value(),
        ))
    }

    /// The end of a float tile of more than one output: each output, in
    /// the order of the unrolled form (rows in order, each row's columns
    /// from the last to the first, see `emit_tile`), summed from the
    /// accumulator array `accs` (`rows * cols` vectors of 16 lanes,
    /// row-major), plus the bias, through the activation, stored; columns
    /// from `half_cols` on are shifted by `shift` (a split tile's second
    /// half; `half_cols = cols` for no shift). A loop over the outputs
    /// instead of one copy per output: the 32 inline reductions and
    /// stores of the 4x8 tile were about a third of its machine code and
    /// of its share of the JIT time; the bits are the same (the same tree
    /// per accumulator). The loop comes after the k loop, so it leaves
    /// that loop's registers alone (loops inside it did not: see the
    /// scale tail in `emit_tile`).
    fn tile_epilogue(
        &self,
        f: FunctionValue<'ctx>,
        a: &TileArgs<'ctx>,
        accs: PointerValue<'ctx>,
        (r0, c0, shift): (IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
        (rows, cols, half_cols): (u32, u32, u32),
    ) -> Result<(), CpuError> {
        let acc_t = self.f32t.vec_type(LANES / 2);
        let shifted = half_cols < cols;
        let half_cols = u64::from(half_cols);
        let cols = u64::from(cols);
        self.emit_range(f, self.i64c(0), self.i64c(u64::from(rows)), |ri| {
            let row = self.b.build_int_add(r0, ri, "row")?;
            let bias = self.row_bias(a, row)?;
            self.emit_range(f, self.i64c(0), self.i64c(cols), |ci| {
                let c = self.b.build_int_sub(self.i64c(cols - 1), ci, "cr")?;
                let i = self.b.build_int_mul(ri, self.i64c(cols), "ai")?;
                let i = self.b.build_int_add(i, c, "ai")?;
                let o = self
                    .b
                    .build_int_mul(i, self.i64c(u64::from(LANES / 2 * 4)), "ao")?;
                let acc = self
                    .b
                    .build_load(acc_t, self.gep(accs, o)?, "a")?
                    .into_vector_value();
                let dot = self.reduce(acc)?;
                // The second half's columns are shifted back by `shift`.
                let off = if shifted {
                    let second = self.b.build_int_compare(
                        IntPredicate::UGE,
                        c,
                        self.i64c(half_cols),
                        "sh",
                    )?;
                    let moved = self.b.build_int_add(c, shift, "co")?;
                    self.b
                        .build_select(second, moved, c, "co")?
                        .into_int_value()
                } else {
                    c
                };
                let col = self.b.build_int_add(c0, off, "c")?;
                let yp = self.y_ptr(a.y, col, row)?;
                let v = match bias {
                    Some(bv) => self.b.build_float_add(dot, bv, "yb")?,
                    None => dot,
                };
                self.float_epilogue(f, &[(yp, v)], self.i64c(1))
            })?;
            Ok(())
        })?;
        Ok(())
    }

    fn emit_kernel(&self) -> Result<(), CpuError> {
        if self.spec.is_blockdot() {
            return self.emit_blockdot_kernel();
        }
        if self.spec.is_vnni() {
            return self.emit_vnni_kernel();
        }
        // Wide tiles as (tile, rows, columns), widest first: each takes
        // the columns it can of a 4-row block, the 4x1 tile the rest.
        // The float path first walks blocks of 8 rows with an 8x1
        // decoding tile (one activation load feeds 8 weight rows). The 8x1
        // and 4x4 tiles' accumulators take 8 and 16 zmm registers; with
        // narrower registers (AVX2's 16 ymm, NEON) they would spill, so
        // there the wide tile is 2x4 and decoding starts at 4x1.
        let wide512 = self.target.kernel_paths().vector == VectorIsa::Avx512;
        // With a run-time n, the widest float tile also takes the last
        // `n % 8 >= SHIFTED_MIN` columns, its second half shifted back (see
        // `emit_tile`), where a static n's walk calls a 4x4 tile (and 8x1
        // for the rest): one tile fewer to compile, the same decoding work.
        // Fewer columns left stay with the one-column tile, as before.
        // (`SHIFTED_MIN` is the tile's half: its first half is never
        // shifted.)
        const SHIFTED_MIN: u64 = 4;
        let mut shifted = None;
        let (wides, t8x1, t4x1, t1x1) = if self.spec.is_integer() {
            (
                vec![(self.emit_int_tile(4, 4)?, 4u64, 4u64)],
                None,
                (self.emit_int_tile(4, 1)?, 4),
                self.emit_int_tile(1, 1)?,
            )
        } else {
            // A tile is only compiled when the spec's n can use it. With a
            // static n the column walk is known: the wide tiles take the
            // columns greedily, widest first, and a narrow tile the rest
            // (none at n = 8 with the 4x8 tile). Skipping the others keeps
            // the JIT compile short. A skipped narrow tile is replaced by
            // the 1x1 tile, whose loop then never runs.
            let mut left = match self.spec.n {
                Dim::Static(n) => Some(n as u64),
                Dim::Dynamic => None,
            };
            let mut usable = |cols: u64| match left.as_mut() {
                Some(l) if *l >= cols => {
                    *l %= cols;
                    true
                }
                Some(_) => false,
                None => true,
            };
            let mut wides = Vec::new();
            if wide512 && self.split_cols(8) && usable(8) {
                let t4x8 = self.emit_tile(4, 8)?;
                wides.push((t4x8, 4, 8));
                if self.spec.n == Dim::Dynamic {
                    shifted = Some((t4x8, 4u64, 8u64));
                }
            }
            if shifted.is_none() && usable(4) {
                wides.push(if wide512 {
                    (self.emit_tile(4, 4)?, 4, 4)
                } else {
                    (self.emit_tile(2, 4)?, 2, 4)
                });
            }
            let narrow = left != Some(0);
            let t1x1 = self.emit_tile(1, 1)?;
            let t8x1 = match (wide512, narrow) {
                (false, _) => None,
                (true, true) => Some(self.emit_tile(8, 1)?),
                (true, false) => Some(t1x1),
            };
            // With AVX-512 the 4-row tiles only serve the last 4 - 7 rows of
            // a row range (after the 8x1 tile's blocks): there the 1x1 tile,
            // once per row, does instead of compiling a 4x1 one.
            let t4x1 = match (narrow, t8x1.is_some()) {
                (true, false) => (self.emit_tile(4, 1)?, 4),
                _ => (t1x1, 1),
            };
            (wides, t8x1, t4x1, t1x1)
        };
        let Params { f, ptrs, ints } = self.kernel_function()?;
        let (n, row_begin, row_end) = (ints[0], ints[1], ints[2]);
        // The nest over rows and columns runs once per k chunk (W1A1 with
        // n >= 4: so a tile's activation and weight slices stay in L1; the
        // float path has one chunk), with the chunk's first group (float
        // path) or block (W1A1), and whether it is the first and the last
        // chunk.
        type Chunk<'c> = (IntValue<'c>, IntValue<'c>, IntValue<'c>);
        let float = !self.spec.is_integer();
        let nest = |chunk: Chunk<'ctx>| {
            // A float tile's last argument is its live column count.
            let call_live = |tile: FunctionValue<'ctx>,
                             r: IntValue<'ctx>,
                             c: IntValue<'ctx>,
                             live: IntValue<'ctx>| {
                let mut ints = vec![r, c, chunk.0, chunk.1, chunk.2];
                if float {
                    ints.push(live);
                }
                self.call_tile(tile, &ptrs, &ints)
            };
            let call = |tile: FunctionValue<'ctx>, r: IntValue<'ctx>, c: IntValue<'ctx>| {
                let cols = wides
                    .iter()
                    .find(|w| w.0 == tile)
                    .map_or(1, |&(_, _, cols)| cols);
                call_live(tile, r, c, self.i64c(cols))
            };
            // Columns of one block of `narrow_rows` rows: as many as fit
            // with each `wide` tile in turn (covering the rows in tiles of
            // its height), then one at a time.
            type Wide<'c> = (FunctionValue<'c>, u64, u64);
            let columns = |r: IntValue<'ctx>,
                           wides: &[Wide<'ctx>],
                           (narrow, narrow_tile_rows): (FunctionValue<'ctx>, u64),
                           narrow_rows: u64| {
                // `call(rr)` for each row tile of `tile_rows` rows from
                // `r` in the block: one call site in a loop when there are
                // several (each call site is about 20 instructions of
                // argument set-up to compile).
                let each_row_tile = |r: IntValue<'ctx>,
                                     tile_rows: u64,
                                     call: &dyn Fn(IntValue<'ctx>) -> Result<(), CpuError>|
                 -> Result<(), CpuError> {
                    if narrow_rows <= tile_rows {
                        return call(r);
                    }
                    let end = self.b.build_int_add(r, self.i64c(narrow_rows), "re")?;
                    self.emit_loop(
                        f,
                        r,
                        |rr| Ok(self.b.build_int_compare(IntPredicate::SLT, rr, end, "rc")?),
                        tile_rows,
                        call,
                    )?;
                    Ok(())
                };
                let mut c = self.i64c(0);
                for &(wide, wide_rows, wide_cols) in wides {
                    c = self.emit_loop(
                        f,
                        c,
                        |c| self.fits(c, wide_cols, n),
                        wide_cols,
                        |c| each_row_tile(r, wide_rows, &|rr| call(wide, rr, c)),
                    )?;
                }
                if let (Some((tile, tile_rows, _)), false) = (shifted, wides.is_empty()) {
                    // At least SHIFTED_MIN columns left: one call per row
                    // tile, with `live` = the columns left, takes them all.
                    let left = self.b.build_int_sub(n, c, "left")?;
                    let use_shifted = self.b.build_int_compare(
                        IntPredicate::SGE,
                        left,
                        self.i64c(SHIFTED_MIN),
                        "us",
                    )?;
                    let call_b = self.ctx.append_basic_block(f, "shifted");
                    let cont_b = self.ctx.append_basic_block(f, "shifted_done");
                    self.b
                        .build_conditional_branch(use_shifted, call_b, cont_b)?;
                    self.b.position_at_end(call_b);
                    each_row_tile(r, tile_rows, &|rr| call_live(tile, rr, c, left))?;
                    self.b.build_unconditional_branch(cont_b)?;
                    self.b.position_at_end(cont_b);
                    c = self
                        .b
                        .build_select(use_shifted, n, c, "c")?
                        .into_int_value();
                }
                self.emit_loop(
                    f,
                    c,
                    |c| Ok(self.b.build_int_compare(IntPredicate::SLT, c, n, "cc")?),
                    1,
                    |c| each_row_tile(r, narrow_tile_rows, &|rr| call(narrow, rr, c)),
                )?;
                Ok::<(), CpuError>(())
            };
            let r = match t8x1 {
                None => row_begin,
                Some(t8x1) => self.emit_loop(
                    f,
                    row_begin,
                    |r| self.fits(r, 8, row_end),
                    8,
                    |r| columns(r, &wides, (t8x1, 8), 8),
                )?,
            };
            self.sweep(
                f,
                r,
                row_end,
                4,
                |r| columns(r, &wides, t4x1, 4),
                // At most 3 tail rows: one column at a time is fast enough.
                |r| columns(r, &[], (t1x1, 1), 1),
            )
        };
        // The float tiles take all of k in one pass: each weight row stays
        // one sequential stream (measured faster than 1024- or 4096-element
        // passes at n = 8, where the 4x4 tile reads the activations from L2).
        let (units, chunk) = if self.spec.is_integer() {
            (
                (self.spec.row_bytes() / INT_BLOCK) as u64,
                bitserial::INT_K_CHUNK,
            )
        } else {
            let steps = self.spec.k_steps() as u64;
            (steps, steps)
        };
        self.emit_k_passes(f, n, units, chunk, |p| nest((p.k, p.first, p.last)))?;
        self.b.build_return(None)?;
        Ok(())
    }
}

/// Builds the AMX-INT8 module for a W8A8 or W4A8 `spec` (`i8`, `i4` or
/// `u4` weights; see `codegen/amx.rs`): the same entry point and buffers
/// as [`build_module`]'s W8A8/W4A8 kernel, the activations padded to a multiple
/// of 32 rows; or, for a block-dot spec, the AMX block-dot kernel
/// (`codegen/amxdot.rs`: the buffers of the `vpdpbusd` block-dot kernel,
/// bit-identical results). The caller checks the spec and the target.
pub fn build_amx_module<'ctx>(
    ctx: &'ctx Context,
    spec: &GemmSpec,
    target: &CpuTarget,
) -> Result<Module<'ctx>, CpuError> {
    let kind = spec
        .weight_kind()
        .ok_or_else(|| CpuError::Llvm(format!("no weight decoder for {}", spec.weight.dtype)))?;
    let module = ctx.create_module("lowbit_gemm_amx");
    module.set_triple(&inkwell::targets::TargetTriple::create(&target.triple));
    let g = Gen::new(ctx, &module, spec, kind, target, None);
    if spec.is_blockdot() {
        g.emit_amxdot_kernel()?;
    } else {
        g.emit_amx_kernel()?;
    }
    verified(module)
}
