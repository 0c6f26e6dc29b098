//! The AMX-INT8 W8A8 kernel: an opt-in schedule
//! ([`crate::GemmKernel::compile_amx`]) with `tdpbusd` on 16x16 `i32`
//! accumulator tiles.
//!
//! Operands: the W8A8 panel layout (16 rows x 4 k per 64 bytes, see
//! `vnni.rs`) is AMX's B-tile layout, so 16 consecutive vectors of a panel
//! (64 k) are one 1 KiB B tile at stride 64, read straight from the packed
//! weights. Activations are `u8 [n_pad, k_pad]` with `n_pad` a multiple of
//! 32 and zero rows after `n` (the caller pads them): an A tile is 16 rows
//! of 64 bytes at stride `k_pad`.
//!
//! Loop nest: for each pair of panels (32 output rows) overlapping
//! `row_begin..row_end`, for each 32 activation rows, all of k with 2 A and
//! 2 B tile loads and 4 `tdpbusd` into `tmm0..tmm3` per 64 k (fixed tile
//! registers through the immediate-operand intrinsics, so LLVM's AMX type
//! lowering is not involved). Each accumulator tile then goes to a stack
//! buffer and its 16 rows (activation columns below `n`) through the W8A8
//! epilogue (`int_epilogue`: the row offsets, masked to the rows this call
//! writes). A second panel past the last panel loads the last one again
//! and is never stored.
//!
//! Limits: one pass over k (tiles come from L2, so the loop is bound by
//! tile loads, about a fifth of the `tdpbusd` peak); `i8` weights only;
//! no bias, activation or requantize epilogue; x86-64 with `amx-tile` and
//! `amx-int8`, in a process that has asked the kernel for the AMX tile
//! state (the Rust caller does).

use super::{Gen, Params};
use crate::error::CpuError;
use crate::spec::{INT_BLOCK, INT_PANEL};
use inkwell::intrinsics::Intrinsic;
use inkwell::values::{BasicMetadataValueEnum, BasicValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

use super::vnni::TileCall;

/// Bytes of one 16 x 64-byte tile.
const TILE_BYTES: u64 = 1024;

impl<'a, 'ctx> Gen<'a, 'ctx> {
    /// Calls the AMX intrinsic `name` (no overloads, no result).
    fn amx(&self, name: &str, args: &[BasicMetadataValueEnum<'ctx>]) -> Result<(), CpuError> {
        let f = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[]))
            .ok_or_else(|| CpuError::Llvm(format!("{name} is not available")))?;
        self.b.build_call(f, args, "")?;
        Ok(())
    }

    /// Tile register `t` as the intrinsics' immediate operand.
    fn tmm(&self, t: u64) -> BasicMetadataValueEnum<'ctx> {
        self.i8t.const_int(t, false).into()
    }

    /// The exported entry point of the AMX W8A8 kernel (see the module
    /// docs).
    pub(super) fn emit_amx_kernel(&self) -> Result<(), CpuError> {
        let Params { f, ptrs, ints } = self.kernel_function()?;
        let (n, lo, hi) = (ints[0], ints[1], ints[2]);
        let (x, w) = (ptrs[0], ptrs[1]);
        // Palette 1, tiles 0..8 of 16 rows x 64 bytes.
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..8 {
            cfg[16 + 2 * t] = 64;
            cfg[48 + t] = 16;
        }
        let v64 = self.i8t.vec_type(64);
        let cfg_p = self.b.build_alloca(v64, "tilecfg")?;
        self.b
            .build_store(cfg_p, self.const_bytes(&cfg))?
            .set_alignment(64)
            .map_err(|e| CpuError::Llvm(format!("tile config alignment: {e}")))?;
        self.amx("llvm.x86.ldtilecfg", &[cfg_p.into()])?;
        let scratch =
            self.b
                .build_array_alloca(self.i8t, self.i64c(4 * TILE_BYTES), "acc_tiles")?;
        scratch
            .as_instruction_value()
            .ok_or_else(|| CpuError::Llvm("alloca is not an instruction".into()))?
            .set_alignment(64)
            .map_err(|e| CpuError::Llvm(format!("scratch alignment: {e}")))?;
        let panel_bytes = INT_PANEL as u64 * self.spec.row_bytes() as u64;
        let last_panel = (self.spec.m_pad() / INT_PANEL) as u64 - 1;
        let panel = self.i64c(INT_PANEL as u64);
        let p0 = self.b.build_int_unsigned_div(lo, panel, "p0")?;
        let hi_up = self
            .b
            .build_int_add(hi, self.i64c(INT_PANEL as u64 - 1), "hiu")?;
        let p1 = self.b.build_int_unsigned_div(hi_up, panel, "p1")?;
        let one = self.i64c(1);
        let call = TileCall {
            ptrs: ptrs.clone(),
            panel: p0,
            c0: self.i64c(0),
            kb0: self.i64c(0),
            first: one,
            last: one,
            lo,
            hi,
        };
        self.emit_loop(
            f,
            p0,
            |p| Ok(self.b.build_int_compare(IntPredicate::ULT, p, p1, "pc")?),
            2,
            |p| {
                let q = self.b.build_int_add(p, one, "q")?;
                let q = self.umin(q, self.i64c(last_panel))?;
                let wp = |pn: IntValue<'ctx>| -> Result<PointerValue<'ctx>, CpuError> {
                    self.gep(w, self.b.build_int_mul(pn, self.i64c(panel_bytes), "wo")?)
                };
                let (w0, w1) = (wp(p)?, wp(q)?);
                self.emit_loop(
                    f,
                    self.i64c(0),
                    |c| Ok(self.b.build_int_compare(IntPredicate::SLT, c, n, "cc")?),
                    32,
                    |c| self.amx_block(f, &call, (x, w0, w1), p, c, n, scratch),
                )?;
                Ok(())
            },
        )?;
        self.amx("llvm.x86.tilerelease", &[])?;
        self.b.build_return(None)?;
        Ok(())
    }

    /// 64 constant bytes as a vector.
    fn const_bytes(&self, bytes: &[u8; 64]) -> VectorValue<'ctx> {
        inkwell::types::VectorType::const_vector(
            &bytes
                .iter()
                .map(|&b| self.i8t.const_int(u64::from(b), false))
                .collect::<Vec<_>>(),
        )
    }

    /// One 32 x 32 block: output rows of panels `p` and `p + 1` (weights
    /// at `w0`, `w1`), activation rows `c..c + 32`; all of k, then the
    /// epilogue of each accumulator tile's rows below `n`.
    #[allow(clippy::too_many_arguments)]
    fn amx_block(
        &self,
        f: inkwell::values::FunctionValue<'ctx>,
        call: &TileCall<'ctx>,
        (x, w0, w1): (PointerValue<'ctx>, PointerValue<'ctx>, PointerValue<'ctx>),
        p: IntValue<'ctx>,
        c: IntValue<'ctx>,
        n: IntValue<'ctx>,
        scratch: PointerValue<'ctx>,
    ) -> Result<(), CpuError> {
        let k_pad = self.spec.k_pad() as u64;
        for t in 0..4 {
            self.amx("llvm.x86.tilezero", &[self.tmm(t)])?;
        }
        let xa = self.gep(x, self.b.build_int_mul(c, self.i64c(k_pad), "xa")?)?;
        let xb = self.gep(xa, self.i64c(16 * k_pad))?;
        let steps = k_pad / INT_BLOCK as u64;
        let xs: BasicMetadataValueEnum = self.i64c(k_pad).into();
        let ws: BasicMetadataValueEnum = self.i64c(64).into();
        self.emit_loop(
            f,
            self.i64c(0),
            |s| {
                Ok(self
                    .b
                    .build_int_compare(IntPredicate::ULT, s, self.i64c(steps), "sc")?)
            },
            1,
            |s| {
                let xo = self.b.build_int_mul(s, self.i64c(64), "xo")?;
                let wo = self.b.build_int_mul(s, self.i64c(TILE_BYTES), "wo")?;
                let loads = [
                    (4, xa, xo, xs),
                    (5, xb, xo, xs),
                    (6, w0, wo, ws),
                    (7, w1, wo, ws),
                ];
                for (t, base, off, stride) in loads {
                    self.amx(
                        "llvm.x86.tileloadd64",
                        &[self.tmm(t), self.gep(base, off)?.into(), stride],
                    )?;
                }
                for (acc, a, b) in [(0, 4, 6), (1, 4, 7), (2, 5, 6), (3, 5, 7)] {
                    self.amx(
                        "llvm.x86.tdpbusd",
                        &[self.tmm(acc), self.tmm(a), self.tmm(b)],
                    )?;
                }
                Ok(())
            },
        )?;
        for t in 0..4 {
            let dst = self.gep(scratch, self.i64c(t * TILE_BYTES))?;
            self.amx("llvm.x86.tilestored64", &[self.tmm(t), dst.into(), ws])?;
        }
        // Tile 2t + h: panel p + h, activation rows c + 16t + j.
        let v16 = self.i32t.vec_type(INT_PANEL as u32);
        let last_panel = (self.spec.m_pad() / INT_PANEL) as u64 - 1;
        for h in 0..2u64 {
            let pn = self.b.build_int_add(p, self.i64c(h), "pn")?;
            let real =
                self.b
                    .build_int_compare(IntPredicate::ULE, pn, self.i64c(last_panel), "real")?;
            let store = self.ctx.append_basic_block(f, "amx_store");
            let next = self.ctx.append_basic_block(f, "amx_next");
            self.b.build_conditional_branch(real, store, next)?;
            self.b.position_at_end(store);
            let r = self.b.build_int_mul(pn, self.i64c(INT_PANEL as u64), "r")?;
            let mask = self.row_mask(call, r)?;
            for half in 0..2u64 {
                let tile = self.gep(scratch, self.i64c((2 * half + h) * TILE_BYTES))?;
                let c0 = self.b.build_int_add(c, self.i64c(16 * half), "c0")?;
                let left = self.b.build_int_sub(n, c0, "left")?;
                let rows = self.b.build_select(
                    self.b
                        .build_int_compare(IntPredicate::SLT, left, self.i64c(16), "few")?,
                    left,
                    self.i64c(16),
                    "rows",
                )?;
                let rows = rows.into_int_value();
                self.emit_loop(
                    f,
                    self.i64c(0),
                    |j| Ok(self.b.build_int_compare(IntPredicate::SLT, j, rows, "jc")?),
                    1,
                    |j| {
                        let off = self.b.build_int_mul(j, self.i64c(64), "ro")?;
                        let acc = self
                            .load(v16, self.gep(tile, off)?, 64)?
                            .into_vector_value();
                        let col = self.b.build_int_add(c0, j, "col")?;
                        self.int_epilogue(call, mask, acc, r, col)
                    },
                )?;
            }
            self.b.build_unconditional_branch(next)?;
            self.b.position_at_end(next);
        }
        Ok(())
    }
}
